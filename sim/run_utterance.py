"""``make sim``: one utterance through the speech pipeline on the RTL, checked against golden.

The model is ``models/demo.npz`` when it exists, else a seeded random model
(``golden.cli.random_model``); the audio is ``AUDIO``, else the first entry of
``data/testset/manifest.tsv``, else ``golden.cli.synthetic_speech(3.0)``. The model is
compiled for the smallest processor that holds it (``sim.rtl_steps.fitted_config``, with
``LANES``; the image is cached in ``build/utterance/``), the processor is built under
Verilator (cached) and ``sim.cocotb_utterance`` runs the golden pipeline with every
compute step on the device. The same pipeline runs on the golden backend with the same
cost model (cycles per step from the ISS cycle model, at the clock); the two results must
agree on every item of :data:`ITEMS`, bit for bit.

Prints the report of ``sim.report`` and writes ``build/reports/utterance.json`` and
``utterance.png``. Exit status: 0 when RTL and golden agree, 1 when they differ or the
simulation fails, 2 on bad input (missing or unreadable model or audio, bad options).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from compiler.compile import CompileError, Image, compile_model, load_image
from compiler.iss import IssBackend
from golden.arbitration import CostModel
from golden.backend import STEPS, GoldenBackend
from golden.cli import UsageError, load_audio_file, load_quant_model, random_model, \
    synthetic_speech
from golden.endpointer import EndpointerConfig
from golden.frontend import FrontendConfig
from golden.model import QuantModel, save_model
from golden.pipeline import AFTER_FINAL, Recognizer
from sim import toolchain
from sim.realtime import processor_fmax_hz

__all__ = ["DEFAULT_CLOCK_MHZ", "DEMO_MODEL", "ITEMS", "MANIFEST", "Outcome", "Settings",
           "WAVE_SCOPES", "WAVE_SECONDS", "compare", "default_clock_mhz", "main",
           "model_image", "run_utterance", "run_utterances"]

DEMO_MODEL = toolchain.REPO / "models" / "demo.npz"
MANIFEST = toolchain.REPO / "data" / "testset" / "manifest.tsv"
CACHE = toolchain.BUILD / "utterance"
REPORTS = toolchain.BUILD / "reports"
#: Clock when ``build/reports/synth.json`` has no Fmax for the processor (not synthesized
#: yet): a round figure near the engine's measured 36 MHz on ECP5-85F at 8 lanes
#: (``docs/synthesis.md``) and the 48 MHz iCE40 target.
DEFAULT_CLOCK_MHZ = 50.0
#: Designs in ``synth.json`` whose Fmax is the processor's.
#: Parts ``make synth`` targets (hw.synth.PARTS), searched for the default clock.
SYNTH_PARTS = ("ecp5-85f", "up5k")
#: Seed and size of the random model used until a trained one exists.
RANDOM_MODEL = ("small", 0)
#: Items of ``Result.to_dict()`` that must be equal on both backends.
ITEMS = ("text", "nbest", "lattice", "events", "decisions", "branch_frames", "num_frames",
         "decoded_frames", "stopped_at", "audio_ms", "latency_ms", "cost")
TOPLEVEL = "nep_top"
#: What a waveform holds: Verilator options of the traced build. ``top``: the signals of
#: ``nep_top`` itself up to 32 bits wide (the AXI bus, ``irq``, start/busy/done, error,
#: result, VL/VN, the counters, the host's memory accesses, the weight and parameter memory
#: requests), small enough for a whole utterance. ``all``: every signal of every block
#: (measured: about 5 GB of VCD per second of audio with the random model). Verilator's
#: ``--trace-depth`` counts Amaranth's dotted module names wrongly: any depth above 1
#: traces every level, so there is nothing in between.
WAVE_SCOPES = {"top": ("--trace-depth", "1", "--trace-max-width", "32"), "all": ()}
#: With ``--wave-scope all`` the audio is cut to this long by default.
WAVE_SECONDS = 0.3


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Pipeline settings shared by the golden and the RTL run.

    Parameters
    ----------
    step_cycles : dict of str to int
        ISS cycles per call of each step (``sim.rtl_backend.iss_step_cycles``).
    clock_hz : float
        Processor clock: the cost model's speed.
    beam, context, after_final, speech_threshold
        As for :class:`~golden.pipeline.Recognizer`.
    endpointer : EndpointerConfig
    """

    step_cycles: dict
    clock_hz: float
    beam: int = 4
    context: tuple = ()
    after_final: str = "stop"
    speech_threshold: float = 0.95
    endpointer: EndpointerConfig = EndpointerConfig()

    def __post_init__(self):
        object.__setattr__(self, "context", tuple(self.context))
        object.__setattr__(self, "step_cycles", dict(self.step_cycles))
        if isinstance(self.endpointer, dict):
            object.__setattr__(self, "endpointer", EndpointerConfig(**self.endpointer))
        self.cost()  # checks step_cycles and the clock, with CostModel's messages

    def cost(self) -> CostModel:
        return CostModel(unit="cycles", speed=self.clock_hz, step_cycles=self.step_cycles)

    def recognizer(self, backend, frontend: FrontendConfig) -> Recognizer:
        """A :class:`Recognizer` on ``backend`` with these settings (raises ValueError
        on bad ones, e.g. context with greedy search)."""
        return Recognizer(backend, beam=self.beam, context=self.context, cost=self.cost(),
                          after_final=self.after_final, speech_threshold=self.speech_threshold,
                          endpointer=self.endpointer, frontend=frontend)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["context"] = list(self.context)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Settings:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


