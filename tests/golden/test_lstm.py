"""Integer LSTM: tables, interpolation, cell arithmetic, a pure-Python bit-exact
reference of the whole step, and tracking of the float LSTM."""

import math
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.layers import QLinear
from golden.lstm import (
    QLSTM,
    SIGMOID_TABLE,
    TABLE_SEGMENTS,
    TANH_TABLE,
    LSTMState,
    cell_to_q3_12,
    cell_update,
    hidden_multiplier,
    lstm_step_float,
    q15_to_int8,
    requantize_to_int16,
    sigmoid_q15,
    tanh_q15,
)
from golden.quantize import quantize_activation, quantize_lstm

# ----------------------------------------------------------------- pure-Python reference
# Written from docs/numerics.md ("Integer LSTM") with Python ints only.


def py_round_away(v: float) -> int:
    r = math.floor(abs(v) + 0.5)
    return int(math.copysign(r, v))


def py_table(fn):
    return [max(-32768, min(32767, py_round_away(fn(-8 + k / 16) * 32768))) for k in range(257)]


def py_lookup(table, z):
    u = z + 32768
    s, t = u >> 8, u & 255
    return table[s] + (((table[s + 1] - table[s]) * t + 128) >> 8)


def py_rdbpot(x, e):
    mask = (1 << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > thr else 0)


def py_srdhm(a, b):
    if a == b == -(1 << 31):
        return (1 << 31) - 1
    p = a * b
    nudge = (1 << 30) if p >= 0 else 1 - (1 << 30)
    q = abs(p + nudge) >> 31
    return q if p + nudge >= 0 else -q


def py_mbqm(x, m, shift):
    left, right = max(shift, 0), max(-shift, 0)
    x = max(-(1 << 31), min((1 << 31) - 1, x << left))
    return py_rdbpot(py_srdhm(x, m), right)


def py_sat(x, bits):
    return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, x))


def py_wrap32(x):
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


PY_SIG = py_table(lambda v: 1 / (1 + math.exp(-v)))
PY_TANH = py_table(math.tanh)


def py_lstm_step(lstm: QLSTM, x, h, c):
    """One step, element by element, from the spec."""
    w = lstm.gates.weight.tolist()
    inp = [int(v) for v in x] + [int(v) for v in h]
    hsz, n = lstm.hidden_size, lstm.cell_frac_bits
    z = []
    for r in range(4 * hsz):
        acc = py_wrap32(int(lstm.gates.bias[r]) + sum(a * b for a, b in zip(w[r], inp)))
        z.append(py_sat(py_mbqm(acc, int(lstm.gates.multiplier[r]), int(lstm.gates.shift[r])),
                        16))
    h_new, c_new = [], []
    for k in range(hsz):
        i = py_lookup(PY_SIG, z[k])
        f = py_lookup(PY_SIG, z[hsz + k])
        g = py_lookup(PY_TANH, z[2 * hsz + k])
        o = py_lookup(PY_SIG, z[3 * hsz + k])
        fc = py_sat(py_rdbpot(f * int(c[k]), 15), 16)
        ig = py_sat(py_rdbpot(i * g, 30 - n), 16)
        cn = py_sat(fc + ig, 16)
        if n < 12:
            ct = py_sat(cn << (12 - n), 16)
        elif n > 12:
            ct = py_rdbpot(cn, n - 12)
        else:
            ct = cn
        t = py_lookup(PY_TANH, ct)
        h_new.append(py_sat(py_mbqm(o * t, lstm.out_multiplier, lstm.out_shift), 8))
        c_new.append(cn)
    return h_new, c_new


# ----------------------------------------------------------------- helpers


def random_lstm_weights(rng, inp, hidden, gain=1.5):
    a = gain * math.sqrt(3.0 / (inp + hidden))
    w = rng.uniform(-a, a, (4 * hidden, inp + hidden))
    b = rng.uniform(-0.1, 0.1, 4 * hidden)
    b[hidden:2 * hidden] += 1.0
    return w, b


def make_qlstm(seed=0, inp=12, hidden=10, cell_frac_bits=12, encoding="int8"):
    rng = np.random.default_rng(seed)
    w, b = random_lstm_weights(rng, inp, hidden)
    lstm, _ = quantize_lstm(w, b, 4.0 / 127, 1.0 / 127, encoding=encoding,
                            cell_frac_bits=cell_frac_bits)
    return lstm, w, b


