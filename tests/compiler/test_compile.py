"""The compiler: image contents and layout, the image file and its loader, models that do
not fit, and the command line."""

import struct
import zlib

import numpy as np
import pytest

from compiler.__main__ import main
from compiler.compile import (
    PROGRAMS,
    CompileError,
    ImageFormatError,
    compile_model,
    load_image,
    memory_summary,
)
from compiler.iss import engine_decode
from compiler.isa import ErrorCode, Mode, Op, ProcessorConfig, decode, static_error
from golden.model import (
    ModelConfig,
    QuantConfig,
    layer_specs,
    random_float_model,
    save_model,
)
from golden.quantize import quantize_model
from golden.tokens import default_tokens
from golden.weights import Encoding, word_bytes

CONFIG = ModelConfig(vocabulary=tuple(default_tokens()), feature_dim=20, fast_hidden=16,
                     slow_hidden=32, enc_dim=24, arbitrator_hidden=8, pred_embed=8,
                     pred_hidden=16, joint_dim=24)


def quantized(quant=QuantConfig(), config=CONFIG):
    rng = np.random.default_rng(2)
    return quantize_model(random_float_model(config, seed=4),
                          [rng.standard_normal((30, config.feature_dim))], quant=quant)


@pytest.fixture(scope="module")
def model():
    return quantized(QuantConfig(weight_encoding="int4", sparsity=0.5))


@pytest.fixture(scope="module")
def image(model):
    return compile_model(model)


def programs(image):
    out = {}
    for name, e in image.memory_map["programs"].items():
        out[name] = [decode(w) for w in image.program[e["addr"]:e["addr"] + e["length"]]]
    return out


def test_programs_are_legal_and_end_with_halt(image):
    progs = programs(image)
    assert set(progs) == set(PROGRAMS)
    assert sum(len(p) for p in progs.values()) == len(image.program)
    for code in progs.values():
        assert code[-1].op == Op.HALT
        assert all(i.op != Op.HALT for i in code[:-1])
        assert all(static_error(i) == ErrorCode.OK for i in code)
    assert [i.op for i in progs["encoder_slow"]] == [Op.LSTM, Op.LSTM, Op.MATVEC, Op.HALT]
    assert [i.op for i in progs["encoder_fast"]] == [Op.LSTM, Op.MATVEC, Op.HALT]


def test_unfused_programs_use_matvec_and_vector_ops(model):
    progs = programs(compile_model(model, fuse_lstm=False))
    ops = {i.op for p in progs.values() for i in p}
    assert Op.LSTM not in ops
    assert {Op.SIGMOID, Op.TANH, Op.VMUL, Op.VADD, Op.VMULQ8} <= ops


def test_scratch_regions_are_disjoint_and_fit(image, model):
    regions = sorted(image.memory_map["regions"].values(), key=lambda r: r["addr"])
    for a, b in zip(regions, regions[1:]):
        assert a["addr"] + a["length"] <= b["addr"]
    assert regions[-1]["addr"] + regions[-1]["length"] == image.memory_map["scratch_used"]
    assert image.memory_map["scratch_used"] <= image.config.scratch_depth
    for prefix in ("fast", "slow1", "slow2", "pred"):  # the LSTM instruction's state: h, c
        h, c = image.region(f"{prefix}.h"), image.region(f"{prefix}.c")
        assert h.end == c.addr and h.length == c.length


def test_layers_compress_unchanged_except_interleaved_gates(image, model):
    specs = layer_specs(model.config)
    wb = word_bytes(image.config.lanes)
    for name, lay in image.memory_map["layers"].items():
        d = image.descriptors[lay["descriptor"]]
        words = image.weights[d.stream_base:d.stream_base + d.n_words]
        params = image.params[d.param_base:d.param_base + d.rows]
        assert zlib.crc32(b"".join(w.to_bytes(wb, "little") for w in words)) == d.crc_stream
        assert zlib.crc32(b"".join(p.to_bytes(9, "little") for p in params)) == d.crc_params
        layer = model.layers[name]
        lin = layer.gates if specs[name].kind == "lstm" else layer
        w = lin.weight
        if d.mode == Mode.LSTM:
            h = d.rows // 4
            w = w.reshape(4, h, -1).transpose(1, 0, 2).reshape(4 * h, -1)
            assert d.split == specs[name].cols - h and d.cell_frac_bits == 12
        got, nnz, err = engine_decode(words, 8, d.encoding, d.codebook, d.rows, d.cols)
        assert err == ErrorCode.OK and np.array_equal(got, w)
        assert d.nnz == nnz == np.count_nonzero(w) and d.encoding == Encoding.INT4


def test_image_file_round_trip(image):
    data = image.to_bytes()
    back = load_image(data)
    for f in ("config", "descriptors", "program", "weights", "params", "constants",
              "memory_map"):
        assert getattr(back, f) == getattr(image, f)
    assert len(back.scratch_init) == 1
    assert back.scratch_init[0][0] == image.scratch_init[0][0]
    assert np.array_equal(back.scratch_init[0][1], image.scratch_init[0][1])
    assert back.to_bytes() == data


