"""The command language: a small grammar of media-player voice commands.

Owns the word list, the seeded phrase generator used for training and evaluation data,
and the JSGF rendering of the same grammar for the pocketsphinx baseline. Every phrase
is lowercase words separated by single spaces; numbers 0-99 are spelt in words
("twenty one").
"""

from __future__ import annotations

import itertools
import random

UNITS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]

SIMPLE_COMMANDS = (
    "play",
    "pause",
    "stop",
    "resume",
    "next",
    "previous",
    "mute",
    "unmute",
    "shuffle",
    "repeat",
    "volume up",
    "volume down",
    "louder",
    "quieter",
    "next episode",
    "previous episode",
    "next track",
    "previous track",
)
# (template, weight): "{n}" and "{m}" take a number 1-99, "{unit}" a time unit agreeing with {n}.
TEMPLATES = (
    ("{simple}", 6.0),
    ("skip {n} {unit}", 2.0),
    ("skip forward {n} {unit}", 1.0),
    ("go back {n} {unit}", 2.0),
    ("rewind {n} {unit}", 1.0),
    ("play episode {n}", 2.0),
    ("play track {n}", 1.0),
    ("play season {n} episode {m}", 1.0),
    ("go to chapter {n}", 1.0),
    ("set volume to {n}", 1.0),
    ("volume {n}", 0.5),
    ("{n}", 1.5),
)


def number_words(n: int) -> str:
    """Spell ``0 <= n <= 99`` in words: 7 -> "seven", 42 -> "forty two"."""
    if not 0 <= n <= 99:
        raise ValueError(f"number out of range 0-99: {n}")
    if n < 20:
        return UNITS[n]
    tens, unit = divmod(n, 10)
    return TENS[tens - 2] if unit == 0 else f"{TENS[tens - 2]} {UNITS[unit]}"


def vocabulary() -> tuple[str, ...]:
    """Every word the grammar can produce, sorted."""
    words = set(UNITS) | set(TENS) | {"second", "seconds", "minute", "minutes"}
    for template, _ in TEMPLATES:
        words.update(w for w in template.split() if not w.startswith("{"))
    for command in SIMPLE_COMMANDS:
        words.update(command.split())
    return tuple(sorted(words))


def _random_number(rng: random.Random) -> int:
    # Small numbers are said more often; every number 0-99 still appears.
    return rng.randint(1, 20) if rng.random() < 0.5 else rng.randint(0, 99)


def random_phrase(rng: random.Random) -> str:
    """Draw one phrase from the grammar (deterministic for a seeded ``rng``)."""
    templates, weights = zip(*TEMPLATES, strict=True)
    template = rng.choices(templates, weights=weights)[0]
    n, m = _random_number(rng), rng.randint(1, 30)
    if "{unit}" in template:
        n = max(n, 1)
    unit = rng.choice(("second", "minute")) if rng.random() < 0.2 else "second"
    return template.format(
        simple=rng.choice(SIMPLE_COMMANDS),
        n=number_words(n),
        m=number_words(m),
        unit=unit if n == 1 else unit + "s",
    )


def phrases(count: int, seed: int) -> list[str]:
    """``count`` phrases drawn with ``random.Random(seed)``."""
    rng = random.Random(seed)
    return [random_phrase(rng) for _ in range(count)]


def jsgf() -> str:
    """The same grammar as a JSGF document (for pocketsphinx's grammar baseline)."""
    simple = " | ".join(SIMPLE_COMMANDS)
    return "\n".join(
        [
            "#JSGF V1.0;",
            "grammar media;",
            f"<simple> = {simple};",
            f"<unit> = {' | '.join(UNITS[1:])};",
            f"<number> = zero | <unit> | ({' | '.join(TENS)}) [{' | '.join(UNITS[1:10])}];",
            "<time> = second | seconds | minute | minutes;",
            "public <command> = <simple>",
            "  | (skip [forward] | go back | rewind) <number> <time>",
            "  | play (episode | track) <number>",
            "  | play season <number> episode <number>",
            "  | go to chapter <number>",
            "  | [set] volume [to] <number>",
            "  | <number>;",
            "",
        ]
    )


def all_phrases() -> list[str]:
    """Every phrase the grammar can produce (a few thousand), in a fixed order."""
    numbers = [number_words(n) for n in range(100)]
    out: list[str] = []
    for template, _ in TEMPLATES:
        if template == "{simple}":
            out += SIMPLE_COMMANDS
            continue
        first = 1 if "{unit}" in template else 0
        for n in range(first, 100) if "{n}" in template else [0]:
            for m in range(1, 31) if "{m}" in template else [0]:
                units = ("second", "minute") if n == 1 else ("seconds", "minutes")
                for unit in units if "{unit}" in template else ("",):
                    out.append(template.format(n=numbers[n], m=numbers[m], unit=unit))
    return out


def word_successors() -> dict[str, frozenset[str]]:
    """Which word may follow which in the grammar: ``"<s>"`` maps to the first words of
    phrases, each word to the words that may follow it (a phrase's last word may also be
    followed by the first word of a command, so that commands said in one breath still
    decode; not by a number, which would make "ninety ten" a word succession), and
    ``"</s>"`` lists the words that may end an utterance."""
    pairs: dict[str, set[str]] = {"<s>": set(), "</s>": set()}
    for phrase in all_phrases():
        words = phrase.split()
        pairs["<s>"].add(words[0])
        pairs["</s>"].add(words[-1])
        for a, b in itertools.pairwise(words):
            pairs.setdefault(a, set()).add(b)
    commands = pairs["<s>"] - set(UNITS) - set(TENS)  # a number never starts a second command
    for last in pairs["</s>"]:
        pairs.setdefault(last, set()).update(commands)
    return {word: frozenset(following) for word, following in pairs.items()}
