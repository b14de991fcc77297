"""Arbitration with an audio backlog: the device cost model and its real-time queue.

The device is simulated as one server working through encoder frames in order
(``docs/pipeline.md``, "Cost model and backlog")::

    ready_t   = when frame t's audio has arrived (ms of audio time)
    start_t   = max(ready_t, finish_{t-1})          (finish_{-1} = 0)
    backlog_t = min(start_t, heard) - ready_t        (audio waiting behind frame t)
    branch_t  = backend.arbitrate(feat_t, quantize_backlog(backlog_t / frame_shift_ms))
    cost_t    = arbitrate + encoder_<branch_t> + p_t * predictor + j_t * joint
    finish_t  = start_t + 1000 * cost_t / speed

``heard`` is the audio received so far (the whole audio once it has ended), ``p_t`` and
``j_t`` the predictor and joint calls the decoder really made in frame ``t``. The backlog
is known exactly only when ``start_t <= heard`` or the audio has ended, so a streaming
caller holds frame ``t`` until then (:meth:`BacklogScheduler.can_decide`); this keeps
every decision independent of how the audio was chunked.

Everything here is deterministic host arithmetic on the backend's per-step costs; the
only network call is ``backend.arbitrate``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from types import MappingProxyType

from .backend import STEPS, Backend
from .model import FAST, SLOW, quantize_backlog

__all__ = [
    "BRANCH_NAMES",
    "COST_UNITS",
    "DEFAULT_MACS_PER_SECOND",
    "MAC_COUNTS",
    "BacklogScheduler",
    "CostModel",
    "CostReport",
    "Decision",
    "FrameRecord",
]

#: Branch names, indexed by branch id (:data:`~golden.model.FAST`, :data:`~golden.model.SLOW`).
BRANCH_NAMES = ("fast", "slow")
#: What a :class:`CostModel` counts.
COST_UNITS = ("macs", "cycles")
#: Which :class:`~golden.backend.MacCost` field a MAC-based cost model uses.
MAC_COUNTS = ("nonzero", "dense")
#: Default device speed. On the default model (1.27 M parameters) a slow frame with one
#: joint call is ~1.02 M MACs = 40.7 ms per 30 ms frame (1.36x slower than real time) and
#: a fast one ~0.21 M MACs = 8.5 ms, so the arbitrator decides whether the device keeps up.
DEFAULT_MACS_PER_SECOND = 25e6


def _finite_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class CostModel:
    """How much device time a step costs.

    Parameters
    ----------
    unit : {"macs", "cycles"}
        ``"macs"`` (default): a step costs the MACs reported by ``backend.step_cost``.
        ``"cycles"``: a step costs ``step_cycles[step]`` processor cycles (measured on the
        processor or its instruction-level simulator).
    speed : float
        Device speed in units per second: MACs/s or cycles/s (clock frequency). Default
        :data:`DEFAULT_MACS_PER_SECOND`.
    mac_count : {"nonzero", "dense"}
        With ``unit="macs"``: count only nonzero weights (default; the MAC array skips
        zeros) or every weight.
    step_cycles : mapping of str to int, optional
        Required with ``unit="cycles"`` (and only then): positive cycles per call of every
        step in :data:`golden.backend.STEPS`.

    Raises
    ------
    ValueError
        On an unknown unit or count, a non-positive speed, or missing, extra or
        non-positive ``step_cycles`` entries.
    """

    unit: str = "macs"
    speed: float = DEFAULT_MACS_PER_SECOND
    mac_count: str = "nonzero"
    step_cycles: Mapping[str, int] | None = field(default=None, hash=False)

    def __post_init__(self):
        if self.unit not in COST_UNITS:
            raise ValueError(f"CostModel.unit must be one of {COST_UNITS}, got {self.unit!r}")
        object.__setattr__(self, "speed", _finite_positive("CostModel.speed", self.speed))
        if self.mac_count not in MAC_COUNTS:
            raise ValueError(f"CostModel.mac_count must be one of {MAC_COUNTS}, "
                             f"got {self.mac_count!r}")
        if self.unit == "macs":
            if self.step_cycles is not None:
                raise ValueError("CostModel.step_cycles is only used with unit='cycles'")
            return
        if not isinstance(self.step_cycles, Mapping):
            raise ValueError("CostModel(unit='cycles') needs step_cycles: cycles per call of "
                             f"each step in {STEPS}")
        if set(self.step_cycles) != set(STEPS):
            raise ValueError(f"CostModel.step_cycles keys {sorted(self.step_cycles)} differ "
                             f"from the steps {sorted(STEPS)}")
        for step, cycles in self.step_cycles.items():
            if isinstance(cycles, bool) or not isinstance(cycles, Integral) or cycles < 1:
                raise ValueError(f"CostModel.step_cycles[{step!r}] must be a positive int, "
                                 f"got {cycles!r}")
        # A read-only copy: the dataclass is frozen, so its mapping must be too.
        object.__setattr__(self, "step_cycles", MappingProxyType(
            {s: int(self.step_cycles[s]) for s in STEPS}))

    def step_costs(self, backend: Backend) -> dict[str, float]:
        """Units per call of every step in :data:`~golden.backend.STEPS` on ``backend``."""
        if self.unit == "cycles":
            return {s: float(self.step_cycles[s]) for s in STEPS}
        return {s: float(getattr(backend.step_cost(s), self.mac_count)) for s in STEPS}

    def milliseconds(self, units: float) -> float:
        """Device time of ``units`` MACs or cycles, in ms."""
        return 1000.0 * units / self.speed


@dataclass(frozen=True)
class Decision:
    """The arbitrator's choice for one frame and the queue state it was made in.

    Attributes
    ----------
    frame : int
        Encoder frame index.
    branch : int
        :data:`~golden.model.FAST` or :data:`~golden.model.SLOW`.
    ready_ms : float
        When the frame's audio had arrived.
    start_ms : float
        When the device starts the frame: ``max(ready_ms, previous finish)``.
    backlog_ms : float
        Audio received after ``ready_ms`` and not yet processed, at ``start_ms``.
    backlog_frames : float
        ``backlog_ms / frame_shift_ms``.
    backlog_q : int
        ``quantize_backlog(backlog_frames)``: the arbitrator's input (0..127).
    """

    frame: int
    branch: int
    ready_ms: float
    start_ms: float
    backlog_ms: float
    backlog_frames: float
    backlog_q: int


@dataclass(frozen=True)
class FrameRecord(Decision):
    """A processed frame: its :class:`Decision` plus the work done and when it ended.

    Attributes
    ----------
    finish_ms : float
        ``start_ms + milliseconds(cost)``.
    cost : float
        MACs or cycles spent on the frame: arbitrator, branch, predictor and joint calls.
    predictor_calls, joint_calls : int
        Calls the decoder made while consuming this frame.
    """

    finish_ms: float
    cost: float
    predictor_calls: int
    joint_calls: int


@dataclass(frozen=True)
class CostReport:
    """Per-utterance cost, backlog and latency.

    Attributes
    ----------
    cost_model : CostModel
    step_costs : mapping of str to float
        Units per call of each step.
    frame_shift_ms : float
        Audio per encoder frame.
    audio_ms : float
        Length of the audio received.
    frames : tuple of FrameRecord
        Every processed frame, in order.
    """

    cost_model: CostModel
    step_costs: Mapping[str, float]
    frame_shift_ms: float
    audio_ms: float
    frames: tuple[FrameRecord, ...]

    @property
    def decisions(self) -> tuple[int, ...]:
        """Branch of each processed frame."""
        return tuple(r.branch for r in self.frames)

    @property
    def branch_frames(self) -> dict[str, int]:
        """Frames per branch: ``{"fast": n, "slow": n}``."""
        return {name: sum(1 for r in self.frames if r.branch == b)
                for b, name in zip((FAST, SLOW), BRANCH_NAMES)}

    @property
    def calls(self) -> dict[str, int]:
        """Calls of each step in :data:`~golden.backend.STEPS`."""
        n = self.branch_frames
        return {"arbitrate": len(self.frames), "encoder_fast": n["fast"],
                "encoder_slow": n["slow"],
                "predictor": sum(r.predictor_calls for r in self.frames),
                "joint": sum(r.joint_calls for r in self.frames)}

    @property
    def by_step(self) -> dict[str, float]:
        """Units spent in each step."""
        return {s: c * self.step_costs[s] for s, c in self.calls.items()}

    @property
    def total(self) -> float:
        """Units (MACs or cycles) spent on the utterance."""
        return float(sum(r.cost for r in self.frames))

    @property
    def seconds(self) -> float:
        """Device compute time of the utterance, in seconds."""
        return self.cost_model.milliseconds(self.total) / 1000.0

    @property
    def load(self) -> float:
        """Compute time over audio time (below 1: the device keeps up on average)."""
        return 1000.0 * self.seconds / self.audio_ms if self.audio_ms > 0 else 0.0

    @property
    def backlog_ms(self) -> tuple[float, ...]:
        """Backlog curve: the backlog at the start of each processed frame, in ms."""
        return tuple(r.backlog_ms for r in self.frames)

    @property
    def backlog_frames(self) -> tuple[float, ...]:
        """Backlog curve in frames."""
        return tuple(r.backlog_frames for r in self.frames)

    @property
    def latency_ms(self) -> float:
        """When the result is ready after the last audio it depends on arrived.

        ``finish - ready`` of the last processed frame (0 with no frames). When the whole
        audio was decoded, the last frame is ready at the end of the audio, so this is the
        time from the end of the audio to the final result.
        """
        if not self.frames:
            return 0.0
        return self.frames[-1].finish_ms - self.frames[-1].ready_ms

    def to_dict(self) -> dict:
        """Plain JSON types (layout in ``docs/pipeline.md``)."""
        cm = self.cost_model
        return {
            "unit": cm.unit,
            "mac_count": cm.mac_count if cm.unit == "macs" else None,
            "speed": cm.speed,
            "step_costs": dict(self.step_costs),
            "calls": self.calls,
            "by_step": self.by_step,
            "total": self.total,
            "seconds": self.seconds,
            "load": self.load,
            "audio_ms": self.audio_ms,
            "frame_shift_ms": self.frame_shift_ms,
            "branch_frames": self.branch_frames,
            "latency_ms": self.latency_ms,
            "backlog": {
                "ms": list(self.backlog_ms),
                "frames": list(self.backlog_frames),
                "quantized": [r.backlog_q for r in self.frames],
                "max_ms": max(self.backlog_ms, default=0.0),
            },
            "frames": [{"frame": r.frame, "branch": r.branch, "ready_ms": r.ready_ms,
                        "start_ms": r.start_ms, "finish_ms": r.finish_ms, "cost": r.cost,
                        "predictor_calls": r.predictor_calls, "joint_calls": r.joint_calls}
                       for r in self.frames],
        }


class BacklogScheduler:
    """Arbitrates each frame from the backlog and keeps the simulated device timeline.

    Parameters
    ----------
    backend : Backend
        Runs the arbitrator (``arbitrate``) and reports the step costs.
    cost_model : CostModel
    frame_shift_ms : float
        Audio per encoder frame (the backlog's unit when given to the arbitrator).

    Notes
    -----
    Per frame, call :meth:`decide` (runs the arbitrator), do the frame's work, then
    :meth:`complete` with the predictor and joint calls it took. A streaming caller asks
    :meth:`can_decide` first and holds the frame while it is false.
    """

    def __init__(self, backend: Backend, cost_model: CostModel, frame_shift_ms: float):
        if not isinstance(cost_model, CostModel):
            raise TypeError(f"cost_model must be a CostModel, got {type(cost_model).__name__}")
        self.backend = backend
        self.cost_model = cost_model
        self.frame_shift_ms = _finite_positive("frame_shift_ms", frame_shift_ms)
        self.step_costs = MappingProxyType(cost_model.step_costs(backend))
        self.reset()

    def reset(self) -> None:
        """Start a new utterance: idle device at time 0, no frames."""
        self._records: list[FrameRecord] = []
        self._free_ms = 0.0
        self._open: Decision | None = None

    @property
    def free_ms(self) -> float:
        """When the device finishes its last completed frame (0 before any)."""
        return self._free_ms

    def start_ms(self, ready_ms: float) -> float:
        """When a frame ready at ``ready_ms`` would start: ``max(ready_ms, free_ms)``."""
        return max(float(ready_ms), self._free_ms)

    def can_decide(self, ready_ms: float, heard_ms: float, ended: bool) -> bool:
        """Whether the backlog at the frame's start is known from the audio so far."""
        return ended or self.start_ms(ready_ms) <= heard_ms

    def decide(self, frame: int, feat_int8, ready_ms: float, heard_ms: float) -> Decision:
        """Run the arbitrator on frame ``frame``.

        Parameters
        ----------
        frame : int
            Encoder frame index (one more than the last completed frame's).
        feat_int8 : numpy.ndarray
            The frame's int8 features.
        ready_ms : float
            When the frame's audio had arrived (not before the previous frame's).
        heard_ms : float
            Audio received so far; the whole audio once it has ended. Exact when
            :meth:`can_decide` holds.
        """
        if self._open is not None:
            raise RuntimeError(f"frame {self._open.frame} was decided but not completed")
        expected = self._records[-1].frame + 1 if self._records else 0
        if frame != expected:
            raise ValueError(f"frames must be decided in order: expected {expected}, "
                             f"got {frame!r}")
        ready_ms, heard_ms = float(ready_ms), float(heard_ms)
        if not (math.isfinite(ready_ms) and math.isfinite(heard_ms)) or ready_ms < 0 \
                or heard_ms < ready_ms:
            raise ValueError(f"need 0 <= ready_ms <= heard_ms, got {ready_ms}, {heard_ms}")
        if self._records and ready_ms < self._records[-1].ready_ms:
            raise ValueError(f"frame {frame} is ready at {ready_ms} ms, before frame "
                             f"{frame - 1} ({self._records[-1].ready_ms} ms)")
        start = self.start_ms(ready_ms)
        backlog_ms = min(start, heard_ms) - ready_ms
        backlog_frames = backlog_ms / self.frame_shift_ms
        backlog_q = quantize_backlog(backlog_frames)
        branch = self.backend.arbitrate(feat_int8, backlog_q)
        if branch not in (FAST, SLOW) or isinstance(branch, bool):
            raise ValueError(f"backend.arbitrate returned {branch!r}; expected {FAST} or "
                             f"{SLOW}")
        self._open = Decision(int(frame), int(branch), ready_ms, start, backlog_ms,
                              backlog_frames, backlog_q)
        return self._open

    def complete(self, decision: Decision, predictor_calls: int,
                 joint_calls: int) -> FrameRecord:
        """Charge the frame's work and advance the device clock.

        Parameters
        ----------
        decision : Decision
            What :meth:`decide` returned for this frame.
        predictor_calls, joint_calls : int
            Calls made while decoding the frame.
        """
        if decision is not self._open:
            raise RuntimeError("complete() must follow decide() for the same frame")
        for name, n in (("predictor_calls", predictor_calls), ("joint_calls", joint_calls)):
            if isinstance(n, bool) or not isinstance(n, Integral) or n < 0:
                raise ValueError(f"{name} must be a non-negative int, got {n!r}")
        c = self.step_costs
        cost = (c["arbitrate"] + c["encoder_fast" if decision.branch == FAST else
                                   "encoder_slow"]
                + predictor_calls * c["predictor"] + joint_calls * c["joint"])
        finish = decision.start_ms + self.cost_model.milliseconds(cost)
        rec = FrameRecord(**vars(decision), finish_ms=finish, cost=cost,
                          predictor_calls=int(predictor_calls), joint_calls=int(joint_calls))
        self._records.append(rec)
        self._free_ms = finish
        self._open = None
        return rec

    def report(self, audio_ms: float) -> CostReport:
        """The utterance's :class:`CostReport` (``audio_ms``: audio received)."""
        return CostReport(self.cost_model, self.step_costs, self.frame_shift_ms,
                          float(audio_ms), tuple(self._records))
