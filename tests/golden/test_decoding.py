"""Tests for golden.decoding: greedy and modified beam search on hand-made networks."""

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.decoding import (
    LATTICE_SCHEMA,
    BeamConfig,
    BeamDecoder,
    FrameInfo,
    GreedyConfig,
    GreedyDecoder,
    Hypothesis,
    NBest,
    PredictorCache,
    build_lattice,
    log_softmax,
)
from golden.tokens import Tokenizer

SCALE = 0.125  # logit_scale of every fake joint below


class FakeNet:
    """A network whose joint logits are ``logit_fn(frame, prefix)``.

    The predictor state is the tuple of tokens fed so far (start token included), so it
    is immutable; ``pred_out`` carries the prefix in int8 (-1 padded) and ``enc_frame``
    carries the frame index, which lets the joint look both up.
    """

    WIDTH = 16

    def __init__(self, logit_fn, vocab):
        self.logit_fn = logit_fn
        self.vocab = vocab
        self.predictor_log = []  # (token, state) per call
        self.joint_calls = 0

    def predictor(self, token, state):
        self.predictor_log.append((token, state))
        history = state + (token,)
        prefix = history[1:]  # drop the start token
        out = np.full(self.WIDTH, -1, dtype=np.int8)
        out[:len(prefix)] = prefix
        return out, history

    def joint(self, enc_frame, pred_out):
        self.joint_calls += 1
        prefix = tuple(int(t) for t in pred_out if t >= 0)
        logits = np.asarray(self.logit_fn(int(enc_frame[0]), prefix), dtype=np.int32)
        assert logits.shape == (self.vocab,)
        return logits

    def run(self, decoder, num_frames):
        for f in range(num_frames):
            decoder.step(np.array([f], dtype=np.int8), f)
        return decoder.result()


def greedy(net, **kw):
    return GreedyDecoder(net.predictor, net.joint, SCALE, (), **kw)


def beam(net, **kw):
    return BeamDecoder(net.predictor, net.joint, SCALE, (), **kw)


def random_logit_fn(seed, vocab):
    """Deterministic pseudo-random int8 logits per (frame, prefix)."""
    def fn(frame, prefix):
        rng = np.random.default_rng([seed, frame, len(prefix), *prefix])
        return rng.integers(-40, 41, size=vocab)
    return fn


def table_fn(rows, vocab):
    """Logits from ``rows[(frame, prefix)]`` = {token: logit}; unspecified logits are 0."""
    def fn(frame, prefix):
        logits = np.zeros(vocab, dtype=np.int32)
        for tok, val in rows.get((frame, prefix), {}).items():
            logits[tok] = val
        return logits
    return fn


def brute_force(logit_fn, vocab, num_frames):
    """Exact log-probability of every token sequence under one-symbol-per-frame
    alignments (what modified beam search computes when nothing is pruned)."""
    totals = {}
    for choice in itertools.product(range(vocab), repeat=num_frames):
        prefix, logp = (), 0.0
        for f, k in enumerate(choice):
            lp = log_softmax(np.asarray(logit_fn(f, prefix)), SCALE)
            logp += lp[k]
            if k:
                prefix += (k,)
        totals.setdefault(prefix, []).append(logp)
    return {p: float(np.logaddexp.reduce(v)) for p, v in totals.items()}


# --- log-softmax --------------------------------------------------------------------


def test_log_softmax_matches_definition_and_is_stable():
    q = np.array([127, -128, 0, 5], dtype=np.int8)
    got = log_softmax(q, 0.5)
    x = q.astype(np.float64) * 0.5
    assert got == pytest.approx(x - math.log(np.exp(x).sum()), abs=1e-12)
    assert got.dtype == np.float64
    big = log_softmax(np.array([2**31 - 1, 0], dtype=np.int32), 1.0)
    assert np.all(np.isfinite(big[:1])) and big[0] == 0.0


# --- greedy -------------------------------------------------------------------------