@dataclass(frozen=True)
class Outcome:
    """Both runs of one utterance.

    Attributes
    ----------
    golden, rtl : dict
        ``Result.to_dict()`` of the golden and the RTL run (JSON round trip).
    runs : list
        RTL program runs: ``[step, cycles, instructions, macs, zero_acts, stalls]``.
    differences : tuple of str
        Items of :data:`ITEMS` on which the two results differ.
    sim : dict
        ``bus_words`` (scratch entries written and read by this utterance's steps),
        ``load_cycles`` (image load), ``wall_s`` (this utterance on the RTL),
        ``image_config``, ``step_cycles``, ``settings`` (:meth:`Settings.to_dict`) and
        ``dense_macs`` per call of each step.
    """

    golden: dict
    rtl: dict
    runs: list
    differences: tuple
    sim: dict

    @property
    def equal(self) -> bool:
        return not self.differences


def compare(golden: dict, rtl: dict) -> tuple[str, ...]:
    """The items of :data:`ITEMS` on which two ``Result.to_dict()`` differ."""
    return tuple(k for k in ITEMS if golden.get(k) != rtl.get(k))


def default_clock_mhz(lanes: int, synth: Path = REPORTS / "synth.json") -> tuple[float, str]:
    """The processor's best synthesized Fmax at ``lanes`` (over the parts it fits), else
    :data:`DEFAULT_CLOCK_MHZ`; with where the figure comes from."""
    fmax = []
    for part in SYNTH_PARTS:
        try:
            fmax.append((processor_fmax_hz(part=part, lanes=lanes, path=synth) / 1e6, part))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not synthesized, or it does not fit that part
    if fmax:
        mhz, part = max(fmax)
        return mhz, f"synthesized Fmax on {part} ({synth.name})"
    return DEFAULT_CLOCK_MHZ, "default (no processor Fmax in build/reports/synth.json)"


def default_model() -> tuple[QuantModel, str]:
    """The trained demo model when it exists, else the seeded random model."""
    if DEMO_MODEL.exists():
        return load_quant_model(str(DEMO_MODEL)), str(DEMO_MODEL.relative_to(toolchain.REPO))
    size, seed = RANDOM_MODEL
    return random_model(size, seed), f"random model ({size}, seed {seed})"


def manifest_audio(manifest: Path = MANIFEST) -> tuple[Path, str] | None:
    """First entry of the test-set manifest: (WAV path, reference transcript), or None."""
    if not manifest.exists():
        return None
    with manifest.open(newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r.get("file")]
    if not rows:
        raise UsageError(f"{manifest}: no entries (expected a header with a 'file' column)")
    return manifest.parent / rows[0]["file"], rows[0].get("transcript", "")


def model_image(model: QuantModel, lanes: int) -> Image:
    """``model`` compiled for the smallest processor with ``lanes`` lanes that holds it;
    cached in ``build/utterance/`` by the model's contents."""
    from sim.rtl_steps import fitted_config

    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, Path(tmp) / "m.npz")
        key = hashlib.sha256((Path(tmp) / "m.npz").read_bytes()).hexdigest()[:16]
    path = CACHE / f"{key}-l{lanes}.nepimg"
    if path.exists():
        return load_image(path.read_bytes())
    from compiler.isa import ProcessorConfig

    try:
        image = compile_model(model, ProcessorConfig(lanes=lanes))
    except CompileError as e:
        raise UsageError(f"the model does not fit the processor: {e}") from None
    image = compile_model(model, fitted_config(image))
    CACHE.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(f".{os.getpid()}.part")  # parallel test workers: no torn file
    part.write_bytes(image.to_bytes())
    os.replace(part, path)
    return image


