"""Host-side streaming RNN-T decoding: greedy and modified beam search.

The network is reached only through two callables (``docs/decoding.md``):

* ``predictor(token, state) -> (pred_out, new_state)``: int8 prediction-network output
  after feeding ``token``; states are immutable values, so a state can be reused.
* ``joint(enc_frame, pred_out) -> logits``: 1-D integer logits over the vocabulary
  (blank = id 0), with ``real = logit_scale * q``.

Optionally, ``joint_batch(enc_frame, preds) -> logits [n, V]`` (row ``i`` equal to
``joint(enc_frame, preds[i])``): beam search then scores all hypotheses of a frame in one
call; without it, it calls ``joint`` once per hypothesis. Results are identical.

The host turns logits into float64 log-probabilities and searches. Predictor outputs are
cached by token prefix, so the predictor runs once per distinct prefix per utterance.
Every choice between equal scores follows a fixed rule (lowest token id, or the
lexicographically smaller token sequence), so runs are bit-for-bit repeatable.

Beam search has two implementations of one frame: the plain one
(:meth:`BeamDecoder._step_reference`, a direct transcription of ``docs/decoding.md``)
and a vectorized one (the default) that scores the ``B x V`` candidates as one float64
array with the same operations in the same order, merges and prunes them without
building a Python object per candidate, and falls back to the plain per-candidate merge
in the rare frames where the shortcut's preconditions do not hold. The tests check that
both give identical N-best lists, scores, lattices and frame information.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from golden.tokens import BLANK_ID, Tokenizer

Predictor = Callable[[int, Any], tuple[np.ndarray, Any]]
Joint = Callable[[np.ndarray, np.ndarray], np.ndarray]
JointBatch = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: Version tag of the JSON lattice produced by :func:`build_lattice`.
LATTICE_SCHEMA = "nep.rnnt-lattice/1"


def log_softmax(logits: np.ndarray, logit_scale: float) -> np.ndarray:
    """Float64 log-softmax of integer logits ``q`` with real values ``logit_scale * q``.

    Parameters
    ----------
    logits : numpy.ndarray
        1-D integer array (int8 or int32) from the joint network.
    logit_scale : float
        Quantization scale of the logits.

    Returns
    -------
    numpy.ndarray
        float64 log-probabilities, same length as ``logits``.
    """
    x = np.asarray(logits).astype(np.float64) * logit_scale
    x = x - x.max()  # shift by the max so exp() cannot overflow
    return x - math.log(float(np.exp(x).sum()))


def log_softmax_rows(logits: np.ndarray, logit_scale: float) -> np.ndarray:
    """:func:`log_softmax` of each row of a 2-D integer array, bit for bit.

    The same element-wise operations on a C-contiguous array; the row sums are NumPy's
    reduction along the contiguous last axis (the same pairwise summation as the 1-D
    sum of one row) and the logarithm is ``math.log`` per row, as in
    :func:`log_softmax`. ``tests/golden/test_fast_paths.py`` checks the equality.
    """
    x = np.ascontiguousarray(logits).astype(np.float64) * logit_scale
    x = x - x.max(axis=1, keepdims=True)
    sums = np.exp(x).sum(axis=1)
    lse = np.array([math.log(v) for v in sums.tolist()], dtype=np.float64)
    return x - lse[:, None]


@dataclass(frozen=True)
class Hypothesis:
    """One decoded hypothesis.

    Attributes
    ----------
    tokens : tuple of int
        Non-blank token ids.
    score : float
        Log-probability in nats, biasing deltas included.
    token_frames : tuple of int
        Encoder frame index at which each token was emitted.
    token_scores : tuple of float
        Cumulative score right after each token (feeds the lattice's score increments).
    """

    tokens: tuple[int, ...]
    score: float
    token_frames: tuple[int, ...]
    token_scores: tuple[float, ...] = ()

    def __post_init__(self):
        if len(self.token_frames) != len(self.tokens):
            raise ValueError(f"token_frames has {len(self.token_frames)} entries for "
                             f"{len(self.tokens)} tokens")
        if self.token_scores and len(self.token_scores) != len(self.tokens):
            raise ValueError(f"token_scores has {len(self.token_scores)} entries for "
                             f"{len(self.tokens)} tokens")

    @property
    def normalized_score(self) -> float:
        """``score / max(1, len(tokens))``: the per-token score used for final ranking."""
        return self.score / max(1, len(self.tokens))


class NBest(list):
    """List of :class:`Hypothesis`, best first."""

    @property
    def best(self) -> Hypothesis:
        """The top hypothesis."""
        if not self:
            raise IndexError("empty N-best list")
        return self[0]


@dataclass(frozen=True)
class FrameInfo:
    """Per-frame decoder summary for the end-pointer.

    Attributes
    ----------
    frame : int
        Encoder frame index.
    emitted : bool
        Whether the best hypothesis after this frame emitted a non-blank token in it.
    blank_prob : float
        Blank probability at this frame of the best hypothesis's path (evaluated on the
        hypothesis it extended, i.e. before any token of this frame).
    """

    frame: int
    emitted: bool
    blank_prob: float


@dataclass(frozen=True)
class GreedyConfig:
    """Greedy search settings.

    Attributes
    ----------
    max_symbols_per_frame : int
        Cap on tokens emitted in one encoder frame (default 5); guards against a joint
        that never predicts blank.
    """

    max_symbols_per_frame: int = 5

    def __post_init__(self):
        m = self.max_symbols_per_frame
        if isinstance(m, bool) or not isinstance(m, Integral) or m < 1:
            raise ValueError(f"max_symbols_per_frame must be an integer >= 1, got {m!r}")


@dataclass(frozen=True)
class BeamConfig:
    """Modified beam search settings.

    Attributes
    ----------
    beam : int
        Hypotheses kept after each frame (default 4).
    length_normalize : bool
        Rank the final N-best by ``score / max(1, len(tokens))`` (default) instead of the
        raw score. Pruning during the search always uses the raw score.
    """

    beam: int = 4
    length_normalize: bool = True

    def __post_init__(self):
        if isinstance(self.beam, bool) or not isinstance(self.beam, Integral) or self.beam < 1:
            raise ValueError(f"beam must be an integer >= 1, got {self.beam!r}")
        if not isinstance(self.length_normalize, bool):
            raise ValueError(f"length_normalize must be a bool, got {self.length_normalize!r}")


class PredictorCache:
    """Predictor outputs keyed by token prefix.

    The prefix ``()`` is the start token fed to the caller's initial state; prefix
    ``p + (t,)`` is token ``t`` fed to the state of ``p``. Each distinct prefix costs
    exactly one predictor call (counted in :attr:`calls`).
    """

    def __init__(self, predictor: Predictor, initial_state: Any, start_token: int):
        self._predictor = predictor
        self._initial_state = initial_state
        self._start_token = start_token
        self._cache: dict[tuple[int, ...], tuple[np.ndarray, Any]] = {}
        self.calls = 0

    def __len__(self) -> int:
        return len(self._cache)

    def __contains__(self, prefix: tuple[int, ...]) -> bool:
        return prefix in self._cache

    def output(self, prefix: tuple[int, ...]) -> np.ndarray:
        """Predictor output after ``prefix`` (computing missing ancestors first)."""
        missing = []
        p = prefix
        while p not in self._cache:
            missing.append(p)
            if not p:
                break
            p = p[:-1]
        for q in reversed(missing):
            if q:
                token, state = q[-1], self._cache[q[:-1]][1]
            else:
                token, state = self._start_token, self._initial_state
            result = self._predictor(token, state)
            self.calls += 1
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TypeError("predictor must return a (pred_out, new_state) tuple")
            self._cache[q] = result
        return self._cache[prefix][0]


class _StreamingDecoder:
    """Shared plumbing: argument checks, frame bookkeeping, log-probs and lattice."""

    def __init__(self, predictor: Predictor, joint: Joint, logit_scale: float,
                 initial_state: Any, start_token: int, joint_batch: JointBatch | None = None):
        if not callable(predictor) or not callable(joint):
            raise TypeError("predictor and joint must be callables")
        if joint_batch is not None and not callable(joint_batch):
            raise TypeError("joint_batch must be a callable or None")
        if isinstance(logit_scale, bool) or not isinstance(logit_scale, Real) \
                or not math.isfinite(logit_scale) or logit_scale <= 0:
            raise ValueError(f"logit_scale must be finite and positive, got {logit_scale!r}")
        if isinstance(start_token, bool) or not isinstance(start_token, Integral) \
                or start_token < 0:
            raise ValueError(f"start_token must be a non-negative integer, got {start_token!r}")
        self._predictor = predictor
        self._joint = joint
        self._joint_batch = joint_batch
        self.logit_scale = float(logit_scale)
        self._initial_state = initial_state
        self._start_token = int(start_token)
        self.blank = BLANK_ID
        self.vocab_size: int | None = None
        self.reset()

    def reset(self) -> None:
        """Start a new utterance: clear hypotheses, frame info and the predictor cache."""
        self._cache = PredictorCache(self._predictor, self._initial_state, self._start_token)
        self._frames: list[FrameInfo] = []
        self._last_frame: int | None = None

    @property
    def predictor_calls(self) -> int:
        """Predictor invocations since the last :meth:`reset`."""
        return self._cache.calls

    @property
    def frame_info(self) -> tuple[FrameInfo, ...]:
        """One :class:`FrameInfo` per frame stepped since the last reset."""
        return tuple(self._frames)

    def _check_frame(self, frame_index: int) -> int:
        if isinstance(frame_index, bool) or not isinstance(frame_index, Integral) \
                or frame_index < 0:
            raise ValueError(f"frame_index must be a non-negative integer, got {frame_index!r}")
        if self._last_frame is not None and frame_index <= self._last_frame:
            raise ValueError(f"frame_index must increase: got {frame_index} after "
                             f"{self._last_frame}")
        self._last_frame = int(frame_index)
        return int(frame_index)

    def _check_vocab(self, size: int) -> None:
        if self.vocab_size is None:
            if size < 2:
                raise ValueError("joint must score at least blank and one token")
            self.vocab_size = int(size)
        elif size != self.vocab_size:
            raise ValueError(f"joint returned {size} logits, expected {self.vocab_size}")

    def _joint_logits(self, enc_frame: np.ndarray, pred: np.ndarray) -> np.ndarray:
        logits = np.asarray(self._joint(enc_frame, pred))
        if logits.ndim != 1 or not np.issubdtype(logits.dtype, np.integer):
            raise TypeError(f"joint must return 1-D integer logits, got dtype {logits.dtype} "
                            f"shape {logits.shape}")
        self._check_vocab(logits.size)
        return logits

    def _log_probs(self, enc_frame: np.ndarray, prefix: tuple[int, ...]) -> np.ndarray:
        return log_softmax(self._joint_logits(enc_frame, self._cache.output(prefix)),
                           self.logit_scale)

    def _log_probs_rows(self, enc_frame: np.ndarray,
                        prefixes: list[tuple[int, ...]]) -> np.ndarray:
        """``[_log_probs(enc_frame, p) for p in prefixes]`` as one 2-D array, bit for bit:
        one ``joint_batch`` call if available, else one ``joint`` call per prefix."""
        preds = [self._cache.output(p) for p in prefixes]
        if self._joint_batch is None:
            logits = np.stack([self._joint_logits(enc_frame, p) for p in preds])
        else:
            logits = np.asarray(self._joint_batch(enc_frame, np.stack(preds)))
            if logits.ndim != 2 or len(logits) != len(preds) \
                    or not np.issubdtype(logits.dtype, np.integer):
                raise TypeError(f"joint_batch must return 2-D integer logits with one row per "
                                f"input, got dtype {logits.dtype} shape {logits.shape} for "
                                f"{len(preds)} inputs")
            self._check_vocab(logits.shape[1])
        return log_softmax_rows(logits, self.logit_scale)

    def lattice(self, frame_ms: float, *, tokenizer: Tokenizer | None = None) -> dict:
        """JSON-serializable lattice of the subclass's ``result()``; see :func:`build_lattice`."""
        return build_lattice(self.result(), frame_ms=frame_ms, num_frames=len(self._frames),
                             tokenizer=tokenizer)


