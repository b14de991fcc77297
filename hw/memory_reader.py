"""Sequential reader: words base..base+count-1 of a memory with wait states, as a stream."""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from .crc32 import Crc32


class MemoryReader(wiring.Component):
    """Fetch ``count`` words from address ``base`` up, keeping one request in flight per free
    FIFO slot.

    The memory side is a request/response pair: a request is taken when ``req_valid`` and
    ``req_ready`` are both high (``req_ready`` low is a wait state); responses come back in
    order, any number of cycles later, flagged by ``resp_valid``. Credits make sure every
    response has a FIFO slot, so the memory is never back-pressured. The FIFO reads its
    storage synchronously (``SyncFIFOBuffered``: block RAM where the part has it, and the
    words leave from a register), so a response reaches ``out`` two cycles after it
    arrives; with a one-cycle memory, ``depth`` 4 still keeps up with one word per cycle.

    The address the memory sees is a register of its own, loaded with ``base`` and counted
    up with each request taken: no adder sits between a register and the memory's address
    pins (on the ECP5 the weight memory spans 80 block RAMs, and the routing to them fills
    the cycle).

    Interface
    ---------
    The engine restarts it with a synchronous reset (``ResetInserter``) before each run,
    pulsing ``load`` in the same cycle.

    base : In(addr_bits)
        Address of word 0, taken when ``load`` is high.
    load : In(1)
        Set the address register to ``base`` and ``done`` to ``count == 0``, and clear
        the CRC. These registers are reset-less, so the restart's reset does not undo the
        load (and is not what clears the CRC); pulse it
        with that reset, before ``enable`` rises (a load without it would restart the
        addresses and the count's flag, not the count).
    enable : In(1)
        Issue requests while high.
    count : In(count_bits)
        Words to read, held from the ``load`` on.
    req_addr, req_valid : Out ; req_ready : In
        ``req_addr`` is ``base + k`` (modulo ``2**addr_bits``) for the next word ``k`` to
        request, whether or not a request is issued that cycle.
    resp_data, resp_valid : In
    out_data : Out(width) ; out_last : Out(1) ; out_valid : Out(1) ; out_ready : In(1)
        The words in order; ``out_last`` marks word ``count - 1``.
    done : Out(1)
        All ``count`` words have left through ``out`` (``popped == count``), from a
        register: set by the load for ``count == 0``, else as word ``count - 1`` leaves,
        so a consumer's logic starts from a flip-flop, not from the count's compare.
    crc : Out(32)
        CRC-32 of the words received up to two cycles ago, each padded to ``pad_to`` bits
        (``Crc32``). A response is taken into it as it arrives: the processor's memories
        answer from a register (``hw.banked_ram.BankedRam``), so the CRC logic starts
        from flip-flops without a copy of the word here (on the UP5K such a copy cost a
        logic cell per bit). It is complete by the time ``done`` rises: the last word
        leaves the FIFO two cycles after it arrives at the earliest, and ``done`` is set
        as it leaves, a cycle later still.

    Parameters
    ----------
    width : int
        Bits per word.
    addr_bits : int
        Bits of a memory address (``base``, ``req_addr``).
    count_bits : int or None
        Bits of ``count``; None for ``addr_bits + 1`` (a base-0 read of the whole memory).
    depth : int
        Requests in flight at most (the FIFO's credits).
    pad_to : int or None
        Width each word is padded to for the CRC (``Crc32``).
    """

    def __init__(self, *, width: int, addr_bits: int, count_bits: int | None = None,
                 depth: int = 4, pad_to: int | None = None):
        count_bits = addr_bits + 1 if count_bits is None else count_bits
        for name, value in (("addr_bits", addr_bits), ("count_bits", count_bits)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MemoryReader: {name} must be an int >= 1, got {value!r}")
        self._width, self._addr_bits, self._depth = width, addr_bits, depth
        self._count_bits, self._pad_to = count_bits, pad_to
        super().__init__({
            "base": In(addr_bits), "load": In(1),
            "enable": In(1), "count": In(count_bits),
            "req_addr": Out(addr_bits), "req_valid": Out(1), "req_ready": In(1),
            "resp_data": In(width), "resp_valid": In(1),
            "out_data": Out(width), "out_last": Out(1), "out_valid": Out(1), "out_ready": In(1),
            "done": Out(1), "crc": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._count_bits
        # One slot more than the credits: SyncFIFOBuffered refuses a write while its storage
        # is full even when the word there is moving to the output register that cycle.
        m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=self._width, depth=self._depth + 1)
        m.submodules.crc = crc = Crc32(width=self._width, pad_to=self._pad_to)

        issued = Signal(n)
        # Reset-less: ``load`` comes with the restart's reset, which must not clear it.
        addr = Signal(self._addr_bits, reset_less=True)
        popped = Signal(n)
        # Reset-less like ``addr``: the load in the restart's reset cycle sets it.
        done = Signal(reset_less=True)
        inflight = Signal(range(self._depth + 1))
        # ``issued < count`` in a register, set by the load and by each request taken:
        # the request's valid and the address register's enable start at a flip-flop, not
        # at a compare of the count (the descriptor's, from across the die: issue 6,
        # -0.59 ns into the parameter reader's address on seed 1 of run m37). Reset-less
        # like ``addr``.
        more = Signal(reset_less=True)

        can_issue = self.enable & more & (inflight + q.level < self._depth)
        take = can_issue & self.req_ready
        m.d.comb += [
            self.req_addr.eq(addr),
            self.req_valid.eq(can_issue),
            q.w_data.eq(self.resp_data),
            q.w_en.eq(self.resp_valid),
            crc.clear.eq(self.load),  # the CRC's registers ignore the restart's reset
            crc.en.eq(self.resp_valid),
            crc.data.eq(self.resp_data),
            self.crc.eq(crc.value),
            self.out_data.eq(q.r_data),
            self.out_last.eq(popped + 1 == self.count),
            self.out_valid.eq(q.r_rdy),
            q.r_en.eq(self.out_ready),
            self.done.eq(done),
        ]
        m.d.sync += [
            inflight.eq(inflight + take - self.resp_valid),
        ]
        with m.If(self.load):
            m.d.sync += more.eq(self.count != 0)
        with m.Elif(take):
            m.d.sync += [issued.eq(issued + 1), more.eq(issued + 1 < self.count)]
        with m.If(self.load):
            m.d.sync += addr.eq(self.base)
        with m.Elif(take):
            m.d.sync += addr.eq(addr + 1)
        pop = q.r_rdy & self.out_ready
        with m.If(pop):
            m.d.sync += popped.eq(popped + 1)
        with m.If(self.load):
            m.d.sync += done.eq(self.count == 0)
        with m.Elif(pop & self.out_last):
            m.d.sync += done.eq(1)
        return m
