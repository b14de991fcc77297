"""The pyuvm environment ``sim.uvm_nep`` on ``nep_top`` under Verilator.

The build is ``tests/rtl/test_nep_top_rtl.py``'s (same configuration, same sources:
the same cached Verilator model). One cocotb test (``sim.cocotb_uvm_nep``): compute
steps of a small compiled model, directed per-opcode programs and constrained-random
programs, engine errors of images corrupted through the bus, and the steps of two more
models (dense int8, sparse codebook), every run compared with the ISS by the
scoreboard; then the functional coverage it wrote must show every opcode, at least four
error codes of which at least three of the engine's (1..9), every layer density class, and
every (memory region, access kind) of the memory agent.
"""

import xml.etree.ElementTree as ET
from pathlib import Path

from cocotb_tools.check_results import get_results

from compiler.isa import Op
from hw.nep_top import NepTop
from sim import toolchain
from sim.cocotb_nep_top import CFG, TOPLEVEL, small_image
from sim.harness import SIM_RAM_VERILOG
from sim.uvm_nep import COVERAGE_DIR, ENGINE_ERRORS, MEM_ACCESS, MEM_REGIONS, SPARSITY_BINS

COVERAGE_XML = COVERAGE_DIR / "nep_top_coverage.xml"


def _bins(root: ET.Element, name: str) -> dict[str, int]:
    """``bin -> hits`` of coverpoint ``name`` (its ``abs_name`` without ``top.``)."""
    for el in root.iter():
        if el.get("abs_name") == f"top.{name}":
            return {b.get("bin"): int(b.get("hits")) for b in el if b.get("bin") is not None}
    raise AssertionError(f"no coverpoint {name} in {COVERAGE_XML}")


def test_uvm_env_on_nep_top(tmp_path):
    image = tmp_path / "small.nepimg"
    image.write_bytes(small_image().to_bytes())
    build_dir = toolchain.build(NepTop(CFG, sim_rams=True), TOPLEVEL,
                                extra_sources=[SIM_RAM_VERILOG])
    COVERAGE_XML.unlink(missing_ok=True)
    xml = toolchain.run_cocotb(
        build_dir, TOPLEVEL, "sim.cocotb_uvm_nep",
        env={"NEP_IMAGE": str(image), "NEP_SEED": "5", "NEP_PAUSE": "0.2",
             "COCOTB_LOG_LEVEL": "WARNING",
             # cocotbext-axi 0.1.28 still uses cocotb's deprecated Event.data
             "PYTHONWARNINGS": "ignore::DeprecationWarning"})
    n_tests, n_failed = get_results(Path(xml))
    assert (n_tests, n_failed) == (1, 0), toolchain.failures(Path(xml))

    assert COVERAGE_XML.exists()
    root = ET.parse(COVERAGE_XML).getroot()
    opcodes = _bins(root, "nep.instr.opcode")
    missing = [op.name for op in Op if opcodes.get(op.name, 0) == 0]
    assert not missing, f"opcodes never executed: {missing}"
    assert opcodes.get("ILLEGAL", 0) > 0
    errors = {k for k, v in _bins(root, "nep.run.error").items() if v and k != "OK"}
    assert len(errors) >= 4, f"error codes hit: {sorted(errors)}"
    engine = errors & set(ENGINE_ERRORS)
    assert len(engine) >= 3, f"engine error codes hit: {sorted(engine)}"
    sparsity = _bins(root, "nep.layer.sparsity")
    missed = [b for b in SPARSITY_BINS if sparsity.get(b, 0) == 0]
    assert not missed, f"layer density classes never executed: {missed} ({sparsity})"
    mem = _bins(root, "nep.mem.region_x_access")
    for region in MEM_REGIONS:
        assert mem.get(str((region, "write")), 0) > 0, f"{region} never written: {mem}"
    for region in ("scratch", "weights", "params"):
        assert mem.get(str((region, "read")), 0) > 0, f"{region} never read: {mem}"
    unhit = [b for b, n in mem.items() if n == 0]
    assert len(mem) == len(MEM_REGIONS) * len(MEM_ACCESS) and not unhit, \
        f"region x access bins missed: {unhit} ({mem})"
