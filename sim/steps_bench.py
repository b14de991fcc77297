"""Per-step processor figures for ``make bench``: ``build/reports/steps.json``.

For the benchmark model (the default 1.27 M-parameter network, random weights, quantized
three ways) each compute step runs once on the instruction-level simulator (records with
``"source": "iss"``), and the int4 90%-sparse variant also on the RTL (``nep_top`` under
Verilator, loaded through its AXI4-Lite bus: ``"source": "rtl"``, ``sim.rtl_steps``).
"""

from __future__ import annotations

import numpy as np

from compiler.iss import IssBackend
from golden.model import FAST, SLOW, ModelConfig, QuantConfig, random_float_model
from golden.quantize import quantize_model
from golden.tokens import default_tokens

VARIANTS = {
    "int4, 90% sparse": QuantConfig(weight_encoding="int4", sparsity=0.9),
    "codebook4, 50% sparse": QuantConfig(weight_encoding="codebook4", sparsity=0.5),
    "int8, dense": QuantConfig(weight_encoding="int8", sparsity=0.0),
}


def step_records() -> list[dict]:
    config = ModelConfig(vocabulary=tuple(default_tokens()))
    fm = random_float_model(config, seed=0)
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((40, config.feature_dim))]
    records = []
    for name, quant in VARIANTS.items():
        model = quantize_model(fm, calib, quant=quant)
        iss = IssBackend(model)
        feat = np.clip(rng.normal(0, 40, config.feature_dim), -128, 127).astype(np.int8)
        iss.arbitrate(feat, 0)
        enc, _ = iss.encoder_step(FAST, feat, iss.initial_encoder_state())
        iss.encoder_step(SLOW, feat, iss.initial_encoder_state())
        pred, _ = iss.predictor(0, iss.initial_predictor_state())
        iss.joint(enc, pred)
        lanes = iss.image.config.lanes
        for step, run in iss.runs:
            records.append({"model": name, "step": step, "lanes": lanes,
                            "cycles": run.cycles, "macs": run.macs,
                            "ideal_cycles": run.ideal_cycles, "mac_busy": run.mac_busy,
                            "source": "iss"})
    return records


def print_table(records: list[dict]) -> None:
    print(f"\n{'model':<22} {'step':<13} {'source':>6} {'cycles':>8} {'ideal':>8} "
          f"{'MAC busy':>8}")
    for r in records:
        print(f"{r['model']:<22} {r['step']:<13} {r['source']:>6} {r['cycles']:>8} "
              f"{r['ideal_cycles']:>8.0f} {r['mac_busy']:>8.3f}")
    enc = [r for r in records if r["source"] == "rtl" and r["step"].startswith("enc")]
    worst = min(enc, key=lambda r: r["mac_busy"])
    verdict = "PASS" if worst["mac_busy"] >= 0.8 else "MISS"
    print(f"\n{verdict}  MAC array busy >= 80% of an encoder step (RTL, {worst['model']}): "
          f"worst {worst['mac_busy']:.3f} ({worst['step']})")
