"""Log-mel front end of the NEP golden model: 16 kHz mono audio -> int8 encoder frames.

Chain (normative description and defaults in ``docs/frontend.md``)::

    x -> pre-emphasis -> 25 ms Hann frames every 10 ms -> |FFT 512|^2 -> HTK mel (40)
      -> log with floor -> int8 (threshold table) -> stack 3, keep every 3rd -> (T, 120)

Two paths compute the same features: :func:`features` / :class:`Frontend` (the integer
path, bit-exact and independent of how the audio is chunked) and :func:`logmel_float`
(a plain floating-point reference). The integer path decides each int8 value by comparing
the mel energy against a fixed per-config table of 255 thresholds instead of taking a
floating-point log, so the result does not depend on the libm / SIMD ``log`` in use; and
it sums the mel bands with elementwise operations in a fixed order instead of a BLAS
product whose rounding may depend on the batch shape. Each frame's integers therefore
depend only on that frame's samples.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .wav import WavSource, load_audio

INT8_MIN, INT8_MAX = -128, 127

_INT_FIELDS = ("sample_rate", "n_fft", "n_mels", "stack", "subsample")
_FLOAT_FIELDS = ("win_ms", "hop_ms", "fmin", "fmax", "preemphasis", "log_floor",
                 "feature_scale", "feature_offset")


def _ms_to_samples(name: str, ms: float, sample_rate: int) -> int:
    n = ms * sample_rate / 1000.0
    if abs(n - round(n)) > 1e-9 or round(n) < 1:
        raise ValueError(
            f"FrontendConfig.{name}={ms!r} ms at sample_rate={sample_rate} Hz gives {n!r} "
            "samples; it must be a whole number >= 1")
    return int(round(n))


@dataclass(frozen=True, kw_only=True)
class FrontendConfig:
    """Front-end settings; all arguments are keyword-only and validated on construction.

    Attributes
    ----------
    sample_rate : int
        Input sample rate in Hz (default 16000).
    win_ms, hop_ms : float
        Analysis window length and shift in ms (defaults 25, 10); each must be a whole
        number of samples, with ``0 < hop <= win``.
    n_fft : int
        FFT size, a power of two ``>=`` the window length (default 512).
    n_mels : int
        Number of mel bands (default 40).
    fmin, fmax : float
        Mel filterbank edges in Hz, ``0 <= fmin < fmax <= sample_rate / 2``
        (defaults 20, 8000).
    preemphasis : float
        Coefficient ``a`` of ``y[n] = x[n] - a * x[n-1]`` (``x[-1] = 0``), in ``[0, 1)``;
        0 disables it (default 0.97).
    log_floor : float
        Floor of the natural-log mel energy, within -700..700 (default -21.0).
    stack, subsample : int
        Encoder frame ``t`` concatenates mel frames ``t*subsample .. t*subsample+stack-1``
        (defaults 3, 3: 30 ms encoder frames of dimension 120).
    feature_scale, feature_offset : float
        int8 quantization ``q = clip(round_half_up((logmel - feature_offset) /
        feature_scale), -128, 127)`` (defaults 0.125, -5.0: int8 covers log-mel
        values ``-21.0 .. 10.875``, so the default floor is ``q = -128``).
    """

    sample_rate: int = 16000
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 8000.0
    preemphasis: float = 0.97
    log_floor: float = -21.0
    stack: int = 3
    subsample: int = 3
    feature_scale: float = 0.125
    feature_offset: float = -5.0

    def __post_init__(self) -> None:
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"FrontendConfig.{name} must be an int, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer,
                                                                 np.floating)) \
                    or not math.isfinite(value):
                raise ValueError(
                    f"FrontendConfig.{name} must be a finite number, got {value!r}")
            # Normalize to float so to_dict() / equality do not depend on 25 vs 25.0.
            object.__setattr__(self, name, float(value))
        for name in ("sample_rate", "n_mels", "stack", "subsample"):
            if getattr(self, name) < 1:
                raise ValueError(f"FrontendConfig.{name} must be >= 1, got {getattr(self, name)}")
        win = _ms_to_samples("win_ms", self.win_ms, self.sample_rate)
        hop = _ms_to_samples("hop_ms", self.hop_ms, self.sample_rate)
        if hop > win:
            raise ValueError(
                f"FrontendConfig.hop_ms ({self.hop_ms} ms) must not exceed win_ms "
                f"({self.win_ms} ms): samples between windows would be ignored")
        if self.n_fft < win or self.n_fft & (self.n_fft - 1):
            raise ValueError(
                f"FrontendConfig.n_fft must be a power of two >= the window length "
                f"({win} samples), got {self.n_fft}")
        nyquist = self.sample_rate / 2.0
        if not 0.0 <= self.fmin < self.fmax <= nyquist:
            raise ValueError(
                f"FrontendConfig needs 0 <= fmin < fmax <= sample_rate / 2 = {nyquist} Hz, "
                f"got fmin={self.fmin}, fmax={self.fmax}")
        if not 0.0 <= self.preemphasis < 1.0:
            raise ValueError(
                f"FrontendConfig.preemphasis must be in [0, 1), got {self.preemphasis}")
        if not -700.0 <= self.log_floor <= 700.0:
            raise ValueError(
                f"FrontendConfig.log_floor must be within -700..700 (natural log), "
                f"got {self.log_floor}")
        if self.feature_scale <= 0.0:
            raise ValueError(
                f"FrontendConfig.feature_scale must be > 0, got {self.feature_scale}")
        _tables(self)  # checks the mel filterbank and the quantization thresholds

    # --- derived sizes -------------------------------------------------------------
    @property
    def win_length(self) -> int:
        """Analysis window length in samples (400 by default)."""
        return int(round(self.win_ms * self.sample_rate / 1000.0))

    @property
    def hop_length(self) -> int:
        """Mel frame shift in samples (160 by default)."""
        return int(round(self.hop_ms * self.sample_rate / 1000.0))

    @property
    def n_bins(self) -> int:
        """Number of one-sided FFT bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    @property
    def feature_dim(self) -> int:
        """Encoder feature dimension, ``stack * n_mels`` (120 by default)."""
        return self.stack * self.n_mels

    @property
    def frame_shift_ms(self) -> float:
        """Encoder frame period in ms, ``subsample * hop_ms`` (30 by default)."""
        return self.subsample * self.hop_ms

    @property
    def encoder_stride(self) -> int:
        """Encoder frame period in samples, ``subsample * hop_length`` (480)."""
        return self.subsample * self.hop_length

    @property
    def encoder_window(self) -> int:
        """Samples one encoder frame depends on, ``(stack-1)*hop + win`` (720)."""
        return (self.stack - 1) * self.hop_length + self.win_length

    def frame_span(self, t: int) -> tuple[int, int]:
        """Sample range ``[start, stop)`` read by encoder frame ``t``.

        ``start = t * encoder_stride``, ``stop = start + encoder_window``. Pre-emphasis
        also reads sample ``start - 1`` (zero for ``t = 0``).
        """
        t = _check_index(t)
        start = t * self.encoder_stride
        return start, start + self.encoder_window

    def frame_time_ms(self, t: int) -> float:
        """Time of encoder frame ``t`` in ms: the start of its span, ``t * frame_shift_ms``."""
        return 1000.0 * self.frame_span(t)[0] / self.sample_rate

    def num_frames(self, n_samples: int) -> int:
        """Encoder frames produced for ``n_samples`` of audio (tail zero-padded).

        0 for no audio, otherwise the smallest ``T >= 1`` whose last frame reaches the
        last sample: ``1 + ceil(max(0, n_samples - encoder_window) / encoder_stride)``.
        """
        n = _check_index(n_samples)
        if n == 0:
            return 0
        return 1 + -(-max(0, n - self.encoder_window) // self.encoder_stride)

    # --- serialization -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-serializable dict (ints and floats)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FrontendConfig:
        """Build a config from a mapping; missing keys take their defaults.

        Raises
        ------
        ValueError
            If ``d`` is not a mapping, has unknown keys, or a value is invalid.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"FrontendConfig.from_dict expects a mapping, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(map(repr, set(d) - set(known)))
        if unknown:
            raise ValueError(
                f"unknown FrontendConfig key(s): {', '.join(unknown)}; "
                f"valid keys: {', '.join(known)}")
        return cls(**d)


def _check_index(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"expected a non-negative integer, got {n!r}")
    return int(n)


# --- per-config constant tables -----------------------------------------------------------
def hz_to_mel(f):
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    """Inverse of :func:`hz_to_mel`: ``700 * (10**(m / 2595) - 1)``."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


class _Tables(NamedTuple):
    window: np.ndarray  # (win,) periodic Hann
    filterbank: np.ndarray  # (n_mels, n_bins) triangle weights
    band_bins: np.ndarray  # (J, n_mels) FFT bin read by step j of band m
    band_weights: np.ndarray  # (J, n_mels) its weight (0 past the band's last bin)
    thresholds: np.ndarray  # (255,) mel energy where q steps from k-1 to k
    energy_floor: float  # exp(log_floor)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@lru_cache(maxsize=16)
def _tables(cfg: FrontendConfig) -> _Tables:
    win = cfg.win_length
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win) / win)
    edges = mel_to_hz(np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    # Exact outer edges: the mel round trip is off by ~1e-12 Hz, which would leave a
    # 1e-15 weight on the bin at fmax.
    edges[0], edges[-1] = cfg.fmin, cfg.fmax
    freqs = np.arange(cfg.n_bins) * cfg.sample_rate / cfg.n_fft
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    empty = np.flatnonzero(~fb.any(axis=1))
    if empty.size:
        raise ValueError(
            f"FrontendConfig: mel band {empty[0]} ({edges[empty[0]]:.1f}-"
            f"{edges[empty[0] + 2]:.1f} Hz) contains no FFT bin; use fewer n_mels "
            f"({cfg.n_mels}), a larger n_fft ({cfg.n_fft}) or a wider fmin..fmax")
    # Each triangle covers a contiguous run of bins: store it as (first bin + j, weight).
    first = np.argmax(fb > 0, axis=1)
    last = cfg.n_bins - 1 - np.argmax(fb[:, ::-1] > 0, axis=1)
    steps = np.arange(int((last - first).max()) + 1)[:, None]
    bins = np.minimum(first + steps, cfg.n_bins - 1)
    weights = np.where(first + steps <= last, fb[np.arange(cfg.n_mels), bins], 0.0)
    # q = k for log-mel in [offset + (k-1/2)*scale, offset + (k+1/2)*scale): 255 boundaries.
    exponents = [cfg.feature_offset + (k + 0.5) * cfg.feature_scale
                 for k in range(INT8_MIN, INT8_MAX)]
    bad_range = ValueError(
        "FrontendConfig: the int8 steps feature_offset + (k +- 1/2) * feature_scale must "
        "be distinct natural-log values within -700..700, got "
        f"feature_offset={cfg.feature_offset}, feature_scale={cfg.feature_scale}")
    if not -700.0 <= exponents[0] <= exponents[-1] <= 700.0:
        raise bad_range
    thresholds = np.array([math.exp(e) for e in exponents])
    if not np.all(np.diff(thresholds) > 0):
        raise bad_range
    return _Tables(_readonly(window), _readonly(fb), _readonly(bins), _readonly(weights),
                   _readonly(thresholds), math.exp(cfg.log_floor))


def mel_filterbank(cfg: FrontendConfig | None = None) -> np.ndarray:
    """HTK triangular mel filterbank, shape ``(n_mels, n_fft // 2 + 1)``, read-only.

    Band ``m`` rises linearly from ``e[m]`` to 1 at ``e[m+1]`` and falls back to 0 at
    ``e[m+2]``, with ``e = mel_to_hz(linspace(hz_to_mel(fmin), hz_to_mel(fmax),
    n_mels + 2))``, evaluated at bin frequencies ``k * sample_rate / n_fft``; no area
    normalization.
    """
    return _tables(_config(cfg)).filterbank


def hann_window(cfg: FrontendConfig | None = None) -> np.ndarray:
    """Periodic Hann window ``0.5 - 0.5 cos(2 pi n / win)``, read-only."""
    return _tables(_config(cfg)).window


# --- shared processing steps --------------------------------------------------------------
def _config(cfg) -> FrontendConfig:
    if cfg is None:
        return FrontendConfig()
    if not isinstance(cfg, FrontendConfig):
        raise ValueError(f"cfg must be a FrontendConfig or None, got {type(cfg).__name__}")
    return cfg


def _as_samples(samples) -> np.ndarray:
    x = np.asarray(samples)
    if x.dtype.kind in "iub":
        raise ValueError(
            f"samples must be floating point in [-1, 1], got dtype {x.dtype}; convert PCM "
            "with golden.wav.read_wav / load_audio")
    if x.dtype.kind != "f":
        raise ValueError(f"samples must be real floating point, got dtype {x.dtype}")
    if x.ndim != 1:
        raise ValueError(
            f"samples must be 1-D mono audio, got shape {x.shape}; mix down with "
            "golden.wav.to_mono")
    x = x.astype(np.float64, copy=False)
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(f"samples contain NaN or infinity (first at index {bad[0]})")
    return x


def _preemphasize(x: np.ndarray, prev: float, a: float) -> np.ndarray:
    # Elementwise x[n] - (a * x[n-1]): the same two roundings whatever the chunking.
    return x - a * np.concatenate(([prev], x[:-1]))


def _frames(y: np.ndarray, n_mel: int, cfg: FrontendConfig) -> np.ndarray:
    """Rows ``i = 0 .. n_mel-1`` are ``y[i*hop : i*hop + win]`` (a view)."""
    return sliding_window_view(y, cfg.win_length)[::cfg.hop_length][:n_mel]


def _power(frames: np.ndarray, tables: _Tables, cfg: FrontendConfig) -> np.ndarray:
    spec = np.fft.rfft(frames * tables.window, n=cfg.n_fft, axis=-1)
    return spec.real * spec.real + spec.imag * spec.imag


def _quantized_mel(frames: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """int8 log-mel of each row of ``frames`` (rows are processed independently)."""
    t = _tables(cfg)
    power = _power(frames, t, cfg)
    energy = power[:, t.band_bins[0]] * t.band_weights[0]
    for bins, weights in zip(t.band_bins[1:], t.band_weights[1:]):
        energy += power[:, bins] * weights
    np.maximum(energy, t.energy_floor, out=energy)
    q = np.searchsorted(t.thresholds, energy, side="right") + INT8_MIN
    return q.astype(np.int8)


def _stack_index(n_enc: int, cfg: FrontendConfig) -> np.ndarray:
    return np.arange(n_enc)[:, None] * cfg.subsample + np.arange(cfg.stack)


def _encode(y: np.ndarray, n_enc: int, cfg: FrontendConfig) -> np.ndarray:
    """Encoder frames ``0 .. n_enc-1`` of a pre-emphasized segment starting at frame 0."""
    n_mel = (n_enc - 1) * cfg.subsample + cfg.stack
    q = _quantized_mel(_frames(y, n_mel, cfg), cfg)
    return np.ascontiguousarray(q[_stack_index(n_enc, cfg)].reshape(n_enc, cfg.feature_dim))


def _padded(x: np.ndarray, cfg: FrontendConfig) -> tuple[np.ndarray, int]:
    n_enc = cfg.num_frames(len(x))
    length = (n_enc - 1) * cfg.encoder_stride + cfg.encoder_window if n_enc else 0
    return np.concatenate([x, np.zeros(length - len(x))]), n_enc


# --- public API ---------------------------------------------------------------------------
def features(samples, cfg: FrontendConfig | None = None) -> np.ndarray:
    """int8 encoder features of a whole utterance (the integer path).

    Parameters
    ----------
    samples : array_like
        Mono float audio at ``cfg.sample_rate``, nominally in ``[-1, 1]``, shape ``(n,)``.
        ``n = 0`` is allowed.
    cfg : FrontendConfig, optional
        Defaults to ``FrontendConfig()``.

    Returns
    -------
    numpy.ndarray
        int8, shape ``(cfg.num_frames(n), cfg.feature_dim)``; ``(0, feature_dim)`` for
        empty input. The audio is zero-padded at the end so the last frame reaches the
        last sample (see ``docs/frontend.md``, tail policy).
    """
    cfg = _config(cfg)
    x, n_enc = _padded(_as_samples(samples), cfg)
    if n_enc == 0:
        return np.zeros((0, cfg.feature_dim), dtype=np.int8)
    return _encode(_preemphasize(x, 0.0, cfg.preemphasis), n_enc, cfg)


def features_from_wav(source: WavSource, cfg: FrontendConfig | None = None) -> np.ndarray:
    """:func:`features` of a WAV file, mixed down and resampled to ``cfg.sample_rate``.

    Raises
    ------
    golden.wav.WavError
        If the file is malformed, unsupported or empty.
    """
    cfg = _config(cfg)
    return features(load_audio(source, sample_rate=cfg.sample_rate), cfg)


def logmel_float(samples, cfg: FrontendConfig | None = None) -> np.ndarray:
    """Floating-point reference log-mel frames, before quantization and stacking.

    Same framing and tail padding as :func:`features`, computed directly:
    ``max(log(power @ filterbank.T), log_floor)``.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(n_mel, n_mels)`` with ``n_mel = (T-1)*subsample + stack``
        for ``T = cfg.num_frames(n) >= 1`` (0 rows for empty input). Row ``i`` covers
        samples ``[i*hop, i*hop + win)``; ``stack_frames`` of it corresponds to
        ``features``.
    """
    cfg = _config(cfg)
    x, n_enc = _padded(_as_samples(samples), cfg)
    if n_enc == 0:
        return np.zeros((0, cfg.n_mels))
    t = _tables(cfg)
    n_mel = (n_enc - 1) * cfg.subsample + cfg.stack
    y = _preemphasize(x, 0.0, cfg.preemphasis)
    mel = _power(_frames(y, n_mel, cfg), t, cfg) @ t.filterbank.T
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(mel), cfg.log_floor)


def stack_frames(frames, cfg: FrontendConfig | None = None) -> np.ndarray:
    """Stack and subsample per-10 ms frames into encoder frames.

    Row ``t`` of the result is ``concat(frames[t*s], ..., frames[t*s + k - 1])`` with
    ``k = stack``, ``s = subsample``; there are ``(n - k) // s + 1`` rows (0 if
    ``n < k``). Works for float and int arrays of shape ``(n, n_mels)``.
    """
    cfg = _config(cfg)
    a = np.asarray(frames)
    if a.ndim != 2 or a.shape[1] != cfg.n_mels:
        raise ValueError(f"frames must have shape (n, {cfg.n_mels}), got {a.shape}")
    n_enc = 0 if len(a) < cfg.stack else (len(a) - cfg.stack) // cfg.subsample + 1
    return a[_stack_index(n_enc, cfg)].reshape(n_enc, cfg.feature_dim)


def quantize(logmel, cfg: FrontendConfig | None = None) -> np.ndarray:
    """Apply the int8 rule to float log-mel values (the reference form of the rule).

    ``clip(floor((logmel - feature_offset) / feature_scale + 1/2), -128, 127)``. The
    integer path evaluates the same rule with exact threshold comparisons, so the two can
    differ by one only for values within rounding error of a step boundary.
    """
    cfg = _config(cfg)
    x = np.asarray(logmel, dtype=np.float64)
    q = np.floor((x - cfg.feature_offset) / cfg.feature_scale + 0.5)
    return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8)


