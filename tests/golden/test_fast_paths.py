"""The fast paths give exactly the results of the straightforward ones.

* ``golden.layers.Requantizer`` / ``QLinear`` against ``golden.numerics`` (edge values);
* ``golden.model.FastKernels`` (tabulated LSTM, split and cached joint, ``joint_batch``)
  against ``QuantModel``'s reference methods and ``QLSTM.step``, including accumulators
  that wrap around int32;
* ``log_softmax_rows`` against ``log_softmax`` row by row;
* ``BeamDecoder``'s vectorized frame step against its reference step (and with or
  without ``joint_batch``) on table networks with merges, ties and biasing;
* the whole pipeline (transcript, N-best scores, lattice, events, costs: all of
  ``Result.to_dict()``) on fast kernels + ``joint_batch`` + vectorized search against
  the model's reference methods through a protocol-only backend + the reference search,
  on several random models and seeds.

No wall-clock limits.
"""

import json

import numpy as np
import pytest

from golden.backend import Backend, BatchedJoint, GoldenBackend, joint_rows
from golden.biasing import ContextBiasing
from golden.cli import random_model, synthetic_speech
from golden.decoding import BeamConfig, BeamDecoder, log_softmax, log_softmax_rows
from golden.frontend import FrontendConfig, features
from golden.layers import QLinear, Requantizer
from golden.lstm import (
    QLSTM,
    LSTMState,
    q15_to_int8,
    requantize_to_int16,
    sigmoid_q15,
    tanh_q15,
)
from golden.model import (
    FastKernels,
    ModelConfig,
    QuantConfig,
    QuantModel,
    _FastLSTM,
    _full_tables,
    random_float_model,
)
from golden.numerics import (
    INT32_MAX,
    INT32_MIN,
    multiply_by_quantized_multiplier,
    requantize_to_int8,
    wrap_int32,
)
from golden.pipeline import Recognizer
from golden.quantize import quantize_model
from golden.tokens import default_tokens

VOCAB = tuple(default_tokens())


# ------------------------------------------------------------------ integer kernels


def edge_accumulators(rng, n):
    acc = rng.integers(INT32_MIN, INT32_MAX + 1, (6, n))
    acc[0, :8] = [INT32_MIN, INT32_MAX, 0, -1, 1, -(1 << 30), 1 << 30, -(1 << 15)]
    acc[1] = rng.integers(-1000, 1000, n) << rng.integers(0, 20, n)
    acc[2] = (acc[1] << 10) + (1 << 9) * rng.choice([-1, 1], n)  # halfway cases
    acc[3] = rng.integers(-40000, 40000, n)
    return acc


@pytest.mark.parametrize("seed", range(6))
def test_requantizer_matches_the_reference(seed):
    rng = np.random.default_rng(seed)
    n = 80
    shift = np.concatenate([np.arange(-31, 8), rng.integers(-31, 8, n - 39)])
    mult = rng.integers(1 << 30, 1 << 31, n)
    mult[:5] = [0, 1 << 30, (1 << 31) - 1, (1 << 30) + 1, 0]
    rq = Requantizer(mult, shift)
    acc = edge_accumulators(rng, n)
    want = multiply_by_quantized_multiplier(acc, mult, shift)
    assert np.array_equal(rq(acc), want)
    assert np.array_equal(rq(acc, int32_input=True), want)
    big = rng.integers(-(1 << 40), 1 << 40, (3, n))  # beyond int32: saturated first
    assert np.array_equal(rq(big), multiply_by_quantized_multiplier(big, mult, shift))
    assert np.array_equal(rq.to_int8(acc), requantize_to_int8(acc, mult, shift))
    assert rq.to_int8(acc).dtype == np.int8
    assert np.array_equal(rq.to_int16(acc), requantize_to_int16(acc, mult, shift))
    for i, row in enumerate(acc):  # a batch is row after row
        assert np.array_equal(rq.to_int8(acc)[i], rq.to_int8(row))
        assert np.array_equal(rq(row), multiply_by_quantized_multiplier(row, mult, shift))
    scalar = Requantizer(int(mult[7]), int(shift[7]))
    assert np.array_equal(scalar(acc), multiply_by_quantized_multiplier(acc, mult[7], shift[7]))
    with pytest.raises(ValueError, match="shift"):
        Requantizer(1 << 30, 8)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_qlinear_fast_call_matches_the_reference(seed, relu):
    rng = np.random.default_rng(seed)
    rows, cols = 37, 53
    w = rng.integers(-127, 128, (rows, cols))
    w[rng.random((rows, cols)) < 0.3] = 0
    bias = rng.integers(INT32_MIN, INT32_MAX + 1, rows)  # large: the sums wrap
    mult = rng.integers(1 << 30, 1 << 31, rows)
    shift = rng.integers(-31, 8, rows)
    lay = QLinear(w, bias, mult, shift, relu=relu)
    xs = rng.integers(-128, 128, (9, cols)).astype(np.int8)
    xs[0], xs[1] = 127, -128
    for x in xs:
        assert np.array_equal(lay(x), lay.reference_call(x))
        acc = wrap_int32(w.astype(np.int64) @ x.astype(np.int64) + bias)
        assert np.array_equal(lay.accumulate(x), acc)
        assert np.array_equal(lay(x), lay.requantize(acc))
    rows_acc = lay.accumulate_rows(xs)
    assert np.array_equal(rows_acc, np.stack([lay.accumulate(x) for x in xs]))
    assert np.array_equal(lay.requantize(rows_acc), np.stack([lay(x) for x in xs]))
    with pytest.raises(ValueError, match="int8"):
        lay.accumulate_rows(xs.astype(np.int16))


