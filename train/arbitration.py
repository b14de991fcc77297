"""Training the arbitrator: the soft branch gate, the device cost model, the penalties.

The gate of frame ``t`` is the slow branch's weight ``g_t``. While training it is a
Gumbel-sigmoid (logistic-noise) sample ``sigmoid((l_slow - l_fast + noise) / tau)``:
the noise makes both branches run, and resume, at random as the amortized training
recipe asks; the temperature ``tau`` is annealed over epochs so the choices become near
binary (:meth:`GateSchedule.annealed`), and in the hard phase the forward pass uses the
binary choice ``l_slow - l_fast + noise > 0`` with the soft gate's gradient
(straight-through).
Evaluation uses golden's rule, ``SLOW iff l_slow > l_fast``.

The backlog is simulated as ``golden.arbitration`` computes it (one server working
through frames in order), with the soft gate's expected cost::

    start_t   = max(ready_t, finish_{t-1})
    backlog_t = (min(start_t, end) - ready_t) / frame_shift_ms     (frames)
    cost_t    = arbitrate + fast + g_t (slow - fast) + r (predictor + joint) + joint
    finish_t  = start_t + 1000 cost_t / speed

with ``r`` the utterance's tokens per frame (the greedy decoder's calls per frame: one
joint call per emitted token plus one for the blank, one predictor call per token).

Two penalties shape the choices (per frame, averaged over real frames):

* compute: ``g_t * (slow - fast) / slow``: the slow branch's extra work;
* amortization (the seed's L_amr): ``(1 - g_t) * relu(1 - backlog_t / free_backlog)``:
  routing a frame to the fast branch when there is no significant backlog. Compute is
  spent while it is free and saved while a backlog builds, so the end of speech finds
  little backlog (low latency, not only low average cost).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from golden.backend import STEP_LAYERS
from golden.frontend import FrontendConfig
from golden.model import ModelConfig, layer_specs

__all__ = [
    "DeviceCost",
    "GateSchedule",
    "amortization_penalty",
    "compute_penalty",
    "gate",
]

@dataclass(frozen=True, kw_only=True)
class DeviceCost:
    """Per-call MACs and the simulated device's speed.

    Parameters
    ----------
    macs : dict of str -> float
        MACs per call of each step of ``golden.backend.STEPS``.
    speed : float
        MACs per second.
    frontend : FrontendConfig
        Gives the frame shift and when each frame's audio has arrived.
    """

    macs: dict
    speed: float
    frontend: FrontendConfig

    def __post_init__(self):
        if set(self.macs) != set(STEP_LAYERS):
            raise ValueError(f"DeviceCost.macs keys {sorted(self.macs)} differ from "
                             f"{sorted(STEP_LAYERS)}")
        if not (isinstance(self.speed, (int, float)) and math.isfinite(self.speed)
                and self.speed > 0):
            raise ValueError(f"DeviceCost.speed must be a positive number, got {self.speed!r}")

    @classmethod
    def for_model(cls, config: ModelConfig, *, sparsity: float, speed: float,
                  frontend: FrontendConfig | None = None) -> DeviceCost:
        """Costs of ``config`` with a fraction ``sparsity`` of every matrix pruned."""
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
        specs = layer_specs(config)
        macs = {step: (1.0 - sparsity) * sum(specs[n].rows * specs[n].cols for n in layers)
                for step, layers in STEP_LAYERS.items()}
        return cls(macs=macs, speed=float(speed),
                   frontend=frontend if frontend is not None else FrontendConfig())

    @property
    def frame_shift_ms(self) -> float:
        return self.frontend.frame_shift_ms

    @property
    def fast_saving(self) -> float:
        """Fraction of a slow encoder step the fast one saves."""
        return 1.0 - self.macs["encoder_fast"] / self.macs["encoder_slow"]

    def ready_ms(self, num_frames: int, device=None) -> torch.Tensor:
        """When each frame's audio has arrived (the last sample of its span), in ms."""
        fe = self.frontend
        t = torch.arange(num_frames, device=device, dtype=torch.float32)
        return (t * fe.encoder_stride + fe.encoder_window) * (1000.0 / fe.sample_rate)

    def frame_macs(self, g: torch.Tensor, tokens_per_frame: torch.Tensor) -> torch.Tensor:
        """Expected MACs of a frame with slow weight ``g`` and the decoder's share."""
        m = self.macs
        return (m["arbitrate"] + m["encoder_fast"] + g * (m["encoder_slow"] - m["encoder_fast"])
                + tokens_per_frame * (m["predictor"] + m["joint"]) + m["joint"])

    def always_slow_load(self, tokens_per_frame: float) -> float:
        """Device time over audio time when every frame takes the slow branch."""
        t = torch.tensor(float(tokens_per_frame))
        ms = float(self.frame_macs(torch.tensor(1.0), t)) * 1000.0 / self.speed
        return ms / self.frame_shift_ms


