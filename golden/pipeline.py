"""The end-to-end golden speech pipeline: audio in, transcript, lattice and reports out.

Data flow (``docs/pipeline.md``)::

    audio -> Frontend (int8 features) -> BacklogScheduler: arbitrate(feat, backlog)
          -> backend.encoder_step(branch) -> Greedy/BeamDecoder (backend.predictor, joint)
          -> EndpointTracker -> events;  N-best, lattice, cost / backlog / latency report

Every matrix and LSTM step goes through the :class:`~golden.backend.Backend` protocol
(``arbitrate``, ``encoder_step``, ``predictor``, ``joint``, initial states and
``step_cost``; plus the optional ``joint_batch`` of
:class:`~golden.backend.BatchedJoint` when the backend has it), so a processor backend
can replace :class:`~golden.backend.GoldenBackend` and the results can be compared bit
for bit. Everything else (front end, search, biasing,
end-pointing, the device timeline) is host code.

The result is a function of the audio samples alone: it does not depend on how the audio
is split into :meth:`Recognizer.push` calls.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np

from .arbitration import BacklogScheduler, CostModel, CostReport
from .backend import Backend, BatchedJoint, GoldenBackend
from .biasing import DEFAULT_BONUS, ContextBiasing
from .decoding import BeamConfig, BeamDecoder, GreedyDecoder
from .endpointer import EndpointerConfig, EndpointTracker, speech_from_blank_prob
from .frontend import Frontend, FrontendConfig
from .model import FloatModel, QuantModel
from .tokens import Tokenizer
from .wav import load_audio

__all__ = [
    "AFTER_FINAL",
    "EVENT_KINDS",
    "RESULT_SCHEMA",
    "NBestEntry",
    "PipelineConfig",
    "PipelineEvent",
    "Recognizer",
    "Result",
]

#: Version tag of :meth:`Result.to_dict`.
RESULT_SCHEMA = "nep.pipeline-result/1"
#: What happens after the final end point: stop decoding, or decode the rest of the audio.
AFTER_FINAL = ("stop", "continue")
#: Kinds of :class:`PipelineEvent`: ``partial`` (the best transcript changed) and the
#: end-pointer's kinds.
EVENT_KINDS = ("partial", "revision", "speculative", "final")


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """Search, biasing, end-pointing and cost settings of a :class:`Recognizer`.

    Parameters
    ----------
    beam : int
        Beam width; 0 or 1 selects greedy search (default 4).
    context : tuple of str
        Phrases to bias towards (beam search only). Whitespace runs are collapsed to one
        space and the ends stripped before tokenizing.
    bias_bonus : float
        Per-token biasing bonus in nats (default ``golden.biasing.DEFAULT_BONUS``).
    speech_threshold : float
        A frame is speech for the end-pointers when the decoder's blank probability is
        below this (default 0.95, see ``speech_from_blank_prob``).
    after_final : {"stop", "continue"}
        ``"stop"`` (default): the final end point ends the utterance; later audio is not
        decoded (the device would close the microphone). ``"continue"``: decode the whole
        audio into the same transcript; no end points after the final one.
    endpointer : EndpointerConfig
    cost : CostModel
    """

    beam: int = 4
    context: tuple[str, ...] = ()
    bias_bonus: float = DEFAULT_BONUS
    speech_threshold: float = 0.95
    after_final: str = "stop"
    endpointer: EndpointerConfig = field(default_factory=EndpointerConfig)
    cost: CostModel = field(default_factory=CostModel)

    def __post_init__(self):
        if isinstance(self.beam, bool) or not isinstance(self.beam, Integral) or self.beam < 0:
            raise ValueError(f"beam must be a non-negative int (0 or 1: greedy), "
                             f"got {self.beam!r}")
        if isinstance(self.context, str) or not isinstance(self.context, Sequence):
            raise ValueError("context must be a sequence of phrases (strings)")
        phrases = []
        for p in self.context:
            if not isinstance(p, str):
                raise ValueError(f"context phrases must be strings, got {p!r}")
            p = " ".join(p.split())
            if not p:
                raise ValueError("context phrases must not be empty or blank")
            phrases.append(p)
        object.__setattr__(self, "context", tuple(phrases))
        if phrases and self.beam < 2:
            raise ValueError("context biasing needs beam search (beam >= 2); greedy search "
                             "cannot rescore alternatives")
        b = self.bias_bonus
        if isinstance(b, bool) or not isinstance(b, Real) or not math.isfinite(b) or b <= 0:
            raise ValueError(f"bias_bonus must be a finite positive number, got {b!r}")
        t = self.speech_threshold
        if isinstance(t, bool) or not isinstance(t, Real) or not 0.0 < t <= 1.0:
            raise ValueError(f"speech_threshold must be in (0, 1], got {t!r}")
        if self.after_final not in AFTER_FINAL:
            raise ValueError(f"after_final must be one of {AFTER_FINAL}, "
                             f"got {self.after_final!r}")
        if not isinstance(self.endpointer, EndpointerConfig):
            raise ValueError("endpointer must be an EndpointerConfig")
        if not isinstance(self.cost, CostModel):
            raise ValueError("cost must be a CostModel")

    @property
    def greedy(self) -> bool:
        """True when the search is greedy (``beam`` 0 or 1)."""
        return self.beam < 2


@dataclass(frozen=True)
class PipelineEvent:
    """Something downstream may act on, as soon as the device has finished a frame.

    Attributes
    ----------
    kind : str
        One of :data:`EVENT_KINDS`. ``partial``: the best transcript changed.
        ``speculative`` / ``revision`` / ``final``: end points (``docs/decoding.md``).
    frame : int
        Encoder frame after which the event happened.
    time_ms : float
        Audio time of that frame (``frame * frame_shift_ms``).
    device_ms : float
        Simulated time at which the device finished the frame (the event's availability).
    text : str
        Best transcript after the frame.
    reason : str
        End-point reason (``silence``, ``max_length``, ``speech``); empty for partials.
    """

    kind: str
    frame: int
    time_ms: float
    device_ms: float
    text: str
    reason: str = ""

    def __post_init__(self):
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"event kind must be one of {EVENT_KINDS}, got {self.kind!r}")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "frame": self.frame, "time_ms": self.time_ms,
                "device_ms": self.device_ms, "text": self.text, "reason": self.reason}


@dataclass(frozen=True)
class NBestEntry:
    """One hypothesis of the N-best list (scores in nats, biasing included)."""

    text: str
    tokens: tuple[int, ...]
    score: float
    normalized_score: float

    def to_dict(self) -> dict:
        return {"text": self.text, "tokens": list(self.tokens), "score": self.score,
                "normalized_score": self.normalized_score}


@dataclass(frozen=True)
class Result:
    """Everything one utterance produced.

    Attributes
    ----------
    text : str
        Best transcript.
    nbest : tuple of NBestEntry
        Best first (one entry for greedy search).
    lattice : dict
        ``golden.decoding.build_lattice`` JSON of the N-best.
    events : tuple of PipelineEvent
        Partials and end points, in order.
    report : CostReport
        Per-frame decisions, cost, backlog curve and latency.
    num_frames : int
        Encoder frames in the audio (``report.frames`` may hold fewer: see
        ``stopped_at``).
    stopped_at : int or None
        Frame of the final end point when decoding stopped there, else None.
    """

    text: str
    nbest: tuple[NBestEntry, ...]
    lattice: dict
    events: tuple[PipelineEvent, ...]
    report: CostReport
    num_frames: int
    stopped_at: int | None

    @property
    def endpoints(self) -> tuple[PipelineEvent, ...]:
        """The end-point events (speculative, revision, final)."""
        return tuple(e for e in self.events if e.kind != "partial")

    @property
    def decisions(self) -> tuple[int, ...]:
        """Branch of each decoded frame (0 fast, 1 slow)."""
        return self.report.decisions

    @property
    def branch_frames(self) -> dict[str, int]:
        """Decoded frames per branch."""
        return self.report.branch_frames

    @property
    def latency_ms(self) -> float:
        """See :attr:`golden.arbitration.CostReport.latency_ms`."""
        return self.report.latency_ms

    @property
    def audio_ms(self) -> float:
        """Length of the audio received."""
        return self.report.audio_ms

    def to_dict(self) -> dict:
        """One JSON document (schema :data:`RESULT_SCHEMA`, layout in ``docs/pipeline.md``)."""
        return {
            "schema": RESULT_SCHEMA,
            "text": self.text,
            "nbest": [h.to_dict() for h in self.nbest],
            "events": [e.to_dict() for e in self.events],
            "branch_frames": self.branch_frames,
            "decisions": list(self.decisions),
            "num_frames": self.num_frames,
            "decoded_frames": len(self.report.frames),
            "stopped_at": self.stopped_at,
            "audio_ms": self.audio_ms,
            "latency_ms": self.latency_ms,
            "cost": self.report.to_dict(),
            "lattice": self.lattice,
        }


class _Counted:
    """Wraps a backend method and counts its calls (the work charged to a frame)."""

    def __init__(self, fn):
        self._fn = fn
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        return self._fn(*args)


class _CountedBatch:
    """Wraps ``backend.joint_batch``: a call on ``n`` rows counts ``n`` joint calls."""

    def __init__(self, fn, counter: _Counted):
        self._fn = fn
        self._counter = counter

    def __call__(self, enc, preds):
        self._counter.calls += len(preds)
        return self._fn(enc, preds)


def _resolve(model_or_backend, frontend, vocabulary):
    """(backend, model or None, front-end config, vocabulary) from the caller's arguments."""
    if isinstance(model_or_backend, FloatModel):
        raise TypeError("the pipeline runs integer models; quantize the float model first "
                        "(golden.quantize.quantize_model)")
    if isinstance(model_or_backend, QuantModel):
        backend = GoldenBackend(model_or_backend)
    elif isinstance(model_or_backend, Backend):
        backend = model_or_backend
    else:
        raise TypeError("expected a QuantModel or a Backend, got "
                        f"{type(model_or_backend).__name__}")
    # A GoldenBackend exposes its model; then the front end and vocabulary come from it.
    model = getattr(backend, "model", None)
    model = model if isinstance(model, QuantModel) else None
    if frontend is None:
        frontend = (FrontendConfig.from_dict(model.config.frontend) if model is not None
                    else FrontendConfig())
    elif not isinstance(frontend, FrontendConfig):
        raise TypeError(f"frontend must be a FrontendConfig, got {type(frontend).__name__}")
    if vocabulary is None:
        vocabulary = getattr(backend, "vocabulary", None)
        if vocabulary is None:
            raise ValueError("the backend has no vocabulary attribute; pass vocabulary=")
    if model is not None:
        if frontend.feature_dim != model.config.feature_dim:
            raise ValueError(f"front end gives {frontend.feature_dim} features per frame, "
                             f"the model expects {model.config.feature_dim}")
        if not math.isclose(model.feature_scale, frontend.feature_scale, rel_tol=1e-9):
            raise ValueError(f"model feature scale {model.feature_scale} differs from the "
                             f"front end's feature_scale {frontend.feature_scale}: the model "
                             "must be quantized with feature_scale=frontend.feature_scale")
    return backend, frontend, list(vocabulary)


class Recognizer:
    """Streaming recognizer: the golden end-to-end pipeline.

    Parameters
    ----------
    model_or_backend : QuantModel or Backend
        A ``QuantModel`` runs on :class:`~golden.backend.GoldenBackend`; any other object
        implementing :class:`~golden.backend.Backend` (e.g. a processor backend) is used
        as it is.
    beam, context, bias_bonus, speech_threshold, after_final
        See :class:`PipelineConfig`.
    endpointer : EndpointerConfig, optional
    cost : CostModel, optional
    frontend : FrontendConfig, optional
        Default: the model's ``config.frontend`` (when the backend exposes ``model``),
        else ``FrontendConfig()``.
    vocabulary : sequence of str, optional
        Token strings, blank first. Default: ``backend.vocabulary``.

    Notes
    -----
    :meth:`push` audio in chunks of any size, then :meth:`finish`; or :meth:`transcribe`
    in one call. A frame is decoded once the simulated device can start it and its
    backlog is known (``golden.arbitration``), so events may trail the audio pushed.
    """

    def __init__(self, model_or_backend, *, beam: int = 4, context: Sequence[str] | None = None,
                 endpointer: EndpointerConfig | None = None, cost: CostModel | None = None,
                 bias_bonus: float = DEFAULT_BONUS, speech_threshold: float = 0.95,
                 after_final: str = "stop", frontend: FrontendConfig | None = None,
                 vocabulary: Sequence[str] | None = None):
        self.config = PipelineConfig(
            beam=beam, context=() if context is None else context,
            bias_bonus=bias_bonus, speech_threshold=speech_threshold, after_final=after_final,
            endpointer=EndpointerConfig() if endpointer is None else endpointer,
            cost=CostModel() if cost is None else cost)
        self.backend, self.frontend_config, vocab = _resolve(model_or_backend, frontend,
                                                             vocabulary)
        self.tokenizer = Tokenizer(vocab)
        self.biasing = None
        if self.config.context:
            phrases = []
            for p in self.config.context:
                try:
                    phrases.append(self.tokenizer.encode(p))
                except ValueError as e:
                    raise ValueError(f"context phrase {p!r}: {e}") from None
            self.biasing = ContextBiasing(phrases, self.config.bias_bonus)
        self._predictor = _Counted(self.backend.predictor)
        self._joint = _Counted(self.backend.joint)
        args = (self._predictor, self._joint, self.backend.logit_scale,
                self.backend.initial_predictor_state())
        if self.config.greedy:
            self.decoder = GreedyDecoder(*args)
        else:
            batch = (_CountedBatch(self.backend.joint_batch, self._joint)
                     if isinstance(self.backend, BatchedJoint) else None)
            self.decoder = BeamDecoder(*args, config=BeamConfig(beam=self.config.beam),
                                       biasing=self.biasing, joint_batch=batch)
        self.scheduler = BacklogScheduler(self.backend, self.config.cost,
                                          self.frontend_config.frame_shift_ms)
        self._frontend = Frontend(self.frontend_config)
        self.tracker = EndpointTracker(self.config.endpointer)
        self.reset()

    @property
    def frame_shift_ms(self) -> float:
        """Audio per encoder frame."""
        return self.frontend_config.frame_shift_ms

    def reset(self) -> None:
        """Drop the current utterance and start a new one."""
        self._frontend.reset()
        self.decoder.reset()
        self.scheduler.reset()
        self.tracker.reset()
        self._enc_state = self.backend.initial_encoder_state()
        self._pending: deque[tuple[int, np.ndarray, float]] = deque()
        self._samples = 0
        self._next_frame = 0
        self._events: list[PipelineEvent] = []
        self._tokens: tuple[int, ...] = ()
        self._text = ""
        self._stopped_at: int | None = None

    def push(self, samples) -> list[PipelineEvent]:
        """Add audio (mono float samples at the front end's rate, any length).

        Returns
        -------
        list of PipelineEvent
            Events of the frames decoded during this call.
        """
        frames = self._frontend.push(samples)
        self._samples += len(samples)
        self._enqueue(frames)
        return self._drain(ended=False)

    def finish(self) -> Result:
        """End the audio: decode what is left, return the :class:`Result` and reset."""
        self._enqueue(self._frontend.flush())
        self._drain(ended=True)
        nbest = self.decoder.result()
        entries = tuple(NBestEntry(self.tokenizer.decode(h.tokens), tuple(map(int, h.tokens)),
                                   float(h.score), float(h.normalized_score)) for h in nbest)
        sr = self.frontend_config.sample_rate
        result = Result(
            text=entries[0].text, nbest=entries,
            lattice=self.decoder.lattice(self.frame_shift_ms, tokenizer=self.tokenizer),
            events=tuple(self._events),
            report=self.scheduler.report(1000.0 * self._samples / sr),
            num_frames=self.frontend_config.num_frames(self._samples),
            stopped_at=self._stopped_at)
        self.reset()
        return result

    def transcribe(self, audio) -> Result:
        """One-shot recognition of a whole utterance.

        Parameters
        ----------
        audio : array_like, str, os.PathLike or bytes
            Mono float samples at the front end's rate, or a WAV file (path or bytes),
            mixed down and resampled by ``golden.wav.load_audio``.

        Raises
        ------
        golden.wav.WavError
            If the WAV file is malformed or unsupported.
        OSError
            If the path cannot be read.
        """
        if isinstance(audio, (str, os.PathLike, bytes, bytearray, memoryview)):
            audio = load_audio(audio, sample_rate=self.frontend_config.sample_rate)
        self.reset()
        self.push(audio)
        return self.finish()

    # ---------------------------------------------------------------- internals

    def _enqueue(self, frames: np.ndarray) -> None:
        cfg = self.frontend_config
        for feat in frames:
            t = self._next_frame
            self._next_frame += 1
            # A frame is ready when its last sample has arrived; the zero-padded last
            # frame is ready at the end of the audio.
            ready = 1000.0 * min(cfg.frame_span(t)[1], self._samples) / cfg.sample_rate
            self._pending.append((t, feat, ready))

    def _drain(self, ended: bool) -> list[PipelineEvent]:
        heard_ms = 1000.0 * self._samples / self.frontend_config.sample_rate
        new: list[PipelineEvent] = []
        while self._pending and self._stopped_at is None:
            t, feat, ready = self._pending[0]
            if not self.scheduler.can_decide(ready, heard_ms, ended):
                break
            self._pending.popleft()
            new += self._run_frame(t, feat, ready, heard_ms)
        if self._stopped_at is not None:
            self._pending.clear()
        self._events += new
        return new

    def _run_frame(self, t: int, feat: np.ndarray, ready_ms: float,
                   heard_ms: float) -> list[PipelineEvent]:
        decision = self.scheduler.decide(t, feat, ready_ms, heard_ms)
        enc, self._enc_state = self.backend.encoder_step(decision.branch, feat,
                                                         self._enc_state)
        p0, j0 = self._predictor.calls, self._joint.calls
        info = self.decoder.step(enc, t)
        rec = self.scheduler.complete(decision, self._predictor.calls - p0,
                                      self._joint.calls - j0)
        tokens = self.decoder.result().best.tokens
        time_ms = self.frontend_config.frame_time_ms(t)
        events = []
        if tokens != self._tokens:  # decode only on change: the text grows every frame
            n = len(self._tokens)
            # decode() maps each token to its string and joins them, so a transcript that
            # only grew needs only its new tokens decoded.
            text = (self._text + self.tokenizer.decode(tokens[n:]) if tokens[:n] == self._tokens
                    else self.tokenizer.decode(tokens))
            self._tokens, self._text = tokens, text
            events.append(PipelineEvent("partial", t, time_ms, rec.finish_ms, self._text))
        text = self._text
        if not self.tracker.done:
            speech = speech_from_blank_prob(info.blank_prob, self.config.speech_threshold)
            for ev in self.tracker.update(t, time_ms, speech, info.emitted):
                events.append(PipelineEvent(ev.kind, ev.frame, ev.time_ms, rec.finish_ms, text,
                                            ev.reason))
            if self.tracker.done and self.config.after_final == "stop":
                self._stopped_at = t
        return events
