"""Feature augmentation (mel warp, SpecAugment masks) and single-branch training batches."""

import numpy as np
import pytest
import torch

from train.arbitration import DeviceCost, GateSchedule
from train.augment import Augment, extend_tails
from train.trainer import TrainConfig, train_step

SCALE = 0.125
N_MELS = 40


def _feats(t_max=40, lengths=(40, 33, 21), seed=0):
    """Features on the int8 grid, a smooth ramp over the mel bands, zero padded."""
    rng = np.random.default_rng(seed)
    bsz = len(lengths)
    ramp = np.linspace(-8.0, 8.0, N_MELS)
    x = np.tile(ramp, (bsz, t_max, 3)) + rng.integers(-2, 3, (bsz, t_max, 120)) * SCALE
    x = np.round(x / SCALE) * SCALE
    lengths = torch.tensor(lengths)
    x[np.arange(t_max)[None, :] >= lengths.numpy()[:, None]] = 0.0
    return torch.tensor(x, dtype=torch.float32), lengths


def _run(aug, feats, lengths, fill, seed=0):
    return aug(feats, lengths, n_mels=N_MELS, fill=fill, scale=SCALE,
               generator=torch.Generator().manual_seed(seed))


def test_no_augmentation_is_the_identity_on_grid_features():
    feats, lengths = _feats()
    out = _run(Augment(warp=0.0, freq_masks=0, time_masks=0), feats, lengths,
               torch.zeros(120))
    assert torch.equal(out, feats)


def test_output_stays_on_the_int8_grid_and_padding_stays_zero():
    feats, lengths = _feats()
    out = _run(Augment(warp=0.2, freq_masks=2, time_masks=2), feats, lengths,
               torch.full((120,), 0.3))
    q = out / SCALE
    assert torch.equal(q, torch.round(q)) and q.min() >= -128 and q.max() <= 127
    for b, n in enumerate(lengths.tolist()):
        assert torch.all(out[b, n:] == 0)
    assert not torch.equal(out, feats)


def test_warp_stretches_the_mel_axis_the_same_in_every_stacked_copy():
    feats, lengths = _feats()
    out = _run(Augment(warp=0.2, freq_masks=0, time_masks=0), feats, lengths,
               torch.zeros(120))
    x = out.reshape(3, -1, 3, N_MELS)
    for b, n in enumerate(lengths.tolist()):
        # Each utterance is warped by one factor: the three copies see the same bands moved.
        mean_in = feats.reshape(3, -1, 3, N_MELS)[b, :n].mean((0, 1))
        mean_out = x[b, :n].mean((0, 1))
        assert torch.allclose(x[b, :n, 0].mean(0), x[b, :n, 1].mean(0), atol=0.5)
        # The ramp's slope is scaled by the warp factor (0.8 .. 1.2), so the top band moves.
        slope = float(mean_out[30] - mean_out[10]) / float(mean_in[30] - mean_in[10])
        assert 0.75 <= slope <= 1.25
    slopes = {round(float((x[b, 0, 0, 30] - x[b, 0, 0, 10]) / 8.0), 2) for b in range(3)}
    assert len(slopes) > 1  # factors differ between utterances


def test_masks_set_whole_band_and_frame_runs_to_the_fill_value():
    feats, lengths = _feats(t_max=60, lengths=(60, 60, 60))
    fill = torch.full((120,), 5.0)  # a value the ramp features never take exactly per band
    aug = Augment(warp=0.0, freq_masks=2, freq_width=5, time_masks=2, time_width=3)
    seen_band = seen_frame = False
    for seed in range(10):
        out = _run(aug, feats, lengths, fill, seed=seed).reshape(3, 60, 3, N_MELS)
        hit = out == 5.0
        band = hit.all(1).all(1)  # [B, M]: masked over all frames and copies
        frame = hit.all(3).all(2)  # [B, T]: masked over all bands and copies
        assert int(band.sum(1).max()) <= 2 * 5
        assert int(frame.sum(1).max()) <= 2 * 3
        seen_band |= bool(band.any())
        seen_frame |= bool(frame.any())
        changed = out != feats.reshape(3, 60, 3, N_MELS)
        assert torch.equal(changed & ~hit, torch.zeros_like(changed))
    assert seen_band and seen_frame


