"""Tests for sim.accuracy: the accuracy report's runs, figures and tables (``make accuracy``)."""

import numpy as np
import pytest

from golden.backend import STEPS, Backend
from golden.cli import MODEL_SIZES
from golden.frontend import FrontendConfig, features
from golden.model import SLOW, ModelConfig, QuantConfig, random_float_model, save_model
from golden.pipeline import Recognizer
from golden.quantize import quantize_model
from golden.tokens import default_tokens
from golden.wav import load_audio
from golden.weights import Encoding, compress
from sim.accuracy import (
    DEPLOYED,
    RUNS,
    AlwaysSlowBackend,
    FloatBackend,
    TestUtterance,
    contact_names,
    evaluate,
    extend_background,
    float_model_size,
    load_testset,
    load_variants,
    main,
    quant_model_size,
    render_markdown,
    step_cycles,
    summarize,
    trained_device_speed,
)

CONTACTS = ("anna", "siobhan", "xavier")


@pytest.fixture(scope="module")
def small():
    """A small random float model, its front end, and a 4-bit 50% sparse quantization."""
    fe_kw, model_kw = MODEL_SIZES["small"]
    fe = FrontendConfig(**fe_kw)
    config = ModelConfig(vocabulary=tuple(default_tokens()), feature_dim=fe.feature_dim,
                         frontend=fe.to_dict(), **model_kw)
    fm = random_float_model(config, seed=1)
    rng = np.random.default_rng(0)
    calib = [features(rng.normal(0, 0.1, 16000), fe).astype(np.float64) * fe.feature_scale]
    qm = quantize_model(fm, calib, quant=QuantConfig(weight_encoding="int4", sparsity=0.5),
                        feature_scale=fe.feature_scale)
    return fm, fe, qm, calib


def test_contact_names_finds_words_and_possessives():
    assert contact_names("hey nep call anna", CONTACTS) == ("anna",)
    assert contact_names("what's xavier's number", CONTACTS) == ("xavier",)
    assert contact_names("call annabel and siobhan", CONTACTS) == ("siobhan",)
    assert contact_names("turn on the fan", CONTACTS) == ()


def test_shipped_testset_reads_speech_end_and_names():
    utts = load_testset("data/testset")
    assert len(utts) >= 20
    for u in utts:
        assert 0 < u.speech_end_ms and u.trail_ms >= 100.0
    header, row = (line.split("\t") for line in
                   open("data/testset/manifest.tsv").read().splitlines()[:2])
    row = dict(zip(header, row))
    first = utts[0]
    assert (first.file, first.transcript) == (row["file"], row["transcript"])
    assert first.speech_end_ms == pytest.approx(
        1000 * (float(row["duration_s"]) - float(row["trail_s"])))
    from data.vocabulary import CONTACTS
    assert first.names == tuple(w.removesuffix("'s") for w in row["transcript"].split()
                                if w.removesuffix("'s") in CONTACTS)
    assert sum(bool(u.names) for u in utts) >= len(utts) // 2


def test_extend_background_mirrors_without_jumps():
    x = np.concatenate([np.ones(10), np.arange(1.0, 5.0)])  # trailing segment 1, 2, 3, 4
    y = extend_background(x, 4, 11)
    assert y[:14].tolist() == x.tolist()
    assert y[14:].tolist() == [4, 3, 2, 1, 1, 2, 3]  # reversed, then forward
    assert len(y) == 14 + 7
    assert extend_background(x, 4, 3) is not None and len(extend_background(x, 4, 3)) == 14
    with pytest.raises(ValueError, match="trail must be in 1..14"):
        extend_background(x, 0, 10)


def test_float_backend_is_a_backend_with_fine_integer_logits(small):
    fm, fe, _, _ = small
    b = FloatBackend(fm, feature_scale=fe.feature_scale)
    assert isinstance(b, Backend)
    feat = np.arange(fe.feature_dim, dtype=np.int8)
    real = feat.astype(np.float64) * fe.feature_scale
    assert b.arbitrate(feat, 3) == fm.arbitrate(real, 3.0)
    enc, _ = b.encoder_step(SLOW, feat, b.initial_encoder_state())
    pred, _ = b.predictor(0, b.initial_predictor_state())
    logits = b.joint(enc, pred)
    assert np.issubdtype(logits.dtype, np.integer)
    np.testing.assert_allclose(logits * b.logit_scale, fm.joint(enc, pred),
                               atol=b.logit_scale / 2)
    assert b.step_cost("encoder_slow").dense > b.step_cost("encoder_fast").dense
    with pytest.raises(ValueError, match="feature_scale"):
        FloatBackend(fm, feature_scale=0.0)
    with pytest.raises(TypeError, match="FloatModel"):
        FloatBackend(small[2], feature_scale=1.0)