def _failures(xml: Path) -> str:
    if not xml.exists():
        return f"the simulation wrote no results ({xml})"
    out = []
    for case in ET.parse(xml).iter("testcase"):
        for bad in (*case.iter("failure"), *case.iter("error")):
            out.append(f"{bad.get('message')}")
    return "; ".join(out)


def run_utterance(model: QuantModel, audio: np.ndarray, **kwargs) -> Outcome:
    """:func:`run_utterances` of one utterance."""
    (outcome,) = run_utterances(model, [audio], **kwargs)
    return outcome


def run_utterances(model: QuantModel, audios, *, lanes: int = 8,
                   clock_hz: float = DEFAULT_CLOCK_MHZ * 1e6, waves: bool = False,
                   wave_scope: str = "top", progress: bool = True,
                   **pipeline) -> list[Outcome]:
    """Run each of ``audios`` through the pipeline on the golden backend and on the RTL
    (one simulation: the image is loaded once, the utterances follow one another).

    Parameters
    ----------
    model : QuantModel
    audios : sequence of numpy.ndarray
        Float samples at the model's front-end rate.
    lanes : int
        MAC lanes of the processor the model is compiled for.
    clock_hz : float
        Processor clock (the cost model's speed).
    waves : bool
        Write ``build/waves/utterance.vcd``.
    wave_scope : {"top", "all"}
        What the waveform holds (:data:`WAVE_SCOPES`).
    progress : bool
        Show a tqdm bar of the frames decoded on the RTL.
    **pipeline
        ``beam``, ``context``, ``after_final``, ``speech_threshold``, ``endpointer``
        (:class:`Settings`).

    Raises
    ------
    RuntimeError
        If the simulation fails (the message is the cocotb failure).
    ValueError
        On a bad ``wave_scope`` or pipeline setting.
    """
    if wave_scope not in WAVE_SCOPES:
        raise ValueError(f"wave_scope must be one of {tuple(WAVE_SCOPES)}, got {wave_scope!r}")
    from hw.nep_top import NepTop
    from sim.harness import SIM_RAM_VERILOG
    from sim.rtl_backend import iss_step_cycles

    image = model_image(model, lanes)
    settings = Settings(step_cycles=iss_step_cycles(image), clock_hz=clock_hz, **pipeline)
    frontend = FrontendConfig.from_dict(model.config.frontend)
    rec = settings.recognizer(GoldenBackend(model), frontend)
    golden = [json.loads(json.dumps(rec.transcribe(a).to_dict())) for a in audios]
    trace = WAVE_SCOPES[wave_scope] if waves else ()
    build_dir = toolchain.build(NepTop(image.config, sim_rams=True), TOPLEVEL, waves=waves,
                                extra_sources=[SIM_RAM_VERILOG], build_args=trace)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "model.nepimg").write_bytes(image.to_bytes())
        for k, audio in enumerate(audios):
            np.save(tmp / f"audio{k}.npy", np.asarray(audio, np.float64))
        job = {"image": str(tmp / "model.nepimg"), "settings": settings.to_dict(),
               "progress": progress, "out": str(tmp / "out.json"),
               "audios": [str(tmp / f"audio{k}.npy") for k in range(len(audios))]}
        (tmp / "job.json").write_text(json.dumps(job))
        xml = toolchain.run_cocotb(
            build_dir, TOPLEVEL, "sim.cocotb_utterance", waves=waves,
            env={"NEP_UTTERANCE_JOB": str(tmp / "job.json"), "COCOTB_LOG_LEVEL": "WARNING",
                 "GPI_LOG_LEVEL": "WARNING",
                 # cocotbext-axi 0.1.28 still uses cocotb's deprecated Event.data
                 "PYTHONWARNINGS": "ignore::DeprecationWarning"})
        if not (tmp / "out.json").exists():
            raise RuntimeError(f"RTL simulation failed: {_failures(xml)}")
        outs = json.loads((tmp / "out.json").read_text())
    if waves:
        dest = toolchain.BUILD / "waves" / "utterance.vcd"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(build_dir / "dump.vcd", dest)  # not a second copy in the cache
    costs = IssBackend(image)  # the image's layer shapes: dense MACs per call
    common = {"image_config": asdict(image.config), "step_cycles": settings.step_cycles,
              "settings": settings.to_dict(),
              "dense_macs": {s: costs.step_cost(s).dense for s in STEPS}}
    return [Outcome(g, out["result"], out["runs"], compare(g, out["result"]),
                    {**common, **{k: out[k] for k in ("bus_words", "load_cycles", "wall_s")}})
            for g, out in zip(golden, outs)]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="make sim", description=__doc__.splitlines()[0])
    p.add_argument("--audio", help="16 kHz WAV (default: first test-set utterance, else "
                   "3 s of synthetic speech)")
    p.add_argument("--model", help=f"QuantModel .npz (default: {DEMO_MODEL.name} when "
                   "present, else a seeded random model)")
    p.add_argument("--context", default="", help="biasing phrases, separated by '|'")
    p.add_argument("--beam", type=int, default=4, help="beam width; 0 or 1: greedy")
    p.add_argument("--lanes", type=int, choices=(4, 8, 16), default=8)
    p.add_argument("--clock-mhz", type=float, default=None,
                   help="processor clock (default: synthesized Fmax, else "
                   f"{DEFAULT_CLOCK_MHZ:g})")
    p.add_argument("--after-final", choices=AFTER_FINAL, default="stop")
    p.add_argument("--waves", action="store_true", help="write build/waves/utterance.vcd")
    p.add_argument("--wave-scope", choices=tuple(WAVE_SCOPES), default="top",
                   help="with --waves: nep_top's own signals up to 32 bits over the whole "
                   "utterance (top, default), or every signal (all)")
    p.add_argument("--wave-seconds", type=float, default=None,
                   help="with --waves, run only this much of the audio (default: all of "
                   f"it with --wave-scope top, {WAVE_SECONDS:g} s with all: a full trace is "
                   "about 5 GB per second of audio)")
    p.add_argument("--out", default=str(REPORTS / "utterance"),
                   help="report path without suffix (.json and .png are written)")
    return p