# ----------------------------------------------------------------- tables


def test_tables_match_the_formula_and_pinned_values():
    assert SIGMOID_TABLE.dtype == np.int16 and TANH_TABLE.dtype == np.int16
    assert len(SIGMOID_TABLE) == len(TANH_TABLE) == TABLE_SEGMENTS + 1 == 257
    assert SIGMOID_TABLE.tolist() == PY_SIG
    assert TANH_TABLE.tolist() == PY_TANH
    # Pinned so a change to the table (which the RTL ROM must follow) cannot go unnoticed.
    assert (SIGMOID_TABLE[0], SIGMOID_TABLE[128], SIGMOID_TABLE[256]) == (11, 16384, 32757)
    assert (TANH_TABLE[0], TANH_TABLE[128], TANH_TABLE[256]) == (-32768, 0, 32767)
    assert zlib.crc32(SIGMOID_TABLE.astype("<i2").tobytes()) == 0x696B63EC
    assert zlib.crc32(TANH_TABLE.astype("<i2").tobytes()) == 0x6F90CEB3
    assert np.all(np.diff(SIGMOID_TABLE) >= 0) and np.all(np.diff(TANH_TABLE) >= 0)


def test_tables_are_read_only():
    with pytest.raises(ValueError):
        SIGMOID_TABLE[0] = 0


ALL_Q312 = np.arange(-32768, 32768)


def test_lookup_matches_reference_and_is_monotone():
    sig, th = sigmoid_q15(ALL_Q312), tanh_q15(ALL_Q312)
    rng = np.random.default_rng(0)
    for z in [-32768, -32767, -1, 0, 1, 255, 256, 32511, 32512, 32767,
              *rng.integers(-32768, 32768, 300).tolist()]:
        assert sig[z + 32768] == py_lookup(PY_SIG, z)
        assert th[z + 32768] == py_lookup(PY_TANH, z)
    assert np.all(np.diff(sig) >= 0) and np.all(np.diff(th) >= 0)
    # At segment starts the lookup returns the table entry itself.
    assert sig[::256].tolist() == PY_SIG[:256]


def test_lookup_accuracy():
    x = ALL_Q312 / 4096.0
    sig_err = np.abs(sigmoid_q15(ALL_Q312) / 32768 - 1 / (1 + np.exp(-x))).max() * 32768
    tanh_err = np.abs(tanh_q15(ALL_Q312) / 32768 - np.tanh(x)).max() * 32768
    assert sig_err < 3.0  # Q0.15 steps, over the whole int16 input range
    assert tanh_err < 14.0


def test_lookup_rejects_non_int16():
    with pytest.raises(ValueError, match="int16"):
        sigmoid_q15(np.array([32768]))
    with pytest.raises(ValueError, match="int16"):
        tanh_q15(np.array([-32769]))


# ----------------------------------------------------------------- element-wise steps


def test_requantize_to_int16_saturates():
    m, s = 1 << 30, 1  # x 1.0
    assert requantize_to_int16(np.array([40000, -40000, 1234]), m, s).tolist() == \
        [32767, -32768, 1234]


@settings(max_examples=300, deadline=None)
@given(f=st.integers(0, 32767), c=st.integers(-32768, 32767), i=st.integers(0, 32767),
       g=st.integers(-32768, 32767), n=st.integers(8, 15))
def test_cell_update_matches_reference(f, c, i, g, n):
    fc = py_sat(py_rdbpot(f * c, 15), 16)
    ig = py_sat(py_rdbpot(i * g, 30 - n), 16)
    assert int(cell_update(np.int64(f), np.int64(c), np.int64(i), np.int64(g), n)) == \
        py_sat(fc + ig, 16)


def test_cell_update_rounding_ties_and_saturation():
    # f*c = 16384 * 1 = 2**14: exactly half a step -> rounds away from zero.
    assert int(cell_update(16384, 1, 0, 0, 12)) == 1
    assert int(cell_update(16384, -1, 0, 0, 12)) == -1
    # Just below a half rounds toward zero.
    assert int(cell_update(16383, 1, 0, 0, 12)) == 0
    # i*g at Q3.12: 2**17 is exactly half of 2**18.
    assert int(cell_update(0, 0, 1 << 9, 1 << 8, 12)) == 1
    # Large cell plus a positive update saturates at int16.
    assert int(cell_update(32767, 32767, 32767, 32767, 12)) == 32767
    assert int(cell_update(32767, -32768, 32767, -32768, 12)) == -32768
    # With n = 15 (Q0.15) a full i*g alone already saturates.
    assert int(cell_update(0, 0, 32767, 32767, 15)) == 32766


