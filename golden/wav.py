"""WAV input/output and sample-rate conversion for the NEP golden front end.

A small, strict RIFF/WAVE reader (the standard ``wave`` module has no IEEE float support),
a 16-bit PCM writer, channel mixdown and a windowed-sinc polyphase resampler. Everything
that is wrong with a file raises :class:`WavError` with a message saying what is wrong.
Behaviour is specified in ``docs/frontend.md`` ("Audio input").
"""

from __future__ import annotations

import math
import os
import struct
from functools import lru_cache
from typing import NamedTuple, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

#: Anything :func:`read_wav` accepts: a file path or the file's bytes.
WavSource = Union[str, os.PathLike, bytes, bytearray, memoryview]

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE

# Names of common codes we do not decode, so the error says what the file actually is.
_FORMAT_NAMES = {
    0x0002: "Microsoft ADPCM",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0050: "MPEG",
    0x0055: "MPEG Layer 3",
}
_SUPPORTED_BITS = {WAVE_FORMAT_PCM: (8, 16, 24, 32), WAVE_FORMAT_IEEE_FLOAT: (32, 64)}
# KSDATAFORMAT_SUBTYPE_* GUIDs are the format code followed by these 14 fixed bytes.
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"

#: Resampler design: sinc zero crossings kept on each side, counted at the lower rate.
RESAMPLE_ZERO_CROSSINGS = 64
#: Resampler cutoff as a fraction of the lower rate's Nyquist frequency.
RESAMPLE_ROLLOFF = 0.94
#: Kaiser window shape parameter of the resampler (about 100 dB stop-band attenuation).
RESAMPLE_KAISER_BETA = 10.0
# Output rows per matrix product; bounds the temporary copy of overlapping input windows.
_RESAMPLE_BLOCK = 4096


class WavError(ValueError):
    """A WAV file (or byte string) is malformed, truncated or in an unsupported format."""


class _Format(NamedTuple):
    code: int  # WAVE_FORMAT_PCM or WAVE_FORMAT_IEEE_FLOAT (extensible already resolved)
    channels: int
    sample_rate: int
    bits: int  # container size of one sample
    block_align: int


