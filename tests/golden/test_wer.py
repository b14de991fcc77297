"""Tests for golden.wer: Levenshtein word and character error rates on hand-made cases."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from golden.wer import (ErrorCounts, align, char_errors, corpus_errors, paired_bootstrap,
                        word_errors)


@pytest.mark.parametrize("ref, hyp, s, d, i", [
    ("call anna", "call anna", 0, 0, 0),
    ("call anna", "call hannah", 1, 0, 0),
    ("call anna now", "call now", 0, 1, 0),
    ("call anna", "call anna now please", 0, 0, 2),
    ("turn on the kitchen lights", "turn the kitchen light", 1, 1, 0),
    ("a b", "b a", 2, 0, 0),  # tie rule: substitutions before a deletion + insertion
    ("a b c", "", 0, 3, 0),
    ("", "a", 0, 0, 1),
    ("", "", 0, 0, 0),
    ("x a b c", "a b c y", 0, 1, 1),  # a shift costs a deletion and an insertion
])
def test_word_errors_hand_made(ref, hyp, s, d, i):
    c = word_errors(ref, hyp)
    assert (c.substitutions, c.deletions, c.insertions) == (s, d, i)
    assert c.reference_length == len(ref.split())
    assert c.errors == s + d + i


def test_whitespace_is_not_a_word():
    assert word_errors("  call   anna ", "call anna").errors == 0
    assert char_errors("call  anna", " call anna").errors == 0


def test_char_errors_count_spaces_and_letters():
    c = char_errors("niamh", "neeve")  # n=n, i->e, a->e, m->v, h->e
    assert (c.substitutions, c.deletions, c.insertions, c.reference_length) == (4, 0, 0, 5)
    c = char_errors("call anna", "callanna")  # the missing space is one deletion
    assert (c.substitutions, c.deletions, c.insertions, c.reference_length) == (0, 1, 0, 9)
    assert char_errors("ab", "abcd").insertions == 2


def test_rate_and_corpus_sum():
    assert word_errors("a b c d", "a x c").rate == pytest.approx(2 / 4)
    assert word_errors("a", "b c d").rate == 3.0  # insertions can push WER above 1
    total = corpus_errors(["a b c d", "e f"], ["a b c d", "e g"])
    # Corpus WER sums the counts: 1 error / 6 words, not the mean of 0 and 1/2.
    assert (total.errors, total.reference_length) == (1, 6)
    assert total.rate == pytest.approx(1 / 6)
    cer = corpus_errors(["ab", "cd"], ["ab", "c"], unit="char")
    assert (cer.deletions, cer.reference_length) == (1, 4)
    assert total.to_dict() == {"substitutions": 1, "deletions": 0, "insertions": 0,
                               "errors": 1, "reference_length": 6}


def test_bad_inputs_have_clear_errors():
    with pytest.raises(ValueError, match="empty reference"):
        _ = word_errors("", "a").rate
    with pytest.raises(TypeError, match="reference must be a string"):
        word_errors(["a"], "a")
    with pytest.raises(TypeError, match="use word_errors or char_errors"):
        align("abc", ["a"])
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        corpus_errors(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="unit must be"):
        corpus_errors(["a"], ["a"], unit="phone")
    with pytest.raises(ValueError, match="non-negative int"):
        ErrorCounts(substitutions=-1)
    with pytest.raises(ValueError, match="cannot exceed"):
        ErrorCounts(substitutions=2, reference_length=1)


def _brute_distance(ref, hyp):
    """Edit distance by exhaustive search over alignments (tiny inputs only)."""
    if not ref:
        return len(hyp)
    if not hyp:
        return len(ref)
    return min(_brute_distance(ref[1:], hyp[1:]) + (ref[0] != hyp[0]),
               _brute_distance(ref[1:], hyp) + 1, _brute_distance(ref, hyp[1:]) + 1)


@given(st.lists(st.sampled_from("abc"), max_size=6), st.lists(st.sampled_from("abc"),
                                                              max_size=6))
def test_distance_is_minimal_and_counts_are_consistent(ref, hyp):
    c = align(ref, hyp)
    assert c.errors == _brute_distance(ref, hyp)
    # An alignment's counts must explain both lengths.
    assert len(ref) - c.deletions + c.insertions == len(hyp)
    assert align(hyp, ref).errors == c.errors  # distance is symmetric


def test_all_short_pairs_agree_with_brute_force():
    seqs = [list(p) for n in range(4) for p in itertools.product("ab", repeat=n)]
    for ref in seqs:
        for hyp in seqs:
            assert align(ref, hyp).errors == _brute_distance(ref, hyp)


REFS = ["call anna", "turn on the kitchen lights", "set a timer for ten minutes",
        "what is the time", "hey nep"]


def test_paired_bootstrap_same_system_is_zero():
    hyps = ["call hannah", "turn the kitchen light", "set a timer", "what is the time", ""]
    b = paired_bootstrap(REFS, hyps, hyps, resamples=500)
    assert b["difference_points"] == b["low"] == b["high"] == 0.0
    assert b["prob_a_worse"] == 0.0


def test_paired_bootstrap_difference_and_interval():
    worse = ["call hannah", "turn the kitchen light", "set a timer", "what is time", "hey"]
    better = ["call anna", "turn on the kitchen light", "set a timer for ten", REFS[3], "hey"]
    b = paired_bootstrap(REFS, worse, better, resamples=2000, seed=3)
    ea, eb = corpus_errors(REFS, worse), corpus_errors(REFS, better)
    assert b["difference_points"] == pytest.approx(100 * (ea.rate - eb.rate))
    assert b["point_per_word"] == pytest.approx(100 / ea.reference_length)
    # A is no better than B on any utterance and worse on four: every draw but one made
    # only of the tie ("hey nep") is above zero.
    assert 0 < b["low"] <= b["difference_points"] <= b["high"]
    assert b["prob_a_worse"] > 0.99
    # Swapping the systems mirrors the interval.
    r = paired_bootstrap(REFS, better, worse, resamples=2000, seed=3)
    assert (r["low"], r["high"]) == pytest.approx((-b["high"], -b["low"]))
    # Seeded: the same draws again.
    assert paired_bootstrap(REFS, worse, better, resamples=2000, seed=3) == b


def test_paired_bootstrap_interval_narrows_with_confidence():
    a = ["call hannah", "turn on the kitchen lights", "set a timer", "what is the time", ""]
    c = ["call anna", "turn the kitchen light", "set a timer for ten minutes", "what time", "hey nep"]
    wide = paired_bootstrap(REFS, a, c, resamples=4000, confidence=0.99)
    narrow = paired_bootstrap(REFS, a, c, resamples=4000, confidence=0.5)
    assert wide["low"] < narrow["low"] <= narrow["high"] < wide["high"]


@pytest.mark.parametrize("kwargs, match", [
    ({"hypotheses_b": ["x"]}, "references but"),
    ({"resamples": 0}, "resamples"),
    ({"resamples": True}, "resamples"),
    ({"confidence": 1.0}, "confidence"),
])
def test_paired_bootstrap_rejects_bad_input(kwargs, match):
    args = {"references": REFS, "hypotheses_a": REFS, "hypotheses_b": REFS}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        paired_bootstrap(**args)


def test_paired_bootstrap_rejects_empty_corpora():
    with pytest.raises(ValueError, match="at least one"):
        paired_bootstrap([], [], [])
    with pytest.raises(ValueError, match="no words"):
        paired_bootstrap(["", ""], ["a", ""], ["", ""])
