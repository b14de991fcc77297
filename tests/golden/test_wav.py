"""Tests for golden.wav: RIFF parsing, error messages, writing, mixdown, resampling."""

from __future__ import annotations

import math
import os
import struct
import tempfile
import wave

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.wav import (
    WavError,
    load_audio,
    read_wav,
    resample,
    to_mono,
    write_wav,
)

GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


# --- byte-level WAV builders (independent of golden.wav) ----------------------------------
def chunk(cid: bytes, body: bytes) -> bytes:
    return cid + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def fmt_chunk(code=1, channels=1, rate=16000, bits=16, block_align=None, extra=b"") -> bytes:
    align = channels * bits // 8 if block_align is None else block_align
    return chunk(b"fmt ", struct.pack("<HHIIHH", code, channels, rate, rate * align, align,
                                      bits) + extra)


def extensible(sub_code=1, valid_bits=16, cb_size=22, tail=GUID_TAIL, mask=0) -> bytes:
    return struct.pack("<HHIH", cb_size, valid_bits, mask, sub_code) + tail


def riff(*chunks: bytes, riff_id=b"RIFF", form=b"WAVE", size_delta=0) -> bytes:
    body = form + b"".join(chunks)
    return riff_id + struct.pack("<I", len(body) + size_delta) + body


def wav_bytes(data: bytes, **fmt) -> bytes:
    return riff(fmt_chunk(**fmt), chunk(b"data", data))


def tone(freq, rate, n, amp=1.0):
    return amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)


def rms(x):
    return float(np.sqrt(np.mean(np.square(x))))


# --- decoding -----------------------------------------------------------------------------
def test_pcm8_is_unsigned_with_offset_128():
    x, rate = read_wav(wav_bytes(bytes([0, 128, 255, 1]), bits=8, rate=8000))
    assert rate == 8000
    assert x.shape == (4, 1) and x.dtype == np.float64
    np.testing.assert_array_equal(x[:, 0], [-1.0, 0.0, 127 / 128, -127 / 128])


def test_pcm16_values_and_interleaving():
    ints = [-32768, 32767, 0, 1, -1, 16384]
    x, _ = read_wav(wav_bytes(struct.pack("<6h", *ints), channels=3))
    assert x.shape == (2, 3)
    np.testing.assert_array_equal(x, np.array(ints).reshape(2, 3) / 32768.0)


@given(st.lists(st.integers(-(1 << 23), (1 << 23) - 1), min_size=1, max_size=50))
def test_pcm24_sign_extension(values):
    data = b"".join(v.to_bytes(3, "little", signed=True) for v in values)
    x, _ = read_wav(wav_bytes(data, bits=24))
    np.testing.assert_array_equal(x[:, 0], np.array(values) / float(1 << 23))


def test_pcm32_extremes():
    ints = [-(1 << 31), (1 << 31) - 1, 0, -5]
    x, _ = read_wav(wav_bytes(struct.pack("<4i", *ints), bits=32))
    np.testing.assert_array_equal(x[:, 0], np.array(ints) / 2.0**31)


@pytest.mark.parametrize("bits,code", [(32, "<f"), (64, "<d")])
def test_ieee_float_is_read_and_clipped(bits, code):
    values = [0.5, -0.25, 1.5, -2.0, 1.0]
    data = b"".join(struct.pack(code, v) for v in values)
    x, _ = read_wav(wav_bytes(data, code=3, bits=bits))
    np.testing.assert_array_equal(x[:, 0], [0.5, -0.25, 1.0, -1.0, 1.0])


def test_extensible_pcm24_with_20_valid_bits():
    # 20 valid bits are left-justified in the 24-bit container: scale by the container.
    values = [0x7FFFF0, -0x800000, 0x000010]
    data = b"".join(v.to_bytes(3, "little", signed=True) for v in values)
    blob = wav_bytes(data, code=0xFFFE, bits=24, channels=1,
                     extra=extensible(sub_code=1, valid_bits=20, mask=0x4))
    x, rate = read_wav(blob)
    assert rate == 16000
    np.testing.assert_array_equal(x[:, 0], np.array(values) / float(1 << 23))


