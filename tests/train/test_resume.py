"""The training loop end to end on a tiny data set: an interrupted run resumes exactly."""

import json

import numpy as np
import pytest
import torch

import train.trainer as trainer
from data.features import write_features
from golden.frontend import FrontendConfig
from train.trainer import TrainConfig, load_checkpoint_model

TINY = dict(epochs=2, batch_size=2, val_limit=2, fast_hidden=8, slow_hidden=12, enc_dim=10,
            arbitrator_hidden=6, pred_embed=6, pred_hidden=8, joint_dim=10, prune_every=1,
            checkpoint_every=1, device_speed=2e4)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    rng = np.random.default_rng(0)
    texts = ["hey nep", "stop", "call anna", "lights on", "what is the time", "play"]
    for split in ("train", "validation"):
        (root / split).mkdir()
        frames = [rng.integers(-128, 60, (10 + 2 * i, 120)).astype(np.int8)
                  for i in range(len(texts))]
        write_features(root / split / "features.npz", frames=frames, transcripts=texts,
                       files=[f"{i}.wav" for i in range(len(texts))],
                       frontend=FrontendConfig())
    return root


def _weights(path):
    return {k: v.clone() for k, v in load_checkpoint_model(path).state_dict().items()}


def test_interrupted_run_resumes_to_the_same_model(data_dir, tmp_path, monkeypatch):
    cfg = TrainConfig(**TINY)
    whole = trainer.train(cfg, data_dir=data_dir, work_dir=tmp_path / "whole", progress=False,
                          log=lambda *_: None)
    history = json.loads((tmp_path / "whole" / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert history["epochs"][-1]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert history["epochs"][-1]["quantized"]

    real_step = trainer.train_step
    calls = {"n": 0}

    def failing_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # in the middle of epoch 2 (3 batches per epoch)
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", failing_step)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(cfg, data_dir=data_dir, work_dir=tmp_path / "split", progress=False,
                      log=lambda *_: None)
    monkeypatch.setattr(trainer, "train_step", real_step)
    resumed = trainer.train(cfg, data_dir=data_dir, work_dir=tmp_path / "split",
                            progress=False, log=lambda *_: None)
    a, b = _weights(whole), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_other_settings(data_dir, tmp_path):
    trainer.train(TrainConfig(**{**TINY, "epochs": 1}), data_dir=data_dir, work_dir=tmp_path,
                  progress=False, log=lambda *_: None)
    with pytest.raises(ValueError, match="different settings"):
        trainer.train(TrainConfig(**{**TINY, "epochs": 1, "lr": 1e-4}), data_dir=data_dir,
                      work_dir=tmp_path, progress=False, log=lambda *_: None)


def test_missing_data_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="make dataset"):
        trainer.train(TrainConfig(**TINY), data_dir=tmp_path, work_dir=tmp_path / "w",
                      progress=False)


def test_two_stages_with_init_and_predictor_dropout(data_dir, tmp_path):
    first = trainer.train(TrainConfig(**TINY), data_dir=data_dir, work_dir=tmp_path / "a",
                          progress=False, stop_at_step=2, log=lambda *_: None)
    ck = trainer.load_checkpoint(first)
    assert ck["step"] == 2
    # Asking again for the same stop does no more work.
    again = trainer.train(TrainConfig(**TINY), data_dir=data_dir, work_dir=tmp_path / "a",
                          progress=False, stop_at_step=2, log=lambda *_: None)
    assert trainer.load_checkpoint(again)["step"] == 2
    cfg = TrainConfig(**{**TINY, "epochs": 1, "predictor_dropout": 0.4, "init": str(first)})
    second = trainer.train(cfg, data_dir=data_dir, work_dir=tmp_path / "b", progress=False,
                           log=lambda *_: None)
    start, end = _weights(first), _weights(second)
    assert not torch.equal(start["embed"], end["embed"])
    assert trainer.load_checkpoint(second)["step"] == 3
    # The second stage's curve covers both runs: each stage's history, oldest first.
    chain = trainer.stage_histories(second)
    assert [name for name, _ in chain] == ["a", "b"]
    assert [len(h["steps"]) for _, h in chain] == [2, 3]
    assert (tmp_path / "b" / "training-curve.png").stat().st_size > 0
    first.unlink()  # a stage whose checkpoint is gone ends the chain
    assert [name for name, _ in trainer.stage_histories(second)] == ["b"]
    with pytest.raises(ValueError, match="predictor_dropout"):
        TrainConfig(predictor_dropout=1.0)


def test_cli_trains_with_augmentation_and_exports_one_variant(data_dir, tmp_path, capsys):
    from golden.model import QuantModel, load_model
    from train.__main__ import main

    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY, "epochs": 1}.items()]
    flags += ["--warp=0.1", "--freq-masks=1", "--time-masks=1", "--tail-frames=4",
              "--force-fraction=0.5"]
    out = tmp_path / "models"
    argv = ["--data", str(data_dir), "--work", str(tmp_path / "w"), "--out", str(out),
            "--no-progress", "--export-variants", "int4_s75", *flags]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["int4_s75.npz"]  # no float, no json
    qm = load_model(out / "int4_s75.npz")
    assert isinstance(qm, QuantModel) and qm.config.quant.sparsity == 0.75
    assert "arbitrator offset 0.0000" in capsys.readouterr().out
    # An unknown variant is refused by the parser.
    with pytest.raises(SystemExit) as e:
        main([*argv[:-len(flags) - 1], "int3", *flags])
    assert e.value.code == 2