class GreedyDecoder(_StreamingDecoder):
    """Streaming greedy RNN-T search.

    In each frame: evaluate the joint on the current prefix, take the argmax (lowest id on
    ties, so blank wins a tie); a blank ends the frame, a token is appended and the joint
    is evaluated again, up to ``max_symbols_per_frame`` tokens. The score is the sum of
    the chosen log-probabilities; when the cap ends a frame no blank term is added.

    Parameters
    ----------
    predictor, joint : callable
        The network, as described in the module docstring.
    logit_scale : float
        Real value of one joint logit step.
    initial_state : Any
        Predictor state before the start token.
    start_token : int, optional
        Start-of-sequence token fed first (default: blank).
    config : GreedyConfig, optional
        Search settings (default ``GreedyConfig()``).
    """

    def __init__(self, predictor: Predictor, joint: Joint, logit_scale: float,
                 initial_state: Any, *, start_token: int = BLANK_ID,
                 config: GreedyConfig | None = None):
        self.config = GreedyConfig() if config is None else config
        super().__init__(predictor, joint, logit_scale, initial_state, start_token)

    def reset(self) -> None:
        super().reset()
        self._tokens: tuple[int, ...] = ()
        self._token_frames: tuple[int, ...] = ()
        self._token_scores: tuple[float, ...] = ()
        self._score = 0.0

    def step(self, enc_frame: np.ndarray, frame_index: int) -> FrameInfo:
        """Consume one encoder frame; returns this frame's :class:`FrameInfo`."""
        frame_index = self._check_frame(frame_index)
        emitted = False
        blank_prob = None
        for _ in range(self.config.max_symbols_per_frame):
            logp = self._log_probs(enc_frame, self._tokens)
            if blank_prob is None:
                blank_prob = math.exp(logp[self.blank])
            k = int(np.argmax(logp))  # first maximum: lowest id wins ties
            self._score += float(logp[k])
            if k == self.blank:
                break
            emitted = True
            self._tokens += (k,)
            self._token_frames += (frame_index,)
            self._token_scores += (self._score,)
        info = FrameInfo(frame_index, emitted, blank_prob)
        self._frames.append(info)
        return info

    def result(self) -> NBest:
        """The single greedy hypothesis so far (callable mid-stream)."""
        return NBest([Hypothesis(self._tokens, self._score, self._token_frames,
                                 self._token_scores)])


