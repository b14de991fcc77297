"""Tests for golden.endpointer on synthetic speech/silence patterns."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.decoding import GreedyDecoder
from golden.endpointer import (
    EndpointerConfig,
    EndpointTracker,
    Event,
    FinalEndpointer,
    SpeculativeEndpointer,
    speech_from_blank_prob,
)

FRAME_MS = 10


def frames(pattern, frame_ms=FRAME_MS):
    """``pattern`` = [(kind, ms)]: 'T' speech with a token in its first frame, 'S' speech
    without tokens, 'E' tokens without the speech flag, '_' silence. Frame ``i`` is at
    ``i * frame_ms``."""
    out = []
    for kind, ms in pattern:
        for j in range(ms // frame_ms):
            i = len(out)
            speech = kind in "TS"
            token = (kind == "T" and j == 0) or kind == "E"
            out.append((i, float(i * frame_ms), speech, token))
    return out


def run(pattern, config=None, frame_ms=FRAME_MS):
    return list(EndpointTracker(config).run(frames(pattern, frame_ms)))


def kinds(events):
    return [(e.kind, e.time_ms) for e in events]


def test_clean_pattern_speculative_fires_200ms_before_final():
    events = run([("T", 1000), ("_", 1000)])
    # Last active frame at 990 ms: +300 ms speculative, +500 ms final.
    assert kinds(events) == [("speculative", 1290.0), ("final", 1490.0)]
    assert events[1].time_ms - events[0].time_ms == 200.0
    assert [e.frame for e in events] == [129, 149]
    assert [e.reason for e in events] == ["silence", "silence"]


def test_revision_when_speech_resumes_then_rearm():
    events = run([("T", 500), ("_", 350), ("T", 200), ("_", 600)])
    assert kinds(events) == [("speculative", 790.0), ("revision", 850.0),
                             ("speculative", 1340.0), ("final", 1540.0)]
    assert events[1].reason == "speech"


def test_token_without_speech_flag_counts_as_activity():
    events = run([("T", 100), ("_", 350), ("E", 10), ("_", 600)])
    assert kinds(events) == [("speculative", 390.0), ("revision", 450.0),
                             ("speculative", 750.0), ("final", 950.0)]


def test_no_end_point_without_text():
    tracker = EndpointTracker()
    assert list(tracker.run(frames([("S", 500), ("_", 2000)]))) == []
    assert not tracker.done
    # Without the text requirement the same pattern end-points.
    cfg = EndpointerConfig(require_text=False)
    assert kinds(run([("S", 500), ("_", 2000)], cfg)) == [("speculative", 790.0),
                                                         ("final", 990.0)]


def test_leading_silence_never_end_points():
    events = run([("_", 1000), ("T", 200), ("_", 600)])
    assert kinds(events) == [("speculative", 1490.0), ("final", 1690.0)]


def test_max_length_forces_final():
    cfg = EndpointerConfig(max_utterance_ms=2000.0)
    events = run([("T", 3000)], cfg)
    assert kinds(events) == [("final", 2000.0)]
    assert events[0].reason == "max_length" and events[0].frame == 200
    # Also with no text at all (stream timeout), measured from the first frame.
    tracker = EndpointTracker(cfg)
    fr = [(i + 7, 100.0 + 10 * i, False, False) for i in range(300)]
    assert kinds(tracker.run(fr)) == [("final", 2100.0)]


def test_max_length_while_speculative_is_pending():
    cfg = EndpointerConfig(max_utterance_ms=1400.0)
    events = run([("T", 1000), ("_", 1000)], cfg)
    assert kinds(events) == [("speculative", 1290.0), ("final", 1400.0)]
    assert events[-1].reason == "max_length"


def test_same_frame_events_are_ordered():
    # 600 ms frames: the first silent frame crosses both thresholds at once.
    events = run([("T", 600), ("_", 1200)], frame_ms=600)
    assert kinds(events) == [("speculative", 600.0), ("final", 600.0)]
    # 400 ms frames: one threshold per frame.
    events = run([("T", 400), ("_", 1200)], frame_ms=400)
    assert kinds(events) == [("speculative", 400.0), ("final", 800.0)]


def test_tracker_is_done_after_final_until_reset():
    tracker = EndpointTracker()
    list(tracker.run(frames([("T", 100), ("_", 600)])))
    assert tracker.done
    assert [e.kind for e in tracker.events] == ["speculative", "final"]
    with pytest.raises(RuntimeError, match="reset"):
        tracker.update(1000, 10000.0, True, True)
    tracker.reset()
    assert tracker.events == () and not tracker.done
    assert tracker.update(0, 0.0, True, True) == []


def test_individual_end_pointers():
    spec, final = SpeculativeEndpointer(), FinalEndpointer()
    fr = frames([("T", 100), ("_", 400), ("T", 10), ("_", 600)])
    spec_events = [e for f in fr for e in spec.update(*f)]
    assert [e.kind for e in spec_events] == ["speculative", "revision", "speculative"]
    assert spec.pending
    final_events = []
    for f in fr:
        final_events += final.update(*f)
        if final.done:
            break
    assert kinds(final_events) == [("final", 1000.0)]
    with pytest.raises(RuntimeError):
        final.update(999, 99999.0, False, False)


def test_frames_must_move_forward():
    tracker = EndpointTracker()
    tracker.update(5, 50.0, True, True)
    with pytest.raises(ValueError, match="move forward"):
        tracker.update(5, 60.0, True, False)
    with pytest.raises(ValueError, match="move forward"):
        tracker.update(6, 40.0, True, False)
    with pytest.raises(ValueError, match="time_ms"):
        tracker.update(7, float("nan"), True, False)


@pytest.mark.parametrize("kwargs, message", [
    ({"speculative_silence_ms": 500.0}, "must be less than final_silence_ms"),
    ({"speculative_silence_ms": 0}, "speculative_silence_ms must be"),
    ({"final_silence_ms": -1.0}, "final_silence_ms must be"),
    ({"max_utterance_ms": float("inf")}, "max_utterance_ms must be"),
    ({"require_text": "yes"}, "require_text"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EndpointerConfig(**kwargs)


def test_config_defaults_and_frozen():
    cfg = EndpointerConfig()
    assert (cfg.speculative_silence_ms, cfg.final_silence_ms) == (300.0, 500.0)
    assert cfg.require_text and cfg.max_utterance_ms == 20000.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.final_silence_ms = 1.0


def test_event_kind_validated():
    with pytest.raises(ValueError, match="event kind"):
        Event("done", 1, 10.0)


def test_speech_from_blank_prob():
    assert speech_from_blank_prob(0.5)
    assert not speech_from_blank_prob(0.99)
    assert speech_from_blank_prob(0.99, threshold=1.0)
    assert not speech_from_blank_prob(0.95)
    with pytest.raises(ValueError, match="threshold"):
        speech_from_blank_prob(0.5, threshold=0.0)
    with pytest.raises(ValueError, match="blank_prob"):
        speech_from_blank_prob(1.5)


def test_driven_by_decoder_frame_info():
    # Tokens at frames 0..4, then the joint predicts blank with near certainty.
    def predictor(token, state):
        return np.zeros(1, np.int8), state + (token,)

    def joint(enc, pred):
        return np.array([0, 60] if enc[0] < 5 else [100, 0], dtype=np.int8)

    dec = GreedyDecoder(predictor, joint, 0.1, ())
    tracker = EndpointTracker()
    events = []
    for f in range(100):
        info = dec.step(np.array([f], np.int8), f)
        events += tracker.update(f, f * 40.0, speech_from_blank_prob(info.blank_prob),
                                 info.emitted)
        if tracker.done:
            break
    # Last active frame 4 (160 ms) with 40 ms frames.
    assert kinds(events) == [("speculative", 480.0), ("final", 680.0)]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("TS_E"), st.integers(1, 80)), max_size=12))
def test_event_sequence_invariants(pattern):
    pattern = [(k, n * FRAME_MS) for k, n in pattern]
    fr = frames(pattern)
    events = run(pattern)
    times = [e.time_ms for e in events]
    assert times == sorted(times)
    assert [e.kind for e in events].count("final") <= 1
    if events and events[-1].kind != "final":
        assert all(e.kind != "final" for e in events)
    # Speculative and revision alternate, starting with a speculative.
    non_final = [e.kind for e in events if e.kind != "final"]
    assert non_final == ["speculative", "revision"] * (len(non_final) // 2) + \
        ["speculative"] * (len(non_final) % 2)
    last_active, text = None, False
    for i, t, speech, token in fr:
        at = [e for e in events if e.frame == i]
        text = text or token
        if speech or token:
            last_active = t
        for e in at:
            if e.kind == "revision":
                assert speech or token
            elif e.reason == "silence":
                need = 300.0 if e.kind == "speculative" else 500.0
                assert text and t - last_active >= need
                assert t - FRAME_MS - last_active < need  # fired on the first such frame
            else:
                assert e.kind == "final" and t >= 20000.0
