"""Speculative and final end-pointing on trailing silence.

Both end-pointers are driven once per encoder frame with
``(frame_index, time_ms, speech, emitted_token)``; the caller decides where ``speech``
comes from (front-end VAD, or :func:`speech_from_blank_prob` on the decoder's
:class:`golden.decoding.FrameInfo`). A frame is *active* when ``speech`` or
``emitted_token`` is true; trailing silence is ``time_ms - time_ms of the last active
frame``. Rules and event semantics are in ``docs/decoding.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from numbers import Integral, Real

#: Event kinds, in the order they are emitted within one frame.
EVENT_KINDS = ("revision", "speculative", "final")


def _positive_ms(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{name} must be a finite positive number of ms, got {value!r}")


@dataclass(frozen=True)
class EndpointerConfig:
    """End-pointer settings.

    Attributes
    ----------
    speculative_silence_ms : float
        Trailing silence that fires the speculative end point (default 300).
    final_silence_ms : float
        Trailing silence that fires the final end point (default 500); must exceed
        ``speculative_silence_ms`` so the speculative one comes first.
    require_text : bool
        Silence end points need at least one frame with an emitted token since the
        utterance start (default True), so noise or a cough alone never end-points.
    max_utterance_ms : float
        Utterance length (``time_ms`` minus the first frame's ``time_ms``) that forces a
        final end point, text or not (default 20000).
    """

    speculative_silence_ms: float = 300.0
    final_silence_ms: float = 500.0
    require_text: bool = True
    max_utterance_ms: float = 20000.0

    def __post_init__(self):
        _positive_ms("speculative_silence_ms", self.speculative_silence_ms)
        _positive_ms("final_silence_ms", self.final_silence_ms)
        _positive_ms("max_utterance_ms", self.max_utterance_ms)
        if self.speculative_silence_ms >= self.final_silence_ms:
            raise ValueError(
                f"speculative_silence_ms ({self.speculative_silence_ms}) must be less than "
                f"final_silence_ms ({self.final_silence_ms})")
        if not isinstance(self.require_text, bool):
            raise ValueError(f"require_text must be a bool, got {self.require_text!r}")


@dataclass(frozen=True)
class Event:
    """An end-pointer event.

    Attributes
    ----------
    kind : str
        ``'speculative'`` (downstream may start on the current result), ``'revision'``
        (speech resumed after a speculative end point: discard that work, the result will
        change) or ``'final'`` (utterance over; reset the decoder).
    frame : int
        Frame index at which the event fired.
    time_ms : float
        That frame's ``time_ms``.
    reason : str
        ``'silence'``, ``'max_length'`` or ``'speech'`` (for revisions).
    """

    kind: str
    frame: int
    time_ms: float
    reason: str = ""

    def __post_init__(self):
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"event kind must be one of {EVENT_KINDS}, got {self.kind!r}")


def speech_from_blank_prob(blank_prob: float, threshold: float = 0.95) -> bool:
    """Crude speech decision from the best hypothesis's blank probability.

    RNN-T predicts blank on most frames even inside words, so the threshold is high:
    a frame is speech when ``blank_prob < threshold``.

    Parameters
    ----------
    blank_prob : float
        In ``[0, 1]``.
    threshold : float, optional
        In ``(0, 1]`` (default 0.95).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    if not 0.0 <= blank_prob <= 1.0:
        raise ValueError(f"blank_prob must be in [0, 1], got {blank_prob!r}")
    return blank_prob < threshold


class _Activity:
    """Input checks and the facts both end-pointers need about the utterance so far."""

    def __init__(self):
        self.start_ms: float | None = None
        self.last_active_ms: float | None = None
        self.has_text = False
        self._last: tuple[int, float] | None = None

    def update(self, frame_index: int, time_ms: float, speech: bool,
               emitted_token: bool) -> bool:
        if isinstance(frame_index, bool) or not isinstance(frame_index, Integral):
            raise ValueError(f"frame_index must be an integer, got {frame_index!r}")
        if isinstance(time_ms, bool) or not isinstance(time_ms, Real) \
                or not math.isfinite(time_ms):
            raise ValueError(f"time_ms must be a finite number, got {time_ms!r}")
        if self._last is not None and (frame_index <= self._last[0] or time_ms < self._last[1]):
            raise ValueError(f"frames must move forward: frame {frame_index} at {time_ms} ms "
                             f"after frame {self._last[0]} at {self._last[1]} ms")
        self._last = (int(frame_index), float(time_ms))
        if self.start_ms is None:
            self.start_ms = float(time_ms)
        active = bool(speech) or bool(emitted_token)
        if active:
            self.last_active_ms = float(time_ms)
        self.has_text = self.has_text or bool(emitted_token)
        return active

    def silence_reached(self, time_ms: float, silence_ms: float, require_text: bool) -> bool:
        # No activity yet means no trailing silence: leading silence never end-points.
        if self.last_active_ms is None or (require_text and not self.has_text):
            return False
        return time_ms - self.last_active_ms >= silence_ms


class SpeculativeEndpointer:
    """Fires ``'speculative'`` after ``speculative_silence_ms`` of trailing silence, and
    ``'revision'`` on the first active frame after that; then it re-arms."""

    def __init__(self, config: EndpointerConfig | None = None):
        self.config = EndpointerConfig() if config is None else config
        self.reset()

    def reset(self) -> None:
        """Forget the utterance."""
        self._activity = _Activity()
        self._fired = False

    @property
    def pending(self) -> bool:
        """True between a speculative event and the following revision."""
        return self._fired

    def update(self, frame_index: int, time_ms: float, speech: bool,
               emitted_token: bool) -> list[Event]:
        """Feed one frame; returns the events it fired (at most one)."""
        active = self._activity.update(frame_index, time_ms, speech, emitted_token)
        if self._fired:
            if active:
                self._fired = False
                return [Event("revision", int(frame_index), float(time_ms), "speech")]
            return []
        if self._activity.silence_reached(time_ms, self.config.speculative_silence_ms,
                                          self.config.require_text):
            self._fired = True
            return [Event("speculative", int(frame_index), float(time_ms), "silence")]
        return []


class FinalEndpointer:
    """Fires one ``'final'`` after ``final_silence_ms`` of trailing silence or at
    ``max_utterance_ms``; it must be reset before the next utterance."""

    def __init__(self, config: EndpointerConfig | None = None):
        self.config = EndpointerConfig() if config is None else config
        self.reset()

    def reset(self) -> None:
        """Forget the utterance."""
        self._activity = _Activity()
        self.done = False

    def update(self, frame_index: int, time_ms: float, speech: bool,
               emitted_token: bool) -> list[Event]:
        """Feed one frame; returns the events it fired (at most one).

        Raises
        ------
        RuntimeError
            If called after the final event without :meth:`reset`.
        """
        if self.done:
            raise RuntimeError("final end point already reached; call reset() first")
        self._activity.update(frame_index, time_ms, speech, emitted_token)
        cfg = self.config
        if self._activity.silence_reached(time_ms, cfg.final_silence_ms, cfg.require_text):
            reason = "silence"
        elif time_ms - self._activity.start_ms >= cfg.max_utterance_ms:
            reason = "max_length"
        else:
            return []
        self.done = True
        return [Event("final", int(frame_index), float(time_ms), reason)]


class EndpointTracker:
    """Both end-pointers on one stream; events come out in order.

    Within a frame the order is revision, speculative, final. After the final event the
    tracker is done until :meth:`reset`.
    """

    def __init__(self, config: EndpointerConfig | None = None):
        self.config = EndpointerConfig() if config is None else config
        self.speculative = SpeculativeEndpointer(self.config)
        self.final = FinalEndpointer(self.config)
        self._events: list[Event] = []

    def reset(self) -> None:
        """Start a new utterance."""
        self.speculative.reset()
        self.final.reset()
        self._events = []

    @property
    def done(self) -> bool:
        """True once the final event has fired."""
        return self.final.done

    @property
    def events(self) -> tuple[Event, ...]:
        """All events of the current utterance, in order."""
        return tuple(self._events)

    def update(self, frame_index: int, time_ms: float, speech: bool,
               emitted_token: bool) -> list[Event]:
        """Feed one frame to both end-pointers; returns the events fired in it."""
        if self.done:
            raise RuntimeError("final end point already reached; call reset() first")
        events = self.speculative.update(frame_index, time_ms, speech, emitted_token)
        events += self.final.update(frame_index, time_ms, speech, emitted_token)
        self._events += events
        return events

    def run(self, frames: Iterable[tuple[int, float, bool, bool]]) -> Iterator[Event]:
        """Feed ``(frame_index, time_ms, speech, emitted_token)`` tuples, yielding events;
        stops after the final event."""
        for frame in frames:
            yield from self.update(*frame)
            if self.done:
                return