def test_extensible_float_stereo():
    data = struct.pack("<4f", 0.5, -0.5, 0.25, 0.125)
    blob = wav_bytes(data, code=0xFFFE, bits=32, channels=2,
                     extra=extensible(sub_code=3, valid_bits=32, mask=0x3))
    x, _ = read_wav(blob)
    np.testing.assert_array_equal(x, [[0.5, -0.5], [0.25, 0.125]])


def test_chunk_walking_skips_unknown_chunks_padding_and_trailing_bytes():
    data = bytes([128, 255, 0])  # odd size: followed by a pad byte
    blob = riff(chunk(b"LIST", b"INFOabc"),  # odd-sized unknown chunk before fmt
                chunk(b"data", data), fmt_chunk(bits=8, rate=22050))  # data before fmt
    x, rate = read_wav(blob + b"trailing junk outside the RIFF size")
    assert rate == 22050
    np.testing.assert_array_equal(x[:, 0], [0.0, 127 / 128, -1.0])


def test_reads_from_path(tmp_path):
    path = tmp_path / "a.wav"
    path.write_bytes(wav_bytes(struct.pack("<2h", 100, -100), rate=44100))
    x, rate = read_wav(path)
    assert rate == 44100
    np.testing.assert_array_equal(x[:, 0], [100 / 32768, -100 / 32768])
    x2, _ = read_wav(str(path))
    np.testing.assert_array_equal(x, x2)


PCM1 = struct.pack("<2h", 1, 2)
MALFORMED = {
    "empty file": (b"", r"file is empty \(0 bytes\)"),
    "short header": (b"RIFF\x04\0\0", r"too short for a RIFF/WAVE header \(7 bytes"),
    "not riff": (b"OggS" + bytes(40), r"not a RIFF file: header starts with b'OggS'"),
    "rifx": (riff(riff_id=b"RIFX"), r"big-endian RIFX"),
    "rf64": (riff(riff_id=b"RF64"), r"RF64"),
    "not wave": (riff(form=b"AVI "), r"form type is b'AVI ', expected b'WAVE'"),
    "riff size beyond file": (riff(fmt_chunk(), chunk(b"data", PCM1), size_delta=10),
                              r"truncated file: RIFF header declares 58 bytes but the file "
                              r"has 48"),
    "truncated data chunk": (riff(fmt_chunk(), b"data" + struct.pack("<I", 100) + PCM1),
                             r"truncated b'data' chunk at byte 36: declares 100 bytes but "
                             r"only 4 remain"),
    "truncated chunk header": (riff(fmt_chunk(), chunk(b"data", PCM1), b"LIS"),
                               r"truncated chunk header at byte 48: 3 bytes left"),
    "missing fmt": (riff(chunk(b"data", PCM1)), r"no 'fmt ' chunk"),
    "missing data": (riff(fmt_chunk()), r"no 'data' chunk"),
    "duplicate fmt": (riff(fmt_chunk(), fmt_chunk(), chunk(b"data", PCM1)),
                      r"duplicate b'fmt ' chunk at byte 36"),
    "short fmt": (riff(chunk(b"fmt ", bytes(14)), chunk(b"data", PCM1)),
                  r"'fmt ' chunk too short \(14 bytes < 16\)"),
    "adpcm": (wav_bytes(PCM1, code=2, bits=4, block_align=1),
              r"unsupported format code 0x0002 \(Microsoft ADPCM\); supported: 0x0001 \(PCM\)"),
    "mu-law": (wav_bytes(PCM1, code=7, bits=8), r"unsupported format code 0x0007 \(mu-law\)"),
    "zero channels": (wav_bytes(PCM1, channels=0, block_align=2), r"zero channels"),
    "zero rate": (wav_bytes(PCM1, rate=0), r"sample rate of 0 Hz"),
    "12-bit pcm": (wav_bytes(PCM1, bits=12, block_align=2),
                   r"unsupported PCM bit depth 12 \(supported: 8, 16, 24, 32\)"),
    "16-bit float": (wav_bytes(PCM1, code=3, bits=16),
                     r"unsupported IEEE float bit depth 16 \(supported: 32, 64\)"),
    "block align": (wav_bytes(PCM1, channels=2, block_align=2),
                    r"block_align is 2 but 2 channel\(s\) x 2 bytes need 4"),
    "partial frame": (wav_bytes(PCM1 + b"\x01", channels=1),
                      r"'data' chunk holds 5 bytes, not a whole number of 2-byte"),
    "empty data": (wav_bytes(b""), r"'data' chunk is empty: the file holds no audio samples"),
    "extensible too short": (wav_bytes(PCM1, code=0xFFFE, extra=struct.pack("<H", 0)),
                             r"WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk too short \(18 bytes"),
    "extensible cb size": (wav_bytes(PCM1, code=0xFFFE, extra=extensible(cb_size=10)),
                           r"extension size is 10, expected >= 22"),
    "extensible guid": (wav_bytes(PCM1, code=0xFFFE, extra=extensible(tail=bytes(14))),
                        r"unsupported WAVE_FORMAT_EXTENSIBLE sub-format GUID 0100"),
    "extensible valid bits": (wav_bytes(PCM1, code=0xFFFE, extra=extensible(valid_bits=20)),
                              r"valid bits \(20\) exceed the 16-bit sample container"),
    "extensible adpcm": (wav_bytes(PCM1, code=0xFFFE, extra=extensible(sub_code=2)),
                         r"unsupported format code 0x0002"),
    "float nan": (wav_bytes(struct.pack("<3f", 0.0, 0.5, math.nan), code=3, bits=32),
                  r"non-finite value \(NaN or infinity\) at sample frame 2"),
    "float inf stereo": (wav_bytes(struct.pack("<4d", 0, 0, 0, math.inf), code=3, bits=64,
                                   channels=2),
                         r"non-finite value .* at sample frame 1"),
}


