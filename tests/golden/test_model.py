"""Model config, float and integer models, branch states and the model file format."""

import json
from dataclasses import replace

import numpy as np
import pytest

from golden.model import (
    BACKLOG_MAX,
    FAST,
    FORMAT_VERSION,
    HEADER_KEY,
    SLOW,
    FloatModel,
    ModelConfig,
    ModelError,
    QuantConfig,
    QuantModel,
    layer_specs,
    load_model,
    quantize_backlog,
    random_float_model,
    save_model,
    scale_names,
    tensor_specs,
)
from golden.quantize import quantize_activation, quantize_model
from golden.tokens import default_tokens

VOCAB = tuple(default_tokens())


def small_config(**kw):
    base = dict(vocabulary=VOCAB, feature_dim=20, fast_hidden=16, slow_hidden=24, enc_dim=20,
                arbitrator_hidden=8, pred_embed=8, pred_hidden=16, joint_dim=24,
                frontend={"sample_rate": 16000, "n_mels": 20})
    base.update(kw)
    return ModelConfig(**base)


@pytest.fixture(scope="module")
def float_model():
    return random_float_model(small_config(), seed=3)


@pytest.fixture(scope="module")
def int_model(float_model):
    rng = np.random.default_rng(0)
    return quantize_model(float_model, [rng.standard_normal((40, 20)) for _ in range(2)])


@pytest.fixture(scope="module")
def codebook_model(float_model):
    rng = np.random.default_rng(0)
    return quantize_model(float_model, [rng.standard_normal((30, 20))],
                          quant=QuantConfig(weight_encoding="codebook4", sparsity=0.3))


# ----------------------------------------------------------------- config


@pytest.mark.parametrize("kw, match", [
    (dict(vocabulary=("a", "<b>")), "blank"),
    (dict(vocabulary=("<b>",)), "at least one token"),
    (dict(vocabulary=("<b>", "a", "a")), "more than once"),
    (dict(vocabulary=("<b>", "")), "non-empty"),
    (dict(vocabulary="<b>abc"), "sequence"),
    (dict(feature_dim=0), "feature_dim"),
    (dict(slow_hidden=True), "slow_hidden"),
    (dict(enc_dim=2.5), "enc_dim"),
    (dict(joint_activation="gelu"), "joint_activation"),
    (dict(frontend={"x": object()}), "JSON"),
    (dict(frontend=[1]), "dict"),
    (dict(version=2), "unknown model version 2"),
    (dict(slow_hidden=70000), "limited"),
    (dict(quant={"weight_encoding": "int8"}), "QuantConfig"),
])
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        small_config(**kw)


@pytest.mark.parametrize("kw, match", [
    (dict(weight_encoding="int2"), "weight_encoding"),
    (dict(sparsity=1.0), "sparsity"),
    (dict(sparsity=-0.1), "sparsity"),
    (dict(calibration="mse"), "calibration"),
    (dict(percentile=40.0), "percentile"),
    (dict(cell_frac_bits=16), "cell_frac_bits"),
    (dict(cell_frac_bits=12.0), "cell_frac_bits"),
])
def test_quant_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        QuantConfig(**kw)


def test_config_dict_round_trip():
    c = small_config(quant=QuantConfig(weight_encoding="int4", sparsity=0.5))
    d = json.loads(json.dumps(c.to_dict()))
    assert ModelConfig.from_dict(d) == c
    with pytest.raises(ValueError, match="unknown config keys"):
        ModelConfig.from_dict({**d, "extra": 1})
    d.pop("joint_dim")
    with pytest.raises(ValueError, match="missing config keys"):
        ModelConfig.from_dict(d)


def test_config_is_frozen_and_hashable():
    c = small_config()
    with pytest.raises(AttributeError):
        c.feature_dim = 3
    assert hash(c) == hash(small_config())
    assert c.vocabulary == VOCAB and c.vocab_size == len(VOCAB)


def test_default_config_is_about_one_million_parameters():
    c = ModelConfig(vocabulary=VOCAB)
    n = sum(int(np.prod(shape)) for shape, _ in tensor_specs(c, "float").values())
    assert 0.9e6 < n < 1.4e6


