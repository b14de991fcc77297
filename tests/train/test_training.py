"""Training pieces: a few steps learn, the arbitrator's gate and penalties, QAT, pruning."""

import numpy as np
import pytest
import torch

from golden.quantize import prune_magnitude, quantize_weights
from train.arbitration import (
    DeviceCost,
    GateSchedule,
    amortization_penalty,
    compute_penalty,
    gate,
)
from train.compress import cubic_sparsity
from train.trainer import TrainConfig, train_step


def test_a_few_steps_reduce_the_loss(tiny_model, tiny_utterances):
    utts = tiny_utterances()
    batch = utts.batch(range(len(utts)))
    cfg = TrainConfig()
    cost = DeviceCost.for_model(tiny_model.config, sparsity=0.5, speed=2e4)
    opt = torch.optim.Adam(tiny_model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for step in range(25):
        res = train_step(tiny_model, batch, config=cfg, cost=cost,
                         schedule=GateSchedule.annealed(step / 25), tokens_per_frame=0.5,
                         generator=gen)
        opt.zero_grad()
        res["loss"].backward()
        opt.step()
        losses.append(float(res["rnnt"]))
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3])


def test_training_with_quantization_and_pruning_keeps_masks(tiny_model, tiny_utterances):
    utts = tiny_utterances()
    batch = utts.batch(range(len(utts)))
    comp = tiny_model.compression
    comp.enable_quantization()
    comp.prune({n: tiny_model.effective(n)[0] for n in tiny_model.specs}, 0.5)
    opt = torch.optim.Adam(tiny_model.parameters(), lr=1e-2)
    cost = DeviceCost.for_model(tiny_model.config, sparsity=0.5, speed=2e4)
    for _ in range(3):
        res = train_step(tiny_model, batch, config=TrainConfig(), cost=cost,
                         schedule=GateSchedule.annealed(0.9), tokens_per_frame=0.5)
        opt.zero_grad()
        res["loss"].backward()
        opt.step()
    for name, spec in tiny_model.specs.items():
        w = tiny_model.effective(name)[0]
        assert int((w == 0).sum()) == round(0.5 * spec.rows * spec.cols), name


def test_fake_quantization_is_golden_int4_rounding(tiny_model):
    comp = tiny_model.compression
    comp.enable_quantization()
    for name in ("fast.lstm", "slow.lstm2", "joint.hidden", "arb.hidden", "joint.out"):
        w = tiny_model.effective(name)[0].detach()
        s_in = comp.input_scales(name).double().numpy()
        q, row_scale, _ = quantize_weights(w.double().numpy() * s_in, "int4")
        golden = q * row_scale[:, None] / s_in
        ours = comp.fake_quant(name, w).double().numpy()
        np.testing.assert_allclose(ours, golden, rtol=1e-5, atol=1e-7, err_msg=name)
        assert len(np.unique(q)) <= 15


def test_fake_quantization_passes_gradients_straight_through(tiny_model):
    comp = tiny_model.compression
    comp.enable_quantization()
    w = torch.randn(32, 128, requires_grad=True)  # fast.lstm: 4 x 8 rows, 120 + 8 columns
    out = comp.fake_quant("fast.lstm", w)
    assert not torch.equal(out, w)
    (out * 3.0).sum().backward()
    assert torch.all(w.grad == 3.0)


def test_pruning_matches_golden_magnitude_order(tiny_model):
    comp = tiny_model.compression
    weights = {n: tiny_model.effective(n)[0].detach() for n in tiny_model.specs}
    comp.prune(weights, 0.3)
    for name in ("slow.lstm1", "arb.hidden"):
        s_in = comp.input_scales(name).double().numpy()
        a = weights[name].double().numpy() * s_in
        expected = prune_magnitude(a, 0.3) != 0
        assert np.array_equal(comp.mask(name).numpy() != 0, expected), name
    assert comp.sparsity() == pytest.approx(0.3, abs=0.01)