@pytest.mark.parametrize("blob,message", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_files_raise_wav_error_with_reason(blob, message):
    with pytest.raises(WavError, match=message):
        read_wav(blob)


def test_wav_error_is_a_value_error():
    with pytest.raises(ValueError):
        read_wav(b"nope")


def test_load_audio_rejects_empty_data_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(wav_bytes(b""))
    with pytest.raises(WavError, match="holds no audio samples"):
        load_audio(path)


# --- writing ------------------------------------------------------------------------------
@settings(deadline=None, max_examples=40)
@given(st.integers(1, 4), st.integers(1, 40), st.sampled_from([8000, 16000, 44100, 48000]),
       st.randoms(use_true_random=False))
def test_write_read_round_trip_is_exact(channels, n, rate, rnd):
    ints = np.array([[rnd.randint(-32768, 32767) for _ in range(channels)] for _ in range(n)])
    x = ints / 32768.0
    # A fresh directory per example (hypothesis cannot reuse pytest's tmp_path).
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "rt.wav")
        write_wav(path, x, rate)
        y, r = read_wav(path)
    assert r == rate
    np.testing.assert_array_equal(y, x)


def test_written_file_is_standard_pcm16(tmp_path):
    path = tmp_path / "std.wav"
    x = np.array([[0.5, -0.5], [1.0, -1.0], [0.30001, 2.0]])
    write_wav(path, x, 22050)
    # The standard library reader (PCM only) must agree on header and payload.
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == \
            (2, 2, 22050, 3)
        payload = np.frombuffer(w.readframes(3), dtype="<i2").reshape(3, 2)
    # rint(x * 32768), clipped to int16: +1.0 and 2.0 saturate to 32767.
    np.testing.assert_array_equal(payload, [[16384, -16384], [32767, -32768], [9831, 32767]])


def test_write_mono_gives_one_channel(tmp_path):
    path = tmp_path / "m.wav"
    write_wav(path, [0.0, 0.25, -0.25], 16000)
    y, _ = read_wav(path)
    assert y.shape == (3, 1)


