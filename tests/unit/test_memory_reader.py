# amaranth: UnusedElaboratable=no
"""MemoryReader (``hw/memory_reader.py``) in the Amaranth simulator, driven by a Python
memory model with wait states, in-order responses after 1-3 cycles and output back-pressure."""

import math
import random
import zlib

import pytest
from amaranth import ResetInserter, Signal
from amaranth.sim import Simulator

from hw.memory_reader import MemoryReader


def run_reader(mem, count, *, width, addr_bits, depth=4, pad_to=None, seed=0,
               p_req_ready=1.0, p_out_ready=1.0, latency=(1, 3), enable=lambda t: 1,
               max_cycles=2000, tail=12, expect_done=True, base=0, prior=None):
    """Run one read of ``count`` words of ``mem`` placed at address ``base`` (modulo the
    address space); check per-cycle invariants and return a record of what happened.

    As in the engine, the read starts with a one-cycle synchronous reset (``ResetInserter``)
    with ``load`` high, after which ``base`` is garbage. ``prior`` (a base and a count)
    is a read done the same way first, at full rate, so the checked one starts from the
    address registers that read left."""
    rng = random.Random(seed)
    dut = MemoryReader(width=width, addr_bits=addr_bits, depth=depth, pad_to=pad_to)
    restart = Signal()
    space = 1 << addr_bits
    res = {"addrs": [], "outs": [], "cycles_to_done": None, "crc": None}

    async def start(ctx, at, n):
        ctx.set(dut.enable, 0)
        ctx.set(dut.resp_valid, 0)
        ctx.set(dut.base, at)
        ctx.set(dut.count, n)  # held from the load on
        ctx.set(restart, 1)
        ctx.set(dut.load, 1)
        await ctx.tick()
        ctx.set(restart, 0)
        ctx.set(dut.load, 0)
        ctx.set(dut.base, rng.getrandbits(addr_bits))  # taken at the load only

    async def tb(ctx):
        if prior is not None:
            prior_base, prior_count = prior
            await start(ctx, prior_base, prior_count)
            ctx.set(dut.req_ready, 1)
            ctx.set(dut.out_ready, 1)
            ctx.set(dut.enable, 1)
            for _ in range(max_cycles):
                if ctx.get(dut.done):
                    break
                take = ctx.get(dut.req_valid)  # answered the next cycle
                await ctx.tick()
                ctx.set(dut.resp_valid, take)
            else:
                raise AssertionError(f"prior read {prior} not done after {max_cycles} cycles")
            assert ctx.get(dut.req_addr) == (prior_base + prior_count) % space
        await start(ctx, base, count)
        pending = []  # (cycle the response is driven, address), in order
        last_resp = -1
        popped = 0
        t = 0
        idle_after_done = 0
        # zlib CRC after each response delivered so far, as (cycle the response was driven,
        # CRC including it), the CRC of nothing from the start; the reader takes a response
        # into its CRC as it arrives, which includes it two cycles later
        crc_after = [(-math.inf, 0)]
        nbytes = (width if pad_to is None else pad_to) // 8
        while t < max_cycles and idle_after_done < tail:
            en = enable(t)
            req_ready = int(rng.random() < p_req_ready)
            out_ready = int(rng.random() < p_out_ready)
            ctx.set(dut.enable, en)
            ctx.set(dut.req_ready, req_ready)
            ctx.set(dut.out_ready, out_ready)
            lagged = [c for when, c in crc_after if when <= t - 2][-1]
            assert ctx.get(dut.crc) == lagged, \
                f"cycle {t}: crc is not that of the words received two cycles ago"
            if pending and pending[0][0] == t:
                _, addr = pending.pop(0)
                word = mem[(addr - base) % space]
                ctx.set(dut.resp_valid, 1)
                ctx.set(dut.resp_data, word)
                crc_after.append((t, zlib.crc32(word.to_bytes(nbytes, "little"),
                                                crc_after[-1][1])))
            else:
                ctx.set(dut.resp_valid, 0)
                ctx.set(dut.resp_data, rng.getrandbits(width))  # garbage when not valid

            req_valid, req_addr = ctx.get(dut.req_valid), ctx.get(dut.req_addr)
            out_valid, out_data, out_last = ctx.get(dut.out_valid), ctx.get(dut.out_data), ctx.get(dut.out_last)
            done = ctx.get(dut.done)

            assert done == (popped == count), f"cycle {t}: done={done} after {popped}/{count} words"
            if done:
                # the engine compares the CRC once done is high: it must be complete by then
                assert ctx.get(dut.crc) == crc_after[-1][1], f"cycle {t}: done before the crc"
            if not en:
                assert not req_valid, f"cycle {t}: request issued with enable low"
            # The next word's address, whether requested this cycle or not.
            n = len(res["addrs"])
            assert req_addr == (base + n) % space, \
                f"cycle {t}: address {req_addr}, expected word {n} at {(base + n) % space}"
            if req_valid and req_ready:
                assert n < count, f"cycle {t}: request {n} beyond count={count}"
                res["addrs"].append(req_addr)
                last_resp = max(t + rng.randint(*latency), last_resp + 1)
                pending.append((last_resp, req_addr))
            if out_valid and out_ready:
                res["outs"].append((out_data, out_last))
                popped += 1
            # Credits: words requested but not yet taken out can never exceed the FIFO depth,
            # or a response would arrive with no room for it.
            assert len(res["addrs"]) - popped <= depth, \
                f"cycle {t}: {len(res['addrs']) - popped} words outstanding, FIFO depth {depth}"

            await ctx.tick()
            t += 1
            if popped == count and not pending:
                if res["cycles_to_done"] is None:
                    res["cycles_to_done"] = t
                idle_after_done += 1
        if expect_done:
            assert ctx.get(dut.done) == 1, f"not done after {t} cycles ({popped}/{count} words out)"
            assert not ctx.get(dut.out_valid), "words left in the FIFO after done"
        res["crc"] = ctx.get(dut.crc)

    sim = Simulator(ResetInserter(restart)(dut))
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return res


