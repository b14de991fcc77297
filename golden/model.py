"""The NEP streaming RNN-T: configuration, float and integer models, model files.

Network (``docs/model.md``)::

    features (int8, F) --+--> arbitrator([feat; backlog]) -> fast | slow
                         +--> fast branch: LSTM(F->Hf) -> Linear(Hf->E)          }  enc (int8, E)
                         +--> slow branch: LSTM(F->Hs) -> LSTM(Hs->Hs) -> Linear(Hs->E) }
    token -> embedding(V->Pe) -> LSTM(Pe->Ph) = pred (int8, Ph)
    joint: act(W [enc; pred] + b) (J) -> Linear(J->V) -> int8 logits (scale logit_scale)

Each branch keeps its own recurrent state; a frame runs exactly one branch, and the
other branch's state is held unchanged (not computed, not reset).

Every matrix layer acts on the concatenation of its inputs (``[x; h]``, ``[feat;
backlog]``, ``[enc; pred]``): one matrix, one accumulator, one requantization per row.
:func:`layer_specs` is the single description of that wiring (shapes and which
activation scale feeds which columns), shared by the file checks and the quantizer.

Model files are ``.npz`` archives read with ``allow_pickle=False``: one entry per tensor
plus a JSON header (format name, version, kind, config, activation scales).
"""

from __future__ import annotations

import functools
import json
import math
import os
import zipfile
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple

import numpy as np

from .layers import (
    QEmbedding,
    QLinear,
    Requantizer,
    embedding_float,
    linear_float,
    readonly,
    wrap32,
)
from .lstm import (
    CELL_FRAC_BITS_RANGE,
    GATE_FRAC_BITS,
    OUT_FRAC_BITS,
    QLSTM,
    LSTMState,
    lstm_step_float,
    q15_to_int8,
    requantize_to_int16,
    sigmoid_q15,
    tanh_q15,
)
from .numerics import INT8_MAX, INT16_MAX, INT16_MIN
from .tokens import BLANK

__all__ = [
    "BACKLOG_MAX",
    "BACKLOG_SCALE",
    "FAST",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "HEADER_KEY",
    "SLOW",
    "TANH_INT8_SCALE",
    "WEIGHT_ENCODINGS",
    "EncoderState",
    "FastKernels",
    "FloatModel",
    "LayerSpec",
    "ModelConfig",
    "ModelError",
    "QuantConfig",
    "QuantModel",
    "layer_specs",
    "load_model",
    "quantize_backlog",
    "random_float_model",
    "save_model",
    "scale_names",
    "tensor_specs",
]

#: Name stored in every model file's header.
FORMAT_NAME = "nep-model"
#: Model format version: of the config schema, the tensor set and the file layout.
FORMAT_VERSION = 1
#: Archive entry holding the UTF-8 JSON header (a uint8 array).
HEADER_KEY = "__nep_header__"
#: Branch ids, as returned by the arbitrator.
FAST, SLOW = 0, 1
#: Largest backlog the arbitrator sees (frames; larger backlogs saturate).
BACKLOG_MAX = INT8_MAX
#: Real value of one backlog step: one frame.
BACKLOG_SCALE = 1.0
#: Supported weight encodings (see ``docs/weight-format.md`` for how they are stored).
WEIGHT_ENCODINGS = ("int8", "int4", "codebook4")
CALIBRATIONS = ("maxabs", "percentile")
JOINT_ACTIVATIONS = ("tanh", "relu")
KINDS = ("float", "int")
#: Largest matrix dimension (the weight image format's 16-bit limit).
MAX_DIM = 0xFFFF
#: Output scale of a tanh joint hidden layer: Q0.15 rounded to Q0.7.
TANH_INT8_SCALE = 2.0 ** -7


class ModelError(ValueError):
    """A model (in memory or in a file) is malformed; the message says what is wrong."""


# ---------------------------------------------------------------------------- config


