"""The instruction-level simulator: per-instruction numerics against golden, every error
code with its faulting PC, the engine decoder mirror, the cycle model, and every compute
step bit-exact against the golden backend (several models, > 50 frames, branch switches),
plus the whole pipeline on the ISS backend."""

import zlib

import numpy as np
import pytest

from compiler.compile import compile_model
from compiler.isa import (
    RUN_START_CYCLES,
    Descriptor,
    ErrorCode,
    Instruction,
    Mode,
    Op,
    ProcessorConfig,
    encode,
    instruction_cycles,
    pack_constant,
)
from compiler.iss import IssBackend, IssError, Machine, engine_decode
from golden.arbitration import CostModel
from golden.backend import STEPS, Backend, GoldenBackend
from golden.cli import random_model, synthetic_speech
from golden.frontend import FrontendConfig
from golden.lstm import cell_to_q3_12, sigmoid_q15, tanh_q15
from golden.model import FAST, SLOW, ModelConfig, QuantConfig, random_float_model
from golden.numerics import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
)
from golden.pipeline import Recognizer
from golden.quantize import quantize_model
from golden.tokens import default_tokens
from golden.weights import Encoding, compress, decompress, param_words, parse_header, \
    stream_words

VOCAB = tuple(default_tokens())
CODEBOOK = (0, *[v for v in range(-70, 90, 10) if v])
SMALL = ProcessorConfig(program_depth=64, weight_depth=4096, param_depth=256,
                        scratch_depth=512, desc_depth=8, const_depth=4, max_rows=64,
                        max_cols=64)


def machine(program, config=SMALL, constants=()):
    """A machine with ``program`` loaded at 0 and ``constants`` in the table."""
    m = Machine(config)
    m.write_program(0, [encode(i) for i in program])
    m.prog_len = len(program)
    for i, (mult, shift) in enumerate(constants):
        m.write_constant(i, pack_constant(mult, shift))
    m.const_count = len(constants)
    return m


def with_layer(m, w, *, mode=Mode.INT8, split=None, encoding=Encoding.INT8, codebook=None,
               seed=0, base=0, index=0, **desc_kw):
    """Compress ``w`` into ``m``'s memories and write its descriptor."""
    rng = np.random.default_rng(seed)
    rows, cols = w.shape
    bias = rng.integers(-2000, 2000, rows)
    mult = rng.integers(1 << 30, 1 << 31, rows)
    shift = rng.integers(-12, -4, rows)
    img = compress(w, bias, mult, shift, encoding=encoding, lanes=m.config.lanes,
                   codebook=codebook)
    h = parse_header(img)
    m.write_weights(base, stream_words(img))
    m.write_params(base, param_words(img))
    fields = dict(stream_base=base, n_words=h.n_words, param_base=base, nnz=h.nnz,
                  crc_stream=h.crc_stream, crc_params=h.crc_params, rows=rows, cols=cols,
                  split=cols if split is None else split, encoding=int(encoding),
                  mode=int(mode), codebook=h.codebook)
    fields.update(desc_kw)
    m.write_descriptor(index, Descriptor(**fields))
    m.desc_count = max(m.desc_count, index + 1)
    return bias, mult, shift


# ---------------------------------------------------------------------------- numerics


def rand16(rng, n):
    v = rng.integers(-32768, 32768, n)
    v[:4] = (-32768, 32767, 0, -1)
    return v


def run_vector(op, p, a, b=None, constants=()):
    n = len(a)
    prog = [Instruction(Op.SETVL, a=n), Instruction(op, p=p, d=300, a=0, b=100 if b is not None
                                                    else 0), Instruction(Op.HALT)]
    m = machine(prog, constants=constants)
    m.write_scratch(0, a)
    if b is not None:
        m.write_scratch(100, b)
    r = m.run(0)
    assert r.error == ErrorCode.OK
    return m.read_scratch(300, n).astype(np.int64), r