def dequantize(q, cfg: FrontendConfig | None = None) -> np.ndarray:
    """Log-mel value represented by int8 features: ``q * feature_scale + feature_offset``."""
    cfg = _config(cfg)
    return np.asarray(q, dtype=np.float64) * cfg.feature_scale + cfg.feature_offset


class Frontend:
    """Streaming front end: the output of any chunking equals :func:`features` exactly.

    :meth:`push` returns the encoder frames whose samples have all arrived; :meth:`flush`
    zero-pads the tail exactly as :func:`features` does, returns the remaining frames and
    resets for the next utterance.

    Parameters
    ----------
    cfg : FrontendConfig, optional
        Defaults to ``FrontendConfig()``.
    """

    def __init__(self, cfg: FrontendConfig | None = None) -> None:
        self._cfg = _config(cfg)
        self.reset()

    @property
    def cfg(self) -> FrontendConfig:
        """The configuration."""
        return self._cfg

    @property
    def frames_emitted(self) -> int:
        """Encoder frames returned so far in this utterance (index of the next one)."""
        return self._next_t

    def reset(self) -> None:
        """Drop all buffered audio and start a new utterance."""
        self._buf = np.zeros(0)  # pre-emphasized samples, absolute indices [_buf_start, ...)
        self._buf_start = 0
        self._n_seen = 0
        self._prev = 0.0  # last raw sample, for pre-emphasis across chunks
        self._next_t = 0

    def push(self, samples) -> np.ndarray:
        """Add audio; return the newly complete encoder frames.

        Parameters
        ----------
        samples : array_like
            Next mono float samples, shape ``(n,)``; ``n = 0`` is allowed.

        Returns
        -------
        numpy.ndarray
            int8, shape ``(n_new, feature_dim)``: frames ``frames_emitted ..`` whose span
            (:meth:`FrontendConfig.frame_span`) lies inside the audio received so far.
        """
        x = _as_samples(samples)
        if len(x):
            self._append(_preemphasize(x, self._prev, self._cfg.preemphasis))
            self._prev = float(x[-1])
        cfg = self._cfg
        complete = 0 if self._n_seen < cfg.encoder_window else \
            (self._n_seen - cfg.encoder_window) // cfg.encoder_stride + 1
        return self._emit(complete)

    def flush(self) -> np.ndarray:
        """End the utterance: zero-pad the tail, return the remaining frames, reset.

        Returns
        -------
        numpy.ndarray
            int8, shape ``(n_rest, feature_dim)``; empty if no audio was pushed.
        """
        cfg = self._cfg
        n_enc = cfg.num_frames(self._n_seen)
        if n_enc > self._next_t:
            pad = (n_enc - 1) * cfg.encoder_stride + cfg.encoder_window - self._n_seen
            self._append(_preemphasize(np.zeros(pad), self._prev, cfg.preemphasis))
        out = self._emit(n_enc)
        self.reset()
        return out

    def _append(self, y: np.ndarray) -> None:
        # Samples before _buf_start belong to no future frame (only when subsample > stack).
        skip = max(0, self._buf_start - self._n_seen)
        self._n_seen += len(y)
        self._buf = np.concatenate([self._buf, y[skip:]])

    def _emit(self, end: int) -> np.ndarray:
        cfg = self._cfg
        if end <= self._next_t:
            return np.zeros((0, cfg.feature_dim), dtype=np.int8)
        offset = self._next_t * cfg.encoder_stride - self._buf_start
        out = _encode(self._buf[offset:], end - self._next_t, cfg)
        self._next_t = end
        keep = end * cfg.encoder_stride  # first sample of the next frame
        self._buf = self._buf[max(0, keep - self._buf_start):].copy()
        self._buf_start = keep
        return out