def read_wav(source: WavSource) -> tuple[np.ndarray, int]:
    """Decode a RIFF/WAVE file.

    Parameters
    ----------
    source : str, os.PathLike, bytes, bytearray or memoryview
        Path of the file, or its complete contents.

    Returns
    -------
    samples : numpy.ndarray
        float64 array of shape ``(n_frames, n_channels)``, values in ``[-1, 1]``. Integer
        PCM of ``b`` bits maps ``v -> v / 2**(b-1)`` (8-bit is unsigned with offset 128);
        IEEE float samples outside ``[-1, 1]`` are clipped.
    sample_rate : int
        Sample rate in Hz as stored in the file.

    Raises
    ------
    WavError
        If the data is not a RIFF/WAVE file, a chunk is truncated, the ``fmt `` or
        ``data`` chunk is missing or inconsistent, the format is unsupported (codes other
        than PCM 8/16/24/32-bit, IEEE float 32/64-bit and WAVE_FORMAT_EXTENSIBLE wrapping
        either), there are zero channels, a zero sample rate, no samples, or non-finite
        float samples.
    OSError
        If ``source`` is a path that cannot be read.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        with open(source, "rb") as f:
            data = f.read()
    fmt_body, data_body = _find_chunks(data)
    fmt = _parse_fmt(fmt_body)
    return _decode(data_body, fmt), fmt.sample_rate


def _find_chunks(data: bytes) -> tuple[bytes, bytes]:
    if len(data) == 0:
        raise WavError("file is empty (0 bytes); expected a RIFF/WAVE header")
    if len(data) < 12:
        raise WavError(f"file too short for a RIFF/WAVE header ({len(data)} bytes < 12)")
    riff_id, riff_size, form = struct.unpack("<4sI4s", data[:12])
    if riff_id == b"RIFX":
        raise WavError("big-endian RIFX files are not supported (only little-endian RIFF)")
    if riff_id == b"RF64":
        raise WavError("RF64 (64-bit RIFF) files are not supported")
    if riff_id != b"RIFF":
        raise WavError(f"not a RIFF file: header starts with {data[:4]!r}, expected b'RIFF'")
    if form != b"WAVE":
        raise WavError(f"RIFF form type is {form!r}, expected b'WAVE'")
    end = 8 + riff_size
    if end > len(data):
        raise WavError(
            f"truncated file: RIFF header declares {end} bytes but the file has {len(data)}")
    chunks: dict[bytes, bytes] = {}
    pos = 12
    while pos < end:
        if end - pos < 8:
            raise WavError(f"truncated chunk header at byte {pos}: {end - pos} bytes left, need 8")
        cid, size = struct.unpack("<4sI", data[pos:pos + 8])
        body_start = pos + 8
        if body_start + size > end:
            raise WavError(
                f"truncated {cid!r} chunk at byte {pos}: declares {size} bytes "
                f"but only {end - body_start} remain")
        if cid in (b"fmt ", b"data"):
            if cid in chunks:
                raise WavError(f"duplicate {cid!r} chunk at byte {pos}")
            chunks[cid] = data[body_start:body_start + size]
        # Chunks are word aligned: an odd-sized body is followed by one pad byte.
        pos = body_start + size + (size & 1)
    if b"fmt " not in chunks:
        raise WavError("no 'fmt ' chunk: cannot tell the sample format")
    if b"data" not in chunks:
        raise WavError("no 'data' chunk: the file holds no audio")
    return chunks[b"fmt "], chunks[b"data"]


def _format_label(code: int) -> str:
    name = _FORMAT_NAMES.get(code)
    return f"0x{code:04X}" + (f" ({name})" if name else "")


def _parse_fmt(body: bytes) -> _Format:
    if len(body) < 16:
        raise WavError(f"'fmt ' chunk too short ({len(body)} bytes < 16)")
    code, channels, rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", body[:16])
    if code == WAVE_FORMAT_EXTENSIBLE:
        if len(body) < 40:
            raise WavError(
                f"WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk too short ({len(body)} bytes < 40)")
        cb_size, valid_bits, _mask = struct.unpack("<HHI", body[16:24])
        guid = body[24:40]
        if cb_size < 22:
            raise WavError(f"WAVE_FORMAT_EXTENSIBLE extension size is {cb_size}, expected >= 22")
        if guid[2:] != _GUID_TAIL:
            raise WavError(f"unsupported WAVE_FORMAT_EXTENSIBLE sub-format GUID {guid.hex()}")
        if valid_bits > bits:
            raise WavError(
                f"WAVE_FORMAT_EXTENSIBLE valid bits ({valid_bits}) exceed the "
                f"{bits}-bit sample container")
        code = struct.unpack("<H", guid[:2])[0]
    if code not in _SUPPORTED_BITS:
        raise WavError(
            f"unsupported format code {_format_label(code)}; supported: 0x0001 (PCM), "
            "0x0003 (IEEE float), 0xFFFE (WAVE_FORMAT_EXTENSIBLE with PCM or float)")
    if channels == 0:
        raise WavError("'fmt ' chunk declares zero channels")
    if rate == 0:
        raise WavError("'fmt ' chunk declares a sample rate of 0 Hz")
    kind = "PCM" if code == WAVE_FORMAT_PCM else "IEEE float"
    if bits not in _SUPPORTED_BITS[code]:
        raise WavError(
            f"unsupported {kind} bit depth {bits} (supported: "
            f"{', '.join(map(str, _SUPPORTED_BITS[code]))})")
    expected_align = channels * bits // 8
    if block_align != expected_align:
        raise WavError(
            f"block_align is {block_align} but {channels} channel(s) x {bits // 8} bytes "
            f"need {expected_align}")
    return _Format(code, channels, rate, bits, block_align)


def _decode(body: bytes, fmt: _Format) -> np.ndarray:
    if len(body) == 0:
        raise WavError("'data' chunk is empty: the file holds no audio samples")
    if len(body) % fmt.block_align:
        raise WavError(
            f"'data' chunk holds {len(body)} bytes, not a whole number of "
            f"{fmt.block_align}-byte sample frames")
    if fmt.code == WAVE_FORMAT_IEEE_FLOAT:
        x = np.frombuffer(body, dtype="<f4" if fmt.bits == 32 else "<f8").astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(x))
        if bad.size:
            raise WavError(
                f"IEEE float data holds a non-finite value (NaN or infinity) at sample "
                f"frame {bad[0] // fmt.channels}")
        x = np.clip(x, -1.0, 1.0)
    elif fmt.bits == 8:
        x = (np.frombuffer(body, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif fmt.bits == 24:
        b = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = ((v ^ 0x800000) - 0x800000).astype(np.float64) / float(1 << 23)  # sign-extend
    else:
        dtype = "<i2" if fmt.bits == 16 else "<i4"
        x = np.frombuffer(body, dtype=dtype).astype(np.float64) / float(1 << (fmt.bits - 1))
    return x.reshape(-1, fmt.channels)


def write_wav(path: str | os.PathLike[str], samples, rate: int) -> None:
    """Write samples as a 16-bit PCM WAV file.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file (overwritten).
    samples : array_like
        Real values, shape ``(n,)`` (mono) or ``(n, n_channels)``. Stored as
        ``clip(rint(x * 32768), -32768, 32767)``, so values ``k / 32768`` round-trip
        exactly through :func:`read_wav`.
    rate : int
        Sample rate in Hz, ``1 .. 2**32 - 1``.

    Raises
    ------
    ValueError
        If ``samples`` is not a finite real 1-D or 2-D array with at least one channel,
        or ``rate`` is not a positive integer.
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) \
            or not 0 < rate < 2**32:
        raise ValueError(f"rate must be an integer in 1..2**32-1 Hz, got {rate!r}")
    x = np.asarray(samples)
    if x.dtype.kind not in "iuf":
        raise ValueError(f"samples must be real numbers, got dtype {x.dtype}")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(
            f"samples must have shape (n,) or (n, n_channels >= 1), got {np.shape(samples)}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("samples contain NaN or infinity")
    pcm = np.clip(np.rint(x * 32768.0), -32768, 32767).astype("<i2").tobytes()
    channels = x.shape[1]
    if channels >= 2**16 or 36 + len(pcm) >= 2**32:
        raise ValueError("too many channels or samples for a RIFF/WAVE file")
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(pcm), b"WAVE", b"fmt ", 16,
        WAVE_FORMAT_PCM, channels, int(rate), int(rate) * channels * 2, channels * 2, 16,
        b"data", len(pcm))
    with open(path, "wb") as f:
        f.write(header + pcm)