def test_greedy_emits_several_symbols_in_one_frame():
    rows = {
        (0, ()): {1: 40},            # 'a'
        (0, (1,)): {2: 40},          # then 'b' in the same frame
        (0, (1, 2)): {0: 40},        # then blank
        (1, (1, 2)): {0: 40},
        (2, (1, 2)): {1: 30},        # 'a' again at frame 2
        (2, (1, 2, 1)): {0: 10},
    }
    fn = table_fn(rows, 3)
    net = FakeNet(fn, 3)
    dec = greedy(net)
    infos = [dec.step(np.array([f], np.int8), f) for f in range(3)]
    hyp = dec.result().best
    assert hyp.tokens == (1, 2, 1)
    assert hyp.token_frames == (0, 0, 2)
    lp = lambda f, p, k: log_softmax(fn(f, p), SCALE)[k]  # noqa: E731
    expected = [lp(0, (), 1), lp(0, (1,), 2), lp(0, (1, 2), 0), lp(1, (1, 2), 0),
                lp(2, (1, 2), 1), lp(2, (1, 2, 1), 0)]
    assert hyp.score == pytest.approx(sum(expected), abs=1e-12)
    assert hyp.token_scores == pytest.approx(
        [sum(expected[:1]), sum(expected[:2]), sum(expected[:5])], abs=1e-12)
    assert [i.emitted for i in infos] == [True, False, True]
    # Blank probability is taken on the hypothesis entering the frame.
    assert infos[1].blank_prob == pytest.approx(math.exp(lp(1, (1, 2), 0)))
    assert infos[0].blank_prob == pytest.approx(math.exp(lp(0, (), 0)))


def test_greedy_caps_symbols_per_frame_without_blank_term():
    fn = lambda f, p: [0, 50, 0]  # noqa: E731 - token 1 always wins
    net = FakeNet(fn, 3)
    dec = greedy(net, config=GreedyConfig(max_symbols_per_frame=3))
    hyp = net.run(dec, 2).best
    assert hyp.tokens == (1,) * 6
    assert hyp.token_frames == (0, 0, 0, 1, 1, 1)
    assert hyp.score == pytest.approx(6 * log_softmax(np.array(fn(0, ())), SCALE)[1])
    assert all(i.emitted for i in dec.frame_info)


def test_greedy_ties_go_to_lowest_id():
    net = FakeNet(lambda f, p: [0, 0, 0], 3)
    assert net.run(greedy(net), 3).best.tokens == ()  # blank (id 0) wins a three-way tie
    net = FakeNet(lambda f, p: [0, 7, 7] if not p else [9, 0, 0], 3)
    assert net.run(greedy(net), 2).best.tokens == (1,)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), vocab=st.integers(2, 5), frames=st.integers(1, 6))
def test_beam_one_equals_greedy_one_symbol(seed, vocab, frames):
    fn = random_logit_fn(seed, vocab)
    gnet, bnet = FakeNet(fn, vocab), FakeNet(fn, vocab)
    g = gnet.run(greedy(gnet, config=GreedyConfig(max_symbols_per_frame=1)), frames).best
    b = bnet.run(beam(bnet, config=BeamConfig(beam=1)), frames).best
    assert b.tokens == g.tokens
    assert b.token_frames == g.token_frames
    assert b.score == pytest.approx(g.score, abs=1e-9)


# --- modified beam search -----------------------------------------------------------


def test_merging_log_adds_two_alignments():
    # Two frames, one token 'a': emitted at frame 0 or at frame 1. Both alignments end as
    # the same hypothesis, whose score must be the log of the summed probabilities.
    rows = {(0, ()): {0: 8, 1: 10, 2: -20}, (1, ()): {0: 4, 1: 12, 2: -20},
            (1, (1,)): {0: 16, 1: -20, 2: -20}}
    fn = table_fn(rows, 3)
    net = FakeNet(fn, 3)
    nbest = net.run(beam(net, config=BeamConfig(beam=8)), 2)
    got = {h.tokens: h.score for h in nbest}
    lp = lambda f, p: log_softmax(fn(f, p), SCALE)  # noqa: E731
    p_a = np.logaddexp(lp(0, ())[1] + lp(1, (1,))[0], lp(0, ())[0] + lp(1, ())[1])
    assert got[(1,)] == pytest.approx(p_a, abs=1e-12)
    assert got[()] == pytest.approx(lp(0, ())[0] + lp(1, ())[0], abs=1e-12)
    # The merged hypothesis keeps the alignment of its stronger path.
    stronger = 0 if lp(0, ())[1] + lp(1, (1,))[0] > lp(0, ())[0] + lp(1, ())[1] else 1
    assert nbest[[h.tokens for h in nbest].index((1,))].token_frames == (stronger,)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), frames=st.integers(1, 4))