def test_vector_instructions_match_golden():
    rng = np.random.default_rng(1)
    a, b = rand16(rng, 64), rand16(rng, 64)
    sat16 = lambda x: np.clip(x, -32768, 32767)  # noqa: E731
    y, _ = run_vector(Op.VADD, 0, a, b)
    assert np.array_equal(y, sat16(a + b))
    for sh in (0, 1, 15, 18, 31):
        y, _ = run_vector(Op.VMUL, sh, a, b)
        assert np.array_equal(y, sat16(rounding_divide_by_pot(a * b, sh)))
    y, _ = run_vector(Op.VCOPY, 0, a)
    assert np.array_equal(y, a)
    y, _ = run_vector(Op.SIGMOID, 0, a)
    assert np.array_equal(y, sigmoid_q15(a))
    y, _ = run_vector(Op.TANH, 0, a)
    assert np.array_equal(y, tanh_q15(a))
    for n in (8, 10, 13, 15):  # the cell-to-Q3.12 conversions
        p = (12 - n) if n < 12 else 0x20 | (n - 12)
        y, _ = run_vector(Op.VSHIFT, p, a)
        assert np.array_equal(y, cell_to_q3_12(a, n))
    y, _ = run_vector(Op.VSHIFT, 0x68, a)  # q15_to_int8
    assert np.array_equal(y, np.clip(rounding_divide_by_pot(a, 8), -128, 127))
    m, s = quantize_multiplier(2.0 ** -30 / 0.013)
    y, _ = run_vector(Op.VMULQ8, 0, a, b, constants=[(m, s)])
    assert np.array_equal(y, np.clip(multiply_by_quantized_multiplier(a * b, m, s), -128, 127))
    m, s = quantize_multiplier(0.0123)
    y, _ = run_vector(Op.VREQ8, 0, a, constants=[(m, s)])
    assert np.array_equal(y, np.clip(multiply_by_quantized_multiplier(a, m, s), -128, 127))


def test_argmax_takes_the_first_maximum_and_sets_result():
    prog = [Instruction(Op.SETVL, a=5), Instruction(Op.ARGMAX, d=20, a=0), Instruction(Op.HALT)]
    for values, want in (([3, 7, 7, -1, 7], 1), ([-5, -5, -9, -6, -7], 0),
                         ([0, 0, 0, 0, 1], 4)):
        m = machine(prog)
        m.write_scratch(0, values)
        assert m.run(0).error == ErrorCode.OK
        assert m.result == want and m.read_scratch(20, 1)[0] == want
    # the arbitrator's rule: SLOW only if logit[1] > logit[0]
    for l0, l1 in ((4, 4), (4, 5), (5, 4)):
        m = machine([Instruction(Op.SETVL, a=2), Instruction(Op.ARGMAX, d=20, a=0),
                     Instruction(Op.HALT)])
        m.write_scratch(0, [l0, l1])
        m.run(0)
        assert m.result == (SLOW if l1 > l0 else FAST)


def test_loadrow_copies_the_indexed_row():
    table = np.arange(5 * 3).reshape(5, 3) - 7
    prog = [Instruction(Op.SETVL, a=3, b=5), Instruction(Op.LOADROW, d=100, a=0, b=50),
            Instruction(Op.HALT)]
    for token in range(5):
        m = machine(prog)
        m.write_scratch(0, table.reshape(-1))
        m.write_scratch(50, [token])
        assert m.run(0).error == ErrorCode.OK
        assert np.array_equal(m.read_scratch(100, 3), table[token])


@pytest.mark.parametrize("encoding", list(Encoding))
@pytest.mark.parametrize("mode", [Mode.INT8, Mode.INT8_RELU, Mode.Q3_12])
def test_matvec_two_sources_and_modes(encoding, mode):
    rng = np.random.default_rng(int(encoding) * 3 + int(mode))
    lo, hi = {Encoding.INT8: (-127, 128), Encoding.INT4: (-8, 8)}.get(encoding, (-8, 8))
    cb = None
    w = rng.integers(lo, hi, (12, 30)) * (rng.random((12, 30)) < 0.6)
    if encoding == Encoding.CODEBOOK:
        cb = CODEBOOK
        w = np.array(cb)[rng.integers(0, 16, (12, 30))] * (rng.random((12, 30)) < 0.6)
    m = machine([Instruction(Op.MATVEC, 0, 200, 0, 100), Instruction(Op.HALT)])
    bias, mult, shift = with_layer(m, w, mode=mode, split=18, encoding=encoding, codebook=cb)
    x = rng.integers(-128, 128, 30)
    m.write_scratch(0, x[:18])
    m.write_scratch(100, x[18:])
    r = m.run(0)
    assert r.error == ErrorCode.OK
    acc = w.astype(np.int64) @ x + bias
    q = multiply_by_quantized_multiplier(acc, mult, shift)
    want = {Mode.INT8: np.clip(q, -128, 127), Mode.INT8_RELU: np.clip(q, 0, 127),
            Mode.Q3_12: np.clip(q, -32768, 32767)}[mode]
    assert np.array_equal(m.read_scratch(200, 12), want)
    desc = Descriptor.unpack(m.descriptors[0])
    assert r.trace[0].cycles == 2 + 3 + 30 + desc.n_words + 26
    assert r.macs == np.count_nonzero(w)


