"""Tests for golden.biasing: Aho-Corasick context biasing and its use in beam search."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.biasing import DEFAULT_BONUS, ContextBiasing
from golden.decoding import BeamConfig, BeamDecoder
from golden.tokens import Tokenizer, default_tokens

TOK = Tokenizer(default_tokens())
SCALE = 0.1


def walk(bias, tokens):
    """Per-token deltas, the finalize delta and the states visited."""
    state, deltas, states = bias.initial_state, [], []
    for t in tokens:
        state, d = bias.advance(state, t)
        deltas.append(d)
        states.append(state)
    return deltas, bias.finalize(state), states


def occurrences(phrases, seq):
    """Brute force: sum of len(p) over every (overlapping) occurrence of each distinct p."""
    total = 0
    for p in {tuple(p) for p in phrases}:
        total += len(p) * sum(tuple(seq[i:i + len(p)]) == p for i in range(len(seq)))
    return total


# --- trie rules ---------------------------------------------------------------------


def test_each_matching_token_earns_the_bonus_and_completion_keeps_it():
    bias = ContextBiasing([TOK.encode("ann")], bonus=1.5)
    deltas, final, _ = walk(bias, TOK.encode("ann x"))
    assert deltas == [1.5, 1.5, 1.5, 0.0, 0.0]
    assert final == 0.0


def test_failed_partial_match_is_cancelled():
    bias = ContextBiasing([TOK.encode("anna")], bonus=1.0)
    deltas, final, _ = walk(bias, TOK.encode("anx"))
    assert deltas == [1.0, 1.0, -2.0]
    assert final == 0.0
    deltas, final, _ = walk(bias, TOK.encode("ann"))
    assert deltas == [1.0, 1.0, 1.0]
    assert final == -3.0  # unfinished at the end of the utterance


def test_failure_link_suffix_keeps_its_share():
    # After "ab" the token "c" breaks "abx" but "bc" is a prefix of "bcd": the bonus for
    # "a" is cancelled, "b" keeps its bonus and "c" earns one.
    bias = ContextBiasing([[1, 2, 9], [2, 3, 4]], bonus=1.0)
    deltas, final, states = walk(bias, [1, 2, 3])
    assert deltas == [1.0, 1.0, 0.0]
    assert final == -2.0
    deltas, final, _ = walk(bias, [1, 2, 3, 4])
    assert deltas == [1.0, 1.0, 0.0, 1.0]
    assert final == 0.0  # "bcd" completed: 3 tokens of bonus kept


def test_classic_aho_corasick_dictionary():
    # he, she, his, hers over letters: "ushers" contains "she", "he" and "hers".
    words = ["he", "she", "his", "hers"]
    bias = ContextBiasing([TOK.encode(w) for w in words], bonus=1.0)
    deltas, final, _ = walk(bias, TOK.encode("ushers"))
    assert sum(deltas) + final == pytest.approx(3 + 2 + 4)
    assert sum(deltas) + final == occurrences([TOK.encode(w) for w in words],
                                              TOK.encode("ushers"))


def test_prefix_phrase_is_kept_when_longer_phrase_fails():
    bias = ContextBiasing([[1, 2], [1, 2, 3, 4]], bonus=1.0)
    deltas, final, _ = walk(bias, [1, 2, 3, 5])
    assert deltas == [1.0, 1.0, 1.0, -1.0]  # only the "3" beyond "12" is given back
    assert sum(deltas) + final == 2.0


def test_blank_is_transparent_and_unknown_tokens_reset():
    bias = ContextBiasing([[3, 4]], bonus=2.0)
    s, d = bias.advance(bias.initial_state, 3)
    assert bias.advance(s, 0) == (s, 0.0)
    assert bias.advance(s, 27) == (0, -2.0)


def test_duplicates_merge_and_defaults():
    bias = ContextBiasing([[1, 2], [1, 2]])
    assert bias.bonus == DEFAULT_BONUS
    assert bias.num_nodes == 3
    deltas, final, _ = walk(bias, [1, 2])
    assert sum(deltas) + final == 2 * DEFAULT_BONUS


@pytest.mark.parametrize("phrases, bonus, message", [
    ([], 1.0, "at least one"),
    ([[1], []], 1.0, "phrase 1 is empty"),
    ([[1, 0, 2]], 1.0, "invalid token id 0"),
    ([[-3]], 1.0, "invalid token id -3"),
    ([[1]], 0.0, "bonus"),
    ([[1]], float("nan"), "bonus"),
])
def test_invalid_arguments(phrases, bonus, message):
    with pytest.raises(ValueError, match=message):
        ContextBiasing(phrases, bonus=bonus)


def test_invalid_state():
    bias = ContextBiasing([[1]])
    with pytest.raises(ValueError, match="invalid biasing state"):
        bias.advance(5, 1)
    with pytest.raises(ValueError, match="invalid biasing state"):
        bias.finalize(-1)


phrase_lists = st.lists(st.lists(st.integers(1, 3), min_size=1, max_size=4), min_size=1,
                        max_size=4)


@settings(max_examples=200, deadline=None)
@given(phrases=phrase_lists, seq=st.lists(st.integers(1, 4), max_size=12),
       bonus=st.sampled_from([0.5, 1.0, 2.5]))
def test_net_bonus_is_bonus_times_completed_occurrences(phrases, seq, bonus):
    bias = ContextBiasing(phrases, bonus=bonus)
    deltas, final, _ = walk(bias, seq)
    expected = bonus * occurrences(phrases, seq)
    assert sum(deltas) + final == pytest.approx(expected, abs=1e-9)
    # What has been credited so far is never negative (cancellation never overshoots).
    assert min(itertools.accumulate(deltas), default=0.0) >= -1e-9
    if expected == 0:  # a sequence containing no listed phrase nets exactly zero
        assert sum(deltas) + final == pytest.approx(0.0, abs=1e-9)


# --- beam search integration ----------------------------------------------------------


def frame_logits(spec):
    """Context-independent joint: per frame a {char or '<b>': logit} dict, others -60."""
    rows = []
    for frame in spec:
        logits = np.full(len(TOK), -60, dtype=np.int8)
        for ch, val in frame.items():
            logits[0 if ch == "<b>" else TOK.encode(ch)[0]] = val
        rows.append(logits)
    return rows


def decode(rows, biasing=None, beam=4):
    def predictor(token, state):
        return np.zeros(1, np.int8), state + (token,)

    def joint(enc, pred):
        return rows[int(enc[0])]

    dec = BeamDecoder(predictor, joint, SCALE, (), config=BeamConfig(beam=beam),
                      biasing=biasing)
    for f in range(len(rows)):
        dec.step(np.array([f], np.int8), f)
    return dec.result()


# Acoustics spell "john" with the "h" only slightly ahead of blank at frame 2.
NEAR_MISS = frame_logits([{"j": 60}, {"o": 60}, {"h": 52, "<b>": 50}, {"n": 60},
                          {"<b>": 60}])


def test_biasing_lifts_listed_name_over_near_miss():
    plain = decode(NEAR_MISS)
    assert TOK.decode(plain.best.tokens) == "john"
    biased = decode(NEAR_MISS, ContextBiasing([TOK.encode("jon")], bonus=1.0))
    assert TOK.decode(biased.best.tokens) == "jon"
    # The winner carries exactly the phrase bonus on top of its acoustic score.
    jon_plain = next(h for h in plain if TOK.decode(h.tokens) == "jon")
    assert biased.best.score == pytest.approx(jon_plain.score + 3.0, abs=1e-9)


def test_unlisted_result_has_zero_net_bonus():
    # "john" starts like the phrase "jon" (partial match "jo") and then fails.
    bias = ContextBiasing([TOK.encode("jon")])
    plain = {h.tokens: h.score for h in decode(NEAR_MISS, beam=8)}
    biased = {h.tokens: h.score for h in decode(NEAR_MISS, bias, beam=8)}
    john = tuple(TOK.encode("john"))
    assert biased[john] == pytest.approx(plain[john], abs=1e-9)
    # Stopped after "jo" (+2 pending), the unfinished match is cancelled by finalize.
    plain = {h.tokens: h.score for h in decode(NEAR_MISS[:3], beam=8)}
    biased = {h.tokens: h.score for h in decode(NEAR_MISS[:3], bias, beam=8)}
    for text in ("jo", "joh"):
        tokens = tuple(TOK.encode(text))
        assert biased[tokens] == pytest.approx(plain[tokens], abs=1e-9)


def test_weak_bonus_does_not_overturn_clear_acoustics():
    rows = frame_logits([{"j": 60}, {"o": 60}, {"h": 90, "<b>": 10}, {"n": 60},
                         {"<b>": 60}])
    biased = decode(rows, ContextBiasing([TOK.encode("jon")], bonus=1.0))
    assert TOK.decode(biased.best.tokens) == "john"


def test_biasing_state_is_part_of_the_hypothesis_score_path():
    # Exhaustive beam: every hypothesis score is the exact acoustic total plus its net
    # bonus, which requires merging only hypotheses with equal biasing state.
    rows = [np.array(r, dtype=np.int8) for r in
            ([10, 20, 5], [15, 5, 20], [20, 10, 10])]
    bias = ContextBiasing([[1, 2]], bonus=1.0)
    plain = {h.tokens: h.score for h in decode(rows, beam=64)}
    biased = {h.tokens: h.score for h in decode(rows, bias, beam=64)}
    assert set(plain) == set(biased)
    for tokens, score in plain.items():
        assert biased[tokens] == pytest.approx(score + occurrences([[1, 2]], tokens),
                                               abs=1e-9)
