"""The speech pipeline end to end on the RTL (``make sim``), bit for bit against golden.

``test_utterance_on_the_rtl_matches_golden`` runs a 1.2 s utterance with the seeded small
random model through ``sim.run_utterance`` (the pipeline on ``RtlBackend``: ``NepTop``
under Verilator over AXI4-Lite) and through the golden backend, with settings chosen so
that every item is exercised: a slow clock (0.32 MHz) so a backlog builds and the
arbitrator switches branches, and a low speech threshold with short silences so the
end-pointers fire speculative, revision and final events. Every item of the result must
be equal; every RTL run took the ISS's cycles (``RtlBackend`` checks each one).

Under ``NEP_REGRESS=1`` (``make regress``) every utterance of ``data/testset`` runs with
the demo model (``models/demo.npz``) and ``make sim``'s settings, in one simulation.

``test_report_and_plot`` checks ``sim.report`` on runs recorded by the ISS (no simulator).

``test_top_waveform_holds_the_top_level_only`` verilates ``make sim WAVES=1``'s traced
build (no C++ compile) and checks what its waveform declares; bad waveform options are
refused before any simulation.
"""

import json
import os
import re
import subprocess

import numpy as np
import pytest

from compiler.iss import IssBackend
from golden.backend import STEPS, GoldenBackend
from golden.cli import random_model, synthetic_speech
from golden.endpointer import EndpointerConfig
from golden.frontend import FrontendConfig
from golden.wav import load_audio
from sim.report import format_report, frame_cycles, plot_report, summarize
from sim.rtl_backend import iss_step_cycles
from sim import toolchain
from sim.run_utterance import (DEMO_MODEL, ITEMS, MANIFEST, TOPLEVEL, WAVE_SCOPES, Outcome,
                               Settings, compare, main, model_image, run_utterance,
                               run_utterances)

REGRESS = os.environ.get("NEP_REGRESS") == "1"
#: Settings that make a random model's short utterance exercise every item.
BUSY = dict(beam=4, after_final="continue", speech_threshold=0.1,
            endpointer=EndpointerConfig(speculative_silence_ms=30, final_silence_ms=150))
CLOCK_HZ = 0.32e6  # backlog and switching, and the final end point still fires (0.31-0.4 MHz do)


def _check(outcome: Outcome) -> None:
    g, r = outcome.golden, outcome.rtl
    for item in ITEMS:  # one assertion per item, so a failure names it
        assert r[item] == g[item], f"{item}: RTL {r[item]!r} != golden {g[item]!r}"
    assert outcome.equal and compare(g, r) == ()
    # Every program the pipeline ran is in the RTL's record, at the ISS's cycles.
    calls = g["cost"]["calls"]
    for step in STEPS:
        assert sum(1 for run in outcome.runs if run[0] == step) == calls[step], step
    cycles = outcome.sim["step_cycles"]
    assert all(run[1] == cycles[run[0]] for run in outcome.runs)
    assert [sum(f.values()) for f in frame_cycles(outcome.runs)] == [
        f["cost"] for f in g["cost"]["frames"]]


def test_utterance_on_the_rtl_matches_golden():
    model = random_model("small", 0)
    audio = synthetic_speech(1.2, seed=0)
    outcome = run_utterance(model, audio, clock_hz=CLOCK_HZ, progress=False, **BUSY)
    _check(outcome)
    g = outcome.golden
    # The run exercised what it claims to: a transcript, both branches with switches,
    # and every kind of end point.
    assert g["text"] and len(g["nbest"]) > 1
    assert g["branch_frames"]["fast"] > 0 and g["branch_frames"]["slow"] > 0
    assert sum(a != b for a, b in zip(g["decisions"], g["decisions"][1:])) >= 4
    assert {e["kind"] for e in g["events"]} == {"partial", "speculative", "revision", "final"}
    # Bus traffic: the host reads exactly the outputs and the predictor state (the encoder
    # state stays on chip) and writes fewer entries than a host writing every input would.
    words, calls = outcome.sim["bus_words"], g["cost"]["calls"]
    size = {r: model_image(model, 8).region(r).length for r in ("enc", "logits", "pred.h",
                                                                 "pred.c", "feat")}
    assert words["read"] == (size["enc"] * (calls["encoder_fast"] + calls["encoder_slow"])
                             + size["logits"] * calls["joint"]
                             + (size["pred.h"] + size["pred.c"]) * calls["predictor"])
    assert 0 < words["written"] < (size["feat"] * g["num_frames"]
                                   + (size["enc"] + size["pred.h"]) * calls["joint"])