def test_always_slow_backend_runs_only_the_slow_branch(small):
    _, _, qm, _ = small
    audio = np.random.default_rng(2).normal(0, 0.1, 8000)
    r = Recognizer(AlwaysSlowBackend(qm), beam=2).transcribe(audio)
    assert r.branch_frames["fast"] == 0 and r.branch_frames["slow"] == r.num_frames


def test_sizes_count_images_and_table(small):
    fm, _, qm, _ = small
    s = quant_model_size(qm)
    t = qm.tensors
    names = [k[:-len(".weight")] for k in t if k.endswith(".weight")]
    images = sum(len(compress(t[f"{n}.weight"], t[f"{n}.bias"], t[f"{n}.multiplier"],
                              t[f"{n}.shift"], encoding=Encoding.INT4, lanes=8))
                 for n in names)
    assert s["image_bytes"] == images
    assert s["bytes"] == images + t["pred.embed.table"].size
    assert s["bits_per_weight"] == pytest.approx(8 * images / s["weights"])
    assert s["sparsity"] >= 0.5
    f = float_model_size(fm)
    assert f["bytes"] == 4 * sum(v.size for v in fm.tensors.values())
    assert f["weights"] == s["weights"] and f["bits_per_weight"] == 32.0


def test_step_cycles_are_measured_per_step(small):
    c = step_cycles(small[2])
    assert set(c) == set(STEPS)
    assert all(isinstance(v, int) and v > 0 for v in c.values())
    assert c["encoder_slow"] > c["encoder_fast"]


def test_load_variants_ships_or_derives(small, tmp_path):
    fm, fe, qm, calib = small
    with pytest.raises(FileNotFoundError, match="demo_float.npz not found"):
        load_variants(tmp_path)
    save_model(fm, tmp_path / "demo_float.npz")
    with pytest.raises(FileNotFoundError, match="calibration features"):
        load_variants(tmp_path, calibration=tmp_path / "none.npz")
    save_model(qm, tmp_path / "demo.npz")  # the deployed variant is shipped ...
    from data.features import write_features
    feats = tmp_path / "features.npz"
    write_features(feats, frames=[features(np.zeros(8000), fe)], transcripts=["a"],
                   files=["a.wav"], frontend=fe)
    models = load_variants(tmp_path, calibration=feats)  # ... the others are derived
    assert models["float"] is not None and models[DEPLOYED].tensors.keys() == qm.tensors.keys()
    np.testing.assert_array_equal(models[DEPLOYED].tensors["fast.lstm.weight"],
                                  qm.tensors["fast.lstm.weight"])
    q = {k: (m.config.quant.weight_encoding, m.config.quant.sparsity)
         for k, m in models.items() if k != "float"}
    assert q == {"int8": ("int8", 0.0), "int4": ("int4", 0.0), "int4_s50": ("int4", 0.5),
                 "int4_s75": ("int4", 0.75)}
    save_model(models["int8"], tmp_path / "int4_s75.npz")  # a file of the wrong kind
    with pytest.raises(ValueError, match="is int8 at sparsity 0.0, expected int4 at 0.75"):
        load_variants(tmp_path, calibration=feats)


def _utt(file, text, end=1000.0):
    return TestUtterance(file, file, text, end, 500.0, contact_names(text, CONTACTS))


def _rec(run, file, text, *, fast=0, frames=10, events=(), calls=None):
    return {"run": run, "file": file, "text": text, "events": list(events),
            "calls": calls or {"arbitrate": frames, "encoder_fast": fast,
                               "encoder_slow": frames - fast, "predictor": 1, "joint": frames},
            "step_costs": {"arbitrate": 1.0, "encoder_fast": 10.0, "encoder_slow": 100.0,
                           "predictor": 5.0, "joint": 2.0},
            "total": 0.0, "frames": frames, "fast_frames": fast, "audio_ms": 300.0,
            "max_backlog_ms": 0.0, "speech_end_backlog_ms": 30.0 if fast else 90.0,
            "speech_frames": frames - 2, "speech_fast_frames": fast}


def _event(kind, ready, device, text):
    return {"kind": kind, "frame": 0, "time_ms": ready, "ready_ms": ready,
            "device_ms": device, "text": text}


