"""AXI4-Lite slave: the host bus, turned into a simple register/memory access port."""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Axi4LiteSignature", "Axi4LiteSlave", "Response"]


class Response(enum.Enum, shape=2):
    """``BRESP``/``RRESP`` codes (AXI4-Lite slaves use ``OKAY`` and ``SLVERR``)."""

    OKAY = 0b00
    EXOKAY = 0b01
    SLVERR = 0b10
    DECERR = 0b11


class Axi4LiteSignature(wiring.Signature):
    """AXI4-Lite bus with 32-bit data, from the manager's side (a slave takes it ``In``).

    Member names are the AXI signal names in lower case, so the ports of a component
    holding the bus as ``axi`` come out as ``axi__awaddr`` etc. (cocotbext-axi finds them
    with ``bus_separator="__"``).

    Parameters
    ----------
    addr_width : int
        Byte address width, 3..32.

    Members
    -------
    awaddr, awprot, awvalid : Out ; awready : In
        Write address channel (AW).
    wdata, wstrb, wvalid : Out ; wready : In
        Write data channel (W), ``wstrb`` one bit per byte lane.
    bresp, bvalid : In ; bready : Out
        Write response channel (B).
    araddr, arprot, arvalid : Out ; arready : In
        Read address channel (AR).
    rdata, rresp, rvalid : In ; rready : Out
        Read data channel (R).
    """

    def __init__(self, addr_width: int):
        if not isinstance(addr_width, int) or not 3 <= addr_width <= 32:
            raise ValueError(f"addr_width must be an int in 3..32, got {addr_width!r}")
        self._addr_width = addr_width
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })

    @property
    def addr_width(self) -> int:
        return self._addr_width

    def __eq__(self, other):
        return isinstance(other, Axi4LiteSignature) and other.addr_width == self.addr_width

    def __hash__(self):
        return hash((type(self), self._addr_width))

    def __repr__(self):
        return f"Axi4LiteSignature({self._addr_width})"


class _State(enum.Enum, shape=2):
    IDLE = 0
    ADDR = 1  # the picked access's address shown, no request yet
    ACCESS = 2  # ``we`` or ``re`` held until ``ready``
    READ_WAIT = 3  # read accepted, waiting for ``rvalid``