def test_matvec_reads_the_low_byte_of_each_entry():
    w = np.eye(4, dtype=np.int64)
    m = machine([Instruction(Op.MATVEC, 0, 10, 0, 0), Instruction(Op.HALT)])
    with_layer(m, w, mode=Mode.Q3_12)
    m.write_scratch(0, [0x0105, -1, 0x7F80, 3])  # low bytes 5, -1, -128, 3
    assert m.run(0).error == ErrorCode.OK
    w2 = m.read_scratch(10, 4)
    m2 = machine([Instruction(Op.MATVEC, 0, 10, 0, 0), Instruction(Op.HALT)])
    with_layer(m2, w, mode=Mode.Q3_12)
    m2.write_scratch(0, [5, -1, -128, 3])
    m2.run(0)
    assert np.array_equal(w2, m2.read_scratch(10, 4))


# ---------------------------------------------------------------------------- engine mirror


@pytest.mark.parametrize("lanes", [4, 8, 16])
@pytest.mark.parametrize("encoding", list(Encoding))
def test_engine_decode_agrees_with_golden_decompress(lanes, encoding):
    rng = np.random.default_rng(lanes + int(encoding))
    cb = CODEBOOK if encoding == Encoding.CODEBOOK else None
    for density in (1.0, 0.3, 0.02):
        vals = (np.array(cb)[rng.integers(1, 16, (9, 70))] if cb else
                rng.integers(-8, 8, (9, 70)) if encoding == Encoding.INT4 else
                rng.integers(-128, 128, (9, 70)))
        w = vals * (rng.random((9, 70)) < density)
        img = compress(w, np.zeros(9, int), np.full(9, 1 << 30), np.zeros(9, int),
                       encoding=encoding, lanes=lanes, codebook=cb)
        h = parse_header(img)
        got, nnz, err = engine_decode(stream_words(img), lanes, int(encoding), h.codebook, 9, 70)
        assert err == ErrorCode.OK and nnz == h.nnz
        assert np.array_equal(got, decompress(img).weights)


# ---------------------------------------------------------------------------- errors


def layer_fault(mutate, *, words_extra=()):
    """Run a one-MATVEC program after ``mutate(descriptor fields, weights)``."""
    rng = np.random.default_rng(7)
    w = rng.integers(-128, 128, (6, 40))
    w[:, -1] = 5  # a weight in the last column
    m = machine([Instruction(Op.SETVL, a=1), Instruction(Op.MATVEC, 0, 300, 0, 0),
                 Instruction(Op.HALT)])
    with_layer(m, w)
    d = Descriptor.unpack(m.descriptors[0]).__dict__.copy()
    words = list(m.weights[:d["n_words"]]) + list(words_extra)
    mutate(d, words)
    m.write_weights(0, words)
    m.write_descriptor(0, Descriptor(**d))
    m.write_scratch(300, np.full(6, 99))
    r = m.run(0)
    return r, m


def set_split(word, split, end):
    return (word & ~0x1F) | end | (split << 1)


ENGINE_FAULTS = {
    ErrorCode.SHAPE: lambda d, w: d.update(n_words=0),
    ErrorCode.ENCODING: lambda d, w: d.update(encoding=3),
    ErrorCode.SPLIT: lambda d, w: w.__setitem__(0, set_split(w[0], 1, 0)),
    ErrorCode.LENGTH: lambda d, w: d.update(n_words=d["n_words"] + 1),
    ErrorCode.COLUMN: lambda d, w: d.update(cols=39, split=39),
    ErrorCode.TRUNCATED: lambda d, w: d.update(n_words=d["n_words"] - 1),
    ErrorCode.NNZ: lambda d, w: d.update(nnz=d["nnz"] + 1),
    ErrorCode.CRC_STREAM: lambda d, w: d.update(crc_stream=d["crc_stream"] ^ 1),
    ErrorCode.CRC_PARAMS: lambda d, w: d.update(crc_params=d["crc_params"] ^ 1),
}