def test_cubic_sparsity_schedule():
    kw = dict(target=0.5, start=100, end=200)
    assert cubic_sparsity(50, **kw) == 0.0
    assert cubic_sparsity(200, **kw) == 0.5
    assert cubic_sparsity(500, **kw) == 0.5
    assert cubic_sparsity(150, **kw) == pytest.approx(0.5 * (1 - 0.5 ** 3))
    steps = [cubic_sparsity(s, **kw) for s in range(100, 201)]
    assert np.all(np.diff(steps) >= 0)
    with pytest.raises(ValueError, match="end after"):
        cubic_sparsity(0, target=0.5, start=10, end=10)


def test_gate_anneals_to_binary_and_evaluates_like_golden():
    delta = torch.linspace(-3, 3, 601)
    early = GateSchedule.annealed(0.0)
    late = GateSchedule.annealed(0.7)
    g_early, _ = gate(delta, early, torch.Generator().manual_seed(0))
    g_late, _ = gate(delta, late, torch.Generator().manual_seed(0))
    binary = lambda g: float(((g < 0.01) | (g > 0.99)).float().mean())  # noqa: E731
    assert binary(g_late) > binary(g_early) + 0.3
    assert GateSchedule.annealed(0.8).hard and not late.hard
    with torch.no_grad():
        g_eval, _ = gate(torch.tensor([-1.0, 0.0, 1e-6, 2.0]), GateSchedule.evaluation())
    assert g_eval.tolist() == [0.0, 0.0, 1.0, 1.0]  # slow iff l_slow > l_fast, exactly
    g_hard, _ = gate(delta.requires_grad_(), GateSchedule.annealed(0.9))
    assert torch.all((g_hard.detach() - g_hard.detach().round()).abs() < 1e-6)
    g_hard.sum().backward()
    assert delta.grad.abs().sum() > 0  # straight-through gradient


def test_penalties(tiny_model):
    cost = DeviceCost.for_model(tiny_model.config, sparsity=0.0, speed=1e6)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    slow = torch.ones(1, 4)
    fast = torch.zeros(1, 4)
    assert float(compute_penalty(slow, mask, cost)) == pytest.approx(cost.fast_saving)
    assert float(compute_penalty(fast, mask, cost)) == 0.0
    backlog = torch.tensor([[0.0, 1.0, 5.0, 0.0]])
    # Fast frames cost (1 - backlog / 2) while the backlog is under 2 frames.
    assert float(amortization_penalty(fast, backlog, mask, free_backlog=2.0)) == \
        pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert float(amortization_penalty(slow, backlog, mask, free_backlog=2.0)) == 0.0


def test_always_slow_builds_a_backlog_always_fast_does_not(tiny_model, tiny_utterances):
    utts = tiny_utterances(n=1)
    batch = utts.batch([0])
    cost = DeviceCost.for_model(tiny_model.config, sparsity=0.5, speed=1.0)
    slow_ms = float(cost.frame_macs(torch.tensor(1.0), torch.tensor(0.0))) * 1000.0
    fast_ms = float(cost.frame_macs(torch.tensor(0.0), torch.tensor(0.0))) * 1000.0
    assert fast_ms < slow_ms / 1.5
    speed = slow_ms / (1.5 * cost.frame_shift_ms)  # slow: 1.5x real time; fast: under 1x
    cost = DeviceCost.for_model(tiny_model.config, sparsity=0.5, speed=speed)
    with torch.no_grad():
        tiny_model.eval()
        slow = tiny_model.encode(batch.feats, batch.lengths,
                                 schedule=GateSchedule(force=1), cost=cost)
        fast = tiny_model.encode(batch.feats, batch.lengths,
                                 schedule=GateSchedule(force=0), cost=cost)
    # Half a frame more each frame; near the end the backlog is capped by the audio left.
    b = slow.backlog[0].numpy()
    np.testing.assert_allclose(b[:6], 0.5 * np.arange(6), atol=1e-4)
    assert b[-1] == 0.0  # the last frame is ready only when the audio ends
    assert float(fast.backlog.max()) == 0.0


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="prune_end"):
        TrainConfig(prune_start=0.8, prune_end=0.5)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="temperature"):
        GateSchedule(temperature=0.0)
    with pytest.raises(ValueError, match="free_backlog"):
        amortization_penalty(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1),
                             free_backlog=0.0)
