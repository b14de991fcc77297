"""sim.realtime: real-time factor and end-of-speech latency from step cycles and a clock."""

import json

import pytest

from sim.realtime import FrameMix, processor_fmax_hz, realtime, realtime_report, step_cycles

CYCLES = {"arbitrate": 100, "encoder_fast": 1000, "encoder_slow": 5000, "predictor": 400,
          "joint": 200}


def test_frame_cost_and_rtf_by_hand():
    mix = FrameMix(slow_fraction=0.25, predictor_calls=0.5, joint_calls=1.5)
    r = realtime(CYCLES, clock_hz=1e6, mix=mix)
    frame = 100 + 0.25 * 5000 + 0.75 * 1000 + 0.5 * 400 + 1.5 * 200  # 2600
    assert r["frame_cycles"] == frame
    assert r["frame_ms"] == pytest.approx(2.6)
    assert r["rtf"] == pytest.approx(2.6 / 30)
    assert r["last_frame_ms"] == pytest.approx((100 + 5000 + 200 + 300) / 1000)


def test_latency_when_keeping_up_is_the_last_frame():
    for branch, enc in (("slow", 5000), ("fast", 1000)):
        r = realtime(CYCLES, clock_hz=1e6, mix=FrameMix(last_branch=branch))
        assert r["rtf"] < 1
        assert r["latency_ms"] == pytest.approx((100 + enc + 0.5 * 400 + 1.5 * 200) / 1000)


def test_latency_queue_by_hand():
    # 75 ms of audio: frame 0 ready at 45 ms, frame 1 (zero-padded) at 75 ms. Every step
    # 100 ms long at 1 kHz clock -> frame 0 ends at 145, frame 1 at 245: 170 ms late.
    cycles = {"arbitrate": 20, "encoder_fast": 60, "encoder_slow": 60, "predictor": 0,
              "joint": 20}
    r = realtime(cycles, clock_hz=1e3, mix=FrameMix(predictor_calls=0, joint_calls=1),
                 utterance_s=0.075)
    assert r["frames"] == 2
    assert r["latency_ms"] == pytest.approx(170.0)


def test_latency_grows_with_the_utterance_when_too_slow():
    mix = FrameMix(slow_fraction=1.0)
    short = realtime(CYCLES, clock_hz=100e3, mix=mix, utterance_s=1.0)
    long = realtime(CYCLES, clock_hz=100e3, mix=mix, utterance_s=2.0)
    assert short["rtf"] > 1
    # One more second of audio leaves (rtf - 1) seconds more backlog at the end.
    assert long["latency_ms"] - short["latency_ms"] == pytest.approx(
        (short["rtf"] - 1) * 1000, rel=0.05)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="slow_fraction"):
        FrameMix(slow_fraction=1.5)
    with pytest.raises(ValueError, match="joint_calls"):
        FrameMix(joint_calls=0.5)
    with pytest.raises(ValueError, match="last_branch"):
        FrameMix(last_branch="medium")
    with pytest.raises(ValueError, match="clock_hz"):
        realtime(CYCLES, clock_hz=0)
    with pytest.raises(ValueError, match="utterance_s"):
        realtime(CYCLES, clock_hz=1e6, utterance_s=float("nan"))
    with pytest.raises(ValueError, match="joint"):
        realtime({k: v for k, v in CYCLES.items() if k != "joint"}, clock_hz=1e6)
    with pytest.raises(ValueError, match="exactly one"):
        realtime_report(clock_hz=1e6, part="up5k")


def _steps(path, source_cycles):
    recs = [{"model": "int4, 90% sparse", "step": s, "lanes": 8, "cycles": c + 1,
             "source": "iss"} for s, c in CYCLES.items()]
    recs += [{"model": "int4, 90% sparse", "step": s, "lanes": 8, "cycles": c,
              "source": "rtl"} for s, c in source_cycles.items()]
    recs.append({"model": "int8, dense", "step": "joint", "lanes": 8, "cycles": 9,
                 "source": "iss"})
    path.write_text(json.dumps(recs))
    return path


def test_step_cycles_prefer_rtl(tmp_path):
    path = _steps(tmp_path / "steps.json", {"encoder_slow": 4999})
    got = step_cycles(lanes=8, path=path)
    assert got["encoder_slow"] == 4999  # the RTL record
    assert got["joint"] == 201  # ISS only
    with pytest.raises(ValueError, match="at 4 lanes"):
        step_cycles(lanes=4, path=path)
    with pytest.raises(FileNotFoundError, match="make bench"):
        step_cycles(path=tmp_path / "none.json")


def test_fmax_from_the_synthesis_report(tmp_path):
    path = tmp_path / "synth.json"
    path.write_text(json.dumps({"records": [
        {"design": "matvec_engine", "part": "ecp5-85f", "lanes": 8, "fmax_mhz": 36.0},
        {"design": "nep_top", "part": "ecp5-85f", "lanes": 8, "fmax_mhz": 42.5},
        {"design": "nep_top", "part": "up5k", "lanes": 8, "fits": False,
         "utilization": {"ICESTORM_LC": {"used": 9000, "available": 5280},
                         "ICESTORM_DSP": {"used": 8, "available": 8}}},
        {"design": "nep_top", "part": "ecp5-85f", "lanes": 16, "ok": False,
         "reason": "Yosys crashed"}]}))
    assert processor_fmax_hz(part="ecp5-85f", lanes=8, path=path) == 42.5e6
    with pytest.raises(ValueError, match=r"does not fit \(ICESTORM_LC 9000/5280\)$"):
        processor_fmax_hz(part="up5k", lanes=8, path=path)
    with pytest.raises(ValueError, match="Yosys crashed"):
        processor_fmax_hz(part="ecp5-85f", lanes=16, path=path)
    with pytest.raises(ValueError, match="no nep_top run"):
        processor_fmax_hz(part="ecp5-85f", lanes=4, path=path)
    steps = _steps(tmp_path / "steps.json", {})
    r = realtime_report(part="ecp5-85f", lanes=8, steps_path=steps, synth_path=path)
    assert r["clock_mhz"] == pytest.approx(42.5)
