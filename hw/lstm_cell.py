"""LSTM cell unit: activated gates of one unit in, new cell and hidden state out."""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden.lstm import GATE_FRAC_BITS, OUT_FRAC_BITS

from .activation_lut import SLOPE_REGISTER_LATENCY, ActivationLut
from .fixed_point import rounding_parts, saturate
from .requantizer import INT16_MAX, INT16_MIN, MODE_INT8, PIPELINED_LATENCY, Requantizer

__all__ = ["H_LATENCY", "LstmCell"]

#: Cycles from the requantizer's input to its output: ``Requantizer(pipelined=True)``.
_RQ_LATENCY = PIPELINED_LATENCY
#: Pipeline stages of the cell update, from the i*g product to the tanh lookup's input.
_UPDATE_STAGES = 4
#: Cycles of the cell's own tanh lookup: ``ActivationLut(slope_register=True)``.
_TANH_LATENCY = SLOPE_REGISTER_LATENCY
#: Cycles from ``o``, directly after its ``g``, to its ``h'`` write: the cell update (4),
#: the tanh lookup (5), the requantizer (8). A later ``o`` is written sooner after it.
H_LATENCY = _UPDATE_STAGES + _TANH_LATENCY + _RQ_LATENCY
#: Cycles ``o`` is delayed before it may join its ``t``: a unit's ``t`` comes
#: ``_UPDATE_STAGES + 1 + _TANH_LATENCY`` cycles after its ``g``, the next unit's ``o`` at
#: least 5 after that ``g``, so a shorter wait could bring the next ``o`` with this ``t``.
_O_WAIT = _TANH_LATENCY + 1


def _saturating_left_shift(x, left):
    """``saturate(x << left, INT16_MIN, INT16_MAX)`` for an int16 ``x`` without a carry
    chain: ``x`` overflows when its ``left + 1`` top bits are not all equal (the compares
    against the bounds were carry chains behind the shifter, issue 6)."""
    overflows = Cat(~(x[15 - k:].all() | ~x[15 - k:].any()) for k in range(2 ** len(left)))
    return Mux(overflows.bit_select(left, 1), Mux(x[15], INT16_MIN, INT16_MAX),
               (x << left)[:16].as_signed())


