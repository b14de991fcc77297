"""Tests for golden.frontend: config, log-mel chain, int8 rule, tail policy, streaming."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.frontend import (
    Frontend,
    FrontendConfig,
    dequantize,
    features,
    features_from_wav,
    hann_window,
    hz_to_mel,
    logmel_float,
    mel_filterbank,
    mel_to_hz,
    quantize,
    stack_frames,
)
from golden.wav import WavError, load_audio, write_wav

DEFAULT = FrontendConfig()
# Configs that exercise stacking without overlap, with overlap, with gaps, and no pre-emphasis.
CONFIGS = [
    DEFAULT,
    FrontendConfig(stack=1, subsample=1),
    FrontendConfig(stack=4, subsample=2, n_mels=80),
    FrontendConfig(stack=1, subsample=3, preemphasis=0.0),
    FrontendConfig(win_ms=20.0, hop_ms=20.0, n_fft=512, stack=2, subsample=5, n_mels=24),
]


def speech_like(n, seed=0):
    """Noise bursts at very different levels plus a tone: varied log-mel values."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    env = 10.0 ** rng.uniform(-5, 0, size=n // 800 + 1).repeat(800)[:n]
    return 0.5 * env * rng.standard_normal(n) + 0.1 * np.sin(2 * np.pi * 330 * t)


# --- configuration ------------------------------------------------------------------------
def test_defaults_and_derived_sizes():
    c = DEFAULT
    assert (c.sample_rate, c.win_ms, c.hop_ms, c.n_fft, c.n_mels) == (16000, 25.0, 10.0, 512, 40)
    assert (c.fmin, c.fmax, c.preemphasis, c.log_floor) == (20.0, 8000.0, 0.97, -21.0)
    assert (c.stack, c.subsample, c.feature_scale, c.feature_offset) == (3, 3, 0.125, -5.0)
    assert (c.win_length, c.hop_length, c.n_bins) == (400, 160, 257)
    assert (c.feature_dim, c.frame_shift_ms) == (120, 30.0)
    assert (c.encoder_stride, c.encoder_window) == (480, 720)


def test_frame_span_and_time():
    assert DEFAULT.frame_span(0) == (0, 720)
    assert DEFAULT.frame_span(7) == (3360, 4080)
    assert DEFAULT.frame_time_ms(0) == 0.0
    assert DEFAULT.frame_time_ms(10) == 300.0
    c = FrontendConfig(stack=4, subsample=2)
    assert c.frame_span(3) == (960, 960 + 3 * 160 + 400)
    assert c.frame_time_ms(3) == 60.0 == 3 * c.frame_shift_ms
    with pytest.raises(ValueError, match="non-negative integer"):
        DEFAULT.frame_time_ms(-1)


@pytest.mark.parametrize("n,expected", [(0, 0), (1, 1), (719, 1), (720, 1), (721, 2),
                                        (1200, 2), (1201, 3), (16000, 33)])
def test_num_frames_examples(n, expected):
    assert DEFAULT.num_frames(n) == expected


@given(st.integers(1, 100_000), st.sampled_from(CONFIGS))
def test_num_frames_is_smallest_count_reaching_the_last_sample(n, cfg):
    t = cfg.num_frames(n)
    assert cfg.frame_span(t - 1)[1] >= n
    assert t == 1 or cfg.frame_span(t - 2)[1] < n