def test_unpruned_beam_equals_brute_force(seed, frames):
    vocab = 3
    fn = random_logit_fn(seed, vocab)
    net = FakeNet(fn, vocab)
    nbest = net.run(beam(net, config=BeamConfig(beam=64)), frames)
    exact = brute_force(fn, vocab, frames)
    assert {h.tokens for h in nbest} == set(exact)
    for h in nbest:
        assert h.score == pytest.approx(exact[h.tokens], abs=1e-9)
    keys = [(-h.normalized_score, h.tokens) for h in nbest]
    assert keys == sorted(keys)


def test_pruning_keeps_best_raw_scores():
    fn = random_logit_fn(7, 5)
    full_net, net = FakeNet(fn, 5), FakeNet(fn, 5)
    full = full_net.run(beam(full_net, config=BeamConfig(beam=1000)), 1)
    pruned = net.run(beam(net, config=BeamConfig(beam=3, length_normalize=False)), 1)
    # After one frame nothing can have been pruned earlier, so the 3 kept are the top 3.
    top3 = sorted(full, key=lambda h: (-h.score, h.tokens))[:3]
    assert [h.tokens for h in pruned] == [h.tokens for h in top3]
    assert len(pruned) == 3


def test_predictor_called_once_per_distinct_prefix():
    fn = random_logit_fn(3, 6)
    net = FakeNet(fn, 6)
    dec = beam(net)
    net.run(dec, 12)
    prefixes = [state[1:] + (token,) if state else () for token, state in net.predictor_log]
    assert len(prefixes) == len(set(prefixes))  # no prefix evaluated twice
    assert dec.predictor_calls == len(net.predictor_log)
    assert net.predictor_log[0] == (0, ())  # blank start token on the caller's state
    # The joint runs once per beam entry per frame; the cache makes the predictor cheaper.
    assert net.joint_calls > dec.predictor_calls


def test_predictor_cache_computes_missing_ancestors():
    calls = []

    def pred(token, state):
        calls.append(token)
        return np.array([token], np.int8), state + (token,)

    cache = PredictorCache(pred, (), start_token=0)
    assert cache.output((4, 5)).tolist() == [5]
    assert calls == [0, 4, 5] and len(cache) == 3 and (4,) in cache
    cache.output((4, 6))
    cache.output(())
    assert calls == [0, 4, 5, 6] and cache.calls == 4


def test_ties_are_broken_by_token_sequence_and_runs_repeat():
    fn = lambda f, p: [10, 20, 20, 20]  # noqa: E731 - tokens 1, 2, 3 tie everywhere
    results = []
    for _ in range(2):
        net = FakeNet(fn, 4)
        dec = beam(net, config=BeamConfig(beam=4, length_normalize=False))
        net.run(dec, 3)
        results.append((dec.result(), json.dumps(dec.lattice(40.0))))
    nbest = results[0][0]
    assert results[0] == results[1]
    # Equal scores: the lexicographically smaller token sequence ranks first.
    assert [h.tokens for h in nbest] == [(1, 1, 1), (1, 1, 2), (1, 1, 3), (1, 2, 1)]
    assert len({h.score for h in nbest}) == 1


def test_length_normalization_changes_final_ranking():
    # Frame 0: token 1 is likely. Frame 1: after (1,), token 2 and blank are equally
    # likely, so (1,) and (1, 2) have almost the same raw score; (1,) is slightly ahead.
    rows = {(0, ()): {1: 40}, (1, (1,)): {0: 9, 2: 8}}
    fn = table_fn(rows, 3)
    raw_net, norm_net = FakeNet(fn, 3), FakeNet(fn, 3)
    raw = raw_net.run(beam(raw_net, config=BeamConfig(length_normalize=False)), 2)
    norm = norm_net.run(beam(norm_net), 2)
    assert raw.best.tokens == (1,)
    assert norm.best.tokens == (1, 2)
    assert raw.best.score > norm.best.score
    assert norm.best.normalized_score > raw.best.normalized_score


