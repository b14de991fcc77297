"""Run ``MatVecHarness`` jobs in the Amaranth simulator (fast unit tests, no Verilator)."""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from hw.config import EngineConfig

from .harness import MatVecHarness
from .job import SENTINEL, MatVecJob, RunResult


def run_jobs(cfg: EngineConfig, jobs, *, wait_level: int = 0, seed: int = 1,
             vcd: str | None = None) -> list[RunResult]:
    """Run ``jobs`` back to back on one harness (so each run starts from the last one's
    state, as on hardware) and return their results."""
    dut = MatVecHarness(cfg)
    results: list[RunResult] = []

    async def testbench(ctx):
        for job in jobs:
            load_job(ctx, dut, job)
            ctx.set(dut.wait_level, wait_level)
            ctx.set(dut.wait_seed, seed)
            results.append(await start_and_collect(ctx, dut, cfg, job))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return results


async def start_and_collect(ctx, dut, cfg: EngineConfig, job: MatVecJob) -> RunResult:
    """Pulse ``start`` on a loaded ``MatVecHarness``, wait for ``done`` (an error if the
    engine hangs) and return the run's outputs and counters."""
    ctx.set(dut.start, 1)
    await ctx.tick()
    ctx.set(dut.start, 0)
    limit = 64 * (job.header.n_words + job.header.rows) + 1000
    for _ in range(limit):
        await ctx.tick()
        if ctx.get(dut.done):
            break
    else:
        raise AssertionError(f"engine hung: not done within {limit} cycles")
    out = np.array([ctx.get(dut.out_mem.data[i]) for i in range(cfg.max_rows)])
    return RunResult(outputs=out, error=ctx.get(dut.error), cycles=ctx.get(dut.cycles),
                     macs=ctx.get(dut.macs), zero_acts=ctx.get(dut.zero_acts),
                     stalls=ctx.get(dut.stalls), nnz_seen=ctx.get(dut.nnz_seen))


async def record_requests(ctx, unit, taken: dict) -> None:
    """Background testbench: append the address of every weight and parameter request
    ``unit`` (an engine or processor: ``w_req_*`` / ``p_req_*`` ports) has taken to
    ``taken["w"]`` / ``taken["p"]``."""
    ports = [getattr(unit, f"{c}_req_{n}") for c in "wp" for n in ("valid", "ready", "addr")]
    async for _, _, wv, wr, wa, pv, pr, pa in ctx.tick().sample(*ports):
        if wv and wr:
            taken["w"].append(wa)
        if pv and pr:
            taken["p"].append(pa)


def load_job(ctx, dut, job: MatVecJob, *, w_base: int = 0, p_base: int = 0):
    """Put ``job`` into a ``MatVecHarness``: its stream words from ``w_base`` and row
    parameters from ``p_base`` (the engine's ``w_base`` / ``p_base`` are the caller's),
    its activations in every lane's copy, sentinel outputs and the header fields."""
    for i, w in enumerate(job.words):
        ctx.set(dut.weight_mem.data[w_base + i], w)
    for i, p in enumerate(job.params):
        ctx.set(dut.param_mem.data[p_base + i], p)
    for copy in dut.engine.mac_array.acts:  # one copy per lane
        for i, v in enumerate(job.x):
            ctx.set(copy.data[i], int(v))
    for i in range(dut.cfg.max_rows):
        ctx.set(dut.out_mem.data[i], SENTINEL)
    for name, value in job.fields().items():
        port = getattr(dut, name)
        ctx.set(port.as_value() if name == "codebook" else port, value)