@pytest.mark.parametrize("kwargs,message", [
    (dict(n_fft=500), r"n_fft must be a power of two >= the window length \(400 samples\)"),
    (dict(n_fft=256), r"n_fft must be a power of two"),
    (dict(win_ms=25.01), r"win_ms=25.01 ms at sample_rate=16000 Hz gives .* whole number"),
    (dict(hop_ms=0.0), r"hop_ms=0.0 ms .* whole number >= 1"),
    (dict(hop_ms=30.0), r"hop_ms \(30.0 ms\) must not exceed win_ms"),
    (dict(fmax=9000.0), r"fmax <= sample_rate / 2 = 8000.0 Hz, got fmin=20.0, fmax=9000.0"),
    (dict(fmin=500.0, fmax=400.0), r"0 <= fmin < fmax"),
    (dict(sample_rate=8000), r"fmax=8000.0"),
    (dict(n_mels=0), r"n_mels must be >= 1, got 0"),
    (dict(stack=0), r"stack must be >= 1"),
    (dict(subsample=-2), r"subsample must be >= 1"),
    (dict(n_mels=40.0), r"n_mels must be an int, got 40.0"),
    (dict(stack=True), r"stack must be an int, got True"),
    (dict(preemphasis=1.0), r"preemphasis must be in \[0, 1\)"),
    (dict(feature_scale=0.0), r"feature_scale must be > 0"),
    (dict(feature_scale=math.nan), r"feature_scale must be a finite number, got nan"),
    (dict(log_floor=math.inf), r"log_floor must be a finite number"),
    (dict(log_floor=-800.0), r"log_floor must be within -700..700"),
    (dict(fmin="20"), r"fmin must be a finite number, got '20'"),
    (dict(feature_scale=8.0), r"int8 steps .* within -700..700"),
    (dict(feature_scale=1e-18), r"must be distinct natural-log values"),
    (dict(n_mels=128), r"mel band 3 \(63.0-93.0 Hz\) contains no FFT bin; use fewer n_mels"),
])
def test_invalid_configs_give_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FrontendConfig(**kwargs)


def test_config_is_frozen_and_keyword_only():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT.n_mels = 80
    with pytest.raises(TypeError):
        FrontendConfig(16000)


def test_dict_round_trip_through_json():
    cfg = FrontendConfig(n_mels=64, stack=4, subsample=2, preemphasis=0.0, fmax=7600.0)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert FrontendConfig.from_dict(d) == cfg
    assert set(d) == {f.name for f in dataclasses.fields(FrontendConfig)}


def test_from_dict_defaults_and_int_normalization():
    cfg = FrontendConfig.from_dict({"win_ms": 25, "n_mels": 40})
    assert cfg == DEFAULT
    assert isinstance(cfg.to_dict()["win_ms"], float)


def test_from_dict_rejects_unknown_keys_and_non_mappings():
    with pytest.raises(ValueError, match=r"unknown FrontendConfig key\(s\): 'hop', 'nmels'; "
                                         r"valid keys: sample_rate, win_ms"):
        FrontendConfig.from_dict({"nmels": 40, "hop": 10, "stack": 3})
    with pytest.raises(ValueError, match="expects a mapping, got list"):
        FrontendConfig.from_dict([("n_mels", 40)])
    with pytest.raises(ValueError, match="stack must be >= 1"):
        FrontendConfig.from_dict({"stack": 0})


