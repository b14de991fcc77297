"""NEP top: the AXI4-Lite host bus, the register block, the processor core and its weight
and parameter memories (``docs/register-map.md`` section 5)."""

from __future__ import annotations

from amaranth import ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from compiler.isa import ProcessorConfig
from golden.weights import PARAM_BYTES

from .axi4_lite import Axi4LiteSignature, Axi4LiteSlave
from .host_interface import CORE_CONTROL, CORE_STATUS, HOST_PORT, HostInterface
from .processor import Processor
from .register_map import ADDR_WIDTH

__all__ = ["NepTop"]

#: The slave's inside port: requests toward the register block, answers back.
_INSIDE_REQUEST = ("addr", "wdata", "wstrb", "we", "re")
_INSIDE_ANSWER = ("ready", "rdata", "rvalid", "err")


class NepTop(wiring.Component):
    """``Axi4LiteSlave`` + ``HostInterface`` + ``Processor`` + weight and param memories.

    The weight and parameter memories have one synchronous read port and one write port
    each. During a run the core's requests own the read port (always ready, data one
    cycle later); while idle the host's window reads and writes do (the register block
    refuses windows while busy, so the two never meet).

    Parameters
    ----------
    config : ProcessorConfig
        Sizes of the core and of the two memories (``weight_depth``, ``param_depth`` at
        most 2**20, the bus windows' reach).
    sim_rams : bool
        Make the two memories instances of the behavioural ``nep_sim_ram``
        (``sim.harness.SIM_RAM_VERILOG``, for Verilator builds: no Verilog initializer
        for large memories) rather than Amaranth memories.

    Attributes
    ----------
    cpu : Processor
    weight_mem, param_mem : amaranth.lib.memory.Memory or None
        The memories (None with ``sim_rams``).

    Interface
    ---------
    axi : In(Axi4LiteSignature(ADDR_WIDTH))
        The host bus (ports ``axi__awaddr`` .. ``axi__rready`` in Verilog).
    irq : Out(1)
        Interrupt, active high (``IRQ_STATUS & IRQ_ENABLE``).
    """

    def __init__(self, config: ProcessorConfig, *, sim_rams: bool = False):
        self.config = config
        self.cpu = Processor(config=config)
        self.host = HostInterface(config=config)
        self.sim_rams = sim_rams
        self.weight_mem = None if sim_rams else Memory(
            shape=config.word_bits, depth=config.weight_depth, init=[])
        self.param_mem = None if sim_rams else Memory(
            shape=8 * PARAM_BYTES, depth=config.param_depth, init=[])
        super().__init__({"axi": In(Axi4LiteSignature(ADDR_WIDTH)), "irq": Out(1)})

    def _ram(self, m, name, memory, width, depth):
        """Ports ``(raddr, ren, rdata, waddr, we, wdata)`` of one memory."""
        aw = max(1, (depth - 1).bit_length())
        raddr, waddr = Signal(aw, name=f"{name}_raddr"), Signal(aw, name=f"{name}_waddr")
        ren, we = Signal(name=f"{name}_ren"), Signal(name=f"{name}_we")
        rdata, wdata = Signal(width, name=f"{name}_rdata"), Signal(width, name=f"{name}_wdata")
        if memory is None:
            m.submodules[name] = Instance(
                "nep_sim_ram", p_WIDTH=width, p_DEPTH=depth, p_AW=aw,
                i_clk=ClockSignal(), i_raddr=raddr, i_ren=ren, o_rdata=rdata,
                i_waddr=waddr, i_we=we, i_wdata=wdata)
        else:
            m.submodules[name] = memory
            rd, wr = memory.read_port(), memory.write_port()
            m.d.comb += [rd.addr.eq(raddr), rd.en.eq(ren), rdata.eq(rd.data),
                         wr.addr.eq(waddr), wr.en.eq(we), wr.data.eq(wdata)]
        return raddr, ren, rdata, waddr, we, wdata

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        m.submodules.slave = slave = Axi4LiteSlave(addr_width=ADDR_WIDTH)
        m.submodules.host = host = self.host
        m.submodules.cpu = cpu = self.cpu
        wiring.connect(m, wiring.flipped(self.axi), slave.axi)
        m.d.comb += [getattr(host, n).eq(getattr(slave, n)) for n in _INSIDE_REQUEST]
        m.d.comb += [getattr(slave, n).eq(getattr(host, n)) for n in _INSIDE_ANSWER]
        m.d.comb += [getattr(cpu, n).eq(getattr(host, n)) for n in CORE_CONTROL + HOST_PORT]
        m.d.comb += [getattr(host, n).eq(getattr(cpu, n)) for n in CORE_STATUS]
        m.d.comb += [host.host_rdata.eq(cpu.host_rdata), self.irq.eq(host.irq)]

        for core, name, memory, width, depth in (
                ("w", "weight", self.weight_mem, cfg.word_bits, cfg.weight_depth),
                ("p", "param", self.param_mem, 8 * PARAM_BYTES, cfg.param_depth)):
            raddr, ren, rdata, waddr, we, wdata = self._ram(m, f"{name}_mem", memory,
                                                            width, depth)
            req_valid = getattr(cpu, f"{core}_req_valid")
            resp_valid = Signal(name=f"{core}_resp_valid")
            m.d.sync += resp_valid.eq(cpu.busy & req_valid)
            m.d.comb += [
                raddr.eq(Mux(cpu.busy, getattr(cpu, f"{core}_req_addr"),
                             getattr(host, f"{name}_addr"))),
                ren.eq(Mux(cpu.busy, req_valid, getattr(host, f"{name}_re"))),
                getattr(cpu, f"{core}_req_ready").eq(1),
                getattr(cpu, f"{core}_resp_data").eq(rdata),
                getattr(cpu, f"{core}_resp_valid").eq(resp_valid),
                getattr(host, f"{name}_rdata").eq(rdata),
                waddr.eq(getattr(host, f"{name}_addr")), wdata.eq(getattr(host, f"{name}_wdata")),
                we.eq(getattr(host, f"{name}_we")),
            ]
        return m
