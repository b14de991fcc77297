"""Feature augmentation for training: mel-axis warping and SpecAugment masks.

The held-out voices differ from the training voices mostly in their formant positions
(vocal tract length) and timbre, so a batch's features are, per utterance:

* **warped** along the mel axis by a factor ``alpha`` drawn from ``U(1 - warp, 1 + warp)``
  (vocal tract length perturbation): band ``m`` takes the value at ``m * alpha`` of the
  original, linearly interpolated and clamped at the edges, the same in each stacked
  copy of the encoder frame;
* **masked** (SpecAugment): ``freq_masks`` runs of up to ``freq_width`` mel bands (the
  same bands in every stacked copy) and ``time_masks`` runs of up to ``time_width``
  encoder frames inside the utterance are set to the training set's feature mean, which
  the model's input normalization maps to zero;
* **rounded back to the int8 feature grid** (``feature_scale`` steps, -128..127), so the
  model trains on values the deployed front end can produce.

Padding frames stay zero. Everything is drawn from the caller's ``torch.Generator``, so a
seeded run repeats itself (and resumes bit-identically).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Augment", "extend_tails", "require_count"]


def require_count(label: str, value, minimum: int = 0) -> None:
    """Raise ValueError naming ``label`` unless ``value`` is an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{label} must be an int >= {minimum}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Augment:
    """Per-utterance feature augmentation (see the module docstring).

    Parameters
    ----------
    warp : float
        Largest relative stretch of the mel axis (0 disables warping), below 0.5.
    freq_masks, freq_width : int
        Number of mel-band masks and their largest width in bands.
    time_masks, time_width : int
        Number of time masks and their largest width in encoder frames.
    """

    warp: float = 0.1
    freq_masks: int = 2
    freq_width: int = 5
    time_masks: int = 2
    time_width: int = 3

    def __post_init__(self):
        if not 0.0 <= self.warp < 0.5:
            raise ValueError(f"Augment.warp must be in [0, 0.5), got {self.warp!r}")
        for name in ("freq_masks", "freq_width", "time_masks", "time_width"):
            require_count(f"Augment.{name}", getattr(self, name))

    def __call__(self, feats: torch.Tensor, lengths: torch.Tensor, *, n_mels: int,
                 fill: torch.Tensor, scale: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Augmented copy of ``feats``.

        Parameters
        ----------
        feats : torch.Tensor
            ``[B, T, stack * n_mels]`` real-valued features (stacked copies of ``n_mels``
            bands, zero padded past ``lengths``).
        lengths : torch.Tensor
            ``[B]`` frames per utterance.
        n_mels : int
            Mel bands per stacked copy.
        fill : torch.Tensor
            ``[stack * n_mels]`` value of masked features (the training set's mean).
        scale : float
            The front end's ``feature_scale`` (int8 grid step).
        generator : torch.Generator, optional
        """
        bsz, t_max, f = feats.shape
        if f % n_mels:
            raise ValueError(f"feature width {f} is not a multiple of n_mels {n_mels}")
        stack = f // n_mels
        x = feats.reshape(bsz, t_max, stack, n_mels)
        if self.warp > 0:
            u = torch.rand(bsz, generator=generator)
            alpha = 1.0 + self.warp * (2.0 * u - 1.0)
            pos = (torch.arange(n_mels, dtype=feats.dtype)[None, :] * alpha[:, None]) \
                .clamp(0, n_mels - 1)  # [B, M]
            lo = pos.floor().long()
            hi = (lo + 1).clamp(max=n_mels - 1)
            w = (pos - lo).to(feats.dtype)[:, None, None, :]
            shape = (bsz, t_max, stack, n_mels)
            x = (x.gather(3, lo[:, None, None, :].expand(shape)) * (1 - w)
                 + x.gather(3, hi[:, None, None, :].expand(shape)) * w)
        fill = fill.reshape(stack, n_mels).to(feats.dtype)
        masked = torch.zeros(bsz, t_max, 1, n_mels, dtype=torch.bool)
        bands = torch.arange(n_mels)
        frames = torch.arange(t_max)
        for _ in range(self.freq_masks):
            width = torch.randint(0, self.freq_width + 1, (bsz,), generator=generator)
            start = (torch.rand(bsz, generator=generator) * (n_mels - width + 1)).long()
            hit = (bands[None] >= start[:, None]) & (bands[None] < (start + width)[:, None])
            masked |= hit[:, None, None, :]
        for _ in range(self.time_masks):
            width = torch.randint(0, self.time_width + 1, (bsz,), generator=generator)
            width = torch.minimum(width, lengths // 10)  # at most a tenth of the utterance
            start = (torch.rand(bsz, generator=generator) * (lengths - width + 1)).long()
            hit = (frames[None] >= start[:, None]) & (frames[None] < (start + width)[:, None])
            masked |= hit[:, :, None, None]
        x = torch.where(masked, fill[None, None], x)
        x = (torch.round(x / scale).clamp(-128, 127) * scale).reshape(bsz, t_max, f)
        real = (frames[None] < lengths[:, None])[:, :, None]
        return torch.where(real, x, torch.zeros_like(x))


def extend_tails(feats: torch.Tensor, lengths: torch.Tensor, *, frames: int, source: int = 5,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Append up to ``frames`` frames of each utterance's trailing background.

    The last ``source`` frames (non-speech: every data-set utterance ends in at least
    0.1 s of silence) are repeated alternately reversed and forward, as
    ``sim.accuracy.extend_background`` does with the audio, for ``U{0..frames}`` frames
    per utterance. The transcript is unchanged. Training utterances end within a second
    of speech; a device listens on until its end-pointer fires, so the arbitrator must
    learn what long non-speech tails cost.

    Returns
    -------
    feats, lengths : torch.Tensor
        ``[B, T', F]`` (zero padded) and ``[B]``.
    """
    require_count("frames", frames)
    require_count("source", source, 1)
    extra = torch.randint(0, frames + 1, (len(lengths),), generator=generator)
    new_lengths = lengths + extra
    bsz, _, f = feats.shape
    t_new = int(new_lengths.max())
    out = feats.new_zeros(bsz, t_new, f)
    for b in range(bsz):
        n, e = int(lengths[b]), int(extra[b])
        out[b, :n] = feats[b, :n]
        if e:
            k = min(source, n)
            p = torch.arange(e) % (2 * k)
            idx = torch.where(p < k, n - 1 - p, n - 2 * k + p)
            out[b, n:n + e] = feats[b, idx]
    return out, new_lengths
