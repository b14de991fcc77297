"""Quantization-aware training and gradual magnitude pruning, as golden quantizes.

``golden.quantize`` quantizes a matrix layer by folding each column's input scale into
the weights, ``A = W * s_in``, pruning the smallest ``|A|`` of the matrix, and rounding
``A`` per row to ``round(A / s[r])`` with ``s[r] = max_j |A[r, j]| / qmax`` (int4: qmax
7, half away from zero). :meth:`Compression.fake_quant` does exactly that to the float
weights in the forward pass and passes the gradient straight through (STE), so training
sees the rounding the deployed model will have, including the coarse steps of columns
whose input scale is small next to the row's largest.

Input scales come from running ranges of the activations seen in training
(:meth:`Compression.observe`, ``max |x| / 127`` as golden's max-abs calibration) and the
fixed ones (features: the front end's scale; backlog: 1; tanh joint: 2**-7).

Pruning (:meth:`Compression.prune`) ranks by ``|A|`` too, matrix by matrix, and only
grows the masks; :func:`cubic_sparsity` is the gradual schedule
``s_t = s_f (1 - (1 - progress)^3)`` (Zhu and Gupta, 2017).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from golden.frontend import FrontendConfig
from golden.model import BACKLOG_SCALE, TANH_INT8_SCALE, ModelConfig, layer_specs

__all__ = ["INT4_QMAX", "Compression", "cubic_sparsity", "round_half_away"]

#: Largest int4 magnitude golden uses (symmetric -7..7).
INT4_QMAX = 7
#: Momentum of the running activation ranges.
RANGE_MOMENTUM = 0.9
#: Activations whose range is tracked (the others have fixed scales).
TRACKED = ("arb.hidden", "fast.lstm", "slow.lstm1", "slow.lstm2", "enc", "pred.lstm",
           "pred.embed")


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest, halves away from zero (``golden.quantize.round_half_away``)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def cubic_sparsity(step: int, *, target: float, start: int, end: int) -> float:
    """Sparsity at ``step``: 0 before ``start``, ``target`` from ``end``, cubic between."""
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity must be in [0, 1), got {target!r}")
    if end <= start:
        raise ValueError(f"pruning must end after it starts, got start {start}, end {end}")
    p = min(max((step - start) / (end - start), 0.0), 1.0)
    return target * (1.0 - (1.0 - p) ** 3)


def _key(name: str) -> str:
    return name.replace(".", "__")


class Compression(nn.Module):
    """Pruning masks, activation ranges and the fake-quantization switch of a model.

    Parameters
    ----------
    config : ModelConfig
        The model's config; ``config.frontend`` gives the feature scale.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.specs = layer_specs(config)
        self.feature_scale = FrontendConfig.from_dict(config.frontend).feature_scale
        self.tanh_joint = config.joint_activation == "tanh"
        for s in self.specs.values():
            self.register_buffer(f"mask__{_key(s.name)}", torch.ones(s.rows, s.cols))
        for name in TRACKED:
            self.register_buffer(f"range__{_key(name)}", torch.tensor(1.0))
        # 0: float training; INT4_QMAX: 4-bit fake quantization (kept in checkpoints).
        self.register_buffer("qmax", torch.tensor(0))

    def mask(self, name: str) -> torch.Tensor:
        return getattr(self, f"mask__{_key(name)}")

    def range(self, name: str) -> torch.Tensor:
        return getattr(self, f"range__{_key(name)}")

    @property
    def quantizing(self) -> bool:
        return int(self.qmax) > 0

    def enable_quantization(self, qmax: int = INT4_QMAX) -> None:
        """Fake-quantize weights from now on (``qmax`` 7: int4, 127: int8)."""
        if qmax not in (INT4_QMAX, 127):
            raise ValueError(f"qmax must be {INT4_QMAX} (int4) or 127 (int8), got {qmax!r}")
        self.qmax.fill_(qmax)

    @torch.no_grad()
    def observe(self, name: str, x: torch.Tensor) -> None:
        """Update the running range of activation ``name`` (training mode only)."""
        if not self.training or x.numel() == 0:
            return
        r = self.range(name)
        r.mul_(RANGE_MOMENTUM).add_((1.0 - RANGE_MOMENTUM) * x.detach().abs().max())

    @torch.no_grad()
    def observe_table(self, name: str, table: torch.Tensor) -> None:
        """Set the range of ``name`` to a whole table's ``max |x|`` (golden's embedding scale)."""
        self.range(name).fill_(float(table.detach().abs().max()))

    def scale(self, name: str) -> float | torch.Tensor:
        """Real value of one int8 step of activation ``name``, as golden calibrates it."""
        if name == "feature":
            return self.feature_scale
        if name == "backlog":
            return BACKLOG_SCALE
        if name == "joint.hidden" and self.tanh_joint:
            return TANH_INT8_SCALE
        return self.range(name).clamp(min=1e-3) / 127.0

    def input_scales(self, name: str, device=None) -> torch.Tensor:
        """Scale of the input feeding each column of layer ``name``."""
        parts = [torch.as_tensor(self.scale(src), dtype=torch.float32, device=device).expand(n)
                 for src, n in self.specs[name].inputs]
        return torch.cat(parts)

    def fake_quant(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """``w`` rounded as golden's per-row quantizer would, with a straight-through gradient."""
        qmax = int(self.qmax)
        if qmax == 0:
            return w
        with torch.no_grad():
            s_in = self.input_scales(name, w.device)
            a = w * s_in
            s_row = a.abs().amax(dim=1, keepdim=True) / qmax
            safe = torch.where(s_row > 0, s_row, torch.ones_like(s_row))
            wq = round_half_away(a / safe).clamp(-qmax, qmax) * safe / s_in
        return w + (wq - w).detach()

    @torch.no_grad()
    def prune(self, weights: dict[str, torch.Tensor], sparsity: float) -> None:
        """Grow each layer's mask to zero ``round(sparsity * size)`` weights of smallest ``|A|``.

        Parameters
        ----------
        weights : dict of str -> torch.Tensor
            Current effective (masked) weights of every layer, by golden name.
        sparsity : float
        """
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
        for name, s in self.specs.items():
            mask = self.mask(name)
            k = int(math.floor(sparsity * mask.numel() + 0.5))
            if k <= int((mask == 0).sum()):
                continue
            a = (weights[name] * mask * self.input_scales(name, mask.device)).abs().reshape(-1)
            order = torch.argsort(a, stable=True)
            flat = mask.reshape(-1)
            flat[order[:k]] = 0.0

    def sparsity(self) -> float:
        """Fraction of all matrix weights currently pruned."""
        total = sum(self.mask(n).numel() for n in self.specs)
        zero = sum(int((self.mask(n) == 0).sum()) for n in self.specs)
        return zero / total
