"""Export: the torch model copied into golden's FloatModel computes the same thing."""

import numpy as np
import pytest
import torch

from golden.model import FAST, SLOW, load_model, quantize_backlog, save_model
from train.arbitration import DeviceCost, GateSchedule
from train.export import calibrate_arbitrator, compute_saving, to_float_model
from train.model import BACKLOG_NORM

#: float32 (torch) against float64 (golden) over a dozen recurrent steps.
TOLERANCE = 1e-4


def _backlog_arbitrator(model):
    """Arbitrator weights that choose slow iff the quantized backlog is 0."""
    f = model.config.feature_dim
    with torch.no_grad():
        for p in (model.weights["arb__hidden"], model.biases["arb__hidden"],
                  model.weights["arb__out"], model.biases["arb__out"]):
            p.zero_()
        model.weights["arb__hidden"][0, f] = BACKLOG_NORM  # hidden 0 = backlog in frames
        model.weights["arb__out"][0, 0] = 1.0  # l_fast = backlog
        model.biases["arb__out"][1] = 0.5  # l_slow = 0.5


def test_round_trip_matches_torch(tiny_model, tmp_path):
    _backlog_arbitrator(tiny_model)
    tiny_model.eval()
    path = tmp_path / "float.npz"
    save_model(to_float_model(tiny_model), path)
    fm = load_model(path)
    for name, t in tiny_model.float_tensors().items():
        assert np.array_equal(fm.tensors[name], t), name

    rng = np.random.default_rng(1)
    feats = rng.integers(-128, 60, (20, 120)).astype(np.float32) * 0.125
    cost = DeviceCost.for_model(tiny_model.config, sparsity=0.0, speed=1.0)
    slow_ms = float(cost.frame_macs(torch.tensor(1.0), torch.tensor(0.0))) * 1000.0
    cost = DeviceCost.for_model(tiny_model.config, sparsity=0.0,
                                speed=slow_ms / (1.5 * cost.frame_shift_ms))
    with torch.no_grad():
        out = tiny_model.encode(torch.from_numpy(feats)[None], torch.tensor([20]),
                                schedule=GateSchedule.evaluation(), cost=cost)
        tokens = torch.tensor([[5, 1, 9, 9]])
        pred = tiny_model.predict(tokens)
        logits = tiny_model.joint(out.enc, pred)[0].numpy()
    branches = out.gate[0].numpy()
    assert set(branches.tolist()) == {0.0, 1.0}  # both branches ran, so state carry-over matters

    state = fm.initial_encoder_state()
    encs = []
    for t, x in enumerate(feats.astype(np.float64)):
        branch = fm.arbitrate(x, quantize_backlog(float(out.backlog[0, t])))
        assert branch == (SLOW if branches[t] == 1.0 else FAST), t
        enc, state = fm.encoder_step(branch, x, state)
        encs.append(enc)
    np.testing.assert_allclose(np.array(encs), out.enc[0].numpy(), atol=TOLERANCE)

    p_state = fm.initial_predictor_state()
    preds = []
    for tok in [0, *tokens[0].tolist()]:
        p, p_state = fm.predictor_step(tok, p_state)
        preds.append(p)
    np.testing.assert_allclose(np.array(preds), pred[0].numpy(), atol=TOLERANCE)
    for t in (0, 7, 19):
        for u in range(len(preds)):
            np.testing.assert_allclose(fm.joint(encs[t], preds[u]), logits[t, u],
                                       atol=TOLERANCE)


def test_torch_greedy_search_is_goldens(tiny_model):
    """train.export.greedy_decode finds what golden's GreedyDecoder finds on the float model."""
    from golden.decoding import GreedyDecoder
    from golden.frontend import FrontendConfig
    from golden.tokens import Tokenizer, default_tokens
    from train.data import Utterances
    from train.export import greedy_decode

    with torch.no_grad():  # a joint that emits: spread the logits, favour tokens over blank
        tiny_model.weights["joint__out"].mul_(8.0)
        tiny_model.biases["joint__out"][0] = -2.0
    rng = np.random.default_rng(2)
    feats = [rng.integers(-128, 60, (15, 120)).astype(np.int8) for _ in range(3)]
    utts = Utterances(features=feats, transcripts=["a", "b", "c"], frontend=FrontendConfig(),
                      tokenizer=Tokenizer(default_tokens()))
    cost = DeviceCost.for_model(tiny_model.config, sparsity=0.0, speed=1e9)  # no backlog
    hyps, fast = greedy_decode(tiny_model, utts, range(3), cost=cost)
    fm = to_float_model(tiny_model)
    emitted = 0
    for k in range(3):
        # Golden's decoder takes integer logits: the float logits at a fine scale.
        dec = GreedyDecoder(fm.predictor_step,
                            lambda e, p: np.round(fm.joint(e, p) * 1e4).astype(np.int64),
                            1e-4, fm.initial_predictor_state())
        state = fm.initial_encoder_state()
        for t, x in enumerate(utts.real_features(k)):
            enc, state = fm.encoder_step(fm.arbitrate(x, 0), x, state)
            dec.step(enc, t)
        assert list(dec.result().best.tokens) == hyps[k]
        emitted += len(hyps[k])
    assert emitted > 5
    assert 0.0 <= fast <= 1.0