@pytest.mark.parametrize("n, c, expected", [
    (12, 1234, 1234), (11, 1234, 2468), (11, 20000, 32767), (11, -20000, -32768),
    (13, 3, 2), (13, -3, -2), (13, 1, 1), (13, -1, -1), (14, 2, 1), (14, -2, -1),
])
def test_cell_to_q3_12(n, c, expected):
    assert int(cell_to_q3_12(np.int64(c), n)) == expected


def test_q15_to_int8():
    assert q15_to_int8(np.array([32767, -32768, 128, 127, -128, -129, 0])).tolist() == \
        [127, -128, 1, 0, -1, -1, 0]


def test_hidden_multiplier_is_exact_for_power_of_two_scale():
    assert hidden_multiplier(2.0 ** -7) == (1 << 30, -22)


# ----------------------------------------------------------------- the whole step


@pytest.mark.parametrize("cell_frac_bits", [10, 11, 12, 13, 15])
def test_step_matches_pure_python_reference(cell_frac_bits):
    lstm, _, _ = make_qlstm(seed=cell_frac_bits, cell_frac_bits=cell_frac_bits)
    rng = np.random.default_rng(1)
    state = lstm.initial_state()
    h_ref, c_ref = [0] * lstm.hidden_size, [0] * lstm.hidden_size
    for _ in range(12):
        x = rng.integers(-128, 128, lstm.input_size).astype(np.int8)
        h, state = lstm.step(x, state)
        h_ref, c_ref = py_lstm_step(lstm, x, h_ref, c_ref)
        assert h.tolist() == h_ref
        assert state.c.tolist() == c_ref
        assert state.h is h


def test_step_reference_with_saturating_cell():
    # Huge forget and input biases drive the cell into int16 saturation.
    lstm, _, _ = make_qlstm(seed=3)
    g = lstm.gates
    bias = g.bias.astype(np.int64).copy()
    hsz = lstm.hidden_size
    bias[:2 * hsz] = 2 ** 28
    bias[2 * hsz:3 * hsz] = 2 ** 28
    lstm = QLSTM(QLinear(g.weight, bias, g.multiplier, g.shift), lstm.out_multiplier,
                 lstm.out_shift)
    rng = np.random.default_rng(2)
    state = lstm.initial_state()
    h_ref, c_ref = [0] * hsz, [0] * hsz
    for _ in range(10):
        x = rng.integers(-128, 128, lstm.input_size).astype(np.int8)
        h, state = lstm.step(x, state)
        h_ref, c_ref = py_lstm_step(lstm, x, h_ref, c_ref)
        assert h.tolist() == h_ref and state.c.tolist() == c_ref
    assert state.c.max() == 32767


def test_step_is_deterministic_and_does_not_mutate():
    lstm, _, _ = make_qlstm()
    rng = np.random.default_rng(5)
    xs = rng.integers(-128, 128, (20, lstm.input_size)).astype(np.int8)

    def run():
        s = lstm.initial_state()
        seen = []
        for x in xs:
            h, s2 = lstm.step(x, s)
            seen.append((s.h.copy(), s.c.copy(), s))
            s = s2
        return s, seen

    s1, seen = run()
    s2, _ = run()
    assert np.array_equal(s1.h, s2.h) and np.array_equal(s1.c, s2.c)
    for h, c, s in seen:  # old states still hold their values
        assert np.array_equal(s.h, h) and np.array_equal(s.c, c)
    with pytest.raises(ValueError):
        s1.c[0] = 1
    with pytest.raises(ValueError):
        s1.h[0] = 1


def test_step_validates_inputs():
    lstm, _, _ = make_qlstm()
    s = lstm.initial_state()
    with pytest.raises(ValueError, match="int8"):
        lstm.step(np.zeros(lstm.input_size, np.int16), s)
    with pytest.raises(ValueError, match="shape"):
        lstm.step(np.zeros(lstm.input_size + 1, np.int8), s)
    bad = LSTMState(np.zeros(3, np.int8), np.zeros(3, np.int16))
    with pytest.raises(ValueError, match="state"):
        lstm.step(np.zeros(lstm.input_size, np.int8), bad)


