"""NEP instruction set: encodings, descriptors, constants, error codes and the cycle model.

``docs/isa.md`` is the specification; this module is its executable form, shared by the
compiler (which encodes), the instruction-level simulator (which decodes, checks and
times) and, later, the RTL sequencer's tests.

Every instruction is one 64-bit word with the same five fields::

    63      56 55     48 47           32 31           16 15            0
    | opcode  |    p    |      d        |      a        |      b        |

``p`` is a small operand (descriptor index, shift, constant index), ``d``/``a``/``b``
are scratchpad entry addresses (or, for ``SETVL``, the two lengths). Opcode ``0x00`` is
illegal on purpose, so a zeroed program memory traps instead of running.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from golden.numerics import MAX_LEFT_SHIFT, MAX_RIGHT_SHIFT
from golden.weights import LANE_CHOICES, word_bits
from hw.errors import EngineError

__all__ = [
    "ALU_LATENCY",
    "DESCRIPTOR_BYTES",
    "ELEMENTWISE",
    "ENGINE_LATENCY",
    "FIELDS",
    "ISSUE_CYCLES",
    "LSTM_TAIL_CYCLES",
    "MATVEC_SETUP_CYCLES",
    "RESERVED_FIELDS",
    "RUN_START_CYCLES",
    "STREAM_READ_LATENCY",
    "VECTOR_LATENCY",
    "Descriptor",
    "ErrorCode",
    "Instruction",
    "IsaError",
    "Mode",
    "Op",
    "ProcessorConfig",
    "decode",
    "encode",
    "instruction_cycles",
    "pack_constant",
    "constant_ok",
    "static_error",
    "unpack_constant",
]


class IsaError(ValueError):
    """An instruction or descriptor cannot be encoded (a field does not fit)."""


class Op(enum.IntEnum):
    """Opcodes (bits 63..56)."""

    HALT = 0x01  #: stop; done, error 0
    SYNC = 0x02  #: barrier: wait for every unit to be idle, count a sync event
    SETVL = 0x03  #: VL = a, VN = b
    MATVEC = 0x10  #: scratch[d..] = requant(W [scratch[a..]; scratch[b..]] + bias)
    LSTM = 0x11  #: fused LSTM layer step on state scratch[d..d+2H)
    VCOPY = 0x20  #: d = a
    VADD = 0x21  #: d = sat16(a + b)
    VMUL = 0x22  #: d = sat16(RDBPOT(a * b, p))
    VSHIFT = 0x23  #: d = sat16/sat8(a << n) or sat16/sat8(RDBPOT(a, n))
    VREQ8 = 0x24  #: d = sat8(MBQM(a, M[p], s[p]))
    VMULQ8 = 0x25  #: d = sat8(MBQM(a * b, M[p], s[p]))
    SIGMOID = 0x28  #: d = sigmoid_q15(a)  (Q3.12 -> Q0.15)
    TANH = 0x29  #: d = tanh_q15(a)
    ARGMAX = 0x30  #: scratch[d] = RESULT = first index of max(a[0..VL))
    LOADROW = 0x31  #: d[0..VL) = a[scratch[b] * VL ..], scratch[b] < VN


#: Instructions that run over ``VL`` elements.
ELEMENTWISE = frozenset({Op.VCOPY, Op.VADD, Op.VMUL, Op.VSHIFT, Op.VREQ8, Op.VMULQ8,
                         Op.SIGMOID, Op.TANH})

#: Field positions: (low bit, width).
FIELDS = {"opcode": (56, 8), "p": (48, 8), "d": (32, 16), "a": (16, 16), "b": (0, 16)}

#: Fields each opcode does not use; they must be zero.
RESERVED_FIELDS = {
    Op.HALT: ("p", "d", "a", "b"),
    Op.SYNC: ("p", "d", "a", "b"),
    Op.SETVL: ("p", "d"),
    Op.MATVEC: (),
    Op.LSTM: ("b",),
    Op.VCOPY: ("p", "b"),
    Op.VADD: ("p",),
    Op.VMUL: (),
    Op.VSHIFT: ("b",),
    Op.VREQ8: ("b",),
    Op.VMULQ8: (),
    Op.SIGMOID: ("p", "b"),
    Op.TANH: ("p", "b"),
    Op.ARGMAX: ("p", "b"),
    Op.LOADROW: ("p",),
}

#: Bits of ``p`` that must be zero where ``p`` is used as a bit field.
P_RESERVED_MASK = {Op.VMUL: 0xE0, Op.VSHIFT: 0x80}
#: VSHIFT ``p`` bits.
VSHIFT_AMOUNT_MASK = 0x1F
VSHIFT_RIGHT = 0x20
VSHIFT_SAT8 = 0x40
#: Largest left shift of VSHIFT (a 16-bit value shifted further saturates anyway).
VSHIFT_MAX_LEFT = 15


class ErrorCode(enum.IntEnum):
    """The ERROR register after a halt. 1..10 are the engine's codes, passed through."""

    OK = 0
    SHAPE = EngineError.SHAPE
    ENCODING = EngineError.ENCODING
    SPLIT = EngineError.SPLIT
    COLUMN = EngineError.COLUMN
    LENGTH = EngineError.LENGTH
    TRUNCATED = EngineError.TRUNCATED
    NNZ = EngineError.NNZ
    CRC_STREAM = EngineError.CRC_STREAM
    CRC_PARAMS = EngineError.CRC_PARAMS
    MODE = EngineError.MODE  #: never raised here: the sequencer maps modes (BAD_DESCRIPTOR)
    ILLEGAL_OPCODE = 0x10  #: opcode not in :class:`Op`
    RESERVED_FIELD = 0x11  #: a reserved field or bit is nonzero
    BAD_DESCRIPTOR = 0x12  #: index >= DESC_COUNT, wrong mode, inconsistent fields
    SCRATCH_RANGE = 0x13  #: an operand range leaves the scratchpad or overlaps illegally
    BAD_OPERAND = 0x14  #: VL = 0, constant index, shift amount, LOADROW index >= VN
    PC_OVERRUN = 0x15  #: PC >= PROG_LEN (ran past the end without HALT)
    WATCHDOG = 0x16  #: executed-instruction count reached WATCHDOG


