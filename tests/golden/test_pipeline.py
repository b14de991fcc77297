"""The end-to-end pipeline: streaming invariance, determinism, the Backend seam, end-point
events, biasing, the result schema and argument checks."""

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golden.arbitration import CostModel
from golden.backend import Backend, GoldenBackend, MacCost
from golden.cli import random_model, synthetic_speech
from golden.endpointer import EndpointerConfig
from golden.frontend import FrontendConfig
from golden.model import FAST, SLOW, random_float_model
from golden.pipeline import RESULT_SCHEMA, PipelineConfig, Recognizer
from golden.tokens import default_tokens
from golden.wav import read_wav, write_wav

SR = 16000
VOCAB = tuple(default_tokens())


@pytest.fixture(scope="module")
def model():
    return random_model("small", seed=1)


@pytest.fixture(scope="module")
def audio():
    return synthetic_speech(1.5, seed=3)


@pytest.fixture(scope="module")
def slow_device(model):
    """A device on which the slow branch alone is 1.5x slower than real time, so the
    backlog (and with it the arbitrator's choice) moves during the utterance."""
    b = GoldenBackend(model)
    c = CostModel().step_costs(b)
    shift = FrontendConfig.from_dict(model.config.frontend).frame_shift_ms
    return CostModel(speed=1000.0 * (c["arbitrate"] + c["encoder_slow"] + c["joint"])
                     / (1.5 * shift))


def chunked(rec, audio, sizes):
    events, i = [], 0
    for n in sizes:
        events += rec.push(audio[i:i + n])
        i += n
    events += rec.push(audio[i:])
    result = rec.finish()
    return events, result


# ------------------------------------------------------------------ streaming


@pytest.mark.parametrize("beam, context", [(0, None), (4, ["hello", "bad wolf"])])
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_chunking_gives_the_same_result(model, audio, slow_device, beam, context, data):
    rec = Recognizer(model, beam=beam, context=context, cost=slow_device)
    reference = rec.transcribe(audio).to_dict()
    sizes = data.draw(st.lists(st.integers(0, 9000), max_size=8))
    events, result = chunked(rec, audio, sizes)
    # Everything: transcript, N-best, lattice, events, decisions, backlog and timings.
    assert result.to_dict() == reference
    # push() hands out the events as they happen; finish() adds only the remaining ones.
    assert tuple(events) == result.events[:len(events)]


def test_one_sample_at_a_time(model, slow_device):
    audio = synthetic_speech(0.4, seed=9)
    rec = Recognizer(model, beam=2, cost=slow_device)
    reference = rec.transcribe(audio).to_dict()
    _, result = chunked(rec, audio, [1] * len(audio))
    assert result.to_dict() == reference


def test_frames_wait_until_their_backlog_is_known(model, audio, slow_device):
    rec = Recognizer(model, beam=0, cost=slow_device, after_final="continue")
    rec.push(audio)
    decoded = len(rec.scheduler.report(0.0).frames)
    total = rec.frontend_config.num_frames(len(audio))
    # The device is behind real time: not every complete frame could start yet.
    assert 0 < decoded < total - 1
    assert rec.scheduler.free_ms > 1000.0 * len(audio) / SR
    result = rec.finish()
    assert len(result.report.frames) == result.num_frames == total


def test_deterministic_and_reusable(model, audio, slow_device):
    a = Recognizer(model, beam=4, cost=slow_device).transcribe(audio)
    rec = Recognizer(model, beam=4, cost=slow_device)
    b = rec.transcribe(audio)
    c = rec.transcribe(audio)  # finish() reset the recognizer
    assert a.to_dict() == b.to_dict() == c.to_dict()
    assert a.text and len(a.nbest) == 4


def test_decisions_follow_the_backlog(model, audio, slow_device):
    fast_device = Recognizer(model, beam=0).transcribe(audio)
    slow = Recognizer(model, beam=0, cost=slow_device).transcribe(audio)
    assert max(fast_device.report.backlog_ms) == 0.0
    assert max(slow.report.backlog_ms) > 0.0
    # This random model's arbitrator prefers slow when idle and fast when behind.
    assert slow.branch_frames["fast"] > fast_device.branch_frames["fast"]
    assert sum(slow.branch_frames.values()) == len(slow.decisions) == slow.num_frames


# ------------------------------------------------------------------ the Backend seam


class Recording:
    """A Backend that is not a GoldenBackend: delegates and records the methods used."""

    logit_scale = None

    def __init__(self, inner):
        self.inner = inner
        self.logit_scale = inner.logit_scale
        self.used = set()

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if callable(attr):
            def call(*args):
                self.used.add(name)
                return attr(*args)
            return call
        return attr