@dataclass(frozen=True, kw_only=True)
class GateSchedule:
    """How the branch gate behaves in one forward pass.

    Parameters
    ----------
    temperature : float
        Divides the logit difference (lower: nearer binary).
    noise : float
        Scale of the logistic noise added to the logit difference (0: none).
    hard : bool
        Binary forward values with the soft gradient (straight-through).
    force : int or None
        0 or 1 sends every frame to the fast or slow branch (no arbitrator).
    """

    temperature: float = 1.0
    noise: float = 1.0
    hard: bool = False
    force: int | None = None

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"GateSchedule.temperature must be > 0, got {self.temperature!r}")
        if not self.noise >= 0:
            raise ValueError(f"GateSchedule.noise must be >= 0, got {self.noise!r}")
        if self.force not in (None, 0, 1):
            raise ValueError(f"GateSchedule.force must be None, 0 or 1, got {self.force!r}")

    @classmethod
    def evaluation(cls) -> GateSchedule:
        """Golden's rule: slow iff the slow logit is strictly larger."""
        return cls(temperature=1.0, noise=0.0, hard=True)

    @classmethod
    def annealed(cls, progress: float, *, start: float = 2.0, end: float = 0.05,
                 hard_from: float = 0.75) -> GateSchedule:
        """Schedule at ``progress`` (0..1) of training: temperature decays geometrically
        from ``start`` to ``end``; hard (straight-through) from ``hard_from`` on. The
        noise scale is ``min(1, tau)``, so below ``tau = 1`` the gate is
        ``sigmoid(delta / tau + L)``: the probability of choosing slow,
        ``sigmoid(delta / tau)``, sharpens as ``tau`` falls."""
        p = min(max(float(progress), 0.0), 1.0)
        tau = start * (end / start) ** p
        return cls(temperature=tau, noise=min(1.0, tau), hard=p >= hard_from)


def gate(delta: torch.Tensor, schedule: GateSchedule,
         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Slow-branch weight of each frame from ``delta = l_slow - l_fast``.

    Returns
    -------
    g : torch.Tensor
        The gate used in the forward pass.
    p : torch.Tensor
        ``sigmoid(delta)``: the arbitrator's noiseless slow probability.
    """
    p = torch.sigmoid(delta)
    if schedule.force is not None:
        return torch.full_like(delta, float(schedule.force)), p
    z = delta
    if schedule.noise > 0:
        u = torch.rand(delta.shape, generator=generator, device=delta.device)
        u = u.clamp(1e-6, 1 - 1e-6)
        z = z + schedule.noise * (torch.log(u) - torch.log1p(-u))
    soft = torch.sigmoid(z / schedule.temperature)
    if not schedule.hard:
        return soft, p
    hard = (z > 0).to(delta.dtype)
    if not torch.is_grad_enabled():
        return hard, p  # exactly 0 or 1: the skipped branch's state is carried over exactly
    # Straight-through: the forward value is the binary choice (to within a rounding of
    # the soft value, < 1e-7), the gradient the soft gate's.
    return hard + soft - soft.detach(), p


def compute_penalty(g: torch.Tensor, mask: torch.Tensor, cost: DeviceCost) -> torch.Tensor:
    """Mean extra work of the slow branch over real frames, in slow-frame units."""
    return (g * cost.fast_saving * mask).sum() / mask.sum()


def amortization_penalty(g: torch.Tensor, backlog: torch.Tensor, mask: torch.Tensor, *,
                         free_backlog: float) -> torch.Tensor:
    """Mean weight of fast frames taken without a significant backlog (``< free_backlog``)."""
    if not free_backlog > 0:
        raise ValueError(f"free_backlog must be > 0 frames, got {free_backlog!r}")
    idle = torch.relu(1.0 - backlog / free_backlog)
    return ((1.0 - g) * idle * mask).sum() / mask.sum()
