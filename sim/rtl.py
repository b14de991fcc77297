"""Run matrix-vector plans on the RTL under Verilator (used by tests, ``make sim`` and bench)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from cocotb_tools.check_results import get_results

from hw.config import EngineConfig

from . import toolchain
from .harness import SIM_RAM_VERILOG, MatVecHarness

TOPLEVEL = "matvec_harness"


def harness_config(lanes: int) -> EngineConfig:
    """The simulation build: layers up to 1024 x 1024, dense int4 at 8 lanes included."""
    return EngineConfig(lanes=lanes, max_rows=1024, max_cols=1024, weight_depth=1 << 18)


def build(lanes: int, *, waves: bool = False) -> Path:
    harness = MatVecHarness(harness_config(lanes), verilog_rams=True)
    return toolchain.build(harness, TOPLEVEL, waves=waves, extra_sources=[SIM_RAM_VERILOG])


def run_plan(lanes: int, cases: list[dict], *, waves: bool = False) -> list[dict]:
    """Run ``cases`` in one simulation; return one record per case.

    Raises ``AssertionError`` with the failing cases when any run is wrong.
    """
    cfg = harness_config(lanes)
    build_dir = build(lanes, waves=waves)
    plan = {"config": cfg.__dict__, "cases": cases}
    text = json.dumps(plan, sort_keys=True)
    tag = hashlib.sha256(text.encode()).hexdigest()[:12]
    work = toolchain.BUILD / "plans"
    work.mkdir(parents=True, exist_ok=True)
    plan_path, results_path = work / f"plan-{tag}.json", work / f"results-{tag}.json"
    plan_path.write_text(text)
    results_path.unlink(missing_ok=True)
    xml = toolchain.run_cocotb(
        build_dir, TOPLEVEL, "sim.cocotb_matvec", waves=waves,
        env={"NEP_PLAN": str(plan_path), "NEP_RESULTS": str(results_path),
             "COCOTB_LOG_LEVEL": "WARNING", "GPI_LOG_LEVEL": "WARNING"})
    records = json.loads(results_path.read_text()) if results_path.exists() else []
    n_tests, n_failed = get_results(Path(xml))
    if n_tests == 0 or n_failed or len(records) != len(cases):
        bad = [r for r in records if r["problems"]]
        raise AssertionError(
            f"RTL plan failed ({n_failed} of {n_tests} cocotb tests, "
            f"{len(records)}/{len(cases)} cases ran): "
            + "; ".join(f"{_brief(r)}: {r['problems']}" for r in bad[:5]))
    return records


def _brief(record: dict) -> str:
    keys = ("rows", "cols", "sparsity", "encoding", "seed", "wait_level", "corrupt")
    return re.sub(r"\s+", "", json.dumps({k: record.get(k) for k in keys}))