def test_beam_frame_info_follows_best_path():
    rows = {(0, ()): {1: 60}, (1, (1,)): {0: 60}, (2, (1,)): {0: 3, 2: 50}}
    fn = table_fn(rows, 3)
    net = FakeNet(fn, 3)
    dec = beam(net)
    infos = [dec.step(np.array([f], np.int8), f) for f in range(3)]
    assert [i.emitted for i in infos] == [True, False, True]
    assert all(isinstance(i, FrameInfo) for i in infos)
    assert infos[0].blank_prob == pytest.approx(math.exp(log_softmax(fn(0, ()), SCALE)[0]))
    assert infos[1].blank_prob == pytest.approx(math.exp(log_softmax(fn(1, (1,)), SCALE)[0]))
    assert infos[2].blank_prob == pytest.approx(math.exp(log_softmax(fn(2, (1,)), SCALE)[0]))
    assert infos[2].blank_prob < 0.01
    assert dec.frame_info == tuple(infos)
    assert dec.result().best.tokens == (1, 2)


def test_result_mid_stream_does_not_disturb_search():
    fn = random_logit_fn(11, 4)
    a_net, b_net = FakeNet(fn, 4), FakeNet(fn, 4)
    a, b = beam(a_net), beam(b_net)
    for f in range(8):
        a.step(np.array([f], np.int8), f)
        b.step(np.array([f], np.int8), f)
        b.result()
    assert a.result() == b.result()


def test_reset_starts_a_new_utterance():
    fn = random_logit_fn(5, 4)
    net = FakeNet(fn, 4)
    dec = beam(net)
    first = net.run(dec, 5)
    dec.reset()
    assert dec.predictor_calls == 0 and dec.frame_info == ()
    assert net.run(dec, 5) == first


# --- lattice ------------------------------------------------------------------------


def test_lattice_schema_times_and_score_increments():
    rows = {(0, ()): {1: 40, 0: 30}, (1, (1,)): {2: 30, 3: 29, 0: 10},
            (1, ()): {1: 30}, (2, (1, 2)): {0: 20}, (2, (1, 3)): {0: 20}}
    fn = table_fn(rows, 4)
    net = FakeNet(fn, 4)
    dec = beam(net)
    net.run(dec, 3)
    tok = Tokenizer(["<b>", "a", "b", "c"])
    lat = json.loads(json.dumps(dec.lattice(40.0, tokenizer=tok)))
    nbest = dec.result()
    assert lat["schema"] == LATTICE_SCHEMA
    assert lat["frame_ms"] == 40.0 and lat["num_frames"] == 3
    assert len(lat["hypotheses"]) == len(nbest)
    edges = {e["id"]: e for e in lat["edges"]}
    for rank, (h, entry) in enumerate(zip(nbest, lat["hypotheses"])):
        assert entry["rank"] == rank and entry["tokens"] == list(h.tokens)
        assert entry["text"] == tok.decode(h.tokens)
        path = [edges[e] for e in entry["edges"]]
        assert [e["token"] for e in path] == list(h.tokens)
        assert [e["time_ms"] for e in path] == [40.0 * f for f in h.token_frames]
        assert [e["label"] for e in path] == [tok.decode([t]) for t in h.tokens]
        total = sum(e["score"] for e in path) + entry["final_score"]
        assert total == pytest.approx(h.score, abs=1e-9)
        node = 0
        for e in path:  # the path is connected from the root
            assert e["from"] == node
            node = e["to"]
        assert entry["end_node"] == node
    # "ab" and "ac" share the edge for 'a' emitted at frame 0.
    texts = {h["text"]: h for h in lat["hypotheses"]}
    assert texts["ab"]["edges"][0] == texts["ac"]["edges"][0]
    depth = {n["id"]: n["depth"] for n in lat["nodes"]}
    assert all(depth[e["to"]] == depth[e["from"]] + 1 for e in lat["edges"])