def _feature_arbitrator(model):
    """An arbitrator whose ``l_fast - l_slow`` is a feature's value: the fraction of fast
    frames then grows smoothly with the fast-logit offset."""
    with torch.no_grad():
        for p in (model.weights["arb__hidden"], model.biases["arb__hidden"],
                  model.weights["arb__out"], model.biases["arb__out"]):
            p.zero_()
        model.weights["arb__hidden"][0, 0] = 1.0
        model.biases["arb__hidden"][0] = 20.0  # relu stays linear on the features used
        model.weights["arb__out"][0, 0] = 1.0
        model.biases["arb__out"][1] = 20.0


def _saving_of(cost, fast, rate):
    r = torch.tensor(rate)
    arbitrated = float(cost.frame_macs(torch.tensor(1.0 - fast), r))
    return 1.0 - arbitrated / (float(cost.frame_macs(torch.tensor(1.0), r))
                               - cost.macs["arbitrate"])


def test_compute_saving_follows_the_fast_fraction(tiny_model, tiny_utterances):
    utts = tiny_utterances()
    cost = DeviceCost.for_model(tiny_model.config, sparsity=0.5, speed=1e9)
    rate = utts.tokens_per_frame()
    tiny_model.shift_arbitrator(100.0)  # every frame fast
    saving, fast = compute_saving(tiny_model, utts, cost=cost)
    assert fast == 1.0
    assert saving == pytest.approx(_saving_of(cost, 1.0, rate), rel=1e-6)
    assert 0.3 < saving < 1.0
    tiny_model.shift_arbitrator(-200.0)  # every frame slow: only the arbitrator's cost
    saving, fast = compute_saving(tiny_model, utts, cost=cost)
    assert fast == 0.0 and saving < 0.0
    assert saving == pytest.approx(_saving_of(cost, 0.0, rate), rel=1e-6)


def test_calibration_finds_the_smallest_offset_reaching_the_target(tiny_model,
                                                                   tiny_utterances):
    _feature_arbitrator(tiny_model)
    utts = tiny_utterances()
    cost = DeviceCost.for_model(tiny_model.config, sparsity=0.5, speed=1e9)
    before = compute_saving(tiny_model, utts, cost=cost)[0]
    target = before + 0.2
    bias0 = tiny_model.biases["arb__out"].detach().clone()
    point = calibrate_arbitrator(tiny_model, utts, cost=cost, target_saving=target,
                                 max_offset=64.0, iterations=14)
    assert point["offset"] > 0 and point["saving"] >= target
    # The model is shifted in place by exactly the offset, on the fast logit only.
    bias = tiny_model.biases["arb__out"].detach()
    assert float(bias[0]) == pytest.approx(
        float(bias0[0]) + point["offset"], abs=1e-6)
    assert float(bias[1]) == float(bias0[1])
    assert compute_saving(tiny_model, utts, cost=cost)[0] == point["saving"]
    tiny_model.shift_arbitrator(-point["offset"] + point["offset"] * 0.97 - 0.01)
    assert compute_saving(tiny_model, utts, cost=cost)[0] < target  # smaller misses it


def test_calibration_keeps_an_arbitrator_that_already_saves_enough(tiny_model,
                                                                   tiny_utterances):
    utts = tiny_utterances()
    cost = DeviceCost.for_model(tiny_model.config, sparsity=0.5, speed=1e9)
    tiny_model.shift_arbitrator(100.0)
    point = calibrate_arbitrator(tiny_model, utts, cost=cost, target_saving=0.2)
    assert point["offset"] == 0.0 and point["fast_fraction"] == 1.0


def test_calibration_rejects_unreachable_or_bad_targets(tiny_model, tiny_utterances):
    utts = tiny_utterances()
    cost = DeviceCost.for_model(tiny_model.config, sparsity=0.5, speed=1e9)
    with pytest.raises(ValueError, match="out of reach"):
        calibrate_arbitrator(tiny_model, utts, cost=cost, target_saving=0.99)
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="target_saving"):
            calibrate_arbitrator(tiny_model, utts, cost=cost, target_saving=bad)