def to_mono(samples) -> np.ndarray:
    """Mix multi-channel audio down to mono by averaging the channels.

    Parameters
    ----------
    samples : array_like
        Shape ``(n,)`` (returned as float64 unchanged) or ``(n, n_channels)``.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(n,)``.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        return x
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(
            f"samples must have shape (n,) or (n, n_channels >= 1), got {x.shape}")
    return x.mean(axis=1)


def _check_rate(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer number of Hz, got {value!r}")
    return int(value)


@lru_cache(maxsize=32)
def _polyphase_filter(up: int, down: int) -> tuple[np.ndarray, int]:
    """Kaiser-windowed sinc, one row per output phase ``p / up`` (rows sum to 1)."""
    fc = RESAMPLE_ROLLOFF * min(1.0, up / down) / 2.0  # cutoff, cycles per input sample
    half = RESAMPLE_ZERO_CROSSINGS / (2.0 * fc)  # window half-width in input samples
    k = int(math.floor(half))
    # Output phase p sits at input position base + p/up; it reads inputs base-k .. base+k+1.
    d = (np.arange(up)[:, None] / up) - (np.arange(2 * k + 2)[None, :] - k)
    u = np.clip(d / half, -1.0, 1.0)
    window = np.where(np.abs(d) <= half,
                      np.i0(RESAMPLE_KAISER_BETA * np.sqrt(1.0 - u * u)), 0.0)
    h = 2.0 * fc * np.sinc(2.0 * fc * d) * window
    # Unit DC gain in every phase, so a constant input stays exactly flat.
    h /= h.sum(axis=1, keepdims=True)
    h.setflags(write=False)
    return h, k


def resample(samples, *, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling with a windowed-sinc polyphase filter.

    Output sample ``n`` is the input interpolated at time ``n / new_rate`` (input sample
    ``i`` is at ``i / orig_rate``; outside the input the signal is zero), with a low-pass
    cutoff at :data:`RESAMPLE_ROLLOFF` times the lower Nyquist frequency. Deterministic:
    no state, no randomness.

    Parameters
    ----------
    samples : array_like
        Finite real mono signal, shape ``(n,)``.
    orig_rate, new_rate : int
        Input and output rates in Hz.

    Returns
    -------
    numpy.ndarray
        float64, ``ceil(n * new_rate / orig_rate)`` samples; a copy of the input when the
        rates are equal.
    """
    orig_rate = _check_rate("orig_rate", orig_rate)
    new_rate = _check_rate("new_rate", new_rate)
    x = np.asarray(samples)
    if x.dtype.kind not in "iuf" or x.ndim != 1:
        raise ValueError(
            f"samples must be a 1-D real array (mix down first), got shape {x.shape} "
            f"dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("samples contain NaN or infinity")
    if orig_rate == new_rate:
        return x.copy()
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    n_out = -(-len(x) * up // down)
    y = np.zeros(n_out)
    if n_out == 0:
        return y
    h, k = _polyphase_filter(up, down)
    rows = sliding_window_view(np.concatenate([np.zeros(k), x, np.zeros(k + 1)]), h.shape[1])
    # Outputs n0, n0+up, n0+2*up, ... share one phase and read inputs `down` apart.
    for n0 in range(min(up, n_out)):
        phase, base = (n0 * down) % up, (n0 * down) // up
        count = len(range(n0, n_out, up))
        taps = rows[base::down][:count]
        for j in range(0, count, _RESAMPLE_BLOCK):
            block = taps[j:j + _RESAMPLE_BLOCK]
            y[n0 + j * up: n0 + (j + len(block)) * up: up] = block @ h[phase]
    return y


def load_audio(source: WavSource, *, sample_rate: int = 16000) -> np.ndarray:
    """Read a WAV file as mono float64 at ``sample_rate``.

    Channels are averaged (:func:`to_mono`), then the signal is resampled with
    :func:`resample` if the file's rate differs, then clipped to ``[-1, 1]`` (resampling
    can overshoot slightly near full scale).

    Parameters
    ----------
    source : str, os.PathLike, bytes, bytearray or memoryview
        As for :func:`read_wav`.
    sample_rate : int, keyword-only
        Target rate in Hz (default 16000).

    Returns
    -------
    numpy.ndarray
        float64, shape ``(n,)``, ``n >= 1``.

    Raises
    ------
    WavError
        As :func:`read_wav`.
    """
    sample_rate = _check_rate("sample_rate", sample_rate)
    samples, rate = read_wav(source)
    mono = to_mono(samples)
    if rate == sample_rate:
        return mono
    return np.clip(resample(mono, orig_rate=rate, new_rate=sample_rate), -1.0, 1.0)