def test_specs_are_consistent():
    c = small_config()
    specs = layer_specs(c)
    for s in specs.values():
        assert sum(n for _, n in s.inputs) == s.cols
    assert specs["fast.proj"].output == specs["slow.proj"].output == "enc"
    assert specs["joint.hidden"].cols == c.enc_dim + c.pred_hidden
    assert specs["arb.out"].rows == 2
    assert set(scale_names(c)) >= {"feature", "backlog", "enc", "logit", "pred.lstm"}
    t = tensor_specs(c, "int")
    assert t["slow.lstm2.weight"] == ((4 * 24, 48), np.dtype(np.int8))
    assert "fast.lstm.codebook" not in t
    cb = tensor_specs(replace(c, quant=QuantConfig(weight_encoding="codebook4")), "int")
    assert cb["fast.lstm.codebook"] == ((16,), np.dtype(np.int8))
    with pytest.raises(ValueError, match="kind"):
        tensor_specs(c, "half")


# ----------------------------------------------------------------- models


def test_random_model_is_seeded(float_model):
    again = random_float_model(small_config(), seed=3)
    other = random_float_model(small_config(), seed=4)
    for k, v in float_model.tensors.items():
        assert np.array_equal(v, again.tensors[k])
    assert not np.array_equal(float_model.tensors["fast.lstm.weight"],
                              other.tensors["fast.lstm.weight"])


def test_random_model_activations_are_in_a_sane_range(float_model):
    rng = np.random.default_rng(1)
    trace = {}
    st = float_model.initial_encoder_state()
    for t in range(60):
        _, st = float_model.encoder_step(t % 2, rng.standard_normal(20), st, trace)
    for name in ("fast.lstm", "slow.lstm1", "slow.lstm2", "enc"):
        a = np.abs(np.array(trace[name]))
        assert 0.05 < a.max() < 5.0, name
        assert a.mean() > 0.01, name
    assert np.abs(st.slow1.c).max() < 8.0  # inside the Q3.12 cell range


@pytest.mark.parametrize("which", ["float", "int"])
def test_a_frame_changes_only_its_branchs_state(which, float_model, int_model):
    m = float_model if which == "float" else int_model
    rng = np.random.default_rng(2)
    st = m.initial_encoder_state()
    for t in range(3):
        f = rng.standard_normal(20)
        feat = f if which == "float" else quantize_activation(f, int_model.feature_scale)
        _, st = m.encoder_step(SLOW, feat, st)
        enc, st2 = m.encoder_step(FAST, feat, st)
        assert st2.slow1 is st.slow1 and st2.slow2 is st.slow2
        assert not np.array_equal(st2.fast.c, st.fast.c)
        enc, st3 = m.encoder_step(SLOW, feat, st2)
        assert st3.fast is st2.fast
        assert enc.shape == (20,)
        st = st3


def test_integer_model_outputs(int_model):
    m = int_model
    rng = np.random.default_rng(3)
    feat = quantize_activation(rng.standard_normal(20), m.feature_scale)
    enc, st = m.encoder_step(SLOW, feat, m.initial_encoder_state())
    pred, ps = m.predictor_step(0, m.initial_predictor_state())
    logits = m.joint(enc, pred)
    assert enc.dtype == pred.dtype == logits.dtype == np.int8
    assert logits.shape == (len(VOCAB),)
    assert m.arbitrate(feat, 0) in (FAST, SLOW)
    assert m.arbitrator_logits(feat, 5).shape == (2,)
    for arr in (enc, pred, st.slow1.h, st.slow2.c, ps.h, ps.c):
        assert not arr.flags.writeable
    assert m.logit_scale == m.scales["logit"] > 0


def test_integer_model_is_deterministic(int_model, codebook_model):
    rng = np.random.default_rng(4)
    feats = quantize_activation(rng.standard_normal((30, 20)), int_model.feature_scale)

    def run(m):
        st, ps = m.initial_encoder_state(), m.initial_predictor_state()
        out = []
        for t, f in enumerate(feats):
            b = m.arbitrate(f, t % 20)
            enc, st = m.encoder_step(b, f, st)
            if t % 3 == 0:
                pred, ps = m.predictor_step(1 + t % 28, ps)
            out.append((b, m.joint(enc, pred).tobytes()))
        return out

    for m in (int_model, codebook_model):
        assert run(m) == run(m)


