# amaranth: UnusedElaboratable=no
"""``hw.registered_read.RegisteredRead`` in the Amaranth simulator: the word a cycle after
its address, held while ``en`` is low, and a register the domain's reset leaves alone."""

import numpy as np
import pytest
from amaranth import Module, ResetInserter, Signal, signed
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from hw.registered_read import RegisteredRead

DEPTH = 32
#: The memory's words, distinct.
WORDS = [int(v) for v in np.random.default_rng(1).permutation(np.arange(-2000, 2000))[:DEPTH]]


def _bench(*, enable: bool):
    """A memory of distinct words (word ``a`` is ``WORDS[a]``), the read block on it, and a
    top that resets the block's domain with ``rst``."""
    mem = Memory(shape=signed(12), depth=DEPTH, init=WORDS)
    rd = RegisteredRead(memory=mem, enable=enable)
    rst = Signal()
    m = Module()
    m.submodules.mem = mem
    m.submodules.rd = ResetInserter(rst)(rd)
    return m, rd, rst


def _simulate(top, testbench):
    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize("enable", [False, True])
def test_data_is_the_word_read_a_cycle_earlier(enable):
    """Random addresses, a new one every cycle (``en`` high when there is one): ``data``
    shows each one's word exactly one cycle later (the words are distinct, so an answer a
    cycle early or late fails)."""
    top, rd, _ = _bench(enable=enable)
    addrs = [int(a) for a in np.random.default_rng(2).integers(0, DEPTH, 200)]

    async def tb(ctx):
        if enable:
            ctx.set(rd.en, 1)
        for k, a in enumerate(addrs):
            ctx.set(rd.addr, a)
            await ctx.tick()
            assert ctx.get(rd.data) == WORDS[a], k

    _simulate(top, tb)


def test_enable_low_holds_the_word():
    """With ``enable``, ``data`` takes a word only in cycles with ``en`` high: through
    cycles with ``en`` low and other addresses it keeps the last word taken."""
    top, rd, _ = _bench(enable=True)
    rng = np.random.default_rng(3)

    async def tb(ctx):
        held, checked = None, 0
        for _ in range(300):
            a, en = int(rng.integers(0, DEPTH)), int(rng.random() < 0.4)
            ctx.set(rd.addr, a)
            ctx.set(rd.en, en)
            await ctx.tick()
            if en:
                held = WORDS[a]
            elif held is not None:
                checked += 1
            if held is not None:
                assert ctx.get(rd.data) == held, (a, en)
        assert checked > 100

    _simulate(top, tb)


@pytest.mark.parametrize("enable", [False, True])
def test_register_is_reset_less(enable):
    """A reset of the block's domain leaves ``data`` alone (a reset would put a
    multiplexer in front of the register Yosys takes into the block RAM): after a cycle
    with ``rst`` high it shows the word read, not 0."""
    top, rd, rst = _bench(enable=enable)
    a = next(k for k, w in enumerate(WORDS) if w != 0)

    async def tb(ctx):
        if enable:
            ctx.set(rd.en, 1)
        ctx.set(rd.addr, a)
        ctx.set(rst, 1)
        await ctx.tick()
        assert ctx.get(rd.data) == WORDS[a]
        if enable:  # and while held
            ctx.set(rd.en, 0)
            await ctx.tick()
            assert ctx.get(rd.data) == WORDS[a]

    _simulate(top, tb)


def test_the_read_port_is_the_memorys_and_asynchronous():
    """The block adds one asynchronous read port to the memory, at construction; ``en``
    is a member only with ``enable``; ``data`` has the memory's shape."""
    mem = Memory(shape=signed(12), depth=DEPTH, init=[])
    plain, held = RegisteredRead(memory=mem), RegisteredRead(memory=mem, enable=True)
    assert [p.domain for p in mem.read_ports] == ["comb", "comb"]
    assert "en" not in plain.signature.members and "en" in held.signature.members
    assert plain.data.shape() == signed(12) and len(plain.addr) == 5


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((), dict(memory=Signal(8)), TypeError, "memory must be an amaranth.lib.memory.Memory"),
    ((), dict(memory=Memory(shape=8, depth=4, init=[]), enable=1), TypeError,
     "enable must be a bool, got 1"),
    ((Memory(shape=8, depth=4, init=[]),), {}, TypeError, "positional"),
])
def test_bad_parameters_are_refused(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        RegisteredRead(*args, **kwargs)
