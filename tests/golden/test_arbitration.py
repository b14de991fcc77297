"""Arbitration with a backlog: the cost model, the device queue, and a real arbitrator
network whose decision is driven by the backlog."""

import dataclasses
import json

import numpy as np
import pytest

from golden.arbitration import (
    DEFAULT_MACS_PER_SECOND,
    BacklogScheduler,
    CostModel,
)
from golden.backend import STEPS, Backend, GoldenBackend, MacCost
from golden.frontend import FrontendConfig
from golden.model import (
    FAST,
    SLOW,
    FloatModel,
    ModelConfig,
    quantize_backlog,
    random_float_model,
)
from golden.pipeline import Recognizer
from golden.quantize import quantize_model
from golden.tokens import default_tokens

VOCAB = tuple(default_tokens())


class StubBackend:
    """Implements the Backend protocol with fixed step costs and a feature-driven choice.

    ``arbitrate`` returns ``feat[0]`` when it is a branch id, else applies ``policy`` to
    the backlog step, so tests can script decisions exactly.
    """

    logit_scale = 0.1
    vocabulary = VOCAB
    COSTS = {"arbitrate": 1, "encoder_fast": 9, "encoder_slow": 39, "predictor": 5, "joint": 1}

    def __init__(self, policy=lambda q: SLOW):
        self.policy = policy
        self.seen_backlogs = []

    def arbitrate(self, feat, backlog_q):
        self.seen_backlogs.append(backlog_q)
        return int(feat[0]) if feat[0] in (FAST, SLOW) else self.policy(backlog_q)

    def encoder_step(self, branch, feat, state):
        return np.zeros(2, np.int8), state

    def predictor_step(self, token, state):
        return np.zeros(2, np.int8), state

    predictor = predictor_step

    def joint(self, enc, pred):
        return np.zeros(len(VOCAB), np.int8)

    def initial_encoder_state(self):
        return 0

    def initial_predictor_state(self):
        return 0

    def step_cost(self, step):
        return MacCost(self.COSTS[step] + 100, self.COSTS[step])


# 1000 units/s: one unit is one ms, so the timelines below are easy to check by hand.
UNIT_MS = CostModel(speed=1000.0)


def feat(branch):
    return np.array([branch, 0], np.int8)


def run(backend, branches, *, shift=30.0, audio_end=None, calls=None, cost=UNIT_MS):
    """Frames ready every ``shift`` ms (frame t at ``(t+1) * shift``), audio ended."""
    s = BacklogScheduler(backend, cost, shift)
    n = len(branches)
    end = n * shift if audio_end is None else audio_end
    for t, b in enumerate(branches):
        ready = min((t + 1) * shift, end)
        d = s.decide(t, feat(b), ready, end)
        p, j = calls[t] if calls else (0, 0)
        s.complete(d, p, j)
    return s.report(end)


def test_stub_satisfies_protocol():
    assert isinstance(StubBackend(), Backend)


# ------------------------------------------------------------------ cost model


@pytest.mark.parametrize("kw, match", [
    (dict(unit="flops"), "unit"),
    (dict(speed=0), "speed"),
    (dict(speed=float("nan")), "speed"),
    (dict(speed=True), "speed"),
    (dict(mac_count="sparse"), "mac_count"),
    (dict(step_cycles={s: 1 for s in STEPS}), "only used with unit='cycles'"),
    (dict(unit="cycles"), "needs step_cycles"),
    (dict(unit="cycles", step_cycles={"joint": 5}), "differ"),
    (dict(unit="cycles", step_cycles={**{s: 1 for s in STEPS}, "joint": 0}), "positive int"),
    (dict(unit="cycles", step_cycles={**{s: 1 for s in STEPS}, "joint": 2.5}),
     "positive int"),
])
def test_cost_model_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        CostModel(**kw)


