"""Quantizer: weight encodings, pruning, codebooks, calibration, and integer-vs-float
tolerances of whole models."""

import numpy as np
import pytest

from golden.model import (
    FAST,
    SLOW,
    ModelConfig,
    QuantConfig,
    layer_specs,
    random_float_model,
)
from golden.quantize import (
    calibrate,
    calibrate_scale,
    dequantize_model,
    lloyd_codebook,
    prune_magnitude,
    quantize_activation,
    quantize_linear,
    quantize_model,
    quantize_weights,
    round_half_away,
)
from golden.tokens import default_tokens
from golden.weights import Encoding, compress, decompress

CONFIG = ModelConfig(vocabulary=tuple(default_tokens()), feature_dim=24, fast_hidden=32,
                     slow_hidden=48, enc_dim=40, arbitrator_hidden=8, pred_embed=16,
                     pred_hidden=32, joint_dim=40)


@pytest.fixture(scope="module")
def float_model():
    return random_float_model(CONFIG, seed=0)


@pytest.fixture(scope="module")
def calib():
    rng = np.random.default_rng(100)
    return [rng.standard_normal((60, 24)) for _ in range(4)]


@pytest.fixture(scope="module")
def models(float_model, calib):
    out = {}
    for enc in ("int8", "int4", "codebook4"):
        for sp in (0.0, 0.5):
            out[enc, sp] = quantize_model(float_model, calib,
                                          quant=QuantConfig(weight_encoding=enc, sparsity=sp))
    return out


# ----------------------------------------------------------------- primitives


def test_round_half_away():
    assert round_half_away([0.5, -0.5, 1.5, -2.5, 0.49, -0.51]).tolist() == \
        [1, -1, 2, -3, 0, -1]


def test_quantize_activation():
    q = quantize_activation([0.0, 0.05, -0.05, 1.0, -1e9, 1e9], 0.1)
    assert q.dtype == np.int8 and q.tolist() == [0, 1, -1, 10, -128, 127]


def test_prune_magnitude_exact_count_and_ties():
    w = np.array([[0.1, -0.1, 0.3], [-0.2, 0.1, 0.05]])
    p = prune_magnitude(w, 0.5)  # 3 of 6: 0.05, then the first two 0.1s in order
    assert p.tolist() == [[0.0, 0.0, 0.3], [-0.2, 0.1, 0.0]]
    assert np.array_equal(prune_magnitude(w, 0.0), w)
    with pytest.raises(ValueError, match="sparsity"):
        prune_magnitude(w, 1.0)


def test_lloyd_codebook_rules():
    rng = np.random.default_rng(0)
    v = rng.normal(0, 40, 5000).clip(-127, 127)
    cb = lloyd_codebook(v)
    assert cb.dtype == np.int8 and cb.shape == (16,)
    assert cb[0] == 0 and np.count_nonzero(cb) == 15 and np.unique(cb).size == 16
    assert np.array_equal(cb, lloyd_codebook(v))  # deterministic
    # Denser near zero for a bell-shaped distribution.
    nz = np.sort(cb[1:].astype(int))
    assert np.diff(nz)[6] < np.diff(nz)[0]


def test_lloyd_codebook_keeps_few_values_exactly_and_fills():
    cb = lloyd_codebook([3.0] * 10 + [-50.0] * 5 + [0.0] * 7)
    assert {3, -50} <= set(cb.tolist())
    assert cb[0] == 0 and np.unique(cb).size == 16
    empty = lloyd_codebook([])
    assert empty[0] == 0 and np.count_nonzero(empty) == 15 and np.unique(empty).size == 16


