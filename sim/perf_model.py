"""Cycle model of the matrix-vector engine (``docs/performance.md``).

Without wait states the engine decodes one stream word per cycle, so a run costs

    cycles = n_words + PIPELINE_LATENCY

With wait states the memories accept requests only on cycles their generators allow. The
model then steps the engine's queues (not its datapath): the two memory readers with their
credits and FIFOs, the decoder and MAC pipeline registers, the row FIFO, the join with the
row parameters and the requantizer pipeline, replaying the harness's LFSRs. Every FIFO is
an ``amaranth.lib.fifo.SyncFIFOBuffered``: a storage count and an output register.
"""

from __future__ import annotations

from collections import deque

from golden.weights import unpack_word
from hw.config import EngineConfig
from hw.decompressor import LATENCY as DECODER_LATENCY

from .harness import PARAM_SALT, WEIGHT_SALT

#: CHECK (1), memory request/response and buffered FIFO (3), decode (3), MAC array (6),
#: buffered row FIFO (2), requantizer (6), FINISH (1): ``EngineConfig()`` with the
#: harness's 1-cycle memories. The pipelined requantizer
#: (``EngineConfig.pipelined_requantizer``) adds its 2 stages. The processor's engine has
#: it, and memories answering ``compiler.isa.STREAM_READ_LATENCY`` (3) cycles after a
#: request, 2 more: ``compiler.isa.ENGINE_LATENCY`` = ``PIPELINE_LATENCY + 2 + 2``.
PIPELINE_LATENCY = 22
FIFO_DEPTH = EngineConfig().fifo_depth
DECODE_STAGES = DECODER_LATENCY  # registers from a FIFO pop to the decoder output
MAC_STAGES = 5  # registers between the decoder output and the row FIFO write


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
    """``hw.memory_reader.MemoryReader``: credits, one-cycle memory, buffered FIFO (its
    storage count and the output register of ``SyncFIFOBuffered``)."""

    def __init__(self, count: int, lfsr: _Lfsr, wait_level: int):
        self.count, self.lfsr, self.wait_level = count, lfsr, wait_level
        self.issued = self.popped = 0
        self.inflight = 0
        self.resp = False
        self.inner = 0
        self.out_rdy = False

    def cycle(self, running: bool, pop: bool) -> None:
        ready = self.lfsr.next_byte() >= self.wait_level
        level = self.inner + int(self.out_rdy)
        take = (running and self.issued < self.count
                and self.inflight + level < FIFO_DEPTH and ready)
        arrived = self.resp
        to_out = self.inner > 0 and (not self.out_rdy or pop)
        self.inflight += int(take) - int(arrived)
        self.issued += int(take)
        self.resp = take
        self.inner += int(arrived) - int(to_out)
        self.out_rdy = to_out or (self.out_rdy and not pop)
        self.popped += int(pop)


def simulate_cycles(ends: list[bool], rows: int, *, wait_level: int = 0, seed: int = 1,
                    requantizer_stages: int = 6) -> int:
    """Busy cycles of a run whose stream words end rows where ``ends`` is true."""
    seed &= 0xFFFF
    wr = _Reader(len(ends), _Lfsr((seed ^ WEIGHT_SALT) or 1), wait_level)
    pr = _Reader(rows, _Lfsr((seed ^ PARAM_SALT) or 1), wait_level)
    wr.lfsr.next_byte()  # the CHECK cycle
    pr.lfsr.next_byte()
    cycles = 1
    dec = deque([(False, False)] * DECODE_STAGES)
    mac = deque([(False, False)] * MAC_STAGES)
    acc_inner, acc_rdy = 0, False  # the row FIFO (SyncFIFOBuffered): storage, output
    rq = deque([False] * requantizer_stages)
    out = 0
    while True:
        cycles += 1
        ce = acc_inner != FIFO_DEPTH - 1
        pop_w = ce and wr.out_rdy
        join = acc_rdy and pr.out_rdy
        row_done = ce and mac[-1][0] and mac[-1][1]
        wrote = rq[-1] and out < rows
        exit_run = out == rows and wr.popped == wr.count and not dec[-1][0]
        # clock edge
        if ce:
            mac.pop()
            mac.appendleft(dec.pop())
            dec.appendleft((True, ends[wr.popped]) if pop_w else (False, False))
        acc_out = acc_inner > 0 and (not acc_rdy or join)
        acc_inner += int(row_done) - int(acc_out)
        acc_rdy = acc_out or (acc_rdy and not join)
        rq.pop()
        rq.appendleft(join)
        out += int(wrote)
        wr.cycle(True, pop_w)
        pr.cycle(True, join)
        if exit_run:
            return cycles + 1  # FINISH


def predict_cycles(words: list[int], lanes: int, rows: int, *, wait_level: int = 0,
                   seed: int = 1, requantizer_stages: int = 6) -> int:
    """Predicted busy cycles for a run over the stream ``words``
    (``requantizer_stages``: ``EngineConfig.requantizer_stages``)."""
    if wait_level == 0:
        return len(words) + PIPELINE_LATENCY + requantizer_stages - 6
    ends = [unpack_word(w, lanes)[0] for w in words]
    return simulate_cycles(ends, rows, wait_level=wait_level, seed=seed,
                           requantizer_stages=requantizer_stages)


def ideal_cycles(nnz: int, lanes: int) -> int:
    """A perfect zero-skipping array: every lane busy on a nonzero weight every cycle."""
    return max(1, -(-nnz // lanes))
