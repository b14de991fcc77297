"""Real-time factor and end-of-speech latency of the benchmark model at a processor clock.

Per encoder frame (``golden.frontend``: one every ``frame_shift_ms`` = 30 ms) the processor
runs ``arbitrate``, one encoder branch, and the decoder's predictor and joint calls. With
the measured cycles of each step (``make bench``: ``build/reports/steps.json``) and a
stated mix of branches and decoder calls per frame, a frame costs

    cycles = arbitrate + s * encoder_slow + (1 - s) * encoder_fast
             + p * predictor + j * joint

The real-time factor is that time over the frame period (below 1: faster than real time).
End-of-speech latency follows the frame queue of ``docs/pipeline.md``: frames are ready
as their audio arrives, the device takes them in order, and the latency is the finish of
the last frame (ready at the end of the audio) minus the end of the audio. The last
frame runs on ``FrameMix.last_branch``.

The clock is given, or is the processor's achieved Fmax on a part from ``make synth``
(``build/reports/synth.json``, design ``nep_top``): ``processor_fmax_hz``.

``python -m sim.realtime [--part up5k|ecp5-85f | --clock-mhz F] [--lanes 8]
[--slow-fraction S] [--predictor-calls P] [--joint-calls J] [--utterance-s T]``
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from golden.backend import STEPS
from golden.frontend import FrontendConfig

__all__ = ["BENCH_MODEL", "FrameMix", "processor_fmax_hz", "realtime", "realtime_report",
           "step_cycles"]

REPORTS = Path(__file__).resolve().parent.parent / "build" / "reports"
STEPS_REPORT = REPORTS / "steps.json"
SYNTH_REPORT = REPORTS / "synth.json"

#: The variant of ``sim.steps_bench`` measured on the RTL.
BENCH_MODEL = "int4, 90% sparse"


def _check_number(name: str, v, low: float, high: float = math.inf) -> None:
    """Raise a ValueError naming ``name`` unless ``v`` is a real number in [low, high]."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
            math.isfinite(v) and low <= v <= high):
        raise ValueError(f"{name} must be a number in {low:g}..{high:g}, got {v!r}")


@dataclass(frozen=True)
class FrameMix:
    """What the processor runs per encoder frame, on average.

    Parameters
    ----------
    slow_fraction : float
        Share of frames the arbitrator sends to the slow encoder, in [0, 1].
    predictor_calls : float
        Predictor calls per frame (one per emitted token), >= 0.
    joint_calls : float
        Joint calls per frame (one per emitted token plus the blank that ends the frame),
        >= 1 (greedy decoding; a beam search multiplies it).
    last_branch : {"slow", "fast"}
        Encoder branch of the utterance's last frame (latency); ``"slow"`` is the worst
        case.
    """

    slow_fraction: float = 0.5
    predictor_calls: float = 0.5
    joint_calls: float = 1.5
    last_branch: str = "slow"

    def __post_init__(self):
        for name, low, high in (("slow_fraction", 0, 1), ("predictor_calls", 0, 1e6),
                                ("joint_calls", 1, 1e6)):
            _check_number(f"FrameMix.{name}", getattr(self, name), low, high)
        if self.last_branch not in ("slow", "fast"):
            raise ValueError(f"FrameMix.last_branch must be 'slow' or 'fast', "
                             f"got {self.last_branch!r}")


def _read_json(path: Path, what: str) -> dict | list:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `{what}` first")
    return json.loads(path.read_text())


def step_cycles(*, lanes: int = 8, model: str = BENCH_MODEL,
                path: Path = STEPS_REPORT) -> dict[str, int]:
    """Cycles per call of every step in ``golden.backend.STEPS`` from ``make bench``.

    RTL-measured records are preferred over instruction-level-simulator ones (they agree
    cycle for cycle where both exist).

    Raises
    ------
    FileNotFoundError
        If the report does not exist.
    ValueError
        If it lacks a step of ``model`` at ``lanes``.
    """
    records = _read_json(path, "make bench")
    out, source = {}, {}
    for r in records:
        if r.get("model") != model or r.get("lanes") != lanes or r.get("step") not in STEPS:
            continue
        if r["step"] not in out or (r.get("source") == "rtl" and source[r["step"]] != "rtl"):
            out[r["step"]], source[r["step"]] = int(r["cycles"]), r.get("source")
    missing = [s for s in STEPS if s not in out]
    if missing:
        raise ValueError(f"{path} has no {', '.join(missing)} cycles for model {model!r} "
                         f"at {lanes} lanes")
    return out


def processor_fmax_hz(*, part: str, lanes: int, path: Path = SYNTH_REPORT) -> float:
    """The processor's (``nep_top``) achieved Fmax on ``part`` at ``lanes`` (``make synth``).

    Raises
    ------
    FileNotFoundError
        If the report does not exist.
    ValueError
        If it has no such run, or the run did not fit and route (no Fmax).
    """
    records = _read_json(path, "make synth").get("records", [])
    runs = [r for r in records
            if r.get("design") == "nep_top" and r.get("part") == part and r.get("lanes") == lanes]
    if not runs:
        have = sorted({(r["part"], r["lanes"]) for r in records if r.get("design") == "nep_top"})
        raise ValueError(f"{path} has no nep_top run on {part!r} at {lanes} lanes "
                         f"(it has {have})")
    r = runs[0]
    if not r.get("fmax_mhz"):
        over = [f"{k} {u['used']}/{u['available']}"
                for k, u in r.get("utilization", {}).items() if u["used"] > u["available"]]
        why = f"does not fit ({', '.join(over)})" if over else r.get("reason", "failed")
        raise ValueError(f"nep_top on {part} at {lanes} lanes has no Fmax: {why}")
    return float(r["fmax_mhz"]) * 1e6


