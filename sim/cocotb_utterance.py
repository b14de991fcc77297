"""cocotb side of ``make sim``: one utterance through the golden pipeline on ``NepTop``.

The job (``NEP_UTTERANCE_JOB``, a JSON file written by ``sim.run_utterance``) names the
image, the utterances (float samples in ``.npy`` files), the pipeline settings and where
to write the outcome. The image is loaded (``HostBus.load``), then for each utterance the
synchronous golden :class:`~golden.pipeline.Recognizer` runs in a thread
(``cocotb.task.bridge``) on a :class:`sim.rtl_backend.RtlBackend`, whose steps run on the
simulated device. A tqdm bar counts the frames the device has decoded.

The outcome JSON has one entry per utterance: ``result`` (``Result.to_dict()``), ``runs``
(per program run: step, cycles, instructions, MACs, zero activations, stalls),
``bus_words``, ``load_cycles`` and ``wall_s``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.task import bridge

from compiler.compile import load_image
from golden.frontend import FrontendConfig
from sim.cocotb_nep_top import _setup
from sim.rtl_backend import CLOCK_NS, HostBus, RtlBackend
from sim.run_utterance import Settings

JOB = os.environ.get("NEP_UTTERANCE_JOB")


def transcribe(rec, backend: RtlBackend, audio: np.ndarray, progress: bool):
    """Push the audio one encoder frame at a time; a tqdm bar counts the decoded frames."""
    from tqdm import tqdm

    cfg = rec.frontend_config
    hop = cfg.encoder_stride
    start = backend.calls["arbitrate"]
    with tqdm(total=cfg.num_frames(len(audio)), unit="frame", desc="RTL", file=sys.stderr,
              disable=not progress, mininterval=0.5) as bar:
        for i in range(0, len(audio), hop):
            rec.push(audio[i:i + hop])
            bar.update(backend.calls["arbitrate"] - start - bar.n)
        result = rec.finish()
        bar.update(backend.calls["arbitrate"] - start - bar.n)
    return result


@cocotb.test()
async def utterances_on_the_rtl(dut):
    """The job's utterances, one after the other, through the pipeline with every step on
    the device (the image loaded once)."""
    assert JOB, "NEP_UTTERANCE_JOB is not set"
    job = json.loads(Path(JOB).read_text())
    image = load_image(Path(job["image"]).read_bytes())
    settings = Settings.from_dict(job["settings"])

    bus = HostBus(dut, (await _setup(dut, pause=0.0, seed=0)).axi, image)
    t0 = cocotb.utils.get_sim_time("ns")
    await bus.load()
    load_cycles = int((cocotb.utils.get_sim_time("ns") - t0) // CLOCK_NS)

    backend = RtlBackend(bus, step_cycles=settings.step_cycles)
    frontend = FrontendConfig.from_dict(backend.model_config.frontend)
    rec = settings.recognizer(backend, frontend)
    outs = []
    for path in job["audios"]:
        first_run, words = len(backend.runs), dict(backend.bus_words)
        wall = time.perf_counter()
        result = await bridge(transcribe)(rec, backend, np.load(path), job["progress"])
        outs.append({
            "result": result.to_dict(),
            "runs": [[r.step, r.cycles, r.instructions, r.macs, r.zero_acts, r.stalls]
                     for r in backend.runs[first_run:]],
            "bus_words": {k: v - words[k] for k, v in backend.bus_words.items()},
            "load_cycles": load_cycles, "wall_s": time.perf_counter() - wall})
    Path(job["out"]).write_text(json.dumps(outs))