def test_summarize_hand_made_records():
    utts = [_utt("a", "call anna now", 1000.0), _utt("b", "turn on the fan", 2000.0)]
    recs = [
        _rec("float", "a", "call anna now"), _rec("float", "b", "turn on the fan"),
        # deployed: one substitution in 7 words; half the frames fast
        _rec(DEPLOYED, "a", "call hannah now", fast=5, events=[
            _event("speculative", 900.0, 950.0, "call hannah"),  # before the end: early
            _event("final", 1500.0, 1540.0, "call hannah now")]),
        _rec(DEPLOYED, "b", "turn on the fan", fast=5, events=[
            _event("speculative", 2300.0, 2310.0, "turn on the fan"),
            _event("final", 2500.0, 2600.0, "turn on the fan")]),
        _rec("always_slow", "a", "call anna now"), _rec("always_slow", "b", "turn on the fan"),
        _rec("biased", "a", "call anna now"), _rec("biased", "b", "turn on the fan"),
    ]
    cycles = {"arbitrate": 2, "encoder_fast": 20, "encoder_slow": 200, "predictor": 10,
              "joint": 4}
    rep = summarize(recs, utts, sizes={}, cycles=cycles, contacts=CONTACTS)
    v = {x["key"]: x for x in rep["variants"]}
    assert v["float"]["wer"] == 0.0
    assert v[DEPLOYED]["wer"] == pytest.approx(100 / 7)
    assert v[DEPLOYED]["fast_fraction"] == 0.5
    assert set(rep["arbitration"]) == {"beam"}  # no greedy runs among the records
    a = rep["arbitration"]["beam"]
    # arbitrated per utterance: 10*1 + 5*10 + 5*100 + 1*5 + 10*2 = 585;
    # always slow without the arbitrator: 10*100 + 5 + 20 = 1025.
    assert a["macs"]["arbitrated"] == 2 * 585 and a["macs"]["always_slow"] == 2 * 1025
    assert a["macs"]["saved"] == pytest.approx(1 - 585 / 1025)
    assert a["cycles"]["saved"] == pytest.approx(1 - 1170 / 2050)
    assert a["wer"]["cost_points"] == pytest.approx(100 / 7)
    # Bootstrap draws of the two utterances: a+a 2/6, a+b 1/7, b+b 0 (1/4, 1/2, 1/4).
    ci = a["wer"]["cost_interval"]
    assert ci["difference_points"] == pytest.approx(100 / 7)
    assert (ci["low"], ci["high"]) == pytest.approx((0.0, 100 / 3))
    assert ci["point_per_word"] == pytest.approx(100 / 7)
    assert a["speech_end_backlog_ms"]["arbitrated"]["median"] == 30.0
    # every fast frame before the end of speech: 5 of 8 there, none of the last 2
    assert a["fast_fraction_speech"] == 5 / 8 and a["fast_fraction_after_speech"] == 0.0
    assert a["speech_end_backlog_ms"]["always_slow"]["p90"] == 90.0
    assert a["final_latency_ms"]["always_slow"]["n"] == 0  # no events in those records
    goals = {g["goal"][:6]: g["met"] for g in rep["goals"]}
    assert goals == {"4-bit ": False, "arbitr": False}  # 14.3 points over both limits
    assert rep["goals"][1]["goal"].endswith("(beam search)")
    ep = rep["endpointing"]
    assert (ep["speculative"]["early"], ep["speculative"]["cut"]) == (1, 1)
    assert ep["speculative"]["latency_ms"] == {"n": 1, "median": 310.0, "p90": 310.0}
    assert ep["final"]["early"] == 0 and ep["final"]["cut"] == 0
    assert ep["final"]["latency_ms"]["median"] == pytest.approx((540 + 600) / 2)
    assert ep["final"]["latency_ms"]["p90"] == pytest.approx(540 + 0.9 * 60)
    assert ep["stopped_wer"] == pytest.approx(100 / 7)
    b = rep["biasing"]
    assert b["name_utterances"] == 1
    assert (b["without"]["recognized"], b["without"]["occurrences"]) == (0, 1)
    assert b["with"]["recall"] == 1.0 and b["with"]["names"] == 0.0
    md = render_markdown(rep)
    assert "| 4-bit at 50% sparsity within 1 point absolute WER of float | +14.29 points | " \
           "**missed** |" in md
    assert "| +14.29 (goal <= 1: missed) |" in md
    assert "42.9% saved (goal >= 40%)" in md
    assert "+14.29 points (goal <= 0.5); 95% interval +0.0 to +33.3 |" in md
    assert "| fast frames before / from the end of speech | 62.5% / 0.0% | 0.0% / 0.0% | |" in md
    assert "| speculative | 2 / 2 | 50.0% (1) | 50.0% (1) | 310 |" in md
    assert "| names as context | 0.00 | 0.00 | 1 / 1 (100.0%) |" in md
    assert "| a | call anna now | call hannah now | 1 |" in md
    rep["meta"] = {"command": "python -m sim.accuracy --testset big", "json": "big.json"}
    assert "Generated by `python -m sim.accuracy --testset big`; do not edit by hand. The " \
           "numbers are also in `big.json`." in render_markdown(rep)


