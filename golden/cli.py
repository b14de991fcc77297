"""Command line: ``python -m golden transcribe | random-model`` (``docs/pipeline.md``).

``transcribe MODEL AUDIO`` runs the end-to-end golden pipeline on a WAV file and prints
the transcript, N-best, end points, per-branch frame counts, cost and latency (``--json``:
one JSON document). ``random-model OUT`` writes a seeded random integer model, so the
pipeline can run before a trained model exists. Errors in the inputs (missing or corrupt
model file, unreadable audio, bad context phrase) print ``error: ...`` to stderr and exit
with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from .arbitration import BRANCH_NAMES, DEFAULT_MACS_PER_SECOND, CostModel
from .frontend import FrontendConfig, features
from .model import (
    FAST,
    SLOW,
    FloatModel,
    ModelConfig,
    ModelError,
    QuantModel,
    load_model,
    random_float_model,
    save_model,
)
from .pipeline import AFTER_FINAL, Recognizer, Result
from .quantize import quantize_model
from .tokens import BLANK_ID, default_tokens
from .wav import WavError, load_audio

__all__ = ["MODEL_SIZES", "UsageError", "load_audio_file", "load_quant_model", "main",
           "random_model", "synthetic_speech"]

#: ``random-model --size`` choices: (front-end settings, model sizes).
MODEL_SIZES = {
    "small": ({"n_mels": 20}, dict(fast_hidden=16, slow_hidden=48, enc_dim=24,
                                   arbitrator_hidden=8, pred_embed=8, pred_hidden=16,
                                   joint_dim=24)),
    "default": ({}, {}),
}
#: Share of frames on which a random model's best token beats blank (before decoding): a
#: trained character RNN-T emits blank on most frames (speech is ~12 characters/s).
RANDOM_TOKEN_RATE = 0.25
#: Share of calibration frames on which an idle (zero backlog) random arbitrator picks slow.
RANDOM_IDLE_SLOW_RATE = 0.9
#: A random model's arbitrator moves this many logit units towards "fast" per 8 frames
#: of backlog, so it prefers the slow branch when idle and the fast one when behind.
RANDOM_BACKLOG_GAIN = 1.0
#: Seconds of synthetic audio used to calibrate a random model.
CALIBRATION_SECONDS = 3.0
#: Audio pushed per step when transcribing (progress bar granularity).
CHUNK_SECONDS = 0.5
EXIT_USAGE = 2


def synthetic_speech(seconds: float, *, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A deterministic speech-like test signal.

    After 0.3 s of silence: a random sequence of 60-250 ms segments, each a voiced
    harmonic tone (f0 90-240 Hz, 1/k harmonics below 7 kHz, 55%), a noise burst (20%) or
    a pause (25%), each under a half-sine envelope.

    Returns
    -------
    numpy.ndarray
        float64 samples in ``[-1, 1]``, ``round(seconds * sample_rate)`` of them.
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    x = np.zeros(n)
    pos = int(0.3 * sample_rate)
    while pos < n:
        kind = rng.choice(3, p=[0.55, 0.2, 0.25])
        seg = min(int(rng.uniform(0.06, 0.25) * sample_rate), n - pos)
        t = np.arange(seg) / sample_rate
        if kind == 0:
            f0 = rng.uniform(90.0, 240.0)
            s = 0.25 * sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k
                           for k in range(1, 12) if f0 * k < 7000.0)
        elif kind == 1:
            s = 0.1 * rng.standard_normal(seg)
        else:
            s = np.zeros(seg)
        x[pos:pos + seg] = s * np.sqrt(np.sin(np.pi * np.arange(seg) / seg))
        pos += seg
    return np.clip(x, -1.0, 1.0)


def random_model(size: str = "small", seed: int = 0) -> QuantModel:
    """A seeded random integer model that runs in the pipeline.

    ``random_float_model``, then adjustments a trained model would have learned, so the
    pipeline's behaviour is not degenerate:

    * the feature mean and deviation of the calibration audio are folded into the layers
      reading features (unit-variance inputs, as the random weights assume);
    * the blank logit is raised until the best token beats blank on only
      :data:`RANDOM_TOKEN_RATE` of the calibration frames (both branches, predictor
      states after random token histories);
    * arbitrator hidden unit 0 becomes ``relu(backlog / 8)``, feeding the fast and slow
      logits with ``+-RANDOM_BACKLOG_GAIN``, and the slow logit's bias is set so that an
      idle arbitrator (zero backlog) picks slow on :data:`RANDOM_IDLE_SLOW_RATE` of the
      calibration frames.

    Then ``quantize_model`` on the front-end features of :func:`synthetic_speech`, with
    the front end's feature scale.

    Parameters
    ----------
    size : {"small", "default"}
        ``"default"`` is ``ModelConfig``'s default (1.27 M parameters).
    seed : int
    """
    if size not in MODEL_SIZES:
        raise ValueError(f"size must be one of {tuple(MODEL_SIZES)}, got {size!r}")
    fe_kw, model_kw = MODEL_SIZES[size]
    fe = FrontendConfig(**fe_kw)
    config = ModelConfig(vocabulary=tuple(default_tokens()), feature_dim=fe.feature_dim,
                         frontend=fe.to_dict(), **model_kw)
    audio = synthetic_speech(CALIBRATION_SECONDS, sample_rate=fe.sample_rate, seed=seed + 1)
    feats = features(audio, fe).astype(np.float64) * fe.feature_scale
    t = {k: v.astype(np.float64) for k, v in random_float_model(config, seed).tensors.items()}
    mean, std = feats.mean(axis=0), feats.std(axis=0) + 1e-3
    f = config.feature_dim
    for layer in ("arb.hidden", "fast.lstm", "slow.lstm1"):
        w = t[f"{layer}.weight"]
        w[:, :f] /= std
        t[f"{layer}.bias"] = t[f"{layer}.bias"] - w[:, :f] @ mean
    t["joint.out.bias"][0] += _blank_bias(_float_model(config, t), feats, RANDOM_TOKEN_RATE,
                                          seed)
    t["arb.hidden.weight"][0] = 0.0
    t["arb.hidden.weight"][0, -1] = 1.0 / 8.0
    t["arb.hidden.bias"][0] = 0.0
    t["arb.out.weight"][:, 0] = (RANDOM_BACKLOG_GAIN, -RANDOM_BACKLOG_GAIN)
    arbitrator = _float_model(config, t)
    idle = [np.subtract(*arbitrator.arbitrator_logits(x, 0.0)) for x in feats]
    t["arb.out.bias"][1] += float(np.quantile(idle, RANDOM_IDLE_SLOW_RATE))
    return quantize_model(_float_model(config, t), [feats], feature_scale=fe.feature_scale,
                          seed=seed)


def _float_model(config: ModelConfig, tensors: dict) -> FloatModel:
    return FloatModel(config, {k: v.astype(np.float32) for k, v in tensors.items()})


def _blank_bias(fm: FloatModel, feats: np.ndarray, rate: float, seed: int) -> float:
    """Blank logit offset below which a fraction ``rate`` of token-vs-blank gaps lie.

    Gaps are measured on every calibration frame (both branches) against predictor
    states after seeded random token histories, the states the search will meet.
    """
    rng = np.random.default_rng(seed)
    preds, state = [], fm.initial_predictor_state()
    for token in [BLANK_ID, *rng.integers(1, fm.config.vocab_size, len(feats) - 1)]:
        out, state = fm.predictor_step(int(token), state)
        preds.append(out)
    enc_state = fm.initial_encoder_state()
    gaps = []
    for x, pred in zip(feats, preds):
        for branch in (FAST, SLOW):
            enc, enc_state = fm.encoder_step(branch, x, enc_state)
            logits = fm.joint(enc, pred)
            gaps.append(np.max(logits[1:]) - logits[0])
    return float(np.quantile(gaps, 1.0 - rate))


class UsageError(Exception):
    """Bad input from the user: printed as ``error: ...``, exit status 2."""


def load_quant_model(path: str) -> QuantModel:
    """Read an integer model file for the pipeline.

    Parameters
    ----------
    path : str
        A model ``.npz`` written by :func:`golden.model.save_model`.

    Returns
    -------
    QuantModel

    Raises
    ------
    UsageError
        If the file is missing, unreadable or corrupt, or holds a float model; the
        message names the file and says what is wrong.
    """
    try:
        model = load_model(path)
    except ModelError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read model file: {e.strerror or e}") from None
    if not isinstance(model, QuantModel):
        raise UsageError(f"{path}: is a float model; the pipeline runs integer models "
                          "(quantize it first)")
    return model


def load_audio_file(path: str, *, sample_rate: int) -> np.ndarray:
    """Read a WAV file as mono float samples at ``sample_rate``
    (:func:`golden.wav.load_audio`), with command-line errors.

    Parameters
    ----------
    path : str
    sample_rate : int, keyword-only
        Target rate in Hz (the model's front end).

    Returns
    -------
    numpy.ndarray
        float64 samples in ``[-1, 1]``.

    Raises
    ------
    UsageError
        If the file is missing, unreadable or not a WAV file this reader handles.
    """
    try:
        return load_audio(path, sample_rate=sample_rate)
    except WavError as e:
        raise UsageError(f"{path}: unreadable audio: {e}") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read audio file: {e.strerror or e}") from None


def _run(rec: Recognizer, audio: np.ndarray, progress: bool) -> Result:
    from tqdm import tqdm

    sr = rec.frontend_config.sample_rate
    chunk = int(CHUNK_SECONDS * sr)
    with tqdm(total=round(len(audio) / sr, 2), unit="s", file=sys.stderr, disable=not progress,
              desc="transcribing", bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s") as bar:
        for i in range(0, len(audio), chunk):
            piece = audio[i:i + chunk]
            rec.push(piece)
            bar.update(round(len(piece) / sr, 2))
        return rec.finish()


def _format(result: Result, cost: CostModel) -> str:
    lines = [f"transcript: {result.text}", "n-best:"]
    for i, h in enumerate(result.nbest, 1):
        lines.append(f"  {i}. {h.score:9.3f} (per token {h.normalized_score:7.3f})  {h.text}")
    lines.append("end points:" if result.endpoints else "end points: none")
    for e in result.endpoints:
        lines.append(f"  {e.kind:<11} frame {e.frame:4d}  audio {e.time_ms:8.1f} ms  "
                     f"device {e.device_ms:8.1f} ms  {e.reason}")
    if result.stopped_at is not None:
        lines.append(f"  decoding stopped at frame {result.stopped_at} of {result.num_frames}")
    r = result.report
    n = len(r.frames)
    counts = r.branch_frames
    lines.append("branches: " + ", ".join(
        f"{b} {counts[b]} ({100.0 * counts[b] / n if n else 0.0:.1f}%)" for b in BRANCH_NAMES))
    unit = "MACs" if cost.unit == "macs" else "cycles"
    lines.append(f"cost: {r.total:.4g} {unit}, {r.seconds:.3f} s at {cost.speed:.4g} {unit}/s "
                 f"for {r.audio_ms / 1000.0:.2f} s of audio (load {r.load:.2f}x real time)")
    lines.append(f"backlog: max {max(r.backlog_frames, default=0.0):.2f} frames "
                 f"({max(r.backlog_ms, default=0.0):.1f} ms)")
    lines.append(f"latency: {r.latency_ms:.1f} ms from the last audio to the final result")
    return "\n".join(lines)


def _transcribe(args) -> int:
    model = load_quant_model(args.model)
    try:
        cost = CostModel(speed=args.device_speed)
        rec = Recognizer(model, beam=args.beam, context=args.context, cost=cost,
                         after_final=args.after_final)
    except ValueError as e:
        raise UsageError(str(e)) from None
    audio = load_audio_file(args.audio, sample_rate=rec.frontend_config.sample_rate)
    result = _run(rec, audio, args.progress or sys.stderr.isatty())
    if args.json:
        print(json.dumps(result.to_dict(), allow_nan=False))
    else:
        print(_format(result, cost))
    return 0


def _random_model(args) -> int:
    model = random_model(args.size, args.seed)
    try:
        save_model(model, args.out)
    except OSError as e:
        raise UsageError(f"{args.out}: cannot write model file: {e.strerror or e}") from None
    n = sum(model.tensors[k].size for k in model.tensors if k.endswith((".weight", ".table")))
    print(f"wrote {args.out}: {args.size} random model, seed {args.seed}, {n} weights")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m golden",
                                description="NEP golden speech pipeline")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="recognize a WAV file")
    t.add_argument("model", help="integer model file (.npz)")
    t.add_argument("audio", help="WAV file (any rate, mixed down and resampled)")
    t.add_argument("--context", nargs="+", default=[], metavar="PHRASE",
                   help="phrases to bias towards (needs --beam >= 2)")
    t.add_argument("--beam", type=int, default=4, help="beam width; 0 or 1: greedy (default 4)")
    t.add_argument("--json", action="store_true", help="print one JSON document")
    t.add_argument("--progress", action="store_true",
                   help="show a progress bar even when stderr is not a terminal")
    t.add_argument("--after-final", choices=AFTER_FINAL, default="stop",
                   help="after the final end point: stop decoding (default) or continue")
    t.add_argument("--device-speed", type=float, default=DEFAULT_MACS_PER_SECOND,
                   metavar="MACS_PER_S",
                   help=f"simulated device speed (default {DEFAULT_MACS_PER_SECOND:.3g})")
    t.set_defaults(func=_transcribe)
    r = sub.add_parser("random-model", help="write a seeded random integer model")
    r.add_argument("out", help="output file (.npz)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--size", choices=tuple(MODEL_SIZES), default="small")
    r.set_defaults(func=_random_model)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