PROTOCOL = {"arbitrate", "encoder_step", "predictor_step", "predictor", "joint",
            "initial_encoder_state", "initial_predictor_state", "step_cost",
            "joint_batch"}  # the optional BatchedJoint method (test_fast_paths.py runs
#                            backends without it)


def test_any_backend_gives_the_same_result(model, audio, slow_device):
    reference = Recognizer(model, beam=4, context=["abc"], cost=slow_device).transcribe(audio)
    rec_backend = Recording(GoldenBackend(model))
    assert isinstance(rec_backend, Backend)
    fe = FrontendConfig.from_dict(model.config.frontend)
    got = Recognizer(rec_backend, beam=4, context=["abc"], cost=slow_device, frontend=fe,
                     vocabulary=VOCAB).transcribe(audio)
    assert got.to_dict() == reference.to_dict()
    assert rec_backend.used <= PROTOCOL
    assert {"arbitrate", "encoder_step", "predictor", "step_cost"} <= rec_backend.used
    # Beam search scores a frame's hypotheses with joint_batch when the backend has it.
    assert "joint_batch" in rec_backend.used


class EnergyBackend:
    """A tiny Backend: a frame is speech when its mean feature is above -110 (digital
    silence is -128); speech frames emit one token each, 'a' and 'b' alternately."""

    logit_scale = 0.1
    vocabulary = VOCAB
    A = VOCAB.index("a")

    def arbitrate(self, feat, backlog_q):
        return SLOW if backlog_q < 2 else FAST

    def initial_encoder_state(self):
        return 0

    def encoder_step(self, branch, feat, state):
        speech = int(feat.astype(np.int32).mean() > -110)
        return np.array([speech, self.A + state % 2], np.int8), state + 1

    def initial_predictor_state(self):
        return 0

    def predictor_step(self, token, state):
        return np.array([token], np.int8), state

    predictor = predictor_step

    def joint(self, enc, pred):
        logits = np.zeros(len(VOCAB), np.int8)
        logits[enc[1] if enc[0] and pred[0] != enc[1] else 0] = 127
        return logits

    def step_cost(self, step):
        return MacCost(1000, 1000)


def tone(seconds, freq=440.0):
    return 0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)


def silence(seconds):
    return np.zeros(int(seconds * SR))


def test_end_point_events_with_times():
    audio = np.concatenate([silence(0.3), tone(0.6), silence(1.0)])
    rec = Recognizer(EnergyBackend(), beam=0)
    result = rec.transcribe(audio)
    ends = result.endpoints
    assert [e.kind for e in ends] == ["speculative", "final"]
    # Frames 9..29 overlap the tone; the last active frame is at 870 ms.
    assert [(e.frame, e.time_ms) for e in ends] == [(39, 1170.0), (46, 1380.0)]
    assert [e.reason for e in ends] == ["silence", "silence"]
    assert result.text == "ba" * 10 + "b"  # one token per speech frame (odd first)
    assert all(e.text == result.text for e in ends)
    assert all(e.device_ms >= e.time_ms for e in ends)
    # Decoding stops at the final end point: later frames are not run.
    assert result.stopped_at == 46 and len(result.decisions) == 47
    assert result.num_frames == rec.frontend_config.num_frames(len(audio)) > 47
    partials = [e for e in result.events if e.kind == "partial"]
    assert [p.text for p in partials] == [result.text[:k] for k in range(1, 22)]
    # Latency is measured to the last frame decoded (the final end point).
    last = result.report.frames[-1]
    assert result.latency_ms == last.finish_ms - last.ready_ms > 0


def test_continue_after_final_decodes_everything():
    audio = np.concatenate([tone(0.5), silence(0.8), tone(0.3), silence(0.2)])
    stop = Recognizer(EnergyBackend(), beam=0).transcribe(audio)
    cont = Recognizer(EnergyBackend(), beam=0, after_final="continue").transcribe(audio)
    assert [e.kind for e in stop.endpoints] == [e.kind for e in cont.endpoints] == [
        "speculative", "final"]
    assert cont.stopped_at is None and len(cont.decisions) == cont.num_frames
    assert cont.text.startswith(stop.text) and len(cont.text) > len(stop.text)
    # The result of a full decode is ready after the end of the audio.
    assert cont.report.frames[-1].ready_ms == cont.audio_ms


def test_revision_when_speech_resumes():
    audio = np.concatenate([tone(0.5), silence(0.4), tone(0.3), silence(1.0)])
    result = Recognizer(EnergyBackend(), beam=4).transcribe(audio)
    assert [e.kind for e in result.endpoints] == ["speculative", "revision", "speculative",
                                                  "final"]
    assert result.endpoints[1].reason == "speech"
    times = [e.time_ms for e in result.endpoints]
    assert times == sorted(times)