def test_constructor_validation():
    lstm, _, _ = make_qlstm()
    g = lstm.gates
    with pytest.raises(ValueError, match="multiple of 4"):
        QLSTM(QLinear(g.weight[:-1], g.bias[:-1], g.multiplier[:-1], g.shift[:-1]), 1 << 30, -20)
    with pytest.raises(ValueError, match="ReLU"):
        QLSTM(QLinear(g.weight, g.bias, g.multiplier, g.shift, relu=True), 1 << 30, -20)
    with pytest.raises(ValueError, match="cell_frac_bits"):
        QLSTM(g, 1 << 30, -20, cell_frac_bits=16)
    with pytest.raises(ValueError, match="out_multiplier"):
        QLSTM(g, 5, -20)
    with pytest.raises(ValueError, match="out_shift"):
        QLSTM(g, 1 << 30, -40)


# ----------------------------------------------------------------- float tracking


def track(lstm, w, b, x_scale, h_scale, steps, seed, float_sees_int8_input=False):
    """Max and RMS of |h_int - h_float| (real units) over a random N(0, 1) input sequence.

    The float LSTM gets the real inputs, or (``float_sees_int8_input``) the integer
    LSTM's own int8 inputs dequantized, which leaves only the LSTM's own error.
    """
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((steps, lstm.input_size))
    s = lstm.initial_state()
    h_f = np.zeros(lstm.hidden_size)
    c_f = np.zeros(lstm.hidden_size)
    errs = []
    for x in xs:
        xq = quantize_activation(x, x_scale)
        h, s = lstm.step(xq, s)
        h_f, c_f = lstm_step_float(w, b, xq * x_scale if float_sees_int8_input else x,
                                   h_f, c_f)
        errs.append(h * h_scale - h_f)
    errs = np.array(errs)
    return np.abs(errs).max(), np.sqrt((errs ** 2).mean())


def dequantized(lstm, x_scale, h_scale):
    real = lstm.gates.multiplier * np.exp2(lstm.gates.shift.astype(float) - 31) / 4096
    cols = np.concatenate((np.full(lstm.input_size, x_scale), np.full(lstm.hidden_size, h_scale)))
    return lstm.gates.weight * real[:, None] / cols, lstm.gates.bias * real


@pytest.mark.parametrize("cell_frac_bits", [11, 12, 13])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_integer_lstm_tracks_float_over_50_steps(seed, cell_frac_bits):
    """Stated tolerance (docs/numerics.md): over 50 steps of N(0,1) inputs (x scale 4/127,
    h scale 1/127), |h_int - h_float| <= 0.04 everywhere and RMS <= 0.008 against the
    original float weights; against the float LSTM with the integer model's own weights
    and int8 inputs (arithmetic and activation rounding only) <= 0.016 (2 steps of h)
    and RMS <= 0.004."""
    inp, hidden = 24, 32
    rng = np.random.default_rng(seed)
    w, b = random_lstm_weights(rng, inp, hidden)
    xs, hs = 4.0 / 127, 1.0 / 127
    lstm, _ = quantize_lstm(w, b, xs, hs, cell_frac_bits=cell_frac_bits)
    worst, rms = track(lstm, w, b, xs, hs, 50, seed + 10)
    assert worst <= 0.04 and rms <= 0.008
    wd, bd = dequantized(lstm, xs, hs)
    worst_d, rms_d = track(lstm, wd, bd, xs, hs, 50, seed + 10, float_sees_int8_input=True)
    assert worst_d <= 0.016 and rms_d <= 0.004


def test_four_bit_lstm_tracks_float_more_loosely():
    inp, hidden = 24, 32
    w, b = random_lstm_weights(np.random.default_rng(7), inp, hidden)
    xs, hs = 4.0 / 127, 1.0 / 127
    errs = {}
    for enc in ("int8", "int4", "codebook4"):
        lstm, _ = quantize_lstm(w, b, xs, hs, encoding=enc)
        errs[enc] = track(lstm, w, b, xs, hs, 50, 3)[1]
    assert errs["int8"] < errs["codebook4"] < errs["int4"] <= 0.12
