"""Quantized linear and embedding layers: bit-exact against the processor's matvec."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import golden.weights
from golden.layers import (
    MAX_COLS,
    QEmbedding,
    QLinear,
    embedding_float,
    linear_float,
    matvec,
    matvec_float,
)
from golden.numerics import INT32_MAX, INT32_MIN, quantize_multiplier, requantize_to_int8


def zeros(n):
    return np.zeros(n, np.int32)


def random_layer(rng, rows, cols, relu=False, bias_range=1 << 20):
    w = rng.integers(-128, 128, (rows, cols)).astype(np.int8)
    b = rng.integers(-bias_range, bias_range, rows).astype(np.int32)
    pairs = [quantize_multiplier(float(m)) for m in rng.uniform(1e-5, 2e-3, rows)]
    mult = np.array([p[0] for p in pairs], np.int32)
    shift = np.array([p[1] for p in pairs], np.int8)
    return QLinear(w, b, mult, shift, relu=relu)


def test_matvec_is_the_weight_modules():
    assert matvec is golden.weights.matvec


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), rows=st.integers(1, 40), cols=st.integers(1, 300))
def test_linear_equals_processor_matvec(seed, rows, cols):
    rng = np.random.default_rng(seed)
    lay = random_layer(rng, rows, cols)
    x = rng.integers(-128, 128, cols).astype(np.int8)
    y = lay(x)
    assert y.dtype == np.int8 and y.shape == (rows,)
    assert np.array_equal(y, matvec(lay.weight, x, lay.bias, lay.multiplier, lay.shift))


def test_widest_row_is_exact_and_bias_wraps():
    # All products +2**14 over the widest row, plus biases that overflow int32.
    cols = MAX_COLS
    w = np.full((3, cols), -128, np.int8)
    x = np.full(cols, -128, np.int8)
    bias = np.array([0, INT32_MAX, INT32_MIN], np.int32)
    lay = QLinear(w, bias, np.full(3, 1 << 30, np.int32), np.zeros(3, np.int8))
    exact = cols * (1 << 14) + bias.astype(np.int64)
    wrapped = (exact + (1 << 31)) % (1 << 32) - (1 << 31)
    assert lay.accumulate(x).tolist() == wrapped.tolist()
    assert wrapped[1] < 0  # the wrap really happened
    assert np.array_equal(lay(x), matvec(w, x, bias, lay.multiplier, lay.shift))


def test_relu_clamps_after_requantization():
    rng = np.random.default_rng(3)
    lay = random_layer(rng, 64, 50, relu=True)
    x = rng.integers(-128, 128, 50).astype(np.int8)
    plain = requantize_to_int8(lay.accumulate(x), lay.multiplier, lay.shift)
    assert plain.min() < 0  # the test means something
    assert np.array_equal(lay(x), np.maximum(plain, 0))


def test_layer_copies_and_freezes_its_arrays():
    rng = np.random.default_rng(4)
    w = rng.integers(-128, 128, (4, 5)).astype(np.int8)
    lay = QLinear(w, np.zeros(4, np.int32), np.full(4, 1 << 30, np.int32), np.zeros(4, np.int8))
    w[:] = 0
    assert np.count_nonzero(lay.weight) > 0
    with pytest.raises(ValueError):
        lay.weight[0, 0] = 1


def test_mac_counts():
    w = np.zeros((4, 5), np.int8)
    w[0, :3] = 1
    w[2, 4] = -7
    lay = QLinear(w, zeros(4), zeros(4), zeros(4))
    assert (lay.dense_macs, lay.nonzero_macs) == (20, 4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(weight=np.zeros((2, 3, 1))), "2-D"),
    (dict(weight=np.zeros((2, MAX_COLS + 1))), "columns"),
    (dict(weight=np.full((2, 3), 200)), "weight values"),
    (dict(weight=np.zeros((2, 3), np.float32)), "integer"),
    (dict(bias=zeros(3)), "bias has shape"),
    (dict(bias=np.zeros(2)), "integer"),
    (dict(multiplier=np.array([5, 1 << 30])), "normalized"),
    (dict(shift=np.array([8, 0])), "shift values"),
])
def test_linear_validation(kwargs, match):
    args = dict(weight=np.zeros((2, 3), np.int8), bias=zeros(2), multiplier=zeros(2),
                shift=zeros(2))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        QLinear(**args)


def test_linear_input_checks():
    lay = QLinear(np.zeros((2, 3), np.int8), zeros(2), zeros(2), zeros(2))
    with pytest.raises(ValueError, match="int8"):
        lay(np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="shape"):
        lay(np.zeros(4, np.int8))


def test_embedding_lookup():
    table = np.arange(-12, 12, dtype=np.int8).reshape(6, 4)
    emb = QEmbedding(table)
    assert emb(2).tolist() == [-4, -3, -2, -1]
    assert emb.num_tokens == 6
    with pytest.raises(ValueError):
        emb(2)[0] = 5
    for bad in (-1, 6):
        with pytest.raises(ValueError, match="out of range"):
            emb(bad)
    with pytest.raises(ValueError, match="values"):
        QEmbedding(np.full((2, 2), 300))


def test_float_references():
    rng = np.random.default_rng(5)
    w, b, x = rng.standard_normal((7, 9)), rng.standard_normal(7), rng.standard_normal(9)
    assert np.allclose(matvec_float(w, x), w @ x, rtol=1e-12, atol=1e-12)
    assert np.allclose(linear_float(w, b, x), w @ x + b)
    assert np.allclose(linear_float(w, b, x, relu=True), np.maximum(w @ x + b, 0))
    table = rng.standard_normal((5, 3))
    assert np.array_equal(embedding_float(table, 4), table[4])
    with pytest.raises(ValueError, match="out of range"):
        embedding_float(table, 5)


def test_quantized_linear_tracks_float():
    """A quantized layer's output, dequantized, is within 1.5 output steps of the float
    layer fed the same (dequantized) input: weight rounding plus one output rounding."""
    from golden.quantize import quantize_activation, quantize_linear

    rng = np.random.default_rng(6)
    w, b = rng.uniform(-0.2, 0.2, (48, 64)), rng.uniform(-0.5, 0.5, 48)
    s_in, s_out = 3.0 / 127, 4.0 / 127
    lay = quantize_linear(w, b, np.full(64, s_in), s_out).linear()
    worst = 0.0
    for _ in range(50):
        xq = quantize_activation(rng.standard_normal(64), s_in)
        y_f = linear_float(w, b, xq * s_in)
        assert np.abs(y_f).max() < 127 * s_out  # no saturation in this test
        worst = max(worst, np.abs(lay(xq) * s_out - y_f).max() / s_out)
    assert worst <= 1.5
