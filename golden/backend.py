"""The compute interface the pipeline calls, and its golden (NumPy) implementation.

The pipeline (arbitration, encoder, prediction network, joint) reaches the network only
through :class:`Backend`, so a processor backend (the RTL under Verilator, or the
instruction-level simulator) can replace :class:`GoldenBackend` and be compared with it
bit for bit. States are immutable values (tuples of read-only NumPy arrays): a backend
returns new states and never changes one in place, so the decoder can keep and reuse
any state (beam search does).

The decoder (``golden/decoding.py``) takes ``predictor(token, state)``,
``joint(enc_frame, pred_out)`` and ``logit_scale``; a backend provides exactly those.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from .lstm import LSTMState
from .model import FAST, SLOW, EncoderState, QuantModel

__all__ = ["STEPS", "Backend", "GoldenBackend", "MacCost"]

#: Step names accepted by :meth:`Backend.step_cost`.
STEPS = ("arbitrate", "encoder_fast", "encoder_slow", "predictor", "joint")


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


class GoldenBackend:
    """The bit-exact NumPy backend: runs a :class:`~golden.model.QuantModel`.

    Parameters
    ----------
    model : QuantModel

    Attributes
    ----------
    logit_scale : float
        Real value of one logit step.
    vocabulary : tuple of str
        Token strings, blank first (the logits' order).
    """

    def __init__(self, model: QuantModel):
        if not isinstance(model, QuantModel):
            raise TypeError(f"GoldenBackend needs a QuantModel, got {type(model).__name__}")
        self.model = model
        self.logit_scale = model.logit_scale
        self.vocabulary = model.config.vocabulary
        lay = model.layers

        def cost(*names: str) -> MacCost:
            return MacCost(sum(lay[n].dense_macs for n in names),
                           sum(lay[n].nonzero_macs for n in names))

        self._costs = {
            "arbitrate": cost("arb.hidden", "arb.out"),
            "encoder_fast": cost("fast.lstm", "fast.proj"),
            "encoder_slow": cost("slow.lstm1", "slow.lstm2", "slow.proj"),
            "predictor": cost("pred.lstm"),  # the embedding is a lookup: no MACs
            "joint": cost("joint.hidden", "joint.out"),
        }

    def arbitrate(self, feat_int8: np.ndarray, backlog_q: int) -> int:
        return self.model.arbitrate(feat_int8, backlog_q)

    def encoder_step(self, branch: int, feat_int8: np.ndarray,
                     state: EncoderState) -> tuple[np.ndarray, EncoderState]:
        return self.model.encoder_step(branch, feat_int8, state)

    def predictor_step(self, token: int, state: LSTMState) -> tuple[np.ndarray, LSTMState]:
        return self.model.predictor_step(token, state)

    predictor = predictor_step

    def joint(self, enc_int8: np.ndarray, pred_int8: np.ndarray) -> np.ndarray:
        return self.model.joint(enc_int8, pred_int8)

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
