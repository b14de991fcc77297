"""Export a trained model to golden's files, and measure it.

* :func:`to_float_model`: the torch model's tensors copied into a
  ``golden.model.FloatModel`` (normalization folded, pruning masks applied).
* :func:`quantize` / :func:`export_variants`: golden's ``quantize_model`` with the front
  end's feature scale, calibrated on training utterances (with their transcripts as the
  predictor's token sequences).
* :func:`greedy_decode`: batched encoder plus per-utterance greedy search in torch (the
  search ``golden.decoding.GreedyDecoder`` does), for quick validation WER while training.
* :func:`pipeline_results`: the golden integer pipeline on WAV files (what the device
  runs), with the transcripts, branch choices and costs.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from golden.arbitration import CostModel
from golden.frontend import FrontendConfig
from golden.model import FloatModel, QuantConfig, QuantModel, save_model
from golden.quantize import quantize_model
from golden.tokens import BLANK_ID, Tokenizer
from golden.wer import corpus_errors

from .arbitration import DeviceCost, GateSchedule
from .data import Utterances
from .model import RNNT

__all__ = [
    "CALIBRATION_UTTERANCES",
    "VARIANTS",
    "calibrate_arbitrator",
    "compute_saving",
    "export_variants",
    "greedy_decode",
    "pipeline_results",
    "quantize",
    "to_float_model",
    "word_error_rate",
]

#: Training utterances used to calibrate activation scales.
CALIBRATION_UTTERANCES = 64
#: File stem -> quantization of every exported variant (``demo.npz`` is ``int4_s50``).
VARIANTS = {
    "int8": QuantConfig(weight_encoding="int8"),
    "int4": QuantConfig(weight_encoding="int4"),
    "int4_s50": QuantConfig(weight_encoding="int4", sparsity=0.5),
    "int4_s75": QuantConfig(weight_encoding="int4", sparsity=0.75),
}
#: The deployed variant, written as ``demo.npz``.
DEPLOYED = "int4_s50"


def to_float_model(model: RNNT) -> FloatModel:
    """The golden float model with the torch model's weights (a copy, float32)."""
    return FloatModel(model.config, model.float_tensors())


def quantize(float_model: FloatModel, calibration: Utterances, quant: QuantConfig, *,
             count: int = CALIBRATION_UTTERANCES) -> QuantModel:
    """``golden.quantize.quantize_model`` on the first ``count`` calibration utterances."""
    n = min(count, len(calibration))
    feats = [calibration.real_features(i) for i in range(n)]
    tokens = [calibration.tokens[i] for i in range(n)]
    fe = FrontendConfig.from_dict(float_model.config.frontend)
    return quantize_model(float_model, feats, quant=quant, feature_scale=fe.feature_scale,
                          token_sequences=tokens)


def export_variants(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *,
                    calibration: str | os.PathLike,
                    variants: Sequence[str] = tuple(VARIANTS),
                    float_model: bool = True,
                    arbitrator_offset: float = 0.0) -> dict[str, Path]:
    """Write the float model and quantized variants of a training checkpoint.

    Parameters
    ----------
    checkpoint : path
        A checkpoint written by ``python -m train`` (``checkpoint.pt``).
    out_dir : path
        Receives ``demo_float.npz``, ``demo.npz`` (the deployed 4-bit 50%-sparse model)
        and ``<variant>.npz`` for the other ``variants``.
    calibration : path
        A ``features.npz`` of training utterances (``build/dataset/train/features.npz``).
    variants : sequence of str
        Keys of :data:`VARIANTS` to write.
    float_model : bool
        Also write ``demo_float.npz`` (False: only the variants, e.g. a variant
        fine-tuned in a run of its own).
    arbitrator_offset : float
        Added to the arbitrator's fast logit bias before export
        (:meth:`RNNT.shift_arbitrator`, :func:`calibrate_arbitrator`).

    Returns
    -------
    dict of str -> Path
        ``"float"`` (if written) and each variant key -> the file written.
    """
    from .trainer import load_checkpoint_model
    from .data import load_split

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; expected some of {tuple(VARIANTS)}")
    model = load_checkpoint_model(checkpoint)
    model.shift_arbitrator(arbitrator_offset)
    tok = Tokenizer(list(model.config.vocabulary))
    calib = load_split(calibration, tok, limit=CALIBRATION_UTTERANCES)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fm = to_float_model(model)
    paths = {}
    if float_model:
        paths["float"] = out_dir / "demo_float.npz"
        save_model(fm, paths["float"])
    for key in variants:
        path = out_dir / ("demo.npz" if key == DEPLOYED else f"{key}.npz")
        save_model(quantize(fm, calib, VARIANTS[key]), path)
        paths[key] = path
    return paths