def test_goals_met_when_within_limits():
    utts = [_utt("a", "call anna now")]
    recs = [_rec("float", "a", "call anna now"), _rec(DEPLOYED, "a", "call anna now", fast=8),
            _rec("always_slow", "a", "call anna now"), _rec("greedy", "a", "call anna", fast=8),
            _rec("greedy_always_slow", "a", "call anna now")]
    rep = summarize(recs, utts, sizes={"float": {"sparsity": 0.5}},
                    cycles={"error": "does not fit"}, contacts=CONTACTS)
    assert "The float model is itself 50.0% sparse" in render_markdown(rep)
    # Greedy: the arbitrator loses a word (33 points): missed.
    assert [g["met"] for g in rep["goals"]] == [True, True, False]
    assert rep["arbitration"]["greedy"]["wer"]["cost_points"] == pytest.approx(100 / 3)
    assert "## Arbitrator against always-slow (greedy search)" in render_markdown(rep)
    assert rep["arbitration"]["beam"]["cycles"] == {"error": "does not fit"}
    assert "n/a: does not fit" in render_markdown(rep)
    assert render_markdown({"pending": "no model yet"}).count("**Pending:** no model yet") == 1


def test_evaluate_runs_everything_on_a_shipped_utterance(small):
    fm, _, qm, _ = small
    utts = load_testset("data/testset")[:1]
    models = {"float": fm, "int8": qm, "int4": qm, "int4_s50": qm, "int4_s75": qm}
    with pytest.raises(ValueError, match="beam must be an int >= 2"):
        evaluate(models, utts, beam=1, workers=1, progress=False)
    with pytest.raises(ValueError, match="unknown runs"):
        evaluate(models, utts, runs=["fp16"], workers=1, progress=False)
    with pytest.raises(ValueError, match=r"no model for \['float'\]"):
        evaluate({DEPLOYED: qm}, utts, runs=["float"], workers=1, progress=False)
    recs = evaluate(models, utts, workers=1, progress=False)
    assert [r["run"] for r in recs] == list(RUNS)
    by = {r["run"]: r for r in recs}
    assert by["always_slow"]["fast_frames"] == by["greedy_always_slow"]["fast_frames"] == 0
    for r in recs:
        assert 0 < r["speech_frames"] < r["frames"]  # 2 s of background follow the speech
        assert 0 <= r["speech_fast_frames"] <= min(r["fast_frames"], r["speech_frames"])
    # The greedy run is the pipeline with greedy search on the extended audio.
    audio = load_audio(utts[0].path)
    trail = int(round(utts[0].trail_ms * 16))
    audio = extend_background(audio, trail, 32000)
    greedy = Recognizer(qm, beam=1, after_final="continue").transcribe(audio)
    assert by["greedy"]["text"] == greedy.text
    assert by["greedy"]["calls"] == greedy.report.calls != by[DEPLOYED]["calls"]
    # The audio was extended to 2 s of background after the end of speech.
    assert by["float"]["audio_ms"] == pytest.approx(utts[0].speech_end_ms + 2000.0)
    assert by["int4"]["text"] == by[DEPLOYED]["text"]  # same model, same result
    for r in recs:
        assert r["frames"] > 0 and r["calls"]["arbitrate"] == r["frames"]


def test_two_workers_give_the_same_records(small):
    _, _, qm, _ = small
    utts = load_testset("data/testset")[:2]
    kw = dict(runs=["int4", "always_slow"], progress=False)
    one = evaluate({"int4": qm, DEPLOYED: qm}, utts, workers=1, **kw)
    two = evaluate({"int4": qm, DEPLOYED: qm}, utts, workers=2, **kw)
    assert one == two


def test_trained_device_speed_comes_from_the_summary(tmp_path):
    assert trained_device_speed(tmp_path) is None
    (tmp_path / "demo.json").write_text('{"device_speed_macs_per_s": 3.2e6}')
    assert trained_device_speed(tmp_path) == 3.2e6
    (tmp_path / "demo.json").write_text('{"device_speed_macs_per_s": -1}')
    with pytest.raises(ValueError, match="must be a positive number, got -1"):
        trained_device_speed(tmp_path)


def test_command_line_reports_bad_inputs(tmp_path, capsys):
    assert main(["--models", str(tmp_path), "--no-progress"]) == 2
    assert "demo_float.npz not found: train and export a model first" in capsys.readouterr().err
    assert main(["--testset", str(tmp_path)]) == 2
    assert "manifest.tsv: No such file or directory" in capsys.readouterr().err
    assert main(["--limit", "0"]) == 2
    assert "--limit must be positive" in capsys.readouterr().err