def test_full_activation_tables_are_the_interpolated_ones():
    z = np.arange(-(1 << 15), 1 << 15)
    sig, tanh, tanh8 = _full_tables()
    assert np.array_equal(sig, sigmoid_q15(z))
    assert np.array_equal(tanh, tanh_q15(z))
    assert np.array_equal(tanh8, q15_to_int8(tanh_q15(z)))
    assert tanh8.dtype == np.int8


def random_qlstm(rng, inp, hid, cell_frac_bits, gate_shift):
    rows, cols = 4 * hid, inp + hid
    w = rng.integers(-127, 128, (rows, cols))
    bias = rng.integers(-(1 << 16), 1 << 16, rows)
    mult = rng.integers(1 << 30, 1 << 31, rows)
    shift = rng.integers(gate_shift - 2, gate_shift + 3, rows)
    gates = QLinear(w, bias, mult, shift)
    out_mult = int(rng.integers(1 << 30, 1 << 31))
    return QLSTM(gates, out_mult, int(rng.integers(-24, -20)), cell_frac_bits=cell_frac_bits)


@pytest.mark.parametrize("cell_frac_bits", range(8, 16))
def test_fast_lstm_matches_qlstm_step(cell_frac_bits):
    rng = np.random.default_rng(cell_frac_bits)
    for gate_shift in (-9, -5, 0):  # from gentle to saturating gate pre-activations
        lstm = random_qlstm(rng, 11, 13, cell_frac_bits, gate_shift)
        fast = _FastLSTM(lstm)
        states = [lstm.initial_state(),
                  LSTMState(np.full(13, 127, np.int8), np.full(13, 32767, np.int16)),
                  LSTMState(np.full(13, -128, np.int8), np.full(13, -32768, np.int16)),
                  LSTMState(rng.integers(-128, 128, 13).astype(np.int8),
                            rng.integers(-32768, 32768, 13).astype(np.int16))]
        for st in states:
            ref_st, fast_st = st, st
            for _ in range(12):
                x = rng.integers(-128, 128, 11).astype(np.int8)
                h1, ref_st = lstm.step(x, ref_st)
                h2, fast_st = fast.step(x, fast_st)
                assert np.array_equal(h1, h2) and h1.dtype == h2.dtype
                assert np.array_equal(ref_st.c, fast_st.c) and ref_st.c.dtype == fast_st.c.dtype
                assert not h2.flags.writeable and not fast_st.c.flags.writeable
    with pytest.raises(ValueError, match="LSTM input"):
        fast.step(np.zeros(11, np.int16), states[0])


# ------------------------------------------------------------------ models

SMALL = dict(fast_hidden=16, slow_hidden=48, enc_dim=24, arbitrator_hidden=8, pred_embed=8,
             pred_hidden=16, joint_dim=24)
