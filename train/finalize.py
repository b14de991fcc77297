"""After training: export the models and record what they do on the held-out test set.

Writes into the models directory: ``demo_float.npz``, ``demo.npz`` (4-bit, 50% sparse:
the deployed model) and the other variants of :data:`train.export.VARIANTS`,
``training-curve.png``, and ``demo.json``: the configs, the device speed, training
figures, and per test utterance the golden pipeline's greedy transcript with
``demo.npz`` (``tests/train`` checks the shipped model still produces them) and the
torch model's.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from golden.backend import STEPS, GoldenBackend
from golden.frontend import FrontendConfig, features
from golden.model import load_model
from golden.tokens import Tokenizer
from golden.wav import load_audio

from .arbitration import DeviceCost
from .data import Utterances, load_split
from .export import (
    calibrate_arbitrator,
    export_variants,
    greedy_decode,
    pipeline_results,
    word_error_rate,
)
from .trainer import CHECKPOINT, HISTORY, TrainConfig, load_checkpoint, load_checkpoint_model

__all__ = ["SUMMARY", "finalize", "operating_point", "testset_utterances"]

#: The summary written next to the models.
SUMMARY = "demo.json"


def testset_utterances(testset: str | os.PathLike, frontend: FrontendConfig,
                       tokenizer: Tokenizer) -> tuple[list[Path], Utterances]:
    """WAV paths of a test-set directory (``manifest.tsv`` order) and their features."""
    from data.make_dataset import read_manifest

    testset = Path(testset)
    rows = read_manifest(testset / "manifest.tsv")
    paths = [testset / r["file"] for r in rows]
    feats = [features(load_audio(str(p), sample_rate=frontend.sample_rate), frontend)
             for p in paths]
    return paths, Utterances(features=feats, transcripts=[r["transcript"] for r in rows],
                             frontend=frontend, tokenizer=tokenizer)


def operating_point(model, cfg: TrainConfig, data_dir: str | os.PathLike,
                    target_saving: float | None) -> dict:
    """Calibrate ``model``'s arbitrator in place on the validation split for
    ``target_saving`` (``train.export.calibrate_arbitrator``); offset 0 if None."""
    if target_saving is None:
        return {"offset": 0.0, "target_saving": None}
    tok = Tokenizer(list(model.config.vocabulary))
    val = load_split(Path(data_dir) / "validation" / "features.npz", tok, limit=cfg.val_limit)
    point = calibrate_arbitrator(model, val, cost=cfg.device_cost(model.config),
                                 target_saving=target_saving)
    point["note"] = (f"fast-logit offset chosen on {len(val)} validation utterances (torch, "
                     "greedy decoder share, training's device cost) for the compute target")
    return point


def finalize(*, work_dir: str | os.PathLike, out_dir: str | os.PathLike,
             data_dir: str | os.PathLike, testset: str | os.PathLike,
             target_saving: float | None = None) -> dict:
    """Export the checkpoint in ``work_dir`` to ``out_dir`` and measure it on ``testset``.

    ``target_saving``: calibrate the arbitrator's operating point first
    (:func:`operating_point`). Returns the summary also written to ``out_dir/demo.json``.
    """
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    ck_path = work_dir / CHECKPOINT
    ck = load_checkpoint(ck_path)
    cfg = TrainConfig(**ck["train_config"])
    model = load_checkpoint_model(ck_path)
    t0 = time.time()
    point = operating_point(model, cfg, data_dir, target_saving)
    paths = export_variants(ck_path, out_dir, calibration=Path(data_dir) / "train" /
                            "features.npz", arbitrator_offset=point["offset"])
    demo = load_model(paths["int4_s50"])
    fe = FrontendConfig.from_dict(model.config.frontend)
    tok = Tokenizer(list(model.config.vocabulary))
    wavs, utts = testset_utterances(testset, fe, tok)
    # The torch model is measured on the deployed model's real per-step MACs (nonzero
    # weights after 4-bit rounding), so both see the same simulated device.
    backend = GoldenBackend(demo)
    cost = DeviceCost(macs={s: float(backend.step_cost(s).nonzero) for s in STEPS},
                      speed=cfg.device_speed, frontend=fe)
    hyps, torch_fast = greedy_decode(model, utts, range(len(utts)), cost=cost)
    torch_text = [tok.decode(h) for h in hyps]
    golden = pipeline_results(demo, wavs, device_speed=cfg.device_speed)
    refs = utts.transcripts
    g_fast = sum(r["fast_frames"] for r in golden) / max(1, sum(r["frames"] for r in golden))
    history = ck["history"]
    summary = {
        "model_config": model.config.to_dict(),
        "train_config": asdict(cfg),
        "device_speed_macs_per_s": cfg.device_speed,
        "arbitrator_operating_point": point,
        "training": {
            "epochs": len(history["epochs"]),
            "steps": ck["step"],
            "minutes": sum(r["seconds"] for r in history["epochs"]) / 60.0,
            "last_epoch": history["epochs"][-1] if history["epochs"] else None,
        },
        "testset": {
            "directory": str(testset),
            "utterances": len(refs),
            "torch": {"wer": word_error_rate(refs, torch_text), "fast_fraction": torch_fast,
                      "note": "trained torch model (4-bit fake quantization), greedy, "
                              "golden's arbitration rule on the simulated backlog with "
                              "demo.npz's nonzero MACs per step"},
            "golden": {"wer": word_error_rate(refs, [r["text"] for r in golden]),
                       "fast_fraction": g_fast, "model": paths["int4_s50"].name,
                       "note": "golden integer pipeline, greedy, after_final=continue, "
                               f"CostModel(speed={cfg.device_speed:g})"},
            "per_utterance": [
                {"file": w.name, "reference": ref, "golden": g["text"], "torch": t,
                 "golden_fast_frames": g["fast_frames"], "frames": g["frames"]}
                for w, ref, g, t in zip(wavs, refs, golden, torch_text)],
        },
        "files": {k: p.name for k, p in paths.items()},
        "export_seconds": time.time() - t0,
    }
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=1, default=_plain) + "\n")
    curve = work_dir / "training-curve.png"
    if curve.exists():
        shutil.copyfile(curve, out_dir / "training-curve.png")
    if (work_dir / HISTORY).exists():
        shutil.copyfile(work_dir / HISTORY, out_dir / "history.json")
    return summary


def _plain(x):
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")