def test_integer_model_input_checks(int_model):
    m = int_model
    feat = np.zeros(20, np.int8)
    st = m.initial_encoder_state()
    with pytest.raises(ValueError, match="branch"):
        m.encoder_step(2, feat, st)
    with pytest.raises(ValueError, match="branch"):
        m.encoder_step(True, feat, st)
    with pytest.raises(ValueError, match="int8"):
        m.encoder_step(FAST, feat.astype(np.int16), st)
    with pytest.raises(ValueError, match="backlog"):
        m.arbitrate(feat, BACKLOG_MAX + 1)
    with pytest.raises(ValueError, match="backlog"):
        m.arbitrate(feat, -1)
    with pytest.raises(ValueError, match="token"):
        m.predictor_step(len(VOCAB), m.initial_predictor_state())
    pred, _ = m.predictor_step(0, m.initial_predictor_state())
    with pytest.raises(ValueError, match="enc"):
        m.joint(np.zeros(19, np.int8), pred)
    with pytest.raises(ValueError, match="pred"):
        m.joint(np.zeros(20, np.int8), pred.astype(np.int32))


def test_relu_joint_model():
    fm = random_float_model(small_config(joint_activation="relu"), seed=5)
    rng = np.random.default_rng(5)
    qm = quantize_model(fm, [rng.standard_normal((20, 20))])
    assert qm.layers["joint.hidden"].relu
    enc, _ = qm.encoder_step(FAST, np.ones(20, np.int8), qm.initial_encoder_state())
    pred, _ = qm.predictor_step(0, qm.initial_predictor_state())
    assert qm.joint(enc, pred).dtype == np.int8


@pytest.mark.parametrize("frames, q", [(0, 0), (0.49, 0), (0.5, 1), (3.2, 3), (126.5, 127),
                                       (1e9, 127), (-4, 0)])
def test_quantize_backlog(frames, q):
    assert quantize_backlog(frames) == q


def test_quantize_backlog_rejects_nan():
    with pytest.raises(ValueError):
        quantize_backlog(float("nan"))


# ----------------------------------------------------------------- files


@pytest.mark.parametrize("which", ["float", "int", "codebook"])
def test_save_load_round_trip(tmp_path, which, float_model, int_model, codebook_model):
    m = {"float": float_model, "int": int_model, "codebook": codebook_model}[which]
    path = tmp_path / "model.nep"
    save_model(m, path)
    assert path.exists() and not (tmp_path / "model.nep.npz").exists()
    back = load_model(path)
    assert type(back) is type(m) and back.config == m.config
    assert back.tensors.keys() == m.tensors.keys()
    for k, v in m.tensors.items():
        assert back.tensors[k].dtype == v.dtype and np.array_equal(back.tensors[k], v)
    if which != "float":
        assert back.scales == m.scales
        feat = np.arange(-10, 10, dtype=np.int8)
        e1, _ = m.encoder_step(SLOW, feat, m.initial_encoder_state())
        e2, _ = back.encoder_step(SLOW, feat, back.initial_encoder_state())
        assert np.array_equal(e1, e2)