def recrc(data: bytearray) -> bytes:
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    return bytes(data)


def test_loader_rejects_bad_files(image):
    data = image.to_bytes()
    cases = {
        "truncated": data[:-1],
        "padded": data + b"\0",
        "shorter than its header": data[:10],
        "not an NEP processor image": b"XXXX" + data[4:],
        "unsupported image version 2": data[:4] + struct.pack("<H", 2) + data[6:],
        "CRC mismatch": data[:200] + bytes([data[200] ^ 1]) + data[201:],
    }
    for msg, bad in cases.items():
        with pytest.raises(ImageFormatError, match=msg):
            load_image(bad)
    with pytest.raises(ImageFormatError, match="must be bytes"):
        load_image("nope")
    # A consistent CRC does not hide structural problems.
    head = struct.calcsize("<4sHHI")
    bad = bytearray(data)
    bad[head:head + 2] = struct.pack("<H", 99)  # first section's tag
    with pytest.raises(ImageFormatError, match="unknown section tag 99"):
        load_image(recrc(bad))
    bad = bytearray(data)
    bad[head + 12:head + 16] = struct.pack("<I", 2)  # config record count
    with pytest.raises(ImageFormatError, match="section config"):
        load_image(recrc(bad))
    bad = bytearray(data)
    dir2 = head + struct.calcsize("<HHIII")
    bad[dir2:dir2 + 2] = struct.pack("<H", 1)  # second section claims to be config too
    with pytest.raises(ImageFormatError, match="appears twice"):
        load_image(recrc(bad))


def test_loader_checks_config_and_counts(image, model):
    small = ProcessorConfig(weight_depth=len(image.weights))
    img = compile_model(model, small)
    data = bytearray(img.to_bytes())
    # config section payload: lanes is its first u32
    (off,) = struct.unpack_from("<I", data, struct.calcsize("<4sHHI") + 4)
    data[off:off + 4] = struct.pack("<I", 5)
    with pytest.raises(ImageFormatError, match="bad processor configuration: .*lanes"):
        load_image(recrc(data))
    data = bytearray(img.to_bytes())
    data[off + 8:off + 12] = struct.pack("<I", len(img.weights) - 1)  # weight_depth
    with pytest.raises(ImageFormatError, match="weights holds .* the configured memory"):
        load_image(recrc(data))


@pytest.mark.parametrize("field, memory", [
    ("weight_depth", "weight memory"), ("param_depth", "parameter memory"),
    ("scratch_depth", "scratchpad"), ("program_depth", "program memory"),
    ("desc_depth", "descriptor table"), ("const_depth", "constant table"),
    ("max_cols", "activation buffer"), ("max_rows", "engine rows")])
def test_models_that_do_not_fit_are_refused(model, image, field, memory):
    need = {"weight_depth": len(image.weights), "param_depth": len(image.params),
            "scratch_depth": image.memory_map["scratch_used"],
            "program_depth": len(image.program), "desc_depth": len(image.descriptors),
            "const_depth": len(image.constants), "max_cols": 32 + 32, "max_rows": 4 * 32}
    with pytest.raises(CompileError, match=memory) as e:
        compile_model(model, ProcessorConfig(**{field: need[field] - 1}))
    assert str(need[field] - 1) in str(e.value)
    if field not in ("max_cols", "max_rows"):
        assert f"needs {need[field]}" in str(e.value)
    compile_model(model, ProcessorConfig(**{field: need[field]}))  # exactly enough fits


def test_compile_arguments_checked(model):
    with pytest.raises(TypeError, match="QuantModel"):
        compile_model(random_float_model(CONFIG))
    with pytest.raises(TypeError, match="ProcessorConfig"):
        compile_model(model, {"lanes": 8})


@pytest.mark.parametrize("lanes", [4, 16])
def test_other_lane_counts(model, lanes):
    img = compile_model(model, ProcessorConfig(lanes=lanes))
    assert load_image(img.to_bytes()).config.lanes == lanes
    assert all(w < 1 << img.config.word_bits for w in img.weights)


def test_memory_summary(image):
    text = memory_summary(image)
    for word in ("weights", "scratch", "encoder_slow", "slow.lstm1", "embed.table", "LSTM"):
        assert word in text


def test_command_line(tmp_path, model, capsys):
    src, out = tmp_path / "m.npz", tmp_path / "m.nepimg"
    save_model(model, src)
    assert main([str(src), str(out)]) == 0
    text = capsys.readouterr().out
    assert "weights" in text and f"wrote {out}" in text
    img = load_image(out.read_bytes())
    assert img.memory_map["fuse_lstm"] is True
    assert main([str(src), str(out), "--no-fuse-lstm", "--lanes", "4"]) == 0
    assert load_image(out.read_bytes()).config.lanes == 4
    assert main([str(src), str(out), "--weight-depth", "10"]) == 1
    assert "weight memory: the model needs" in capsys.readouterr().err
    save_model(random_float_model(CONFIG), src)
    assert main([str(src), str(out)]) == 1
    assert "float model" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.npz"), str(out)]) == 1