def realtime(step_cycles: dict[str, int], *, clock_hz: float, mix: FrameMix = FrameMix(),
             utterance_s: float = 10.0, frontend: FrontendConfig = FrontendConfig()) -> dict:
    """Real-time factor and end-of-speech latency at ``clock_hz``.

    Parameters
    ----------
    step_cycles : dict
        Cycles per call of every step in ``golden.backend.STEPS``.
    clock_hz : float
        Processor clock, >= 1 Hz.
    mix : FrameMix
    utterance_s : float
        Audio length for the latency queue, >= 1 ms.
    frontend : FrontendConfig
        Gives the frame period and when each frame's audio has arrived.

    Returns
    -------
    dict
        ``clock_mhz``; ``frame_cycles`` and ``frame_ms`` (mean per frame); ``rtf``
        (compute time / audio time); ``last_frame_ms``; ``latency_ms`` (end of audio to
        the last frame's result); ``frames``.
    """
    missing = set(STEPS) - set(step_cycles)
    if missing:
        raise ValueError(f"step_cycles lacks {sorted(missing)}")
    _check_number("clock_hz", clock_hz, 1.0)
    _check_number("utterance_s", utterance_s, 1e-3)
    c = step_cycles
    decoder = mix.predictor_calls * c["predictor"] + mix.joint_calls * c["joint"]
    frame = (c["arbitrate"] + mix.slow_fraction * c["encoder_slow"]
             + (1 - mix.slow_fraction) * c["encoder_fast"] + decoder)
    last = c["arbitrate"] + c[f"encoder_{mix.last_branch}"] + decoder
    ms = 1000.0 / clock_hz
    # The frame queue of docs/pipeline.md: frame t is ready when its span has arrived (the
    # last, zero-padded one at the end of the audio) and starts when the device is free.
    n = round(utterance_s * frontend.sample_rate)
    frames = frontend.num_frames(n)
    finish = 0.0
    for t in range(frames):
        ready = 1000.0 * min(frontend.frame_span(t)[1], n) / frontend.sample_rate
        finish = max(ready, finish) + (last if t == frames - 1 else frame) * ms
    return {"clock_mhz": clock_hz / 1e6, "frame_cycles": frame, "frame_ms": frame * ms,
            "rtf": frame * ms / frontend.frame_shift_ms, "last_frame_ms": last * ms,
            "latency_ms": finish - 1000.0 * n / frontend.sample_rate, "frames": frames}


def realtime_report(*, lanes: int = 8, clock_hz: float | None = None, part: str | None = None,
                    mix: FrameMix = FrameMix(), utterance_s: float = 10.0,
                    steps_path: Path = STEPS_REPORT, synth_path: Path = SYNTH_REPORT) -> dict:
    """``realtime`` of the benchmark model from the reports: cycles from ``make bench``,
    the clock given or the processor's achieved Fmax on ``part`` (exactly one of the two).
    """
    if (clock_hz is None) == (part is None):
        raise ValueError("give exactly one of clock_hz and part")
    if clock_hz is None:
        clock_hz = processor_fmax_hz(part=part, lanes=lanes, path=synth_path)
    return realtime(step_cycles(lanes=lanes, path=steps_path), clock_hz=clock_hz, mix=mix,
                    utterance_s=utterance_s)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.realtime",
                                 description=__doc__.splitlines()[0])
    clock = ap.add_mutually_exclusive_group(required=True)
    clock.add_argument("--clock-mhz", type=float)
    clock.add_argument("--part", help="use the processor's achieved Fmax on this part")
    ap.add_argument("--lanes", type=int, default=8)
    d = FrameMix()
    ap.add_argument("--slow-fraction", type=float, default=d.slow_fraction)
    ap.add_argument("--predictor-calls", type=float, default=d.predictor_calls)
    ap.add_argument("--joint-calls", type=float, default=d.joint_calls)
    ap.add_argument("--last-branch", choices=("slow", "fast"), default=d.last_branch)
    ap.add_argument("--utterance-s", type=float, default=10.0)
    a = ap.parse_args(argv)
    try:
        mix = FrameMix(slow_fraction=a.slow_fraction, predictor_calls=a.predictor_calls,
                       joint_calls=a.joint_calls, last_branch=a.last_branch)
        r = realtime_report(lanes=a.lanes, part=a.part, utterance_s=a.utterance_s, mix=mix,
                            clock_hz=None if a.clock_mhz is None else a.clock_mhz * 1e6)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    shift = FrontendConfig().frame_shift_ms
    print(f"{a.lanes} lanes at {r['clock_mhz']:.2f} MHz, {mix}:\n"
          f"  {r['frame_cycles']:.0f} cycles = {r['frame_ms']:.3f} ms per {shift:g} ms frame, "
          f"real-time factor {r['rtf']:.4f}\n"
          f"  end-of-speech latency {r['latency_ms']:.2f} ms ({a.utterance_s:g} s utterance)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
