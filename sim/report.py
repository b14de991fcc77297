"""The ``make sim`` report: figures of one utterance on the RTL, as text, JSON and a plot.

:func:`summarize` turns a :class:`sim.run_utterance.Outcome` (both results and the RTL's
program runs) into one JSON-ready dict; :func:`format_report` prints it for people and
:func:`plot_report` draws, along the utterance, the arbitrator's branch choice, the
backlog, the end-point events and the cycles per frame (stacked by step), against the
real-time budget at the clock.

Figures (all from the RTL's counters, read through the bus after every program):

* cycles per frame per step: a frame's runs are its ``arbitrate`` and everything up to
  the next one; min / mean / max over the decoded frames (the encoder branches over the
  frames that ran them);
* MAC busy: ``(MACS + ZERO_ACTS) / lanes / CYCLES``, the share of cycles a perfect
  zero-skipping array would need (``docs/isa.md`` section 7);
* MACs skipped: zero weights (dense minus nonzero MACs, of dense) and zero activations
  (``ZERO_ACTS`` of the nonzero-weight products, gated);
* real-time factor: device seconds at the clock over audio seconds;
* latency: ``CostReport.latency_ms`` (the last decoded frame's audio to the result), and
  end of speech to the final result: from the start of the trailing silence that fired
  the final end point (its time minus ``final_silence_ms``) to the device finishing that
  frame; without a final end point, the end of the audio to the result.
"""

from __future__ import annotations

from pathlib import Path

from golden.endpointer import EndpointerConfig

__all__ = ["STEP_ORDER", "format_report", "frame_cycles", "plot_report", "summarize"]

#: Steps in program order within a frame.
STEP_ORDER = ("arbitrate", "encoder_fast", "encoder_slow", "predictor", "joint")
#: Run fields, in the order of ``Outcome.runs`` rows.
RUN_FIELDS = ("step", "cycles", "instructions", "macs", "zero_acts", "stalls")


def frame_cycles(runs) -> list[dict[str, int]]:
    """Cycles per step of each frame: runs grouped from one ``arbitrate`` to the next
    (runs before the first ``arbitrate`` have no frame and are left out)."""
    frames: list[dict[str, int]] = []
    for step, cycles, *_ in runs:
        if step == "arbitrate":
            frames.append(dict.fromkeys(STEP_ORDER, 0))
        if frames:
            frames[-1][step] += int(cycles)
    return frames


def _stats(values) -> dict:
    values = list(values)
    if not values:
        return {"min": 0, "mean": 0.0, "max": 0, "frames": 0}
    return {"min": min(values), "mean": sum(values) / len(values), "max": max(values),
            "frames": len(values)}


