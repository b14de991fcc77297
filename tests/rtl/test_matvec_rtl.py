"""The matrix-vector engine's generated Verilog under Verilator (cocotb), against golden.

Each lane count is one Verilator build (cached) and one simulation running a plan of random
layers: shapes from 1x1 to 1024 columns and 1024 rows, sparsities 0-100%, every value
encoding, random memory wait states, and every malformed-input case followed by a clean
run. Every output is compared bit for bit with the golden model, and every cycle count with
the analytical model (``sim.cocotb_matvec``). ``make regress`` (NEP_REGRESS=1) runs more.
"""

import os

import numpy as np
import pytest

from golden.weights import Encoding, entries_per_word
from sim.job import CORRUPTIONS
from sim.rtl import harness_config, run_plan

REGRESS = os.environ.get("NEP_REGRESS") == "1"
SPARSITIES = (0.0, 0.5, 0.75, 0.9, 1.0)


def random_cases(lanes: int, n: int, seed: int) -> list[dict]:
    """Random layer shapes that fit the simulation build's memories."""
    cfg = harness_config(lanes)
    rng = np.random.default_rng(seed)
    shapes = [(1, 1), (1024, 1), (1, 1024), (37, 1000), (1024, 64)]
    cases = []
    for i in range(n):
        sparsity = SPARSITIES[i % len(SPARSITIES)]
        encoding = list(Encoding)[(i // len(SPARSITIES)) % 3]
        if i < len(shapes):
            rows, cols = shapes[i]
        else:  # mostly modest layers, some up to the full 1024 x 1024
            big = rng.random() < 0.15
            rows = int(rng.integers(1, 1025 if big else 200))
            cols = int(rng.integers(1, 1025 if big else 300))
        # keep dense int8 layers inside the weight memory
        words = rows * cols * (1 - sparsity) / entries_per_word(lanes, encoding) + rows
        while words > cfg.weight_depth * 0.9:
            rows //= 2
            words /= 2
        cases.append({"rows": rows, "cols": cols, "sparsity": sparsity,
                      "encoding": int(encoding), "seed": int(rng.integers(1, 1 << 30)),
                      "wait_level": int(rng.choice([0, 0, 40, 128, 220])),
                      "out_mode": int(rng.choice([0, 0, 1, 2]))})
    return cases


def malformed_cases() -> list[dict]:
    cases = []
    for i, kind in enumerate(CORRUPTIONS):
        enc = int(Encoding.INT8 if kind == "int8_low_delta" else Encoding.INT4)
        base = {"rows": 40, "cols": 90, "sparsity": 0.5, "encoding": enc, "seed": 100 + i,
                "wait_level": 64}
        cases += [{**base, "corrupt": kind}, base]  # the error, then a clean run
    return cases


@pytest.mark.parametrize("lanes", [4, 8, 16])
def test_random_layers_bit_exact(lanes):
    n = 150 if REGRESS else 22
    records = run_plan(lanes, random_cases(lanes, n, seed=lanes + (1000 if REGRESS else 0)))
    assert len(records) == n
    assert all(r["error"] == 0 for r in records)
    # Waits must have happened somewhere, or the wait-state path was not exercised.
    assert any(r["stalls"] > 2 * 10 for r in records if r["wait_level"] > 0)


def test_malformed_inputs_error_and_recover():
    records = run_plan(8, malformed_cases())
    got = {(r.get("corrupt"), r["error"]) for r in records}
    want = {(k, int(v)) for k, v in CORRUPTIONS.items()} | {(None, 0)}
    assert got == want