@pytest.mark.parametrize("code", list(ENGINE_FAULTS))
def test_corrupt_weight_image_halts_with_the_engine_code(code):
    r, m = layer_fault(ENGINE_FAULTS[code], words_extra=(4 << 1,))  # a padding word, no end
    assert r.error == code and r.fault_pc == 1
    assert r.instructions == 1  # SETVL completed, MATVEC did not
    assert np.all(m.read_scratch(300, 6) == 99)  # nothing written


def test_shape_checks_against_the_engine_buffers():
    r, _ = layer_fault(lambda d, w: d.update(rows=SMALL.max_rows + 4))
    assert r.error == ErrorCode.SHAPE
    r, _ = layer_fault(lambda d, w: d.update(rows=0))
    assert r.error == ErrorCode.SHAPE


def test_flipped_stream_bits_are_always_caught():
    rng = np.random.default_rng(3)
    for _ in range(40):
        k, bit = int(rng.integers(0, 60)), int(rng.integers(0, 77))
        r, _ = layer_fault(lambda d, w: w.__setitem__(k, w[k] ^ (1 << bit)))
        assert 1 <= r.error <= 9 and r.fault_pc == 1


def fault(program, *, setup=None, config=SMALL, constants=((1 << 30, 0),)):
    m = machine(program, config, constants)
    if setup:
        setup(m)
    before = m.scratch.copy()
    r = m.run(0)
    assert np.array_equal(before, m.scratch)  # a faulting instruction writes nothing
    return r


S = Instruction(Op.SETVL, a=8, b=4)
H = Instruction(Op.HALT)


def lstm_desc(m, **kw):
    rng = np.random.default_rng(0)
    with_layer(m, rng.integers(-9, 9, (16, 12)), **{"mode": Mode.LSTM, "split": 8,
                                                    "cell_frac_bits": 12, **kw})