FE = FrontendConfig(n_mels=20)

MODEL_VARIANTS = [
    dict(seed=11),
    dict(seed=12, joint_activation="relu"),
    dict(seed=13, quant=QuantConfig(weight_encoding="int4", sparsity=0.3)),
    dict(seed=14, quant=QuantConfig(weight_encoding="codebook4", cell_frac_bits=10)),
    dict(seed=15, quant=QuantConfig(sparsity=0.5, cell_frac_bits=14,
                                    calibration="percentile", percentile=99.0)),
]


def small_model(seed, joint_activation="tanh", quant=None, blank_bias=2.0):
    """A random small model on the pipeline's front end (blank made likelier)."""
    config = ModelConfig(vocabulary=VOCAB, feature_dim=FE.feature_dim,
                         frontend=FE.to_dict(), joint_activation=joint_activation, **SMALL)
    fm = random_float_model(config, seed)
    t = dict(fm.tensors)
    b = t["joint.out.bias"].copy()
    b[0] += blank_bias
    t["joint.out.bias"] = b
    fm = type(fm)(config, t)
    feats = features(synthetic_speech(2.0, seed=seed), FE).astype(np.float64) * FE.feature_scale
    return quantize_model(fm, [feats], quant=quant or QuantConfig(),
                          feature_scale=FE.feature_scale, seed=seed)


@pytest.fixture(scope="module", params=range(len(MODEL_VARIANTS)))
def variant_model(request):
    return small_model(**MODEL_VARIANTS[request.param])


def test_fast_kernels_match_the_model(variant_model):
    m = variant_model
    fk = FastKernels(m, cache_size=7)  # small: the predictor-half cache is emptied often
    rng = np.random.default_rng(5)
    c = m.config
    st_ref = st_fast = m.initial_encoder_state()
    encs = []
    for t in range(40):
        feat = rng.integers(-128, 128, c.feature_dim).astype(np.int8)
        branch = int(rng.integers(0, 2))
        assert fk.arbitrate(feat, t) == m.arbitrate(feat, t)
        e1, st_ref = m.encoder_step(branch, feat, st_ref)
        e2, st_fast = fk.encoder_step(branch, feat, st_fast)
        assert np.array_equal(e1, e2) and not e2.flags.writeable
        for a, b in zip(st_ref, st_fast):
            assert np.array_equal(a.h, b.h) and np.array_equal(a.c, b.c)
        encs.append(e1)
    ps_ref = ps_fast = m.initial_predictor_state()
    preds = []
    for _ in range(30):
        tok = int(rng.integers(0, c.vocab_size))
        p1, ps_ref = m.predictor_step(tok, ps_ref)
        p2, ps_fast = fk.predictor_step(tok, ps_fast)
        assert np.array_equal(p1, p2) and np.array_equal(ps_ref.c, ps_fast.c)
        preds.append(p1)
    preds = np.array(preds)
    for enc in encs[:12]:
        want = np.stack([m.joint(enc, p) for p in preds])
        assert np.array_equal(fk.joint_batch(enc, preds), want)
        assert np.array_equal(fk.joint_batch(enc, preds[3:7]), want[3:7])
        assert np.array_equal(fk.joint(enc, preds[5]), want[5])
        assert fk.joint_batch(enc, preds[:0]).shape == (0, c.vocab_size)


