"""The baselines the model must beat: word-by-word FreeDict lookup, and copying the source.

FreeDict English-Spanish (Debian ``dict-freedict-eng-spa``, GPL) is a dictd database:
an index of ``headword<TAB>offset<TAB>length`` (base-64 numbers) into a dictzip file.
Multi-word entries ("in the morning") are filed under their first word and only their
pronunciation shows the full phrase, so for each headword the entry whose pronunciation
is about as long as the word itself is preferred, then the entry with most
translations; its first single-word translation is used. Unknown words are copied.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

FREEDICT_INDEX = Path("/usr/share/dictd/freedict-eng-spa.index")
FREEDICT_DATA = Path("/usr/share/dictd/freedict-eng-spa.dict.dz")
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_WORD = re.compile(r"^(\W*)(.*?)(\W*)$")


def _b64_number(text: str) -> int:
    value = 0
    for ch in text:
        value = value * 64 + _B64.index(ch)
    return value


def _parse_entry(body: str) -> tuple[str, list[str]]:
    """(pronunciation, translations in order) of one dictd entry."""
    lines = body.strip().splitlines()
    head = re.search(r"/(.*)/", lines[0])
    translations = []
    for line in lines[1:]:
        line = re.sub(r"^\s*\d+\.\s*", "", line)
        translations += [t.strip() for t in line.split(",") if t.strip()]
    return (head.group(1) if head else ""), translations


class FreeDictBaseline:
    """Word-by-word English -> Spanish lookup; raises ``FileNotFoundError`` without FreeDict."""

    def __init__(self, index: Path = FREEDICT_INDEX, data: Path = FREEDICT_DATA) -> None:
        blob = gzip.decompress(data.read_bytes())
        candidates: dict[str, list[tuple[bool, int, int, str]]] = {}
        for line in index.read_text(encoding="utf-8").splitlines():
            headword, offset, length = line.split("\t")
            if headword.startswith("00database"):
                continue
            start = _b64_number(offset)
            body = blob[start : start + _b64_number(length)].decode("utf-8")
            pron, translations = _parse_entry(body)
            single = [t for t in translations if " " not in t]
            if not single:
                continue
            phrase = len(pron) > len(headword) + 3
            key = headword.lower()
            candidates.setdefault(key, []).append((phrase, -len(translations), len(pron), single[0]))
        self.lexicon = {word: min(options)[3] for word, options in candidates.items()}

    def translate_word(self, word: str) -> str:
        """Translation of one whitespace-separated word, keeping its punctuation and capital."""
        lead, core, trail = _WORD.match(word).groups()  # type: ignore[union-attr]
        found = self.lexicon.get(core.lower())
        if found is None:
            return word
        if core[:1].isupper():
            found = found[:1].upper() + found[1:]
        return lead + found + trail

    def translate(self, text: str) -> str:
        """Word-by-word translation of ``text``."""
        return " ".join(self.translate_word(w) for w in text.split())


def copy_source(text: str) -> str:
    """The copy baseline: the English text itself."""
    return text
