"""``NepTop``'s generated Verilog under Verilator, driven through its AXI4-Lite bus by
cocotbext-axi's ``AxiLiteMaster`` (every channel paused at random).

One cached build (``sim.cocotb_nep_top.CFG``: small memories, the weight and param RAMs
as ``nep_sim_ram``) and one cocotb test: a compiled model's image loaded through the
bus, every step program run for ``NEP_FRAMES`` frames, the busy rules, an illegal
instruction with its interrupt and a soft-reset recovery; every run's registers and the
whole scratchpad, read back through the bus, equal to ``compiler.iss.Machine``.
"""

from pathlib import Path

from cocotb_tools.check_results import get_results

from hw.nep_top import NepTop
from hw.verilog import lint
from sim import toolchain
from sim.cocotb_nep_top import CFG, TOPLEVEL, small_image
from sim.harness import SIM_RAM_VERILOG


def test_image_runs_through_the_bus_match_the_iss(tmp_path):
    image = tmp_path / "small.nepimg"
    image.write_bytes(small_image().to_bytes())
    build_dir = toolchain.build(NepTop(CFG, sim_rams=True), TOPLEVEL,
                                extra_sources=[SIM_RAM_VERILOG])
    xml = toolchain.run_cocotb(
        build_dir, TOPLEVEL, "sim.cocotb_nep_top",
        env={"NEP_IMAGE": str(image), "NEP_SEED": "11", "NEP_FRAMES": "2",
             "COCOTB_LOG_LEVEL": "WARNING",
             # cocotbext-axi 0.1.28 still uses cocotb's deprecated Event.data
             "PYTHONWARNINGS": "ignore::DeprecationWarning"})
    n_tests, n_failed = get_results(Path(xml))
    assert (n_tests, n_failed) == (1, 0), toolchain.failures(Path(xml))


def test_top_verilog_lints(tmp_path):
    """``nep_top`` with Amaranth memories (the synthesizable form) passes Verilator's
    linter with only the project's named waivers."""
    path = tmp_path / "nep_top.v"
    path.write_text(toolchain.generate_verilog(NepTop(CFG), TOPLEVEL))
    assert lint(path, TOPLEVEL) == 0