def with_wrapping_joint(m: QuantModel) -> tuple[QuantModel, np.ndarray]:
    """``m`` with joint.hidden biases near the int32 limits, so that ``W [enc; pred] + b``
    leaves the int32 range for typical inputs and the accumulator wraps."""
    t = dict(m.tensors)
    rows = t["joint.hidden.bias"].shape[0]
    bias = np.where(np.arange(rows) % 2 == 0, INT32_MAX - 40, INT32_MIN + 40).astype(np.int32)
    t["joint.hidden.bias"] = bias
    return QuantModel(m.config, t, dict(m.scales)), bias


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_split_joint_keeps_the_int32_wrap(activation):
    """The encoder half once per frame and the cached predictor half (with the bias),
    added in int64 and wrapped once, is the joint's int32 accumulator, wrap included."""
    m, bias = with_wrapping_joint(small_model(21, joint_activation=activation))
    fk = FastKernels(m)
    hidden = m.layers["joint.hidden"]
    rng = np.random.default_rng(3)
    c = m.config
    wrapped = 0
    for _ in range(30):
        enc = rng.integers(-128, 128, c.enc_dim).astype(np.int8)
        preds = rng.integers(-128, 128, (4, c.pred_hidden)).astype(np.int8)
        for p in preds:
            x = np.concatenate((enc, p))
            exact = hidden.weight.astype(np.int64) @ x.astype(np.int64) + bias
            wrapped += int(np.sum((exact > INT32_MAX) | (exact < INT32_MIN)))
            split = fk._enc_half(enc) + fk._pred_half(p)  # int64, unwrapped
            assert np.array_equal(split, exact)
            assert np.array_equal(wrap_int32(split), hidden.accumulate(x))
        assert np.array_equal(fk.joint_batch(enc, preds), np.stack([m.joint(enc, p)
                                                                    for p in preds]))
    assert wrapped > 100  # the wrap really happened, many times


def test_joint_caches_are_keyed_by_content():
    m = small_model(22)
    fk = FastKernels(m, cache_size=2)
    rng = np.random.default_rng(4)
    enc = rng.integers(-128, 128, m.config.enc_dim).astype(np.int8)
    pred = rng.integers(-128, 128, m.config.pred_hidden).astype(np.int8)
    first = fk.joint(enc, pred)
    assert np.array_equal(first, m.joint(enc, pred))
    for _ in range(5):  # the same (writable) arrays, changed in place between calls
        enc[rng.integers(0, len(enc))] ^= 5
        pred[rng.integers(0, len(pred))] ^= 3
        assert np.array_equal(fk.joint(enc, pred), m.joint(enc, pred))
        assert len(fk._pred_parts) <= 2


def test_golden_backend_fast_and_reference():
    m = small_model(23)
    fast, ref = GoldenBackend(m), GoldenBackend(m, fast=False)
    for b in (fast, ref):
        assert isinstance(b, Backend) and isinstance(b, BatchedJoint)
    rng = np.random.default_rng(6)
    enc = rng.integers(-128, 128, m.config.enc_dim).astype(np.int8)
    preds = rng.integers(-128, 128, (3, m.config.pred_hidden)).astype(np.int8)
    want = joint_rows(m.joint, enc, preds)
    assert np.array_equal(fast.joint_batch(enc, preds), want)
    assert np.array_equal(ref.joint_batch(enc, preds), want)


# ------------------------------------------------------------------ log-softmax


@pytest.mark.parametrize("vocab", [2, 3, 7, 8, 9, 16, 29, 64, 127, 128, 129, 200, 257, 1000])
def test_log_softmax_rows_is_log_softmax_of_each_row(vocab):
    rng = np.random.default_rng(vocab)
    for scale in (1e-3, 0.05, 0.173, 1.0, 9.5):
        for n in (1, 2, 4, 5, 16):
            q = rng.integers(-128, 128, (n, vocab)).astype(np.int8)
            q[0, :] = q[0, 0]  # a flat row
            got = log_softmax_rows(q, scale)
            for row, g in zip(q, got):
                want = log_softmax(row, scale)
                assert want.tobytes() == g.tobytes()  # bit for bit, signs of zero too
            q32 = rng.integers(-5000, 5000, (n, vocab)).astype(np.int32)
            for row, g in zip(q32, log_softmax_rows(q32, scale)):
                assert log_softmax(row, scale).tobytes() == g.tobytes()


# ------------------------------------------------------------------ beam search