def test_cost_model_defaults_and_frozen():
    c = CostModel()
    assert (c.unit, c.speed, c.mac_count, c.step_cycles) == (
        "macs", DEFAULT_MACS_PER_SECOND, "nonzero", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.speed = 1.0
    cyc = CostModel(unit="cycles", speed=50e6, step_cycles={s: 10 for s in STEPS})
    with pytest.raises(TypeError):
        cyc.step_cycles["joint"] = 3  # read-only copy
    assert cyc.milliseconds(50e3) == 1.0


def test_step_costs_macs_and_cycles():
    b = StubBackend()
    assert CostModel().step_costs(b) == {s: float(v) for s, v in StubBackend.COSTS.items()}
    assert CostModel(mac_count="dense").step_costs(b) == {
        s: float(v + 100) for s, v in StubBackend.COSTS.items()}
    cycles = {s: 7 * (i + 1) for i, s in enumerate(STEPS)}
    assert CostModel(unit="cycles", step_cycles=cycles).step_costs(b) == {
        s: float(v) for s, v in cycles.items()}


def test_default_speed_makes_the_arbitrator_matter():
    """On the default model, a slow frame alone is slower than real time and a fast frame
    (with the predictor and joint work of an emitting frame) is faster."""
    config = ModelConfig(vocabulary=VOCAB)
    fe = FrontendConfig()
    rng = np.random.default_rng(0)
    qm = quantize_model(random_float_model(config), [rng.standard_normal((4, 120))])
    c = CostModel().step_costs(GoldenBackend(qm))
    ms = CostModel().milliseconds
    assert ms(c["arbitrate"] + c["encoder_slow"] + c["joint"]) > 1.3 * fe.frame_shift_ms
    assert ms(c["arbitrate"] + c["encoder_fast"] + c["predictor"] + 2 * c["joint"]) < \
        0.5 * fe.frame_shift_ms


# ------------------------------------------------------------------ the queue


def test_backlog_grows_when_compute_exceeds_real_time():
    # Slow frames cost 40 ms every 30 ms: each frame starts 10 ms later than the last.
    r = run(StubBackend(), [SLOW] * 5)
    assert [f.ready_ms for f in r.frames] == [30, 60, 90, 120, 150]
    assert [f.start_ms for f in r.frames] == [30, 70, 110, 150, 190]
    assert [f.finish_ms for f in r.frames] == [70, 110, 150, 190, 230]
    assert list(r.backlog_ms) == [0, 10, 20, 30, 0]  # audio ended at 150 ms: see below
    assert r.backlog_frames[1] == pytest.approx(1 / 3)
    assert [f.backlog_q for f in r.frames] == [0, 0, 1, 1, 0]
    assert r.latency_ms == 230 - 150


def test_backlog_counts_only_audio_received():
    # With the audio still arriving, the last frame waits 40 ms behind 40 ms of new audio;
    # once the audio has ended at 150 ms nothing arrives behind it.
    s = BacklogScheduler(StubBackend(), UNIT_MS, 30.0)
    for t in range(5):
        d = s.decide(t, feat(SLOW), 30.0 * (t + 1), 1000.0)
        s.complete(d, 0, 0)
    assert list(s.report(1000.0).backlog_ms) == [0, 10, 20, 30, 40]


def test_backlog_stays_zero_when_the_device_keeps_up():
    r = run(StubBackend(), [FAST] * 6)
    assert set(r.backlog_ms) == {0.0}
    assert [f.start_ms for f in r.frames] == [30, 60, 90, 120, 150, 180]
    assert r.latency_ms == 10.0  # the last frame's own compute


def test_backlog_drains_after_slow_frames():
    r = run(StubBackend(), [SLOW] * 6 + [FAST] * 6, audio_end=10_000.0)
    b = list(r.backlog_ms)
    assert b[:7] == [0, 10, 20, 30, 40, 50, 60]
    # Each fast frame (10 ms) gains 20 ms on real time until the device is idle again.
    assert b[7:] == [40, 20, 0, 0, 0]
    assert r.branch_frames == {"fast": 6, "slow": 6}
    assert r.decisions == (SLOW,) * 6 + (FAST,) * 6


def test_frame_cost_includes_decoder_work():
    r = run(StubBackend(), [FAST, SLOW], calls=[(2, 3), (0, 1)])
    assert [f.cost for f in r.frames] == [1 + 9 + 2 * 5 + 3, 1 + 39 + 1]
    assert r.calls == {"arbitrate": 2, "encoder_fast": 1, "encoder_slow": 1,
                       "predictor": 2, "joint": 4}
    assert r.by_step == {"arbitrate": 2.0, "encoder_fast": 9.0, "encoder_slow": 39.0,
                         "predictor": 10.0, "joint": 4.0}
    assert r.total == 64.0 == sum(r.by_step.values())
    assert r.seconds == pytest.approx(0.064)
    assert r.load == pytest.approx(64 / 60)
    # frame 0: 30 -> 53; frame 1 ready at 60 -> 101; audio ended at 60 ms.
    assert r.latency_ms == pytest.approx(41.0)


def test_cycles_cost_model_timeline():
    cycles = {"arbitrate": 100, "encoder_fast": 900, "encoder_slow": 3900, "predictor": 1,
              "joint": 1}
    r = run(StubBackend(), [SLOW, SLOW], cost=CostModel(unit="cycles", speed=100e3,
                                                        step_cycles=cycles))
    assert [f.finish_ms for f in r.frames] == [70.0, 110.0]
    d = r.to_dict()
    assert d["unit"] == "cycles" and d["mac_count"] is None and d["total"] == 8000


def test_hand_made_latency_when_device_is_idle_at_the_end():
    # A long pause lets the device catch up: latency is only the last frame's compute.
    s = BacklogScheduler(StubBackend(), UNIT_MS, 30.0)
    for t, ready in enumerate([30.0, 60.0, 500.0]):
        s.complete(s.decide(t, feat(SLOW), ready, 500.0), 1, 2)
    r = s.report(500.0)
    assert [f.start_ms for f in r.frames] == [30.0, 77.0, 500.0]
    assert r.latency_ms == 47.0
    assert s.report(500.0).to_dict()["latency_ms"] == 47.0
    assert BacklogScheduler(StubBackend(), UNIT_MS, 30.0).report(0.0).latency_ms == 0.0


def test_can_decide_waits_for_the_audio_that_fixes_the_backlog():
    s = BacklogScheduler(StubBackend(), UNIT_MS, 30.0)
    s.complete(s.decide(0, feat(SLOW), 30.0, 30.0), 0, 0)  # busy until 70 ms
    assert not s.can_decide(60.0, heard_ms=65.0, ended=False)
    assert s.can_decide(60.0, heard_ms=70.0, ended=False)
    assert s.can_decide(60.0, heard_ms=65.0, ended=True)
    assert s.start_ms(60.0) == 70.0 and s.free_ms == 70.0


def test_scheduler_misuse_is_rejected():
    s = BacklogScheduler(StubBackend(), UNIT_MS, 30.0)
    with pytest.raises(ValueError, match="in order"):
        s.decide(1, feat(SLOW), 30.0, 30.0)
    with pytest.raises(ValueError, match="ready_ms <= heard_ms"):
        s.decide(0, feat(SLOW), 40.0, 30.0)
    d = s.decide(0, feat(SLOW), 30.0, 30.0)
    with pytest.raises(RuntimeError, match="not completed"):
        s.decide(1, feat(SLOW), 60.0, 60.0)
    with pytest.raises(ValueError, match="predictor_calls"):
        s.complete(d, -1, 0)
    s.complete(d, 0, 0)
    with pytest.raises(RuntimeError, match="follow decide"):
        s.complete(d, 0, 0)
    with pytest.raises(ValueError, match="before frame"):
        s.decide(1, feat(SLOW), 20.0, 60.0)
    bad = StubBackend(policy=lambda q: 7)
    with pytest.raises(ValueError, match="arbitrate returned 7"):
        BacklogScheduler(bad, UNIT_MS, 30.0).decide(0, np.array([9, 0], np.int8), 0.0, 0.0)
    with pytest.raises(TypeError, match="CostModel"):
        BacklogScheduler(bad, {"speed": 1}, 30.0)


def test_report_json_round_trip():
    d = run(StubBackend(), [SLOW, FAST, SLOW]).to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert set(d) == {"unit", "mac_count", "speed", "step_costs", "calls", "by_step", "total",
                      "seconds", "load", "audio_ms", "frame_shift_ms", "branch_frames",
                      "latency_ms", "backlog", "frames"}
    assert set(d["backlog"]) == {"ms", "frames", "quantized", "max_ms"}
    assert len(d["frames"]) == 3 and d["frames"][1]["branch"] == FAST


# ------------------------------------------------------ a backlog-driven arbitrator

SMALL = dict(vocabulary=VOCAB, fast_hidden=8, slow_hidden=32, enc_dim=8, arbitrator_hidden=4,
             pred_embed=4, pred_hidden=8, joint_dim=8)


@pytest.fixture(scope="module")
def backlog_model():
    """A quantized model whose arbitrator reads only the backlog: hidden unit 0 is
    ``relu(backlog / 16)``, the fast logit is that unit and the slow logit a constant 1,
    so it runs slow while the backlog is below ~16 frames and fast above."""
    fe = FrontendConfig(n_mels=8)
    config = ModelConfig(feature_dim=fe.feature_dim, frontend=fe.to_dict(), **SMALL)
    t = {k: v.astype(np.float64) for k, v in random_float_model(config, seed=4).tensors.items()}
    t["arb.hidden.weight"][:] = 0.0
    t["arb.hidden.bias"][:] = 0.0
    t["arb.hidden.weight"][0, -1] = 1.0 / 16.0
    t["arb.out.weight"][:] = 0.0
    t["arb.out.weight"][FAST, 0] = 1.0
    t["arb.out.bias"][:] = (0.0, 1.0)
    fm = FloatModel(config, {k: v.astype(np.float32) for k, v in t.items()})
    rng = np.random.default_rng(5)
    feats = rng.integers(-128, 128, (30, fe.feature_dim)) * fe.feature_scale
    return quantize_model(fm, [feats], feature_scale=fe.feature_scale)


def test_arbitrator_network_flips_to_fast_as_the_backlog_grows(backlog_model):
    b = GoldenBackend(backlog_model)
    rng = np.random.default_rng(6)
    for feat_q in rng.integers(-128, 128, (5, backlog_model.config.feature_dim)):
        feat_q = feat_q.astype(np.int8)
        choice = [b.arbitrate(feat_q, q) for q in range(128)]
        threshold = choice.index(FAST)
        assert 12 <= threshold <= 20
        assert choice == [SLOW] * threshold + [FAST] * (128 - threshold)


def test_backlog_drives_the_decisions_in_the_pipeline(backlog_model):
    """With a device too slow for the slow branch, the backlog builds until the
    arbitrator switches to fast, drains, and the run settles around the threshold."""
    b = GoldenBackend(backlog_model)
    c = CostModel().step_costs(b)
    shift = FrontendConfig(n_mels=8).frame_shift_ms
    # Slow frames take 1.5 frame shifts, fast ones well under one.
    speed = 1000.0 * (c["arbitrate"] + c["encoder_slow"]) / (1.5 * shift)
    assert 1000.0 * (c["arbitrate"] + c["encoder_fast"] + 6 * c["joint"] + 3 * c["predictor"]) \
        / speed < 0.8 * shift
    audio = np.random.default_rng(7).uniform(-0.5, 0.5, 16000 * 4)
    result = Recognizer(backlog_model, beam=0, cost=CostModel(speed=speed),
                        after_final="continue").transcribe(audio)
    frames = result.report.frames
    threshold = [b.arbitrate(np.zeros(24, np.int8), q) for q in range(128)].index(FAST)
    assert [f.branch for f in frames] == [SLOW if f.backlog_q < threshold else FAST
                                          for f in frames]
    assert result.branch_frames["fast"] > 10 and result.branch_frames["slow"] > 10
    assert max(f.backlog_q for f in frames) <= threshold + 1
    assert all(f.backlog_q == quantize_backlog(f.backlog_ms / shift) for f in frames)
    # Always slow on the same device, the queue never empties: the last frame would
    # finish N slow frames after the first one became ready.
    slow_ms = 1000.0 * (c["arbitrate"] + c["encoder_slow"]) / speed
    slow_latency = frames[0].ready_ms + len(frames) * slow_ms - result.audio_ms
    assert slow_latency > 0.3 * result.audio_ms
    # With arbitration at most ~threshold frames are waiting when the audio ends.
    longest = max(f.finish_ms - f.start_ms for f in frames)
    assert result.latency_ms <= (threshold + 2) * longest
    assert result.latency_ms < 0.5 * slow_latency