def _evaluation_encodings(model: RNNT, utterances: Utterances, index, *, cost: DeviceCost,
                         batch_size: int):
    """Per batch of ``index``: the batch, its encoder output with golden's arbitration
    rule on the simulated backlog, its fast frames and its real frames (call under
    ``torch.no_grad`` with the model in eval mode)."""
    rate = utterances.tokens_per_frame()
    index = list(index)
    for s in range(0, len(index), batch_size):
        b = utterances.batch(index[s:s + batch_size])
        enc = model.encode(b.feats, b.lengths, schedule=GateSchedule.evaluation(), cost=cost,
                           decoder_rate=torch.full((len(b.lengths),), rate))
        mask = b.frame_mask
        yield b, enc, float(((1.0 - enc.gate) * mask).sum()), int(mask.sum())


@torch.no_grad()
def compute_saving(model: RNNT, utterances: Utterances, *, cost: DeviceCost,
                   batch_size: int = 64) -> tuple[float, float]:
    """Fraction of always-slow compute the arbitrator saves on ``utterances``, and the
    fraction of fast frames (evaluation gate, simulated backlog, greedy decoder share).

    Per frame the arbitrated device spends ``arbitrate + fast + g (slow - fast) + dec``
    and an always-slow one ``slow + dec`` (no arbitrator), ``dec`` the decoder's share at
    the split's tokens per frame (``DeviceCost.frame_macs``).
    """
    was_training = model.training
    model.eval()
    try:
        fast, frames = 0.0, 0
        for _, _, n_fast, n in _evaluation_encodings(model, utterances, range(len(utterances)),
                                                     cost=cost, batch_size=batch_size):
            fast += n_fast
            frames += n
        f = fast / max(frames, 1)
        r = torch.tensor(utterances.tokens_per_frame())
        arbitrated = float(cost.frame_macs(torch.tensor(1.0 - f), r))
        always_slow = float(cost.frame_macs(torch.tensor(1.0), r)) - cost.macs["arbitrate"]
        return 1.0 - arbitrated / always_slow, f
    finally:
        model.train(was_training)


def calibrate_arbitrator(model: RNNT, utterances: Utterances, *, cost: DeviceCost,
                         target_saving: float, max_offset: float = 16.0,
                         iterations: int = 10) -> dict:
    """Shift the arbitrator (in place) to the smallest fast-logit offset in
    ``0 .. max_offset`` whose :func:`compute_saving` on ``utterances`` reaches
    ``target_saving`` (bisection; the saving grows with the offset).

    The operating point is chosen on held-in data (the validation split), for a compute
    target, never on the test set's WER.

    Returns
    -------
    dict
        ``offset``, ``target_saving``, ``saving`` and ``fast_fraction`` at the offset.
    """
    if not 0.0 < target_saving < 1.0:
        raise ValueError(f"target_saving must be in (0, 1), got {target_saving!r}")

    def measure(offset):
        trial = copy.deepcopy(model)  # the weights are small; the original stays exact
        trial.shift_arbitrator(offset)
        return compute_saving(trial, utterances, cost=cost)

    offset, best = 0.0, measure(0.0)
    if best[0] < target_saving:
        lo, hi = 0.0, float(max_offset)
        best = measure(hi)
        if best[0] < target_saving:
            raise ValueError(f"the arbitrator saves only {100 * best[0]:.1f}% at offset "
                             f"{hi:g}; target {100 * target_saving:.1f}% is out of reach")
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            m = measure(mid)
            if m[0] >= target_saving:
                hi, best = mid, m
            else:
                lo = mid
        offset = hi
    model.shift_arbitrator(offset)
    return {"offset": offset, "target_saving": target_saving, "saving": best[0],
            "fast_fraction": best[1]}