class TableNet:
    """A functional toy network: predictor outputs are seeded by the token history, the
    joint is a random int8 matrix on ``[enc; pred]``, so merges and ties happen."""

    def __init__(self, vocab, seed, dim=4, flat=False):
        self.rng = np.random.default_rng(seed)
        self.vocab, self.dim, self.flat = vocab, dim, flat
        self.w = self.rng.integers(-4, 5, (vocab, 2 * dim))
        self.joint_calls = self.batch_calls = 0

    def predictor(self, token, state):
        state = (state * 31 + token + 7) % 10007
        out = np.random.default_rng(state).integers(-128, 128, self.dim).astype(np.int8)
        return out, state

    def _logits(self, enc, pred):
        if self.flat:
            return np.zeros(self.vocab, np.int8)  # every candidate of a hypothesis ties
        x = np.concatenate((enc, pred)).astype(np.int64)
        return np.clip((self.w @ x) // 16, -128, 127).astype(np.int8)

    def joint(self, enc, pred):
        self.joint_calls += 1
        return self._logits(enc, pred)

    def joint_batch(self, enc, preds):
        self.batch_calls += 1
        self.joint_calls += len(preds)
        return np.stack([self._logits(enc, p) for p in preds])

    def frames(self, n, seed):
        return np.random.default_rng(seed).integers(-128, 128, (n, self.dim)).astype(np.int8)


def run_beam(net, frames, *, scale, beam, batch, vectorized, biasing=None,
             length_normalize=True):
    dec = BeamDecoder(net.predictor, net.joint, scale, 0,
                      config=BeamConfig(beam=beam, length_normalize=length_normalize),
                      biasing=biasing, joint_batch=net.joint_batch if batch else None,
                      vectorized=vectorized)
    infos = [dec.step(f, t) for t, f in enumerate(frames)]
    nbest = dec.result()
    return {"nbest": [(h.tokens, h.score, h.token_frames, h.token_scores) for h in nbest],
            "infos": infos, "lattice": json.dumps(dec.lattice(30.0)),
            "predictor_calls": dec.predictor_calls, "joint_calls": net.joint_calls}


BEAM_CASES = [  # (vocab, scale, beam, flat)
    (3, 0.3, 2, False), (3, 0.3, 8, False), (4, 1.0, 3, False), (6, 0.1, 4, False),
    (6, 0.5, 1, False), (29, 0.2, 4, False), (29, 0.05, 8, False), (29, 2.0, 4, False),
    (5, 0.2, 4, True), (3, 0.2, 16, True),
]


@pytest.mark.parametrize("vocab, scale, beam, flat", BEAM_CASES)
@pytest.mark.parametrize("seed", range(3))
def test_vectorized_beam_step_equals_the_reference(vocab, scale, beam, flat, seed):
    frames = TableNet(vocab, seed).frames(30, seed)
    ref = run_beam(TableNet(vocab, seed, flat=flat), frames, scale=scale, beam=beam,
                   batch=False, vectorized=False)
    for batch in (False, True):
        net = TableNet(vocab, seed, flat=flat)
        got = run_beam(net, frames, scale=scale, beam=beam, batch=batch, vectorized=True)
        assert got == ref
        assert net.batch_calls == (len(frames) if batch else 0)
    got = run_beam(TableNet(vocab, seed, flat=flat), frames, scale=scale, beam=beam,
                   batch=True, vectorized=True, length_normalize=False)
    assert got == run_beam(TableNet(vocab, seed, flat=flat), frames, scale=scale, beam=beam,
                           batch=False, vectorized=False, length_normalize=False)


@pytest.mark.parametrize("seed", range(4))
def test_vectorized_beam_step_with_biasing(seed):
    vocab = 6
    frames = TableNet(vocab, seed).frames(40, seed)
    phrases = [[1, 2], [2, 3, 1], [4, 4], [5]]
    for bonus in (0.5, 3.0):
        ref = run_beam(TableNet(vocab, seed), frames, scale=0.3, beam=4, batch=False,
                       vectorized=False, biasing=ContextBiasing(phrases, bonus))
        got = run_beam(TableNet(vocab, seed), frames, scale=0.3, beam=4, batch=True,
                       vectorized=True, biasing=ContextBiasing(phrases, bonus))
        assert got == ref


class CountingBiasing:
    """A biasing object whose state is not a function of the tokens (a call counter):
    beam entries with equal tokens and different states occur, and the vectorized step
    must fall back to the per-candidate merge. Its results depend on the order of
    ``advance`` calls, which both steps must share."""

    initial_state = 0

    def __init__(self):
        self.n = 0

    def advance(self, state, token):
        self.n += 1
        return self.n, 0.25 * ((self.n + token) % 4)

    def finalize(self, state):
        return -0.1 * state


def test_vectorized_beam_step_falls_back_when_it_must(monkeypatch):
    vocab = 4
    frames = TableNet(vocab, 1).frames(30, 1)
    ref = run_beam(TableNet(vocab, 1), frames, scale=0.3, beam=4, batch=False,
                   vectorized=False, biasing=CountingBiasing())
    plain = []
    original = BeamDecoder._expand_plain

    def counting(self, *args):
        plain.append(1)
        return original(self, *args)

    monkeypatch.setattr(BeamDecoder, "_expand_plain", counting)
    got = run_beam(TableNet(vocab, 1), frames, scale=0.3, beam=4, batch=True,
                   vectorized=True, biasing=CountingBiasing())
    assert got == ref
    assert 0 < len(plain) < len(frames)  # some frames fell back, most did not


# ------------------------------------------------------------------ the pipeline


class ProtocolOnly:
    """Exactly the Backend protocol (no joint_batch), delegating to ``inner``."""

    def __init__(self, inner):
        self.inner = inner
        self.logit_scale = inner.logit_scale
        self.vocabulary = inner.vocabulary
        self.model = inner.model

    def arbitrate(self, feat, backlog_q):
        return self.inner.arbitrate(feat, backlog_q)

    def encoder_step(self, branch, feat, state):
        return self.inner.encoder_step(branch, feat, state)

    def predictor_step(self, token, state):
        return self.inner.predictor_step(token, state)

    def predictor(self, token, state):
        return self.inner.predictor(token, state)

    def joint(self, enc, pred):
        return self.inner.joint(enc, pred)

    def initial_encoder_state(self):
        return self.inner.initial_encoder_state()

    def initial_predictor_state(self):
        return self.inner.initial_predictor_state()

    def step_cost(self, step):
        return self.inner.step_cost(step)


def reference_recognizer(model, **kw):
    """The straightforward path: the model's reference methods, no joint_batch, the
    reference beam step."""
    backend = ProtocolOnly(GoldenBackend(model, fast=False))
    assert isinstance(backend, Backend) and not isinstance(backend, BatchedJoint)
    rec = Recognizer(backend, **kw)
    if isinstance(rec.decoder, BeamDecoder):
        rec.decoder.vectorized = False
    return rec


MODES = [dict(beam=0), dict(beam=2), dict(beam=4), dict(beam=4, context=["the", "abc ab"]),
         dict(beam=8)]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(f"{k}{v}" for k, v in m.items()))