def _positive_int(owner: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}.{name} must be a positive int, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class QuantConfig:
    """How a float model is quantized.

    Parameters
    ----------
    weight_encoding : {"int8", "int4", "codebook4"}
        int8 (-127..127), symmetric int4 (-7..7), or 4-bit indices into a per-matrix
        codebook of 16 int8 values (entry 0 is 0).
    sparsity : float
        Fraction of each matrix's weights pruned by magnitude, in ``[0, 0.99]``.
    calibration : {"maxabs", "percentile"}
        Activation range estimate: the largest magnitude seen, or a percentile of the
        magnitudes (clipping rare outliers).
    percentile : float
        Percentile used by ``"percentile"``, in ``(50, 100]``.
    cell_frac_bits : int
        Fraction bits of the int16 LSTM cell state (12: Q3.12, range +-8).
    """

    weight_encoding: str = "int8"
    sparsity: float = 0.0
    calibration: str = "maxabs"
    percentile: float = 99.99
    cell_frac_bits: int = GATE_FRAC_BITS

    def __post_init__(self):
        if self.weight_encoding not in WEIGHT_ENCODINGS:
            raise ValueError(f"QuantConfig.weight_encoding must be one of {WEIGHT_ENCODINGS}, "
                             f"got {self.weight_encoding!r}")
        if (isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float))
                or not 0.0 <= self.sparsity <= 0.99):
            raise ValueError(f"QuantConfig.sparsity must be in [0, 0.99], got {self.sparsity!r}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"QuantConfig.calibration must be one of {CALIBRATIONS}, "
                             f"got {self.calibration!r}")
        if (isinstance(self.percentile, bool) or not isinstance(self.percentile, (int, float))
                or not 50.0 < self.percentile <= 100.0):
            raise ValueError("QuantConfig.percentile must be in (50, 100], "
                             f"got {self.percentile!r}")
        if (isinstance(self.cell_frac_bits, bool) or not isinstance(self.cell_frac_bits, int)
                or self.cell_frac_bits not in CELL_FRAC_BITS_RANGE):
            raise ValueError("QuantConfig.cell_frac_bits must be an int in "
                             f"{CELL_FRAC_BITS_RANGE.start}..{CELL_FRAC_BITS_RANGE.stop - 1}, "
                             f"got {self.cell_frac_bits!r}")
        object.__setattr__(self, "sparsity", float(self.sparsity))
        object.__setattr__(self, "percentile", float(self.percentile))


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape and settings of an NEP RNN-T model.

    Parameters
    ----------
    vocabulary : sequence of str
        Output tokens, blank (``golden.tokens.BLANK``) first; distinct.
    feature_dim : int
        Features per encoder frame (F).
    fast_hidden, slow_hidden : int
        LSTM sizes of the fast branch (one layer) and slow branch (two layers).
    enc_dim : int
        Encoder output width (E), the same for both branches.
    arbitrator_hidden : int
        Hidden units of the arbitrator.
    pred_embed, pred_hidden : int
        Prediction network embedding width and LSTM size.
    joint_dim : int
        Joint hidden width.
    joint_activation : {"tanh", "relu"}
    frontend : dict
        Front-end settings (JSON-serializable; owned by the front end, stored verbatim).
    quant : QuantConfig
    version : int
        Model format version; only :data:`FORMAT_VERSION` is accepted.
    """

    vocabulary: tuple[str, ...]
    feature_dim: int = 120
    fast_hidden: int = 128
    slow_hidden: int = 256
    enc_dim: int = 192
    arbitrator_hidden: int = 32
    pred_embed: int = 64
    pred_hidden: int = 128
    joint_dim: int = 160
    joint_activation: str = "tanh"
    frontend: dict = field(default_factory=dict, hash=False)
    quant: QuantConfig = field(default_factory=QuantConfig)
    version: int = FORMAT_VERSION

    def __post_init__(self):
        if isinstance(self.vocabulary, str) or not hasattr(self.vocabulary, "__iter__"):
            raise ValueError("ModelConfig.vocabulary must be a sequence of token strings")
        vocab = tuple(self.vocabulary)
        if len(vocab) < 2:
            raise ValueError("ModelConfig.vocabulary needs blank and at least one token, "
                             f"got {len(vocab)} entries")
        if vocab[0] != BLANK:
            raise ValueError(f"ModelConfig.vocabulary[0] must be the blank {BLANK!r}, "
                             f"got {vocab[0]!r}")
        for i, tok in enumerate(vocab):
            if not isinstance(tok, str) or not tok:
                raise ValueError(f"ModelConfig.vocabulary[{i}] must be a non-empty string, "
                                 f"got {tok!r}")
        if len(set(vocab)) != len(vocab):
            dup = next(t for t in vocab if vocab.count(t) > 1)
            raise ValueError(f"ModelConfig.vocabulary has {dup!r} more than once")
        object.__setattr__(self, "vocabulary", vocab)
        for name in ("feature_dim", "fast_hidden", "slow_hidden", "enc_dim",
                     "arbitrator_hidden", "pred_embed", "pred_hidden", "joint_dim"):
            _positive_int("ModelConfig", name, getattr(self, name))
        if self.joint_activation not in JOINT_ACTIVATIONS:
            raise ValueError("ModelConfig.joint_activation must be one of "
                             f"{JOINT_ACTIVATIONS}, got {self.joint_activation!r}")
        if not isinstance(self.frontend, dict):
            raise ValueError("ModelConfig.frontend must be a dict, "
                             f"got {type(self.frontend).__name__}")
        try:
            frontend = json.loads(json.dumps(self.frontend, allow_nan=False))
        except (TypeError, ValueError) as e:
            raise ValueError(f"ModelConfig.frontend must be JSON-serializable: {e}") from None
        object.__setattr__(self, "frontend", frontend)
        if not isinstance(self.quant, QuantConfig):
            raise ValueError("ModelConfig.quant must be a QuantConfig")
        if self.version != FORMAT_VERSION:
            raise ValueError(f"unknown model version {self.version!r} "
                             f"(this build reads version {FORMAT_VERSION})")
        for spec in layer_specs(self).values():
            if spec.rows > MAX_DIM or spec.cols > MAX_DIM:
                raise ValueError(f"layer {spec.name} is {spec.rows}x{spec.cols}; "
                                 f"dimensions are limited to {MAX_DIM}")

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (the form stored in model files)."""
        d = asdict(self)
        d["vocabulary"] = list(self.vocabulary)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise ``ValueError``."""
        if not isinstance(d, dict):
            raise ValueError(f"config must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}")
        missing = sorted(known - set(d))
        if missing:
            raise ValueError(f"missing config keys {missing}")
        q = d["quant"]
        if not isinstance(q, dict):
            raise ValueError("config.quant must be a JSON object")
        qknown = {f.name for f in fields(QuantConfig)}
        if set(q) != qknown:
            raise ValueError(f"config.quant keys {sorted(q)} differ from {sorted(qknown)}")
        d["quant"] = QuantConfig(**q)
        return cls(**d)


# ---------------------------------------------------------------------------- wiring


@dataclass(frozen=True)
class LayerSpec:
    """One matrix layer: shape, kind, and the activation scales around it.

    ``inputs`` lists ``(scale name, columns)`` in column order: the layer's input is the
    concatenation of those vectors. ``output`` names the output's scale; for an LSTM it
    is the hidden state's scale, which also feeds the recurrent columns.
    """

    name: str
    kind: str  # "linear" or "lstm"
    rows: int
    cols: int
    inputs: tuple[tuple[str, int], ...]
    output: str
    relu: bool = False


def layer_specs(c: ModelConfig) -> dict[str, LayerSpec]:
    """Every matrix layer of a model with config ``c``, in execution order."""
    f, a, e, v = c.feature_dim, c.arbitrator_hidden, c.enc_dim, c.vocab_size
    hf, hs, pe, ph, j = c.fast_hidden, c.slow_hidden, c.pred_embed, c.pred_hidden, c.joint_dim
    specs = [
        LayerSpec("arb.hidden", "linear", a, f + 1, (("feature", f), ("backlog", 1)),
                  "arb.hidden", relu=True),
        LayerSpec("arb.out", "linear", 2, a, (("arb.hidden", a),), "arb.out"),
        LayerSpec("fast.lstm", "lstm", 4 * hf, f + hf, (("feature", f), ("fast.lstm", hf)),
                  "fast.lstm"),
        LayerSpec("fast.proj", "linear", e, hf, (("fast.lstm", hf),), "enc"),
        LayerSpec("slow.lstm1", "lstm", 4 * hs, f + hs, (("feature", f), ("slow.lstm1", hs)),
                  "slow.lstm1"),
        LayerSpec("slow.lstm2", "lstm", 4 * hs, 2 * hs,
                  (("slow.lstm1", hs), ("slow.lstm2", hs)), "slow.lstm2"),
        LayerSpec("slow.proj", "linear", e, hs, (("slow.lstm2", hs),), "enc"),
        LayerSpec("pred.lstm", "lstm", 4 * ph, pe + ph, (("pred.embed", pe), ("pred.lstm", ph)),
                  "pred.lstm"),
        LayerSpec("joint.hidden", "linear", j, e + ph, (("enc", e), ("pred.lstm", ph)),
                  "joint.hidden", relu=c.joint_activation == "relu"),
        LayerSpec("joint.out", "linear", v, j, (("joint.hidden", j),), "logit"),
    ]
    return {s.name: s for s in specs}


def scale_names(c: ModelConfig) -> tuple[str, ...]:
    """Activation scales an integer model carries (real value of one int8 step)."""
    names = {"feature", "backlog", "pred.embed"}
    for s in layer_specs(c).values():
        names.update(n for n, _ in s.inputs)
        names.add(s.output)
    return tuple(sorted(names))


def tensor_specs(c: ModelConfig, kind: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Name -> (shape, dtype) of every tensor of a ``kind`` (``"float"``/``"int"``) model."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    if kind == "float":
        out["pred.embed.table"] = ((c.vocab_size, c.pred_embed), np.dtype(np.float32))
        for s in layer_specs(c).values():
            out[f"{s.name}.weight"] = ((s.rows, s.cols), np.dtype(np.float32))
            out[f"{s.name}.bias"] = ((s.rows,), np.dtype(np.float32))
        return out
    out["pred.embed.table"] = ((c.vocab_size, c.pred_embed), np.dtype(np.int8))
    for s in layer_specs(c).values():
        out[f"{s.name}.weight"] = ((s.rows, s.cols), np.dtype(np.int8))
        out[f"{s.name}.bias"] = ((s.rows,), np.dtype(np.int32))
        out[f"{s.name}.multiplier"] = ((s.rows,), np.dtype(np.int32))
        out[f"{s.name}.shift"] = ((s.rows,), np.dtype(np.int8))
        if s.kind == "lstm":
            out[f"{s.name}.out_multiplier"] = ((), np.dtype(np.int32))
            out[f"{s.name}.out_shift"] = ((), np.dtype(np.int8))
        if c.quant.weight_encoding == "codebook4":
            out[f"{s.name}.codebook"] = ((16,), np.dtype(np.int8))
    return out


def _check_tensors(c: ModelConfig, kind: str, tensors: dict) -> dict[str, np.ndarray]:
    """Check names, shapes, dtypes and value rules; return read-only copies."""
    specs = tensor_specs(c, kind)
    missing = [n for n in specs if n not in tensors]
    if missing:
        raise ModelError(f"missing tensor {missing[0]}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    extra = sorted(set(tensors) - set(specs))
    if extra:
        raise ModelError(f"unexpected tensor {extra[0]}")
    out = {}
    for name, (shape, dtype) in specs.items():
        t = tensors[name]
        if not isinstance(t, np.ndarray):
            raise ModelError(f"tensor {name} is a {type(t).__name__}, not a NumPy array")
        if t.dtype != dtype:
            raise ModelError(f"tensor {name} has dtype {t.dtype}, expected {dtype}")
        if t.shape != shape:
            raise ModelError(f"tensor {name} has shape {t.shape}, expected {shape}")
        if kind == "float" and not np.all(np.isfinite(t)):
            raise ModelError(f"tensor {name} has non-finite values")
        out[name] = readonly(t.copy())
    if kind == "int":
        _check_int_values(c, out)
    return out


def _check_int_values(c: ModelConfig, t: dict[str, np.ndarray]) -> None:
    enc = c.quant.weight_encoding
    for s in layer_specs(c).values():
        w = t[f"{s.name}.weight"]
        if enc == "int4" and w.size and (w.min() < -8 or w.max() > 7):
            raise ModelError(f"tensor {s.name}.weight has values outside int4 (-8..7)")
        if enc == "codebook4":
            cb = t[f"{s.name}.codebook"]
            if cb[0] != 0 or np.count_nonzero(cb) != 15 or np.unique(cb).size != 16:
                raise ModelError(f"tensor {s.name}.codebook must be 0 followed by 15 distinct "
                                 "nonzero int8 values")
            stray = np.setdiff1d(w, cb)
            if stray.size:
                raise ModelError(f"tensor {s.name}.weight has values {stray[:4].tolist()} "
                                 "not in its codebook")


def _check_scales(c: ModelConfig, scales) -> dict[str, float]:
    if not isinstance(scales, dict):
        raise ModelError("scales must be a dict of name -> float")
    names = scale_names(c)
    missing = [n for n in names if n not in scales]
    if missing:
        raise ModelError(f"missing scale {missing[0]}")
    extra = sorted(set(scales) - set(names))
    if extra:
        raise ModelError(f"unexpected scale {extra[0]}")
    out = {}
    for n in names:
        v = scales[n]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                math.isfinite(v) and v > 0):
            raise ModelError(f"scale {n} must be a finite positive number, got {v!r}")
        out[n] = float(v)
    if out["backlog"] != BACKLOG_SCALE:
        raise ModelError(f"scale backlog must be {BACKLOG_SCALE} (one frame per step)")
    if c.joint_activation == "tanh" and out["joint.hidden"] != TANH_INT8_SCALE:
        raise ModelError("scale joint.hidden must be 2**-7 for a tanh joint")
    return out


# ---------------------------------------------------------------------------- states


class EncoderState(NamedTuple):
    """Recurrent state of the whole encoder: each branch keeps its own.

    A frame updates only the chosen branch's entries; the others are carried over as
    they are (the same objects). Each entry is an ``LSTMState``: int8 ``h`` and int16
    ``c`` in the integer model, float64 arrays in the float model.
    """

    fast: LSTMState
    slow1: LSTMState
    slow2: LSTMState


def quantize_backlog(frames: float) -> int:
    """Backlog in frames -> arbitrator input (0..127): rounded half up, saturated."""
    if not math.isfinite(frames):
        raise ValueError(f"backlog must be finite, got {frames!r}")
    return int(min(max(math.floor(frames / BACKLOG_SCALE + 0.5), 0), BACKLOG_MAX))


def _check_branch(branch) -> int:
    if branch not in (FAST, SLOW) or isinstance(branch, bool):
        raise ValueError(f"branch must be {FAST} (fast) or {SLOW} (slow), got {branch!r}")
    return int(branch)


def _record(trace: dict | None, name: str, value: np.ndarray) -> None:
    if trace is not None:
        trace.setdefault(name, []).append(value)


# ---------------------------------------------------------------------------- float


@dataclass(frozen=True, eq=False)
class FloatModel:
    """Float reference model (float32 parameters, float64 arithmetic).

    Methods mirror :class:`QuantModel` with real values. ``trace``, where accepted, is a
    dict that collects each named activation (per call, appended to a list): the
    quantizer calibrates activation scales from it.
    """

    config: ModelConfig
    tensors: dict

    kind = "float"

    def __post_init__(self):
        if not isinstance(self.config, ModelConfig):
            raise ModelError("config must be a ModelConfig")
        object.__setattr__(self, "tensors", _check_tensors(self.config, "float", self.tensors))

    def _w(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        return self.tensors[f"{layer}.weight"], self.tensors[f"{layer}.bias"]

    def _lstm(self, layer: str, x, state: LSTMState, trace) -> LSTMState:
        h, c = lstm_step_float(*self._w(layer), x, state.h, state.c)
        _record(trace, layer, h)
        return LSTMState(h, c)

    def _zero(self, n: int) -> LSTMState:
        return LSTMState(np.zeros(n), np.zeros(n))

    def initial_encoder_state(self) -> EncoderState:
        c = self.config
        return EncoderState(self._zero(c.fast_hidden), self._zero(c.slow_hidden),
                            self._zero(c.slow_hidden))

    def initial_predictor_state(self) -> LSTMState:
        return self._zero(self.config.pred_hidden)

    def arbitrator_logits(self, feat, backlog: float, trace: dict | None = None) -> np.ndarray:
        """Float logits ``[fast, slow]``; ``backlog`` in frames (clipped to 0..127)."""
        x = np.concatenate((np.asarray(feat, np.float64),
                            [min(max(float(backlog), 0.0), float(BACKLOG_MAX))]))
        h = linear_float(*self._w("arb.hidden"), x, relu=True)
        _record(trace, "arb.hidden", h)
        logits = linear_float(*self._w("arb.out"), h)
        _record(trace, "arb.out", logits)
        return logits

    def arbitrate(self, feat, backlog: float) -> int:
        """:data:`SLOW` if the slow logit is strictly larger, else :data:`FAST`."""
        logits = self.arbitrator_logits(feat, backlog)
        return SLOW if logits[1] > logits[0] else FAST

    def encoder_step(self, branch: int, feat, state: EncoderState,
                     trace: dict | None = None) -> tuple[np.ndarray, EncoderState]:
        """Run one frame through ``branch``; the other branch's state is carried over."""
        feat = np.asarray(feat, np.float64)
        if _check_branch(branch) == FAST:
            fast = self._lstm("fast.lstm", feat, state.fast, trace)
            enc = linear_float(*self._w("fast.proj"), fast.h)
            state = state._replace(fast=fast)
        else:
            s1 = self._lstm("slow.lstm1", feat, state.slow1, trace)
            s2 = self._lstm("slow.lstm2", s1.h, state.slow2, trace)
            enc = linear_float(*self._w("slow.proj"), s2.h)
            state = state._replace(slow1=s1, slow2=s2)
        _record(trace, "enc", enc)
        return enc, state

    def predictor_step(self, token: int, state: LSTMState,
                       trace: dict | None = None) -> tuple[np.ndarray, LSTMState]:
        e = embedding_float(self.tensors["pred.embed.table"], token)
        new = self._lstm("pred.lstm", e, state, trace)
        return new.h, new

    def joint(self, enc, pred, trace: dict | None = None) -> np.ndarray:
        """Float logits over the vocabulary."""
        x = np.concatenate((np.asarray(enc, np.float64), np.asarray(pred, np.float64)))
        w, b = self._w("joint.hidden")
        if self.config.joint_activation == "tanh":
            h = np.tanh(linear_float(w, b, x))
        else:
            h = linear_float(w, b, x, relu=True)
        _record(trace, "joint.hidden", h)
        logits = linear_float(*self._w("joint.out"), h)
        _record(trace, "logit", logits)
        return logits


