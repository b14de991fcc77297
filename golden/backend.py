"""The compute interface the pipeline calls, and its golden (NumPy) implementation.

The pipeline (arbitration, encoder, prediction network, joint) reaches the network only
through :class:`Backend`, so a processor backend (the RTL under Verilator, or the
instruction-level simulator) can replace :class:`GoldenBackend` and be compared with it
bit for bit. States are immutable values (tuples of read-only NumPy arrays): a backend
returns new states and never changes one in place, so the decoder can keep and reuse
any state (beam search does).

The decoder (``golden/decoding.py``) takes ``predictor(token, state)``,
``joint(enc_frame, pred_out)`` and ``logit_scale``; a backend provides exactly those.

Optional batched method (:class:`BatchedJoint`): ``joint_batch(enc_int8, preds_int8)``
scores one encoder frame against several predictor outputs in one call (row ``i`` equals
``joint(enc_int8, preds_int8[i])``); beam search uses it for all hypotheses of a frame
when the backend has it, and calls ``joint`` once per hypothesis otherwise. A backend
without it is still a complete :class:`Backend`, and the results are identical either
way.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from .lstm import LSTMState
from .model import FAST, SLOW, EncoderState, FastKernels, QuantModel

__all__ = ["STEPS", "STEP_LAYERS", "Backend", "BatchedJoint", "GoldenBackend", "MacCost",
           "joint_rows", "step_macs"]

#: Step names accepted by :meth:`Backend.step_cost`.
STEPS = ("arbitrate", "encoder_fast", "encoder_slow", "predictor", "joint")

#: Matrix layers each step runs, in :data:`STEPS` order (read-only). The predictor's
#: embedding is a table lookup, so it costs no MACs and is not listed.
STEP_LAYERS = MappingProxyType({
    "arbitrate": ("arb.hidden", "arb.out"),
    "encoder_fast": ("fast.lstm", "fast.proj"),
    "encoder_slow": ("slow.lstm1", "slow.lstm2", "slow.proj"),
    "predictor": ("pred.lstm",),
    "joint": ("joint.hidden", "joint.out"),
})


class MacCost(NamedTuple):
    """Multiply-accumulates of one step.

    Attributes
    ----------
    dense : int
        Counting every weight (rows x columns of each matrix).
    nonzero : int
        Counting only nonzero weights (what the processor's MAC array does).
    """

    dense: int
    nonzero: int


def step_macs(layers: Mapping[str, MacCost], step: str) -> MacCost:
    """MACs of one call of ``step``: the sum over its :data:`STEP_LAYERS`.

    Parameters
    ----------
    layers : mapping of str -> MacCost
        MACs of each layer, by layer name (extra layers are ignored).
    step : str
        One of :data:`STEPS`.

    Returns
    -------
    MacCost
    """
    if step not in STEP_LAYERS:
        raise ValueError(f"unknown step {step!r}; expected one of {STEPS}")
    names = STEP_LAYERS[step]
    missing = [n for n in names if n not in layers]
    if missing:
        raise KeyError(f"step {step!r} needs the MACs of layers {missing}, not given")
    return MacCost(sum(layers[n].dense for n in names), sum(layers[n].nonzero for n in names))


@runtime_checkable
class Backend(Protocol):
    """What the pipeline needs from a compute backend.

    Integer in, integer out: features, encoder frames, predictor outputs and logits are
    int8 arrays; ``logit_scale`` gives the logits' real value.
    """

    logit_scale: float

    def arbitrate(self, feat_int8: np.ndarray, backlog_q: int) -> int:
        """0 (fast) or 1 (slow) for this frame, given the backlog step (0..127)."""
        ...

    def encoder_step(self, branch: int, feat_int8: np.ndarray,
                     state: Any) -> tuple[np.ndarray, Any]:
        """One frame through ``branch``: int8 encoder output and the new state."""
        ...

    def predictor_step(self, token: int, state: Any) -> tuple[np.ndarray, Any]:
        """Feed ``token``: int8 prediction-network output and the new state."""
        ...

    def predictor(self, token: int, state: Any) -> tuple[np.ndarray, Any]:
        """Same as :meth:`predictor_step` (the decoder's name for it)."""
        ...

    def joint(self, enc_int8: np.ndarray, pred_int8: np.ndarray) -> np.ndarray:
        """int8 logits over the vocabulary (blank at 0)."""
        ...

    def initial_encoder_state(self) -> Any:
        ...

    def initial_predictor_state(self) -> Any:
        ...

    def step_cost(self, step: str) -> MacCost:
        """MACs of one call of ``step`` (one of :data:`STEPS`)."""
        ...


@runtime_checkable
class BatchedJoint(Protocol):
    """Optional extension of :class:`Backend`: the joint of one frame, batched.

    Not part of :class:`Backend` (so ``isinstance(obj, Backend)`` does not require it);
    callers detect it with ``isinstance(backend, BatchedJoint)`` and fall back to
    :func:`joint_rows` semantics (one ``joint`` call per row) otherwise.
    """

    def joint_batch(self, enc_int8: np.ndarray, preds_int8: np.ndarray) -> np.ndarray:
        """int8 logits ``[n, V]`` for ``preds_int8`` of shape ``[n, pred_dim]``: row ``i``
        must equal ``joint(enc_int8, preds_int8[i])`` bit for bit. One call counts as
        ``n`` joint calls in the cost model (the device still runs ``n`` joints)."""
        ...


def joint_rows(joint, enc_int8: np.ndarray, preds_int8) -> np.ndarray:
    """The fallback of ``joint_batch``: ``joint(enc, p)`` for each row, stacked."""
    return np.stack([np.asarray(joint(enc_int8, p)) for p in preds_int8])


class GoldenBackend:
    """The bit-exact NumPy backend: runs a :class:`~golden.model.QuantModel`.

    The steps run on :class:`~golden.model.FastKernels` (the same integers as the
    model's own methods, with less per-call overhead, and a :class:`BatchedJoint`);
    ``fast=False`` runs the model's plain reference methods instead, and
    ``joint_batch`` is then :func:`joint_rows` over ``model.joint``.

    Parameters
    ----------
    model : QuantModel
    fast : bool
        Use :class:`~golden.model.FastKernels` (default True).

    Attributes
    ----------
    logit_scale : float
        Real value of one logit step.
    vocabulary : tuple of str
        Token strings, blank first (the logits' order).
    """

    def __init__(self, model: QuantModel, *, fast: bool = True):
        if not isinstance(model, QuantModel):
            raise TypeError(f"GoldenBackend needs a QuantModel, got {type(model).__name__}")
        self.model = model
        self.fast = bool(fast)
        self._kernels = FastKernels(model) if self.fast else model
        self.logit_scale = model.logit_scale
        self.vocabulary = model.config.vocabulary
        layer_macs = {n: MacCost(lay.dense_macs, lay.nonzero_macs)
                      for n, lay in model.layers.items()}
        self._costs = {step: step_macs(layer_macs, step) for step in STEPS}

    def arbitrate(self, feat_int8: np.ndarray, backlog_q: int) -> int:
        return self._kernels.arbitrate(feat_int8, backlog_q)

    def encoder_step(self, branch: int, feat_int8: np.ndarray,
                     state: EncoderState) -> tuple[np.ndarray, EncoderState]:
        return self._kernels.encoder_step(branch, feat_int8, state)

    def predictor_step(self, token: int, state: LSTMState) -> tuple[np.ndarray, LSTMState]:
        return self._kernels.predictor_step(token, state)

    def predictor(self, token: int, state: LSTMState) -> tuple[np.ndarray, LSTMState]:
        return self._kernels.predictor_step(token, state)

    def joint(self, enc_int8: np.ndarray, pred_int8: np.ndarray) -> np.ndarray:
        return self._kernels.joint(enc_int8, pred_int8)

    def joint_batch(self, enc_int8: np.ndarray, preds_int8: np.ndarray) -> np.ndarray:
        """See :class:`BatchedJoint`."""
        if self.fast:
            return self._kernels.joint_batch(enc_int8, preds_int8)
        return joint_rows(self.model.joint, enc_int8, preds_int8)

    def initial_encoder_state(self) -> EncoderState:
        return self.model.initial_encoder_state()

    def initial_predictor_state(self) -> LSTMState:
        return self.model.initial_predictor_state()

    def step_cost(self, step: str) -> MacCost:
        if step not in self._costs:
            raise ValueError(f"unknown step {step!r}; expected one of {STEPS}")
        return self._costs[step]

    def encoder_cost(self, branch: int) -> MacCost:
        """:meth:`step_cost` of the encoder step for ``branch`` (0 fast, 1 slow)."""
        if branch not in (FAST, SLOW):
            raise ValueError(f"branch must be {FAST} or {SLOW}, got {branch!r}")
        return self._costs["encoder_fast" if branch == FAST else "encoder_slow"]