SEQUENCER_FAULTS = [
    ("illegal opcode", [S, Instruction(0x00), H], None, ErrorCode.ILLEGAL_OPCODE, 1),
    ("illegal opcode 0xFF", [S, Instruction(0xFF), H], None, ErrorCode.ILLEGAL_OPCODE, 1),
    ("reserved field", [S, Instruction(Op.VCOPY, d=10, a=0, b=1), H], None,
     ErrorCode.RESERVED_FIELD, 1),
    ("reserved p bit", [S, Instruction(Op.VMUL, p=0x40, d=10, a=0, b=20), H], None,
     ErrorCode.RESERVED_FIELD, 1),
    ("halt with operands", [Instruction(Op.HALT, d=1)], None, ErrorCode.RESERVED_FIELD, 0),
    ("vshift left 16", [S, Instruction(Op.VSHIFT, p=16, d=10, a=0), H], None,
     ErrorCode.BAD_OPERAND, 1),
    ("vl zero", [Instruction(Op.VADD, d=10, a=0, b=20), H], None, ErrorCode.BAD_OPERAND, 0),
    ("argmax vl zero", [Instruction(Op.ARGMAX, d=10, a=0), H], None, ErrorCode.BAD_OPERAND, 0),
    ("constant index", [S, Instruction(Op.VMULQ8, p=1, d=10, a=0, b=20), H], None,
     ErrorCode.BAD_OPERAND, 1),
    ("constant invalid", [S, Instruction(Op.VREQ8, p=0, d=10, a=0), H],
     lambda m: m.write_constant(0, pack_constant(5, 0)), ErrorCode.BAD_OPERAND, 1),
    ("loadrow index", [S, Instruction(Op.LOADROW, d=100, a=0, b=50), H],
     lambda m: m.write_scratch(50, [4]), ErrorCode.BAD_OPERAND, 1),
    ("loadrow negative index", [S, Instruction(Op.LOADROW, d=100, a=0, b=50), H],
     lambda m: m.write_scratch(50, [-1]), ErrorCode.BAD_OPERAND, 1),
    ("loadrow vn zero", [Instruction(Op.SETVL, a=8), Instruction(Op.LOADROW, d=100, a=0, b=50),
                         H], None, ErrorCode.BAD_OPERAND, 1),
    ("loadrow overlaps table", [S, Instruction(Op.LOADROW, d=20, a=0, b=50), H], None,
     ErrorCode.SCRATCH_RANGE, 1),
    ("vector past scratch", [S, Instruction(Op.VADD, d=505, a=0, b=20), H], None,
     ErrorCode.SCRATCH_RANGE, 1),
    ("source past scratch", [S, Instruction(Op.TANH, d=0, a=510), H], None,
     ErrorCode.SCRATCH_RANGE, 1),
    ("partial overlap", [S, Instruction(Op.VADD, d=4, a=0, b=20), H], None,
     ErrorCode.SCRATCH_RANGE, 1),
    ("partial overlap b", [S, Instruction(Op.VMUL, d=20, a=20, b=23), H], None,
     ErrorCode.SCRATCH_RANGE, 1),
    ("argmax result past scratch", [S, Instruction(Op.ARGMAX, d=512, a=0), H], None,
     ErrorCode.SCRATCH_RANGE, 1),
    ("descriptor index", [Instruction(Op.MATVEC, 0, 10, 0, 0), H], None,
     ErrorCode.BAD_DESCRIPTOR, 0),
    ("descriptor mode for matvec", [Instruction(Op.MATVEC, 0, 100, 0, 0), H], lstm_desc,
     ErrorCode.BAD_DESCRIPTOR, 0),
    ("descriptor mode for lstm", [Instruction(Op.LSTM, 0, 100, 0), H],
     lambda m: with_layer(m, np.ones((8, 4), int)), ErrorCode.BAD_DESCRIPTOR, 0),
    ("descriptor mode 4", [Instruction(Op.MATVEC, 0, 100, 0, 0), H],
     lambda m: with_layer(m, np.ones((8, 4), int), mode=4), ErrorCode.BAD_DESCRIPTOR, 0),
    ("descriptor reserved", [Instruction(Op.MATVEC, 0, 100, 0, 0), H],
     lambda m: with_layer(m, np.ones((8, 4), int), reserved=1), ErrorCode.BAD_DESCRIPTOR, 0),
    ("descriptor split", [Instruction(Op.MATVEC, 0, 100, 0, 0), H],
     lambda m: with_layer(m, np.ones((8, 4), int), split=5), ErrorCode.BAD_DESCRIPTOR, 0),
    ("descriptor weight range", [Instruction(Op.MATVEC, 0, 100, 0, 0), H],
     lambda m: with_layer(m, np.ones((8, 4), int), stream_base=4095),
     ErrorCode.BAD_DESCRIPTOR, 0),
    ("descriptor param range", [Instruction(Op.MATVEC, 0, 100, 0, 0), H],
     lambda m: with_layer(m, np.ones((8, 4), int), param_base=250),
     ErrorCode.BAD_DESCRIPTOR, 0),
    ("lstm cell bits", [Instruction(Op.LSTM, 0, 100, 0), H],
     lambda m: lstm_desc(m, cell_frac_bits=16), ErrorCode.BAD_DESCRIPTOR, 0),
    ("lstm shape", [Instruction(Op.LSTM, 0, 100, 0), H],
     lambda m: lstm_desc(m, split=7), ErrorCode.BAD_DESCRIPTOR, 0),
    ("lstm constant", [Instruction(Op.LSTM, 0, 100, 0), H],
     lambda m: lstm_desc(m, const_index=3), ErrorCode.BAD_DESCRIPTOR, 0),
    ("matvec destination past scratch", [Instruction(Op.MATVEC, 0, 508, 0, 0), H],
     lambda m: with_layer(m, np.ones((8, 4), int)), ErrorCode.SCRATCH_RANGE, 0),
    ("matvec source b past scratch", [Instruction(Op.MATVEC, 0, 0, 0, 511), H],
     lambda m: with_layer(m, np.ones((8, 4), int), split=2), ErrorCode.SCRATCH_RANGE, 0),
    ("lstm state past scratch", [Instruction(Op.LSTM, 0, 506, 0), H], lstm_desc,
     ErrorCode.SCRATCH_RANGE, 0),
    ("runs past its end", [S, S], None, ErrorCode.PC_OVERRUN, 2),
    ("empty program", [], None, ErrorCode.PC_OVERRUN, 0),
]


