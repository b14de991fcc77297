"""Instruction-level simulator (ISS) of the NEP processor, and a golden-protocol backend.

:class:`Machine` holds the processor's architectural state (program, weight, parameter,
descriptor and constant memories, the scratchpad, the registers) and executes programs
instruction by instruction with exactly the golden model's numerics
(``golden.numerics``, ``golden.lstm``), checking every legality rule of ``docs/isa.md``
and predicting each instruction's cycles. The engine's stream decoder is mirrored rule by
rule (``hw/decompressor.py``), so a corrupt image halts with the engine's own code.

:class:`IssBackend` implements :class:`golden.backend.Backend` on a :class:`Machine`, so
the golden pipeline runs on the simulated processor.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from golden.backend import STEPS, MacCost, step_macs
from golden.lstm import (
    LSTMState,
    cell_to_q3_12,
    cell_update,
    requantize_to_int16,
    sigmoid_q15,
    tanh_q15,
)
from golden.model import BACKLOG_MAX, FAST, SLOW, EncoderState, ModelConfig, QuantModel
from golden.numerics import (
    INT8_MAX,
    INT8_MIN,
    INT16_MAX,
    INT16_MIN,
    requantize_to_int8,
    rounding_divide_by_pot,
    saturate,
    wrap_int32,
)
from golden.weights import (
    DELTA_BITS,
    PARAM_BYTES,
    SLOT_BITS,
    Encoding,
    split_bits,
    word_bytes,
)

from .compile import Image, compile_model
from .isa import (
    ELEMENTWISE,
    RUN_START_CYCLES,
    VSHIFT_AMOUNT_MASK,
    VSHIFT_RIGHT,
    VSHIFT_SAT8,
    Descriptor,
    ErrorCode,
    Instruction,
    Mode,
    Op,
    ProcessorConfig,
    constant_ok,
    decode,
    instruction_cycles,
    static_error,
    unpack_constant,
)

__all__ = ["Executed", "IssBackend", "IssError", "Machine", "Run", "engine_decode"]


class IssError(RuntimeError):
    """A program ended with an error code where the caller expected a clean halt."""


@dataclass(frozen=True)
class Executed:
    """One completed instruction: where, what, its cycles and its nonzero MACs."""

    pc: int
    instruction: Instruction
    cycles: int
    macs: int


@dataclass(frozen=True)
class Run:
    """Outcome of :meth:`Machine.run`.

    ``error`` is :attr:`ErrorCode.OK` after a HALT; otherwise ``fault_pc`` is the PC of
    the faulting instruction (or of the fetch that failed). ``cycles`` is the run's start
    (``RUN_START_CYCLES``) plus the completed instructions in ``trace``, ``macs`` adds up
    theirs; ``ideal_cycles = macs / lanes``.
    """

    error: ErrorCode
    fault_pc: int | None
    cycles: int
    instructions: int
    macs: int
    lanes: int
    trace: tuple

    @property
    def ideal_cycles(self) -> float:
        return self.macs / self.lanes

    @property
    def mac_busy(self) -> float:
        """Fraction of cycles a perfect zero-skipping array would need: ideal / cycles."""
        return self.ideal_cycles / self.cycles if self.cycles else 0.0


class _Fault(Exception):
    def __init__(self, code: ErrorCode):
        self.code = code


def engine_decode(words, lanes: int, encoding: int, codebook, rows: int, cols: int
                  ) -> tuple[np.ndarray, int, ErrorCode]:
    """Decode stream words as the engine's decompressor does, rule for rule.

    Returns the int8 weight matrix, the nonzero count and the first error code
    (per word: SPLIT > LENGTH > COLUMN > TRUNCATED; the decoder stops at the first).
    ``encoding`` must be 0..2 (the engine checks ENCODING before decoding).
    """
    L = lanes
    sb = split_bits(L)
    is8 = encoding == Encoding.INT8
    per_word = L // 2 if is8 else L
    w = np.zeros((rows, cols), np.int8)
    base, row_has, rows_done, nnz = 0, False, 0, 0
    slot_mask = (1 << SLOT_BITS) - 1
    for k, word in enumerate(words):
        end = word & 1
        split = (word >> 1) & ((1 << sb) - 1)
        slots = [(word >> (1 + sb + SLOT_BITS * i)) & slot_mask for i in range(L)]
        d = [s & ((1 << DELTA_BITS) - 1) for s in slots]
        c = [s >> DELTA_BITS for s in slots]
        delta, value, active = [], [], []
        for j in range(L):
            if is8:
                if j < L // 2:
                    v = (c[2 * j] << 4) | c[2 * j + 1]
                    delta.append(d[2 * j])
                    value.append(v - 256 if v >= 128 else v)
                    active.append(True)
                else:
                    delta.append(0)
                    value.append(0)
                    active.append(False)
            else:
                delta.append(d[j])
                if encoding == Encoding.INT4:
                    value.append(c[j] - 16 if c[j] >= 8 else c[j])
                else:
                    value.append(codebook[c[j]])
                active.append(True)
        prefix, acc = [], 0
        for j in range(L):
            acc += delta[j]
            prefix.append(acc)
        q = ([0] + prefix)[min(split, L)]
        first = [not end or split > j for j in range(L)]
        pos = [base + prefix[j] if first[j] else prefix[j] - q for j in range(L)]
        nz = [active[j] and value[j] != 0 for j in range(L)]
        col_bad = any(active[j] and pos[j] >= cols for j in range(L))
        seen_a, seen_b, slot_bad = row_has, False, False
        for j in range(L):
            seen = seen_a if first[j] else seen_b
            low_delta = is8 and j < L // 2 and d[2 * j + 1] != 0
            slot_bad |= (nz[j] and delta[j] == 0 and seen) or low_delta
            seen_a |= nz[j] and first[j]
            seen_b |= nz[j] and not first[j]
        last_row_ends = end and rows_done + 1 == rows
        split_err = split > per_word or (not end and split != per_word)
        length_err = rows_done >= rows or (last_row_ends and any(
            nz[j] and not first[j] for j in range(L)))
        trunc_err = k == len(words) - 1 and rows_done + end != rows
        for bad, code in ((split_err, ErrorCode.SPLIT), (length_err, ErrorCode.LENGTH),
                          (col_bad or slot_bad, ErrorCode.COLUMN),
                          (trunc_err, ErrorCode.TRUNCATED)):
            if bad:
                return w, nnz, code
        for j in range(L):
            if nz[j]:
                w[rows_done if first[j] else rows_done + 1, pos[j]] = value[j]
        base = prefix[-1] - q if end else base + prefix[-1]
        row_has = seen_b if end else seen_a
        rows_done += end
        nnz += sum(nz)
    return w, nnz, ErrorCode.OK


@dataclass(frozen=True)
class _Layer:
    """A decoded, checked layer, ready for the fast product."""

    w32: np.ndarray
    bias: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray


class Machine:
    """Architectural state of one NEP processor, and its instruction-level execution.

    Parameters
    ----------
    config : ProcessorConfig

    Notes
    -----
    Host-visible registers are attributes: ``prog_len``, ``desc_count``, ``const_count``,
    ``watchdog`` (set by :meth:`load`, writable), ``vl``, ``vn``, ``result``,
    ``sync_count``; a run's error code and faulting PC are in the returned :class:`Run`.
    Memories are written only through the ``write_*`` methods, which check ranges like
    the bus does and invalidate the decoded-layer cache.
    """

    def __init__(self, config: ProcessorConfig | None = None):
        self.config = ProcessorConfig() if config is None else config
        c = self.config
        self.program = [0] * c.program_depth
        self.weights = [0] * c.weight_depth
        self.params = [0] * c.param_depth
        self.descriptors = [bytes(64)] * c.desc_depth
        self.constants = [0] * c.const_depth
        self.scratch = np.zeros(c.scratch_depth, np.int16)
        self.prog_len = self.desc_count = self.const_count = 0
        self.watchdog = c.program_depth
        self.vl = self.vn = self.result = self.sync_count = 0
        self._layers: dict = {}

    # ------------------------------------------------------------------ host access

    def _range(self, what: str, addr: int, n: int, depth: int) -> None:
        if addr < 0 or n < 0 or addr + n > depth:
            raise IndexError(f"{what} write of {n} at {addr} exceeds depth {depth}")

    def write_program(self, addr: int, words) -> None:
        words = [int(w) for w in words]
        self._range("program", addr, len(words), self.config.program_depth)
        self.program[addr:addr + len(words)] = [w & ((1 << 64) - 1) for w in words]

    def write_weights(self, addr: int, words) -> None:
        words = [int(w) for w in words]
        self._range("weight", addr, len(words), self.config.weight_depth)
        mask = (1 << self.config.word_bits) - 1  # the memory stores word_bits bits
        self.weights[addr:addr + len(words)] = [w & mask for w in words]
        self._layers.clear()

    def write_params(self, addr: int, records) -> None:
        records = [int(r) for r in records]
        self._range("param", addr, len(records), self.config.param_depth)
        self.params[addr:addr + len(records)] = [r & ((1 << 72) - 1) for r in records]
        self._layers.clear()

    def write_descriptor(self, index: int, desc: Descriptor | bytes) -> None:
        raw = desc.pack() if isinstance(desc, Descriptor) else bytes(desc)
        self._range("descriptor", index, 1, self.config.desc_depth)
        self.descriptors[index] = raw

    def write_constant(self, index: int, word: int) -> None:
        self._range("constant", index, 1, self.config.const_depth)
        self.constants[index] = int(word) & ((1 << 64) - 1)

    def write_scratch(self, addr: int, values) -> None:
        v = np.asarray(values, np.int64).reshape(-1)
        self._range("scratch", addr, v.size, self.config.scratch_depth)
        self.scratch[addr:addr + v.size] = v.astype(np.int16)  # bus writes 16 bits: wrap

    def read_scratch(self, addr: int, n: int) -> np.ndarray:
        self._range("scratch", addr, n, self.config.scratch_depth)
        return self.scratch[addr:addr + n].copy()

    def load(self, image: Image) -> None:
        """Load every section of ``image`` and set PROG_LEN, DESC_COUNT, CONST_COUNT."""
        if image.config != self.config:
            raise ValueError(f"image is compiled for {image.config}, this machine is "
                             f"{self.config}")
        self.write_program(0, image.program)
        self.write_weights(0, image.weights)
        self.write_params(0, image.params)
        for i, d in enumerate(image.descriptors):
            self.write_descriptor(i, d)
        for i, k in enumerate(image.constants):
            self.write_constant(i, k)
        for addr, values in image.scratch_init:
            self.write_scratch(addr, values)
        self.prog_len = len(image.program)
        self.desc_count = len(image.descriptors)
        self.const_count = len(image.constants)

    # ------------------------------------------------------------------ execution

    def run(self, pc: int) -> Run:
        """Start at ``pc`` and execute until HALT or an error (a clean halt either way).

        VL and VN are reset to 0 at start; scratch, RESULT and memories keep their values.
        """
        self.vl = self.vn = 0
        trace, cycles, macs = [], RUN_START_CYCLES, 0
        while True:
            try:
                if not 0 <= pc < min(self.prog_len, self.config.program_depth):
                    raise _Fault(ErrorCode.PC_OVERRUN)
                if len(trace) >= self.watchdog:
                    raise _Fault(ErrorCode.WATCHDOG)
                ins = decode(self.program[pc])
                err = static_error(ins)
                if err:
                    raise _Fault(err)
                c, m = self._execute(ins)
            except _Fault as f:
                return Run(f.code, pc, cycles, len(trace), macs, self.config.lanes,
                           tuple(trace))
            trace.append(Executed(pc, ins, c, m))
            cycles += c
            macs += m
            if ins.op == Op.HALT:
                return Run(ErrorCode.OK, None, cycles, len(trace), macs, self.config.lanes,
                           tuple(trace))
            pc += 1

    def _scratch_range(self, addr: int, n: int) -> None:
        if addr + n > self.config.scratch_depth:
            raise _Fault(ErrorCode.SCRATCH_RANGE)

    def _no_partial_overlap(self, dst: int, src: int, n: int) -> None:
        """Element-wise destinations are in place or disjoint from each source."""
        if dst != src and dst < src + n and src < dst + n:
            raise _Fault(ErrorCode.SCRATCH_RANGE)

    def _constant(self, index: int, code: ErrorCode) -> tuple[int, int]:
        if index >= self.const_count:
            raise _Fault(code)
        m, s = unpack_constant(self.constants[index])
        if not constant_ok(m, s):
            raise _Fault(code)
        return m, s

    def _execute(self, ins: Instruction) -> tuple[int, int]:
        op = ins.op
        if op in (Op.MATVEC, Op.LSTM):
            return self._matvec(ins)
        if op == Op.SETVL:
            self.vl, self.vn = ins.a, ins.b
        elif op == Op.SYNC:
            self.sync_count += 1  # every unit is idle here: instructions are blocking
        elif op == Op.ARGMAX:
            self._argmax(ins)
        elif op == Op.LOADROW:
            self._loadrow(ins)
        elif op in ELEMENTWISE:
            self._elementwise(ins)
        return instruction_cycles(op, vl=self.vl), 0

    def _vector(self, addr: int) -> np.ndarray:
        return self.scratch[addr:addr + self.vl].astype(np.int64)

    def _elementwise(self, ins: Instruction) -> None:
        op, n = ins.op, self.vl
        if n == 0:
            raise _Fault(ErrorCode.BAD_OPERAND)
        if op in (Op.VREQ8, Op.VMULQ8):
            m, s = self._constant(ins.p, ErrorCode.BAD_OPERAND)
        binary = op in (Op.VADD, Op.VMUL, Op.VMULQ8)
        for addr in (ins.d, ins.a) + ((ins.b,) if binary else ()):
            self._scratch_range(addr, n)
        self._no_partial_overlap(ins.d, ins.a, n)
        if binary:
            self._no_partial_overlap(ins.d, ins.b, n)
        a = self._vector(ins.a)
        b = self._vector(ins.b) if binary else None
        if op == Op.VCOPY:
            y = a
        elif op == Op.VADD:
            y = saturate(a + b, INT16_MIN, INT16_MAX)
        elif op == Op.VMUL:
            y = saturate(rounding_divide_by_pot(a * b, ins.p), INT16_MIN, INT16_MAX)
        elif op == Op.VSHIFT:
            amount = ins.p & VSHIFT_AMOUNT_MASK
            y = rounding_divide_by_pot(a, amount) if ins.p & VSHIFT_RIGHT else a << amount
            y = (saturate(y, INT8_MIN, INT8_MAX) if ins.p & VSHIFT_SAT8
                 else saturate(y, INT16_MIN, INT16_MAX))
        elif op == Op.VREQ8:
            y = requantize_to_int8(a, m, s)
        elif op == Op.VMULQ8:
            y = requantize_to_int8(a * b, m, s)
        elif op == Op.SIGMOID:
            y = sigmoid_q15(a)
        else:
            y = tanh_q15(a)
        self.scratch[ins.d:ins.d + n] = np.asarray(y, np.int64).astype(np.int16)

    def _argmax(self, ins: Instruction) -> None:
        if self.vl == 0:
            raise _Fault(ErrorCode.BAD_OPERAND)
        self._scratch_range(ins.a, self.vl)
        self._scratch_range(ins.d, 1)
        self.result = int(np.argmax(self.scratch[ins.a:ins.a + self.vl]))  # first maximum
        self.scratch[ins.d] = self.result

    def _loadrow(self, ins: Instruction) -> None:
        vl, vn = self.vl, self.vn
        if vl == 0 or vn == 0:
            raise _Fault(ErrorCode.BAD_OPERAND)
        self._scratch_range(ins.a, vl * vn)
        self._scratch_range(ins.b, 1)
        self._scratch_range(ins.d, vl)
        if ins.d < ins.a + vl * vn and ins.a < ins.d + vl:
            raise _Fault(ErrorCode.SCRATCH_RANGE)
        index = int(self.scratch[ins.b]) & 0xFFFF  # the index entry is unsigned
        if index >= vn:
            raise _Fault(ErrorCode.BAD_OPERAND)
        src = ins.a + index * vl
        self.scratch[ins.d:ins.d + vl] = self.scratch[src:src + vl]

    def _descriptor(self, ins: Instruction) -> Descriptor:
        if ins.p >= self.desc_count:
            raise _Fault(ErrorCode.BAD_DESCRIPTOR)
        d = Descriptor.unpack(self.descriptors[ins.p])
        bad = (d.reserved or d.mode > max(Mode) or d.split > d.cols
               or (ins.op == Op.MATVEC) == (d.mode == Mode.LSTM)
               or d.stream_base + d.n_words > self.config.weight_depth
               or d.param_base + d.rows > self.config.param_depth)
        if not bad and ins.op == Op.LSTM:
            bad = (d.rows % 4 or d.split == 0 or d.split + d.rows // 4 != d.cols
                   or not 8 <= d.cell_frac_bits <= 15)
            if not bad:
                self._constant(d.const_index, ErrorCode.BAD_DESCRIPTOR)
        if bad:
            raise _Fault(ErrorCode.BAD_DESCRIPTOR)
        return d

    def _layer(self, d: Descriptor) -> _Layer:
        """The engine's run over the stream: CHECK, decode, NNZ and CRC checks."""
        c = self.config
        if (d.rows == 0 or d.cols == 0 or d.rows > c.max_rows or d.cols > c.max_cols
                or d.n_words == 0):
            raise _Fault(ErrorCode.SHAPE)
        if d.encoding > Encoding.CODEBOOK:
            raise _Fault(ErrorCode.ENCODING)
        key = d.pack()
        if key in self._layers:
            return self._layers[key]
        words = self.weights[d.stream_base:d.stream_base + d.n_words]
        w, nnz, err = engine_decode(words, c.lanes, d.encoding, d.codebook, d.rows, d.cols)
        if err:
            raise _Fault(err)
        if nnz != d.nnz:
            raise _Fault(ErrorCode.NNZ)
        wb = word_bytes(c.lanes)
        if zlib.crc32(b"".join(x.to_bytes(wb, "little") for x in words)) != d.crc_stream:
            raise _Fault(ErrorCode.CRC_STREAM)
        recs = self.params[d.param_base:d.param_base + d.rows]
        raw = b"".join(r.to_bytes(PARAM_BYTES, "little") for r in recs)
        if zlib.crc32(raw) != d.crc_params:
            raise _Fault(ErrorCode.CRC_PARAMS)
        rec = np.frombuffer(raw, np.dtype([("b", "<i4"), ("m", "<i4"), ("s", "i1")]))
        layer = _Layer(w.astype(np.int32), rec["b"].astype(np.int64),
                       rec["m"].astype(np.int64), rec["s"].astype(np.int64))
        self._layers[key] = layer
        return layer

    def _matvec(self, ins: Instruction) -> tuple[int, int]:
        d = self._descriptor(ins)
        nb = d.cols - d.split
        self._scratch_range(ins.a, d.split)
        if ins.op == Op.LSTM:
            H = d.rows // 4
            self._scratch_range(ins.d, 2 * H)
            h_addr = ins.d
        else:
            self._scratch_range(ins.b, nb)
            self._scratch_range(ins.d, d.rows)
            h_addr = ins.b
        layer = self._layer(d)
        # The activation buffer takes the low 8 bits of each entry (int8 operands).
        x = np.concatenate((self.scratch[ins.a:ins.a + d.split],
                            self.scratch[h_addr:h_addr + nb])).astype(np.int8)
        acc = np.einsum("ij,j->i", layer.w32, x.astype(np.int32)).astype(np.int64)
        acc = wrap_int32(acc + layer.bias)
        if d.mode == Mode.LSTM:
            self._lstm_cell(d, acc, layer, ins.d)
        elif d.mode == Mode.Q3_12:
            self.scratch[ins.d:ins.d + d.rows] = requantize_to_int16(
                acc, layer.multiplier, layer.shift).astype(np.int16)
        else:
            y = requantize_to_int8(acc, layer.multiplier, layer.shift)
            if d.mode == Mode.INT8_RELU:
                y = np.maximum(y, 0)
            self.scratch[ins.d:ins.d + d.rows] = y.astype(np.int16)
        return instruction_cycles(ins.op, desc=d), d.nnz

    def _lstm_cell(self, d: Descriptor, acc, layer: _Layer, state: int) -> None:
        """The LSTM cell unit: interleaved Q3.12 gates -> new h (int8) and c (int16)."""
        H, n = d.rows // 4, d.cell_frac_bits
        z = requantize_to_int16(acc, layer.multiplier, layer.shift).reshape(H, 4)
        i, f, o = sigmoid_q15(z[:, 0]), sigmoid_q15(z[:, 1]), sigmoid_q15(z[:, 3])
        g = tanh_q15(z[:, 2])
        c = cell_update(f, self.scratch[state + H:state + 2 * H].astype(np.int64), i, g, n)
        t = tanh_q15(cell_to_q3_12(c, n))
        m, s = unpack_constant(self.constants[d.const_index])
        h = requantize_to_int8(o * t, m, s)
        self.scratch[state:state + H] = h.astype(np.int16)
        self.scratch[state + H:state + 2 * H] = c.astype(np.int16)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