def main(argv=None) -> int:
    from sim.report import format_report, plot_report, summarize

    a = _parser().parse_args(argv)
    try:
        if a.model:
            model, model_label = load_quant_model(a.model), a.model
        else:
            model, model_label = default_model()
        frontend = FrontendConfig.from_dict(model.config.frontend)
        reference = ""
        if a.audio:
            audio_path = Path(a.audio)
        else:
            entry = manifest_audio()
            audio_path, reference = entry if entry else (None, "")
        if audio_path is None:
            audio, audio_label = synthetic_speech(3.0, sample_rate=frontend.sample_rate), \
                "synthetic speech, 3.0 s"
        else:
            audio = load_audio_file(str(audio_path), sample_rate=frontend.sample_rate)
            audio_label = str(audio_path)
        if a.wave_seconds is not None and not a.wave_seconds > 0:
            raise UsageError(f"--wave-seconds must be positive, got {a.wave_seconds}")
        seconds = (a.wave_seconds if a.wave_seconds is not None
                   else WAVE_SECONDS if a.wave_scope == "all" else None)
        if a.waves and seconds is not None and len(audio) > seconds * frontend.sample_rate:
            audio = audio[:max(0, round(seconds * frontend.sample_rate))]
            audio_label += f", first {seconds:g} s (--waves)"
        if len(audio) < frontend.encoder_stride:
            raise UsageError(f"{audio_label}: too short for one encoder frame")
        clock_mhz, clock_label = ((a.clock_mhz, "command line") if a.clock_mhz is not None
                                  else default_clock_mhz(a.lanes))
        if not clock_mhz > 0:
            raise UsageError(f"the clock must be positive, got {clock_mhz} MHz")
        context = [p.strip() for p in a.context.split("|") if p.strip()]
        # Check the model fits and the settings are valid before the long part.
        model_image(model, a.lanes)
        settings = Settings(step_cycles=dict.fromkeys(STEPS, 1),
                            clock_hz=clock_mhz * 1e6, beam=a.beam, context=tuple(context),
                            after_final=a.after_final)
        settings.recognizer(GoldenBackend(model), frontend)
    except (UsageError, ValueError) as e:  # bad input: say what, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2

    print(f"model  {model_label}\naudio  {audio_label} ({len(audio) / frontend.sample_rate:.2f}"
          f" s)\nclock  {clock_mhz:g} MHz, {clock_label}", flush=True)
    t0 = time.time()
    try:
        outcome = run_utterance(model, audio, lanes=a.lanes, clock_hz=clock_mhz * 1e6,
                                waves=a.waves, wave_scope=a.wave_scope, beam=a.beam,
                                context=context, after_final=a.after_final)
    except RuntimeError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    summary = summarize(outcome, clock_hz=clock_mhz * 1e6, lanes=a.lanes, model=model_label,
                        audio=audio_label, reference=reference, wall_s=time.time() - t0)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    plot_report(summary, out.with_suffix(".png"))
    print(format_report(summary))
    print(f"report {out.with_suffix('.json')}, plot {out.with_suffix('.png')}"
          + (", waveform build/waves/utterance.vcd" if a.waves else ""))
    if not outcome.equal:
        print(f"FAIL: RTL and golden differ on {', '.join(outcome.differences)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