def test_augmentation_repeats_for_a_seed():
    feats, lengths = _feats()
    aug = Augment(warp=0.1, freq_masks=2, time_masks=2)
    a = _run(aug, feats, lengths, torch.zeros(120), seed=3)
    b = _run(aug, feats, lengths, torch.zeros(120), seed=3)
    c = _run(aug, feats, lengths, torch.zeros(120), seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("kwargs, message", [
    ({"warp": 0.5}, "warp"), ({"warp": -0.1}, "warp"), ({"freq_masks": -1}, "freq_masks"),
    ({"time_width": 1.5}, "time_width"), ({"time_masks": True}, "time_masks")])
def test_bad_augment_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Augment(**kwargs)


def test_train_config_validates_augmentation_and_forcing():
    assert TrainConfig().augment() is None
    assert TrainConfig(freq_masks=2).augment() == Augment(warp=0.0, freq_masks=2, time_masks=0)
    with pytest.raises(ValueError, match="warp"):
        TrainConfig(warp=0.7)
    with pytest.raises(ValueError, match="force_fraction"):
        TrainConfig(force_fraction=1.5)


def test_forced_batches_send_every_frame_to_one_branch(tiny_model, tiny_utterances):
    utts = tiny_utterances()
    batch = utts.batch(range(len(utts)))
    cost = DeviceCost.for_model(tiny_model.config, sparsity=0.5, speed=2e4)
    fast = []
    for seed in range(24):
        res = train_step(tiny_model, batch, config=TrainConfig(force_fraction=1.0), cost=cost,
                         schedule=GateSchedule.annealed(0.3), tokens_per_frame=0.5,
                         generator=torch.Generator().manual_seed(seed))
        fast.append(round(float(res["fast"]), 6))
        assert float(res["amortization"]) >= 0.0
    assert set(fast) == {0.0, 1.0}  # every batch all slow or all fast, both happen
    mixed = train_step(tiny_model, batch, config=TrainConfig(), cost=cost,
                       schedule=GateSchedule.annealed(0.3), tokens_per_frame=0.5,
                       generator=torch.Generator().manual_seed(0))
    assert 0.0 < float(mixed["fast"]) < 1.0


def test_a_step_with_augmentation_has_gradients(tiny_model, tiny_utterances):
    utts = tiny_utterances()
    batch = utts.batch(range(len(utts)))
    cost = DeviceCost.for_model(tiny_model.config, sparsity=0.5, speed=2e4)
    cfg = TrainConfig(warp=0.1, freq_masks=2, time_masks=2)
    res = train_step(tiny_model, batch, config=cfg, cost=cost,
                     schedule=GateSchedule.annealed(0.3), tokens_per_frame=0.5,
                     generator=torch.Generator().manual_seed(0))
    res["loss"].backward()
    grads = [p.grad for p in tiny_model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert np.isfinite(float(res["rnnt"]))


def test_tails_repeat_the_last_frames_mirrored_and_keep_the_utterance():
    feats = torch.arange(2 * 6 * 2, dtype=torch.float32).reshape(2, 6, 2)
    feats[1, 4:] = 0.0  # utterance 1 has 4 frames
    lengths = torch.tensor([6, 4])
    gen = torch.Generator().manual_seed(0)
    out, new = extend_tails(feats, lengths, frames=9, source=3, generator=gen)
    assert torch.all(new >= lengths) and torch.all(new <= lengths + 9)
    assert out.shape == (2, int(new.max()), 2)
    for b in range(2):
        n, m = int(lengths[b]), int(new[b])
        assert torch.equal(out[b, :n], feats[b, :n])
        assert torch.all(out[b, m:] == 0)
        # Frames n-1, n-2, n-3, then n-3, n-2, n-1, n-1, ... (reflected, period 6).
        order = [n - 1, n - 2, n - 3, n - 3, n - 2, n - 1] * 2
        for j in range(m - n):
            assert torch.equal(out[b, n + j], feats[b, order[j]])


def test_tails_of_zero_frames_change_nothing_and_bad_settings_are_rejected():
    feats, lengths = _feats()
    out, new = extend_tails(feats, lengths, frames=0)
    assert torch.equal(out[:, :feats.shape[1]], feats) and torch.equal(new, lengths)
    with pytest.raises(ValueError, match="frames"):
        extend_tails(feats, lengths, frames=-1)
    with pytest.raises(ValueError, match="source"):
        extend_tails(feats, lengths, frames=3, source=0)
    with pytest.raises(ValueError, match="tail_frames"):
        TrainConfig(tail_frames=-2)


def test_a_step_with_tails_trains_on_the_longer_utterances(tiny_model, tiny_utterances):
    utts = tiny_utterances()
    batch = utts.batch(range(len(utts)))
    cost = DeviceCost.for_model(tiny_model.config, sparsity=0.5, speed=2e4)
    res = train_step(tiny_model, batch, config=TrainConfig(tail_frames=20), cost=cost,
                     schedule=GateSchedule.annealed(0.3), tokens_per_frame=0.5,
                     generator=torch.Generator().manual_seed(0))
    res["loss"].backward()
    assert np.isfinite(float(res["rnnt"])) and np.isfinite(float(res["ctc"]))
    plain = train_step(tiny_model, batch, config=TrainConfig(), cost=cost,
                       schedule=GateSchedule.annealed(0.3), tokens_per_frame=0.5,
                       generator=torch.Generator().manual_seed(0))
    assert float(plain["rnnt"]) != float(res["rnnt"])  # the tails were part of the loss
