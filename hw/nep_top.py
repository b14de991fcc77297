"""NEP top: the AXI4-Lite host bus, the register block, the processor core and its weight
and parameter memories (``docs/register-map.md`` section 5)."""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from compiler.isa import STREAM_READ_LATENCY, ProcessorConfig
from golden.weights import PARAM_BYTES

from .axi4_lite import Axi4LiteSignature, Axi4LiteSlave
from .banked_ram import BankedRam, delayed
from .host_interface import CORE_CONTROL, CORE_STATUS, HOST_PORT, HostInterface
from .processor import Processor
from .register_map import ADDR_WIDTH

__all__ = ["NepTop"]

#: The slave's inside port: requests toward the register block, answers back.
_INSIDE_REQUEST = ("addr", "wdata", "wstrb", "we", "re")
_INSIDE_ANSWER = ("ready", "rdata", "rvalid", "err")


class NepTop(wiring.Component):
    """``Axi4LiteSlave`` + ``HostInterface`` + ``Processor`` + weight and param memories.

    The weight and parameter memories (``BankedRam``) have a core read port and a host
    port (write, and read at the write's address) each; a read answers
    ``compiler.isa.STREAM_READ_LATENCY`` cycles after its request, the latency the cycle
    model counts, however the memory is built. The core's requests (always ready) go to
    the read port, the host's window reads and writes to the host port: nothing chooses
    between them in front of the core's read address (issue 6: the ``busy`` select was a
    failing path into the block RAMs). The core's responses count only while busy and
    the register block refuses windows while busy, so the two never meet (without banks
    the memory has one read port, which ``BankedRam`` gives the host's read when it
    asks).

    Parameters
    ----------
    config : ProcessorConfig
        Sizes of the core and of the two memories (``weight_depth``, ``param_depth`` at
        most 2**20, the bus windows' reach).
    sim_rams : bool
        Make the two memories' storage instances of the behavioural ``nep_sim_ram``
        (``sim.harness.SIM_RAM_VERILOG``, for Verilator builds: no Verilog initializer
        for large memories) rather than Amaranth memories; the latency is the same.
    bank_depth : int or None
        Build a memory deeper than this (a power of two) as banks of ``bank_depth`` words,
        each bank's read data registered beside it (``BankedRam``); None: one block. Not
        with ``sim_rams``.

    Attributes
    ----------
    cpu : Processor
    weight_mem, param_mem : BankedRam
        The memories (their storage is ``nep_sim_ram`` instance ``ram`` with
        ``sim_rams``).

    Interface
    ---------
    axi : In(Axi4LiteSignature(ADDR_WIDTH))
        The host bus (ports ``axi__awaddr`` .. ``axi__rready`` in Verilog).
    irq : Out(1)
        Interrupt, active high (``IRQ_STATUS & IRQ_ENABLE``).
    """

    def __init__(self, config: ProcessorConfig, *, sim_rams: bool = False,
                 bank_depth: int | None = None):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, got {type(config).__name__}")
        self.config = config
        self.cpu = Processor(config=config)
        self.host = HostInterface(config=config)
        self.sim_rams = sim_rams
        self.weight_mem = BankedRam(width=config.word_bits, depth=config.weight_depth,
                                    bank_depth=bank_depth, sim_ram=sim_rams)
        self.param_mem = BankedRam(width=8 * PARAM_BYTES, depth=config.param_depth,
                                   bank_depth=bank_depth, sim_ram=sim_rams)
        super().__init__({"axi": In(Axi4LiteSignature(ADDR_WIDTH)), "irq": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.slave = slave = Axi4LiteSlave(addr_width=ADDR_WIDTH)
        m.submodules.host = host = self.host
        m.submodules.cpu = cpu = self.cpu
        wiring.connect(m, wiring.flipped(self.axi), slave.axi)
        m.d.comb += [getattr(host, n).eq(getattr(slave, n)) for n in _INSIDE_REQUEST]
        m.d.comb += [getattr(slave, n).eq(getattr(host, n)) for n in _INSIDE_ANSWER]
        m.d.comb += [getattr(cpu, n).eq(getattr(host, n)) for n in CORE_CONTROL + HOST_PORT]
        m.d.comb += [getattr(host, n).eq(getattr(cpu, n)) for n in CORE_STATUS]
        m.d.comb += [host.host_rdata.eq(cpu.host_rdata), self.irq.eq(host.irq)]

        for core, name, ram in (("w", "weight", self.weight_mem), ("p", "param", self.param_mem)):
            m.submodules[f"{name}_mem"] = ram
            req_valid = getattr(cpu, f"{core}_req_valid")
            # The response's valid travels beside the read.
            valid = delayed(m, cpu.busy & req_valid, STREAM_READ_LATENCY,
                            name=f"{core}_resp_valid")
            m.d.comb += [
                ram.raddr.eq(getattr(cpu, f"{core}_req_addr")),
                ram.ren.eq(req_valid),
                getattr(cpu, f"{core}_req_ready").eq(1),
                getattr(cpu, f"{core}_resp_data").eq(ram.rdata),
                getattr(cpu, f"{core}_resp_valid").eq(valid),
                ram.hren.eq(getattr(host, f"{name}_re")),
                getattr(host, f"{name}_rdata").eq(ram.hrdata),
                ram.waddr.eq(getattr(host, f"{name}_addr")),
                ram.wdata.eq(getattr(host, f"{name}_wdata")),
                ram.we.eq(getattr(host, f"{name}_we")),
            ]
        return m