def test_endpointer_config_is_used():
    audio = np.concatenate([tone(0.5), silence(1.0)])
    cfg = EndpointerConfig(speculative_silence_ms=90.0, final_silence_ms=150.0)
    result = Recognizer(EnergyBackend(), beam=0, endpointer=cfg).transcribe(audio)
    spec, final = result.endpoints
    assert final.time_ms - spec.time_ms == 60.0


# ------------------------------------------------------------------ biasing, files


def test_context_biasing_pulls_in_the_phrase(model, audio):
    plain = Recognizer(model, beam=4).transcribe(audio)
    biased = Recognizer(model, beam=4, context=["  bad   wolf "]).transcribe(audio)
    assert "bad wolf" not in plain.text
    assert "bad wolf" in biased.text
    assert Recognizer(model, beam=4, context=["bad wolf"]).biasing.num_nodes == 9


def test_transcribe_a_wav_file(tmp_path, model, audio):
    path = tmp_path / "a.wav"
    write_wav(path, audio, SR)
    samples = read_wav(path)[0][:, 0]
    rec = Recognizer(model, beam=2)
    assert rec.transcribe(path).to_dict() == rec.transcribe(samples).to_dict()
    assert rec.transcribe(str(path)).text == rec.transcribe(path.read_bytes()).text


def test_result_schema(model, audio, slow_device):
    result = Recognizer(model, beam=4, cost=slow_device).transcribe(audio)
    d = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert set(d) == {"schema", "text", "nbest", "events", "branch_frames", "decisions",
                      "num_frames", "decoded_frames", "stopped_at", "audio_ms", "latency_ms",
                      "cost", "lattice"}
    assert d["schema"] == RESULT_SCHEMA
    assert d["text"] == d["nbest"][0]["text"] == d["lattice"]["hypotheses"][0]["text"]
    assert set(d["nbest"][0]) == {"text", "tokens", "score", "normalized_score"}
    assert d["lattice"]["schema"] == "nep.rnnt-lattice/1"
    assert d["lattice"]["frame_ms"] == 30.0
    assert set(d["events"][0]) == {"kind", "frame", "time_ms", "device_ms", "text", "reason"}
    assert d["audio_ms"] == 1500.0
    assert sum(d["branch_frames"].values()) == len(d["decisions"]) == d["decoded_frames"]
    assert len(d["cost"]["backlog"]["ms"]) == d["decoded_frames"]
    assert d["latency_ms"] == d["cost"]["latency_ms"] > 0


def test_empty_audio(model):
    result = Recognizer(model).transcribe(np.zeros(0))
    assert result.text == "" and result.num_frames == 0 and result.events == ()
    assert result.latency_ms == 0.0 and result.report.total == 0.0


# ------------------------------------------------------------------ argument checks


@pytest.mark.parametrize("kw, match", [
    (dict(beam=-1), "beam"),
    (dict(beam=1.5), "beam"),
    (dict(context="abc"), "sequence of phrases"),
    (dict(context=["ab", " "]), "empty"),
    (dict(context=["ab"], beam=1), "needs beam search"),
    (dict(bias_bonus=0.0), "bias_bonus"),
    (dict(speech_threshold=1.5), "speech_threshold"),
    (dict(after_final="pause"), "after_final"),
    (dict(endpointer={}), "EndpointerConfig"),
    (dict(cost=1e6), "CostModel"),
])
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        PipelineConfig(**kw)


def test_config_is_frozen():
    c = PipelineConfig(context=("a  b",))
    assert c.context == ("a b",) and not c.greedy and PipelineConfig(beam=1).greedy
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.beam = 2


def test_recognizer_argument_checks(model):
    with pytest.raises(ValueError, match="sequence of phrases"):
        Recognizer(model, context="abc")
    with pytest.raises(ValueError, match="context phrase 'caf.'"):
        Recognizer(model, context=["café"])
    with pytest.raises(TypeError, match="quantize"):
        Recognizer(random_float_model(model.config))
    with pytest.raises(TypeError, match="QuantModel or a Backend"):
        Recognizer(object())
    with pytest.raises(ValueError, match="features per frame"):
        Recognizer(model, frontend=FrontendConfig())
    fe = FrontendConfig(n_mels=20, feature_scale=0.25)
    with pytest.raises(ValueError, match="feature scale"):
        Recognizer(model, frontend=fe)
    with pytest.raises(TypeError, match="FrontendConfig"):
        Recognizer(model, frontend={})
    bare = Recording(EnergyBackend())
    bare.__dict__["vocabulary"] = None
    with pytest.raises(ValueError, match="vocabulary="):
        Recognizer(bare)
    with pytest.raises(ValueError, match="1-D"):
        Recognizer(model).push(np.zeros((4, 2)))