@pytest.mark.parametrize("name, program, setup, code, pc", SEQUENCER_FAULTS,
                         ids=[f[0] for f in SEQUENCER_FAULTS])
def test_sequencer_errors(name, program, setup, code, pc):
    r = fault(program, setup=setup)
    assert (r.error, r.fault_pc) == (code, pc)
    assert r.instructions == pc


def test_error_codes_covered():
    seen = {f[3] for f in SEQUENCER_FAULTS} | set(ENGINE_FAULTS) | {ErrorCode.WATCHDOG}
    assert seen == set(ErrorCode) - {ErrorCode.OK, ErrorCode.MODE}


def test_watchdog_and_start_beyond_the_program():
    m = machine([S] * 5 + [H])
    m.watchdog = 3
    r = m.run(0)
    assert (r.error, r.fault_pc, r.instructions) == (ErrorCode.WATCHDOG, 3, 3)
    m.watchdog = 6
    assert m.run(0).error == ErrorCode.OK
    r = m.run(6)
    assert (r.error, r.fault_pc) == (ErrorCode.PC_OVERRUN, 6)
    r = m.run(1 << 20)
    assert r.error == ErrorCode.PC_OVERRUN


def test_recovery_after_an_error_and_sync():
    m = machine([Instruction(0x7E), Instruction(Op.SYNC), Instruction(Op.SETVL, a=3),
                 Instruction(Op.HALT)])
    assert m.run(0).error == ErrorCode.ILLEGAL_OPCODE
    r = m.run(1)
    assert r.error == ErrorCode.OK and m.sync_count == 1 and m.vl == 3
    assert r.cycles == RUN_START_CYCLES + 3 * 2  # the run's start, then fetch and decode each


# ---------------------------------------------------------------------------- steps


def small_config(**kw):
    base = dict(feature_dim=20, fast_hidden=16, slow_hidden=32, enc_dim=24,
                arbitrator_hidden=8, pred_embed=8, pred_hidden=16, joint_dim=24)
    base.update(kw)
    return ModelConfig(vocabulary=VOCAB, **base)


MODELS = {
    "int8-dense-tanh": (small_config(), QuantConfig()),
    "int4-50-relu": (small_config(joint_activation="relu", slow_hidden=40),
                     QuantConfig(weight_encoding="int4", sparsity=0.5)),
    "codebook-90-cell10": (small_config(fast_hidden=24, feature_dim=30),
                           QuantConfig(weight_encoding="codebook4", sparsity=0.9,
                                       cell_frac_bits=10)),
    "int8-90-cell14": (small_config(pred_hidden=20, enc_dim=16),
                       QuantConfig(sparsity=0.9, cell_frac_bits=14)),
}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    config, quant = MODELS[request.param]
    rng = np.random.default_rng(5)
    fm = random_float_model(config, seed=3)
    return quantize_model(fm, [rng.standard_normal((40, config.feature_dim))], quant=quant)


