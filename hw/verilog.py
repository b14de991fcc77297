"""``make verilog``: Verilog of the matrix-vector engine for FPGA synthesis, linted.

Writes ``matvec_engine_l{4,8,16}.v`` (top module ``matvec_engine``) and runs Verilator's
linter on each with only the named waivers of ``sim.toolchain.VERILATOR_WAIVERS``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from sim import toolchain

from .config import EngineConfig
from .matvec_engine import MatVecEngine

#: Synthesis configuration: a 1024 x 1024 layer, 4096 stream words on chip.
SYNTH_CONFIG = dict(max_rows=1024, max_cols=1024, weight_depth=4096)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="make verilog", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=toolchain.BUILD / "verilog")
    ap.add_argument("--lanes", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--lint", action="store_true", help="lint each file with Verilator")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for lanes in a.lanes:
        cfg = EngineConfig(lanes=lanes, **SYNTH_CONFIG)
        path = a.out / f"matvec_engine_l{lanes}.v"
        path.write_text(toolchain.generate_verilog(MatVecEngine(cfg), "matvec_engine"))
        print(f"wrote {path}")
        if a.lint:
            failed |= lint(path, "matvec_engine")
    return 1 if failed else 0


def lint(path: Path, top: str) -> int:
    toolchain.setup_verilator_env()
    cmd = ["verilator", "--lint-only", "--top-module", top, *toolchain.waiver_args(), str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    status = "clean" if proc.returncode == 0 else "FAILED"
    print(f"lint {path.name}: {status} (waived: {', '.join(toolchain.VERILATOR_WAIVERS)})")
    if proc.returncode:
        print(proc.stderr[-4000:], file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