class Mode(enum.IntEnum):
    """Descriptor output modes: what the requantizer writes per row."""

    INT8 = 0  #: sat8(MBQM(acc))
    INT8_RELU = 1  #: max(0, sat8(MBQM(acc)))
    Q3_12 = 2  #: sat16(MBQM(acc)), int16 Q3.12
    LSTM = 3  #: gate rows interleaved (i, f, g, o per unit) into the LSTM cell unit


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction. ``opcode`` is an int so that illegal words decode too."""

    opcode: int
    p: int = 0
    d: int = 0
    a: int = 0
    b: int = 0

    def __post_init__(self):
        for name, (_, width) in FIELDS.items():
            v = getattr(self, "opcode" if name == "opcode" else name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < (1 << width):
                raise IsaError(f"field {name} = {v!r} does not fit in {width} bits")

    @property
    def op(self) -> Op | None:
        """The :class:`Op`, or None for an illegal opcode."""
        try:
            return Op(self.opcode)
        except ValueError:
            return None

    def __str__(self) -> str:
        op = self.op
        name = op.name if op is not None else f"ILLEGAL_{self.opcode:02X}"
        return f"{name} p={self.p} d={self.d} a={self.a} b={self.b}"


def encode(ins: Instruction) -> int:
    """The 64-bit word of ``ins``."""
    word = 0
    for name, (lo, _) in FIELDS.items():
        word |= getattr(ins, name) << lo
    return word


def decode(word: int) -> Instruction:
    """Split a 64-bit word into its fields (never fails; legality is checked separately)."""
    if not 0 <= word < (1 << 64):
        raise IsaError(f"instruction word {word!r} is not a 64-bit unsigned value")
    return Instruction(**{n: (word >> lo) & ((1 << w) - 1) for n, (lo, w) in FIELDS.items()})


def static_error(ins: Instruction) -> ErrorCode:
    """Checks that depend on the word alone: opcode, reserved fields and bits, shifts.

    The simulator applies them first, in this order, before the state-dependent checks
    (descriptor, VL, constants, scratch ranges) described in ``docs/isa.md``.
    """
    op = ins.op
    if op is None:
        return ErrorCode.ILLEGAL_OPCODE
    if any(getattr(ins, f) for f in RESERVED_FIELDS[op]):
        return ErrorCode.RESERVED_FIELD
    if ins.p & P_RESERVED_MASK.get(op, 0):
        return ErrorCode.RESERVED_FIELD
    if (op == Op.VSHIFT and not ins.p & VSHIFT_RIGHT
            and ins.p & VSHIFT_AMOUNT_MASK > VSHIFT_MAX_LEFT):
        return ErrorCode.BAD_OPERAND
    return ErrorCode.OK


# ---------------------------------------------------------------------------- descriptors

_DESC = struct.Struct("<IIIIIIHHHBBBBH16bIII")
#: Bytes of one descriptor record (16 little-endian 32-bit words).
DESCRIPTOR_BYTES = _DESC.size
assert DESCRIPTOR_BYTES == 64


@dataclass(frozen=True)
class Descriptor:
    """One matrix layer as the sequencer and engine see it (``docs/isa.md``, Descriptors).

    The first ten fields are the weight image header the engine takes; ``split``,
    ``mode``, ``const_index`` and ``cell_frac_bits`` tell the sequencer how to gather the
    input and what to do with each row.
    """

    stream_base: int
    n_words: int
    param_base: int
    nnz: int
    crc_stream: int
    crc_params: int
    rows: int
    cols: int
    split: int
    encoding: int
    mode: int
    const_index: int = 0
    cell_frac_bits: int = 0
    codebook: tuple[int, ...] = (0,) * 16
    reserved: int = 0

    def pack(self) -> bytes:
        try:
            return _DESC.pack(self.stream_base, self.n_words, self.param_base, self.nnz,
                              self.crc_stream, self.crc_params, self.rows, self.cols,
                              self.split, self.encoding, self.mode, self.const_index,
                              self.cell_frac_bits, self.reserved, *self.codebook, 0, 0, 0)
        except struct.error as e:
            raise IsaError(f"descriptor field out of range: {e}") from None

    @classmethod
    def unpack(cls, data: bytes) -> Descriptor:
        if len(data) != DESCRIPTOR_BYTES:
            raise IsaError(f"descriptor is {len(data)} bytes, expected {DESCRIPTOR_BYTES}")
        f = _DESC.unpack(data)
        # Every reserved bit (word 8's upper half, words 13..15) folds into one flag.
        reserved = int(f[13] != 0 or any(f[30:]))
        return cls(*f[:13], codebook=tuple(f[14:30]), reserved=reserved)


def pack_constant(multiplier: int, shift: int) -> int:
    """A constant-table entry as a 64-bit word: multiplier (bits 0..31), shift (32..63)."""
    return (multiplier & 0xFFFFFFFF) | ((shift & 0xFFFFFFFF) << 32)


def unpack_constant(word: int) -> tuple[int, int]:
    """``(multiplier, shift)`` of a constant-table word, both as signed 32-bit values."""
    def s32(v):
        return v - (1 << 32) if v & 0x80000000 else v
    return s32(word & 0xFFFFFFFF), s32((word >> 32) & 0xFFFFFFFF)


def constant_ok(multiplier: int, shift: int) -> bool:
    """A usable constant: multiplier 0 or normalized Q0.31, shift in -31..7."""
    return ((multiplier == 0 or (1 << 30) <= multiplier < (1 << 31))
            and -MAX_RIGHT_SHIFT <= shift <= MAX_LEFT_SHIFT)


# ---------------------------------------------------------------------------- cycles

#: Once per run, before the first fetch: the first instruction word read, then through
#: the program block RAM's output register into the instruction register, for its
#: descriptor index and checks (``hw.processor``: every later word is read ahead, in
#: the last cycle of the instruction two before it).
RUN_START_CYCLES = 2
#: Fetch and decode/check of every instruction.
ISSUE_CYCLES = 2
#: Descriptor read and range checks before the activation load of MATVEC/LSTM. One of
#: them (``hw.processor``'s DESC_COPY) copies the descriptor word from its block RAMs'
#: output register to the fabric register the checks and the engine read (issue 6).
MATVEC_SETUP_CYCLES = 3
#: Cell pipeline drain after the engine's ``done`` (LSTM only; ``hw.processor``'s
#: ``CELL_TAIL_CYCLES``: o's 4-cycle lookup, the cell's 5-cycle tanh lookup and its
#: 8-stage requantizer).
LSTM_TAIL_CYCLES = 18
#: Cycles from a request to the weight or parameter memory to its data, for every part
#: (``hw.banked_ram.BankedRam``): the block RAM, its bank's output register and the bank
#: multiplexer's register (an unbanked memory's data is registered twice to match).
STREAM_READ_LATENCY = 3
#: Engine pipeline, CHECK to FINISH beyond n_words: ``sim.perf_model.PIPELINE_LATENCY``
#: (a 1-cycle memory) plus the 2 stages of the processor's 8-stage requantizer and the
#: stream memories' 2 cycles beyond one.
ENGINE_LATENCY = 22 + 2 + (STREAM_READ_LATENCY - 1)
#: Latency of the vector ALU (``hw.vector_alu.LATENCY``, the engine's 8-stage requantizer
#: behind an operand register) and the activation lookup unit (``hw.activation_lut.LATENCY``,
#: its input registered before the table), behind one scratch read cycle.
ALU_LATENCY, LUT_LATENCY, SCRATCH_READ = 9, 4, 1
#: The copies' read data registered before the scratch write (``hw.processor``).
COPY_REGISTER = 1
#: Pipeline latency of the vector instructions, paid once after their VL cycles.
VECTOR_LATENCY = {
    Op.VCOPY: SCRATCH_READ + COPY_REGISTER,
    Op.VADD: SCRATCH_READ + ALU_LATENCY, Op.VMUL: SCRATCH_READ + ALU_LATENCY,
    Op.VSHIFT: SCRATCH_READ + ALU_LATENCY, Op.VREQ8: SCRATCH_READ + ALU_LATENCY,
    Op.VMULQ8: SCRATCH_READ + ALU_LATENCY,
    Op.SIGMOID: SCRATCH_READ + LUT_LATENCY, Op.TANH: SCRATCH_READ + LUT_LATENCY,
    Op.ARGMAX: SCRATCH_READ + 1,  # compare, then the index register
    Op.LOADROW: SCRATCH_READ + COPY_REGISTER + 2,  # index read and row-address multiply
}


def instruction_cycles(op: Op, *, vl: int = 0, desc: Descriptor | None = None) -> int:
    """Cycles of one instruction that completes, without memory wait states.

    ``MATVEC``: issue + setup + activation load (one entry per cycle, ``cols``) + the
    engine's ``n_words + 26``; ``LSTM`` adds the cell-pipeline drain. Vector
    instructions: issue + ``VL`` + their pipeline latency. ``HALT``, ``SYNC``,
    ``SETVL``: issue only.
    """
    if op in (Op.MATVEC, Op.LSTM):
        c = ISSUE_CYCLES + MATVEC_SETUP_CYCLES + desc.cols + desc.n_words + ENGINE_LATENCY
        return c + (LSTM_TAIL_CYCLES if op == Op.LSTM else 0)
    if op in (Op.HALT, Op.SYNC, Op.SETVL):
        return ISSUE_CYCLES
    return ISSUE_CYCLES + vl + VECTOR_LATENCY[op]


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ProcessorConfig:
    """Sizes of the processor's memories and engine buffers (``docs/isa.md``).

    Parameters
    ----------
    lanes : int
        MAC lanes and slots per weight stream word (4, 8 or 16).
    program_depth : int
        64-bit instruction words of program memory (the PC is 16 bits).
    weight_depth : int
        Stream words of weight memory (``golden.weights.word_bits(lanes)`` bits each).
    param_depth : int
        72-bit row records of parameter memory.
    scratch_depth : int
        16-bit scratchpad entries (addresses are 16 bits: at most 65536).
    desc_depth : int
        Layer descriptors (indexed by the 8-bit ``p`` field: at most 256).
    const_depth : int
        Requantization constants (indexed by ``p``: at most 256).
    max_rows : int
        Largest layer height the engine's row counter accepts.
    max_cols : int
        Depth of the engine's activation buffer: the largest layer width.
    """

    lanes: int = 8
    program_depth: int = 1024
    weight_depth: int = 1 << 19
    param_depth: int = 8192
    scratch_depth: int = 16384
    desc_depth: int = 64
    const_depth: int = 64
    max_rows: int = 4096
    max_cols: int = 1024

    def __post_init__(self):
        if self.lanes not in LANE_CHOICES:
            raise ValueError(f"ProcessorConfig.lanes must be one of {LANE_CHOICES}, "
                             f"got {self.lanes!r}")
        limits = {"program_depth": 1 << 16, "weight_depth": 1 << 32, "param_depth": 1 << 32,
                  "scratch_depth": 1 << 16, "desc_depth": 256, "const_depth": 256,
                  "max_rows": 0xFFFF, "max_cols": 0xFFFF}
        for name, hi in limits.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
                raise ValueError(f"ProcessorConfig.{name} must be an int in 1..{hi}, "
                                 f"got {v!r}")

    @property
    def word_bits(self) -> int:
        """Width of a weight memory word."""
        return word_bits(self.lanes)
