"""``make bench``: the matrix-vector engine on the RTL, measured against its goals.

For each layer the record holds lanes, shape, sparsity, encoding, measured cycles, the
ideal ``ceil(nonzeros / lanes)``, utilization (ideal / measured), the speedup over the same
engine on the dense layer of the same shape and encoding, and the image's bits per weight.
Goals (issue 2, at 8 lanes, 256x256 to 1024x1024): utilization >= 0.90 from 50% to 90%
sparsity; speedup >= 0.9 / density; <= 1.5 bits per weight at 90% sparsity, 4-bit values.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from golden.weights import Encoding
from sim import rtl, rtl_steps, steps_bench, toolchain

SIZES = (256, 512, 1024)
SPARSITIES = (0.0, 0.5, 0.75, 0.9)
NAMES = {int(e): e.name.lower() for e in Encoding}


def plan() -> dict[int, list[dict]]:
    cases: dict[int, list[dict]] = {8: [], 4: [], 16: []}
    for n in SIZES:
        for enc in (Encoding.INT4, Encoding.CODEBOOK, Encoding.INT8):
            if enc == Encoding.INT8 and n == 1024:
                continue  # dense int8 at 1024 x 1024 exceeds the simulation weight memory
            for sp in SPARSITIES:
                cases[8].append({"rows": n, "cols": n, "sparsity": sp, "encoding": int(enc),
                                 "seed": 7, "wait_level": 0})
    for lanes in (4, 16):  # other lane counts on one size, for scaling
        cases[lanes] = [{"rows": 512, "cols": 512, "sparsity": sp,
                         "encoding": int(Encoding.INT4), "seed": 7, "wait_level": 0}
                        for sp in SPARSITIES]
    return cases


def summarize(records: list[dict]) -> list[dict]:
    dense = {(r["lanes"], r["rows"], r["cols"], r["encoding"]): r["cycles"]
             for r in records if r["sparsity"] == 0.0}
    out = []
    for r in records:
        density = 1.0 - r["sparsity"]
        speedup = dense[(r["lanes"], r["rows"], r["cols"], r["encoding"])] / r["cycles"]
        rec = {k: r[k] for k in ("lanes", "rows", "cols", "sparsity", "cycles",
                                 "ideal_cycles", "predicted_cycles", "bits_per_weight",
                                 "n_words", "nnz", "stalls")}
        rec.update(encoding=NAMES[r["encoding"]],
                   utilization=r["ideal_cycles"] / r["cycles"], speedup_vs_dense=speedup,
                   speedup_goal=(0.9 / density) if density > 0 else None)
        out.append(rec)
    return out


def goals(records: list[dict]) -> list[tuple[str, bool, str]]:
    main = [r for r in records if r["lanes"] == 8]
    util = [r for r in main if 0.5 <= r["sparsity"] <= 0.9 and r["encoding"] != "int8"]
    worst_u = min(util, key=lambda r: r["utilization"])
    util8 = [r for r in main if 0.5 <= r["sparsity"] <= 0.9 and r["encoding"] == "int8"]
    worst_u8 = min(util8, key=lambda r: r["utilization"])
    sp = [r for r in main if r["sparsity"] > 0]
    worst_s = min(sp, key=lambda r: r["speedup_vs_dense"] / r["speedup_goal"])
    bits = [r for r in main if r["sparsity"] == 0.9 and r["encoding"] != "int8"]
    worst_b = max(bits, key=lambda r: r["bits_per_weight"])
    return [
        ("utilization >= 0.90 (50-90% sparsity), 4-bit values", worst_u["utilization"] >= 0.9,
         f"worst {worst_u['utilization']:.3f} ({_name(worst_u)})"),
        ("utilization >= 0.90 (50-90% sparsity), int8 values", worst_u8["utilization"] >= 0.9,
         f"worst {worst_u8['utilization']:.3f} ({_name(worst_u8)}): an int8 weight takes two "
         "slots of a stream word sized for 4-bit values"),
        ("speedup >= 0.9 / density", worst_s["speedup_vs_dense"] >= worst_s["speedup_goal"],
         f"worst {worst_s['speedup_vs_dense']:.2f}x vs goal {worst_s['speedup_goal']:.2f}x "
         f"({_name(worst_s)})"),
        ("<= 1.5 bits/weight at 90%, 4-bit", worst_b["bits_per_weight"] <= 1.5,
         f"worst {worst_b['bits_per_weight']:.3f} ({_name(worst_b)})"),
    ]


def _name(r: dict) -> str:
    return f"{r['rows']}x{r['cols']} {r['encoding']} {r['sparsity']:.0%} L={r['lanes']}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="make bench", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=toolchain.BUILD / "reports" / "matvec.json")
    ap.add_argument("--steps-out", type=Path,
                    default=toolchain.BUILD / "reports" / "steps.json")
    a = ap.parse_args(argv)
    records = []
    cases = plan()
    for lanes, lane_cases in cases.items():
        t0 = time.time()
        print(f"lanes {lanes}: {len(lane_cases)} layers on the RTL ...", flush=True)
        records += rtl.run_plan(lanes, lane_cases)
        print(f"  done in {time.time() - t0:.0f} s", flush=True)
    rows = summarize(records)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rows, indent=1))
    print(f"\n{'L':>2} {'shape':>9} {'enc':>8} {'sparse':>6} {'cycles':>7} {'ideal':>7} "
          f"{'util':>5} {'speedup':>7} {'goal':>5} {'bits/w':>6}")
    for r in rows:
        goal = f"{r['speedup_goal']:.2f}" if r["speedup_goal"] else "-"
        print(f"{r['lanes']:>2} {r['rows']:>4}x{r['cols']:<4} {r['encoding']:>8} "
              f"{r['sparsity']:>6.0%} {r['cycles']:>7} {r['ideal_cycles']:>7} "
              f"{r['utilization']:>5.3f} {r['speedup_vs_dense']:>7.2f} {goal:>5} "
              f"{r['bits_per_weight']:>6.3f}")
    print()
    for name, ok, detail in goals(rows):
        print(f"{'PASS' if ok else 'MISS'}  {name}: {detail}")
    print(f"\nwrote {a.out}")
    print("\ncompute steps of the benchmark model: ISS, then the RTL (nep_top) ...", flush=True)
    steps = steps_bench.step_records() + rtl_steps.rtl_step_records()
    a.steps_out.write_text(json.dumps(steps, indent=1))
    steps_bench.print_table(steps)
    print(f"\nwrote {a.steps_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