def _testset() -> list[str]:
    """WAV paths of the shipped test set (``make regress``)."""
    import csv

    assert DEMO_MODEL.exists(), f"{DEMO_MODEL} is missing"
    assert MANIFEST.exists(), f"{MANIFEST} is missing"
    with MANIFEST.open(newline="") as f:
        files = [r["file"] for r in csv.DictReader(f, delimiter="\t") if r.get("file")]
    assert files, f"{MANIFEST} has no entries"
    return [str(MANIFEST.parent / name) for name in files]


def test_shipped_utterance_with_the_demo_model():
    """A shipped test utterance (the shortest, 1.5 s) with the trained demo model, beam 4
    and a biasing phrase, as ``make sim CONTEXT=...`` runs it: RTL == golden on every item.
    ``make regress`` does the same for every shipped utterance."""
    from golden.model import load_model

    model = load_model(DEMO_MODEL)
    rate = FrontendConfig.from_dict(model.config.frontend).sample_rate
    wav = str(MANIFEST.parent / "test_00010.wav")
    outcome = run_utterance(model, load_audio(wav, sample_rate=rate), progress=False,
                            context=("siobhan",))
    _check(outcome)
    assert outcome.golden["text"]  # the demo model hears something (docs/accuracy.md)


if REGRESS:  # defined only then: the long run is regress work, not a skipped test
    def test_test_set_on_the_rtl_matches_golden():
        """Every shipped test utterance (one simulation) with the demo model and ``make
        sim``'s settings."""
        from golden.model import load_model

        model = load_model(DEMO_MODEL)
        rate = FrontendConfig.from_dict(model.config.frontend).sample_rate
        wavs = _testset()
        outcomes = run_utterances(model, [load_audio(w, sample_rate=rate) for w in wavs],
                                  progress=False)
        assert len(outcomes) == len(wavs)
        for wav, outcome in zip(wavs, outcomes):
            try:
                _check(outcome)
            except AssertionError as e:
                raise AssertionError(f"{wav}: {e}") from None