@pytest.mark.parametrize("samples,rate,message", [
    ([0.0, math.nan], 16000, "NaN or infinity"),
    ([0.0], 0, r"rate must be an integer in 1\.\.2\*\*32-1"),
    ([0.0], 16000.0, "rate must be an integer"),
    ([0.0], True, "rate must be an integer"),
    (np.zeros((2, 2, 2)), 16000, r"shape \(n,\) or \(n, n_channels >= 1\)"),
    (np.zeros((4, 0)), 16000, r"shape \(n,\) or \(n, n_channels >= 1\)"),
    ([1j], 16000, "real numbers"),
])
def test_write_wav_rejects_bad_input(tmp_path, samples, rate, message):
    with pytest.raises(ValueError, match=message):
        write_wav(tmp_path / "bad.wav", samples, rate)


# --- mixdown ------------------------------------------------------------------------------
def test_stereo_mixdown_averages_channels():
    left, right = tone(440, 16000, 800), tone(1000, 16000, 800, 0.5)
    mono = to_mono(np.stack([left, right], axis=1))
    np.testing.assert_array_equal(mono, (left + right) / 2)
    # Anti-phase channels cancel exactly.
    np.testing.assert_array_equal(to_mono(np.stack([left, -left], axis=1)), np.zeros(800))


def test_mixdown_of_file_with_three_channels(tmp_path):
    path = tmp_path / "3ch.wav"
    x = np.array([[0.25, 0.5, 0.75], [-0.25, 0.0, 1 / 32768]])
    write_wav(path, x, 16000)
    np.testing.assert_allclose(load_audio(path), x.mean(axis=1), rtol=0, atol=1e-15)


def test_to_mono_passthrough_and_errors():
    np.testing.assert_array_equal(to_mono([0.5, -0.5]), [0.5, -0.5])
    with pytest.raises(ValueError, match="n_channels >= 1"):
        to_mono(np.zeros((3, 0)))


# --- resampling ---------------------------------------------------------------------------
def interior(x, margin=1000):
    return x[margin:len(x) - margin]


@pytest.mark.parametrize("orig", [8000, 11025, 22050, 44100, 48000])
@pytest.mark.parametrize("freq", [440.0, 1000.0, 3500.0])
def test_resampled_sine_keeps_frequency_amplitude_and_phase(orig, freq):
    x = tone(freq, orig, orig)  # 1 s
    y = resample(x, orig_rate=orig, new_rate=16000)
    assert len(y) == 16000
    # Sample n of the output is time n / 16000: compare with the ideal 16 kHz sine.
    err = interior(y - tone(freq, 16000, len(y)))
    assert np.max(np.abs(err)) < 1e-4


def test_resampled_frequency_by_spectral_peak():
    y = resample(tone(1234.0, 44100, 44100 * 2), orig_rate=44100, new_rate=16000)
    spec = np.abs(np.fft.rfft(interior(y, 8000) * np.hanning(16000)))
    # 16000-sample segment at 16 kHz: 1 Hz per bin.
    assert int(np.argmax(spec)) == 1234


@pytest.mark.parametrize("orig,freq", [(44100, 8100.0), (44100, 12000.0), (44100, 20000.0),
                                       (48000, 8500.0), (48000, 15000.0)])
def test_downsampling_attenuates_aliases(orig, freq):
    x = tone(freq, orig, orig)
    # Without a low-pass filter the tone folds back into the band at full amplitude.
    naive = np.interp(np.arange(16000) * orig / 16000, np.arange(orig), x)
    assert rms(interior(naive)) > 0.3
    y = resample(x, orig_rate=orig, new_rate=16000)
    assert rms(interior(y)) < 1e-5  # > 100 dB below the 0.707 input RMS


def test_downsampling_passband_is_flat_to_7khz():
    for freq in (100.0, 4000.0, 7000.0):
        y = resample(tone(freq, 48000, 48000), orig_rate=48000, new_rate=16000)
        assert abs(20 * math.log10(rms(interior(y)) / math.sqrt(0.5))) < 0.01


