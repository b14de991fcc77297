"""Character-level token inventory for the RNN-T decoder.

Index 0 is always the blank ``"<b>"``; every other entry is exactly one lowercase
character. See ``docs/decoding.md``.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

#: Spelling of the blank symbol in the token list.
BLANK = "<b>"
#: Index of the blank symbol (fixed: the joint's logit 0 is always blank).
BLANK_ID = 0


def default_tokens() -> list[str]:
    """Default inventory: blank, space, ``a``-``z``, apostrophe (29 entries).

    Returns
    -------
    list of str
        A fresh list; index 0 is :data:`BLANK`.
    """
    return [BLANK, " ", *string.ascii_lowercase, "'"]


class Tokenizer:
    """Map text to token ids and back, one character per token.

    Parameters
    ----------
    tokens : list of str
        ``tokens[0]`` must be :data:`BLANK`; the others must be distinct single
        characters that are already lowercase (``encode`` lowercases its input, so an
        uppercase entry could never be produced).

    Raises
    ------
    ValueError
        If the inventory breaks one of the rules above.
    """

    def __init__(self, tokens: list[str]):
        tokens = list(tokens)
        if not tokens or tokens[0] != BLANK:
            raise ValueError(f"tokens[0] must be the blank {BLANK!r}, got {tokens[:1]!r}")
        index: dict[str, int] = {}
        for i, tok in enumerate(tokens[1:], start=1):
            if not isinstance(tok, str) or len(tok) != 1:
                raise ValueError(f"token {i} must be a single character, got {tok!r}")
            if tok != tok.lower():
                raise ValueError(f"token {i} ({tok!r}) must be lowercase: encode() lowercases")
            if tok in index:
                raise ValueError(f"token {tok!r} appears twice (ids {index[tok]} and {i})")
            index[tok] = i
        self._tokens = tokens
        self._index = index

    @property
    def blank(self) -> int:
        """Id of the blank symbol (always 0)."""
        return BLANK_ID

    def __len__(self) -> int:
        return len(self._tokens)

    def to_list(self) -> list[str]:
        """Return a copy of the inventory, blank first."""
        return list(self._tokens)

    def encode(self, text: str) -> list[int]:
        """Lowercase ``text`` and map each character to its id.

        Raises
        ------
        ValueError
            Naming the first character (and its position in the lowercased text) that is
            not in the inventory.
        """
        ids = []
        for pos, ch in enumerate(text.lower()):
            try:
                ids.append(self._index[ch])
            except KeyError:
                raise ValueError(
                    f"character {ch!r} (U+{ord(ch):04X}) at position {pos} is not in the "
                    f"token inventory"
                ) from None
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Map ids back to text. Blanks are skipped, so raw alignments decode too.

        Raises
        ------
        ValueError
            If an id is outside ``0 .. len(self) - 1``.
        """
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self._tokens):
                raise ValueError(f"token id {i} out of range 0..{len(self._tokens) - 1}")
            if i != BLANK_ID:
                out.append(self._tokens[i])
        return "".join(out)
