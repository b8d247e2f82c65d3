"""Cutting a text into the segments that are translated one by one, with their character spans.

A text is cut into sentences (after ``.``, ``!``, ``?``, ``;`` and at line breaks); a
sentence longer than ``max_words`` words is cut again, at the clause boundary (``,``,
``:``, `` - ``, ``(``) nearest its middle, else before the conjunction nearest its
middle, else at the middle word, until every piece fits. Nothing is dropped: the spans
cover every word of the text, in order.
"""

from __future__ import annotations

import re

Span = tuple[int, int]
_SENTENCE_BREAK = re.compile(r"(?<=[.!?;])\s+|\s*\n\s*")
_CLAUSE = re.compile(r"(?<=[,:])\s+|\s+(?=[-\u2013(])")
_CONJUNCTION = re.compile(r"\s+(?=(?:and|or|but|which|that|while|because|with|for|so)\s)", re.I)
_WORD = re.compile(r"\S+")


def _trim(text: str, start: int, end: int) -> Span | None:
    piece = text[start:end]
    if not piece.strip():
        return None
    lead = len(piece) - len(piece.lstrip())
    return start + lead, start + len(piece.rstrip())


def _cut_at(text: str, span: Span, pattern: re.Pattern[str]) -> list[Span] | None:
    """Cut ``span`` at the match of ``pattern`` nearest its middle, or None when there is none."""
    start, end = span
    middle = (start + end) / 2
    cuts = [m for m in pattern.finditer(text, start, end) if start < m.start() and m.end() < end]
    if not cuts:
        return None
    best = min(cuts, key=lambda m: abs(m.start() - middle))
    return [s for s in (_trim(text, start, best.start()), _trim(text, best.end(), end)) if s]


def _fit(text: str, span: Span, max_words: int) -> list[Span]:
    words = list(_WORD.finditer(text, *span))
    if len(words) <= max_words:
        return [span]
    halves = _cut_at(text, span, _CLAUSE) or _cut_at(text, span, _CONJUNCTION)
    if not halves or len(halves) < 2:
        middle = words[len(words) // 2].start()
        halves = [s for s in (_trim(text, span[0], middle), _trim(text, middle, span[1])) if s]
    return [piece for half in halves for piece in _fit(text, half, max_words)]


def segment(text: str, max_words: int) -> list[Span]:
    """Character spans of the segments of ``text``, each of at most ``max_words`` words."""
    spans: list[Span] = []
    start = 0
    for match in [*_SENTENCE_BREAK.finditer(text), None]:
        end = len(text) if match is None else match.start()
        sentence = _trim(text, start, end)
        if sentence:
            spans += _fit(text, sentence, max_words)
        if match is not None:
            start = match.end()
    return spans