class LstmCell(wiring.Component):
    """The fused ``LSTM`` instruction's cell (``docs/isa.md`` 3.2, ``numerics.md``).

    Takes the activated gates in row order ``i, f, g, o`` of unit 0, 1, ... (Q0.15, at
    most one per cycle, any gaps), and for unit ``j`` computes
    ``c' = sat16(sat16(RDBPOT(f c, 15)) + sat16(RDBPOT(i g, 30 - n)))``,
    ``t = tanh(cell_to_q3_12(c'))`` and ``h' = sat8(MBQM(o t, M_h, s_h))``, bit-exact with
    ``golden.lstm``. Reset it before each instruction: the gate and unit counters start
    at 0. The first gate comes at least a cycle after the reset (unit 0's ``c`` is read
    from the reset on: it is in ``c_data`` by unit 0's ``f``).

    Pipeline: ``f c`` is multiplied when ``f`` arrives, ``i g`` when ``g`` arrives; the
    next four cycles round (quotient and round-up bit), saturate, add and convert ``c'``
    to Q3.12 (shifted, and a round-up bit the lookup's address adds) into its own tanh
    lookup (``hw.activation_lut.SLOPE_REGISTER_LATENCY``, 5 cycles); the
    product ``o t`` enters a ``Requantizer`` as soon as both ``t`` and ``o`` are there.
    ``c'[j]`` is written the cycle before ``h'[j]``: units are at least 4 cycles apart, so
    the two writes of one unit never meet another unit's on the single write port. From
    ``g`` directly followed by ``o``, ``h'`` is written ``H_LATENCY`` cycles after ``o``
    (the worst case).

    Interface
    ---------
    in_valid : In(1) ; y : In(signed(16))
        One activated gate (Q0.15).
    cell_frac_bits : In(4)
        ``n``, 8..15; held for the whole instruction from the cycle after the reset (it is
        registered, with the shifts it sets, before the first gate's ``c'`` needs it).
    multiplier : In(signed(32)) ; shift : In(signed(8))
        ``(M_h, s_h)``; held for the whole instruction.
    c_index : Out(16) ; c_data : In(signed(16))
        Cell state read: ``c_data`` is ``c[c_index]`` at most three cycles after the
        index moves (the processor registers the index, reads the block RAM and
        registers its output), in time for that unit's ``f``, which comes at least four
        cycles later. The index runs a unit ahead: the unit whose ``f`` comes next,
        from the cycle after the previous unit's ``f``.
    w_en, w_cell : Out(1) ; w_index : Out(16) ; w_data : Out(signed(16))
        One write per cycle: ``c'[w_index]`` if ``w_cell`` else ``h'[w_index]``
        (sign-extended int8). Every ``c'`` write is followed by its unit's ``h'`` write in
        the next cycle, and every ``h'`` write follows its ``c'``: ``w_cell`` (a
        flip-flop) announces the ``h'`` write a cycle ahead.
    """

    def __init__(self):
        super().__init__({
            "in_valid": In(1), "y": In(signed(16)), "cell_frac_bits": In(4),
            "multiplier": In(signed(32)), "shift": In(signed(8)),
            "c_index": Out(16), "c_data": In(signed(16)),
            "w_en": Out(1), "w_cell": Out(1), "w_index": Out(16), "w_data": Out(signed(16)),
        })

    def elaborate(self, platform):
        m = Module()
        # The lookup's input is ``t_shifted + t_up``, registers and a 1-bit add: its own
        # input register is left out, for a multiply and an add in separate stages at
        # the same latency. Its entry is registered twice (``slope_register``), a cycle
        # more: the slope's block RAM into the register by the multiplier missed the ECP5
        # clock (issue 6).
        m.submodules.tanh = lut = ActivationLut(input_register=False, slope_register=True)
        m.submodules.requantizer = rq = Requantizer(pipelined=True)
        n = self.cell_frac_bits

        # Gate arrival. c is read a unit ahead, and registered by the caller, so the block
        # RAM's output does not feed the f*c multiplier directly: the index moves to the
        # next unit as f takes this unit's c from c_data. That next unit's f comes at
        # least 4 gates (cycles) later; its c is in c_data at most 3 cycles after the
        # index moves (the caller's index register, the RAM, its output register). The
        # index is always past the units whose c' is being written, so the read never
        # meets a write.
        gate, c_unit = Signal(2), Signal(16)
        m.d.comb += self.c_index.eq(c_unit)
        with m.If(self.in_valid):
            m.d.sync += gate.eq(gate + 1)
            with m.If(gate == 1):
                m.d.sync += c_unit.eq(c_unit + 1)

        # Products as the gates arrive (|f c|, |i g| <= 2^30).
        i_q, o_q = Signal(signed(16)), Signal(signed(16))
        fc_p, ig_p = Signal(signed(32)), Signal(signed(32))
        cell_v = Signal()  # the cycle after g: c' is formed
        m.d.sync += cell_v.eq(self.in_valid & (gate == 2))
        # o waits _O_WAIT cycles, so its t is never joined with the next unit's o.
        o_valid = [Signal(name=f"o_valid{k}") for k in range(_O_WAIT)]
        o_line = [Signal(signed(16), name=f"o_line{k}") for k in range(_O_WAIT)]
        m.d.sync += [o_valid[0].eq(self.in_valid & (gate == 3)), o_line[0].eq(self.y)]
        m.d.sync += [o_valid[k].eq(o_valid[k - 1]) for k in range(1, _O_WAIT)]
        m.d.sync += [o_line[k].eq(o_line[k - 1]) for k in range(1, _O_WAIT)]
        o_now = o_valid[-1]
        with m.If(self.in_valid):
            with m.Switch(gate):
                with m.Case(0):
                    m.d.sync += i_q.eq(self.y)
                with m.Case(1):
                    m.d.sync += fc_p.eq(self.y * self.c_data)
                with m.Case(2):
                    m.d.sync += ig_p.eq(i_q * self.y)

        # The cell format, registered (it comes from the descriptor memory) together with
        # what it derives: the i*g shift and its rounding mask, the Q3.12 rescale and its
        # rounding mask.
        ig_shift_now, ig_shift, ig_mask = Signal(5), Signal(5), Signal(32)
        narrow, left, right = Signal(), Signal(3), Signal(2)
        right_now, right_mask = Signal(2), Signal(32)
        m.d.comb += [ig_shift_now.eq(2 * OUT_FRAC_BITS - n),
                     right_now.eq(Mux(n > GATE_FRAC_BITS, n - GATE_FRAC_BITS, 0))]
        m.d.sync += [
            ig_shift.eq(ig_shift_now), ig_mask.eq((1 << ig_shift_now) - 1),
            narrow.eq(n < GATE_FRAC_BITS),
            left.eq(Mux(n < GATE_FRAC_BITS, GATE_FRAC_BITS - n, 0)),
            right.eq(right_now), right_mask.eq((1 << right_now) - 1),
        ]

        # c' and the Q3.12 tanh input over four stages, one carry chain or shifter each.
        # 1: both products' rounding shifts, quotient and round-up bit apart.
        v1, fc_up1, ig_up1 = Signal(), Signal(), Signal()
        fc_q1, ig_q1 = Signal(signed(32)), Signal(signed(32))
        fc_q, fc_up = rounding_parts(fc_p, OUT_FRAC_BITS, (1 << OUT_FRAC_BITS) - 1)
        ig_q, ig_up = rounding_parts(ig_p, ig_shift, ig_mask)
        m.d.sync += [v1.eq(cell_v), fc_q1.eq(fc_q), fc_up1.eq(fc_up), ig_q1.eq(ig_q),
                     ig_up1.eq(ig_up)]
        # 2: rounded and saturated to int16.
        v2 = Signal()
        fc2, ig2 = Signal(signed(16)), Signal(signed(16))
        m.d.sync += [v2.eq(v1), fc2.eq(saturate(fc_q1 + fc_up1, INT16_MIN, INT16_MAX)),
                     ig2.eq(saturate(ig_q1 + ig_up1, INT16_MIN, INT16_MAX))]
        # 3: c'.
        v3 = Signal()
        c_new = Signal(signed(16))
        m.d.sync += [v3.eq(v2), c_new.eq(saturate(fc2 + ig2, INT16_MIN, INT16_MAX))]
        # 4: c' in Q3.12 (saturating left or rounding right shift) as a shifted value and
        # a round-up bit, both without a carry chain: the rounding add forms the lookup's
        # address in the table read's cycle (with the shifts and saturation in this one,
        # this stage missed the ECP5 clock, issue 6). The mask is a register: computed
        # here, its subtraction's carry chain was in front of the rounding add's. The
        # round-up bit is 0 unless the shift is right (right_mask is 0 otherwise).
        v4, t_up = Signal(), Signal()
        t_shifted = Signal(signed(16))
        quotient, round_up = rounding_parts(c_new, right, right_mask)
        m.d.sync += [v4.eq(v3), t_up.eq(round_up),
                     t_shifted.eq(Mux(narrow, _saturating_left_shift(c_new, left), quotient))]
        m.d.comb += [lut.in_valid.eq(v4), lut.z.eq(t_shifted + t_up), lut.func.eq(1)]
        # c' is held for its write from the cycle after the lookup's input (v5, G + 6 for
        # this g at G): the last cycle c_new keeps it (the next unit's f, 3 cycles after
        # this g at the soonest, reaches c_new 4 cycles later, at G + 7), and the next
        # unit's c' comes here only after this unit's t (the 5-cycle lookup's, G + 10)
        # and o have met: taken in the lookup's input cycle, it came in the cycle of
        # this unit's t.
        v5 = Signal()
        c_held = Signal(signed(16))
        m.d.sync += v5.eq(v4)
        with m.If(v5):
            m.d.sync += c_held.eq(c_new)

        # Join t and o (either may come first), then MBQM(o t) to int8. The product's
        # operands are registers, no valid bit selects them (o_valid[-1] as the select of
        # 16 multiplexers into the multiplier missed the ECP5 clock, issue 6): the lookup
        # holds its last t, and o_q takes each o as it reaches the join (a cycle early,
        # from the delay line). The join always fires with the latest t and o: an o or t
        # that waits (have_o, have_t) is the last that came.
        have_t, have_o = Signal(), Signal()
        t_now = lut.out_valid
        fire = (t_now | have_t) & (o_now | have_o)
        with m.If(o_valid[-2]):
            m.d.sync += o_q.eq(o_line[-2])
        with m.If(fire):
            m.d.sync += [have_t.eq(0), have_o.eq(0)]
        with m.Else():
            with m.If(t_now):
                m.d.sync += have_t.eq(1)
            with m.If(o_now):
                m.d.sync += have_o.eq(1)
        m.d.comb += [
            rq.in_valid.eq(fire), rq.acc.eq(o_q * lut.y), rq.bias.eq(0),
            rq.multiplier.eq(self.multiplier), rq.shift.eq(self.shift), rq.mode.eq(MODE_INT8),
        ]

        # c' follows its unit down the requantizer, to be written one cycle before h'.
        c_line = [Signal(signed(16), name=f"c_line{k}") for k in range(_RQ_LATENCY - 1)]
        c_valid = [Signal(name=f"c_valid{k}") for k in range(_RQ_LATENCY - 1)]
        m.d.sync += [c_line[0].eq(c_held), c_valid[0].eq(fire)]
        m.d.sync += [c_line[k].eq(c_line[k - 1]) for k in range(1, len(c_line))]
        m.d.sync += [c_valid[k].eq(c_valid[k - 1]) for k in range(1, len(c_valid))]

        written = Signal(16)
        with m.If(rq.out_valid):
            m.d.sync += written.eq(written + 1)
        m.d.comb += [
            self.w_en.eq(c_valid[-1] | rq.out_valid), self.w_cell.eq(c_valid[-1]),
            self.w_index.eq(written),
            self.w_data.eq(Mux(c_valid[-1], c_line[-1], rq.out)),
        ]
        return m
