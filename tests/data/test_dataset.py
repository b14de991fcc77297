"""Tests for the data set: command grammar, shipped test set, features file (no espeak-ng)."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pytest

from data.features import read_features, write_features
from data.make_dataset import (
    FIRST_TEST_SECONDS,
    MANIFEST_COLUMNS,
    MAX_SILENCE,
    MIN_SECONDS,
    MIN_SILENCE,
    TEST_MAX_SECONDS,
    TEST_SETTINGS,
    TRAIN_SETTINGS,
    _silences,
    colored_noise,
    main,
    read_manifest,
    require_tools,
)
from data.vocabulary import (
    CONTACTS,
    RARE_CONTACTS,
    WAKE_WORD,
    check_transcript,
    make_sentence,
    number_words,
)
from golden.frontend import FrontendConfig
from golden.tokens import default_tokens
from golden.wav import read_wav

TESTSET = Path(__file__).resolve().parents[2] / "data" / "testset"
ALLOWED = set(default_tokens()[1:])


def sentences(seed, n, **kw):
    rng = np.random.default_rng(seed)
    return [make_sentence(rng, **kw) for _ in range(n)]


# --- grammar --------------------------------------------------------------------------------
def test_grammar_is_deterministic_per_seed():
    assert sentences(3, 200) == sentences(3, 200)
    assert sentences(3, 200) != sentences(4, 200)


def test_transcripts_use_only_the_token_inventory():
    for s in sentences(0, 3000):
        assert set(s.transcript) <= ALLOWED, s.transcript
        assert check_transcript(s.transcript) == s.transcript
        assert s.wake == s.transcript.startswith(WAKE_WORD + " ")
        for name in s.names:
            assert name in s.transcript.split(" ") or name + "'s" in s.transcript


def test_every_contact_appears_and_rare_names_are_rare():
    counts = {n: 0 for n in CONTACTS}
    for s in sentences(1, 6000):
        for n in s.names:
            counts[n] += 1
    assert all(counts[n] > 0 for n in CONTACTS), counts
    common = [counts[n] for n in CONTACTS if n not in RARE_CONTACTS]
    assert max(counts[n] for n in RARE_CONTACTS) * 3 < min(common), counts
    # With rare_weight=1 (the test set) the rare names are as frequent as the others.
    even = {n: 0 for n in CONTACTS}
    for s in sentences(1, 3000, name_prob=1.0, rare_weight=1.0):
        even[s.names[0]] += 1
    assert min(even.values()) > 3000 / len(CONTACTS) / 2, even


def test_spoken_text_respells_unusual_names():
    s = next(s for s in sentences(5, 2000, name_prob=1.0, rare_weight=1.0)
             if s.names == ("siobhan",))
    assert "siobhan" in s.transcript and "shivawn" in s.spoken
    assert s.spoken.replace("shivawn", "siobhan") == s.transcript


def test_number_words():
    words = [number_words(n) for n in range(1, 100)]
    assert len(set(words)) == 99
    assert words[0] == "one" and words[41] == "forty two" and words[98] == "ninety nine"
    assert all(set(w) <= set(string.ascii_lowercase + " ") for w in words)
    for bad in (0, 100, 2.0, True):
        with pytest.raises(ValueError, match="1..99"):
            number_words(bad)


@pytest.mark.parametrize("text", ["Call anna", "call anna 2", "call  anna", " call", "", "a-b"])
def test_check_transcript_rejects(text):
    with pytest.raises(ValueError):
        check_transcript(text)


def test_make_sentence_validates_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="name_prob"):
        make_sentence(rng, name_prob=1.5)
    with pytest.raises(ValueError, match="rare_weight"):
        make_sentence(rng, rare_weight=0.0)
    with pytest.raises(ValueError, match="Generator"):
        make_sentence(0)


# --- synthesis helpers that need no espeak-ng ------------------------------------------------
def test_colored_noise_power_and_slope():
    rng = np.random.default_rng(0)
    low = {}
    for colour in ("white", "pink", "brown"):
        x = colored_noise(rng, 16000, colour)
        assert np.mean(x * x) == pytest.approx(1.0)
        p = np.abs(np.fft.rfft(x)) ** 2
        low[colour] = p[1:400].sum() / p.sum()  # share of power below 400 Hz
    assert low["white"] < 0.1 < low["pink"] < low["brown"]
    with pytest.raises(ValueError, match="colour"):
        colored_noise(rng, 10, "purple")


def test_silences_stay_in_bounds_and_sum():
    rng = np.random.default_rng(0)
    for extra in np.linspace(2 * MIN_SILENCE, 2 * MAX_SILENCE, 50):
        lead, trail = _silences(rng, float(extra))
        assert lead + trail == pytest.approx(extra)
        assert MIN_SILENCE - 1e-12 <= lead <= MAX_SILENCE + 1e-12
        assert MIN_SILENCE - 1e-12 <= trail <= MAX_SILENCE + 1e-12


def test_missing_tools_give_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="espeak-ng and sox.*make dataset"):
        require_tools()
    assert main(["--out", str(tmp_path / "out"), "--train", "1", "--validation", "1"]) == 2
    assert "apt-get install espeak-ng sox" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_test_settings_are_held_out():
    assert not set(TEST_SETTINGS.voices) & set(TRAIN_SETTINGS.voices)
    assert not set(TEST_SETTINGS.variants) & set(TRAIN_SETTINGS.variants)
    assert not set(TEST_SETTINGS.rates) & set(TRAIN_SETTINGS.rates)
    assert not set(TEST_SETTINGS.pitches) & set(TRAIN_SETTINGS.pitches)


# --- shipped test set ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def manifest():
    return read_manifest(TESTSET / "manifest.tsv")


def test_manifest_columns_and_files(manifest):
    header = (TESTSET / "manifest.tsv").read_text().splitlines()[0].split("\t")
    assert tuple(header) == MANIFEST_COLUMNS
    assert 35 <= len(manifest) <= 45
    files = [r["file"] for r in manifest]
    assert len(set(files)) == len(files)
    assert sorted(files) == sorted(p.name for p in TESTSET.glob("*.wav"))


def test_wavs_load_at_16k_in_duration_range(manifest):
    for r in manifest:
        data = (TESTSET / r["file"]).read_bytes()
        samples, rate = read_wav(data)
        assert rate == 16000 and samples.shape[1] == 1, r["file"]
        assert len(data) == 44 + 2 * len(samples), "16-bit mono PCM with a plain header"
        seconds = len(samples) / rate
        assert MIN_SECONDS - 1e-3 <= seconds <= TEST_MAX_SECONDS + 1e-3, r["file"]
        assert seconds == pytest.approx(float(r["duration_s"]), abs=1e-3)
        assert 0.0 < np.max(np.abs(samples)) < 1.0
    assert float(manifest[0]["duration_s"]) == pytest.approx(FIRST_TEST_SECONDS, abs=0.01)


def test_transcripts_names_and_wake_word(manifest):
    texts = [check_transcript(r["transcript"]) for r in manifest]
    with_name = [t for t in texts if any(n in t.replace("'s", "").split(" ") for n in CONTACTS)]
    assert len(with_name) * 2 >= len(texts)
    assert sum(t.startswith(WAKE_WORD + " ") for t in texts) >= 5
    assert any(n in t for t in with_name for n in RARE_CONTACTS)


def test_recorded_settings_are_held_out(manifest):
    for r in manifest:
        assert r["voice"] in TEST_SETTINGS.voices and r["variant"] in TEST_SETTINGS.variants
        assert int(r["rate"]) in TEST_SETTINGS.rates and int(r["pitch"]) in TEST_SETTINGS.pitches
        assert r["noise"] in ("clean", "brown", "white")
        if r["noise"] == "white":
            assert float(r["snr_db"]) < 10.0  # training SNRs are 10-30 dB
        for key in ("lead_s", "trail_s"):
            assert MIN_SILENCE - 1e-3 <= float(r[key]) <= MAX_SILENCE + 1e-3


def test_size_budget():
    total = sum(p.stat().st_size for p in TESTSET.iterdir())
    assert total <= 3_500_000, total


def test_read_manifest_rejects_bad_rows(tmp_path):
    p = tmp_path / "manifest.tsv"
    p.write_text("file\ttranscript\tvoice\na.wav\tcall anna\n")
    with pytest.raises(ValueError, match=":2: 2 columns"):
        read_manifest(p)
    p.write_text("transcript\tfile\n")
    with pytest.raises(ValueError, match="header"):
        read_manifest(p)


# --- features file ---------------------------------------------------------------------------
def test_features_round_trip(tmp_path):
    cfg = FrontendConfig()
    rng = np.random.default_rng(0)
    frames = [rng.integers(-128, 128, size=(t, cfg.feature_dim)).astype(np.int8)
              for t in (5, 0, 17)]
    texts, files = ["call anna", "stop", "hey nep call niamh"], ["a.wav", "b.wav", "c.wav"]
    write_features(tmp_path / "features.npz", frames=frames, transcripts=texts, files=files,
                   frontend=cfg)
    fs = read_features(tmp_path / "features.npz")
    assert len(fs) == 3 and fs.frontend == cfg
    assert fs.features.shape == (22, cfg.feature_dim) and list(fs.offsets) == [0, 5, 5, 22]
    for i in range(3):
        f, t = fs.utterance(i)
        assert np.array_equal(f, frames[i]) and t == texts[i] and fs.files[i] == files[i]
    with pytest.raises(IndexError):
        fs.utterance(3)


def test_features_writer_and_reader_reject_bad_input(tmp_path):
    cfg = FrontendConfig()
    good = np.zeros((2, cfg.feature_dim), dtype=np.int8)
    with pytest.raises(ValueError, match="same length"):
        write_features(tmp_path / "f.npz", frames=[good], transcripts=[], files=["a"],
                       frontend=cfg)
    with pytest.raises(ValueError, match="int8"):
        write_features(tmp_path / "f.npz", frames=[good.astype(np.int16)], transcripts=["a"],
                       files=["a"], frontend=cfg)
    np.savez(tmp_path / "bad.npz", features=good)
    with pytest.raises(ValueError, match="missing"):
        read_features(tmp_path / "bad.npz")
    write_features(tmp_path / "f.npz", frames=[good], transcripts=["a"], files=["a"],
                   frontend=cfg)
    with np.load(tmp_path / "f.npz") as z:
        parts = dict(z)
    parts["offsets"] = np.array([0, 3])
    np.savez(tmp_path / "bad.npz", **parts)
    with pytest.raises(ValueError, match="inconsistent"):
        read_features(tmp_path / "bad.npz")