@torch.no_grad()
def greedy_decode(model: RNNT, utterances: Utterances, index: Sequence[int], *,
                  cost: DeviceCost, max_symbols: int = 5,
                  batch_size: int = 64) -> tuple[list[list[int]], float]:
    """Greedy transcripts (token ids) with golden's arbitration rule, and the fast fraction.

    The encoder runs batched with the evaluation gate and the simulated backlog; the
    search per utterance is ``golden.decoding.GreedyDecoder``'s (argmax, lowest id on
    ties, at most ``max_symbols`` tokens per frame).
    """
    was_training = model.training
    model.eval()
    try:
        out, fast, frames = [], 0.0, 0
        for b, enc, n_fast, n in _evaluation_encodings(model, utterances, index, cost=cost,
                                                       batch_size=batch_size):
            fast += n_fast
            frames += n
            w, bias = model.layer("joint.hidden")
            e_dim = model.config.enc_dim
            enc_part = enc.enc @ w[:, :e_dim].T  # [B, T, J]
            for k in range(len(b.lengths)):
                out.append(_greedy_one(model, enc_part[k, :int(b.lengths[k])],
                                       w[:, e_dim:], bias, max_symbols))
        return out, fast / max(frames, 1)
    finally:
        model.train(was_training)


def _greedy_one(model: RNNT, enc_part, w_pred, bias, max_symbols: int) -> list[int]:
    c = model.config
    w_l, b_l = model.layer("pred.lstm")
    w_o, b_o = model.layer("joint.out")
    pe = c.pred_embed

    def predictor(token, h, cc):
        z = model.embed[token] @ w_l[:, :pe].T + h @ w_l[:, pe:].T + b_l
        return model._cell(z, cc)

    h = torch.zeros(c.pred_hidden)
    cc = torch.zeros(c.pred_hidden)
    h, cc = predictor(BLANK_ID, h, cc)
    pred_part = h @ w_pred.T + bias
    tokens: list[int] = []
    act = torch.tanh if c.joint_activation == "tanh" else torch.relu
    for t in range(enc_part.shape[0]):
        for _ in range(max_symbols):
            logits = act(enc_part[t] + pred_part) @ w_o.T + b_o
            k = int(torch.argmax(logits))
            if k == BLANK_ID:
                break
            tokens.append(k)
            h, cc = predictor(k, h, cc)
            pred_part = h @ w_pred.T + bias
    return tokens


def pipeline_results(model: QuantModel, wavs: Sequence[str | os.PathLike], *,
                     device_speed: float, beam: int = 0) -> list[dict]:
    """Run the golden integer pipeline on WAV files.

    Decoding continues to the end of the audio (``after_final="continue"``) so the
    transcript does not depend on the end-pointer.

    Returns
    -------
    list of dict
        Per file: ``text``, ``fast_frames``, ``frames``, ``cost`` (MACs), ``latency_ms``.
    """
    from golden.pipeline import Recognizer
    from golden.wav import load_audio

    cost = CostModel(speed=device_speed)
    out = []
    for path in wavs:
        rec = Recognizer(model, beam=beam, cost=cost, after_final="continue")
        audio = load_audio(str(path), sample_rate=rec.frontend_config.sample_rate)
        r = rec.transcribe(audio)
        rep = r.report
        out.append({"file": Path(path).name, "text": r.text,
                    "fast_frames": rep.branch_frames["fast"], "frames": len(rep.frames),
                    "cost": rep.total, "latency_ms": rep.latency_ms})
    return out


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER (``golden.wer.corpus_errors``)."""
    return corpus_errors(list(references), list(hypotheses)).rate