# ---------------------------------------------------------------------------- integer


@dataclass(frozen=True, eq=False)
class QuantModel:
    """Integer model: what the golden backend and the processor run.

    Parameters
    ----------
    config : ModelConfig
    tensors : dict of str -> ndarray
        Exactly :func:`tensor_specs` ``(config, "int")``; copied and made read-only.
    scales : dict of str -> float
        Real value of one int8 step for each name in :func:`scale_names`. Only
        ``feature`` (to quantize inputs), ``logit`` (to read outputs) and ``backlog`` are
        needed at run time; the others document the quantization.

    Raises
    ------
    ModelError
        If a tensor or scale is missing, misshapen, of the wrong dtype or out of range.
    """

    config: ModelConfig
    tensors: dict
    scales: dict
    layers: dict = field(init=False, repr=False)
    embed: QEmbedding = field(init=False, repr=False)

    kind = "int"

    def __post_init__(self):
        if not isinstance(self.config, ModelConfig):
            raise ModelError("config must be a ModelConfig")
        t = _check_tensors(self.config, "int", self.tensors)
        set_ = object.__setattr__
        set_(self, "tensors", t)
        set_(self, "scales", _check_scales(self.config, self.scales))
        layers = {}
        for s in layer_specs(self.config).values():
            try:
                lin = QLinear(t[f"{s.name}.weight"], t[f"{s.name}.bias"],
                              t[f"{s.name}.multiplier"], t[f"{s.name}.shift"], relu=s.relu)
                if s.kind == "lstm":
                    lin = QLSTM(lin, int(t[f"{s.name}.out_multiplier"]),
                                int(t[f"{s.name}.out_shift"]),
                                cell_frac_bits=self.config.quant.cell_frac_bits)
            except ValueError as e:
                raise ModelError(f"layer {s.name}: {e}") from None
            layers[s.name] = lin
        set_(self, "layers", layers)
        set_(self, "embed", QEmbedding(t["pred.embed.table"]))

    @property
    def feature_scale(self) -> float:
        """Real value of one int8 feature step."""
        return self.scales["feature"]

    @property
    def logit_scale(self) -> float:
        """Real value of one int8 logit step."""
        return self.scales["logit"]

    def _feat(self, feat) -> np.ndarray:
        feat = np.asarray(feat)
        if feat.shape != (self.config.feature_dim,) or feat.dtype != np.int8:
            raise ValueError(f"features must be int8 of shape ({self.config.feature_dim},), "
                             f"got {feat.dtype} {feat.shape}")
        return feat

    def initial_encoder_state(self) -> EncoderState:
        lay = self.layers
        return EncoderState(lay["fast.lstm"].initial_state(), lay["slow.lstm1"].initial_state(),
                            lay["slow.lstm2"].initial_state())

    def initial_predictor_state(self) -> LSTMState:
        return self.layers["pred.lstm"].initial_state()

    def arbitrator_logits(self, feat, backlog_q: int) -> np.ndarray:
        """int8 logits ``[fast, slow]`` for int8 features and a backlog step 0..127."""
        if isinstance(backlog_q, bool) or not isinstance(backlog_q, (int, np.integer)) or not (
                0 <= backlog_q <= BACKLOG_MAX):
            raise ValueError(f"backlog_q must be an int in 0..{BACKLOG_MAX}, got {backlog_q!r}")
        x = np.concatenate((self._feat(feat), np.array([backlog_q], np.int8)))
        return self.layers["arb.out"](self.layers["arb.hidden"](x))

    def arbitrate(self, feat, backlog_q: int) -> int:
        """:data:`SLOW` iff ``logit[slow] > logit[fast]`` (a tie picks the cheap branch)."""
        logits = self.arbitrator_logits(feat, backlog_q)
        return SLOW if int(logits[1]) > int(logits[0]) else FAST

    def encoder_step(self, branch: int, feat, state: EncoderState
                     ) -> tuple[np.ndarray, EncoderState]:
        """int8 encoder frame from ``branch``; only that branch's state changes."""
        feat = self._feat(feat)
        lay = self.layers
        if _check_branch(branch) == FAST:
            h, fast = lay["fast.lstm"].step(feat, state.fast)
            return readonly(lay["fast.proj"](h)), state._replace(fast=fast)
        h1, s1 = lay["slow.lstm1"].step(feat, state.slow1)
        h2, s2 = lay["slow.lstm2"].step(h1, state.slow2)
        return readonly(lay["slow.proj"](h2)), state._replace(slow1=s1, slow2=s2)

    def predictor_step(self, token: int, state: LSTMState) -> tuple[np.ndarray, LSTMState]:
        """Feed ``token``; the output is the new int8 hidden state."""
        return self.layers["pred.lstm"].step(self.embed(token), state)

    def joint(self, enc, pred) -> np.ndarray:
        """int8 logits over the vocabulary (real value ``logit_scale * q``)."""
        enc, pred = np.asarray(enc), np.asarray(pred)
        c = self.config
        if enc.shape != (c.enc_dim,) or enc.dtype != np.int8:
            raise ValueError(f"enc must be int8 of shape ({c.enc_dim},), got {enc.dtype} "
                             f"{enc.shape}")
        if pred.shape != (c.pred_hidden,) or pred.dtype != np.int8:
            raise ValueError(f"pred must be int8 of shape ({c.pred_hidden},), got {pred.dtype} "
                             f"{pred.shape}")
        hidden = self.layers["joint.hidden"]
        x = np.concatenate((enc, pred))
        if c.joint_activation == "tanh":
            z = requantize_to_int16(hidden.accumulate(x), hidden.multiplier, hidden.shift)
            h = q15_to_int8(tanh_q15(z))
        else:
            h = hidden(x)
        return self.layers["joint.out"](h)