def test_report_and_plot(tmp_path):
    """The report's figures on ISS-recorded runs: per-frame cycles add up to the cost
    model's, the statistics and ratios follow from the counters, and the files are
    written."""
    model = random_model("small", 0)
    image = model_image(model, 8)
    step_cycles = iss_step_cycles(image)
    settings = Settings(step_cycles=step_cycles, clock_hz=CLOCK_HZ, **BUSY)
    frontend = FrontendConfig.from_dict(model.config.frontend)
    audio = synthetic_speech(1.2, seed=0)
    iss = IssBackend(image)
    result = settings.recognizer(iss, frontend).transcribe(audio)
    golden = settings.recognizer(GoldenBackend(model), frontend).transcribe(audio)
    res = json.loads(json.dumps(result.to_dict()))
    runs = [[s, r.cycles, r.instructions, r.macs, 0, 0] for s, r in iss.runs]
    dense = {s: iss.step_cost(s).dense for s in STEPS}
    sim = {"dense_macs": dense, "step_cycles": step_cycles, "settings": settings.to_dict(),
           "bus_words": {"written": 1, "read": 2}, "load_cycles": 3, "wall_s": 4.0,
           "image_config": {}}
    outcome = Outcome(json.loads(json.dumps(golden.to_dict())), res, runs,
                      compare(json.loads(json.dumps(golden.to_dict())), res), sim)
    assert outcome.equal  # the ISS backend agrees with golden too

    s = summarize(outcome, clock_hz=CLOCK_HZ, lanes=8, model="m", audio="a", wall_s=5.0)
    json.dumps(s, allow_nan=False)
    assert s["cost_model_matches"]
    n = res["decoded_frames"]
    assert s["cycles_per_frame"]["arbitrate"] == {"min": step_cycles["arbitrate"],
                                                  "mean": step_cycles["arbitrate"],
                                                  "max": step_cycles["arbitrate"], "frames": n}
    fast = res["branch_frames"]["fast"]
    assert s["cycles_per_frame"]["encoder_fast"]["frames"] == fast > 0
    assert s["cycles_per_frame"]["encoder_fast"]["max"] == step_cycles["encoder_fast"]
    total = [f["cost"] for f in res["cost"]["frames"]]
    assert s["cycles_per_frame"]["total"]["min"] == min(total)
    assert s["cycles_per_frame"]["total"]["max"] == max(total)
    assert np.isclose(s["cycles_per_frame"]["total"]["mean"], np.mean(total))
    cycles = sum(r[1] for r in runs)
    macs = sum(r[3] for r in runs)
    assert s["totals"]["cycles"] == cycles == res["cost"]["total"]
    assert np.isclose(s["mac_busy"], macs / 8 / cycles)
    dense_total = sum(dense[r[0]] for r in runs)
    assert np.isclose(s["skipped_zero_weights"], 1 - macs / dense_total)
    assert np.isclose(s["real_time_factor"], res["cost"]["load"])
    final = next(e for e in s["endpoints"] if e["kind"] == "final")
    assert np.isclose(s["speech_end_to_final_ms"],
                      final["device_ms"] - (final["time_ms"] - 150.0))
    assert len(s["per_frame"]["branch"]) == len(s["per_frame"]["backlog_ms"]) == n

    text = format_report(s)
    for needle in ("RTL == golden", res["text"], "speculative", "revision", "final",
                   "real-time factor", "end of speech", "% busy"):
        assert needle in text, needle
    png = tmp_path / "u.png"
    plot_report(s, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000


def test_top_waveform_holds_the_top_level_only(tmp_path):
    """``--wave-scope top``'s Verilator options trace ``nep_top``'s own signals up to 32
    bits (bus, irq, run control, counters) and nothing inside its blocks: what keeps a
    whole utterance's VCD small. Checked on the trace declarations Verilator generates
    for the processor ``make sim`` builds."""
    from hw.nep_top import NepTop
    from sim.harness import SIM_RAM_VERILOG

    image = model_image(random_model("small", 0), 8)
    src = tmp_path / f"{TOPLEVEL}.v"
    src.write_text(toolchain.generate_verilog(NepTop(image.config, sim_rams=True), TOPLEVEL,
                                              strip_zero_init=True))
    toolchain.setup_verilator_env()
    subprocess.run(["verilator", "--cc", "--trace", "--public-flat-rw", "--top-module",
                    TOPLEVEL, "-Mdir", str(tmp_path / "obj"), *toolchain.waiver_args(),
                    *WAVE_SCOPES["top"], str(src), str(SIM_RAM_VERILOG)],
                   check=True, capture_output=True)
    decls = "".join(f.read_text() for f in (tmp_path / "obj").glob("*__Trace__*Slow.cpp"))
    scopes = set(re.findall(r'VL_TRACE_PUSH_PREFIX\(tracep, "([^"]+)"', decls))
    assert scopes == {"$rootio", TOPLEVEL}, scopes
    kinds = set(re.findall(r"VL_TRACE_DECL_(\w+)\(", decls))
    assert kinds <= {"BIT", "BUS"}, kinds  # no QUAD (33-64 bits), WIDE or arrays
    names = set(re.findall(r'VL_TRACE_DECL_\w+\(tracep,[^"]*"([^"]+)"', decls))
    for name in ("irq", "axi__awaddr", "axi__rdata", "start", "busy", "done", "error",
                 "cycles", "macs", "w_req_addr", "p_req_addr"):
        assert name in names, name


def test_bad_wave_options_are_refused(capsys):
    model = random_model("small", 0)
    with pytest.raises(ValueError, match="wave_scope must be one of"):
        run_utterance(model, np.zeros(4800), waves=True, wave_scope="engine")
    with pytest.raises(TypeError, match="build_args must be strings"):
        toolchain.build(None, TOPLEVEL, build_args=["--trace-depth", 1])
    with pytest.raises(SystemExit) as e:
        main(["--waves", "--wave-scope", "engine"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert main(["--waves", "--wave-seconds", "-1"]) == 2
    assert "--wave-seconds must be positive, got -1.0" in capsys.readouterr().err
