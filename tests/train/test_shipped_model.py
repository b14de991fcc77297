"""The shipped trained model (models/) still does what training recorded in demo.json."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from compiler.compile import compile_model
from golden.model import FloatModel, QuantModel, load_model
from train.export import pipeline_results

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
TESTSET = ROOT / "data" / "testset"
#: Shipped test utterances checked here (the pipeline takes a fraction of a second each).
CHECKED = 3


@pytest.fixture(scope="module")
def summary():
    return json.loads((MODELS / "demo.json").read_text())


def test_shipped_files(summary):
    demo = load_model(MODELS / "demo.npz")
    assert isinstance(demo, QuantModel)
    assert demo.config.quant.weight_encoding == "int4"
    assert demo.config.quant.sparsity == 0.5
    assert isinstance(load_model(MODELS / "demo_float.npz"), FloatModel)
    total = sum(p.stat().st_size for p in MODELS.iterdir())
    assert total < 4_000_000, f"models/ holds {total} bytes"
    assert demo.config.to_dict() == {**summary["model_config"],
                                     "quant": asdict(demo.config.quant)}


def test_deployed_model_fits_the_processor():
    image = compile_model(load_model(MODELS / "demo.npz"))
    assert image is not None


def test_golden_pipeline_reproduces_recorded_transcripts(summary):
    recorded = summary["testset"]["per_utterance"][:CHECKED]
    demo = load_model(MODELS / "demo.npz")
    results = pipeline_results(demo, [TESTSET / r["file"] for r in recorded],
                               device_speed=summary["device_speed_macs_per_s"])
    for rec, res in zip(recorded, results):
        assert res["text"] == rec["golden"], rec["file"]
        assert res["fast_frames"] == rec["golden_fast_frames"], rec["file"]
