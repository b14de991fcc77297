"""The instruction set: encode/decode round trips, static legality, descriptor and
constant layouts, the processor configuration and the cycle table."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.isa import (
    DESCRIPTOR_BYTES,
    ELEMENTWISE,
    RESERVED_FIELDS,
    Descriptor,
    ErrorCode,
    Instruction,
    IsaError,
    Op,
    ProcessorConfig,
    constant_ok,
    decode,
    encode,
    instruction_cycles,
    pack_constant,
    static_error,
    unpack_constant,
)
from hw.errors import EngineError

fields = st.fixed_dictionaries({
    "opcode": st.integers(0, 255), "p": st.integers(0, 255), "d": st.integers(0, 0xFFFF),
    "a": st.integers(0, 0xFFFF), "b": st.integers(0, 0xFFFF)})


@settings(max_examples=300, deadline=None)
@given(fields)
def test_encode_decode_round_trip(f):
    ins = Instruction(**f)
    word = encode(ins)
    assert 0 <= word < 1 << 64
    assert decode(word) == ins
    assert word >> 56 == f["opcode"] and word & 0xFFFF == f["b"]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, (1 << 64) - 1))
def test_decode_encode_round_trip(word):
    assert encode(decode(word)) == word


def test_field_layout_is_fixed():
    word = encode(Instruction(Op.MATVEC, p=0xAB, d=0x1234, a=0x5678, b=0x9ABC))
    assert word == 0x10AB_1234_5678_9ABC


@pytest.mark.parametrize("bad", [dict(opcode=256), dict(opcode=1, p=-1), dict(opcode=1, d=1 << 16),
                                 dict(opcode=1, a=1.5), dict(opcode=1, b=True)])
def test_fields_that_do_not_fit_are_refused(bad):
    with pytest.raises(IsaError, match="does not fit"):
        Instruction(**bad)


def test_decode_refuses_non_64_bit_words():
    with pytest.raises(IsaError):
        decode(1 << 64)


def test_every_undefined_opcode_is_illegal():
    legal = {int(o) for o in Op}
    assert 0 not in legal  # a zeroed program memory traps
    for opcode in range(256):
        err = static_error(Instruction(opcode))
        if opcode in legal:
            assert err != ErrorCode.ILLEGAL_OPCODE
        else:
            assert err == ErrorCode.ILLEGAL_OPCODE


@pytest.mark.parametrize("op", list(Op))
def test_reserved_fields_must_be_zero(op):
    for field in RESERVED_FIELDS[op]:
        assert static_error(Instruction(op, **{field: 1})) == ErrorCode.RESERVED_FIELD
    used = {"p", "d", "a", "b"} - set(RESERVED_FIELDS[op])
    for field in used:
        value = 3 if field == "p" else 1  # a legal p for every opcode that uses it
        assert static_error(Instruction(op, **{field: value})) == ErrorCode.OK


def test_reserved_bits_of_p_and_vshift_amount():
    for bit in (0x20, 0x40, 0x80):
        assert static_error(Instruction(Op.VMUL, p=bit | 3)) == ErrorCode.RESERVED_FIELD
    assert static_error(Instruction(Op.VMUL, p=31)) == ErrorCode.OK
    assert static_error(Instruction(Op.VSHIFT, p=0x80)) == ErrorCode.RESERVED_FIELD
    assert static_error(Instruction(Op.VSHIFT, p=15)) == ErrorCode.OK
    assert static_error(Instruction(Op.VSHIFT, p=16)) == ErrorCode.BAD_OPERAND
    assert static_error(Instruction(Op.VSHIFT, p=0x20 | 31)) == ErrorCode.OK
    assert static_error(Instruction(Op.VSHIFT, p=0x40 | 0x20 | 8)) == ErrorCode.OK


def test_error_codes_pass_the_engine_codes_through():
    for e in EngineError:
        assert ErrorCode(int(e)).name == e.name
    sequencer = [c for c in ErrorCode if c >= 0x10]
    assert len({int(c) for c in sequencer}) == len(sequencer) == 7
    assert ErrorCode.MODE == EngineError.MODE == 10


descriptors = st.builds(
    Descriptor,
    stream_base=st.integers(0, 2**32 - 1), n_words=st.integers(0, 2**32 - 1),
    param_base=st.integers(0, 2**32 - 1), nnz=st.integers(0, 2**32 - 1),
    crc_stream=st.integers(0, 2**32 - 1), crc_params=st.integers(0, 2**32 - 1),
    rows=st.integers(0, 0xFFFF), cols=st.integers(0, 0xFFFF), split=st.integers(0, 0xFFFF),
    encoding=st.integers(0, 255), mode=st.integers(0, 255), const_index=st.integers(0, 255),
    cell_frac_bits=st.integers(0, 255),
    codebook=st.lists(st.integers(-128, 127), min_size=16, max_size=16).map(tuple))


@settings(max_examples=200, deadline=None)
@given(descriptors)
def test_descriptor_round_trip(d):
    raw = d.pack()
    assert len(raw) == DESCRIPTOR_BYTES == 64
    assert Descriptor.unpack(raw) == d


def test_descriptor_layout_and_reserved_bits():
    d = Descriptor(1, 2, 3, 4, 5, 6, rows=7, cols=8, split=9, encoding=1, mode=3,
                   const_index=10, cell_frac_bits=12, codebook=tuple(range(16)))
    raw = d.pack()
    words = struct.unpack("<16I", raw)
    assert words[:6] == (1, 2, 3, 4, 5, 6)
    assert words[6] == 7 | 8 << 16 and words[7] == 9 | 1 << 16 | 3 << 24
    assert words[8] == 10 | 12 << 8
    assert words[13:] == (0, 0, 0)
    for offset in (34, 52, 63):
        bad = bytearray(raw)
        bad[offset] = 1
        assert Descriptor.unpack(bytes(bad)).reserved
    with pytest.raises(IsaError, match="64"):
        Descriptor.unpack(raw[:-1])
    with pytest.raises(IsaError, match="out of range"):
        Descriptor(1 << 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0).pack()


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**31), 2**31 - 1), st.integers(-(2**31), 2**31 - 1))
def test_constant_round_trip(m, s):
    assert unpack_constant(pack_constant(m, s)) == (m, s)


def test_constant_validity():
    assert constant_ok(0, 0) and constant_ok(1 << 30, -31) and constant_ok(2**31 - 1, 7)
    assert not constant_ok(1 << 29, 0) and not constant_ok(1 << 30, 8)
    assert not constant_ok(1 << 30, -32)


def test_processor_config_is_validated():
    c = ProcessorConfig()
    assert c.word_bits == 77
    with pytest.raises(ValueError, match="lanes must be one of"):
        ProcessorConfig(lanes=6)
    with pytest.raises(ValueError, match="scratch_depth must be an int in 1..65536"):
        ProcessorConfig(scratch_depth=1 << 16 + 1)
    with pytest.raises(ValueError, match="desc_depth"):
        ProcessorConfig(desc_depth=0)
    with pytest.raises(ValueError, match="program_depth"):
        ProcessorConfig(program_depth=True)
    with pytest.raises(AttributeError):
        c.lanes = 4  # frozen


def test_cycle_table():
    d = Descriptor(0, 100, 0, 0, 0, 0, rows=4, cols=30, split=30, encoding=1, mode=0)
    assert instruction_cycles(Op.MATVEC, desc=d) == 2 + 3 + 30 + 100 + 26
    assert instruction_cycles(Op.LSTM, desc=d) == 2 + 3 + 30 + 100 + 26 + 18
    assert instruction_cycles(Op.TANH, vl=64) == 2 + 64 + 1 + 4
    assert instruction_cycles(Op.VADD, vl=64) == 2 + 64 + 1 + 9
    assert instruction_cycles(Op.VCOPY, vl=64) == 2 + 64 + 1 + 1  # read, data register
    assert instruction_cycles(Op.LOADROW, vl=64) == 2 + 64 + 1 + 1 + 2
    for op in (Op.HALT, Op.SYNC, Op.SETVL):
        assert instruction_cycles(op, vl=50) == 2
    for op in ELEMENTWISE | {Op.ARGMAX, Op.LOADROW}:
        base = instruction_cycles(op, vl=0)
        assert 2 < base <= 12
        assert instruction_cycles(op, vl=64) == base + 64  # one element per cycle