@pytest.mark.parametrize("encoding, qmax", [("int8", 127), ("int4", 7), ("codebook4", 127)])
def test_quantize_weights_per_row(encoding, qmax):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((10, 30)) * np.arange(1, 11)[:, None]
    a[3] = 0.0
    q, scale, cb = quantize_weights(a, encoding)
    assert q.dtype == np.int8 and np.abs(q).max() <= qmax
    assert scale[3] == 0.0 and not q[3].any()
    rows = [r for r in range(10) if r != 3]
    assert np.allclose(scale[rows], np.abs(a[rows]).max(axis=1) / qmax)
    if encoding == "codebook4":
        assert set(np.unique(q).tolist()) <= set(cb.tolist())
        v = (a[rows] / scale[rows, None])[..., None]  # normalized weights
        nearest = np.abs(v - cb.astype(float)).min(axis=-1)
        assert np.allclose(np.abs(v[..., 0] - q[rows]), nearest)  # snapped to the nearest
    else:
        assert cb is None
        assert np.all(np.abs(q[rows]).max(axis=1) == qmax)  # each row uses its full range
        assert np.abs(q * scale[:, None] - a).max() <= scale.max() / 2 + 1e-12


def test_quantize_linear_bias_only_row_and_limits():
    w = np.array([[0.0, 0.0], [0.5, -0.25]])
    b = np.array([0.75, 0.0])
    qm = quantize_linear(w, b, [0.01, 0.02], 0.05)
    # Row 0 has no weights: its scale comes from the bias, which must survive exactly.
    real0 = qm.row_scale[0] * qm.bias[0]
    assert abs(real0 - 0.75) < 1e-6 and qm.multiplier[0] != 0
    y = qm.linear()(np.array([10, 10], np.int8))
    assert y[0] == 15  # 0.75 / 0.05
    with pytest.raises(ValueError, match="output scale too small"):
        quantize_linear(w, b, [1.0, 1.0], 1e-6)
    with pytest.raises(ValueError, match="in_scales"):
        quantize_linear(w, b, [0.01], 0.05)


def test_calibrate_scale_methods():
    v = np.concatenate((np.linspace(-1, 1, 10001), [50.0]))
    assert calibrate_scale(v) == pytest.approx(50.0 / 127)
    assert calibrate_scale(v, "percentile", 99.0) == pytest.approx(0.99 / 127, rel=1e-3)
    assert calibrate_scale(np.zeros(4)) == pytest.approx(1e-3 / 127)
    with pytest.raises(ValueError, match="method"):
        calibrate_scale(v, "mse")
    with pytest.raises(ValueError, match="no values"):
        calibrate_scale([])


def test_calibrate_covers_every_scale(float_model, calib):
    s = calibrate(float_model, calib)
    assert s["backlog"] == 1.0 and s["joint.hidden"] == 2.0 ** -7
    assert s["feature"] == pytest.approx(np.abs(np.concatenate(calib)).max() / 127)
    p = calibrate(float_model, calib, quant=QuantConfig(calibration="percentile",
                                                        percentile=99.0))
    assert all(p[k] <= s[k] for k in s)
    assert p["enc"] < s["enc"]
    fixed = calibrate(float_model, calib, feature_scale=0.05)
    assert fixed["feature"] == 0.05
    with pytest.raises(ValueError, match="features must be"):
        calibrate(float_model, [np.zeros((5, 3))])
    with pytest.raises(ValueError, match="at least one"):
        calibrate(float_model, [])
    with pytest.raises(ValueError, match="one sequence per utterance"):
        calibrate(float_model, calib, token_sequences=[[1, 2]])


def test_quantization_is_deterministic(float_model, calib, models):
    again = quantize_model(float_model, calib, quant=QuantConfig(weight_encoding="codebook4",
                                                                 sparsity=0.5))
    ref = models["codebook4", 0.5]
    for k, v in ref.tensors.items():
        assert np.array_equal(v, again.tensors[k]), k
    assert again.scales == ref.scales


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
@pytest.mark.parametrize("encoding", ["int8", "int4", "codebook4"])
def test_encodings_sparsity_and_weight_images(models, encoding, sparsity):
    m = models[encoding, sparsity]
    assert m.config.quant.weight_encoding == encoding
    for s in layer_specs(m.config).values():
        w = m.tensors[f"{s.name}.weight"]
        if encoding == "int4":
            assert w.min() >= -7 and w.max() <= 7
        assert 1 - np.count_nonzero(w) / w.size >= sparsity
        # Every matrix must be storable as a processor weight image, unchanged.
        kind = {"int8": Encoding.INT8, "int4": Encoding.INT4,
                "codebook4": Encoding.CODEBOOK}[encoding]
        cb = m.tensors.get(f"{s.name}.codebook")
        image = compress(w, m.tensors[f"{s.name}.bias"], m.tensors[f"{s.name}.multiplier"],
                         m.tensors[f"{s.name}.shift"], encoding=kind,
                         codebook=None if cb is None else cb.tolist())
        assert np.array_equal(decompress(image).weights, w)


