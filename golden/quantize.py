"""Quantizer: float model -> integer model (``docs/model.md``, "Quantization").

Per matrix layer (rows = output channels):

1. Fold each column's input scale into the weights: ``A[r, j] = W[r, j] * s_in[j]``. A
   layer over ``[x; h]`` then has one accumulator scale per row even though ``x`` and
   ``h`` have different scales.
2. Optionally prune: zero the ``round(sparsity * size)`` smallest ``|A|`` (ties broken
   by position, so the result is deterministic).
3. Per-row symmetric scale ``s[r] = max_j |A[r, j]| / qmax`` and integer weights
   ``q = round(A / s)`` with ``qmax`` 127 (int8), 7 (int4: symmetric -7..7) or, for the
   4-bit codebook, 127 followed by snapping every weight to the nearest of 16 int8
   entries found by Lloyd's algorithm over the whole matrix (entry 0 is 0).
4. Bias ``round(b / s[r])`` (int32), requantization multiplier ``s[r] / s_out`` (int8
   output) or ``s[r] * 2**12`` (int16 Q3.12 output: LSTM gates, tanh joint).

Rounding is half away from zero throughout. Activation scales come from running the float
model on calibration features (max-abs or a percentile of magnitudes, divided by 127).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .layers import QLinear
from .lstm import GATE_FRAC_BITS, QLSTM, hidden_multiplier
from .model import (
    BACKLOG_MAX,
    BACKLOG_SCALE,
    FAST,
    SLOW,
    TANH_INT8_SCALE,
    FloatModel,
    LayerSpec,
    ModelConfig,
    ModelError,
    QuantConfig,
    QuantModel,
    layer_specs,
)
from .numerics import INT8_MAX, INT8_MIN, INT32_MAX, INT32_MIN, quantize_multiplier

__all__ = [
    "CODEBOOK_SIZE",
    "QuantizedMatrix",
    "calibrate",
    "calibrate_scale",
    "dequantize_model",
    "lloyd_codebook",
    "prune_magnitude",
    "quantize_activation",
    "quantize_linear",
    "quantize_lstm",
    "quantize_model",
    "quantize_weights",
    "round_half_away",
]

#: Entries of a 4-bit codebook (entry 0 is always 0).
CODEBOOK_SIZE = 16
#: Lloyd iterations (it converges well before on 1-D data; a fixed count keeps it exact).
LLOYD_ITERATIONS = 30
#: Smallest activation range calibration returns, so a dead activation still has a scale.
MIN_RANGE = 1e-3
_QMAX = {"int8": 127, "int4": 7, "codebook4": 127}


def round_half_away(x) -> np.ndarray:
    """Round to the nearest integer, halves away from zero (TFLite's ``TfLiteRound``)."""
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_activation(x, scale: float) -> np.ndarray:
    """Real values -> int8 at ``scale``: round half away from zero, saturate."""
    return np.clip(round_half_away(np.asarray(x, np.float64) / scale),
                   INT8_MIN, INT8_MAX).astype(np.int8)


def prune_magnitude(w, sparsity: float) -> np.ndarray:
    """Zero the ``round(sparsity * size)`` smallest-magnitude entries (stable order)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    w = np.array(w, np.float64)
    k = int(math.floor(sparsity * w.size + 0.5))
    if k:
        flat = w.reshape(-1)
        flat[np.argsort(np.abs(flat), kind="stable")[:k]] = 0.0
    return w


def _nearest(entries: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the nearest of sorted ``entries`` for each value (ties: the lower entry)."""
    mids = (entries[1:] + entries[:-1]) / 2.0
    return np.searchsorted(mids, values, side="left")


def lloyd_codebook(values) -> np.ndarray:
    """16-entry int8 codebook for ``values`` (normalized weights in -127..127).

    Entry 0 is 0 (pruned weights and padding); entries 1..15 are Lloyd's algorithm's 15
    centroids of the nonzero values, initialized at their quantiles ``(k + 0.5) / 15``,
    iterated :data:`LLOYD_ITERATIONS` times, rounded half away from zero; collisions and
    zeros are replaced by the unused nonzero values nearest zero so the 15 stay
    distinct (the weight image format requires it). Deterministic.
    """
    v = np.asarray(values, np.float64).ravel()
    v = v[v != 0.0]
    k = CODEBOOK_SIZE - 1
    if v.size:
        cent = np.quantile(v, (np.arange(k) + 0.5) / k)
        for _ in range(LLOYD_ITERATIONS):
            idx = _nearest(cent, v)
            sums = np.bincount(idx, weights=v, minlength=k)
            counts = np.bincount(idx, minlength=k)
            cent = np.sort(np.where(counts > 0, sums / np.maximum(counts, 1), cent))
        chosen = set(np.clip(round_half_away(cent), INT8_MIN + 1, INT8_MAX).astype(int).tolist())
    else:
        chosen = set()
    chosen.discard(0)
    filler = (s * m for m in range(1, INT8_MAX + 1) for s in (1, -1))
    while len(chosen) < k:
        chosen.add(next(x for x in filler if x not in chosen))
    return np.array([0, *sorted(chosen)], dtype=np.int8)


@dataclass(frozen=True, eq=False)
class QuantizedMatrix:
    """A quantized matrix layer before it becomes a :class:`QLinear`.

    Attributes
    ----------
    weight : int8 [rows, cols]
    bias, multiplier : int32 [rows]
    shift : int8 [rows]
    row_scale : float64 [rows]
        Real value of one accumulator step of each row.
    codebook : int8 [16] or None
        The matrix's codebook (``codebook4`` only).
    """

    weight: np.ndarray
    bias: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    row_scale: np.ndarray
    codebook: np.ndarray | None

    def linear(self, relu: bool = False) -> QLinear:
        return QLinear(self.weight, self.bias, self.multiplier, self.shift, relu=relu)


def quantize_weights(a, encoding: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Quantize effective weights ``a`` [rows, cols] per row (step 3 of the module notes).

    Returns
    -------
    q : int8 [rows, cols]
    row_scale : float64 [rows]
        0 for an all-zero row.
    codebook : int8 [16] or None
    """
    if encoding not in _QMAX:
        raise ValueError(f"encoding must be one of {tuple(_QMAX)}, got {encoding!r}")
    a = np.asarray(a, np.float64)
    qmax = _QMAX[encoding]
    scale = np.abs(a).max(axis=1) / qmax
    safe = np.where(scale > 0, scale, 1.0)
    n = np.clip(round_half_away(a / safe[:, None]), -qmax, qmax)
    if encoding != "codebook4":
        return n.astype(np.int8), scale, None
    cont = a / safe[:, None]  # continuous normalized weights: k-means works on these
    codebook = lloyd_codebook(cont[a != 0.0])
    entries = codebook.astype(np.float64)
    order = np.argsort(entries)
    snapped = entries[order][_nearest(entries[order], cont)]
    snapped[a == 0.0] = 0.0  # pruned weights stay pruned
    return snapped.astype(np.int8), scale, codebook


def _finish(name: str, q: np.ndarray, scale: np.ndarray, codebook, bias, out_real) -> \
        QuantizedMatrix:
    """Bias and multipliers, given row scales; ``out_real(s)`` maps scale -> multiplier."""
    bias = np.asarray(bias, np.float64)
    # A row's scale must also fit its bias in int32 (zero rows get their scale from it).
    scale = np.maximum(scale, np.abs(bias) / 2.0 ** 30)
    safe = np.where(scale > 0, scale, 1.0)
    b = np.clip(round_half_away(bias / safe), INT32_MIN, INT32_MAX).astype(np.int32)
    mult = np.zeros(len(scale), np.int32)
    shift = np.zeros(len(scale), np.int8)
    for r, s in enumerate(scale):
        if s > 0:
            try:
                mult[r], shift[r] = quantize_multiplier(out_real(s))
            except ValueError as e:
                raise ValueError(f"{name}: row {r}: {e} (output scale too small for the "
                                 "weights)") from None
    return QuantizedMatrix(q, b, mult, shift, scale, codebook)


def _effective(name, weight, bias, in_scales, encoding, sparsity):
    w = np.asarray(weight, np.float64)
    if w.ndim != 2:
        raise ValueError(f"{name}: weight must be 2-D, got shape {w.shape}")
    s_in = np.asarray(in_scales, np.float64)
    if s_in.shape != (w.shape[1],) or not np.all(s_in > 0):
        raise ValueError(f"{name}: in_scales must be {w.shape[1]} positive scales")
    if np.shape(bias) != (w.shape[0],):
        raise ValueError(f"{name}: bias has shape {np.shape(bias)}, expected ({w.shape[0]},)")
    a = prune_magnitude(w * s_in[None, :], sparsity)
    return quantize_weights(a, encoding)


def quantize_linear(weight, bias, in_scales, out_scale: float | None, *,
                    encoding: str = "int8", sparsity: float = 0.0,
                    name: str = "linear") -> QuantizedMatrix:
    """Quantize a float linear layer.

    Parameters
    ----------
    weight : array [rows, cols]
    bias : array [rows]
    in_scales : array [cols]
        Scale of the input feeding each column.
    out_scale : float or None
        int8 output scale; ``None`` requantizes to int16 Q3.12 instead (the input of
        the tanh table).
    encoding : {"int8", "int4", "codebook4"}
    sparsity : float
        Fraction of weights to prune by magnitude.
    """
    q, scale, cb = _effective(name, weight, bias, in_scales, encoding, sparsity)
    if out_scale is None:
        return _finish(name, q, scale, cb, bias, lambda s: s * 2.0 ** GATE_FRAC_BITS)
    if not (math.isfinite(out_scale) and out_scale > 0):
        raise ValueError(f"{name}: out_scale must be finite and positive, got {out_scale!r}")
    return _finish(name, q, scale, cb, bias, lambda s: s / out_scale)


def quantize_lstm(weight, bias, input_scale: float, hidden_scale: float, *,
                  encoding: str = "int8", sparsity: float = 0.0,
                  cell_frac_bits: int = GATE_FRAC_BITS, name: str = "lstm") -> tuple[QLSTM, np.ndarray | None]:
    """Quantize a float LSTM layer (gate matrix over ``[x; h]``, gates ``i, f, g, o``).

    Returns the :class:`QLSTM` and its codebook (or ``None``).
    """
    w = np.asarray(weight, np.float64)
    hidden = w.shape[0] // 4
    in_scales = np.concatenate((np.full(w.shape[1] - hidden, float(input_scale)),
                                np.full(hidden, float(hidden_scale))))
    qm = quantize_linear(w, bias, in_scales, None, encoding=encoding, sparsity=sparsity,
                         name=name)
    om, osh = hidden_multiplier(hidden_scale)
    return QLSTM(qm.linear(), om, osh, cell_frac_bits=cell_frac_bits), qm.codebook


def calibrate_scale(values, method: str = "maxabs", percentile: float = 99.99) -> float:
    """int8 scale for observed real values: ``range / 127``.

    ``range`` is the largest magnitude (``"maxabs"``) or the given percentile of the
    magnitudes (``"percentile"``, linear interpolation), at least :data:`MIN_RANGE`.
    """
    mags = np.abs(np.asarray(values, np.float64)).ravel()
    if mags.size == 0:
        raise ValueError("cannot calibrate a scale from no values")
    if method == "maxabs":
        r = float(mags.max())
    elif method == "percentile":
        r = float(np.percentile(mags, percentile))
    else:
        raise ValueError(f"calibration method must be 'maxabs' or 'percentile', got {method!r}")
    return max(r, MIN_RANGE) / INT8_MAX


def calibrate(model: FloatModel, features: Sequence[np.ndarray], *,
              quant: QuantConfig | None = None, feature_scale: float | None = None,
              token_sequences: Sequence[Sequence[int]] | None = None,
              seed: int = 0) -> dict[str, float]:
    """Activation scales of ``model`` from calibration utterances.

    Each utterance (float features ``[T, F]``) runs through *both* encoder branches on
    every frame (each with its own state), the arbitrator with backlogs sweeping
    ``(37 t) mod 128`` (so the backlog column's full range is seen), the predictor over a
    token sequence (``token_sequences[k]``, or ``T // 3 + 1`` seeded random non-blank
    tokens after the blank start token), and the joint on each frame's two encoder
    outputs paired with the predictor output at the same relative position.

    Returns
    -------
    dict
        Every scale in :func:`golden.model.scale_names`.
    """
    quant = model.config.quant if quant is None else quant
    cfg = model.config
    if not features:
        raise ValueError("calibration needs at least one utterance of features")
    if token_sequences is not None and len(token_sequences) != len(features):
        raise ValueError("token_sequences must have one sequence per utterance")
    rng = np.random.default_rng(seed)
    trace: dict[str, list] = {}
    feats = []
    for k, f in enumerate(features):
        f = np.asarray(f, np.float64)
        if f.ndim != 2 or f.shape[1] != cfg.feature_dim or f.shape[0] < 1:
            raise ValueError(f"utterance {k}: features must be [T, {cfg.feature_dim}], "
                             f"got shape {f.shape}")
        feats.append(f)
        enc_state = model.initial_encoder_state()
        encs = []
        for t, frame in enumerate(f):
            model.arbitrator_logits(frame, (37 * t) % (BACKLOG_MAX + 1), trace)
            e_fast, enc_state = model.encoder_step(FAST, frame, enc_state, trace)
            e_slow, enc_state = model.encoder_step(SLOW, frame, enc_state, trace)
            encs.append((e_fast, e_slow))
        if token_sequences is None:
            tokens = rng.integers(1, cfg.vocab_size, len(f) // 3 + 1).tolist()
        else:
            tokens = list(token_sequences[k])
        pred_state = model.initial_predictor_state()
        preds = []
        for tok in [0, *tokens]:
            p, pred_state = model.predictor_step(tok, pred_state, trace)
            preds.append(p)
        for t, (e_fast, e_slow) in enumerate(encs):
            p = preds[t * len(preds) // len(encs)]
            model.joint(e_fast, p, trace)
            model.joint(e_slow, p, trace)

    def cal(name):
        return calibrate_scale(np.concatenate([np.ravel(v) for v in trace[name]]),
                               quant.calibration, quant.percentile)

    scales = {name: cal(name) for name in trace}
    if feature_scale is None:
        feature_scale = calibrate_scale(np.concatenate([f.ravel() for f in feats]),
                                        quant.calibration, quant.percentile)
    scales["feature"] = float(feature_scale)
    scales["backlog"] = BACKLOG_SCALE
    # A table is a weight: its scale covers every entry (no percentile clipping).
    scales["pred.embed"] = calibrate_scale(model.tensors["pred.embed.table"])
    if cfg.joint_activation == "tanh":
        scales["joint.hidden"] = TANH_INT8_SCALE
    return scales


def _q3_12_output(spec: LayerSpec, config: ModelConfig) -> bool:
    """Whether a layer requantizes to int16 Q3.12 (an activation table's input)."""
    return spec.kind == "lstm" or (spec.name == "joint.hidden"
                                   and config.joint_activation == "tanh")


def quantize_model(model: FloatModel, features: Sequence[np.ndarray], *,
                   quant: QuantConfig | None = None, feature_scale: float | None = None,
                   token_sequences: Sequence[Sequence[int]] | None = None,
                   seed: int = 0) -> QuantModel:
    """Quantize ``model`` to an integer :class:`~golden.model.QuantModel`.

    Parameters
    ----------
    model : FloatModel
    features : sequence of float arrays [T, F]
        Calibration utterances (real feature values).
    quant : QuantConfig, optional
        Overrides ``model.config.quant`` (the result's config records the one used).
    feature_scale : float, optional
        Scale of the front end's int8 features, if fixed by the front end; otherwise
        calibrated from ``features``.
    token_sequences, seed
        See :func:`calibrate`.
    """
    quant = model.config.quant if quant is None else quant
    config = replace(model.config, quant=quant)
    scales = calibrate(model, features, quant=quant, feature_scale=feature_scale,
                       token_sequences=token_sequences, seed=seed)
    tensors: dict[str, np.ndarray] = {
        "pred.embed.table": quantize_activation(model.tensors["pred.embed.table"],
                                                scales["pred.embed"]),
    }
    for s in layer_specs(config).values():
        w = model.tensors[f"{s.name}.weight"]
        b = model.tensors[f"{s.name}.bias"]
        in_scales = np.concatenate([np.full(n, scales[src]) for src, n in s.inputs])
        qm = quantize_linear(w, b, in_scales, None if _q3_12_output(s, config) else
                             scales[s.output],
                             encoding=quant.weight_encoding, sparsity=quant.sparsity,
                             name=s.name)
        tensors[f"{s.name}.weight"] = qm.weight
        tensors[f"{s.name}.bias"] = qm.bias
        tensors[f"{s.name}.multiplier"] = qm.multiplier
        tensors[f"{s.name}.shift"] = qm.shift
        if s.kind == "lstm":
            om, osh = hidden_multiplier(scales[s.output])
            tensors[f"{s.name}.out_multiplier"] = np.array(om, np.int32)
            tensors[f"{s.name}.out_shift"] = np.array(osh, np.int8)
        if qm.codebook is not None:
            tensors[f"{s.name}.codebook"] = qm.codebook
    return QuantModel(config, tensors, scales)


def _real_multiplier(multiplier, shift) -> np.ndarray:
    return np.asarray(multiplier, np.float64) * np.exp2(np.asarray(shift, np.float64) - 31)


def dequantize_model(model: QuantModel) -> FloatModel:
    """The float model whose weights are exactly the integer model's (de-scaled).

    Row scales are recovered from the requantization multipliers
    (``s[r] = real_multiplier[r] * s_out``, or ``/ 2**12`` for Q3.12 outputs), so
    comparing an integer model with its dequantized twin isolates the activation and
    arithmetic error from the weight rounding (and pruning) error.
    """
    c, t, sc = model.config, model.tensors, model.scales
    out = {"pred.embed.table": t["pred.embed.table"] * sc["pred.embed"]}
    for s in layer_specs(c).values():
        real = _real_multiplier(t[f"{s.name}.multiplier"], t[f"{s.name}.shift"])
        row = real / 2.0 ** GATE_FRAC_BITS if _q3_12_output(s, c) else real * sc[s.output]
        in_scales = np.concatenate([np.full(n, sc[src]) for src, n in s.inputs])
        out[f"{s.name}.weight"] = t[f"{s.name}.weight"] * row[:, None] / in_scales[None, :]
        out[f"{s.name}.bias"] = t[f"{s.name}.bias"] * row
    try:
        return FloatModel(c, {k: v.astype(np.float32) for k, v in out.items()})
    except ModelError as e:
        raise ValueError(f"cannot dequantize: {e}") from None