@dataclass(frozen=True)
class _BeamHyp:
    tokens: tuple[int, ...]
    score: float
    token_frames: tuple[int, ...]
    token_scores: tuple[float, ...]
    bias_state: Any
    # For FrameInfo: blank log-prob of the parent at the frame that produced this entry.
    parent_blank_logp: float = 0.0


class BeamDecoder(_StreamingDecoder):
    """Streaming modified beam search (at most one token per hypothesis per frame).

    Each frame expands every beam entry ``h`` into ``h`` (blank) and ``h + (k,)`` for
    every non-blank ``k``; candidates with the same tokens (and biasing state) are merged
    by log-add; the best ``beam`` by raw score survive, ties broken by the token sequence
    in lexicographic order. See ``docs/decoding.md``.

    Parameters
    ----------
    predictor, joint : callable
        The network, as described in the module docstring.
    logit_scale : float
        Real value of one joint logit step.
    initial_state : Any
        Predictor state before the start token.
    start_token : int, optional
        Start-of-sequence token fed first (default: blank).
    config : BeamConfig, optional
        Search settings (default ``BeamConfig()``).
    biasing : golden.biasing.ContextBiasing, optional
        Shallow-fusion context biasing; its state rides along in each hypothesis.
    joint_batch : callable, optional
        ``joint_batch(enc_frame, preds) -> [n, V]`` logits, row ``i`` equal to
        ``joint(enc_frame, preds[i])``: scores all hypotheses of a frame in one call.
    vectorized : bool
        Use the vectorized frame step (default); False runs the plain reference step
        (one ``joint`` call and one candidate object per hypothesis and token). Both give
        identical results.
    """

    def __init__(self, predictor: Predictor, joint: Joint, logit_scale: float,
                 initial_state: Any, *, start_token: int = BLANK_ID,
                 config: BeamConfig | None = None, biasing: Any = None,
                 joint_batch: JointBatch | None = None, vectorized: bool = True):
        self.config = BeamConfig() if config is None else config
        self.biasing = biasing
        self.vectorized = bool(vectorized)
        super().__init__(predictor, joint, logit_scale, initial_state, start_token,
                         joint_batch)

    def reset(self) -> None:
        super().reset()
        bias0 = None if self.biasing is None else self.biasing.initial_state
        self._beam = [_BeamHyp((), 0.0, (), (), bias0)]

    def step(self, enc_frame: np.ndarray, frame_index: int) -> FrameInfo:
        """Consume one encoder frame; returns this frame's :class:`FrameInfo`."""
        if not self.vectorized:
            return self._step_reference(enc_frame, frame_index)
        frame_index = self._check_frame(frame_index)
        beam = self._beam
        logp = self._log_probs_rows(enc_frame, [h.tokens for h in beam])
        adv = None
        if self.biasing is not None:  # advance() once per (h, k), in the reference's order
            adv = [[self.biasing.advance(h.bias_state, k) if k != self.blank else None
                    for k in range(self.vocab_size)] for h in beam]
        ranked = self._expand_fast(beam, logp, frame_index, adv)
        if ranked is None:  # the shortcut does not apply to this frame
            ranked = self._expand_plain(beam, logp, frame_index, adv)
        return self._finish_frame(ranked, frame_index)

    def _finish_frame(self, ranked: list[_BeamHyp], frame_index: int) -> FrameInfo:
        self._beam = ranked[:self.config.beam]
        best = self._beam[0]
        emitted = bool(best.token_frames) and best.token_frames[-1] == frame_index
        info = FrameInfo(frame_index, emitted, math.exp(best.parent_blank_logp))
        self._frames.append(info)
        return info

    def _expand_plain(self, beam: list[_BeamHyp], logp_rows, frame_index: int,
                      adv: list | None = None) -> list[_BeamHyp]:
        """Expand, merge and sort with one candidate object each (the reference rules),
        from precomputed log-probability rows and, if given, precomputed biasing
        ``advance`` results ``adv[i][k]``."""
        merged: dict[tuple, _BeamHyp] = {}

        def add(c: _BeamHyp) -> None:
            key = (c.tokens, c.bias_state)
            old = merged.get(key)
            if old is None:
                merged[key] = c
                return
            # Merge: sum the probabilities; the stronger path (first met on a tie) keeps
            # its alignment, so token_frames stay those of a real path.
            keep = c if c.score > old.score else old
            merged[key] = _BeamHyp(keep.tokens, float(np.logaddexp(old.score, c.score)),
                                   keep.token_frames, keep.token_scores, keep.bias_state,
                                   keep.parent_blank_logp)

        for i, (h, logp) in enumerate(zip(beam, logp_rows)):
            lb = float(logp[self.blank])
            add(_BeamHyp(h.tokens, h.score + lb, h.token_frames, h.token_scores,
                         h.bias_state, lb))
            for k in range(self.vocab_size):
                if k == self.blank:
                    continue
                bias_state, delta = h.bias_state, 0.0
                if adv is not None:
                    bias_state, delta = adv[i][k]
                elif self.biasing is not None:
                    bias_state, delta = self.biasing.advance(h.bias_state, k)
                s = h.score + float(logp[k]) + delta
                add(_BeamHyp(h.tokens + (k,), s, h.token_frames + (frame_index,),
                             h.token_scores + (s,), bias_state, lb))
        return sorted(merged.values(), key=lambda c: (-c.score, c.tokens))

    def _expand_fast(self, beam: list[_BeamHyp], logp: np.ndarray, frame_index: int,
                     adv: list | None = None) -> list[_BeamHyp] | None:
        """:meth:`_expand_plain`'s first ``beam`` entries (and possibly a few more), or
        None when a precondition fails.

        Preconditions: the beam entries have distinct token sequences, and a token
        candidate with the same tokens as a beam entry also has its biasing state. Then
        every merge joins exactly one token candidate ``h + (k,)`` with one blank
        candidate ``g`` (``g.tokens == h.tokens + (k,)``), all merged candidates have
        distinct token sequences, and the sort order is total. Scores are computed with
        the reference's float64 operations in its order: ``(s_h + logp) + delta`` for
        tokens, ``s_h + logp[blank]`` for blank, ``np.logaddexp(first met, second met)``
        for a merge. Pruning keeps every candidate scoring at least the ``beam``-th best
        score, then sorts those by the reference key, so no candidate of the reference's
        top ``beam`` can be missed.
        """
        n, vocab, blank = len(beam), self.vocab_size, self.blank
        index = {h.tokens: i for i, h in enumerate(beam)}
        if len(index) != n:
            return None
        scores = np.array([h.score for h in beam], dtype=np.float64)
        base = scores[:, None] + logp  # s_h + logp_h[k]
        if adv is None:
            states = None
            cand = base + 0.0  # the reference's "+ delta" with delta = 0.0
        else:
            states = [[h.bias_state if a is None else a[0] for a in row]
                      for h, row in zip(beam, adv)]
            deltas = np.array([[0.0 if a is None else a[1] for a in row] for row in adv],
                              dtype=np.float64)
            cand = base + deltas
        cand[:, blank] = base[:, blank]  # blank candidates: s_h + logp_h[blank], no delta
        lb = logp[:, blank].tolist()
        # Merges: blank candidate of g with token candidate (i, k), g.tokens = h_i + (k,).
        merges = {}  # flat position kept -> merged _BeamHyp; the other position is dropped
        dropped = []
        for j, g in enumerate(beam):
            if not g.tokens:
                continue
            i = index.get(g.tokens[:-1])
            k = g.tokens[-1]
            if i is None or k == blank:
                continue
            if states is not None and states[i][k] != g.bias_state:
                return None
            h = beam[i]
            blank_c = _BeamHyp(g.tokens, float(cand[j, blank]), g.token_frames,
                               g.token_scores, g.bias_state, lb[j])
            s = float(cand[i, k])
            tok_c = _BeamHyp(h.tokens + (k,), s, h.token_frames + (frame_index,),
                             h.token_scores + (s,), g.bias_state, lb[i])
            old, new = (blank_c, tok_c) if j < i else (tok_c, blank_c)
            keep = new if new.score > old.score else old
            merged = _BeamHyp(keep.tokens, float(np.logaddexp(old.score, new.score)),
                              keep.token_frames, keep.token_scores, keep.bias_state,
                              keep.parent_blank_logp)
            merges[j * vocab + blank] = merged
            dropped.append(i * vocab + k)
            cand[j, blank] = merged.score
        flat = cand.ravel()
        if dropped:
            flat[dropped] = -np.inf
        size = n * vocab - len(dropped)
        if size > self.config.beam:
            kth = -np.partition(-flat, self.config.beam - 1)[self.config.beam - 1]
            picked = np.flatnonzero(flat >= kth) if kth > -np.inf else None
        else:
            picked = None
        if picked is None:
            picked = np.setdiff1d(np.arange(n * vocab), dropped)
        out = []
        for pos in picked.tolist():
            c = merges.get(pos)
            if c is None:
                i, k = divmod(pos, vocab)
                h = beam[i]
                s = float(flat[pos])
                if k == blank:
                    c = _BeamHyp(h.tokens, s, h.token_frames, h.token_scores, h.bias_state,
                                 lb[i])
                else:
                    c = _BeamHyp(h.tokens + (k,), s, h.token_frames + (frame_index,),
                                 h.token_scores + (s,),
                                 h.bias_state if states is None else states[i][k], lb[i])
            out.append(c)
        out.sort(key=lambda c: (-c.score, c.tokens))
        return out

    def _step_reference(self, enc_frame: np.ndarray, frame_index: int) -> FrameInfo:
        """The plain frame step: one ``joint`` call per hypothesis (predictor and joint
        calls in beam order, as ``_log_probs`` makes them), then one candidate object per
        hypothesis and token (``docs/decoding.md``, "Modified beam search")."""
        frame_index = self._check_frame(frame_index)
        rows = [self._log_probs(enc_frame, h.tokens) for h in self._beam]
        return self._finish_frame(self._expand_plain(self._beam, rows, frame_index),
                                  frame_index)

    def result(self) -> NBest:
        """Current beam as an N-best list, best first (callable mid-stream).

        Unfinished biasing matches are cancelled (``finalize``) and the list is ranked by
        normalized score when ``config.length_normalize`` (ties: token sequence order).
        The decoder's state is not modified.
        """
        hyps = []
        for h in self._beam:
            score = h.score
            if self.biasing is not None:
                score += self.biasing.finalize(h.bias_state)
            hyps.append(Hypothesis(h.tokens, score, h.token_frames, h.token_scores))
        if self.config.length_normalize:
            hyps.sort(key=lambda h: (-h.normalized_score, h.tokens))
        else:
            hyps.sort(key=lambda h: (-h.score, h.tokens))
        return NBest(hyps)


