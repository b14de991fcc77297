"""``make sim``: one compressed layer through the RTL under Verilator, checked against golden.

Until the processor and the speech pipeline land, the main job runs the matrix-vector
engine on a random quantized layer and reports what a hardware engineer wants to see:
bit-exactness, cycles against the model and the ideal, MAC utilization and skipping.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from golden.weights import Encoding
from sim import rtl, toolchain

ENCODINGS = {"int8": Encoding.INT8, "int4": Encoding.INT4, "codebook": Encoding.CODEBOOK}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="make sim", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--cols", type=int, default=256)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--encoding", choices=sorted(ENCODINGS), default="int4")
    ap.add_argument("--lanes", type=int, choices=(4, 8, 16), default=8)
    ap.add_argument("--wait", type=int, default=0, help="wait-state level 0..255 (out of 256)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--waves", action="store_true", help="write a VCD to build/waves/")
    a = ap.parse_args(argv)
    cfg = rtl.harness_config(a.lanes)
    if not (1 <= a.rows <= cfg.max_rows and 1 <= a.cols <= cfg.max_cols):
        ap.error(f"rows and cols must be in 1..{cfg.max_rows} and 1..{cfg.max_cols}")
    if not 0.0 <= a.sparsity <= 1.0 or not 0 <= a.wait <= 255:
        ap.error("sparsity must be in 0..1 and wait in 0..255")

    case = {"rows": a.rows, "cols": a.cols, "sparsity": a.sparsity,
            "encoding": int(ENCODINGS[a.encoding]), "seed": a.seed, "wait_level": a.wait}
    print(f"[1/2] Verilator model for {a.lanes} lanes (cached after the first build) ...",
          flush=True)
    t0 = time.time()
    rtl.build(a.lanes, waves=a.waves)
    print(f"      ready in {time.time() - t0:.1f} s", flush=True)
    print(f"[2/2] running a {a.rows}x{a.cols} {a.encoding} layer at {a.sparsity:.0%} "
          f"sparsity on the RTL ...", flush=True)
    t1 = time.time()
    try:
        (r,) = rtl.run_plan(a.lanes, [case], waves=a.waves)
    except AssertionError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    dense_macs = a.rows * a.cols
    util = r["ideal_cycles"] / r["cycles"]
    print(f"""
  result         bit-exact with the golden model ({a.rows} outputs)
  image          {r['n_words']} stream words, {r['bits_per_weight']:.3f} bits per weight
  cycles         {r['cycles']} measured, {r['predicted_cycles']} predicted by the model, \
{r['ideal_cycles']} ideal (nonzeros / lanes)
  utilization    {util:.3f} of the ideal
  MACs           {r['macs']} done, {dense_macs - r['nnz']} skipped for zero weights, \
{r['zero_acts']} skipped for zero activations (of {dense_macs} dense)
  stalls         {r['stalls']} cycles waiting for weights
  speed          {dense_macs / r['cycles']:.2f} dense-equivalent MACs per cycle \
(a dense {a.lanes}-lane array does at most {a.lanes})
  sim time       {time.time() - t1:.1f} s""")
    if a.waves:
        vcd = rtl.build(a.lanes, waves=True) / "dump.vcd"
        dest = toolchain.BUILD / "waves" / "matvec.vcd"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(vcd, dest)
        print(f"  waveform       {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
