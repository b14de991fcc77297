"""Context biasing by shallow fusion over an Aho-Corasick trie of token ids.

A biasing state is a trie node id (a plain ``int``, so it is immutable and hashable and
can sit in a beam hypothesis and its merge key). Scores are in nats and are added to the
hypothesis log-probabilities. The rules, precisely (``docs/decoding.md``):

* ``pending(n) = bonus * (depth(n) - depth of the deepest phrase end on the path root..n)``
  is the bonus held by an unfinished partial match at node ``n``.
* ``credit(n) = sum(bonus * len(p))`` over the phrases ``p`` that end at node ``n``
  (``n`` itself and its dictionary-suffix chain).
* Consuming a non-blank token moves ``s -> n`` (trie edge, else failure links) and returns
  ``pending(n) - pending(s) + credit(n)``; ``finalize(n)`` returns ``-pending(n)``.

So every matching token earns ``bonus``, a failed partial match gives back what it held
except what the failure-link suffix still matches, a completed phrase keeps
``bonus * len(phrase)`` and a sequence containing no phrase nets exactly zero.
"""

from __future__ import annotations

import math
from collections import deque
from numbers import Real

from golden.tokens import BLANK_ID

#: Default per-token bonus in nats. With character tokens a six-letter name earns 6.0 nats,
#: enough to overturn a near miss but not a clearly different word.
DEFAULT_BONUS = 1.0


class ContextBiasing:
    """Aho-Corasick trie of bias phrases with per-token bonus and cancellation.

    Parameters
    ----------
    phrases : list of list of int
        Token-id sequences to favour (e.g. ``tokenizer.encode("alice")``). Each must be
        non-empty and free of the blank id; duplicates are merged.
    bonus : float, optional
        Bonus per matched token in nats, finite and positive (default
        :data:`DEFAULT_BONUS`).
    blank : int, optional
        Blank id; blank is transparent to the matcher (default 0).

    Raises
    ------
    ValueError
        On an empty phrase list, an empty phrase, a blank or negative id, or a bad bonus.
    """

    def __init__(self, phrases: list[list[int]], bonus: float = DEFAULT_BONUS, *,
                 blank: int = BLANK_ID):
        if isinstance(bonus, bool) or not isinstance(bonus, Real) or not math.isfinite(bonus) \
                or bonus <= 0:
            raise ValueError(f"bonus must be a finite positive number of nats, got {bonus!r}")
        if not phrases:
            raise ValueError("phrases must contain at least one phrase")
        self.bonus = float(bonus)
        self.blank = blank
        # Node 0 is the root. Per node: children, failure link, depth, phrase end flag.
        self._children: list[dict[int, int]] = [{}]
        self._depth = [0]
        self._is_end = [False]
        for k, phrase in enumerate(phrases):
            phrase = [int(t) for t in phrase]
            if not phrase:
                raise ValueError(f"phrase {k} is empty")
            bad = [t for t in phrase if t < 0 or t == blank]
            if bad:
                raise ValueError(f"phrase {k} contains invalid token id {bad[0]} "
                                 f"(blank is {blank}; ids must be non-negative)")
            node = 0
            for t in phrase:
                nxt = self._children[node].get(t)
                if nxt is None:
                    nxt = len(self._children)
                    self._children[node][t] = nxt
                    self._children.append({})
                    self._depth.append(self._depth[node] + 1)
                    self._is_end.append(False)
                node = nxt
            self._is_end[node] = True
        self._build_links()
        # Full transition function, filled lazily: (state, token) -> next state.
        self._delta: dict[tuple[int, int], int] = {}

    def _build_links(self) -> None:
        n = len(self._children)
        self._fail = [0] * n
        self._pending = [0.0] * n
        self._credit = [0.0] * n
        end_depth = [0] * n  # depth of the deepest phrase end on the root path
        queue = deque([0])
        # Breadth-first, so a node's failure target is finished before the node itself.
        while queue:
            node = queue.popleft()
            if self._is_end[node]:
                end_depth[node] = self._depth[node]
            self._pending[node] = self.bonus * (self._depth[node] - end_depth[node])
            own = self.bonus * self._depth[node] if self._is_end[node] else 0.0
            self._credit[node] = own + (self._credit[self._fail[node]] if node else 0.0)
            for tok, child in sorted(self._children[node].items()):
                end_depth[child] = end_depth[node]
                if node:
                    f = self._fail[node]
                    while f and tok not in self._children[f]:
                        f = self._fail[f]
                    self._fail[child] = self._children[f].get(tok, 0)
                queue.append(child)

    @property
    def initial_state(self) -> int:
        """State of a hypothesis before any token: the root (0)."""
        return 0

    @property
    def num_nodes(self) -> int:
        """Number of trie nodes, root included."""
        return len(self._children)

    def _step(self, state: int, token: int) -> int:
        key = (state, token)
        nxt = self._delta.get(key)
        if nxt is None:
            node = state
            while node and token not in self._children[node]:
                node = self._fail[node]
            nxt = self._children[node].get(token, 0)
            self._delta[key] = nxt
        return nxt

    def advance(self, state: int, token: int) -> tuple[int, float]:
        """Consume one token.

        Parameters
        ----------
        state : int
            Current trie node.
        token : int
            Token id; the blank leaves the state unchanged with a zero delta.

        Returns
        -------
        new_state : int
        score_delta : float
            ``pending(new) - pending(state) + credit(new)`` in nats.
        """
        if not 0 <= state < len(self._children):
            raise ValueError(f"invalid biasing state {state!r}")
        if token == self.blank:
            return state, 0.0
        nxt = self._step(state, token)
        return nxt, self._pending[nxt] - self._pending[state] + self._credit[nxt]

    def finalize(self, state: int) -> float:
        """Delta that cancels the unfinished partial match at end of utterance."""
        if not 0 <= state < len(self._children):
            raise ValueError(f"invalid biasing state {state!r}")
        return -self._pending[state]