def build_lattice(nbest: list[Hypothesis], *, frame_ms: float, num_frames: int,
                  tokenizer: Tokenizer | None = None) -> dict:
    """Prefix-tree lattice of an N-best list as plain JSON types.

    Hypotheses share a node while their tokens, emission frames and score increments
    agree. Edge ``score`` is the increase of the hypothesis score from the previous token
    to this one (blanks, merges and biasing included); ``final_score`` is the increase
    after the last token. So ``sum(edge scores) + final_score == score``.

    Parameters
    ----------
    nbest : list of Hypothesis
        Best first.
    frame_ms : float
        Encoder frame period; a token emitted in frame ``f`` gets ``time_ms = f * frame_ms``.
    num_frames : int
        Frames decoded so far.
    tokenizer : Tokenizer, optional
        Adds ``label`` to edges and ``text`` to hypotheses.

    Returns
    -------
    dict
        ``{"schema", "frame_ms", "num_frames", "nodes", "edges", "hypotheses"}``; the
        layout is documented in ``docs/decoding.md``.
    """
    if isinstance(frame_ms, bool) or not isinstance(frame_ms, Real) \
            or not math.isfinite(frame_ms) or frame_ms <= 0:
        raise ValueError(f"frame_ms must be finite and positive, got {frame_ms!r}")
    nodes = [{"id": 0, "depth": 0}]
    edges: list[dict] = []
    edge_of: dict[tuple, int] = {}  # (from node, token, frame, increment) -> edge id
    hyps_out = []
    for rank, h in enumerate(nbest):
        if h.tokens and not h.token_scores:
            raise ValueError(f"hypothesis {rank} has no token_scores; the lattice needs them")
        node, prev, path = 0, 0.0, []
        for tok, frame, cum in zip(h.tokens, h.token_frames, h.token_scores, strict=True):
            key = (node, tok, frame, cum - prev)
            eid = edge_of.get(key)
            if eid is None:
                eid = len(edges)
                edge_of[key] = eid
                nodes.append({"id": len(nodes), "depth": nodes[node]["depth"] + 1})
                edge = {"id": eid, "from": node, "to": len(nodes) - 1, "token": int(tok),
                        "frame": int(frame), "time_ms": float(frame * frame_ms),
                        "score": float(cum - prev)}
                if tokenizer is not None:
                    edge["label"] = tokenizer.decode([tok])
                edges.append(edge)
            node, prev = edges[eid]["to"], cum
            path.append(eid)
        entry = {"rank": rank, "tokens": [int(t) for t in h.tokens], "score": float(h.score),
                 "normalized_score": float(h.normalized_score), "edges": path,
                 "end_node": node, "final_score": float(h.score - prev)}
        if tokenizer is not None:
            entry["text"] = tokenizer.decode(h.tokens)
        hyps_out.append(entry)
    return {"schema": LATTICE_SCHEMA, "frame_ms": float(frame_ms),
            "num_frames": int(num_frames), "nodes": nodes, "edges": edges,
            "hypotheses": hyps_out}
