"""The training loop: RNN-T loss, arbitrator penalties, QAT and pruning schedules, checkpoints.

One run (``python -m train``, :func:`train`) goes through these phases, by fraction of
the optimizer steps (:class:`TrainConfig`):

* ``0 .. qat_start``: float training; the branch gate's temperature anneals from the
  start (soft, noisy choices) towards near binary ones.
* ``qat_start ..``: 4-bit fake quantization of every matrix (``train.compress``).
* ``prune_start .. prune_end``: the pruning masks grow on a cubic schedule to the target
  sparsity (every ``prune_every`` steps), then stay fixed while training goes on.
* ``hard_from ..``: the gate is binary in the forward pass (straight-through).

After every epoch: greedy validation WER in torch (golden's arbitration rule), a
checkpoint, a line in the status file, the history JSON and the training-curve plot.
The checkpoint holds everything to resume (model, optimizer, step, RNG states), and an
interrupted epoch resumes at the batch after the last checkpointed one.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from golden.model import ModelConfig
from golden.tokens import Tokenizer, default_tokens

from .arbitration import DeviceCost, GateSchedule, amortization_penalty, compute_penalty
from .augment import Augment, extend_tails, require_count
from .compress import cubic_sparsity
from .data import load_split
from .loss import rnnt_loss
from .model import RNNT

__all__ = ["TrainConfig", "load_checkpoint_model", "train", "train_step"]

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything a training run depends on (stored in checkpoints).

    Parameters
    ----------
    epochs, batch_size, lr, seed : training basics (Adam, cosine decay to ``lr / 10``).
    train_limit : int or None
        Use only the first ``train_limit`` training utterances.
    val_limit : int
        Validation utterances decoded after each epoch.
    fast_hidden, slow_hidden, enc_dim, arbitrator_hidden, pred_embed, pred_hidden,
    joint_dim : int
        ``golden.model.ModelConfig`` sizes.
    sparsity : float
        Target fraction of pruned weights per matrix.
    qat_start, prune_start, prune_end, hard_from : float
        Phase boundaries, as fractions of all optimizer steps.
    prune_every : int
        Steps between mask updates.
    ctc_weight : float
        Weight of the auxiliary CTC loss on the encoder output (training only).
    cost_weight, amortization_weight : float
        Weights of the slow-compute and amortization penalties (per frame).
    free_backlog : float
        Backlog (frames) below which the fast branch is penalized.
    device_speed : float
        Simulated device speed (MACs/s) for the backlog; chosen so always-slow falls
        behind real time.
    temperature_start, temperature_end : float
        Gate temperature annealing range.
    grad_clip : float
        Gradient norm limit.
    checkpoint_every : int
        Steps between mid-epoch checkpoints.
    predictor_dropout : float
        Probability of replacing each token fed to the prediction network by the blank
        while training (the targets stay): weakens the language-model shortcut.
    init : str or None
        A checkpoint whose model weights (and feature statistics) start this run; the
        optimizer and the schedules start afresh.
    warp, freq_masks, time_masks : float, int, int
        Feature augmentation (``train.augment.Augment``): mel-axis warp range and the
        number of SpecAugment masks; all zero: none.
    tail_frames : int
        Append up to this many frames of each utterance's trailing background
        (``train.augment.extend_tails``; 0: none).
    force_fraction : float
        Fraction of batches whose frames all go to one branch, half of them slow, half
        fast, the arbitrator bypassed: each branch stays a working encoder on its own
        (the always-slow baseline is a real model, and the gated mix does not rely on
        the branches co-adapting).
    """

    epochs: int = 7
    batch_size: int = 16
    lr: float = 2e-3
    seed: int = 0
    train_limit: int | None = None
    val_limit: int = 100
    fast_hidden: int = 64
    slow_hidden: int = 128
    enc_dim: int = 96
    arbitrator_hidden: int = 32
    pred_embed: int = 48
    pred_hidden: int = 80
    joint_dim: int = 96
    sparsity: float = 0.5
    qat_start: float = 0.35
    prune_start: float = 0.45
    prune_end: float = 0.8
    hard_from: float = 0.75
    prune_every: int = 10
    ctc_weight: float = 1.0
    cost_weight: float = 0.05
    amortization_weight: float = 0.1
    free_backlog: float = 2.0
    device_speed: float = 3.2e6
    temperature_start: float = 2.0
    temperature_end: float = 0.05
    grad_clip: float = 1.0
    checkpoint_every: int = 50
    predictor_dropout: float = 0.0
    init: str | None = None
    warp: float = 0.0
    freq_masks: int = 0
    time_masks: int = 0
    tail_frames: int = 0
    force_fraction: float = 0.0

    def __post_init__(self):
        require_count("TrainConfig.tail_frames", self.tail_frames)
        for name in ("epochs", "batch_size", "val_limit", "prune_every", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {v!r}")
        if self.train_limit is not None and self.train_limit < 1:
            raise ValueError(f"TrainConfig.train_limit must be >= 1, got {self.train_limit!r}")
        for name in ("qat_start", "prune_start", "prune_end", "hard_from", "force_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1], got {v!r}")
        if self.prune_end <= self.prune_start:
            raise ValueError("TrainConfig.prune_end must be after prune_start")
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"TrainConfig.sparsity must be in [0, 1), got {self.sparsity!r}")
        for name in ("lr", "device_speed", "free_backlog", "temperature_start",
                     "temperature_end", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.predictor_dropout < 1.0:
            raise ValueError("TrainConfig.predictor_dropout must be in [0, 1), "
                             f"got {self.predictor_dropout!r}")
        self.augment()  # validates warp and the mask counts
        for name in ("ctc_weight", "cost_weight", "amortization_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)!r}")

    def model_config(self, frontend: dict) -> ModelConfig:
        """The golden model config of this run (default 29-token vocabulary)."""
        return ModelConfig(vocabulary=tuple(default_tokens()), fast_hidden=self.fast_hidden,
                           slow_hidden=self.slow_hidden, enc_dim=self.enc_dim,
                           arbitrator_hidden=self.arbitrator_hidden,
                           pred_embed=self.pred_embed, pred_hidden=self.pred_hidden,
                           joint_dim=self.joint_dim, frontend=frontend)

    def device_cost(self, config: ModelConfig) -> DeviceCost:
        from golden.frontend import FrontendConfig
        return DeviceCost.for_model(config, sparsity=self.sparsity, speed=self.device_speed,
                                    frontend=FrontendConfig.from_dict(config.frontend))

    def augment(self) -> Augment | None:
        """The feature augmentation of this run, or None."""
        if not (self.warp or self.freq_masks or self.time_masks):
            return None
        return Augment(warp=self.warp, freq_masks=self.freq_masks, time_masks=self.time_masks)

    def schedule(self, progress: float) -> GateSchedule:
        return GateSchedule.annealed(progress, start=self.temperature_start,
                                     end=self.temperature_end, hard_from=self.hard_from)


def train_step(model: RNNT, batch, *, config: TrainConfig, cost: DeviceCost,
               schedule: GateSchedule, tokens_per_frame: float,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Forward pass and losses of one batch (no optimizer step).

    Returns
    -------
    dict
        ``loss`` (the total, for backward), ``rnnt`` (nats per frame), ``compute`` and
        ``amortization`` (penalties), ``fast`` (fraction of fast frames, by gate weight).
    """
    rate = torch.full((len(batch.lengths),), float(tokens_per_frame))
    if config.tail_frames:
        feats, lengths = extend_tails(batch.feats, batch.lengths, frames=config.tail_frames,
                                      generator=generator)
        batch = replace(batch, feats=feats, lengths=lengths)
    feats = batch.feats
    augment = config.augment()
    if augment is not None:
        fe = model.config.frontend
        feats = augment(feats, batch.lengths, n_mels=fe["n_mels"], fill=model.feature_mean,
                        scale=fe["feature_scale"], generator=generator)
    if config.force_fraction > 0:
        u = float(torch.rand((), generator=generator))
        if u < config.force_fraction:
            schedule = replace(schedule, force=int(u < config.force_fraction / 2))
    out = model.encode(feats, batch.lengths, schedule=schedule, cost=cost,
                       decoder_rate=rate, generator=generator)
    fed = batch.tokens
    if config.predictor_dropout > 0:
        drop = torch.rand(fed.shape, generator=generator) < config.predictor_dropout
        fed = torch.where(drop, torch.zeros_like(fed), fed)
    pred = model.predict(fed)
    logits = model.joint(out.enc, pred)
    nll = rnnt_loss(logits, batch.tokens, batch.lengths, batch.token_lengths)
    frames = batch.lengths.sum().float()
    rnnt = nll.sum() / frames
    ctc_lp = torch.log_softmax(model.ctc_head(out.enc), -1).transpose(0, 1)  # [T, B, V]
    ctc = torch.nn.functional.ctc_loss(ctc_lp, batch.tokens, batch.lengths,
                                       batch.token_lengths, blank=0, reduction="sum",
                                       zero_infinity=True) / frames
    mask = batch.frame_mask
    comp = compute_penalty(out.gate, mask, cost)
    amr = amortization_penalty(out.gate, out.backlog, mask, free_backlog=config.free_backlog)
    loss = (rnnt + config.ctc_weight * ctc + config.cost_weight * comp
            + config.amortization_weight * amr)
    fast = ((1.0 - out.gate.detach()) * mask).sum() / mask.sum()
    return {"loss": loss, "rnnt": rnnt.detach(), "ctc": ctc.detach(), "compute": comp.detach(),
            "amortization": amr.detach(), "fast": fast}


def _build_model(cfg: TrainConfig, frontend: dict, mean, std) -> RNNT:
    return RNNT(config=cfg.model_config(frontend), feature_mean=torch.as_tensor(mean),
                feature_std=torch.as_tensor(std), seed=cfg.seed)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`train` (a dict; see ``_save``)."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such checkpoint") from None
    if not isinstance(ck, dict) or ck.get("format") != "nep-train-checkpoint":
        raise ValueError(f"{path}: not a training checkpoint of python -m train")
    return ck


def load_checkpoint_model(path: str | os.PathLike) -> RNNT:
    """The trained :class:`~train.model.RNNT` of a checkpoint (eval mode)."""
    ck = load_checkpoint(path)
    cfg = TrainConfig(**ck["train_config"])
    model = _build_model(cfg, ck["frontend"], ck["feature_mean"], ck["feature_std"])
    model.load_state_dict(ck["model"])
    return model.eval()


def _save(path: Path, *, model, optimizer, cfg, frontend, mean, std, epoch, batch_done,
          step, history, generator) -> None:
    ck = {"format": "nep-train-checkpoint", "train_config": asdict(cfg), "frontend": frontend,
          "feature_mean": np.asarray(mean), "feature_std": np.asarray(std),
          "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
          "batch_done": batch_done, "step": step, "history": history,
          "generator": generator.get_state(), "torch_rng": torch.get_rng_state()}
    tmp = path.with_suffix(".tmp")
    torch.save(ck, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint


def _lr(cfg: TrainConfig, step: int, total: int) -> float:
    warm = min(1.0, (step + 1) / 100.0)
    cos = 0.5 * (1.0 + math.cos(math.pi * min(step / max(total, 1), 1.0)))
    return cfg.lr * warm * (0.1 + 0.9 * cos)


def train(cfg: TrainConfig, *, data_dir: str | os.PathLike, work_dir: str | os.PathLike,
          status_file: str | os.PathLike | None = None, progress: bool = True,
          stop_at_step: int | None = None, log=print) -> Path:
    """Train (or resume) a model; returns the checkpoint path.

    Parameters
    ----------
    cfg : TrainConfig
    data_dir : path
        Holds ``train/features.npz`` and ``validation/features.npz``.
    work_dir : path
        Checkpoint, history and plot. An existing checkpoint there is resumed; it must
        have been written with the same ``cfg``.
    status_file : path, optional
        One line per epoch is appended (epoch, loss, validation WER, fast fraction).
    stop_at_step : int, optional
        Save a checkpoint and return after this many optimizer steps (a first stage
        for a later run's ``init``); the schedules still span all epochs.
    """
    from tqdm import tqdm

    from .export import greedy_decode, word_error_rate

    data_dir, work_dir = Path(data_dir), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        if not (data_dir / split / "features.npz").exists():
            raise FileNotFoundError(f"{data_dir / split / 'features.npz'} not found: "
                                    "generate the data set first (make dataset)")
    tok = Tokenizer(default_tokens())
    train_set = load_split(data_dir / "train" / "features.npz", tok, limit=cfg.train_limit)
    val_set = load_split(data_dir / "validation" / "features.npz", tok, limit=cfg.val_limit)
    frontend = train_set.frontend.to_dict()
    ck_path = work_dir / CHECKPOINT
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if ck_path.exists():
        ck = load_checkpoint(ck_path)
        if TrainConfig(**ck["train_config"]) != cfg:
            raise ValueError(f"{ck_path} was written with different settings; delete it or "
                             "use another --work directory")
        mean, std = ck["feature_mean"], ck["feature_std"]
        model = _build_model(cfg, frontend, mean, std)
        model.load_state_dict(ck["model"])
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        optimizer.load_state_dict(ck["optimizer"])
        epoch, batch_done, step, history = ck["epoch"], ck["batch_done"], ck["step"], \
            ck["history"]
        gen.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
        log(f"resuming from {ck_path}: epoch {epoch + 1}, batch {batch_done}, step {step}")
    elif cfg.init is not None:
        init = load_checkpoint(cfg.init)
        mean, std = init["feature_mean"], init["feature_std"]
        model = _build_model(cfg, frontend, mean, std)
        model.load_state_dict(init["model"])
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        epoch, batch_done, step, history = 0, 0, 0, {"steps": [], "epochs": []}
        log(f"starting from the weights of {cfg.init} (step {init['step']})")
    else:
        mean, std = train_set.feature_stats()
        model = _build_model(cfg, frontend, mean, std)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        epoch, batch_done, step, history = 0, 0, 0, {"steps": [], "epochs": []}
    earlier = stage_histories(cfg.init) if cfg.init is not None else []
    cost = cfg.device_cost(model.config)
    rate = train_set.tokens_per_frame()
    per_epoch = len(train_set.batches(cfg.batch_size, seed=0))
    total = per_epoch * cfg.epochs
    log(f"{len(train_set)} training utterances ({int(train_set.lengths.sum())} frames), "
        f"{len(val_set)} validation; {per_epoch} batches per epoch, {total} steps; "
        f"always-slow device load {cost.always_slow_load(rate):.2f}x real time")
    save = dict(model=model, optimizer=optimizer, cfg=cfg, frontend=frontend, mean=mean,
                std=std, history=history, generator=gen)
    model.train()
    if stop_at_step is not None and step >= stop_at_step:
        log(f"{ck_path} is already at step {step}")
        return ck_path
    while epoch < cfg.epochs:
        batches = train_set.batches(cfg.batch_size, seed=cfg.seed * 1000 + epoch)
        sums = {"rnnt": 0.0, "ctc": 0.0, "compute": 0.0, "amortization": 0.0, "fast": 0.0}
        seen = 0
        t0 = time.time()
        bar = tqdm(total=len(batches), initial=batch_done, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, unit="batch", dynamic_ncols=True)
        for i in range(batch_done, len(batches)):
            p = step / total
            if p >= cfg.qat_start and not model.compression.quantizing:
                model.compression.enable_quantization()
                log(f"step {step}: 4-bit quantization-aware training on")
            if p >= cfg.prune_start and step % cfg.prune_every == 0:
                target = cubic_sparsity(step, target=cfg.sparsity,
                                        start=int(cfg.prune_start * total),
                                        end=int(cfg.prune_end * total))
                with torch.no_grad():
                    model.compression.prune({n: model.effective(n)[0]
                                             for n in model.specs}, target)
            for group in optimizer.param_groups:
                group["lr"] = _lr(cfg, step, total)
            res = train_step(model, train_set.batch(batches[i]), config=cfg, cost=cost,
                             schedule=cfg.schedule(p), tokens_per_frame=rate, generator=gen)
            optimizer.zero_grad(set_to_none=True)
            res["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            seen += 1
            for k in sums:
                sums[k] += float(res[k])
            history["steps"].append({"step": step, "rnnt": float(res["rnnt"]),
                                     "fast": float(res["fast"])})
            bar.set_postfix(loss=f"{float(res['rnnt']):.3f}", ctc=f"{float(res['ctc']):.3f}",
                            fast=f"{float(res['fast']):.2f}",
                            sparsity=f"{model.compression.sparsity():.2f}")
            bar.update(1)
            if step % cfg.checkpoint_every == 0 or step == stop_at_step:
                _save(ck_path, epoch=epoch, batch_done=i + 1, step=step, **save)
            if step == stop_at_step:
                bar.close()
                (work_dir / HISTORY).write_text(json.dumps(history))
                log(f"stopped at step {step} as asked: {ck_path}")
                return ck_path
        bar.close()
        words_ref = [val_set.transcripts[i] for i in range(len(val_set))]
        hyps, fast = greedy_decode(model, val_set, range(len(val_set)), cost=cost)
        wer = word_error_rate(words_ref, [tok.decode(h) for h in hyps])
        n = max(seen, 1)
        rec = {"epoch": epoch + 1, "step": step, "rnnt": sums["rnnt"] / n, "ctc": sums["ctc"] / n,
               "compute": sums["compute"] / n, "amortization": sums["amortization"] / n,
               "train_fast": sums["fast"] / n, "val_wer": wer, "val_fast": fast,
               "sparsity": model.compression.sparsity(),
               "quantized": model.compression.quantizing, "seconds": time.time() - t0}
        history["epochs"].append(rec)
        line = (f"epoch {epoch + 1}/{cfg.epochs} step {step}: loss {rec['rnnt']:.4f} nats/frame, "
                f"val greedy WER {100 * wer:.2f}%, fast {100 * fast:.1f}% (val), "
                f"sparsity {rec['sparsity']:.2f}, 4-bit QAT {'on' if rec['quantized'] else 'off'}, "
                f"{rec['seconds'] / 60:.1f} min")
        log(line)
        if status_file is not None:
            with open(status_file, "a") as f:
                f.write(time.strftime("%H:%M:%S ", time.gmtime()) + line + "\n")
        epoch += 1
        batch_done = 0
        _save(ck_path, epoch=epoch, batch_done=0, step=step, **save)
        (work_dir / HISTORY).write_text(json.dumps(history))
        plot_history([*earlier, (work_dir.name, history)], work_dir / "training-curve.png")
    return ck_path


def stage_histories(checkpoint: str | os.PathLike) -> list[tuple[str, dict]]:
    """``(work directory name, history)`` of ``checkpoint``'s run and of every run it
    started from (``init``, followed back), oldest first: a recipe's earlier stages.
    Stops at a checkpoint that no longer exists."""
    chain, path, seen = [], Path(checkpoint), set()
    while path.exists() and path.resolve() not in seen:
        seen.add(path.resolve())
        ck = load_checkpoint(path)
        chain.append((path.parent.name, ck["history"]))
        init = ck["train_config"].get("init")
        if init is None:
            break
        path = Path(init)
    return chain[::-1]


def plot_history(stages: Sequence[tuple[str, dict]], path: str | os.PathLike) -> bool:
    """Training curve of one or more consecutive runs (``(name, history)``, oldest first)
    as a PNG: loss per step, validation WER and fast fraction per epoch, on one step
    axis, with a line where each run starts.

    Returns False (and writes nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    x, y, ex, wer, fast, offset = [], [], [], [], [], 0
    for i, (name, history) in enumerate(stages):
        for ax in (a1, a2):
            ax.axvline(offset, color="grey", lw=0.8, ls=":")
        a1.annotate(name, (offset, 1), xycoords=("data", "axes fraction"), va="top",
                    fontsize=8, xytext=(3, -3), textcoords="offset points")
        x += [offset + s["step"] for s in history["steps"]]
        y += [s["rnnt"] for s in history["steps"]]
        ex += [offset + r["step"] for r in history["epochs"]]
        wer += [100 * r["val_wer"] for r in history["epochs"]]
        fast += [100 * r["val_fast"] for r in history["epochs"]]
        # A run stopped early (stop_at_step) ends at its last logged step.
        offset += max([s["step"] for s in history["steps"]] +
                      [r["step"] for r in history["epochs"]] + [0])
    if y:
        k = min(25, len(y))
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        a1.plot(x, y, alpha=0.3, label="RNN-T loss (batch)")
        a1.plot(x[k - 1:], smooth, label=f"mean of {k}")
        a1.set_yscale("log")
    a1.set_xlabel("step (all runs)")
    a1.set_ylabel("nats per frame")
    a1.legend(loc="lower left")
    if ex:
        a2.plot(ex, wer, "o-", label="validation WER (%)")
        a2.plot(ex, fast, "s--", label="fast frames, validation (%)")
    a2.set_xlabel("step (all runs)")
    a2.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def config_from_args(values: dict) -> TrainConfig:
    """:class:`TrainConfig` from a dict that may hold other keys (CLI namespaces)."""
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in names and v is not None})
