"""Speed of the full integer pipeline on this machine: ``python -m golden.bench``.

Runs :class:`golden.pipeline.Recognizer` (front end, arbitration, encoder, search,
end-pointing, reports: everything) on a deterministic speech-like signal with the default
random model (1.27 M parameters) and prints, for greedy and beam search, the wall time
and the real-time factor (audio seconds per wall second). Single process, single thread.

``--reference`` times the straightforward path instead (the model's plain reference
methods through ``GoldenBackend(model, fast=False)`` and beam search's reference frame
step, one joint call per hypothesis): the same results bit for bit
(``tests/golden/test_fast_paths.py``), so the two runs show what the fast paths gain
under the same machine load.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from .backend import GoldenBackend
from .cli import random_model, synthetic_speech
from .decoding import BeamDecoder
from .model import QuantModel
from .pipeline import Recognizer

__all__ = ["main", "parameter_count", "run_bench"]


def parameter_count(model: QuantModel) -> int:
    """Weights, biases and embedding entries of ``model``."""
    return sum(int(v.size) for k, v in model.tensors.items()
               if k.endswith((".weight", ".bias", ".table")))


def run_bench(model: QuantModel, audio, beams: Sequence[int], repeat: int = 1,
              reference: bool = False) -> list[dict]:
    """Time ``Recognizer(model, beam=b).transcribe(audio)`` for each beam width.

    Each width is run ``repeat`` times and the fastest run is kept (the least disturbed
    by other load on the machine). ``after_final="continue"`` so the whole audio is
    decoded whatever the end-pointer does. ``reference=True`` runs the straightforward
    path (see the module notes).

    Returns
    -------
    list of dict
        Per width: ``mode``, ``audio_s``, ``wall_s``, ``x_real_time``, ``chars``,
        ``predictor_calls``, ``joint_calls`` (the speed depends on how much the model
        emits) and the simulated device's ``load`` and ``latency_ms``.
    """
    sr = Recognizer(model, beam=0).frontend_config.sample_rate
    rows = []
    for beam in beams:
        rec = Recognizer(GoldenBackend(model, fast=not reference), beam=beam,
                         after_final="continue")
        if reference and isinstance(rec.decoder, BeamDecoder):
            rec.decoder.vectorized = False
        best = None
        for _ in range(repeat):
            t0 = time.perf_counter()
            result = rec.transcribe(audio)
            wall = time.perf_counter() - t0
            best = wall if best is None else min(best, wall)
        audio_s = len(audio) / sr
        calls = result.report.calls
        rows.append({"mode": "greedy" if beam < 2 else f"beam {beam}", "audio_s": audio_s,
                     "wall_s": best, "x_real_time": audio_s / best,
                     "chars": len(result.text), "predictor_calls": calls["predictor"],
                     "joint_calls": calls["joint"], "load": result.report.load,
                     "latency_ms": result.latency_ms})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m golden.bench",
                                description="real-time factor of the golden pipeline")
    p.add_argument("--seconds", type=float, default=10.0, help="audio length (default 10)")
    p.add_argument("--seed", type=int, default=0, help="model and signal seed (default 0)")
    p.add_argument("--repeat", type=int, default=3, help="runs per mode, fastest kept")
    p.add_argument("--reference", action="store_true",
                   help="time the straightforward path (same results, slower)")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.repeat < 1:
        p.error("--seconds must be positive and --repeat at least 1")
    model = random_model("default", args.seed)
    audio = synthetic_speech(args.seconds, seed=args.seed)
    rows = run_bench(model, audio, beams=(0, 4), repeat=args.repeat, reference=args.reference)
    path = "reference path" if args.reference else "fast path"
    print(f"model: default random, {parameter_count(model):,} parameters, seed {args.seed}, "
          f"{path}")
    print(f"{'mode':<8} {'audio s':>8} {'wall s':>8} {'x real time':>12} {'chars':>6} "
          f"{'pred/joint calls':>17} {'dev load':>9} {'dev latency ms':>15}")
    for r in rows:
        calls = f"{r['predictor_calls']}/{r['joint_calls']}"
        print(f"{r['mode']:<8} {r['audio_s']:8.2f} {r['wall_s']:8.3f} {r['x_real_time']:12.1f} "
              f"{r['chars']:6d} {calls:>17} {r['load']:9.2f} {r['latency_ms']:15.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
