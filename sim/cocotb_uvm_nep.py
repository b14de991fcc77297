"""cocotb entry of the pyuvm environment ``sim.uvm_nep`` for ``nep_top``.

Run by ``tests/rtl/test_uvm_nep.py`` (Verilator): ``NEP_IMAGE`` is a compiled small
model image, ``NEP_SEED`` the seed of every random choice, ``NEP_PAUSE`` the AXI
channels' pause probability.
"""

import os

import cocotb
from pyuvm import ConfigDB, uvm_root

from sim.uvm_nep import NepTest


@cocotb.test(timeout_time=5000, timeout_unit="ms")
async def nep_top_uvm(dut):
    """Compute steps, directed per-opcode and constrained-random programs, each run
    compared with the ISS by the scoreboard; functional coverage written to
    ``build/coverage``."""
    ConfigDB().set(None, "*", "DUT", dut)
    ConfigDB().set(None, "*", "IMAGE", os.environ["NEP_IMAGE"])
    ConfigDB().set(None, "*", "SEED", int(os.environ.get("NEP_SEED", "1")))
    ConfigDB().set(None, "*", "PAUSE", float(os.environ.get("NEP_PAUSE", "0.2")))
    await uvm_root().run_test(NepTest, keep_set={ConfigDB})
    sb = uvm_root().uvm_test_top.env.scoreboard
    assert sb.runs > 0, "no program ran"
    assert not sb.failures, "\n".join(sb.failures[:10])
    dut._log.warning(f"scoreboard: {sb.runs} runs, error codes {sb.errors_seen}")