def test_greedy_lattice_is_a_single_path():
    net = FakeNet(lambda f, p: [0, 30, 0] if len(p) < 2 else [30, 0, 0], 3)
    dec = greedy(net, config=GreedyConfig(max_symbols_per_frame=1))
    net.run(dec, 3)
    lat = dec.lattice(10.0)
    assert [e["time_ms"] for e in lat["edges"]] == [0.0, 10.0]
    assert len(lat["nodes"]) == 3 and "text" not in lat["hypotheses"][0]


# --- validation ---------------------------------------------------------------------


@pytest.mark.parametrize("make, message", [
    (lambda: GreedyConfig(max_symbols_per_frame=0), "max_symbols_per_frame"),
    (lambda: GreedyConfig(max_symbols_per_frame=2.0), "max_symbols_per_frame"),
    (lambda: BeamConfig(beam=0), "beam must be"),
    (lambda: BeamConfig(beam=True), "beam must be"),
    (lambda: BeamConfig(length_normalize=1), "length_normalize"),
    (lambda: GreedyDecoder(FakeNet(None, 3).predictor, FakeNet(None, 3).joint, 0.0, ()),
     "logit_scale"),
    (lambda: BeamDecoder(FakeNet(None, 3).predictor, FakeNet(None, 3).joint, math.inf, ()),
     "logit_scale"),
    (lambda: BeamDecoder(FakeNet(None, 3).predictor, FakeNet(None, 3).joint, 1.0, (),
                         start_token=-1), "start_token"),
])
def test_invalid_settings(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_frame_index_must_increase():
    net = FakeNet(lambda f, p: [0, 0, 0], 3)
    dec = beam(net)
    dec.step(np.array([0], np.int8), 0)
    with pytest.raises(ValueError, match="must increase"):
        dec.step(np.array([0], np.int8), 0)
    with pytest.raises(ValueError, match="non-negative"):
        greedy(net).step(np.array([0], np.int8), -1)


def test_joint_output_is_checked():
    def float_joint(enc, pred):
        return np.zeros(3, dtype=np.float32)

    net = FakeNet(None, 3)
    dec = GreedyDecoder(net.predictor, float_joint, 1.0, ())
    with pytest.raises(TypeError, match="integer logits"):
        dec.step(np.array([0], np.int8), 0)
    sizes = iter([3, 4])
    dec = BeamDecoder(net.predictor, lambda e, p: np.zeros(next(sizes), np.int8), 1.0, ())
    dec.step(np.array([0], np.int8), 0)
    with pytest.raises(ValueError, match="expected 3"):
        dec.step(np.array([1], np.int8), 1)


def test_hypothesis_and_nbest_basics():
    h = Hypothesis((1, 2), -3.0, (0, 4))
    assert h.normalized_score == -1.5
    assert Hypothesis((), -2.0, ()).normalized_score == -2.0
    assert NBest([h]).best is h
    with pytest.raises(IndexError):
        NBest().best
    with pytest.raises(ValueError, match="token_frames has 1 entries for 2 tokens"):
        Hypothesis((1, 2), -3.0, (0,))
    with pytest.raises(ValueError, match="token_scores has 1 entries"):
        Hypothesis((1, 2), -3.0, (0, 1), (-1.0,))
    with pytest.raises(ValueError, match="no token_scores"):
        build_lattice([h], frame_ms=10.0, num_frames=5)
    with pytest.raises(ValueError, match="frame_ms"):
        GreedyDecoder(FakeNet(None, 3).predictor, FakeNet(None, 3).joint, 1.0, ()).lattice(0)


def test_numpy_scalar_settings_are_accepted():
    net = FakeNet(lambda f, p: [0, 30, 0] if not p else [30, 0, 0], 3)
    dec = GreedyDecoder(net.predictor, net.joint, np.float32(0.125), ())
    net.run(dec, 2)
    assert dec.lattice(np.float64(40.0))["edges"][0]["time_ms"] == 0.0
    assert dec.result().best.tokens == (1,)
