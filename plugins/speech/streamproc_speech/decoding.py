"""From per-frame CTC log-probabilities to text: greedy and lexicon-constrained beam search.

``greedy_decode`` takes the best token of every frame, merges repeats and drops blanks.
``LexiconDecoder`` runs a CTC prefix beam search in which every word must be spelt as a
word of the vocabulary: a letter may only extend a prefix of some word, and a space (or
the end of the utterance) may only follow a complete word. Both return lowercase words
separated by single spaces.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from streamproc_speech.model import ALPHABET, BLANK, decode_tokens

SPACE = ALPHABET.index(" ") + 1
_NEG_INF = -math.inf


def _normalise(text: str) -> str:
    return " ".join(text.split())


def greedy_decode(log_probs: np.ndarray) -> str:
    """Best-path decoding of ``log_probs`` (frames, tokens)."""
    best = log_probs.argmax(axis=1).tolist() if len(log_probs) else []
    tokens = [t for i, t in enumerate(best) if t != BLANK and (i == 0 or t != best[i - 1])]
    return _normalise(decode_tokens(tokens))


def _logadd(a: float, b: float) -> float:
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    hi, lo = (a, b) if a > b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


def _add(beams: dict[str, list[float]], prefix: str, blank: float, non_blank: float) -> None:
    entry = beams.setdefault(prefix, [_NEG_INF, _NEG_INF])
    entry[0] = _logadd(entry[0], blank)
    entry[1] = _logadd(entry[1], non_blank)


class LexiconDecoder:
    """CTC prefix beam search constrained to a word list, optionally to word successions.

    ``beam`` prefixes are kept per frame; at each frame only tokens whose probability is
    at least ``token_floor`` are tried (the blank always is). With ``successors`` (see
    ``grammar.word_successors``: ``"<s>"`` -> first words, word -> words that may follow,
    ``"</s>"`` -> last words) a word may only follow a word it can follow in the
    grammar. Returns ``""`` when no prefix spells whole words.
    """

    def __init__(
        self,
        words: Iterable[str],
        beam: int = 12,
        token_floor: float = 1e-4,
        successors: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        vocabulary = frozenset(words)
        if successors is None:
            successors = {w: vocabulary for w in (*vocabulary, "<s>", "</s>")}
        self.successors = {w: following & vocabulary for w, following in successors.items()}
        self.prefixes = {
            w: frozenset(n[:i] for n in following for i in range(len(n) + 1))
            for w, following in self.successors.items()
        }
        self.beam = beam
        self.log_floor = math.log(token_floor)

    @staticmethod
    def _split(prefix: str) -> tuple[str, str]:
        """(previous complete word or "<s>", the word being spelt) of a prefix."""
        head, _, partial = prefix.rpartition(" ")
        return head[head.rfind(" ") + 1 :] or "<s>", partial

    def _allowed(self, prefix: str, token: int) -> bool:
        previous, partial = self._split(prefix)
        if token == SPACE:
            return partial in self.successors.get(previous, ())
        return partial + ALPHABET[token - 1] in self.prefixes.get(previous, ())

    def _finished(self, prefix: str) -> bool:
        previous, partial = self._split(prefix.rstrip(" "))
        if not partial:
            return True
        return partial in self.successors.get(previous, ()) and partial in self.successors["</s>"]

    def decode(self, log_probs: np.ndarray) -> str:
        """The most probable word sequence for ``log_probs`` (frames, tokens)."""
        beams: dict[str, tuple[float, float]] = {"": (0.0, _NEG_INF)}  # prefix -> (blank, non-blank)
        for frame in np.asarray(log_probs, dtype=np.float64):
            candidates = [t for t in np.flatnonzero(frame >= self.log_floor).tolist() if t != BLANK]
            nxt: dict[str, list[float]] = {}
            for prefix, (p_b, p_nb) in beams.items():
                total = _logadd(p_b, p_nb)
                _add(nxt, prefix, total + frame[BLANK], _NEG_INF)
                last = ALPHABET.index(prefix[-1]) + 1 if prefix else None
                if last is not None:
                    _add(nxt, prefix, _NEG_INF, p_nb + frame[last])
                for token in candidates:
                    if not self._allowed(prefix, token):
                        continue
                    extended = prefix + ALPHABET[token - 1]
                    source = p_b if token == last else total
                    _add(nxt, extended, _NEG_INF, source + frame[token])
            ranked = sorted(nxt.items(), key=lambda kv: _logadd(*kv[1]), reverse=True)
            beams = {prefix: (b, nb) for prefix, (b, nb) in ranked[: self.beam]}
        finished = [(prefix, _logadd(*scores)) for prefix, scores in beams.items() if self._finished(prefix)]
        if not finished:
            return ""
        return _normalise(max(finished, key=lambda kv: kv[1])[0])