def test_upsampling_suppresses_images():
    y = resample(tone(3000.0, 8000, 16000), orig_rate=8000, new_rate=16000)
    seg = interior(y, 4000)
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    freqs = np.fft.rfftfreq(len(seg), 1 / 16000)
    # Linear interpolation would leave an image at 8000 - 3000 = 5000 Hz.
    assert spec[freqs > 4100].max() < 1e-5 * spec.max()


def test_constant_signal_stays_constant():
    y = resample(np.full(4000, 0.5), orig_rate=44100, new_rate=16000)
    np.testing.assert_allclose(interior(y, 300), 0.5, rtol=0, atol=1e-12)


@settings(deadline=None, max_examples=60)
@given(st.integers(0, 3000), st.sampled_from([8000, 11025, 16000, 22050, 32000, 44100, 48000,
                                              96000, 12345]))
def test_resample_length_is_ceil_of_duration(n, orig):
    y = resample(np.ones(n), orig_rate=orig, new_rate=16000)
    assert len(y) == -(-n * 16000 // orig)
    assert y.dtype == np.float64


def test_resample_identity_and_determinism():
    x = np.random.default_rng(1).uniform(-1, 1, 5000)
    same = resample(x, orig_rate=16000, new_rate=16000)
    np.testing.assert_array_equal(same, x)
    assert same is not x
    a = resample(x, orig_rate=44100, new_rate=16000)
    resample(x[:100], orig_rate=22050, new_rate=16000)
    b = resample(x, orig_rate=44100, new_rate=16000)
    assert a.tobytes() == b.tobytes()


def test_resample_tiny_inputs():
    assert resample([], orig_rate=44100, new_rate=16000).shape == (0,)
    one = resample([1.0], orig_rate=44100, new_rate=16000)
    assert one.shape == (1,) and 0.3 < one[0] < 0.4  # impulse through a 0.36-band filter


@pytest.mark.parametrize("kwargs,message", [
    (dict(orig_rate=0, new_rate=16000), "orig_rate must be a positive integer"),
    (dict(orig_rate=8000, new_rate=-1), "new_rate must be a positive integer"),
    (dict(orig_rate=44100.0, new_rate=16000), "orig_rate must be a positive integer"),
    (dict(orig_rate=True, new_rate=16000), "orig_rate must be a positive integer"),
])
def test_resample_rejects_bad_rates(kwargs, message):
    with pytest.raises(ValueError, match=message):
        resample(np.zeros(10), **kwargs)


def test_resample_rejects_bad_samples():
    with pytest.raises(ValueError, match="mix down first"):
        resample(np.zeros((10, 2)), orig_rate=8000, new_rate=16000)
    with pytest.raises(ValueError, match="NaN or infinity"):
        resample([0.0, math.inf], orig_rate=8000, new_rate=16000)


# --- load_audio ---------------------------------------------------------------------------
def test_load_audio_mixes_down_then_resamples(tmp_path):
    path = tmp_path / "st.wav"
    stereo = np.stack([tone(1000, 44100, 4410, 0.5), tone(1000, 44100, 4410, 0.25)], axis=1)
    write_wav(path, stereo, 44100)
    y = load_audio(path)
    raw, _ = read_wav(path)
    np.testing.assert_array_equal(y, resample(to_mono(raw), orig_rate=44100, new_rate=16000))
    assert len(y) == 1600
    np.testing.assert_allclose(interior(y, 300), interior(tone(1000, 16000, 1600, 0.375), 300),
                               atol=2e-4)


def test_load_audio_16k_is_exact_and_clips_resampling_overshoot(tmp_path):
    path = tmp_path / "m16.wav"
    x = np.array([0.5, -0.25, 32767 / 32768])
    write_wav(path, x, 16000)
    np.testing.assert_array_equal(load_audio(path.read_bytes()), x)
    # A full-scale square wave overshoots (Gibbs) after resampling: clipped to [-1, 1].
    square = np.where(np.arange(8000) % 40 < 20, 32767 / 32768, -1.0)
    write_wav(path, square, 8000)
    raw, _ = read_wav(path)
    assert np.abs(resample(raw[:, 0], orig_rate=8000, new_rate=16000)).max() > 1.0
    y = load_audio(path)
    assert np.abs(y).max() == 1.0
