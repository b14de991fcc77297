"""The real step sequence of compiled models on ``NepTop``'s generated Verilog under
Verilator, through its AXI4-Lite bus (cocotbext-axi), every program compared with
``compiler.iss.Machine`` (``sim.cocotb_nep_steps``).

The build is ``tests/rtl/test_nep_top_rtl.py``'s (same component, configuration and
sources: one cached Verilator model). Three small random models of different sizes,
sparsities and weight encodings, each loaded through the bus and run for ``FRAMES``
frames (arbitrate, the branch RESULT chooses, predictor, joint) with at least five
branch switches, plus a weight word corrupted through the bus (the ISS's CRC_STREAM
error and interrupt, then restore, soft reset and recovery). Each image is also compared
frame by frame with a ``golden.backend.GoldenBackend`` of the QuantModel it was compiled
from (arbitrator decision, ``enc``, ``pred.h``, logits, and the final LSTM states).
"""

import json
from pathlib import Path

import numpy as np
from cocotb_tools.check_results import get_results

from compiler.compile import compile_model
from golden.model import ModelConfig, QuantConfig, random_float_model, save_model
from golden.quantize import quantize_model
from hw.nep_top import NepTop
from sim import toolchain
from sim.cocotb_nep_top import CFG, TOPLEVEL
from sim.harness import SIM_RAM_VERILOG

FRAMES = 50
VOCAB = ("<b>", "a", "b", "c", "d")
#: (encoding, sparsity, float-model seed, sizes): different sizes, sparsities, encodings.
MODELS = (
    ("int4", 0.9, 1, dict(feature_dim=8, fast_hidden=4, slow_hidden=6, enc_dim=6,
                          arbitrator_hidden=4, pred_embed=4, pred_hidden=4, joint_dim=6)),
    ("codebook4", 0.5, 6, dict(feature_dim=10, fast_hidden=6, slow_hidden=8, enc_dim=8,
                               arbitrator_hidden=6, pred_embed=4, pred_hidden=6,
                               joint_dim=8)),
    ("int8", 0.0, 7, dict(feature_dim=6, fast_hidden=4, slow_hidden=5, enc_dim=4,
                          arbitrator_hidden=3, pred_embed=3, pred_hidden=4, joint_dim=5)),
)


def quant_model(encoding: str, sparsity: float, seed: int, sizes: dict):
    """The golden QuantModel of one ``MODELS`` entry."""
    quant = QuantConfig(weight_encoding=encoding, sparsity=sparsity)
    mc = ModelConfig(vocabulary=VOCAB, quant=quant, **sizes)
    rng = np.random.default_rng(seed + 100)
    return quantize_model(random_float_model(mc, seed=seed),
                          [rng.standard_normal((40, mc.feature_dim))], quant=quant)


def model_image(encoding: str, sparsity: float, seed: int, sizes: dict):
    return compile_model(quant_model(encoding, sparsity, seed, sizes), CFG, fuse_lstm=True)


def test_step_sequences_through_the_bus_match_the_iss(tmp_path):
    paths, golden = [], []
    for k, spec in enumerate(MODELS):
        model = quant_model(*spec)
        paths.append(tmp_path / f"model{k}.nepimg")
        paths[-1].write_bytes(compile_model(model, CFG, fuse_lstm=True).to_bytes())
        golden.append(tmp_path / f"model{k}.npz")  # the golden model the image came from
        save_model(model, golden[-1])
    report = tmp_path / "report.json"
    build_dir = toolchain.build(NepTop(CFG, sim_rams=True), TOPLEVEL,
                                extra_sources=[SIM_RAM_VERILOG])
    xml = toolchain.run_cocotb(
        build_dir, TOPLEVEL, "sim.cocotb_nep_steps",
        env={"NEP_IMAGES": ":".join(map(str, paths)),
             "NEP_MODELS": ":".join(map(str, golden)), "NEP_SEED": "5",
             "NEP_FRAMES": str(FRAMES), "NEP_STEPS_REPORT": str(report),
             "COCOTB_LOG_LEVEL": "WARNING",
             # cocotbext-axi 0.1.28 still uses cocotb's deprecated Event.data
             "PYTHONWARNINGS": "ignore::DeprecationWarning"})
    n_tests, n_failed = get_results(Path(xml))
    assert (n_tests, n_failed) == (1, 0), toolchain.failures(Path(xml))
    models = json.loads(report.read_text())
    assert [m["frames"] for m in models] == [FRAMES] * len(MODELS)
    assert all(m["switches"] >= 5 for m in models), models
    # The direct golden comparison ran on every frame of every model (and the states).
    assert all(m["golden_frames"] >= FRAMES >= 50 for m in models), models
    assert all(m["golden_states"] == 8 for m in models), models
    assert models[0]["engine_error"]["error"] == "CRC_STREAM", models[0]