def assert_states_equal(a, b):
    for x, y in zip(a, b):
        assert np.array_equal(x.h, y.h) and x.h.dtype == y.h.dtype
        assert np.array_equal(x.c, y.c) and x.c.dtype == y.c.dtype


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
def test_every_step_bit_exact_against_golden(model, fuse):
    gb, ib = GoldenBackend(model), IssBackend(model, fuse_lstm=fuse)
    assert isinstance(ib, Backend)
    rng = np.random.default_rng(11)
    F, V = model.config.feature_dim, model.config.vocab_size
    ge, ie = gb.initial_encoder_state(), ib.initial_encoder_state()
    gp, ip = gb.initial_predictor_state(), ib.initial_predictor_state()
    assert_states_equal(ge, ie)
    branches = []
    for t in range(60):
        feat = np.clip(rng.normal(0, 40, F), -128, 127).astype(np.int8)
        backlog = int(rng.integers(0, 128))
        assert ib.arbitrate(feat, backlog) == gb.arbitrate(feat, backlog)
        branch = int((t // 4 + rng.integers(0, 2)) % 2)  # runs of both, many switches
        branches.append(branch)
        g_enc, ge = gb.encoder_step(branch, feat, ge)
        i_enc, ie = ib.encoder_step(branch, feat, ie)
        assert np.array_equal(g_enc, i_enc) and i_enc.dtype == np.int8
        assert_states_equal(ge, ie)
        token = int(rng.integers(0, V)) if t % 3 else 0
        g_pred, gp = gb.predictor_step(token, gp)
        i_pred, ip = ib.predictor(token, ip)
        assert np.array_equal(g_pred, i_pred)
        assert_states_equal([gp], [ip])
        assert np.array_equal(gb.joint(g_enc, g_pred), ib.joint(i_enc, i_pred))
    assert sum(a != b for a, b in zip(branches, branches[1:])) >= 10
    for step in STEPS:
        assert ib.step_cost(step) == gb.step_cost(step)


def test_step_runs_report_cycles_and_macs(model):
    ib = IssBackend(model)
    feat = np.zeros(model.config.feature_dim, np.int8)
    ib.arbitrate(feat, 0)
    state = ib.initial_encoder_state()
    ib.encoder_step(FAST, feat, state)
    ib.encoder_step(SLOW, feat, state)
    ib.joint(*[np.zeros(n, np.int8) for n in (model.config.enc_dim, model.config.pred_hidden)])
    ib.predictor(0, ib.initial_predictor_state())
    lanes = ib.image.config.lanes
    for step, run in ib.runs:
        assert run.error == ErrorCode.OK
        assert run.cycles == RUN_START_CYCLES + sum(e.cycles for e in run.trace)
        assert run.macs == ib.step_cost(step).nonzero
        assert run.ideal_cycles == run.macs / lanes and 0 < run.mac_busy < 1
        for e in run.trace:
            if e.instruction.op in (Op.MATVEC, Op.LSTM):
                d = ib.image.descriptors[e.instruction.p]
                assert e.cycles == instruction_cycles(e.instruction.op, desc=d)
                assert e.macs == d.nnz


def test_backend_refuses_bad_inputs_and_reports_faults(model):
    ib = IssBackend(model)
    with pytest.raises(ValueError, match="backlog_q"):
        ib.arbitrate(np.zeros(model.config.feature_dim, np.int8), 128)
    with pytest.raises(ValueError, match="features must be int8"):
        ib.encoder_step(FAST, np.zeros(3, np.int8), ib.initial_encoder_state())
    with pytest.raises(ValueError, match="token"):
        ib.predictor(model.config.vocab_size, ib.initial_predictor_state())
    with pytest.raises(ValueError, match="branch"):
        ib.encoder_step(2, np.zeros(model.config.feature_dim, np.int8),
                        ib.initial_encoder_state())
    with pytest.raises(ValueError, match="unknown step"):
        ib.step_cost("nope")
    layer = ib.image.memory_map["layers"]["arb.out"]
    ib.machine.write_weights(layer["weight_base"], [0])
    with pytest.raises(IssError, match="program arbitrate halted with"):
        ib.arbitrate(np.zeros(model.config.feature_dim, np.int8), 0)


def test_pipeline_on_the_iss_matches_golden():
    model = random_model("small", seed=1)
    audio = synthetic_speech(1.5, seed=3)
    # A device on which the slow branch is 1.5x slower than real time, so the backlog
    # moves and the arbitrator switches branches (as in tests/golden/test_pipeline.py).
    c = CostModel().step_costs(GoldenBackend(model))
    shift = FrontendConfig.from_dict(model.config.frontend).frame_shift_ms
    device = CostModel(speed=1000.0 * (c["arbitrate"] + c["encoder_slow"] + c["joint"])
                       / (1.5 * shift))
    for beam in (0, 3):
        golden = Recognizer(model, beam=beam, cost=device).transcribe(audio)
        iss = Recognizer(IssBackend(model), beam=beam, cost=device).transcribe(audio)
        assert iss.to_dict() == golden.to_dict()
        assert len(set(golden.decisions)) == 2 and golden.text


def test_image_backend_and_memory_contents(model):
    image = compile_model(model)
    ib = IssBackend(image)
    assert not hasattr(ib, "model")
    table = ib.image.region("embed.table")
    got = ib.machine.read_scratch(table.addr, table.length)
    assert np.array_equal(got, model.embed.table.reshape(-1))
    crc = zlib.crc32(b"".join(w.to_bytes(10, "little") for w in image.weights[
        :image.descriptors[0].n_words]))
    assert crc == image.descriptors[0].crc_stream