# ----------------------------------------------------------------- tolerances


def run_both(qm, fm, seed=7, frames=80):
    """Encoder outputs and logits (real units) of the integer and float models, on the
    same features, branch pattern and tokens."""
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((frames, CONFIG.feature_dim))
    xq = quantize_activation(feats, qm.feature_scale)
    st, fst = qm.initial_encoder_state(), fm.initial_encoder_state()
    ps, fps = qm.initial_predictor_state(), fm.initial_predictor_state()
    p, ps = qm.predictor_step(0, ps)
    pf, fps = fm.predictor_step(0, fps)
    out = {k: [] for k in ("e", "ef", "l", "lf", "arb")}
    for t in range(frames):
        branch = SLOW if t % 3 == 0 else FAST
        e, st = qm.encoder_step(branch, xq[t], st)
        ef, fst = fm.encoder_step(branch, xq[t] * qm.feature_scale, fst)
        if t % 4 == 0:
            tok = int(rng.integers(1, CONFIG.vocab_size))
            p, ps = qm.predictor_step(tok, ps)
            pf, fps = fm.predictor_step(tok, fps)
        out["e"].append(e * qm.scales["enc"])
        out["ef"].append(ef)
        out["l"].append(qm.joint(e, p) * qm.logit_scale)
        out["lf"].append(fm.joint(ef, pf))
        out["arb"].append(qm.arbitrate(xq[t], t % 32) ==
                          fm.arbitrate(xq[t] * qm.feature_scale, t % 32))
    o = {k: np.array(v) for k, v in out.items()}

    def rel(a, b):
        return float(np.sqrt(((a - b) ** 2).mean() / (b ** 2).mean()))

    return {"enc": rel(o["e"], o["ef"]), "logit": rel(o["l"], o["lf"]),
            "argmax": float((o["l"].argmax(1) == o["lf"].argmax(1)).mean()),
            "arb": float(o["arb"].mean())}


def test_int8_model_tracks_float_model(float_model, models):
    """Stated tolerance (docs/model.md): int8, no pruning, against the original float
    model over 80 frames: relative RMS error <= 4% (encoder) and <= 5% (logits), the
    same argmax on >= 90% of frames and the same branch on >= 90% of frames."""
    r = run_both(models["int8", 0.0], float_model)
    assert r["enc"] <= 0.04 and r["logit"] <= 0.05
    assert r["argmax"] >= 0.9 and r["arb"] >= 0.9


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
@pytest.mark.parametrize("encoding", ["int8", "int4", "codebook4"])
def test_integer_model_tracks_its_dequantized_twin(models, encoding, sparsity):
    """Against the float model with the integer model's own weights, every encoding and
    sparsity keeps the arithmetic error at the int8 level: <= 4% / 5% relative RMS."""
    qm = models[encoding, sparsity]
    r = run_both(qm, dequantize_model(qm))
    assert r["enc"] <= 0.04 and r["logit"] <= 0.05 and r["argmax"] >= 0.85


def test_four_bit_weight_error_is_bounded_and_codebook_beats_int4(float_model, models):
    """Weight rounding of 4-bit encodings (untrained random weights, no fine-tuning):
    encoder relative RMS error <= 30%, and the codebook is closer than linear int4."""
    r4 = run_both(models["int4", 0.0], float_model)
    rc = run_both(models["codebook4", 0.0], float_model)
    assert rc["enc"] < r4["enc"] <= 0.3



def test_fixed_feature_scale_passes_int8_features_through(float_model):
    """With the front end's scale given, features given as q * scale come back as q."""
    rng = np.random.default_rng(3)
    q = rng.integers(-128, 128, (30, 24)).astype(np.int8)
    scale = 0.125
    qm = quantize_model(float_model, [q * scale], feature_scale=scale)
    assert qm.feature_scale == scale
    assert np.array_equal(quantize_activation(q * scale, qm.feature_scale), q)
