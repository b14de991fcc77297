"""``Axi4LiteSlave``'s generated Verilog under Verilator, driven by cocotbext-axi.

One cached build of ``sim.cocotb_axi4_lite.AxiTestTop`` (the slave in front of a register
file and a 64-bit memory window) and one simulation running its cocotb tests: random
reads and writes from two concurrent streams, all strobe patterns, unmapped and read-only
addresses, compared with ``TopModel``; once at full speed, once with every AXI channel
paused at random by cocotbext-axi's pause generators and random inside wait states.
``make regress`` (NEP_REGRESS=1) runs more accesses.
"""

import os
from pathlib import Path

from cocotb_tools.check_results import get_results

from hw.axi4_lite import Axi4LiteSlave
from hw.register_map import ADDR_WIDTH
from hw.verilog import lint
from sim import toolchain
from sim.cocotb_axi4_lite import TOPLEVEL, AxiTestTop

REGRESS = os.environ.get("NEP_REGRESS") == "1"
COCOTB_TESTS = 2


def test_random_traffic_matches_model():
    build_dir = toolchain.build(AxiTestTop(), TOPLEVEL)
    xml = toolchain.run_cocotb(
        build_dir, TOPLEVEL, "sim.cocotb_axi4_lite",
        env={"NEP_AXI_OPS": "50000" if REGRESS else "5000", "NEP_AXI_SEED": "7",
             "COCOTB_LOG_LEVEL": "WARNING",
             # cocotbext-axi 0.1.28 still uses cocotb's deprecated Event.data
             "PYTHONWARNINGS": "ignore::DeprecationWarning"})
    n_tests, n_failed = get_results(Path(xml))
    assert (n_tests, n_failed) == (COCOTB_TESTS, 0), toolchain.failures(Path(xml))


def test_slave_verilog_lints(tmp_path):
    """The block as delivered (``axi4_lite_slave``, the NEP map's address width) passes
    Verilator's linter with only the project's named waivers."""
    path = tmp_path / "axi4_lite_slave.v"
    path.write_text(toolchain.generate_verilog(Axi4LiteSlave(addr_width=ADDR_WIDTH),
                                               "axi4_lite_slave"))
    assert lint(path, "axi4_lite_slave") == 0