# --- mel scale, window, filterbank --------------------------------------------------------
def test_htk_mel_scale():
    assert hz_to_mel(700.0) == pytest.approx(2595 * math.log10(2), abs=1e-9)
    assert hz_to_mel(1000.0) == pytest.approx(1000.0, abs=0.1)
    f = np.array([0.0, 20.0, 440.0, 8000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, rtol=1e-12, atol=1e-9)


def test_periodic_hann_window():
    w = hann_window()
    assert w.shape == (400,)
    assert w[0] == 0.0 and w[200] == 1.0
    np.testing.assert_allclose(w[1:], w[:0:-1], atol=1e-15)  # w[n] == w[400 - n]
    assert not w.flags.writeable


def htk_edges(cfg):
    """Band edges computed here from the HTK formula, independently of the module."""
    mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731
    lo, hi = mel(cfg.fmin), mel(cfg.fmax)
    return [700 * (10 ** ((lo + i * (hi - lo) / (cfg.n_mels + 1)) / 2595) - 1)
            for i in range(cfg.n_mels + 2)]


def test_filterbank_triangles():
    fb = mel_filterbank()
    edges = htk_edges(DEFAULT)
    freqs = np.arange(257) * 31.25
    assert fb.shape == (40, 257) and not fb.flags.writeable
    assert fb.max() <= 1.0 and fb.min() == 0.0
    for m in (0, 13, 39):  # rising and falling edges of a few bands, by hand
        for k in range(257):
            f = freqs[k]
            expect = max(0.0, min((f - edges[m]) / (edges[m + 1] - edges[m]),
                                  (edges[m + 2] - f) / (edges[m + 2] - edges[m + 1])))
            assert fb[m, k] == pytest.approx(expect, abs=1e-12)
    # Neighbouring triangles share edges, so between the first and last centres they sum to 1.
    inner = (freqs >= edges[1]) & (freqs <= edges[-2])
    np.testing.assert_allclose(fb[:, inner].sum(axis=0), 1.0, atol=1e-12)
    assert not fb[:, (freqs <= 20.0) | (freqs >= 8000.0)].any()


# --- float reference path -----------------------------------------------------------------
def naive_logmel_frame(x, i, cfg):
    """Log-mel of frame i by the definitions in docs/frontend.md, one sample at a time."""
    win, hop, a = cfg.win_length, cfg.hop_length, cfg.preemphasis
    edges = htk_edges(cfg)
    out = []
    seg = []
    for n in range(i * hop, i * hop + win):
        cur = x[n] if n < len(x) else 0.0
        prev = x[n - 1] if 0 < n <= len(x) else 0.0
        w = 0.5 - 0.5 * math.cos(2 * math.pi * (n - i * hop) / win)
        seg.append((cur - a * prev) * w)
    spec = np.fft.rfft(np.array(seg), n=cfg.n_fft)
    power = np.abs(spec) ** 2
    for m in range(cfg.n_mels):
        e = 0.0
        for k, p in enumerate(power):
            f = k * cfg.sample_rate / cfg.n_fft
            e += p * max(0.0, min((f - edges[m]) / (edges[m + 1] - edges[m]),
                                  (edges[m + 2] - f) / (edges[m + 2] - edges[m + 1])))
        out.append(max(math.log(e) if e > 0 else -math.inf, cfg.log_floor))
    return np.array(out)


def test_logmel_float_matches_naive_definition_including_padded_tail():
    x = speech_like(2000, seed=3)  # 4 encoder frames; the last reads 160 padded zeros
    lm = logmel_float(x)
    assert lm.shape == (12, 40)
    for i in (0, 5, 11):
        np.testing.assert_allclose(lm[i], naive_logmel_frame(x, i, DEFAULT), rtol=0, atol=1e-9)


def test_preemphasis_is_global_with_zero_history():
    # 5040 samples: exactly 10 encoder frames, so there is no tail padding to pre-emphasize.
    x = speech_like(5040, seed=4)
    y = x.copy()
    y[1:] -= 0.97 * x[:-1]
    np.testing.assert_allclose(logmel_float(x),
                               logmel_float(y, FrontendConfig(preemphasis=0.0)),
                               rtol=0, atol=1e-9)


def mel_centre(cfg, m):
    return htk_edges(cfg)[m + 1]


@pytest.mark.parametrize("band", [2, 10, 21, 30, 38])
def test_sine_energy_lands_in_its_mel_band(band):
    freq = mel_centre(DEFAULT, band)
    x = 0.3 * np.sin(2 * np.pi * freq * np.arange(16000) / 16000)
    lm = logmel_float(x)[2:-3]  # away from the start transient and padded tail
    assert set(np.argmax(lm, axis=1)) == {band}
    # The band is at least 20x (3 nepers) above any band not adjacent to it.
    far = np.delete(lm, [band - 1, band, band + 1], axis=1)
    assert (lm[:, band] - far.max(axis=1)).min() > 3.0
    q = features(x)[1:-1].reshape(-1, 3, 40)  # int path, per stacked sub-frame
    assert set(np.argmax(q, axis=2).ravel()) == {band}


def test_silence_gives_the_floor():
    silence = np.zeros(16000)
    np.testing.assert_array_equal(logmel_float(silence), -21.0)
    f = features(silence)
    assert f.shape == (33, 120)
    assert np.all(f == -128)  # default floor -21.0 maps to the lowest code
    # A floor inside the int8 range gives its own code: round((-15 - (-5)) / 0.125) = -80.
    cfg = FrontendConfig(log_floor=-15.0)
    assert np.all(features(silence, cfg) == -80)
    # So does audio far below the floor.
    tiny = 1e-9 * np.random.default_rng(0).standard_normal(16000)
    assert np.all(features(tiny, cfg) == -80)


# --- int8 rule ----------------------------------------------------------------------------
def test_quantize_rule_rounds_half_up_and_saturates():
    s, o = 0.125, -5.0
    logmel = np.array([o, o + 2.5 * s, o + 2.4999 * s, o - 2.5 * s, o - 2.5001 * s,
                       o + 127.4 * s, o + 500 * s, o - 128.4 * s, o - 500 * s])
    np.testing.assert_array_equal(quantize(logmel), [0, 3, 2, -2, -3, 127, 127, -128, -128])
    np.testing.assert_array_equal(dequantize(np.array([-128, 0, 127], dtype=np.int8)),
                                  [o - 128 * s, o, o + 127 * s])


@pytest.mark.parametrize("cfg", CONFIGS[:3])
def test_int8_features_match_float_reference_within_half_a_step(cfg):
    x = speech_like(48000, seed=5)
    x[30000:32000] = np.sin(2 * np.pi * 7000 * np.arange(2000) / 16000)  # clips at the top
    q = features(x, cfg)
    ref = stack_frames(logmel_float(x, cfg), cfg)
    assert q.shape == ref.shape
    lo, hi = dequantize(-128, cfg), dequantize(127, cfg)
    top, bottom = q == 127, q == -128
    if cfg.preemphasis:
        assert top.any()  # the loud 7.8 kHz tone must exercise the clipped branch
    err = np.abs(dequantize(q, cfg) - ref)
    inside = ~top & ~bottom
    assert err[inside].max() <= cfg.feature_scale / 2 + 1e-9
    assert np.all(ref[top] >= hi - cfg.feature_scale / 2 - 1e-9)
    assert np.all(ref[bottom] <= lo + cfg.feature_scale / 2 + 1e-9)
    # The threshold table and the float formula agree except within rounding of a tie.
    diff = q.astype(int) - quantize(ref, cfg).astype(int)
    assert np.abs(diff).max() <= 1 and np.count_nonzero(diff) <= q.size // 1000


# --- one-shot features, shapes and tail policy --------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 159, 400, 719, 720, 721, 1200, 1201, 16001])
def test_shapes_and_dtype_for_any_length(n):
    f = features(speech_like(n, seed=n))
    assert f.shape == (DEFAULT.num_frames(n), 120)
    assert f.dtype == np.int8 and f.flags.c_contiguous


def test_empty_audio_gives_empty_matrix():
    assert features([]).shape == (0, 120)
    assert logmel_float(np.zeros(0)).shape == (0, 40)
    fe = Frontend()
    assert fe.push([]).shape == (0, 120)
    assert fe.flush().shape == (0, 120)


@pytest.mark.parametrize("n", [1, 500, 721, 1000, 1679])
def test_tail_is_zero_padded_to_the_last_frame(n):
    x = speech_like(n, seed=7)
    t = DEFAULT.num_frames(n)
    padded_len = DEFAULT.frame_span(t - 1)[1]
    f = features(x)
    for extra in sorted({0, 1, padded_len - n}):  # explicit zeros up to the padded length
        np.testing.assert_array_equal(features(np.concatenate([x, np.zeros(extra)])), f)
    # The last sample is inside the last frame: a click there, in silence, lifts it off the
    # floor (for n = 1 only via pre-emphasis: the Hann window is 0 at a frame's first sample).
    y = np.zeros(n)
    y[-1] = 1.0
    assert features(y)[-1].max() > -128


def test_frame_t_depends_only_on_its_span():
    x = speech_like(8000, seed=8)
    f = features(x)
    for t in (0, 5, 9):
        start, stop = DEFAULT.frame_span(t)
        y = x.copy()
        y[:max(0, start - 1)] = 0.9  # pre-emphasis also reads sample start - 1
        y[stop:] = -0.9
        np.testing.assert_array_equal(features(y)[t], f[t])
        z = x.copy()
        z[start:stop] *= 100.0
        assert not np.array_equal(features(z)[t], f[t])


def test_stack_frames_layout():
    frames = np.arange(10 * 40).reshape(10, 40)
    out = stack_frames(frames)
    assert out.shape == (3, 120)  # frames 0-8 used, frame 9 is incomplete
    np.testing.assert_array_equal(out[1], np.concatenate([frames[3], frames[4], frames[5]]))
    overlap = FrontendConfig(stack=4, subsample=2)
    o = stack_frames(frames, overlap)
    assert o.shape == (4, 160)
    np.testing.assert_array_equal(o[2], frames[4:8].ravel())
    gap = FrontendConfig(stack=1, subsample=3)
    np.testing.assert_array_equal(stack_frames(frames, gap), frames[[0, 3, 6, 9]])
    with pytest.raises(ValueError, match=r"shape \(n, 40\)"):
        stack_frames(np.zeros((5, 41)))


def test_features_are_deterministic():
    x = speech_like(32000, seed=9)
    a = features(x)
    b = features(x.copy(), FrontendConfig.from_dict(DEFAULT.to_dict()))
    assert a.tobytes() == b.tobytes()
    assert len(np.unique(a)) > 50  # not a degenerate constant output


@pytest.mark.parametrize("bad,message", [
    (np.zeros(10, dtype=np.int16), r"floating point in \[-1, 1\], got dtype int16"),
    (np.zeros((10, 2)), r"1-D mono audio, got shape \(10, 2\)"),
    (np.array([0.0, math.nan]), r"NaN or infinity \(first at index 1\)"),
    (np.zeros(4, dtype=complex), "real floating point"),
])
def test_bad_samples_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        features(bad)
    with pytest.raises(ValueError, match=message):
        Frontend().push(bad)


def test_non_config_is_rejected():
    for call in (lambda: Frontend({"n_mels": 40}), lambda: features([0.0], {"n_mels": 40}),
                 lambda: logmel_float([0.0], DEFAULT.to_dict())):
        with pytest.raises(ValueError, match="cfg must be a FrontendConfig or None, got dict"):
            call()


# --- streaming ----------------------------------------------------------------------------
@settings(deadline=None, max_examples=200)
@given(cfg=st.sampled_from(CONFIGS), n=st.integers(0, 6000), seed=st.integers(0, 2**16),
       cuts=st.lists(st.integers(0, 6000), max_size=12))
def test_any_chunking_equals_one_shot(cfg, n, seed, cuts):
    x = speech_like(n, seed)
    expected = features(x, cfg)
    fe = Frontend(cfg)
    bounds = [0, *sorted(min(c, n) for c in cuts), n]
    outs = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        out = fe.push(x[a:b])
        assert out.dtype == np.int8 and out.shape[1:] == (cfg.feature_dim,)
        outs.append(out)
        assert fe.frames_emitted == sum(len(o) for o in outs)
    outs.append(fe.flush())
    assert len(outs[-1]) <= 1  # push already returned every frame with a complete span
    assert np.concatenate(outs).tobytes() == expected.tobytes()
    assert fe.frames_emitted == 0
    # After flush the same object starts a fresh utterance.
    again = np.concatenate([fe.push(x), fe.flush()])
    assert again.tobytes() == expected.tobytes()


def test_one_sample_at_a_time_equals_one_shot():
    x = speech_like(8000, seed=11)
    fe = Frontend()
    outs = [fe.push(x[i:i + 1]) for i in range(len(x))] + [fe.flush()]
    assert np.concatenate(outs).tobytes() == features(x).tobytes()


@pytest.mark.parametrize("cfg", CONFIGS)
def test_push_emits_frame_as_soon_as_its_span_is_complete(cfg):
    x = speech_like(5000, seed=12)
    fe = Frontend(cfg)
    pos = 0
    for t in range(3):
        stop = cfg.frame_span(t)[1]
        assert len(fe.push(x[pos:stop - 1])) == 0  # one sample short: nothing new
        assert len(fe.push(x[stop - 1:stop])) == 1
        assert fe.frames_emitted == t + 1
        pos = stop


def test_reset_discards_buffered_audio():
    x = speech_like(3000, seed=13)
    fe = Frontend()
    fe.push(speech_like(1000, seed=14))
    fe.reset()
    out = np.concatenate([fe.push(x), fe.flush()])
    np.testing.assert_array_equal(out, features(x))


# --- WAV input and speed ------------------------------------------------------------------
def test_features_from_wav_resamples_and_mixes_down(tmp_path):
    path = tmp_path / "in.wav"
    t = np.arange(8000) / 8000
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 500 * t), 0.1 * np.sin(2 * np.pi * 900 * t)],
                      axis=1)
    write_wav(path, stereo, 8000)
    f = features_from_wav(path)
    assert f.shape == (DEFAULT.num_frames(16000), 120)
    np.testing.assert_array_equal(f, features(load_audio(path)))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"RIFF\x24\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0\0\x7d\0\0"
                      b"\x02\0\x10\0data\0\0\0\0")
    with pytest.raises(WavError, match="holds no audio samples"):
        features_from_wav(empty)


def test_ten_seconds_featurize_well_under_100_ms():
    x = speech_like(160000, seed=15)
    features(x)  # warm-up: builds the per-config tables once
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        features(x)
        best = min(best, time.perf_counter() - start)
    assert best < 0.1
