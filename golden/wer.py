"""Word and character error rates: Levenshtein alignment of a hypothesis to a reference.

``WER = (S + D + I) / N`` with ``S``, ``D``, ``I`` the substitutions, deletions and
insertions of a minimum-edit alignment of the hypothesis words to the ``N`` reference
words; ``CER`` is the same on characters. Over a corpus the counts are summed first and
divided once (the usual corpus WER, not a mean of per-utterance rates).

Text is compared as given, apart from whitespace: words are the whitespace-separated
pieces, and for characters the words are re-joined with single spaces, so the CER counts
spaces (word boundaries) as characters. No other normalization (case, punctuation) is
done: transcripts in this project are already lowercase letters, space and apostrophe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ErrorCounts", "align", "char_errors", "corpus_errors", "paired_bootstrap",
           "word_errors"]


@dataclass(frozen=True)
class ErrorCounts:
    """Edit counts of one alignment (or a sum of them).

    Attributes
    ----------
    substitutions, deletions, insertions : int
        Edits of a minimum-edit alignment. Their total is unique; the split between them
        follows :func:`align`'s tie rule.
    reference_length : int
        Reference tokens (words or characters).
    """

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_length: int = 0

    def __post_init__(self):
        for name in ("substitutions", "deletions", "insertions", "reference_length"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"ErrorCounts.{name} must be a non-negative int, got {v!r}")
        if self.substitutions + self.deletions > self.reference_length:
            raise ValueError("substitutions + deletions cannot exceed the reference length")

    @property
    def errors(self) -> int:
        """``S + D + I``: the edit distance."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """``errors / reference_length`` (may exceed 1 with many insertions).

        Raises
        ------
        ValueError
            If the reference is empty (the rate is undefined).
        """
        if self.reference_length == 0:
            raise ValueError("error rate of an empty reference is undefined")
        return self.errors / self.reference_length

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        if not isinstance(other, ErrorCounts):
            return NotImplemented
        return ErrorCounts(self.substitutions + other.substitutions,
                           self.deletions + other.deletions,
                           self.insertions + other.insertions,
                           self.reference_length + other.reference_length)

    def to_dict(self) -> dict:
        return {"substitutions": self.substitutions, "deletions": self.deletions,
                "insertions": self.insertions, "errors": self.errors,
                "reference_length": self.reference_length}


def align(reference: Sequence, hypothesis: Sequence) -> ErrorCounts:
    """Minimum-edit (Levenshtein) alignment of two token sequences.

    Every edit costs 1. Among the minimum-edit alignments, the counts are those of the
    backtrace that prefers, at each step from the end, a match or substitution, then a
    deletion, then an insertion: ``"a b"`` against ``"b a"`` counts two substitutions
    rather than a deletion and an insertion (both cost 2).

    Parameters
    ----------
    reference, hypothesis : sequence
        Tokens compared with ``==`` (words, characters, ids).
    """
    for name, seq in (("reference", reference), ("hypothesis", hypothesis)):
        if isinstance(seq, str) or not isinstance(seq, Sequence):
            raise TypeError(f"{name} must be a sequence of tokens (use word_errors or "
                            f"char_errors for text), got {type(seq).__name__}")
    n, m = len(reference), len(hypothesis)
    # d[i][j]: edits turning reference[:i] into hypothesis[:j].
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        row, prev, r = d[i], d[i - 1], reference[i - 1]
        for j in range(1, m + 1):
            row[j] = min(prev[j - 1] + (r != hypothesis[j - 1]), prev[j] + 1, row[j - 1] + 1)
    s = dl = ins = 0
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i][j] == d[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]):
            s += reference[i - 1] != hypothesis[j - 1]
            i, j = i - 1, j - 1
        elif i > 0 and d[i][j] == d[i - 1][j] + 1:
            dl += 1
            i -= 1
        else:
            ins += 1
            j -= 1
    return ErrorCounts(int(s), dl, ins, n)


def _text(name: str, text) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a string, got {type(text).__name__}")
    return text


def word_errors(reference: str, hypothesis: str) -> ErrorCounts:
    """:func:`align` on whitespace-separated words."""
    return align(_text("reference", reference).split(), _text("hypothesis", hypothesis).split())


def char_errors(reference: str, hypothesis: str) -> ErrorCounts:
    """:func:`align` on characters, words re-joined by single spaces (spaces count)."""
    ref = " ".join(_text("reference", reference).split())
    hyp = " ".join(_text("hypothesis", hypothesis).split())
    return align(list(ref), list(hyp))


def corpus_errors(references: Sequence[str], hypotheses: Sequence[str], *,
                  unit: str = "word") -> ErrorCounts:
    """Summed counts over a corpus; ``.rate`` is the corpus WER (``unit="word"``) or CER
    (``unit="char"``).

    Raises
    ------
    ValueError
        If the lists differ in length or ``unit`` is unknown.
    """
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    count = word_errors if unit == "word" else char_errors
    total = ErrorCounts()
    for ref, hyp in zip(references, hypotheses):
        total = total + count(ref, hyp)
    return total


def paired_bootstrap(references: Sequence[str], hypotheses_a: Sequence[str],
                     hypotheses_b: Sequence[str], *, resamples: int = 10000,
                     confidence: float = 0.95, seed: int = 0) -> dict:
    """How far the corpus WER difference ``A - B`` moves when the utterances are redrawn.

    The paired bootstrap over utterances (Bisani and Ney, 2004): draw as many utterances
    as the corpus has, with replacement, and recompute ``100 * (errors_A - errors_B) /
    reference_words`` on the draw; the interval is the central ``confidence`` share of
    the draws (draws of only empty references, which have no rate, are left out). Both
    systems are scored on the same draw, so what the utterances have in common (a hard
    recording) cancels.

    Returns
    -------
    dict
        ``difference_points`` (on the whole corpus), ``low`` and ``high`` (the interval,
        points), ``confidence``, ``resamples`` (the draws used), ``utterances``,
        ``point_per_word`` (how many points one word of the corpus is) and
        ``prob_a_worse`` (share of draws with ``A`` above ``B``).

    Raises
    ------
    ValueError
        If the lists differ in length, are empty, or have no reference words, or
        ``resamples`` / ``confidence`` are out of range.
    """
    n = len(references)
    if not (len(hypotheses_a) == len(hypotheses_b) == n):
        raise ValueError(f"{n} references but {len(hypotheses_a)} and {len(hypotheses_b)} "
                         "hypotheses")
    if n == 0:
        raise ValueError("paired_bootstrap needs at least one utterance")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be a positive int, got {resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    a = [word_errors(r, h) for r, h in zip(references, hypotheses_a)]
    b = [word_errors(r, h) for r, h in zip(references, hypotheses_b)]
    words = np.array([x.reference_length for x in a], np.int64)
    if words.sum() == 0:
        raise ValueError("the references have no words")
    diff = np.array([x.errors - y.errors for x, y in zip(a, b)], np.int64)
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    picked_words = words[draws].sum(axis=1)
    usable = picked_words > 0  # a draw of only empty references has no rate
    points = 100.0 * diff[draws].sum(axis=1)[usable] / picked_words[usable]
    tail = 100.0 * (1.0 - confidence) / 2.0
    return {"difference_points": float(100.0 * diff.sum() / words.sum()),
            "low": float(np.percentile(points, tail)),
            "high": float(np.percentile(points, 100.0 - tail)),
            "confidence": confidence, "resamples": int(usable.sum()), "utterances": n,
            "point_per_word": float(100.0 / words.sum()),
            "prob_a_worse": float((points > 0).mean())}
