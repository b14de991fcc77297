"""The benchmark model's compute steps measured on the RTL (``NepTop`` under Verilator).

The model of ``sim.steps_bench`` (default ``ModelConfig``, ``random_float_model`` seed 0,
the same calibration and feature vector) quantized "int4, 90% sparse", compiled for the
smallest ``ProcessorConfig`` that holds it (8 lanes), built with behavioural weight and
param RAMs, and driven by ``sim.cocotb_rtl_steps``: the image loaded through the
AXI4-Lite bus, each step run once, CYCLES and MACS read through the bus. The ISS runs the
same programs on the same inputs (``iss_cycles``). Only that variant: the other two need
larger memories than this build (their records stay ISS-only).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from compiler.compile import Image, compile_model
from compiler.isa import ProcessorConfig
from golden.model import ModelConfig, random_float_model
from golden.quantize import quantize_model
from golden.tokens import default_tokens
from sim import toolchain
from sim.steps_bench import VARIANTS

VARIANT = "int4, 90% sparse"
TOPLEVEL = "nep_top"


def fitted_config(image: Image) -> ProcessorConfig:
    """The smallest configuration (same lanes) whose memories hold ``image``."""
    layers = image.memory_map["layers"].values()
    return replace(image.config, program_depth=len(image.program),
                   weight_depth=len(image.weights), param_depth=len(image.params),
                   scratch_depth=image.memory_map["scratch_used"],
                   desc_depth=len(image.descriptors), const_depth=len(image.constants),
                   max_rows=max(v["rows"] for v in layers),
                   max_cols=max(v["cols"] for v in layers))


def bench_image() -> tuple[Image, np.ndarray]:
    """The int4 benchmark image (fitted config) and steps_bench's feature vector for it."""
    config = ModelConfig(vocabulary=tuple(default_tokens()))
    fm = random_float_model(config, seed=0)
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((40, config.feature_dim))]
    model = quantize_model(fm, calib, quant=VARIANTS[VARIANT])
    # steps_bench draws the first variant's features right after the calibration.
    assert next(iter(VARIANTS)) == VARIANT
    feat = np.clip(rng.normal(0, 40, config.feature_dim), -128, 127).astype(np.int8)
    image = compile_model(model, fitted_config(compile_model(model)))
    return image, feat


def rtl_step_records() -> list[dict]:
    from hw.nep_top import NepTop
    from sim.harness import SIM_RAM_VERILOG

    image, feat = bench_image()
    cfg = image.config
    build_dir = toolchain.build(NepTop(cfg, sim_rams=True), TOPLEVEL,
                                extra_sources=[SIM_RAM_VERILOG])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "bench.nepimg").write_bytes(image.to_bytes())
        (tmp / "feat.json").write_text(json.dumps(feat.astype(int).tolist()))
        report = tmp / "report.json"
        xml = toolchain.run_cocotb(
            build_dir, TOPLEVEL, "sim.cocotb_rtl_steps",
            env={"NEP_IMAGE": str(tmp / "bench.nepimg"), "NEP_FEAT": str(tmp / "feat.json"),
                 "NEP_RTL_STEPS_REPORT": str(report), "COCOTB_LOG_LEVEL": "WARNING",
                 "PYTHONWARNINGS": "ignore::DeprecationWarning"})
        if not report.exists():
            raise RuntimeError(f"RTL step run failed; see {xml}")
        steps = json.loads(report.read_text())["steps"]
    out = []
    for s in steps:
        # A lane slot is busy on every nonzero weight, zero activation or not (the RTL
        # gates the multiplier then and counts it in ZERO_ACTS instead of MACS).
        macs = s["macs"] + s["zero_acts"]
        ideal = macs / cfg.lanes
        out.append({"model": VARIANT, "step": s["step"], "lanes": cfg.lanes,
                    "cycles": s["cycles"], "macs": macs, "ideal_cycles": ideal,
                    "mac_busy": ideal / s["cycles"] if s["cycles"] else 0.0,
                    "source": "rtl", "iss_cycles": s["iss_cycles"]})
    return out


if __name__ == "__main__":
    for r in rtl_step_records():
        print(r)