class Axi4LiteSlave(wiring.Component):
    """AXI4-Lite slave with one outstanding write and one outstanding read.

    AW, W and AR each have a one-entry holding register, so AW and W are accepted
    independently and in either order (``awready``/``wready``/``arready`` are high while
    the register is empty, never combinationally from a ``valid``). A write goes inside
    once both its address and data are held and the B register is free; a read once its
    address is held and the R register is free. Responses wait in their registers for as
    long as ``bready``/``rready`` stay low; a new AW/W/AR is taken meanwhile, so one
    further transaction per direction can queue behind a held response. Reads and writes
    share the inside port and take turns when both are ready.

    The inside port carries one access at a time::

        write: we, addr, wdata, wstrb held ... until the cycle with ready  (err sampled)
        read:  re, addr held ... until the cycle with ready; then rdata with rvalid,
               in that same cycle or any later one (err sampled with rvalid)

    ``addr`` stays valid until the access completes (write: ``ready``; read: ``rvalid``),
    so a combinational address decoder can drive ``err`` directly, and it is valid from
    the cycle before ``we``/``re`` rise, so a decoder may also register its result.
    ``addr``, ``we`` and ``re`` are registers: the slave picks an access in ``IDLE``,
    loads its address, shows it for a cycle (``ADDR``) and then raises ``we``/``re``, so
    neither its state nor its round-robin pick reaches the decoder behind it.
    ``err`` turns the response into ``SLVERR`` (the inside must not act on a write it
    flags); an erroring read returns 0. A register file answers reads with ``ready =
    rvalid = 1`` in one cycle; a synchronous RAM takes its read enable from ``re & ready``
    and raises ``rvalid`` a cycle later. ``rvalid`` outside a read is ignored.
    ``awprot``/``arprot`` are accepted and ignored; the low two address bits are dropped
    (``wstrb`` selects bytes). ``sync`` reset clears the bus state.

    Parameters
    ----------
    addr_width : int
        Byte address width of the bus, 3..32.

    Interface
    ---------
    axi : In(Axi4LiteSignature(addr_width))
        The bus.
    addr : Out(addr_width - 2)
        Word address (byte address ``// 4``) of the current access.
    wdata : Out(32) ; wstrb : Out(4) ; we : Out(1)
        Write request: data, byte enables, valid.
    re : Out(1)
        Read request valid.
    ready : In(1)
        The inside takes the request (a write completes; a read is accepted).
    rdata : In(32) ; rvalid : In(1)
        Read data of the accepted read.
    err : In(1)
        The access is invalid (unmapped, read-only, refused): respond ``SLVERR``.
    """

    def __init__(self, *, addr_width: int = 16):
        sig = Axi4LiteSignature(addr_width)
        self.addr_width = addr_width
        super().__init__({
            "axi": In(sig),
            "addr": Out(addr_width - 2), "wdata": Out(32), "wstrb": Out(4),
            "we": Out(1), "re": Out(1), "ready": In(1),
            "rdata": In(32), "rvalid": In(1), "err": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        axi = self.axi

        aw_full, aw_addr = Signal(), Signal(self.addr_width)
        w_full, w_data, w_strb = Signal(), Signal(32), Signal(4)
        ar_full, ar_addr = Signal(), Signal(self.addr_width)
        b_valid, b_resp = Signal(), Signal(Response)
        r_valid, r_data, r_resp = Signal(), Signal(32), Signal(Response)
        state = Signal(_State)
        prefer_read = Signal()  # round robin: the direction that did not go last
        pick_write = Signal()  # the access in ADDR is a write
        addr, we, re = Signal(self.addr_width - 2), Signal(), Signal()

        write_go = aw_full & w_full & ~b_valid
        read_go = ar_full & ~r_valid
        write_next = write_go & ~(read_go & prefer_read)  # IDLE's pick
        m.d.comb += [
            axi.awready.eq(~aw_full), axi.wready.eq(~w_full), axi.arready.eq(~ar_full),
            axi.bvalid.eq(b_valid), axi.bresp.eq(b_resp),
            axi.rvalid.eq(r_valid), axi.rdata.eq(r_data), axi.rresp.eq(r_resp),
            self.addr.eq(addr), self.wdata.eq(w_data), self.wstrb.eq(w_strb),
            self.we.eq(we), self.re.eq(re),
        ]

        with m.If(axi.awvalid & ~aw_full):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(axi.awaddr)]
        with m.If(axi.wvalid & ~w_full):
            m.d.sync += [w_full.eq(1), w_data.eq(axi.wdata), w_strb.eq(axi.wstrb)]
        with m.If(axi.arvalid & ~ar_full):
            m.d.sync += [ar_full.eq(1), ar_addr.eq(axi.araddr)]
        with m.If(axi.bready):
            m.d.sync += b_valid.eq(0)
        with m.If(axi.rready):
            m.d.sync += r_valid.eq(0)

        resp = Mux(self.err, Response.SLVERR, Response.OKAY)
        read_done = [r_valid.eq(1), r_data.eq(Mux(self.err, 0, self.rdata)), r_resp.eq(resp),
                     ar_full.eq(0), prefer_read.eq(0), state.eq(_State.IDLE)]
        with m.Switch(state):
            with m.Case(_State.IDLE):
                with m.If(write_next):
                    m.d.sync += [addr.eq(aw_addr[2:]), pick_write.eq(1),
                                 state.eq(_State.ADDR)]
                with m.Elif(read_go):
                    m.d.sync += [addr.eq(ar_addr[2:]), pick_write.eq(0),
                                 state.eq(_State.ADDR)]
            with m.Case(_State.ADDR):
                m.d.sync += [we.eq(pick_write), re.eq(~pick_write), state.eq(_State.ACCESS)]
            with m.Case(_State.ACCESS):
                with m.If(we & self.ready):
                    # Set after the bready clear above, so the new response wins.
                    m.d.sync += [b_valid.eq(1), b_resp.eq(resp), aw_full.eq(0),
                                 w_full.eq(0), prefer_read.eq(1), we.eq(0),
                                 state.eq(_State.IDLE)]
                with m.If(re & self.ready):
                    m.d.sync += re.eq(0)
                    with m.If(self.rvalid):
                        m.d.sync += read_done
                    with m.Else():
                        m.d.sync += state.eq(_State.READ_WAIT)
            with m.Case(_State.READ_WAIT):
                with m.If(self.rvalid):
                    m.d.sync += read_done
        return m
