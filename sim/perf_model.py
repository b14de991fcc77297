"""Analytical cycle model of the matrix-vector engine (``docs/performance.md``).

The engine decodes one stream word per cycle, so a run costs its word count plus a fixed
pipeline latency. With random wait states the weight memory accepts a request only on
cycles its generator allows; the model replays the harness's LFSR to find when the last
word is accepted.
"""

from __future__ import annotations

#: start -> CHECK (1), memory request/response and FIFO (2), decode (1), MAC array (4),
#: row FIFO (1), requantizer (6), output write and FINISH (1).
PIPELINE_LATENCY = 16
WEIGHT_SALT = 0x5A5A  # must match sim.harness.MatVecHarness


def lfsr_bytes(seed: int, n: int):
    """The harness's wait-state generator: one byte per cycle after ``start``."""
    s = seed or 1
    out = []
    for _ in range(n):
        for _ in range(8):
            lsb = s & 1
            s >>= 1
            if lsb:
                s ^= 0xB400
        out.append(s & 0xFF)
    return out


def predict_cycles(n_words: int, *, wait_level: int = 0, seed: int = 1) -> int:
    """Busy cycles of one run: the cycle the last word is accepted, plus the latency."""
    if wait_level == 0:
        return n_words + PIPELINE_LATENCY
    state = ((seed & 0xFFFF) ^ WEIGHT_SALT) or 1
    accepted, cycle = 0, 0
    gen_cycle = 0
    chunk: list[int] = []
    # The generator runs from start; requests begin one cycle later, after CHECK.
    while accepted < n_words:
        if gen_cycle >= len(chunk):
            chunk = lfsr_bytes(state, 4096)
            state = _advance(state, 4096)
            gen_cycle = 0
        if cycle >= 1 and chunk[gen_cycle] >= wait_level:
            accepted += 1
        gen_cycle += 1
        cycle += 1
    return cycle - 1 + PIPELINE_LATENCY


def _advance(state: int, n: int) -> int:
    for _ in range(8 * n):
        lsb = state & 1
        state >>= 1
        if lsb:
            state ^= 0xB400
    return state


def ideal_cycles(nnz: int, lanes: int) -> int:
    """A perfect zero-skipping array: every lane busy on a nonzero weight every cycle."""
    return max(1, -(-nnz // lanes))