def entries(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def header_of(e):
    return json.loads(e[HEADER_KEY].tobytes().decode())


def with_header(e, **changes):
    h = header_of(e)
    h.update(changes)
    return {**e, HEADER_KEY: np.frombuffer(json.dumps(h).encode(), np.uint8)}


@pytest.fixture()
def saved_int(tmp_path, int_model):
    path = tmp_path / "ok.npz"
    save_model(int_model, path)
    return entries(path)


def write(tmp_path, e, name="bad.npz"):
    path = tmp_path / name
    with open(path, "wb") as f:
        np.savez(f, **e)
    return path


def expect(path, match):
    with pytest.raises(ModelError, match=match):
        load_model(path)


def test_missing_file(tmp_path):
    expect(tmp_path / "nope.npz", "no such file")


def test_not_an_archive(tmp_path):
    p = tmp_path / "x.npz"
    p.write_text("hello, I am text")
    expect(p, "not an NEP model file")


def test_single_npy_array(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.zeros(3))
    expect(p, r"not an NEP model file \(a single .npy")


def test_archive_without_header(tmp_path, saved_int):
    e = dict(saved_int)
    del e[HEADER_KEY]
    expect(write(tmp_path, e), f"no {HEADER_KEY} entry")


def test_header_not_json(tmp_path, saved_int):
    e = {**saved_int, HEADER_KEY: np.frombuffer(b"{not json", np.uint8)}
    expect(write(tmp_path, e), "not valid UTF-8 JSON")


def test_header_wrong_format_name(tmp_path, saved_int):
    expect(write(tmp_path, with_header(saved_int, format="other")), "not an NEP model file")


def test_unknown_version(tmp_path, saved_int):
    expect(write(tmp_path, with_header(saved_int, version=FORMAT_VERSION + 1)),
           f"unknown model version {FORMAT_VERSION + 1}")


def test_unknown_kind(tmp_path, saved_int):
    expect(write(tmp_path, with_header(saved_int, kind="fp16")), "unknown model kind 'fp16'")


def test_bad_config(tmp_path, saved_int):
    cfg = header_of(saved_int)["config"]
    cfg["vocabulary"] = ["a", "b"]
    expect(write(tmp_path, with_header(saved_int, config=cfg)), "bad config in header.*blank")


def test_missing_tensor(tmp_path, saved_int):
    e = dict(saved_int)
    del e["slow.lstm2.bias"]
    expect(write(tmp_path, e), "missing tensor slow.lstm2.bias")


def test_unexpected_tensor(tmp_path, saved_int):
    expect(write(tmp_path, {**saved_int, "extra.weight": np.zeros(2)}),
           "unexpected tensor extra.weight")


def test_wrong_shape(tmp_path, saved_int):
    e = {**saved_int, "joint.out.weight": saved_int["joint.out.weight"][:, :-1]}
    expect(write(tmp_path, e), r"tensor joint.out.weight has shape \(29, 23\), "
                               r"expected \(29, 24\)")


def test_wrong_dtype(tmp_path, saved_int):
    e = {**saved_int, "fast.lstm.bias": saved_int["fast.lstm.bias"].astype(np.int64)}
    expect(write(tmp_path, e), "tensor fast.lstm.bias has dtype int64, expected int32")


def test_object_array_needs_pickle(tmp_path, saved_int):
    e = {**saved_int, "fast.lstm.bias": np.array([{"a": 1}], dtype=object)}
    path = tmp_path / "pickled.npz"
    with open(path, "wb") as f:
        np.savez(f, **e)
    expect(path, "tensor fast.lstm.bias cannot be read")


def test_bad_multiplier(tmp_path, saved_int):
    m = saved_int["arb.out.multiplier"].copy()
    m[0] = 12345
    expect(write(tmp_path, {**saved_int, "arb.out.multiplier": m}),
           "layer arb.out: multipliers must be 0 or in")


def test_missing_and_bad_scales(tmp_path, saved_int):
    scales = header_of(saved_int)["scales"]
    expect(write(tmp_path, with_header(saved_int, scales={k: v for k, v in scales.items()
                                                          if k != "logit"})),
           "missing scale logit")
    expect(write(tmp_path, with_header(saved_int, scales={**scales, "enc": -1.0})),
           "scale enc must be a finite positive number")


def test_int4_range_checked(tmp_path, int_model):
    c = replace(int_model.config, quant=QuantConfig(weight_encoding="int4"))
    t = dict(int_model.tensors)
    with pytest.raises(ModelError, match="outside int4"):
        QuantModel(c, t, int_model.scales)


def test_codebook_rules_checked(codebook_model):
    t = dict(codebook_model.tensors)
    w = t["joint.out.weight"].copy()
    cb = t["joint.out.codebook"]
    w[0, 0] = next(v for v in range(-128, 128) if v not in cb.tolist())
    with pytest.raises(ModelError, match="joint.out.weight has values .* not in its codebook"):
        QuantModel(codebook_model.config, {**t, "joint.out.weight": w}, codebook_model.scales)
    bad_cb = cb.copy()
    bad_cb[0] = 5
    with pytest.raises(ModelError, match="joint.out.codebook must be 0 followed"):
        QuantModel(codebook_model.config, {**t, "joint.out.codebook": bad_cb},
                   codebook_model.scales)


def test_float_model_checks(float_model):
    t = dict(float_model.tensors)
    w = t["arb.out.weight"].copy()
    w[0, 0] = np.nan
    with pytest.raises(ModelError, match="non-finite"):
        FloatModel(float_model.config, {**t, "arb.out.weight": w})
    with pytest.raises(ModelError, match="not a NumPy array"):
        FloatModel(float_model.config, {**t, "arb.out.bias": [0.0, 0.0]})


def test_save_rejects_non_models(tmp_path):
    with pytest.raises(ModelError, match="can only save"):
        save_model({"a": 1}, tmp_path / "x.npz")


def test_model_tensors_are_frozen_copies(int_model):
    with pytest.raises(ValueError):
        int_model.tensors["fast.lstm.weight"][0, 0] = 1
