"""Cycle model of the matrix-vector engine (``docs/performance.md``).

Without wait states the engine decodes one stream word per cycle, so a run costs

    cycles = n_words + PIPELINE_LATENCY

With wait states the memories accept requests only on cycles their generators allow. The
model then steps the engine's queues (not its datapath): the two memory readers with their
credits and FIFOs, the decoder and MAC pipeline registers, the row FIFO, the join with the
row parameters and the requantizer pipeline, replaying the harness's LFSRs.
"""

from __future__ import annotations

from collections import deque

from golden.weights import unpack_word
from hw.config import EngineConfig

from .harness import PARAM_SALT, WEIGHT_SALT

#: CHECK (1), memory request/response and FIFO (2), decode (1), MAC array (4), row FIFO
#: (1), requantizer (6), FINISH (1).
PIPELINE_LATENCY = 16
FIFO_DEPTH = EngineConfig().fifo_depth
MAC_STAGES = 3  # registers between the decoder output and the row FIFO write
REQUANT_STAGES = 6


def _step8(s: int) -> int:
    for _ in range(8):
        lsb = s & 1
        s >>= 1
        if lsb:
            s ^= 0xB400
    return s


class _Lfsr:
    """The harness's wait-state generator: the byte it shows on each cycle after start."""

    def __init__(self, seed: int):
        self.state = seed or 1

    def next_byte(self) -> int:
        b = self.state & 0xFF
        self.state = _step8(self.state)
        return b


class _Reader:
    """``hw.memory_reader.MemoryReader``: credits, one-cycle memory, FIFO."""

    def __init__(self, count: int, lfsr: _Lfsr, wait_level: int):
        self.count, self.lfsr, self.wait_level = count, lfsr, wait_level
        self.issued = self.popped = 0
        self.inflight = 0
        self.resp = False
        self.fifo = 0

    def cycle(self, running: bool, pop: bool) -> None:
        ready = self.lfsr.next_byte() >= self.wait_level
        take = (running and self.issued < self.count
                and self.inflight + self.fifo < FIFO_DEPTH and ready)
        arrived = self.resp
        self.inflight += int(take) - int(arrived)
        self.issued += int(take)
        self.resp = take
        self.fifo += int(arrived) - int(pop)
        self.popped += int(pop)


def simulate_cycles(ends: list[bool], rows: int, *, wait_level: int = 0, seed: int = 1) -> int:
    """Busy cycles of a run whose stream words end rows where ``ends`` is true."""
    seed &= 0xFFFF
    wr = _Reader(len(ends), _Lfsr((seed ^ WEIGHT_SALT) or 1), wait_level)
    pr = _Reader(rows, _Lfsr((seed ^ PARAM_SALT) or 1), wait_level)
    wr.lfsr.next_byte()  # the CHECK cycle
    pr.lfsr.next_byte()
    cycles = 1
    dec_valid = dec_end = False
    mac = deque([(False, False)] * MAC_STAGES)
    acc_fifo = 0
    rq = deque([False] * REQUANT_STAGES)
    out = 0
    while True:
        cycles += 1
        ce = acc_fifo != FIFO_DEPTH
        pop_w = ce and wr.fifo > 0
        join = acc_fifo > 0 and pr.fifo > 0
        row_done = ce and mac[-1][0] and mac[-1][1]
        wrote = rq[-1] and out < rows
        exit_run = out == rows and wr.popped == wr.count and not dec_valid
        # clock edge
        if ce:
            mac.pop()
            mac.appendleft((dec_valid, dec_end))
            if pop_w:
                dec_valid, dec_end = True, ends[wr.popped]
            else:
                dec_valid = False
        acc_fifo += int(row_done) - int(join)
        rq.pop()
        rq.appendleft(join)
        out += int(wrote)
        wr.cycle(True, pop_w)
        pr.cycle(True, join)
        if exit_run:
            return cycles + 1  # FINISH


def predict_cycles(words: list[int], lanes: int, rows: int, *, wait_level: int = 0,
                   seed: int = 1) -> int:
    """Predicted busy cycles for a run over the stream ``words``."""
    if wait_level == 0:
        return len(words) + PIPELINE_LATENCY
    ends = [unpack_word(w, lanes)[0] for w in words]
    return simulate_cycles(ends, rows, wait_level=wait_level, seed=seed)


def ideal_cycles(nnz: int, lanes: int) -> int:
    """A perfect zero-skipping array: every lane busy on a nonzero weight every cycle."""
    return max(1, -(-nnz // lanes))
