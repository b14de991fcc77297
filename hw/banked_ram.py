"""A RAM whose reads answer a fixed three cycles later, optionally built as banks."""

from __future__ import annotations

from amaranth import Array, ClockSignal, Instance, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from compiler.isa import STREAM_READ_LATENCY

from .registered_read import RegisteredRead

__all__ = ["BankedRam", "delayed"]


def delayed(m, value, cycles: int, *, name: str = "delayed"):
    """``value`` registered ``cycles`` times in ``m``'s sync domain (``value`` itself for 0),
    in plain registers with a reset: not copies of a signal ``value``'s reset-less kind or
    attributes (``BankedRam``'s reset-less read register, a ``no_outreg`` mark)."""
    if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 0:
        raise ValueError(f"cycles must be an int >= 0, got {cycles!r}")
    for k in range(cycles):
        reg = Signal(Value.cast(value).shape(), name=f"{name}{k}")
        m.d.sync += reg.eq(value)
        value = reg
    return value


class BankedRam(wiring.Component):
    """A core read port, and a host port that writes and reads at one address, whose
    reads answer ``STREAM_READ_LATENCY`` (3) cycles after the request, however the
    memory is built.

    With ``bank_depth`` and ``depth`` above it, the memory is ``ceil(depth / bank_depth)``
    banks of ``bank_depth`` words, each with two reads: the core's at ``raddr`` and the
    host's at ``waddr``, the write's address, so that Yosys maps the host's read and
    write to one port of each block RAM (the DP16KD's port A) and the core's read to the
    other (port B): no multiplexer in front of the core's read address (issue 6: the
    ``busy`` select into the DP16KD address pins was a failing path). Every bank is
    read every cycle and each read's data registered next to its block RAMs, with
    nothing between them (a read and a write of one word in one cycle may return
    either word, so Yosys adds no logic to decide it); the bank that answers is chosen
    by the read's address delayed to match, and the choice registered: on the ECP5 a
    block RAM's clock-to-out and the routing of a bank multiplexer across the die do
    not fit in one cycle. Otherwise the memory is one block with one read port, at
    ``waddr`` in cycles with ``hren`` and at ``raddr`` otherwise (the UP5K's
    single-port SPRAM takes one address), whose read data is registered twice, so the
    latency is the same.

    Parameters
    ----------
    width : int
        Bits per word.
    depth : int
        Words.
    bank_depth : int or None
        Words per bank (a power of two, typically one block RAM column deep), or None for
        one block.
    sim_ram : bool
        Make the storage an instance of the behavioural ``nep_sim_ram``
        (``sim.harness.SIM_RAM_VERILOG``: Verilator builds, where a large Amaranth
        memory's initializer is slow to generate) rather than an Amaranth memory; the
        same two registers follow it. Not with banks.

    Attributes
    ----------
    addr_bits : int
        Width of ``waddr`` and ``raddr``: ``max(1, ceil(log2(depth)))``.
    bank_depth : int or None
        The parameter, or None when ``depth`` fits in one bank (one block then).
    banks : list of amaranth.lib.memory.Memory
        The Amaranth memories, bank 0 first (one without banks, none with ``sim_ram``).
        A testbench reaches word ``a`` as ``cell(a)``.

    Interface
    ---------
    waddr : In(addr_bits) ; wdata : In(width) ; we : In(1)
        Write ``wdata`` to word ``waddr`` at the clock edge.
    hren : In(1)
        Read word ``waddr`` (the host's read). Not in a cycle with ``we``: the read is
        then undefined. Without banks the one read port takes ``waddr`` in a cycle with
        ``hren``, so a core read in that cycle gets the host's word.
    hrdata : Out(width)
        The word the host read, ``STREAM_READ_LATENCY`` cycles after ``hren`` (a
        register's output; undefined after cycles without ``hren``).
    raddr : In(addr_bits) ; ren : In(1)
        Read word ``raddr`` (the core's read).
    rdata : Out(width)
        The word read, ``STREAM_READ_LATENCY`` cycles after ``ren`` (a register's output;
        undefined after cycles without ``ren``). A read and a write of one word in the
        same cycle return the old word or the new one, depending on the part.
    """

    def __init__(self, *, width: int, depth: int, bank_depth: int | None = None,
                 sim_ram: bool = False):
        for name, value in (("width", width), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BankedRam {name} must be a positive int, got {value!r}")
        if bank_depth is not None and (isinstance(bank_depth, bool)
                                       or not isinstance(bank_depth, int) or bank_depth < 2
                                       or bank_depth & (bank_depth - 1)):
            raise ValueError(f"BankedRam bank_depth must be a power of two >= 2 or None, "
                             f"got {bank_depth!r}")
        if not isinstance(sim_ram, bool):
            raise ValueError(f"BankedRam sim_ram must be a bool, got {sim_ram!r}")
        if sim_ram and bank_depth is not None and depth > bank_depth:
            raise ValueError("BankedRam cannot build banks of nep_sim_ram instances "
                             "(sim_ram with depth above bank_depth)")
        self.width, self.depth, self.sim_ram = width, depth, sim_ram
        self.bank_depth = bank_depth if bank_depth is not None and depth > bank_depth else None
        if sim_ram:
            self.banks = []
        elif self.bank_depth is None:
            self.banks = [Memory(shape=width, depth=depth, init=[])]
        else:
            # ``no_rw_check``: see ``elaborate`` (the same as Yosys's ``-no-rw-check``)
            self.banks = [Memory(shape=width, depth=self.bank_depth, init=[],
                                 attrs={"no_rw_check": 1})
                          for _ in range(-(-depth // self.bank_depth))]
        self.addr_bits = max(1, (depth - 1).bit_length())
        super().__init__({
            "waddr": In(self.addr_bits), "wdata": In(width), "we": In(1),
            "hren": In(1), "hrdata": Out(width),
            "raddr": In(self.addr_bits), "ren": In(1), "rdata": Out(width),
        })

    def cell(self, addr: int):
        """The storage of word ``addr`` (an element of a bank's ``data``), for a
        testbench's ``ctx.set``/``ctx.get``."""
        if not self.banks:
            raise ValueError("a sim_ram BankedRam has no Amaranth storage to reach")
        if isinstance(addr, bool) or not isinstance(addr, int) or not 0 <= addr < self.depth:
            raise ValueError(f"addr must be an int in 0..{self.depth - 1}, got {addr!r}")
        if self.bank_depth is None:
            return self.banks[0].data[addr]
        return self.banks[addr // self.bank_depth].data[addr % self.bank_depth]

    def elaborate(self, platform):
        m = Module()
        if self.bank_depth is None:
            data = delayed(m, self._block(m), STREAM_READ_LATENCY - 1, name="rdata_q")
            m.d.comb += [self.rdata.eq(data), self.hrdata.eq(data)]
            return m
        low = (self.bank_depth - 1).bit_length()
        core, host = [], []
        for i, mem in enumerate(self.banks):
            m.submodules[f"b{i}"] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.waddr[:low]), wp.data.eq(self.wdata),
                         wp.en.eq(self.we & (self.waddr[low:] == i))]
            # Two reads, each every cycle (``ren``/``hren`` are not needed to choose the
            # answer): a read enable would make Yosys hold the DP16KD's unregistered
            # output in a LUT and a flip-flop of its own in front of the bank register.
            # The host's, at the write's address, shares the write's DP16KD port; the
            # core's has the other port to itself.
            core.append(self._bank_read(m, mem, f"b{i}", self.raddr[:low]))
            host.append(self._bank_read(m, mem, f"b{i}_h", self.waddr[:low]))
        for data, addr, out, name in ((self.rdata, self.raddr, core, "rdata"),
                                      (self.hrdata, self.waddr, host, "hrdata")):
            # The bank that answers: the address's upper bits, as old as the bank registers.
            which = delayed(m, addr[low:], 2, name=f"{name}_bank")
            # The RAM and the bank register take two cycles, the choice's registers the rest.
            m.d.comb += data.eq(delayed(m, Array(out)[which], STREAM_READ_LATENCY - 2,
                                        name=f"{name}_q"))
        return m

    def _bank_read(self, m, mem, name, addr):
        """A read of bank ``mem`` at ``addr``, every cycle; returns its bank register.

        The read is a ``RegisteredRead`` (its register taken into the block RAM) for the
        memory's ``no_rw_check``, which this class allows: a synchronous port's "the old
        word" is emulated on the DP16KD with a registered ``raddr == waddr`` and a
        multiplexer between the block RAM and the bank register (issue 6: the compare
        from the engine's read address was a failing path, the multiplexer another). The
        host's read never meets the write (never in one cycle), the core's may meet it
        and then returns either word. The bank register is reset-less, so it is a plain
        capture of the block RAM's output (``hw.bram_outreg`` takes it into the port's
        output register)."""
        m.submodules[f"{name}_read"] = rd = RegisteredRead(memory=mem)
        m.d.comb += rd.addr.eq(addr)
        bank_q = Signal(self.width, name=f"{name}_q", reset_less=True)
        m.d.sync += bank_q.eq(rd.data)
        return bank_q

    def _block(self, m):
        """One memory (or ``nep_sim_ram``) with the ports; returns its read data, the
        core's or the host's read: one read port, so that the UP5K's single-port SPRAM
        (one address for read and write) can take the memory."""
        raddr = Signal(self.addr_bits, name="ram_raddr")
        ren = Signal(name="ram_ren")
        m.d.comb += [raddr.eq(Mux(self.hren, self.waddr, self.raddr)),
                     ren.eq(self.ren | self.hren)]
        if self.sim_ram:
            data = Signal(self.width, name="ram_rdata")
            m.submodules.ram = Instance(
                "nep_sim_ram", p_WIDTH=self.width, p_DEPTH=self.depth, p_AW=self.addr_bits,
                i_clk=ClockSignal(), i_raddr=raddr, i_ren=ren, o_rdata=data,
                i_waddr=self.waddr, i_we=self.we, i_wdata=self.wdata)
            return data
        m.submodules.ram = mem = self.banks[0]
        wp = mem.write_port()
        # Without ``no_rw_check`` on the memory, Yosys keeps "the old word" for this read
        # as for a synchronous port with an enable: the same logic.
        m.submodules.ram_read = rd = RegisteredRead(memory=mem, enable=True)
        m.d.comb += [wp.addr.eq(self.waddr), wp.data.eq(self.wdata), wp.en.eq(self.we),
                     rd.addr.eq(raddr), rd.en.eq(ren)]
        return rd.data