def test_pipeline_fast_path_equals_reference(variant_model, mode):
    audio = synthetic_speech(2.5, seed=7)
    kw = dict(mode, after_final="continue")
    want = reference_recognizer(variant_model, **kw).transcribe(audio).to_dict()
    got = Recognizer(variant_model, **kw).transcribe(audio).to_dict()
    assert got == want
    # Fast kernels without joint_batch (the decoder's joint-per-hypothesis fallback).
    got = Recognizer(ProtocolOnly(GoldenBackend(variant_model)), **kw).transcribe(audio)
    assert got.to_dict() == want
    assert json.dumps(want, allow_nan=False)  # plain JSON, as before


@pytest.mark.parametrize("seed", [0, 3])
def test_pipeline_fast_path_equals_reference_on_the_default_model(seed):
    """The bench's model size, streaming with the default end-pointing (stop at final)."""
    model = random_model("default", seed)
    audio = synthetic_speech(2.0, seed=seed)
    for kw in (dict(beam=4), dict(beam=0), dict(beam=4, context=["hello"])):
        want = reference_recognizer(model, **kw).transcribe(audio).to_dict()
        rec = Recognizer(model, **kw)
        got = [rec.push(audio[i:i + 4000]) for i in range(0, len(audio), 4000)]
        result = rec.finish()
        assert result.to_dict() == want
        assert [e for chunk in got for e in chunk] == list(result.events[:sum(map(len, got))])


def test_bench_reference_path_gives_the_same_rows():
    from golden import bench

    model = random_model("small", seed=2)
    audio = synthetic_speech(0.6, seed=2)
    keys = ("mode", "chars", "predictor_calls", "joint_calls", "load", "latency_ms")
    fast = bench.run_bench(model, audio, beams=(0, 4))
    ref = bench.run_bench(model, audio, beams=(0, 4), reference=True)
    assert [{k: r[k] for k in keys} for r in fast] == [{k: r[k] for k in keys} for r in ref]
