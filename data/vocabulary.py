"""Voice-assistant command grammar: seeded sentences for the synthesized speech data set.

Every sentence is a transcript in the model's token inventory (lowercase letters, space,
apostrophe; :func:`golden.tokens.default_tokens`) plus the text handed to espeak-ng, which
differs only where espeak would mispronounce a contact name (``siobhan`` is spoken as
``shivawn``). See ``docs/data.md``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from golden.tokens import Tokenizer, default_tokens

WAKE_WORD = "hey nep"

#: Contact list: transcript spelling -> text espeak-ng pronounces correctly.
CONTACTS = {
    "anna": "anna",
    "david": "david",
    "maria": "maria",
    "james": "james",
    "xavier": "zayvier",
    "joaquin": "wahkeen",
    "siobhan": "shivawn",
    "oluwaseun": "oloowashayoon",
    "niamh": "neeve",
    "ngozi": "ngozee",
    "saoirse": "seersha",
    "tadhg": "tige",
}
#: Names drawn ten times less often in training, to measure context biasing on them.
RARE_CONTACTS = ("niamh", "ngozi", "saoirse", "tadhg")

DEVICES = ("kitchen lights", "bedroom lights", "living room lights", "hallway light",
           "thermostat", "fan", "heater", "television", "radio", "coffee machine",
           "dishwasher", "garage door", "porch light", "air conditioner")
ROOMS = ("kitchen", "bedroom", "living room", "bathroom", "office", "garden")
MUSIC = ("music", "jazz", "the radio", "some rock", "classical music", "the news", "a podcast")

_ONES = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
          "seventeen", "eighteen", "nineteen")
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")

# Probability that a sentence starts with the wake word.
_WAKE_PROB = 0.5
#: Default weight of a rare contact relative to a common one when drawing names.
RARE_WEIGHT = 0.1

# Templates: {device} {room} {music} {name} {n} (a number 1-99); before a plural unit
# {count} (2-99) and {count_small} (2-30).
_NAME_TEMPLATES = (
    "call {name}",
    "call {name} on speaker",
    "send a message to {name}",
    "text {name} i'm on my way",
    "remind me to call {name} in {count_small} minutes",
    "what's {name}'s number",
    "video call {name}",
    "tell {name} dinner is ready",
)
_OTHER_TEMPLATES = (
    "turn on the {device}",
    "turn off the {device}",
    "switch off the {device} in the {room}",
    "set the thermostat to {count} degrees",
    "set a timer for {count} minutes",
    "set a timer for {count_small} seconds",
    "set the volume to {n}",
    "dim the {device} to {n} percent",
    "play {music}",
    "play {music} in the {room}",
    "stop",
    "stop the music",
    "pause",
    "what is the time",
    "what's the time",
    "what's the weather like",
    "how many minutes are left",
    "cancel the timer",
)


class Sentence(NamedTuple):
    """One grammar sentence.

    Attributes
    ----------
    transcript : str
        Target text in the token inventory.
    spoken : str
        Text for espeak-ng (the transcript with contact names respelled phonetically).
    names : tuple of str
        Contact names in the sentence, in transcript spelling.
    wake : bool
        Whether the sentence starts with the wake word.
    """

    transcript: str
    spoken: str
    names: tuple[str, ...]
    wake: bool


def number_words(n: int) -> str:
    """Spell ``n`` (1..99) in words without hyphens, e.g. ``42 -> "forty two"``.

    Raises
    ------
    ValueError
        If ``n`` is not an integer in 1..99.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= 99:
        raise ValueError(f"number_words needs an integer in 1..99, got {n!r}")
    n = int(n)
    if n < 10:
        return _ONES[n - 1]
    if n < 20:
        return _TEENS[n - 10]
    tens, ones = divmod(n, 10)
    return _TENS[tens - 2] + ("" if ones == 0 else " " + _ONES[ones - 1])


def _contact(rng: np.random.Generator, rare_weight: float) -> str:
    names = list(CONTACTS)
    w = np.array([rare_weight if n in RARE_CONTACTS else 1.0 for n in names])
    return names[rng.choice(len(names), p=w / w.sum())]


def make_sentence(rng: np.random.Generator, *, name_prob: float = 0.35,
                  rare_weight: float = RARE_WEIGHT) -> Sentence:
    """Draw one sentence from the grammar.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness; the same generator state gives the same sentence.
    name_prob : float, keyword-only
        Probability in ``[0, 1]`` of a template with a contact name (default 0.35).
    rare_weight : float, keyword-only
        Weight in ``(0, 1]`` of each name in :data:`RARE_CONTACTS` relative to a common
        one (default :data:`RARE_WEIGHT`; 1 draws all names equally often).

    Returns
    -------
    Sentence

    Raises
    ------
    ValueError
        If ``name_prob`` is outside ``[0, 1]`` or ``rare_weight`` outside ``(0, 1]``.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not 0.0 <= name_prob <= 1.0:
        raise ValueError(f"name_prob must be in [0, 1], got {name_prob!r}")
    if not 0.0 < rare_weight <= 1.0:
        raise ValueError(f"rare_weight must be in (0, 1], got {rare_weight!r}")
    templates = _NAME_TEMPLATES if rng.random() < name_prob else _OTHER_TEMPLATES
    template = templates[rng.integers(len(templates))]
    name = _contact(rng, rare_weight)
    slots = {
        "device": DEVICES[rng.integers(len(DEVICES))],
        "room": ROOMS[rng.integers(len(ROOMS))],
        "music": MUSIC[rng.integers(len(MUSIC))],
        "n": number_words(int(rng.integers(1, 100))),
        "count": number_words(int(rng.integers(2, 100))),
        "count_small": number_words(int(rng.integers(2, 31))),
    }
    wake = bool(rng.random() < _WAKE_PROB)
    prefix = WAKE_WORD + " " if wake else ""
    transcript = prefix + template.format(name=name, **slots)
    spoken = prefix + template.format(name=CONTACTS[name], **slots)
    names = (name,) if "{name}" in template else ()
    return Sentence(transcript, spoken, names, wake)


def check_transcript(text: str) -> str:
    """Return ``text`` if it is a valid transcript, else raise ``ValueError``.

    Valid: non-empty, only characters of :func:`golden.tokens.default_tokens`, no leading,
    trailing or double spaces.
    """
    Tokenizer(default_tokens()).encode(text)  # raises naming the first bad character
    if text != text.lower() or not text.strip() or text != " ".join(text.split(" ")).strip() \
            or "  " in text:
        raise ValueError(f"transcript {text!r} must be lowercase words separated by "
                         "single spaces")
    return text
