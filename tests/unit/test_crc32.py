"""Crc32 (``hw/crc32.py``) in the Amaranth simulator, against ``zlib.crc32`` and a bitwise LFSR."""

import random
import zlib

from amaranth.sim import Simulator

from hw.crc32 import POLY, Crc32, crc32_step_matrix


def lfsr_step(state: int, data: int, nbits: int) -> int:
    """Reflected CRC-32 register, one data bit at a time, LSB first (no init/final XOR)."""
    for b in range(nbits):
        fb = (state ^ (data >> b)) & 1
        state >>= 1
        if fb:
            state ^= POLY
    return state


def matrix_step(matrix, state: int, data: int) -> int:
    bits = state | (data << 32)
    return sum((bin(mask & bits).count("1") & 1) << k for k, mask in enumerate(matrix))


def padded_bytes(words, pad_to):
    return b"".join(w.to_bytes(pad_to // 8, "little") for w in words)


def test_step_matrix_matches_bitwise_lfsr():
    rng = random.Random(1)
    for width in (1, 3, 8, 32, 72, 77, 80, 150):
        matrix = crc32_step_matrix(width)
        assert len(matrix) == 32
        # no mask may reach past the data bits
        assert all(m >> (32 + width) == 0 for m in matrix)
        for _ in range(40):
            state = rng.getrandbits(32)
            data = rng.getrandbits(width)
            assert matrix_step(matrix, state, data) == lfsr_step(state, data, width), (width, state, data)


def run_crc(width, pad_to, script):
    """Drive ``script``: a list of (clear, en, data); return ``value`` after every edge."""
    dut = Crc32(width=width, pad_to=pad_to)
    seen = []

    async def tb(ctx):
        seen.append(ctx.get(dut.value))  # reset value
        for clear, en, data in script:
            ctx.set(dut.clear, clear)
            ctx.set(dut.en, en)
            ctx.set(dut.data, data)
            await ctx.tick()
            seen.append(ctx.get(dut.value))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return seen


def reference_values(script, pad_to):
    """``zlib.crc32`` of the padded words taken since the last clear, after every edge: a
    word taken (``en``) in cycle ``t`` is in the value from cycle ``t + 2`` on, and a clear
    drops the words taken before it, the one a cycle before included."""
    out = [0]
    words = []
    pending = None  # the word taken in the last cycle, not yet in the value
    for clear, en, data in script:
        if clear:
            words, pending = [], None
        else:
            if pending is not None:
                words.append(pending)
            pending = data if en else None
        out.append(zlib.crc32(padded_bytes(words, pad_to)) & 0xFFFFFFFF)
    return out


def random_script(rng, width, n):
    script = []
    for _ in range(n):
        r = rng.random()
        clear = int(r < 0.08)
        en = int(rng.random() < 0.7)  # clear together with en: clear wins
        script.append((clear, en, rng.getrandbits(width)))
    return script + [(0, 0, rng.getrandbits(width))]  # the last word reaches the value


def test_known_check_value_bytewise():
    # The CRC-32 check value from docs/weight-format.md, one byte per cycle.
    script = [(0, 1, b) for b in b"123456789"] + [(0, 0, 0)]
    got = run_crc(8, None, script)
    assert got[-2] == zlib.crc32(b"12345678"), "the last byte is not in the value yet"
    assert got[-1] == 0xCBF43926


def test_width72_random_words_clear_and_enable():
    rng = random.Random(72)
    script = random_script(rng, 72, 120)
    got = run_crc(72, None, script)
    assert got == reference_values(script, 72)


def test_width77_padded_to_80_random_words_clear_and_enable():
    rng = random.Random(77)
    script = random_script(rng, 77, 120)
    # a long unbroken run too, so the CRC covers many words after one clear
    script += [(1, 0, 0)] + [(0, 1, rng.getrandbits(77)) for _ in range(30)] + [(0, 0, 0)]
    got = run_crc(77, 80, script)
    assert got == reference_values(script, 80)


def test_en_low_holds_and_clear_restarts():
    rng = random.Random(5)
    w = [rng.getrandbits(72) for _ in range(3)]
    script = [(0, 1, w[0]), (0, 0, w[1]), (0, 0, w[2]), (0, 1, w[1]), (0, 0, w[0]),
              (1, 1, w[2]), (0, 1, w[2]), (0, 0, w[0])]
    got = run_crc(72, None, script)
    one = zlib.crc32(padded_bytes(w[:1], 72))
    assert got[0] == got[1] == 0  # ~0xFFFFFFFF: CRC of nothing, w[0] still on its way
    assert got[2] == got[3] == got[4] == one, "en low must hold the CRC whatever data is"
    assert got[5] == zlib.crc32(padded_bytes([w[0], w[1]], 72))
    assert got[6] == 0, "clear must take priority over en and restart"
    assert got[7] == 0 and got[8] == zlib.crc32(padded_bytes([w[2]], 72))


def test_a_word_taken_just_before_a_clear_does_not_leak():
    rng = random.Random(6)
    w = [rng.getrandbits(77) for _ in range(3)]
    # w[1] is taken in the cycle before the clear, still on its way into the state
    script = [(0, 1, w[0]), (0, 1, w[1]), (1, 0, 0), (0, 1, w[2]), (0, 0, 0), (0, 0, 0)]
    got = run_crc(77, 80, script)
    assert got[2] == zlib.crc32(padded_bytes(w[:1], 80))
    assert got[3] == got[4] == 0
    assert got[5] == got[6] == zlib.crc32(padded_bytes(w[2:], 80))
