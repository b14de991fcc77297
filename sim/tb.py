"""cocotb testbench for ``MatVecHarness``: clock, reset, bulk memory loads, one run per job.

Per-cycle Python is kept out: memories are written through their array handles, the RTL
runs freely until ``done``, and whole buffers are compared at the end.
"""

from __future__ import annotations

import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, SimTimeoutError, with_timeout

from .job import SENTINEL, MatVecJob, RunResult


class MatVecTB:
    """Owns the clock, reset and the memories of a ``matvec_harness`` DUT."""

    def __init__(self, dut, *, period_ns: int = 10):
        self.dut = dut
        self.period_ns = period_ns
        self._clock = Clock(dut.clk, period_ns, unit="ns")

    async def start(self):
        self._clock.start()
        self.dut.rst.value = 1
        for name in ("start", "act_we", "wait_level", "wait_seed"):
            getattr(self.dut, name).value = 0
        await ClockCycles(self.dut.clk, 2)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def load(self, job: MatVecJob):
        """Write the image sections into the harness memories (no clock cycles)."""
        dut = self.dut
        weights, params = dut.weight_mem.mem, dut.param_mem.mem
        for i, w in enumerate(job.words):
            weights[i].value = w
        for i, p in enumerate(job.params):
            params[i].value = p
        # The activation buffer sits inside the MAC array, one copy per lane: reach them
        # the same way.
        for j in range(job.header.lanes):
            acts = getattr(dut.engine.mac_array, f"acts{j}")
            for i, v in enumerate(job.x):
                acts[i].value = int(v) & 0xFF
        out = dut.out_mem.mem
        for i in range(len(out)):
            out[i].value = SENTINEL

    async def run(self, job: MatVecJob, *, wait_level: int = 0, seed: int = 1,
                  max_cycles: int | None = None) -> RunResult:
        dut = self.dut
        self.load(job)
        for name, value in job.fields().items():
            getattr(dut, name).value = value
        dut.wait_level.value = wait_level
        dut.wait_seed.value = seed & 0xFFFF
        await RisingEdge(dut.clk)
        dut.start.value = 1
        await RisingEdge(dut.clk)  # start is sampled here; done drops
        dut.start.value = 0
        # A generous bound turns a hang into a test failure instead of a stuck run.
        limit = max_cycles or 64 * (job.header.n_words + job.header.rows) + 1000
        await ReadOnly()
        try:
            await with_timeout(RisingEdge(dut.done), limit * self.period_ns, "ns")
        except SimTimeoutError:
            raise AssertionError(f"engine hung: not done within {limit} cycles") from None
        await ReadOnly()
        out = np.array([v.value.to_signed() for v in dut.out_mem.mem], dtype=np.int64)
        res = RunResult(
            outputs=out, error=int(dut.error.value), cycles=int(dut.cycles.value),
            macs=int(dut.macs.value), zero_acts=int(dut.zero_acts.value),
            stalls=int(dut.stalls.value), nnz_seen=int(dut.nnz_seen.value),
        )
        await RisingEdge(dut.clk)
        return res