def summarize(outcome, *, clock_hz: float, lanes: int, model: str = "", audio: str = "",
              reference: str = "", wall_s: float | None = None) -> dict:
    """The report of one utterance as plain JSON types.

    Parameters
    ----------
    outcome : sim.run_utterance.Outcome
        Or any object with ``rtl``, ``golden`` (``Result.to_dict()``), ``runs``,
        ``differences`` and ``sim`` (``dense_macs`` per step, ``step_cycles``,
        ``settings`` with the end-pointer's, ``bus_words``, ``load_cycles``, ``wall_s``,
        ``image_config``).
    clock_hz : float
        Processor clock for the real-time factor and latencies (the run's cost model
        speed).
    lanes : int
        MAC lanes of the processor.
    model, audio, reference : str
        Labels: model and audio names, the reference transcript if known.
    wall_s : float, optional
        Wall time of the whole run.
    """
    if not clock_hz > 0:
        raise ValueError(f"clock_hz must be positive, got {clock_hz!r}")
    if lanes not in (4, 8, 16):
        raise ValueError(f"lanes must be 4, 8 or 16, got {lanes!r}")
    res, runs, sim = outcome.rtl, outcome.runs, outcome.sim
    ep = EndpointerConfig(**sim["settings"]["endpointer"])
    per_frame = frame_cycles(runs)
    totals = {f: sum(int(r[i]) for r in runs) for i, f in enumerate(RUN_FIELDS) if i}
    calls = {s: sum(1 for r in runs if r[0] == s) for s in STEP_ORDER}
    dense = sum(calls[s] * sim["dense_macs"][s] for s in STEP_ORDER)
    nonzero = totals["macs"] + totals["zero_acts"]
    cycles_per_step = {
        s: _stats(f[s] for f in per_frame
                  if not s.startswith("encoder") or f[s]) for s in STEP_ORDER}
    cycles_per_step["total"] = _stats(sum(f.values()) for f in per_frame)
    cost = res["cost"]
    audio_s = res["audio_ms"] / 1000.0
    device_s = totals["cycles"] / clock_hz
    endpoints = [e for e in res["events"] if e["kind"] != "partial"]
    finals = [e for e in endpoints if e["kind"] == "final"]
    if finals and finals[0]["reason"] == "silence":
        speech_end = finals[0]["time_ms"] - ep.final_silence_ms
        to_final = finals[0]["device_ms"] - speech_end
    else:
        speech_end, to_final = res["audio_ms"], res["latency_ms"]
    frame_shift = cost["frame_shift_ms"]
    return {
        "schema": "nep.sim-utterance/1",
        "model": model, "audio": audio, "reference": reference,
        "equal": not outcome.differences, "differences": list(outcome.differences),
        "clock_mhz": clock_hz / 1e6, "lanes": lanes,
        "transcript": res["text"], "nbest": res["nbest"], "endpoints": endpoints,
        "branch_frames": res["branch_frames"], "decoded_frames": res["decoded_frames"],
        "num_frames": res["num_frames"], "stopped_at": res["stopped_at"],
        "audio_ms": res["audio_ms"],
        "step_cycles": sim["step_cycles"], "calls": calls,
        "cycles_per_frame": cycles_per_step,
        # The cost model charged each frame exactly the cycles the RTL counted.
        "cost_model_matches": [sum(f.values()) for f in per_frame]
        == [int(f["cost"]) for f in cost["frames"]],
        "totals": {**totals, "dense_macs": dense, "nonzero_macs": nonzero},
        "mac_busy": nonzero / lanes / totals["cycles"] if totals["cycles"] else 0.0,
        "skipped_zero_weights": (dense - nonzero) / dense if dense else 0.0,
        "skipped_zero_activations": totals["zero_acts"] / nonzero if nonzero else 0.0,
        "real_time_factor": device_s / audio_s if audio_s else 0.0,
        "frame_budget_cycles": clock_hz * frame_shift / 1000.0,
        "latency_ms": res["latency_ms"],
        "speech_end_ms": speech_end,
        "speech_end_to_final_ms": to_final,
        "max_backlog_ms": cost["backlog"]["max_ms"],
        "per_frame": {
            "time_ms": [f["frame"] * frame_shift for f in cost["frames"]],
            "branch": res["decisions"],
            "backlog_ms": cost["backlog"]["ms"],
            "cycles": {s: [f[s] for f in per_frame] for s in STEP_ORDER},
        },
        "sim": {"wall_s": wall_s, "pipeline_wall_s": sim["wall_s"],
                "bus_words": sim["bus_words"], "load_cycles": sim["load_cycles"],
                "processor": sim["image_config"]},
        "rtl_result": res,
    }


