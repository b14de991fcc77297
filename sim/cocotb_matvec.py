"""cocotb test module: run a plan of matrix-vector jobs on ``matvec_harness``.

The plan (JSON, path in ``NEP_PLAN``) lists cases; each is rebuilt from its seed with
``sim.job.make_job`` (and ``corrupt`` for malformed runs), run on the RTL, checked bit for
bit against the golden model and its cycle count against ``sim.perf_model``. One JSON
record per case goes to ``NEP_RESULTS`` for the benchmark and the pytest wrapper.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
import numpy as np

from hw.config import EngineConfig

from .job import corrupt, make_job
from .perf_model import ideal_cycles, predict_cycles
from .tb import MatVecTB

#: The model must predict every run's cycles within this fraction.
CYCLE_TOLERANCE = 0.05


def build_case(case: dict, cfg: EngineConfig):
    rng = np.random.default_rng(case["seed"])
    job = make_job(rng, rows=case["rows"], cols=case["cols"], sparsity=case["sparsity"],
                   encoding=case["encoding"], lanes=cfg.lanes,
                   out_mode=case.get("out_mode", 0))
    if case.get("corrupt"):
        job = corrupt(job, case["corrupt"], cfg)
    return job


@cocotb.test()
async def run_plan(dut):
    plan = json.loads(Path(os.environ["NEP_PLAN"]).read_text())
    cfg = EngineConfig(**plan["config"])
    tb = MatVecTB(dut)
    await tb.start()
    records, failures = [], []
    for case in plan["cases"]:
        job = build_case(case, cfg)
        res = await tb.run(job, wait_level=case.get("wait_level", 0), seed=case["seed"])
        problems = job.check(res)
        predicted = predict_cycles(list(job.words), cfg.lanes, job.header.rows,
                                   wait_level=case.get("wait_level", 0), seed=case["seed"])
        if not job.expected_error and abs(res.cycles - predicted) > CYCLE_TOLERANCE * predicted:
            problems.append(f"cycles {res.cycles} vs model {predicted}")
        h = job.header
        records.append({
            **case, "lanes": cfg.lanes, "error": res.error, "cycles": res.cycles,
            "predicted_cycles": predicted, "ideal_cycles": ideal_cycles(h.nnz, cfg.lanes),
            "nnz": h.nnz, "n_words": h.n_words, "macs": res.macs, "zero_acts": res.zero_acts,
            "stalls": res.stalls, "bits_per_weight": job.bits_per_weight,
            "problems": problems,
        })
        if problems:
            failures.append(f"{case}: {'; '.join(problems)}")
    Path(os.environ["NEP_RESULTS"]).write_text(json.dumps(records, indent=1))
    assert not failures, "\n".join(failures)