class IssBackend:
    """:class:`golden.backend.Backend` on the instruction-level simulator.

    Each call follows the host protocol of ``docs/isa.md``: write the step's inputs
    (and, since the protocol's states are values, the state it continues from) into
    scratch, start the step's program, check the clean halt, read the outputs. Every
    run is recorded in :attr:`runs` as ``(step, Run)``.

    Parameters
    ----------
    model : QuantModel or Image
        A model is compiled with ``config`` and ``fuse_lstm``; an image is loaded as is.
    config : ProcessorConfig, optional
    fuse_lstm : bool

    Notes
    -----
    **Extending: another device behind the same protocol.** The Backend methods
    (:meth:`arbitrate`, :meth:`encoder_step`, ...) check their arguments and decide which
    scratch regions a step writes and reads; they reach the device only through five
    device-access methods, which a subclass may override to put another device (e.g.
    the RTL, ``sim.rtl_backend.RtlBackend``) behind the protocol:

    * :meth:`write_region` -- a step's input into a scratch region;
    * :meth:`read_region` -- a step's output from a scratch region;
    * :meth:`run_step` -- run a step's program to its clean halt and leave its ``RESULT``
      in ``machine.result`` (what it returns and records in :attr:`runs` is the
      subclass's: the Backend methods do not use it);
    * :meth:`put_state` / :meth:`get_state` -- the LSTM state a step continues from
      and the one it leaves (a subclass may return a handle in place of an
      ``LSTMState``, e.g. for a state kept on the device, as long as
      :meth:`put_state` accepts it back).

    An override keeps each method's contract (its docstring) and may call the base
    method, which acts on :attr:`machine`. Everything else is internal.

    Attributes
    ----------
    image : Image
    machine : Machine
        The simulated processor (for a subclass: whatever it makes of it, e.g. the
        host's shadow of a device's scratch).
    runs : list of (str, Run)
        Every program run of :meth:`run_step`, in order.
    model_config : ModelConfig
    """

    def __init__(self, model: QuantModel | Image, config: ProcessorConfig | None = None,
                 *, fuse_lstm: bool = True):
        if isinstance(model, QuantModel):
            self.model = model
            image = compile_model(model, config, fuse_lstm=fuse_lstm)
        elif isinstance(model, Image):
            image = model
        else:
            raise TypeError(f"IssBackend needs a QuantModel or an Image, got "
                            f"{type(model).__name__}")
        self.image = image
        meta = image.memory_map["model"]
        self.model_config = ModelConfig.from_dict(meta["config"])
        self.logit_scale = float(meta["logit_scale"])
        self.vocabulary = self.model_config.vocabulary
        self.machine = Machine(image.config)
        self.machine.load(image)
        self.runs: list[tuple[str, Run]] = []
        layer_macs = {n: MacCost(lay["rows"] * lay["cols"], lay["nnz"])
                      for n, lay in image.memory_map["layers"].items()}
        self._costs = {step: step_macs(layer_macs, step) for step in STEPS}

    def _region(self, name: str):
        r = self.image.memory_map["regions"][name]
        return r["addr"], r["length"]

    def write_region(self, name: str, values) -> None:
        """Write scratch region ``name`` (device access; see Notes).

        Parameters
        ----------
        name : str
            A region of the image's memory map (e.g. ``"feat"``, ``"pred.h"``).
        values : array_like
            One value per entry (shape ``(length,)``), stored as 16-bit entries.

        Raises
        ------
        ValueError
            If ``values`` does not have the region's shape.
        """
        addr, n = self._region(name)
        v = np.asarray(values)
        if v.shape != (n,):
            raise ValueError(f"{name} needs shape ({n},), got {v.shape}")
        self.machine.write_scratch(addr, v)

    def read_region(self, name: str, dtype) -> np.ndarray:
        """Scratch region ``name`` as a read-only array of ``dtype`` (device access;
        see Notes): what the device holds there after the last :meth:`run_step`."""
        addr, n = self._region(name)
        return _readonly(self.machine.read_scratch(addr, n).astype(dtype))

    def _int8(self, what: str, x, n: int) -> np.ndarray:
        x = np.asarray(x)
        if x.shape != (n,) or x.dtype != np.int8:
            raise ValueError(f"{what} must be int8 of shape ({n},), got {x.dtype} {x.shape}")
        return x

    def run_step(self, step: str) -> Run:
        """Run program ``step`` (one of ``compiler.compile.PROGRAMS``) from its entry
        to a clean halt, record it in :attr:`runs` and set ``machine.result`` to the
        ``RESULT`` register (device access; see Notes).

        Raises
        ------
        IssError
            If the program halts with an error code.
        """
        run = self.machine.run(self.image.entry(step))
        self.runs.append((step, run))
        if run.error:
            raise IssError(f"program {step} halted with {run.error.name} at PC {run.fault_pc}")
        return run

    def put_state(self, prefix: str, state: LSTMState) -> None:
        """Make ``state`` the one in regions ``prefix.h`` and ``prefix.c`` (an LSTM's
        state before a step continues from it; device access, see Notes)."""
        self.write_region(f"{prefix}.h", state.h)
        self.write_region(f"{prefix}.c", state.c)

    def get_state(self, prefix: str) -> LSTMState:
        """The LSTM state in regions ``prefix.h`` (int8) and ``prefix.c`` (int16) after a
        step (device access; see Notes)."""
        return LSTMState(self.read_region(f"{prefix}.h", np.int8),
                         self.read_region(f"{prefix}.c", np.int16))

    def arbitrate(self, feat_int8, backlog_q: int) -> int:
        if isinstance(backlog_q, bool) or not isinstance(backlog_q, (int, np.integer)) or not (
                0 <= backlog_q <= BACKLOG_MAX):
            raise ValueError(f"backlog_q must be an int in 0..{BACKLOG_MAX}, got {backlog_q!r}")
        feat = self._int8("features", feat_int8, self.model_config.feature_dim)
        self.write_region("feat", feat)
        self.write_region("backlog", [backlog_q])
        self.run_step("arbitrate")
        return self.machine.result

    def encoder_step(self, branch: int, feat_int8, state: EncoderState
                     ) -> tuple[np.ndarray, EncoderState]:
        if branch not in (FAST, SLOW):
            raise ValueError(f"branch must be {FAST} or {SLOW}, got {branch!r}")
        feat = self._int8("features", feat_int8, self.model_config.feature_dim)
        self.write_region("feat", feat)
        if branch == FAST:
            self.put_state("fast", state.fast)
            self.run_step("encoder_fast")
            new = state._replace(fast=self.get_state("fast"))
        else:
            self.put_state("slow1", state.slow1)
            self.put_state("slow2", state.slow2)
            self.run_step("encoder_slow")
            new = state._replace(slow1=self.get_state("slow1"), slow2=self.get_state("slow2"))
        return self.read_region("enc", np.int8), new

    def predictor_step(self, token: int, state: LSTMState) -> tuple[np.ndarray, LSTMState]:
        token = int(token)
        if not 0 <= token < self.model_config.vocab_size:
            raise ValueError(f"token {token} out of range 0..{self.model_config.vocab_size - 1}")
        self.write_region("token", [token])
        self.put_state("pred", state)
        self.run_step("predictor")
        new = self.get_state("pred")
        return new.h, new

    predictor = predictor_step

    def joint(self, enc_int8, pred_int8) -> np.ndarray:
        c = self.model_config
        self.write_region("enc", self._int8("enc", enc_int8, c.enc_dim))
        self.write_region("pred.h", self._int8("pred", pred_int8, c.pred_hidden))
        self.run_step("joint")
        return self.read_region("logits", np.int8)

    def _zero(self, prefix: str) -> LSTMState:
        _, n = self._region(f"{prefix}.h")
        return LSTMState(_readonly(np.zeros(n, np.int8)), _readonly(np.zeros(n, np.int16)))

    def initial_encoder_state(self) -> EncoderState:
        return EncoderState(self._zero("fast"), self._zero("slow1"), self._zero("slow2"))

    def initial_predictor_state(self) -> LSTMState:
        return self._zero("pred")

    def step_cost(self, step: str) -> MacCost:
        if step not in self._costs:
            raise ValueError(f"unknown step {step!r}; expected one of {tuple(self._costs)}")
        return self._costs[step]
