"""``make accuracy``: WER, size, arbitration, end-pointing and biasing on the held-out set.

``python -m sim.accuracy`` runs the golden pipeline (``golden.pipeline.Recognizer``) on
every utterance of the shipped test set (``data/testset``) for

* each model variant of :data:`VARIANTS`: the float reference model (through
  :class:`FloatBackend`) and the integer models (int8, 4-bit, 4-bit at 50% and 75%
  sparsity) on :class:`golden.backend.GoldenBackend`;
* the deployed variant (:data:`DEPLOYED`) with the slow branch forced on every frame
  (:class:`AlwaysSlowBackend`), to price the arbitrator;
* the deployed variant with the contact names of ``data.vocabulary`` as biasing context;
* the deployed variant arbitrated and always slow again with greedy search (the search
  whose device costs the arbitrator was trained with),

and writes ``build/reports/accuracy.json`` and ``docs/accuracy.md`` (the tables, the
goals of issue 7 marked met or missed, and how long the run took). Definitions of every
figure are in the generated document (:func:`render_markdown`).

Every run decodes the whole audio (``after_final="continue"``) with beam 4 (unless
greedy), the default end-pointer, and the cost model at the device speed the model was
trained for (``models/demo.json``); the text at the final end point is what a device
that stops there would return. Each utterance's background (its trailing non-speech
segment, mirrored) is continued to :data:`TRAILING_SILENCE_MS` so the end-pointers can
fire on every file. Torch is not needed: the variants are model files (``models/``),
and missing integer variants are quantized here from the float model with
``golden.quantize.quantize_model``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

import numpy as np

from compiler.compile import CompileError
from compiler.iss import IssBackend
from golden.arbitration import CostModel
from golden.backend import STEPS, GoldenBackend, MacCost, step_macs
from golden.frontend import FrontendConfig
from golden.model import (
    FAST,
    SLOW,
    FloatModel,
    QuantConfig,
    QuantModel,
    layer_specs,
    load_model,
)
from golden.pipeline import Recognizer
from golden.quantize import quantize_model
from golden.wav import load_audio
from golden.weights import Encoding, compress
from golden.wer import corpus_errors, paired_bootstrap, word_errors

__all__ = [
    "DEPLOYED",
    "GOALS",
    "RUNS",
    "TRAILING_SILENCE_MS",
    "VARIANTS",
    "AlwaysSlowBackend",
    "FloatBackend",
    "TestUtterance",
    "Variant",
    "contact_names",
    "evaluate",
    "extend_background",
    "float_model_size",
    "load_testset",
    "load_variants",
    "main",
    "quant_model_size",
    "render_markdown",
    "step_cycles",
    "summarize",
    "trained_device_speed",
]


@dataclass(frozen=True)
class Variant:
    """A model variant of the WER table.

    Attributes
    ----------
    key : str
        Run name; also the file stem looked up in the models directory.
    label : str
        Name in the table.
    quant : QuantConfig or None
        How to quantize the float model when no file is shipped; None for the float model.
    """

    key: str
    label: str
    quant: QuantConfig | None


VARIANTS = (
    Variant("float", "float", None),
    Variant("int8", "int8", QuantConfig(weight_encoding="int8")),
    Variant("int4", "4-bit", QuantConfig(weight_encoding="int4")),
    Variant("int4_s50", "4-bit, 50% sparse", QuantConfig(weight_encoding="int4", sparsity=0.5)),
    Variant("int4_s75", "4-bit, 75% sparse", QuantConfig(weight_encoding="int4", sparsity=0.75)),
)
#: The variant the device runs (``models/demo.npz``): arbitration, end-pointing and
#: biasing are measured on it.
DEPLOYED = "int4_s50"
#: Runs of the deployed model besides its own: its arbitrator overruled (always slow),
#: with the contact names as context, and the arbitrator pair again with greedy search
#: (the search the arbitrator's training assumed when it simulated the device).
DEPLOYED_RUNS = ("always_slow", "biased", "greedy", "greedy_always_slow")
#: Runs per utterance: every variant, then the deployed model's other runs.
RUNS = tuple(v.key for v in VARIANTS) + DEPLOYED_RUNS
#: Arbitrator comparisons: search name -> (arbitrated run, always-slow run).
ARBITRATION_PAIRS = {"beam": (DEPLOYED, "always_slow"),
                     "greedy": ("greedy", "greedy_always_slow")}
#: File names in the models directory: the float model, the deployed model, and the
#: training summary (``train/finalize.py``) that records the device speed trained for.
FLOAT_FILE, DEPLOYED_FILE, SUMMARY_FILE = "demo_float.npz", "demo.npz", "demo.json"
#: Non-speech after the end of speech that every utterance is extended to (ms).
TRAILING_SILENCE_MS = 2000.0
#: Beam width of every run (the pipeline's default; biasing needs at least 2).
BEAM = 4
#: Calibration utterances taken from the training features for a derived variant.
CALIBRATION_UTTERANCES = 64
#: Goals of issue 7.
GOALS = {
    "quantization_wer_points": 1.0,  # 4-bit 50% sparse within 1 point WER of float
    "compute_saved": 0.40,  # the arbitrator saves >= 40% of always-slow compute ...
    "arbitration_wer_points": 0.5,  # ... at <= 0.5 point WER cost
}


# ---------------------------------------------------------------------------- test set


@dataclass(frozen=True)
class TestUtterance:
    """One held-out utterance.

    Attributes
    ----------
    file : str
        WAV file name in the test-set directory.
    path : str
    transcript : str
    speech_end_ms : float
        End of speech: ``duration_s - trail_s`` of the manifest (the synthesized speech
        was trimmed at amplitude 1e-3 before the silence was added, so this is the last
        audible sample of speech).
    trail_ms : float
        Trailing non-speech in the file.
    names : tuple of str
        Contact names in the transcript (possessive ``'s`` removed), in order.
    """

    __test__ = False  # not a pytest test class

    file: str
    path: str
    transcript: str
    speech_end_ms: float
    trail_ms: float
    names: tuple[str, ...]


def contact_names(text: str, contacts: Sequence[str]) -> tuple[str, ...]:
    """Contact names occurring as words of ``text`` (``name`` or ``name's``), in order."""
    known = set(contacts)
    out = []
    for word in text.split():
        base = word[:-2] if word.endswith("'s") else word
        if base in known:
            out.append(base)
    return tuple(out)


def _contacts() -> tuple[str, ...]:
    from data.vocabulary import CONTACTS
    return tuple(CONTACTS)


def load_testset(directory: str | Path) -> list[TestUtterance]:
    """Read ``manifest.tsv`` of a test-set directory.

    Raises
    ------
    ValueError
        If the manifest lacks the silence columns or has inconsistent durations.
    """
    from data.make_dataset import read_manifest

    directory = Path(directory)
    rows = read_manifest(directory / "manifest.tsv")
    contacts = _contacts()
    out = []
    for k, row in enumerate(rows, start=2):
        try:
            duration, trail = float(row["duration_s"]), float(row["trail_s"])
        except (KeyError, ValueError):
            raise ValueError(f"{directory / 'manifest.tsv'}:{k}: needs numeric duration_s "
                             "and trail_s columns") from None
        if not 0.0 <= trail < duration:
            raise ValueError(f"{directory / 'manifest.tsv'}:{k}: trail_s {trail} must be in "
                             f"[0, duration_s {duration})")
        out.append(TestUtterance(row["file"], str(directory / row["file"]), row["transcript"],
                                 1000.0 * (duration - trail), 1000.0 * trail,
                                 contact_names(row["transcript"], contacts)))
    return out


def extend_background(samples: np.ndarray, trail: int, total: int) -> np.ndarray:
    """Continue the last ``trail`` samples (non-speech) until ``total`` trailing samples.

    The segment is appended alternately reversed and forward, so the signal has no jump
    at the joins (a jump would sound like a click).
    """
    samples = np.asarray(samples, np.float64)
    if not 0 < trail <= len(samples):
        raise ValueError(f"trail must be in 1..{len(samples)} samples, got {trail}")
    need = total - trail
    if need <= 0:
        return samples
    seg = samples[-trail:]
    reps = [seg[::-1] if k % 2 == 0 else seg for k in range(-(-need // trail))]
    return np.concatenate([samples, *reps])[:len(samples) + need]


# ---------------------------------------------------------------------------- backends


class FloatBackend:
    """:class:`golden.backend.Backend` running a :class:`~golden.model.FloatModel`.

    The float reference in the same pipeline as the integer models: int8 front-end
    features are read as ``q * feature_scale`` (the scale the integer models are
    quantized with), the arbitrator gets the backlog in frames, and the encoder and
    predictor outputs are float64 vectors. The decoder takes integer logits, so the float
    logits are rounded to :data:`LOGIT_STEP` (``logit_scale``): 2**-16 nats, far below
    any difference that changes a search decision in practice.

    Parameters
    ----------
    model : FloatModel
    feature_scale : float
        Real value of one int8 feature step.
    """

    #: Logit resolution handed to the decoder.
    LOGIT_STEP = 2.0 ** -16

    def __init__(self, model: FloatModel, *, feature_scale: float):
        if not isinstance(model, FloatModel):
            raise TypeError(f"FloatBackend needs a FloatModel, got {type(model).__name__}")
        if isinstance(feature_scale, bool) or not isinstance(feature_scale, Real) \
                or not math.isfinite(feature_scale) or feature_scale <= 0:
            raise ValueError(f"feature_scale must be a finite positive number, "
                             f"got {feature_scale!r}")
        self.float_model = model
        self.feature_scale = float(feature_scale)
        self.logit_scale = self.LOGIT_STEP
        self.vocabulary = model.config.vocabulary
        weights = {name: model.tensors[f"{name}.weight"] for name in layer_specs(model.config)}
        layer_macs = {n: MacCost(w.size, int(np.count_nonzero(w))) for n, w in weights.items()}
        self._costs = {step: step_macs(layer_macs, step) for step in STEPS}

    def _feat(self, feat_int8) -> np.ndarray:
        return np.asarray(feat_int8, np.float64) * self.feature_scale

    def arbitrate(self, feat_int8, backlog_q: int) -> int:
        return self.float_model.arbitrate(self._feat(feat_int8), float(backlog_q))

    def encoder_step(self, branch: int, feat_int8, state):
        return self.float_model.encoder_step(branch, self._feat(feat_int8), state)

    def predictor_step(self, token: int, state):
        return self.float_model.predictor_step(token, state)

    predictor = predictor_step

    def joint(self, enc, pred) -> np.ndarray:
        logits = self.float_model.joint(enc, pred)
        return np.round(logits / self.LOGIT_STEP).astype(np.int64)

    def initial_encoder_state(self):
        return self.float_model.initial_encoder_state()

    def initial_predictor_state(self):
        return self.float_model.initial_predictor_state()

    def step_cost(self, step: str) -> MacCost:
        if step not in self._costs:
            raise ValueError(f"unknown step {step!r}; expected one of {STEPS}")
        return self._costs[step]


class AlwaysSlowBackend(GoldenBackend):
    """The golden backend with the arbitrator overruled: every frame runs the slow branch.

    The arbitrator's cost is still charged by the pipeline; :func:`summarize` removes it
    from the always-slow baseline (a device without an arbitrator would not run it).
    """

    def arbitrate(self, feat_int8, backlog_q: int) -> int:
        return SLOW


# ---------------------------------------------------------------------------- models


def _load(path: Path, kind: type):
    model = load_model(path)
    if not isinstance(model, kind):
        raise ValueError(f"{path}: expected a {'float' if kind is FloatModel else 'integer'} "
                         "model file")
    return model


def _calibration(path: Path | None) -> list[np.ndarray]:
    from data.features import read_features

    if path is None or not Path(path).exists():
        raise FileNotFoundError(
            f"calibration features {path} not found: an integer variant is not shipped in "
            "the models directory, so it must be quantized here from the float model; "
            "generate the training set (make dataset) or pass --calibration")
    fs = read_features(path)
    scale = fs.frontend.feature_scale
    n = min(len(fs), CALIBRATION_UTTERANCES)
    return [fs.utterance(i)[0].astype(np.float64) * scale for i in range(n)]


def load_variants(models_dir: str | Path, *, calibration: str | Path | None = None,
                  variants: Sequence[Variant] = VARIANTS) -> dict[str, FloatModel | QuantModel]:
    """The models of the table, by variant key.

    The float model is ``<models_dir>/demo_float.npz``; the deployed variant is
    ``demo.npz``; any variant may be shipped as ``<key>.npz``. A missing integer variant
    is quantized from the float model (``quantize_model`` with the variant's
    ``QuantConfig``, the front end's feature scale and the first
    :data:`CALIBRATION_UTTERANCES` utterances of ``calibration``, a ``features.npz``).

    Raises
    ------
    FileNotFoundError
        If the float model is missing, or calibration features are needed and missing.
    ValueError
        If a file holds the wrong kind of model or a variant's front end differs.
    """
    models_dir = Path(models_dir)
    float_path = models_dir / FLOAT_FILE
    if not float_path.exists():
        raise FileNotFoundError(f"{float_path} not found: train and export a model first "
                                "(make train)")
    fm = _load(float_path, FloatModel)
    fe = FrontendConfig.from_dict(fm.config.frontend)
    models: dict[str, FloatModel | QuantModel] = {}
    calib = None
    for v in variants:
        if v.quant is None:
            models[v.key] = fm
            continue
        path = models_dir / (DEPLOYED_FILE if v.key == DEPLOYED else f"{v.key}.npz")
        if path.exists():
            qm = _load(path, QuantModel)
            q = qm.config.quant
            if (q.weight_encoding, q.sparsity) != (v.quant.weight_encoding, v.quant.sparsity):
                raise ValueError(f"{path}: is {q.weight_encoding} at sparsity {q.sparsity}, "
                                 f"expected {v.quant.weight_encoding} at {v.quant.sparsity}")
        else:
            calib = _calibration(calibration) if calib is None else calib
            qm = quantize_model(fm, calib, quant=v.quant, feature_scale=fe.feature_scale)
        if qm.config.frontend != fm.config.frontend:
            raise ValueError(f"variant {v.key}: front end differs from the float model's")
        models[v.key] = qm
    return models


_ENCODINGS = {"int8": Encoding.INT8, "int4": Encoding.INT4, "codebook4": Encoding.CODEBOOK}


def trained_device_speed(models_dir: str | Path) -> float | None:
    """The device speed (MACs/s) the arbitrator was trained for, from ``demo.json``;
    None if the models directory has no summary.

    Raises
    ------
    ValueError
        If the summary has no valid ``device_speed_macs_per_s``.
    """
    path = Path(models_dir) / SUMMARY_FILE
    if not path.exists():
        return None
    speed = json.loads(path.read_text()).get("device_speed_macs_per_s")
    if isinstance(speed, bool) or not isinstance(speed, Real) or not math.isfinite(speed) \
            or speed <= 0:
        raise ValueError(f"{path}: device_speed_macs_per_s must be a positive number, "
                         f"got {speed!r}")
    return float(speed)


def quant_model_size(model: QuantModel, *, lanes: int = 8) -> dict:
    """Compressed size of an integer model.

    ``bytes``: every matrix layer's weight image (``golden.weights.compress`` at
    ``lanes``: header, per-row bias/multiplier/shift, compressed stream) plus the int8
    embedding table. ``bits_per_weight``: the images' bits over the matrix weights
    (parameters and headers included, as ``image_bits_per_weight``). ``sparsity``: zero
    weights over matrix weights.
    """
    enc = _ENCODINGS[model.config.quant.weight_encoding]
    image_bytes = weights = zeros = 0
    for s in layer_specs(model.config).values():
        t = model.tensors
        w = t[f"{s.name}.weight"]
        cb = t.get(f"{s.name}.codebook")
        image_bytes += len(compress(w, t[f"{s.name}.bias"], t[f"{s.name}.multiplier"],
                                    t[f"{s.name}.shift"], encoding=enc, lanes=lanes,
                                    codebook=None if cb is None else cb.tolist()))
        weights += w.size
        zeros += w.size - int(np.count_nonzero(w))
    table = model.tensors["pred.embed.table"].nbytes
    return {"bytes": image_bytes + table, "image_bytes": image_bytes, "table_bytes": table,
            "weights": weights, "bits_per_weight": 8.0 * image_bytes / weights,
            "sparsity": zeros / weights}


def float_model_size(model: FloatModel) -> dict:
    """Size of a float model stored as float32: every tensor, 32 bits per weight."""
    specs = layer_specs(model.config).values()
    weights = sum(s.rows * s.cols for s in specs)
    zeros = sum(int(model.tensors[f"{s.name}.weight"].size
                    - np.count_nonzero(model.tensors[f"{s.name}.weight"])) for s in specs)
    total = sum(t.nbytes for t in model.tensors.values())
    return {"bytes": total, "image_bytes": None, "table_bytes":
            model.tensors["pred.embed.table"].nbytes, "weights": weights,
            "bits_per_weight": 32.0, "sparsity": zeros / weights}


def step_cycles(model: QuantModel) -> dict[str, int]:
    """Processor cycles of one call of each step, on the instruction-level simulator.

    Cycles depend on the compiled image only (instruction counts, stream words, layer
    widths), not on the data, so one call per step measures them.

    Raises
    ------
    compiler.compile.CompileError
        If the model does not fit the default processor.
    """
    iss = IssBackend(model)
    feat = np.zeros(model.config.feature_dim, np.int8)
    iss.arbitrate(feat, 0)
    enc, _ = iss.encoder_step(FAST, feat, iss.initial_encoder_state())
    iss.encoder_step(SLOW, feat, iss.initial_encoder_state())
    pred, _ = iss.predictor(0, iss.initial_predictor_state())
    iss.joint(enc, pred)
    return {step: run.cycles for step, run in iss.runs}


# ---------------------------------------------------------------------------- runs

# Per worker process: the models (set by the pool initializer) and the contact names.
_WORKER: dict = {}


def _init_worker(models: dict, cost: CostModel, beam: int) -> None:
    _WORKER.clear()
    _WORKER.update(models=models, cost=cost, beam=beam, contacts=_contacts())


def _recognizer(run: str) -> Recognizer:
    models, cost = _WORKER["models"], _WORKER["cost"]
    greedy = run in ("greedy", "greedy_always_slow")
    kw = dict(beam=1 if greedy else _WORKER["beam"], cost=cost, after_final="continue")
    if run in ("always_slow", "greedy_always_slow"):
        return Recognizer(AlwaysSlowBackend(models[DEPLOYED]), **kw)
    if run == "greedy":
        return Recognizer(models[DEPLOYED], **kw)
    if run == "biased":
        return Recognizer(models[DEPLOYED], context=list(_WORKER["contacts"]), **kw)
    model = models[run]
    if isinstance(model, FloatModel):
        fe = FrontendConfig.from_dict(model.config.frontend)
        return Recognizer(FloatBackend(model, feature_scale=fe.feature_scale), frontend=fe,
                          vocabulary=model.config.vocabulary, **kw)
    return Recognizer(model, **kw)


def _run_one(job: tuple[str, TestUtterance]) -> dict:
    """One utterance through one run: the figures :func:`summarize` needs."""
    run, utt = job
    rec = _recognizer(run)
    sr = rec.frontend_config.sample_rate
    audio = load_audio(utt.path, sample_rate=sr)
    trail = int(round(utt.trail_ms * sr / 1000.0))
    audio = extend_background(audio, trail, int(round(
        max(utt.trail_ms, TRAILING_SILENCE_MS) * sr / 1000.0)))
    result = rec.transcribe(audio)
    r = result.report
    # The device's lag when speech ends: the backlog of the first frame ready after it.
    at_end = next((f for f in r.frames if f.ready_ms >= utt.speech_end_ms), r.frames[-1])
    events = [{"kind": e.kind, "frame": e.frame, "time_ms": e.time_ms,
               "ready_ms": r.frames[e.frame].ready_ms, "device_ms": e.device_ms,
               "text": e.text}
              for e in result.endpoints if e.kind in ("speculative", "final")]
    return {"run": run, "file": utt.file, "text": result.text, "events": events,
            "calls": r.calls, "step_costs": dict(r.step_costs), "total": r.total,
            "frames": len(r.frames), "fast_frames": r.branch_frames["fast"],
            "audio_ms": r.audio_ms, "max_backlog_ms": max(r.backlog_ms, default=0.0),
            "speech_end_backlog_ms": at_end.backlog_ms,
            # Frames ready before the end of speech, and how many of those went fast.
            "speech_frames": sum(f.ready_ms < utt.speech_end_ms for f in r.frames),
            "speech_fast_frames": sum(f.ready_ms < utt.speech_end_ms and f.branch == FAST
                                      for f in r.frames)}


def evaluate(models: dict, utterances: Sequence[TestUtterance], *, runs: Sequence[str] = RUNS,
             cost: CostModel | None = None, beam: int = BEAM, workers: int = 2,
             progress: bool = True) -> list[dict]:
    """Every run on every utterance; records in ``(run, utterance)`` order.

    Parameters
    ----------
    models : dict
        Variant key -> model (:func:`load_variants`); the runs of :data:`DEPLOYED_RUNS`
        use :data:`DEPLOYED`.
    utterances : sequence of TestUtterance
    runs : sequence of str
        A subset of :data:`RUNS`.
    cost : CostModel, optional
        The device the arbitrator sees (default ``CostModel()``).
    beam : int
        Beam width (at least 2: the biased run needs beam search).
    workers : int
        Worker processes (1: in this process).
    progress : bool
        Show a tqdm progress bar on stderr.
    """
    from tqdm import tqdm

    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        raise ValueError(f"unknown runs {unknown}; expected a subset of {RUNS}")
    needed = {DEPLOYED if r in DEPLOYED_RUNS else r for r in runs}
    missing = sorted(needed - set(models))
    if missing:
        raise ValueError(f"no model for {missing}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if isinstance(beam, bool) or not isinstance(beam, int) or beam < 2:
        raise ValueError(f"beam must be an int >= 2 (context biasing needs beam search), "
                         f"got {beam!r}")
    cost = CostModel() if cost is None else cost
    jobs = [(run, u) for run in runs for u in utterances]
    models = {k: models[k] for k in needed}
    bar = tqdm(total=len(jobs), desc="accuracy", unit="run", file=sys.stderr,
               disable=not progress)
    out = []
    with bar:
        if workers == 1:
            _init_worker(models, cost, beam)
            for job in jobs:
                out.append(_run_one(job))
                bar.update()
        else:
            with multiprocessing.get_context("fork").Pool(
                    workers, initializer=_init_worker, initargs=(models, cost, beam)) as pool:
                for rec in pool.imap(_run_one, jobs):
                    out.append(rec)
                    bar.update()
    return out


# ---------------------------------------------------------------------------- summary


def _points(rate: float) -> float:
    return 100.0 * rate


def _wer(recs: Sequence[dict], refs: dict[str, str], field: str = "text") -> dict:
    files = [r["file"] for r in recs]
    hyps = [r[field] for r in recs]
    w = corpus_errors([refs[f] for f in files], hyps)
    c = corpus_errors([refs[f] for f in files], hyps, unit="char")
    return {"wer": _points(w.rate), "cer": _points(c.rate), "words": w.to_dict(),
            "utterances": len(recs)}


def _percentiles(values: Sequence[float]) -> dict:
    if not values:
        return {"n": 0, "median": None, "p90": None}
    v = np.asarray(values, np.float64)
    return {"n": len(v), "median": float(np.median(v)), "p90": float(np.percentile(v, 90))}


def _endpointing(recs: Sequence[dict], utts: dict[str, TestUtterance]) -> dict:
    """First speculative and final event per utterance against the end of speech."""
    out = {}
    for kind in ("speculative", "final"):
        lat, early, cut, missing = [], 0, 0, 0
        for r in recs:
            ev = next((e for e in r["events"] if e["kind"] == kind), None)
            if ev is None:
                missing += 1
                continue
            end = utts[r["file"]].speech_end_ms
            if ev["ready_ms"] < end:
                early += 1
            else:
                lat.append(ev["device_ms"] - end)
            cut += ev["text"] != r["text"]
        n = len(recs)
        out[kind] = {"utterances": n, "fired": n - missing, "missing": missing,
                     "early": early, "early_rate": early / n if n else None,
                     "cut": cut, "cut_rate": cut / n if n else None,
                     "latency_ms": _percentiles(lat)}
    return out


def _units(rec: dict, costs: dict[str, float], *, arbitrator: bool = True) -> float:
    return sum(n * costs[s] for s, n in rec["calls"].items()
               if arbitrator or s != "arbitrate")


def _names(recs: Sequence[dict], utts: dict[str, TestUtterance],
           contacts: Sequence[str]) -> dict:
    hits = total = 0
    for r in recs:
        want = list(utts[r["file"]].names)
        got = list(contact_names(r["text"], contacts))
        total += len(want)
        for name in want:  # each reference occurrence is matched once
            if name in got:
                got.remove(name)
                hits += 1
    return {"occurrences": total, "recognized": hits,
            "recall": hits / total if total else None}


def _arbitration(arb: Sequence[dict], slow: Sequence[dict], refs: dict[str, str],
                 utts: dict[str, TestUtterance], cycles: dict | None) -> dict:
    """The arbitrated run against the always-slow run of the same search."""
    costs = arb[0]["step_costs"]
    units_arb = sum(_units(r, costs) for r in arb)
    units_slow = sum(_units(r, costs, arbitrator=False) for r in slow)
    speech = sum(r["speech_frames"] for r in arb)
    after = sum(r["frames"] for r in arb) - speech
    speech_fast = sum(r["speech_fast_frames"] for r in arb)
    a = {"fast_fraction": sum(r["fast_frames"] for r in arb) / sum(r["frames"] for r in arb),
         "fast_fraction_speech": speech_fast / speech if speech else None,
         "fast_fraction_after_speech": ((sum(r["fast_frames"] for r in arb) - speech_fast)
                                        / after if after else None),
         "macs": {"arbitrated": units_arb, "always_slow": units_slow,
                  "saved": 1.0 - units_arb / units_slow},
         "wer": {"arbitrated": _wer(arb, refs)["wer"], "always_slow": _wer(slow, refs)["wer"]},
         "max_backlog_ms": {"arbitrated": max(r["max_backlog_ms"] for r in arb),
                            "always_slow": max(r["max_backlog_ms"] for r in slow)},
         "speech_end_backlog_ms": {
             "arbitrated": _percentiles([r["speech_end_backlog_ms"] for r in arb]),
             "always_slow": _percentiles([r["speech_end_backlog_ms"] for r in slow])},
         "final_latency_ms": {
             "arbitrated": _endpointing(arb, utts)["final"]["latency_ms"],
             "always_slow": _endpointing(slow, utts)["final"]["latency_ms"]}}
    if cycles and "error" not in cycles:
        c_arb = sum(_units(r, cycles) for r in arb)
        c_slow = sum(_units(r, cycles, arbitrator=False) for r in slow)
        a["cycles"] = {"per_step": cycles, "arbitrated": c_arb, "always_slow": c_slow,
                       "saved": 1.0 - c_arb / c_slow}
    else:
        a["cycles"] = {"error": (cycles or {}).get("error", "not measured")}
    a["wer"]["cost_points"] = a["wer"]["arbitrated"] - a["wer"]["always_slow"]
    slow_text = {r["file"]: r["text"] for r in slow}
    files = [r["file"] for r in arb]
    a["wer"]["cost_interval"] = paired_bootstrap(
        [refs[f] for f in files], [r["text"] for r in arb], [slow_text[f] for f in files])
    return a


def summarize(records: Sequence[dict], utterances: Sequence[TestUtterance], *,
              sizes: dict[str, dict], cycles: dict | None,
              contacts: Sequence[str] | None = None) -> dict:
    """The report's figures from :func:`evaluate`'s records.

    Parameters
    ----------
    records : sequence of dict
    utterances : sequence of TestUtterance
    sizes : dict
        Variant key -> :func:`quant_model_size` / :func:`float_model_size`.
    cycles : dict or None
        :func:`step_cycles` of the deployed model, or ``{"error": message}``.
    contacts : sequence of str, optional
        Names for biasing recall (default: ``data.vocabulary.CONTACTS``).
    """
    contacts = _contacts() if contacts is None else tuple(contacts)
    utts = {u.file: u for u in utterances}
    refs = {u.file: u.transcript for u in utterances}
    by_run: dict[str, list[dict]] = {}
    for r in records:
        by_run.setdefault(r["run"], []).append(r)
    report: dict = {"utterances": len(utterances), "variants": [], "goals": []}
    for v in VARIANTS:
        if v.key not in by_run:
            continue
        recs = by_run[v.key]
        frames = sum(r["frames"] for r in recs)
        report["variants"].append({
            "key": v.key, "label": v.label, **_wer(recs, refs),
            "size": sizes.get(v.key),
            "fast_fraction": sum(r["fast_frames"] for r in recs) / frames if frames else None,
        })
    wers = {v["key"]: v["wer"] for v in report["variants"]}
    if "float" in wers and DEPLOYED in wers:
        gap = wers[DEPLOYED] - wers["float"]
        report["goals"].append({
            "goal": f"4-bit at 50% sparsity within {GOALS['quantization_wer_points']:g} point "
                    "absolute WER of float",
            "value": f"{gap:+.2f} points", "met": gap <= GOALS["quantization_wer_points"]})
    report["arbitration"] = {}
    for search, (arb_run, slow_run) in ARBITRATION_PAIRS.items():
        if arb_run not in by_run or slow_run not in by_run:
            continue
        a = _arbitration(by_run[arb_run], by_run[slow_run], refs, utts, cycles)
        report["arbitration"][search] = a
        met = (a["macs"]["saved"] >= GOALS["compute_saved"]
               and a["wer"]["cost_points"] <= GOALS["arbitration_wer_points"])
        report["goals"].append({
            "goal": f"arbitrator saves >= {100 * GOALS['compute_saved']:.0f}% of always-slow "
                    f"compute at <= {GOALS['arbitration_wer_points']:g} point WER cost "
                    f"({_SEARCH[search]})",
            "value": f"{100 * a['macs']['saved']:.1f}% MACs saved, "
                     f"{a['wer']['cost_points']:+.2f} points",
            "met": met})
    if DEPLOYED in by_run:
        report["endpointing"] = _endpointing(by_run[DEPLOYED], utts)
        report["endpointing"]["stopped_wer"] = _wer(
            [{**r, "final_text": next((e["text"] for e in r["events"]
                                       if e["kind"] == "final"), r["text"])}
             for r in by_run[DEPLOYED]], refs, field="final_text")["wer"]
    if DEPLOYED in by_run and "biased" in by_run:
        plain, biased = by_run[DEPLOYED], by_run["biased"]
        with_names = [u.file for u in utterances if u.names]

        def subset(recs):
            return [r for r in recs if r["file"] in with_names]

        report["biasing"] = {
            "context": list(contacts),
            "name_utterances": len(with_names),
            "without": {"all": _wer(plain, refs)["wer"], "names": _wer(subset(plain), refs)["wer"]
                        if with_names else None, **_names(plain, utts, contacts)},
            "with": {"all": _wer(biased, refs)["wer"], "names": _wer(subset(biased), refs)["wer"]
                     if with_names else None, **_names(biased, utts, contacts)},
        }
    if DEPLOYED in by_run:
        report["per_utterance"] = [
            {"file": r["file"], "reference": refs[r["file"]], "hypothesis": r["text"],
             "word_errors": word_errors(refs[r["file"]], r["text"]).errors}
            for r in by_run[DEPLOYED]]
    return report


# ---------------------------------------------------------------------------- markdown


def _fmt(x, spec: str = ".1f", none: str = "n/a") -> str:
    return none if x is None else format(x, spec)


def _pct(x) -> str:
    return _fmt(None if x is None else 100.0 * x, ".1f") + ("" if x is None else "%")


#: How each search is named in the report.
_SEARCH = {"beam": "beam search", "greedy": "greedy search"}


def _arbitration_table(search: str, a: dict, beam: int) -> list[str]:
    cyc = a["cycles"]
    cyc_row = (f"| compute, processor cycles (ISS) | {cyc['arbitrated']:,.0f} | "
               f"{cyc['always_slow']:,.0f} | {100 * cyc['saved']:.1f}% saved |"
               if "error" not in cyc else
               f"| compute, processor cycles | n/a: {cyc['error']} | | |")
    ba, bs = a["speech_end_backlog_ms"]["arbitrated"], a["speech_end_backlog_ms"]["always_slow"]
    la, ls = a["final_latency_ms"]["arbitrated"], a["final_latency_ms"]["always_slow"]
    ci = a["wer"]["cost_interval"]
    lines = [
        "",
        f"## Arbitrator against always-slow ({_SEARCH[search]}"
        + (f", beam {beam})" if search == "beam" else ")"),
        "",
        "| | arbitrated | always slow | |",
        "| --- | ---: | ---: | --- |",
        f"| frames on the fast branch | {_pct(a['fast_fraction'])} | 0.0% | |",
        f"| fast frames before / from the end of speech | "
        f"{_pct(a['fast_fraction_speech'])} / {_pct(a['fast_fraction_after_speech'])} | "
        "0.0% / 0.0% | |",
        f"| compute, MACs (nonzero weights) | {a['macs']['arbitrated']:,.0f} | "
        f"{a['macs']['always_slow']:,.0f} | {100 * a['macs']['saved']:.1f}% saved (goal "
        f">= {100 * GOALS['compute_saved']:.0f}%) |",
        cyc_row,
        f"| WER % | {a['wer']['arbitrated']:.2f} | {a['wer']['always_slow']:.2f} | "
        f"{a['wer']['cost_points']:+.2f} points (goal <= "
        f"{GOALS['arbitration_wer_points']:g}); {100 * ci['confidence']:.0f}% interval "
        f"{ci['low']:+.1f} to {ci['high']:+.1f} |",
        f"| largest backlog (ms) | {a['max_backlog_ms']['arbitrated']:.0f} | "
        f"{a['max_backlog_ms']['always_slow']:.0f} | |",
        f"| backlog when speech ends, median / p90 (ms) | {_fmt(ba['median'], '.0f')} / "
        f"{_fmt(ba['p90'], '.0f')} | {_fmt(bs['median'], '.0f')} / "
        f"{_fmt(bs['p90'], '.0f')} | |",
        f"| final end-point latency, median / p90 (ms) | {_fmt(la['median'], '.0f')} / "
        f"{_fmt(la['p90'], '.0f')} | {_fmt(ls['median'], '.0f')} / "
        f"{_fmt(ls['p90'], '.0f')} | |",
    ]
    if search == "beam":
        lines += [
            "",
            f"The deployed model ({DEPLOYED}) with its arbitrator, and with the slow branch "
            "forced on every frame. Compute: every call the pipeline made (arbitrator, "
            "branch, predictor, joint) at its nonzero-weight MACs, and at its cycles on the "
            "instruction-level simulator of the compiled image (cycles per call do not "
            "depend on the data); the always-slow baseline does not run the arbitrator. "
            "Beam search runs the joint once per hypothesis per frame on the device, so "
            "its frames cost more than greedy ones, the backlog builds faster and the "
            "arbitrator (trained with greedy search's costs) sees a busier device. "
            "Backlog: the simulated device of the cost model (`docs/pipeline.md`), at the "
            "first frame ready after the end of speech; end-point latency as in the "
            "end-pointing section. WER interval: the paired bootstrap over utterances "
            f"(`golden.wer.paired_bootstrap`, {ci['resamples']} draws of the test set's "
            "utterances "
            "with replacement, both runs scored on each draw): how far the cost moves "
            "with the choice of utterances. One word of this test set is "
            f"{ci['point_per_word']:.2f} points. The goal is judged "
            "on the measured cost; an interval wider than the goal's 0.5 point means this "
            "test set cannot tell a cost of 0.5 point from no cost (`make accuracy-large` "
            "measures on 400 utterances).",
        ]
    return lines


def render_markdown(report: dict) -> str:
    """``docs/accuracy.md`` from :func:`summarize`'s report plus the run's metadata."""
    meta = report.get("meta", {})
    lines = [
        "# NEP accuracy on the held-out test set",
        "",
        f"Generated by `{meta.get('command', 'make accuracy')}`; do not edit by hand. The "
        f"numbers are also in `{meta.get('json', 'build/reports/accuracy.json')}`.",
        "",
    ]
    if report.get("pending"):
        lines += [f"**Pending:** {report['pending']}", ""]
        return "\n".join(lines)
    lines += [
        f"Test set: `{meta.get('testset', 'data/testset')}`, {report['utterances']} "
        f"utterances ({meta.get('words', '?')} words), voices and settings not used in "
        "training (`docs/data.md`). Models: `" + meta.get("models", "models") + "`. "
        f"Every run: golden pipeline, beam {meta.get('beam', BEAM)}, default end-pointer, "
        "cost model "
        f"{meta.get('cost', '')}. Run time of this report: {meta.get('elapsed_s', 0):.0f} s "
        f"on {meta.get('workers', '?')} worker processes ({meta.get('machine', '')}).",
        "",
        "## Goals",
        "",
        "| goal | measured | |",
        "| --- | --- | --- |",
    ]
    for g in report["goals"]:
        lines.append(f"| {g['goal']} | {g['value']} | {'met' if g['met'] else '**missed**'} |")
    lines += [
        "",
        "## WER by model variant",
        "",
        "| model | WER % | vs float (points) | CER % | size (bytes) | bits / weight | "
        "zero weights | fast frames |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    float_wer = next((v["wer"] for v in report["variants"] if v["key"] == "float"), None)
    for v in report["variants"]:
        s = v["size"] or {}
        gap = None if float_wer is None else v["wer"] - float_wer
        goal = ""
        if v["key"] == DEPLOYED and gap is not None:
            ok = gap <= GOALS["quantization_wer_points"]
            goal = f" (goal <= {GOALS['quantization_wer_points']:g}: {'met' if ok else 'missed'})"
        lines.append(f"| {v['label']} | {v['wer']:.2f} | {_fmt(gap, '+.2f')}{goal} | "
                     f"{v['cer']:.2f} | "
                     f"{_fmt(s.get('bytes'), ',d')} | {_fmt(s.get('bits_per_weight'), '.2f')} "
                     f"| {_pct(s.get('sparsity'))} | {_pct(v['fast_fraction'])} |")
    lines += [
        "",
        "WER and CER: word / character Levenshtein distance over the corpus (edits summed, "
        "then divided by the reference length; `golden/wer.py`), on the transcript of the "
        "whole audio. Size: integer models, the compressed weight images of every matrix "
        "layer (`docs/weight-format.md`, 8 lanes: header, per-row bias / multiplier / "
        "shift, stream) plus the int8 embedding table; float, all tensors as float32. "
        "Bits per weight: image bits over matrix weights (parameters and headers "
        "included). Fast frames: frames the arbitrator sent to the fast branch.",
    ]
    float_zeros = next(((v["size"] or {}).get("sparsity") for v in report["variants"]
                        if v["key"] == "float"), None)
    if float_zeros:
        lines += [
            "",
            f"The float model is itself {100 * float_zeros:.1f}% sparse (pruned during "
            "training), so a variant pruned to that sparsity or less keeps exactly its zeros; "
            "sparser variants are pruned further by magnitude (`make train` fine-tunes the "
            "shipped 75% variant for 2 epochs after that, `docs/training.md`; a variant not "
            "shipped as a file is pruned here, without fine-tuning).",
        ]
    for search, a in report.get("arbitration", {}).items():
        lines += _arbitration_table(search, a, report.get("meta", {}).get("beam", BEAM))
    ep = report.get("endpointing")
    if ep:
        lines += [
            "",
            "## End-pointing",
            "",
            "| end-pointer | fired | early cutoff | transcript cut | latency median (ms) | "
            "latency p90 (ms) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for kind in ("speculative", "final"):
            e = ep[kind]
            lines.append(f"| {kind} | {e['fired']} / {e['utterances']} | {_pct(e['early_rate'])} "
                         f"({e['early']}) | {_pct(e['cut_rate'])} ({e['cut']}) | "
                         f"{_fmt(e['latency_ms']['median'], '.0f')} | "
                         f"{_fmt(e['latency_ms']['p90'], '.0f')} |")
        lines += [
            "",
            f"The deployed model, arbitrated. For each end-pointer its first event per "
            f"utterance. End of speech: the manifest's `duration_s - trail_s` (the "
            f"synthesized speech is trimmed at amplitude 1e-3 before silence is added, so "
            f"this is the last audible sample of speech), not an energy detector. Each "
            f"file's trailing background is continued (mirrored) to "
            f"{TRAILING_SILENCE_MS / 1000:g} s after the end of speech so the final "
            f"end-pointer (500 ms of trailing silence) can fire. Early cutoff: the event's "
            f"frame had all its audio before the end of speech. Transcript cut: the text at "
            f"the event differs from the transcript of the whole audio. Latency: when the "
            f"simulated device had the event (its frame finished) minus the end of speech, "
            f"over the events that were not early. A device that stops at the final end "
            f"point returns the text at that event: WER "
            f"{ep['stopped_wer']:.2f}% (whole audio: "
            f"{next(v['wer'] for v in report['variants'] if v['key'] == DEPLOYED):.2f}%).",
        ]
    b = report.get("biasing")
    if b:
        lines += [
            "",
            "## Context biasing on the contact names",
            "",
            "| | WER % (all) | WER % (utterances with a name) | names recognized |",
            "| --- | ---: | ---: | ---: |",
        ]
        for key, label in (("without", "no context"), ("with", "names as context")):
            x = b[key]
            lines.append(f"| {label} | {x['all']:.2f} | {_fmt(x['names'], '.2f')} | "
                         f"{x['recognized']} / {x['occurrences']} ({_pct(x['recall'])}) |")
        lines += [
            "",
            f"The deployed model; context: the {len(b['context'])} contact names of "
            f"`data/vocabulary.py` ({', '.join(b['context'])}), one phrase each, "
            f"{b['name_utterances']} test utterances contain one. A name is recognized when "
            "the hypothesis contains it as a word (or with `'s`).",
        ]
    per = report.get("per_utterance")
    if per:
        lines += ["", f"## Transcripts of the deployed model ({DEPLOYED}, arbitrated)", "",
                  "| file | reference | hypothesis | word errors |", "| --- | --- | --- | ---: |"]
        lines += [f"| {x['file']} | {x['reference']} | {x['hypothesis']} | {x['word_errors']} |"
                  for x in per]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim.accuracy", description=__doc__.split(
        "\n")[0])
    p.add_argument("--models", default="models", help="directory with demo_float.npz, "
                   "demo.npz and optional <variant>.npz (default models)")
    p.add_argument("--testset", default="data/testset", help="test-set directory")
    p.add_argument("--calibration", default="build/dataset/train/features.npz",
                   help="training features for variants quantized here")
    p.add_argument("--device-speed", type=float, default=None, metavar="MACS_PER_S",
                   help="simulated device speed (default: the one the model was trained "
                        "for, from demo.json; else the cost model's default)")
    p.add_argument("--beam", type=int, default=BEAM, help=f"beam width (default {BEAM})")
    p.add_argument("--limit", type=int, default=None,
                   help="only the first N utterances (a quick look; not for the doc)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--json", default="build/reports/accuracy.json")
    p.add_argument("--doc", default="docs/accuracy.md")
    p.add_argument("--no-progress", action="store_true")
    return p


def _machine() -> str:
    import os
    import platform
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    t0 = time.monotonic()
    try:
        utterances = load_testset(args.testset)
        if args.limit is not None:
            if args.limit < 1:
                raise ValueError(f"--limit must be positive, got {args.limit}")
            utterances = utterances[:args.limit]
        models = load_variants(args.models, calibration=args.calibration)
        speed = args.device_speed
        speed_source = "--device-speed"
        if speed is None:
            speed = trained_device_speed(args.models)
            speed_source = f"{args.models}/{SUMMARY_FILE}"
        if speed is None:
            cost, speed_source = CostModel(), "golden default"
        else:
            cost = CostModel(speed=speed)
    except (OSError, ValueError) as e:
        message = f"{e.filename}: {e.strerror}" if getattr(e, "strerror", None) else e
        print(f"error: {message}", file=sys.stderr)
        return 2
    sizes = {k: float_model_size(m) if isinstance(m, FloatModel) else quant_model_size(m)
             for k, m in models.items()}
    try:
        cycles = step_cycles(models[DEPLOYED])
    except CompileError as e:
        cycles = {"error": f"does not fit the default processor: {e}"}
    try:
        records = evaluate(models, utterances, cost=cost, beam=args.beam,
                           workers=args.workers, progress=not args.no_progress)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = summarize(records, utterances, sizes=sizes, cycles=cycles)
    elapsed = time.monotonic() - t0
    report["meta"] = {
        "testset": args.testset, "models": args.models, "workers": args.workers,
        "elapsed_s": elapsed, "machine": _machine(),
        "words": sum(len(u.transcript.split()) for u in utterances),
        "cost": f"{cost.speed / 1e6:g} M MAC/s ({cost.mac_count} weights; speed from "
                f"{speed_source})",
        "limit": args.limit, "beam": args.beam, "json": args.json,
        "command": shlex.join(["python", "-m", "sim.accuracy",
                               *(sys.argv[1:] if argv is None else argv)]),
    }
    report["records"] = records
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    Path(args.doc).write_text(render_markdown(report))
    for g in report["goals"]:
        print(f"{'MET   ' if g['met'] else 'MISSED'} {g['goal']}: {g['value']}")
    for v in report["variants"]:
        print(f"{v['label']:<20} WER {v['wer']:6.2f}%  CER {v['cer']:6.2f}%  "
              f"{v['size']['bytes']:>9,d} bytes  {v['size']['bits_per_weight']:.2f} bits/weight")
    print(f"wrote {args.json} and {args.doc} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
