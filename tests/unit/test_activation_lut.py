# amaranth: UnusedElaboratable=no
"""ActivationLut against golden.lstm's sigmoid/tanh lookups, on every int16 input."""


import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.lstm import sigmoid_q15, tanh_q15
from hw.activation_lut import LATENCY, SLOPE_REGISTER_LATENCY, ActivationLut
from hw.bram_outreg import ABSORBED, absorb_output_registers
from hw.synth import yosys_netlist


def run_lut(zs, funcs, gaps, *, input_register=True, slope_register=False,
            latency=LATENCY):
    """Feed ``zs`` with ``gaps[k]`` idle cycles before input ``k``; return the results in
    order, each checked to leave exactly ``latency`` cycles after its input."""
    dut = ActivationLut(input_register=input_register, slope_register=slope_register)
    assert dut.latency == latency
    got = []
    sent_at = []  # the cycle each input was presented

    async def tb(ctx):
        pending = list(zip(zs, funcs, gaps))
        cycle, sent = 0, 0
        while len(got) < len(zs):
            if sent < len(zs) and pending[sent][2] == 0:
                z, f, _ = pending[sent]
                ctx.set(dut.in_valid, 1)
                ctx.set(dut.z, int(z))
                ctx.set(dut.func, int(f))
                sent_at.append(cycle)
                sent += 1
            else:
                # Garbage on z and func during a bubble must not reach y.
                ctx.set(dut.in_valid, 0)
                ctx.set(dut.z, (cycle * 7919) % 65536 - 32768)
                ctx.set(dut.func, cycle % 2)
                if sent < len(zs):
                    pending[sent] = (*pending[sent][:2], pending[sent][2] - 1)
            await ctx.tick()
            cycle += 1
            if ctx.get(dut.out_valid):
                assert len(got) < sent, f"result {len(got)} before its input"
                assert cycle - sent_at[len(got)] == latency, (
                    f"result {len(got)}: {cycle - sent_at[len(got)]} cycles after its input")
                got.append(ctx.get(dut.y))
            elif got:  # the LSTM cell takes a waiting t from the held y
                assert ctx.get(dut.y) == got[-1], f"y changed after result {len(got) - 1}"
            assert cycle < 4 * len(zs) + 100, "LUT stopped producing results"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return np.array(got)


def test_every_input_bit_exact():
    z = np.arange(-32768, 32768)
    for func, ref in ((0, sigmoid_q15), (1, tanh_q15)):
        got = run_lut(z, [func] * len(z), [0] * len(z))
        np.testing.assert_array_equal(got, ref(z), err_msg=f"func {func}")


def test_mixed_functions_and_bubbles_keep_order():
    rng = np.random.default_rng(3)
    z = rng.integers(-32768, 32768, 600)
    f = rng.integers(0, 2, 600)
    gaps = rng.integers(0, 3, 600) * (rng.random(600) < 0.3)
    want = np.where(f == 0, sigmoid_q15(z), tanh_q15(z))
    np.testing.assert_array_equal(run_lut(z, f, gaps), want)


def test_y_holds_each_result_until_the_next():
    """With gaps longer than the pipeline between inputs, ``y`` keeps each result
    (checked every idle cycle by ``run_lut``) while the bubbles carry garbage."""
    rng = np.random.default_rng(8)
    z = rng.integers(-32768, 32768, 40)
    gaps = rng.choice([0, 1, 4, 5, 9], 40)
    want = tanh_q15(z)
    assert len(set(want.tolist())) > 30
    np.testing.assert_array_equal(run_lut(z, [1] * 40, gaps), want)


@pytest.mark.parametrize("input_register, slope_register",
                         ((False, False), (False, True), (True, True)))
def test_other_stages_same_results(input_register, slope_register):
    """Without the input register the multiply and the add take a stage each, at the same
    latency; with ``slope_register`` (the LSTM cell's lookup) the entry is registered
    twice, ``SLOPE_REGISTER_LATENCY``: every input of both functions, then a mixed stream
    with bubbles (``y`` held)."""
    assert SLOPE_REGISTER_LATENCY == LATENCY + 1
    options = dict(input_register=input_register, slope_register=slope_register,
                   latency=SLOPE_REGISTER_LATENCY if slope_register else LATENCY)
    z = np.arange(-32768, 32768)
    for func, ref in ((0, sigmoid_q15), (1, tanh_q15)):
        got = run_lut(z, [func] * len(z), [0] * len(z), **options)
        np.testing.assert_array_equal(got, ref(z), err_msg=f"func {func}")
    rng = np.random.default_rng(5)
    z = rng.integers(-32768, 32768, 300)
    f = rng.integers(0, 2, 300)
    gaps = rng.choice([0, 0, 1, 3, 4, 6, 7], 300)
    want = np.where(f == 0, sigmoid_q15(z), tanh_q15(z))
    np.testing.assert_array_equal(run_lut(z, f, gaps, **options), want)


@pytest.mark.parametrize("name", ("input_register", "slope_register"))
def test_options_must_be_bools(name):
    with pytest.raises(TypeError, match=f"{name} must be a bool, got 0"):
        ActivationLut(**{name: 0})


@pytest.mark.parametrize("input_register, slope_register",
                         ((True, False), (False, False), (False, True)))
def test_table_reads_move_into_the_block_rams(input_register, slope_register, tmp_path):
    """Through Yosys's ``synth_ecp5`` (as ``hw.synth``), each ROM's read data is captured
    plainly (one reset-less register, no other load), 18-bit ports (a 33-bit ROM word was
    a 36-bit one): ``hw.bram_outreg`` moves the value's capture into its DP16KD and keeps
    the slope's, the multiplier's operand, in the fabric by its ``no_outreg`` attribute
    (which therefore survives Yosys); with ``slope_register`` the slope's first capture
    moves into its DP16KD too, the second one being the multiplier's operand."""
    netlist = yosys_netlist(
        ActivationLut(input_register=input_register, slope_register=slope_register), tmp_path)
    rams = absorb_output_registers(netlist)["rams"]
    slope = ABSORBED if slope_register else "register marked no_outreg (kept in the fabric)"
    assert rams == {"value_rom.0.0": {"A": ABSORBED, "B": "no read data used"},
                    "slope_rom.0.0": {"A": slope, "B": "no read data used"}}
