"""Generate the synthesized speech data set offline with espeak-ng and sox.

Usage::

    python -m data.make_dataset [--out build/dataset] [--train 6000] [--validation 300]
                                [--seed 1] [--workers 2]
    python -m data.make_dataset --testset data/testset [--test 40]

The first form writes ``OUT/{train,validation}/`` with 16 kHz mono 16-bit WAV files, a
``manifest.tsv`` and the golden front end's int8 features in ``features.npz``
(:mod:`data.features`). The second writes the held-out test set (WAV files and manifest,
voices and settings never used in training) that the repository ships. Every utterance is
drawn from its own generator seeded by ``(seed, split, index)``, so the output does not
depend on the number of workers. See ``docs/data.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import NamedTuple

import numpy as np

from golden.frontend import FrontendConfig, features
from golden.wav import write_wav

from .features import write_features
from .vocabulary import RARE_WEIGHT, check_transcript, make_sentence

SAMPLE_RATE = 16000
#: Utterance length bounds in seconds, silences included.
MIN_SECONDS, MAX_SECONDS = 1.5, 4.0
#: Shipped test utterances are capped shorter to fit the size budget.
TEST_MAX_SECONDS = 3.0
#: Leading / trailing silence bounds in seconds.
MIN_SILENCE, MAX_SILENCE = 0.1, 1.0
#: Length of the first shipped test utterance (the default utterance of ``make sim``).
FIRST_TEST_SECONDS = 3.0

MANIFEST_COLUMNS = ("file", "transcript", "voice", "variant", "rate", "pitch", "gain_db",
                    "noise", "snr_db", "lead_s", "trail_s", "duration_s")

# Below this amplitude, espeak's own leading/trailing output counts as silence.
_TRIM_LEVEL = 1e-3
# Sentence redraws before giving up on the duration bounds.
_MAX_ATTEMPTS = 50
# Spectral slope exponent of each noise colour: power ~ 1 / f**alpha.
_NOISE_ALPHA = {"white": 0.0, "pink": 1.0, "brown": 2.0}


class SplitSettings(NamedTuple):
    """Synthesis settings drawn per utterance of a split.

    Attributes
    ----------
    voices, variants : tuple of str
        espeak-ng voices and voice variants (``""`` = the voice's own).
    rates, pitches : tuple of int
        Speaking rates (words per minute) and pitches (0-99).
    noises : tuple of (str, float, float, float)
        ``(colour, snr_low_db, snr_high_db, weight)``; colour ``"clean"`` adds no noise.
    gain_db : (float, float)
        Range of the peak level in dBFS.
    name_prob : float
        Probability of a sentence with a contact name.
    rare_weight : float
        Weight of each rare contact name relative to a common one.
    max_seconds : float
        Upper bound of the utterance length.
    """

    voices: tuple[str, ...]
    variants: tuple[str, ...]
    rates: tuple[int, ...]
    pitches: tuple[int, ...]
    noises: tuple[tuple[str, float, float, float], ...]
    gain_db: tuple[float, float]
    name_prob: float
    rare_weight: float
    max_seconds: float


TRAIN_SETTINGS = SplitSettings(
    voices=("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029"),
    variants=("", "m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4", "klatt",
              "klatt2", "klatt4", "Andy", "Denis", "john", "linda", "max", "paul", "aunty",
              "edward", "steph", "travis"),
    rates=tuple(range(135, 186, 5)),
    pitches=tuple(range(30, 71, 5)),
    noises=(("clean", 0.0, 0.0, 0.2), ("white", 10.0, 30.0, 0.4), ("pink", 10.0, 30.0, 0.4)),
    gain_db=(-20.0, -1.0),
    name_prob=0.35,
    rare_weight=RARE_WEIGHT,
    max_seconds=MAX_SECONDS,
)
#: The held-out test set: voices, variants, rates, pitches, brown noise and SNRs below
#: 10 dB never occur in training.
TEST_SETTINGS = SplitSettings(
    voices=("en-gb-x-gbcwmd", "en-us-nyc"),
    variants=("m7", "m8", "f5", "klatt3", "Alicia", "belinda", "boris", "david"),
    rates=(120, 125, 130, 190, 195),
    pitches=(20, 25, 75, 80),
    noises=(("clean", 0.0, 0.0, 0.3), ("brown", 10.0, 25.0, 0.4), ("white", 5.0, 9.0, 0.3)),
    gain_db=(-20.0, -1.0),
    name_prob=0.7,
    rare_weight=1.0,
    max_seconds=TEST_MAX_SECONDS,
)
# Per-split stream number in each utterance's seed.
_SPLIT_STREAM = {"train": 0, "validation": 1, "test": 2}


class Job(NamedTuple):
    """One utterance to make: its split, index, seed and output directory."""

    split: str
    index: int
    seed: int
    out_dir: str
    target_seconds: float | None  # exact length, or None to draw it


class Utterance(NamedTuple):
    """A made utterance: its manifest row and int8 front-end features."""

    row: dict[str, str]
    frames: np.ndarray


def require_tools() -> None:
    """Raise ``RuntimeError`` unless espeak-ng and sox are on the PATH."""
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        raise RuntimeError(
            f"{' and '.join(missing)} not found: espeak-ng and sox are needed only to "
            "generate the data set (make dataset), e.g. apt-get install espeak-ng sox")


def synthesize(text: str, *, voice: str, variant: str, rate: int, pitch: int) -> np.ndarray:
    """Speak ``text`` with espeak-ng, resampled by sox to 16 kHz mono float in [-1, 1).

    Raises
    ------
    RuntimeError
        If espeak-ng or sox fails or produces no audio.
    """
    name = f"{voice}+{variant}" if variant else voice
    speak = subprocess.run(["espeak-ng", "-v", name, "-s", str(rate), "-p", str(pitch),
                            "--stdout", text], capture_output=True, check=False)
    if speak.returncode != 0 or not speak.stdout:
        raise RuntimeError(f"espeak-ng -v {name} failed on {text!r}: "
                           f"{speak.stderr.decode(errors='replace').strip()}")
    # -D: no dither, which sox would otherwise draw from an unseeded generator.
    conv = subprocess.run(["sox", "-D", "-V1", "-t", "wav", "-", "-t", "raw", "-e",
                           "signed-integer", "-b", "16", "-c", "1", "-r", str(SAMPLE_RATE), "-"],
                          input=speak.stdout, capture_output=True, check=False)
    if conv.returncode != 0 or not conv.stdout:
        raise RuntimeError(f"sox failed resampling espeak-ng output: "
                           f"{conv.stderr.decode(errors='replace').strip()}")
    return np.frombuffer(conv.stdout, dtype="<i2").astype(np.float64) / 32768.0


def _trim(x: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > _TRIM_LEVEL)
    return x[loud[0]:loud[-1] + 1] if len(loud) else x[:0]


def colored_noise(rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    """Unit-power noise of ``n`` samples with power spectrum ``1 / f**alpha``.

    ``colour`` is ``"white"`` (alpha 0), ``"pink"`` (1) or ``"brown"`` (2).
    """
    if colour not in _NOISE_ALPHA:
        raise ValueError(f"noise colour must be one of {sorted(_NOISE_ALPHA)}, got {colour!r}")
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0  # keep DC finite; it is removed below
    spec *= f ** (-_NOISE_ALPHA[colour] / 2.0)
    x = np.fft.irfft(spec, n)
    x -= x.mean()
    return x / np.sqrt(np.mean(x * x))


def _silences(rng: np.random.Generator, extra: float) -> tuple[float, float]:
    """Split ``extra`` seconds (within 2 * [MIN_SILENCE, MAX_SILENCE]) into lead and trail."""
    lead, trail = rng.uniform(MIN_SILENCE, MAX_SILENCE, size=2)
    lead = float(np.clip(extra * lead / (lead + trail), MIN_SILENCE, MAX_SILENCE))
    trail = float(np.clip(extra - lead, MIN_SILENCE, MAX_SILENCE))
    return extra - trail, trail


def make_utterance(job: Job) -> Utterance:
    """Synthesize, pad, add noise and gain, write the WAV and compute its features."""
    s = TEST_SETTINGS if job.split == "test" else TRAIN_SETTINGS
    rng = np.random.default_rng([job.seed, _SPLIT_STREAM[job.split], job.index])
    for _ in range(_MAX_ATTEMPTS):
        sentence = make_sentence(rng, name_prob=s.name_prob, rare_weight=s.rare_weight)
        voice = s.voices[rng.integers(len(s.voices))]
        variant = s.variants[rng.integers(len(s.variants))]
        rate = int(s.rates[rng.integers(len(s.rates))])
        pitch = int(s.pitches[rng.integers(len(s.pitches))])
        speech = _trim(synthesize(sentence.spoken, voice=voice, variant=variant, rate=rate,
                                  pitch=pitch))
        speech_s = len(speech) / SAMPLE_RATE
        lo = max(MIN_SECONDS, speech_s + 2 * MIN_SILENCE)
        hi = min(s.max_seconds, speech_s + 2 * MAX_SILENCE)
        if job.target_seconds is not None:
            lo = hi = job.target_seconds
        if len(speech) and speech_s + 2 * MIN_SILENCE <= lo <= hi <= speech_s + 2 * MAX_SILENCE:
            break
    else:
        raise RuntimeError(f"{job.split} utterance {job.index}: no sentence fits "
                           f"{MIN_SECONDS}-{s.max_seconds} s in {_MAX_ATTEMPTS} attempts")
    total = float(np.clip(speech_s + rng.uniform(2 * MIN_SILENCE, 2 * MAX_SILENCE), lo, hi))
    lead_s, trail_s = _silences(rng, total - speech_s)
    lead = int(round(lead_s * SAMPLE_RATE))
    n = lead + len(speech) + int(round(trail_s * SAMPLE_RATE))
    x = np.zeros(n)
    x[lead:lead + len(speech)] = speech

    weights = np.array([w for *_, w in s.noises])
    colour, snr_lo, snr_hi, _ = s.noises[rng.choice(len(s.noises), p=weights / weights.sum())]
    snr_db = float("inf")
    if colour != "clean":
        snr_db = round(float(rng.uniform(snr_lo, snr_hi)), 1)
        power = np.mean(speech * speech)
        x += colored_noise(rng, n, colour) * np.sqrt(power / 10.0 ** (snr_db / 10.0))
    gain_db = round(float(rng.uniform(*s.gain_db)), 1)
    x *= 10.0 ** (gain_db / 20.0) / np.max(np.abs(x))
    # Quantize once so the stored features are exactly those of the WAV file as read back.
    x = np.clip(np.rint(x * 32768.0), -32768, 32767) / 32768.0

    name = f"{job.split}_{job.index:05d}.wav"
    write_wav(Path(job.out_dir) / name, x, SAMPLE_RATE)
    row = {"file": name, "transcript": check_transcript(sentence.transcript), "voice": voice,
           "variant": variant or "-", "rate": str(rate), "pitch": str(pitch),
           "gain_db": f"{gain_db:.1f}", "noise": colour,
           "snr_db": "inf" if colour == "clean" else f"{snr_db:.1f}",
           "lead_s": f"{lead / SAMPLE_RATE:.3f}",
           "trail_s": f"{(n - lead - len(speech)) / SAMPLE_RATE:.3f}",
           "duration_s": f"{n / SAMPLE_RATE:.3f}"}
    return Utterance(row, features(x))


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    """Write ``manifest.tsv``: a header line, then one tab-separated row per utterance."""
    lines = ["\t".join(MANIFEST_COLUMNS)]
    lines += ["\t".join(r[c] for c in MANIFEST_COLUMNS) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def read_manifest(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Read a ``manifest.tsv`` into one dict per utterance, keyed by the header.

    Raises
    ------
    ValueError
        If the header lacks ``file`` or ``transcript`` or a row has the wrong column count.
    """
    lines = Path(path).read_text().splitlines()
    if not lines:
        raise ValueError(f"{path}: empty manifest")
    header = lines[0].split("\t")
    if header[:2] != ["file", "transcript"]:
        raise ValueError(f"{path}: header must start with file, transcript; got {header[:2]}")
    rows = []
    for k, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(header):
            raise ValueError(f"{path}:{k}: {len(cells)} columns, header has {len(header)}")
        rows.append(dict(zip(header, cells)))
    return rows


def generate_split(split: str, *, count: int, out_dir: Path, seed: int, workers: int,
                   with_features: bool) -> list[Utterance]:
    """Generate ``count`` utterances of ``split`` into ``out_dir`` with a progress bar.

    Writes ``manifest.tsv`` and, if ``with_features``, ``features.npz``.
    """
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [Job(split, i, seed, str(out_dir),
                FIRST_TEST_SECONDS if split == "test" and i == 0 else None)
            for i in range(count)]
    with Pool(workers) as pool:
        utts = list(tqdm(pool.imap(make_utterance, jobs, chunksize=4), total=count,
                         desc=split, unit="utt", file=sys.stderr))
    write_manifest(out_dir / "manifest.tsv", [u.row for u in utts])
    if with_features:
        write_features(out_dir / "features.npz", frames=[u.frames for u in utts],
                       transcripts=[u.row["transcript"] for u in utts],
                       files=[u.row["file"] for u in utts], frontend=FrontendConfig())
    return utts


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data.make_dataset", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("build/dataset"),
                   help="output directory of the train and validation splits")
    p.add_argument("--train", type=_positive, default=6000, help="training utterances")
    p.add_argument("--validation", type=_positive, default=300, help="validation utterances")
    p.add_argument("--testset", type=Path, default=None,
                   help="write only the held-out test set (no features) into this directory")
    p.add_argument("--test", type=_positive, default=40, help="test utterances")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=_positive, default=2)
    args = p.parse_args(argv)
    try:
        require_tools()
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start = time.monotonic()
    if args.testset is not None:
        splits = [("test", args.test, args.testset, False)]
    else:
        splits = [("train", args.train, args.out / "train", True),
                  ("validation", args.validation, args.out / "validation", True)]
    for split, count, out_dir, with_features in splits:
        utts = generate_split(split, count=count, out_dir=out_dir, seed=args.seed,
                              workers=args.workers, with_features=with_features)
        hours = sum(float(u.row["duration_s"]) for u in utts) / 3600.0
        size = sum(f.stat().st_size for f in out_dir.glob(f"{split}_*.wav"))
        print(f"{split}: {len(utts)} utterances, {hours:.2f} h, {size / 1e6:.1f} MB of WAV "
              f"in {out_dir}")
    print(f"done in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