def check_result(res, mem, count, width, pad_to=None, *, base=0, addr_bits=None):
    pad_to = width if pad_to is None else pad_to
    space = len(mem) if addr_bits is None else 1 << addr_bits
    assert res["addrs"] == [(base + a) % space for a in range(count)]
    datas = [d for d, _ in res["outs"]]
    assert datas == mem[:count], "every word exactly once, in order"
    lasts = [last for _, last in res["outs"]]
    assert lasts == [int(i == count - 1) for i in range(count)], f"out_last flags {lasts}"
    want_crc = zlib.crc32(b"".join(w.to_bytes(pad_to // 8, "little") for w in mem[:count]))
    assert res["crc"] == want_crc, f"crc {res['crc']:#010x}, expected {want_crc:#010x}"


def words(seed, n, width):
    rng = random.Random(seed)
    return [rng.getrandbits(width) for _ in range(n)]


def test_random_wait_states_latency_backpressure_77_bits():
    # The weight stream layout at 8 lanes: 77-bit words, CRC over 80-bit padded words.
    mem = words(1, 64, 77)
    for seed, (pr, po) in enumerate([(0.6, 0.5), (0.9, 0.2), (0.3, 0.9)]):
        res = run_reader(mem, 45, width=77, addr_bits=6, pad_to=80, seed=seed,
                         p_req_ready=pr, p_out_ready=po)
        check_result(res, mem, 45, 77, 80)


def test_param_width_depth2_full_address_space():
    # 72-bit parameter records; count = 2**addr_bits exercises the widest count, and the
    # shallowest FIFO stresses the credit logic.
    mem = words(2, 16, 72)
    res = run_reader(mem, 16, width=72, addr_bits=4, depth=2, seed=3,
                     p_req_ready=0.7, p_out_ready=0.6)
    check_result(res, mem, 16, 72)


def test_enable_toggling_stops_requests():
    mem = words(3, 32, 77)
    rng = random.Random(4)
    sched = [int(rng.random() < 0.5) for _ in range(2000)]
    res = run_reader(mem, 30, width=77, addr_bits=5, pad_to=80, seed=5,
                     p_req_ready=0.8, p_out_ready=0.8, enable=lambda t: sched[t])
    check_result(res, mem, 30, 77, 80)


def test_enable_low_at_start_issues_nothing():
    mem = words(4, 8, 40)
    res = run_reader(mem, 8, width=40, addr_bits=3, seed=6, enable=lambda t: int(t >= 25))
    check_result(res, mem, 8, 40)
    # nothing can come out before enable rises, so the run takes at least that long
    assert res["cycles_to_done"] > 25 + 8


def test_no_out_ready_fills_fifo_then_stops():
    # With out_ready low, exactly `depth` words are fetched and then requests stop.
    mem = words(5, 20, 77)
    res = run_reader(mem, 20, width=77, addr_bits=5, pad_to=80, seed=7,
                     p_out_ready=0.0, max_cycles=40, expect_done=False)
    # the run never finishes; look at what was requested
    assert res["addrs"] == [0, 1, 2, 3]
    assert res["outs"] == []


def test_full_rate_with_one_cycle_memory():
    # config.py: a depth-4 FIFO covers a 1-cycle memory at full rate (one word per cycle).
    mem = words(6, 48, 77)
    res = run_reader(mem, 48, width=77, addr_bits=6, pad_to=80, seed=8, latency=(1, 1))
    check_result(res, mem, 48, 77, 80)
    assert res["cycles_to_done"] <= 48 + 4, f"{res['cycles_to_done']} cycles for 48 words"


def test_full_rate_needs_latency_plus_three():
    # hw.synth.EngineSynthTop: a memory answering in L cycles keeps one word per cycle with
    # a FIFO of depth L + 3 (the ECP5 wrapper: L = 4, depth 7), and not with one less.
    mem = words(11, 48, 77)
    res = run_reader(mem, 48, width=77, addr_bits=6, pad_to=80, seed=12, depth=7,
                     latency=(4, 4))
    check_result(res, mem, 48, 77, 80)
    assert res["cycles_to_done"] <= 48 + 4 + 3, f"{res['cycles_to_done']} cycles for 48 words"
    short = run_reader(mem, 48, width=77, addr_bits=6, pad_to=80, seed=12, depth=6,
                       latency=(4, 4))
    check_result(short, mem, 48, 77, 80)
    assert short["cycles_to_done"] > res["cycles_to_done"] + 5


def test_count_one_and_zero():
    mem = words(7, 4, 77)
    res = run_reader(mem, 1, width=77, addr_bits=2, pad_to=80, seed=9, p_req_ready=0.5)
    check_result(res, mem, 1, 77, 80)
    res = run_reader(mem, 0, width=77, addr_bits=2, pad_to=80, seed=10)
    assert res["addrs"] == [] and res["outs"] == []
    assert res["crc"] == 0  # zlib.crc32(b"")


def test_base_offsets_every_address_and_wraps_like_the_old_adder():
    # Word k at base + k, modulo the address space (as base + count was truncated), with
    # wait states, a 1-3 cycle memory and back-pressure.
    mem = words(12, 40, 77)
    for seed, base in enumerate((1, 37, 63)):
        res = run_reader(mem, 40, width=77, addr_bits=6, pad_to=80, seed=20 + seed,
                         p_req_ready=0.7, p_out_ready=0.7, base=base)
        check_result(res, mem, 40, 77, 80, base=base, addr_bits=6)


@pytest.mark.parametrize("prior", [(0, 5), (50, 14), (9, 0), (3, 1)])
def test_each_run_starts_at_its_own_base(prior):
    # The address register outlives the restart's reset, and a load in that reset cycle
    # replaces what the run before left (its base + count), whatever it was.
    mem = words(13, 12, 72)
    res = run_reader(mem, 12, width=72, addr_bits=6, seed=30, p_req_ready=0.8,
                     base=21, prior=prior)
    check_result(res, mem, 12, 72, base=21, addr_bits=6)


@pytest.mark.parametrize("prior", [(4, 3), (9, 0)])
def test_count_zero_is_done_at_once_after_any_run(prior):
    # ``done`` is a register the load sets to ``count == 0``: a run of nothing is done in
    # the first cycle after the restart, whether the run before ended done (count 3) or
    # was itself empty; run_reader checks ``done == (popped == count)`` every cycle.
    mem = words(14, 4, 40)
    res = run_reader(mem, 0, width=40, addr_bits=3, seed=31, base=5, prior=prior)
    assert res["addrs"] == [] and res["outs"] == [] and res["cycles_to_done"] == 1


def test_bad_widths_are_refused():
    with pytest.raises(ValueError, match="addr_bits must be an int >= 1, got 0"):
        MemoryReader(width=8, addr_bits=0)
    with pytest.raises(ValueError, match="count_bits must be an int >= 1, got True"):
        MemoryReader(width=8, addr_bits=4, count_bits=True)