def format_report(s: dict) -> str:
    """The summary as text for a terminal."""
    lines = [f"result      {'RTL == golden, bit for bit' if s['equal'] else 'RTL != golden on '}"
             f"{', '.join(s['differences'])} (transcript, N-best, lattice, events, "
             "decisions, cost)",
             f"transcript  {s['transcript']!r}"]
    if s["reference"]:
        lines.append(f"reference   {s['reference']!r}")
    lines.append("n-best")
    for i, h in enumerate(s["nbest"], 1):
        lines.append(f"  {i}. {h['score']:9.3f} (per token {h['normalized_score']:7.3f})  "
                     f"{h['text']!r}")
    lines.append("end points" + ("" if s["endpoints"] else "  none"))
    for e in s["endpoints"]:
        lines.append(f"  {e['kind']:<11} frame {e['frame']:4d}  audio {e['time_ms']:8.1f} ms  "
                     f"device {e['device_ms']:8.1f} ms  {e['reason']}")
    n = s["decoded_frames"]
    lines.append(f"frames      {n} decoded of {s['num_frames']}: " + ", ".join(
        f"{b} {k} ({100.0 * k / n if n else 0.0:.0f}%)" for b, k in s["branch_frames"].items()))
    per_call = ", ".join(f"{k} {v}" for k, v in s["step_cycles"].items())
    lines.append(f"cycles per frame (RTL; per call: {per_call})")
    lines.append(f"  {'step':<13}{'min':>9}{'mean':>11}{'max':>9}{'frames':>8}")
    for step, st in s["cycles_per_frame"].items():
        lines.append(f"  {step:<13}{st['min']:>9}{st['mean']:>11.1f}{st['max']:>9}"
                     f"{st['frames']:>8}")
    t = s["totals"]
    lines += [
        f"  budget       {s['frame_budget_cycles']:.0f} cycles per frame at "
        f"{s['clock_mhz']:g} MHz; cost model {'==' if s['cost_model_matches'] else '!='} "
        "RTL cycles",
        f"MAC array   {100 * s['mac_busy']:.1f}% busy ({t['nonzero_macs']} nonzero MACs "
        f"in {t['cycles']} cycles, {s['lanes']} lanes)",
        f"MACs skipped {100 * s['skipped_zero_weights']:.1f}% for zero weights (of "
        f"{t['dense_macs']} dense), {100 * s['skipped_zero_activations']:.1f}% of the rest "
        "gated for zero activations",
        f"speed       real-time factor {s['real_time_factor']:.4f} at {s['clock_mhz']:g} MHz "
        f"({t['cycles'] / s['clock_mhz'] / 1e3:.1f} ms of device time for "
        f"{s['audio_ms'] / 1e3:.2f} s of audio); max backlog {s['max_backlog_ms']:.1f} ms",
        f"latency     {s['speech_end_to_final_ms']:.1f} ms from end of speech "
        f"({s['speech_end_ms']:.0f} ms) to the final result; {s['latency_ms']:.2f} ms from "
        "the last decoded frame's audio",
    ]
    sim = s["sim"]
    wall = f"{sim['wall_s']:.0f} s in all, " if sim["wall_s"] is not None else ""
    lines.append(f"simulation  {wall}{sim['pipeline_wall_s']:.0f} s for the pipeline on the "
                 f"RTL; bus: {sim['bus_words']['written']} scratch words written, "
                 f"{sim['bus_words']['read']} read")
    return "\n".join(lines)


def plot_report(s: dict, path) -> None:
    """Branch choice with end-point events, backlog, and cycles per frame (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pf = s["per_frame"]
    t = [x / 1000.0 for x in pf["time_ms"]]
    fig, (ax_b, ax_q, ax_c) = plt.subplots(3, 1, sharex=True, figsize=(10, 7.5),
                                          height_ratios=(1, 1.2, 2))
    ax_b.step(t, pf["branch"], where="post", color="tab:blue")
    ax_b.set_yticks([0, 1], ["fast", "slow"])
    ax_b.set_ylim(-0.3, 1.3)
    text = s["transcript"] if len(s["transcript"]) <= 60 else s["transcript"][:57] + "..."
    ax_b.set_title(f"{Path(s['audio']).name} on {Path(s['model']).name}: {text!r}", fontsize=9)
    colors = {"speculative": "tab:orange", "revision": "tab:purple", "final": "tab:red"}
    labelled = set()
    for e in s["endpoints"]:
        for ax in (ax_b, ax_q, ax_c):
            first = ax is ax_b and e["kind"] not in labelled
            ax.axvline(e["time_ms"] / 1000.0, color=colors.get(e["kind"], "k"), ls="--",
                       lw=1, label=e["kind"] if first else None)
        labelled.add(e["kind"])
    if s["endpoints"]:
        ax_b.legend(loc="upper right", fontsize=8)
    ax_b.set_ylabel("branch")
    ax_q.plot(t, pf["backlog_ms"], color="tab:green")
    ax_q.set_ylabel("backlog (ms)")
    bottom = [0] * len(t)
    width = (t[1] - t[0]) if len(t) > 1 else 0.03
    for step in STEP_ORDER:
        ys = pf["cycles"][step][:len(t)]
        ax_c.bar(t, ys, width=width, bottom=bottom, align="edge", label=step)
        bottom = [b + y for b, y in zip(bottom, ys)]
    budget = s["frame_budget_cycles"]
    if budget <= 2 * max(bottom, default=0):  # else it would flatten the bars
        ax_c.axhline(budget, color="k", lw=1, label="real-time budget")
    ax_c.set_title(f"real-time budget {budget:.0f} cycles per frame at {s['clock_mhz']:g} MHz",
                   fontsize=9)
    ax_c.set_ylim(0, 1.35 * max(bottom + [budget if budget <= 2 * max(bottom, default=0)
                                           else 0], default=1))  # room for the legend
    ax_c.set_ylabel("cycles per frame")
    ax_c.set_xlabel("audio time (s)")
    ax_c.legend(loc="upper right", fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