# ---------------------------------------------------------------------------- fast kernels


@functools.cache
def _full_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The activation functions of ``golden.lstm`` tabulated on every int16 input.

    ``sigmoid[z + 32768] == sigmoid_q15(z)``, ``tanh[z + 32768] == tanh_q15(z)`` and
    ``tanh8[z + 32768] == q15_to_int8(tanh_q15(z))`` for all int16 ``z``, by construction
    (each entry is the reference function's value): a lookup replaces the interpolation.
    """
    z = np.arange(INT16_MIN, INT16_MAX + 1, dtype=np.int64)
    tanh = tanh_q15(z)
    return readonly(sigmoid_q15(z)), readonly(tanh), readonly(q15_to_int8(tanh))


def _rounding_divide_by_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    """``golden.numerics.rounding_divide_by_pot`` for a constant exponent in 0..31."""
    if exponent == 0:
        return x
    mask = (1 << exponent) - 1
    return (x >> exponent) + ((x & mask) > ((mask >> 1) + (x < 0)))


def _sat16(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, INT16_MIN), INT16_MAX)


class _FastLSTM:
    """:meth:`golden.lstm.QLSTM.step`, bit for bit, with less per-call overhead.

    The same operations in the same order (``docs/numerics.md``, "Integer LSTM"): the
    activation tables are read from :func:`_full_tables`, requantizations go through
    :class:`~golden.layers.Requantizer`, the roundings through
    :func:`_rounding_divide_by_pot`. ``tests/golden/test_fast_paths.py`` compares it
    with ``QLSTM.step`` on random and extreme states for every cell format.
    """

    __slots__ = ("lstm", "_hsz", "_n", "_out")

    def __init__(self, lstm: QLSTM):
        self.lstm = lstm
        self._hsz = lstm.hidden_size
        self._n = lstm.cell_frac_bits
        self._out = Requantizer(lstm.out_multiplier, lstm.out_shift)

    def step(self, x, state: LSTMState) -> tuple[np.ndarray, LSTMState]:
        lstm, hsz, n = self.lstm, self._hsz, self._n
        x = np.asarray(x)
        if x.shape != (lstm.input_size,) or x.dtype != np.int8:
            raise ValueError(f"LSTM input must be int8 of shape ({lstm.input_size},), "
                             f"got {x.dtype} {x.shape}")
        if state.h.shape != (hsz,) or state.c.shape != (hsz,):
            raise ValueError(f"LSTM state must have shape ({hsz},)")
        sig_t, tanh_t, _ = _full_tables()
        gates = lstm.gates
        acc = gates.accumulate(np.concatenate((x, state.h)))
        z = gates.requantizer.to_int16(acc, int32_input=True) - INT16_MIN  # Q3.12 + 2**15
        sig = sig_t[z]  # i, f, (unused), o
        i, f, o = sig[:hsz], sig[hsz:2 * hsz], sig[3 * hsz:]
        g = tanh_t[z[2 * hsz:3 * hsz]]
        fc = _sat16(_rounding_divide_by_pot(f * state.c.astype(np.int64), OUT_FRAC_BITS))
        ig = _sat16(_rounding_divide_by_pot(i * g, 2 * OUT_FRAC_BITS - n))
        c = _sat16(fc + ig)
        if n < GATE_FRAC_BITS:
            cq = _sat16(c << (GATE_FRAC_BITS - n))
        else:
            cq = _rounding_divide_by_pot(c, n - GATE_FRAC_BITS)
        t = tanh_t[cq - INT16_MIN]
        h = readonly(self._out.to_int8(o * t, int32_input=True))  # |o * t| < 2**30
        return h, LSTMState(h, readonly(c.astype(np.int16)))


class FastKernels:
    """The integer model's steps, bit for bit, with less NumPy overhead per call.

    :class:`~golden.backend.GoldenBackend` runs these; :class:`QuantModel`'s own methods
    are the plain reference. What differs is only how the same integers are computed:

    * LSTM steps (:class:`_FastLSTM`): tabulated activations, precomputed requantizers.
    * The joint: its hidden layer's accumulator over ``[enc; pred]`` is split by columns,
      ``wrap32((W_enc @ enc) + (W_pred @ pred + b))``. Each partial sum is an exact
      integer (int32 sums of int8 products cannot overflow, see ``golden.layers``), so
      the int64 sum is the same integer as ``W @ [enc; pred] + b`` and the single int32
      wrap at the end gives the same accumulator. The encoder half is computed once per
      distinct frame, the predictor half (with the bias) once per distinct predictor
      output; both are cached by content (the int8 bytes), so the cache cannot return a
      stale value whatever arrays the caller passes.
    * :meth:`joint_batch`: the joint of one frame against several predictor outputs in
      one call; row ``i`` is ``joint(enc, preds[i])``.

    Parameters
    ----------
    model : QuantModel
    cache_size : int
        Predictor halves kept (the cache is emptied when it is full).
    """

    def __init__(self, model: QuantModel, cache_size: int = 4096):
        self.model = model
        c = model.config
        lay = model.layers
        self._lstm = {name: _FastLSTM(lay[name])
                      for name in ("fast.lstm", "slow.lstm1", "slow.lstm2", "pred.lstm")}
        hidden, out = lay["joint.hidden"], lay["joint.out"]
        self._hidden, self._out = hidden, out
        self._tanh = c.joint_activation == "tanh"
        w = hidden.weight.astype(np.int32)
        self._w_enc = readonly(np.ascontiguousarray(w[:, :c.enc_dim]))
        self._w_pred = readonly(np.ascontiguousarray(w[:, c.enc_dim:]))
        self._bias = hidden.bias.astype(np.int64)
        self._enc_dim, self._pred_dim = c.enc_dim, c.pred_hidden
        self._enc_cache: tuple[bytes, np.ndarray] | None = None
        self._pred_parts: dict[bytes, np.ndarray] = {}
        self._cache_size = int(cache_size)

    def arbitrate(self, feat, backlog_q: int) -> int:
        return self.model.arbitrate(feat, backlog_q)

    def encoder_step(self, branch: int, feat, state: EncoderState
                     ) -> tuple[np.ndarray, EncoderState]:
        """:meth:`QuantModel.encoder_step`."""
        m = self.model
        feat = m._feat(feat)
        lay, fast = m.layers, self._lstm
        if _check_branch(branch) == FAST:
            h, st = fast["fast.lstm"].step(feat, state.fast)
            return readonly(lay["fast.proj"](h)), state._replace(fast=st)
        h1, s1 = fast["slow.lstm1"].step(feat, state.slow1)
        h2, s2 = fast["slow.lstm2"].step(h1, state.slow2)
        return readonly(lay["slow.proj"](h2)), state._replace(slow1=s1, slow2=s2)

    def predictor_step(self, token: int, state: LSTMState) -> tuple[np.ndarray, LSTMState]:
        """:meth:`QuantModel.predictor_step`."""
        return self._lstm["pred.lstm"].step(self.model.embed(token), state)

    def _enc_half(self, enc: np.ndarray) -> np.ndarray:
        key = enc.tobytes()
        cached = self._enc_cache  # (key, part), replaced as one object
        if cached is not None and cached[0] == key:
            return cached[1]
        part = np.einsum("ij,j->i", self._w_enc, enc.astype(np.int32))
        self._enc_cache = (key, part)
        return part

    def _pred_half(self, pred: np.ndarray) -> np.ndarray:
        key = pred.tobytes()
        part = self._pred_parts.get(key)
        if part is None:
            if len(self._pred_parts) >= self._cache_size:
                self._pred_parts.clear()
            part = np.einsum("ij,j->i", self._w_pred, pred.astype(np.int32)) + self._bias
            self._pred_parts[key] = part
        return part

    def joint(self, enc, pred) -> np.ndarray:
        """:meth:`QuantModel.joint`."""
        pred = np.asarray(pred)
        if pred.shape != (self._pred_dim,) or pred.dtype != np.int8:
            raise ValueError(f"pred must be int8 of shape ({self._pred_dim},), got "
                             f"{pred.dtype} {pred.shape}")
        return self.joint_batch(enc, pred[None])[0]

    def joint_batch(self, enc, preds) -> np.ndarray:
        """int8 logits ``[n, V]``: row ``i`` is :meth:`QuantModel.joint` ``(enc, preds[i])``."""
        enc, preds = np.asarray(enc), np.asarray(preds)
        if enc.shape != (self._enc_dim,) or enc.dtype != np.int8:
            raise ValueError(f"enc must be int8 of shape ({self._enc_dim},), got {enc.dtype} "
                             f"{enc.shape}")
        if preds.ndim != 2 or preds.shape[1] != self._pred_dim or preds.dtype != np.int8:
            raise ValueError(f"preds must be int8 of shape (n, {self._pred_dim}), got "
                             f"{preds.dtype} {preds.shape}")
        if len(preds) == 0:
            return np.zeros((0, self._out.rows), np.int8)
        e = self._enc_half(enc)
        if len(preds) == 1:
            acc = wrap32(e + self._pred_half(preds[0]))[None]
        else:
            acc = wrap32(e + np.array([self._pred_half(p) for p in preds]))
        if self._tanh:
            z = self._hidden.requantizer.to_int16(acc, int32_input=True)
            h = _full_tables()[2][z - INT16_MIN]  # q15_to_int8(tanh_q15(z))
        else:
            h = self._hidden.requantize_wrapped(acc)
        out = self._out
        if len(h) == 1:
            return out.requantize_wrapped(out.accumulate(h[0]))[None]
        return out.requantize_wrapped(out.accumulate_rows(h))


# ---------------------------------------------------------------------------- random


def random_float_model(config: ModelConfig, seed: int = 0) -> FloatModel:
    """A seeded random float model of any size, for tests.

    Weights are uniform with variance ``gain**2 / fan_in`` so pre-activations stay of
    order one for unit-variance features; LSTM forget-gate biases are +1 (the usual
    initialization, keeping cell states bounded); the arbitrator's backlog column is
    scaled by 1/32 because the backlog is counted in frames (0..127).
    """
    rng = np.random.default_rng(seed)

    def uniform(shape, gain):
        a = gain * math.sqrt(3.0 / shape[-1])
        return rng.uniform(-a, a, shape)

    t = {}
    for s in layer_specs(config).values():
        w = uniform((s.rows, s.cols), 1.0)
        b = rng.uniform(-0.1, 0.1, s.rows)
        if s.kind == "lstm":
            h = s.rows // 4
            b[h:2 * h] += 1.0
        t[f"{s.name}.weight"], t[f"{s.name}.bias"] = w, b
    t["arb.hidden.weight"][:, -1] /= 32.0
    t["joint.out.weight"] *= 2.0  # spread the logits over a few units, like a trained model
    t["pred.embed.table"] = rng.uniform(-1.0, 1.0, (config.vocab_size, config.pred_embed))
    return FloatModel(config, {k: v.astype(np.float32) for k, v in t.items()})


# ---------------------------------------------------------------------------- files


def save_model(model: FloatModel | QuantModel, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` as an ``.npz`` archive with a JSON header.

    The path is used as given (NumPy's habit of appending ``.npz`` is bypassed).
    """
    if not isinstance(model, (FloatModel, QuantModel)):
        raise ModelError("can only save a FloatModel or QuantModel, "
                         f"got {type(model).__name__}")
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "kind": model.kind,
              "config": model.config.to_dict()}
    if isinstance(model, QuantModel):
        header["scales"] = dict(model.scales)
    blob = np.frombuffer(json.dumps(header, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **{HEADER_KEY: blob}, **model.tensors)


def load_model(path: str | os.PathLike) -> FloatModel | QuantModel:
    """Read a model written by :func:`save_model`, checking everything.

    Raises
    ------
    ModelError
        Naming the problem: not an NEP model file, unknown version or kind, bad config,
        missing or unexpected tensor, wrong shape or dtype, values out of range.
    """
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ModelError(f"{path}: not an NEP model file (not a NumPy .npz archive: {e})"
                         ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ModelError(f"{path}: not an NEP model file (a single .npy array, not an .npz "
                         "archive)")
    with archive:
        names = list(archive.files)
        if HEADER_KEY not in names:
            raise ModelError(f"{path}: not an NEP model file (no {HEADER_KEY} entry)")
        header = _read_header(path, archive)
        tensors = {}
        for name in names:
            if name == HEADER_KEY:
                continue
            try:
                tensors[name] = archive[name]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
                raise ModelError(f"{path}: tensor {name} cannot be read: {e}") from None
    try:
        config = ModelConfig.from_dict(header["config"])
    except (TypeError, ValueError) as e:
        raise ModelError(f"{path}: bad config in header: {e}") from None
    try:
        if header["kind"] == "float":
            return FloatModel(config, tensors)
        return QuantModel(config, tensors, header.get("scales"))
    except ModelError as e:
        raise ModelError(f"{path}: {e}") from None


def _read_header(path, archive) -> dict:
    try:
        raw = archive[HEADER_KEY]
    except ValueError as e:
        raise ModelError(f"{path}: header entry cannot be read: {e}") from None
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelError(f"{path}: header entry must be a 1-D uint8 array of UTF-8 JSON")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: header is not valid UTF-8 JSON: {e}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ModelError(f"{path}: not an NEP model file (header format is not "
                         f"{FORMAT_NAME!r})")
    version = header.get("version")
    if version != FORMAT_VERSION:
        raise ModelError(f"{path}: unknown model version {version!r} "
                         f"(this build reads version {FORMAT_VERSION})")
    kind = header.get("kind")
    if kind not in KINDS:
        raise ModelError(f"{path}: unknown model kind {kind!r} (expected one of {KINDS})")
    if "config" not in header:
        raise ModelError(f"{path}: header has no config")
    if kind == "int" and "scales" not in header:
        raise ModelError(f"{path}: integer model header has no scales")
    return header
