"""Subword tokenisation: text normalisation, pre-tokenisation and byte-pair encoding (BPE).

A text is cut into words and punctuation marks; a piece that follows whitespace (or
starts the text) carries the word-start mark ``▁``, so ``decode(encode(text))`` gives
the text back up to whitespace. BPE (Sennrich et al., 2016) learns merges of adjacent
symbols inside those pieces, most frequent pair first; encoding applies them by rank.
Characters seen fewer than ``min_char_count`` times in training map to ``<unk>``.
"""

from __future__ import annotations

import heapq
import itertools
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

WORD_START = "▁"
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)

_PIECES = re.compile(r"\w+|[^\w\s]")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "«": '"', "»": '"'})


def normalize_source(text: str, strip_punctuation: bool = False) -> str:
    """The English side as the model sees it: NFKC, lowercase, straight quotes.

    With ``strip_punctuation`` it also drops punctuation other than apostrophes, which
    makes training text look like speech transcripts ("play episode seven").
    """
    text = unicodedata.normalize("NFKC", text).lower().translate(_QUOTES)
    if strip_punctuation:
        text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(text.split())


def normalize_target(text: str) -> str:
    """The Spanish side: NFC, single spaces (case and punctuation are kept)."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def pretokenize(text: str) -> list[str]:
    """Words and punctuation marks; those after whitespace start with ``▁``."""
    return [
        (WORD_START if m.start() == 0 or text[m.start() - 1].isspace() else "") + m.group()
        for m in _PIECES.finditer(text)
    ]


def learn_bpe(texts: Iterable[str], merges: int, min_char_count: int = 3) -> dict[str, Any]:
    """Learn up to ``merges`` BPE merges from pre-tokenised ``texts``.

    Returns the JSON-serialisable tokenizer description ``{"alphabet", "merges"}``.
    Ties between equally frequent pairs go to the lexicographically smallest pair, so
    the result depends on the texts only.
    """
    counts = Counter(piece for text in texts for piece in pretokenize(text))
    chars = Counter()
    for piece, n in counts.items():
        for ch in piece:
            chars[ch] += n
    alphabet = sorted(ch for ch, n in chars.items() if n >= min_char_count)
    known = set(alphabet)
    words = [[ch if ch in known else UNK for ch in piece] for piece in counts]
    freqs = list(counts.values())
    pair_counts: Counter[tuple[str, str]] = Counter()
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for i, word in enumerate(words):
        for pair in itertools.pairwise(word):
            pair_counts[pair] += freqs[i]
            where[pair].add(i)
    heap = [(-n, pair) for pair, n in pair_counts.items()]
    heapq.heapify(heap)
    learned: list[list[str]] = []
    while len(learned) < merges and heap:
        neg, best = heapq.heappop(heap)
        if pair_counts.get(best, 0) != -neg or -neg < 2:
            continue  # stale heap entry
        learned.append(list(best))
        changed = set()
        for i in where.pop(best):
            old, freq = words[i], freqs[i]
            new = _merge(old, best)
            if new == old:
                continue
            for pair in itertools.pairwise(old):
                pair_counts[pair] -= freq
                changed.add(pair)
            for pair in itertools.pairwise(new):
                pair_counts[pair] += freq
                where[pair].add(i)
                changed.add(pair)
            words[i] = new
        pair_counts.pop(best, None)
        for pair in changed - {best}:
            if pair_counts[pair] > 0:
                heapq.heappush(heap, (-pair_counts[pair], pair))
            else:
                del pair_counts[pair]
    return {"alphabet": alphabet, "merges": learned}


def _merge(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


class Tokenizer:
    """Encodes text to subword ids and decodes ids to text, from a learned description.

    Ids: 0 ``<pad>``, 1 ``<unk>``, 2 ``<s>``, 3 ``</s>``, then the alphabet, then one
    symbol per merge in merge order.
    """

    def __init__(self, description: dict[str, Any]) -> None:
        self.alphabet = set(description["alphabet"])
        self.ranks = {tuple(pair): rank for rank, pair in enumerate(description["merges"])}
        symbols = list(SPECIALS) + list(description["alphabet"])
        symbols += [a + b for a, b in description["merges"]]
        self.vocab = list(dict.fromkeys(symbols))
        self.ids = {symbol: i for i, symbol in enumerate(self.vocab)}
        self.encode_piece = lru_cache(maxsize=65536)(self._encode_piece_uncached)
        """The subword symbols of one pre-token (cached)."""

    def __len__(self) -> int:
        return len(self.vocab)

    def pieces(self, text: str) -> list[list[str]]:
        """The subword symbols of each pre-token of ``text``."""
        return [list(self.encode_piece(piece)) for piece in pretokenize(text)]

    def encode(self, text: str) -> list[int]:
        """Subword ids of ``text`` (no ``<s>``/``</s>``)."""
        return [self.ids.get(s, UNK_ID) for piece in self.pieces(text) for s in piece]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids; special ids other than ``<unk>`` are skipped."""
        symbols = [self.vocab[i] for i in ids if i == UNK_ID or i >= len(SPECIALS)]
        return "".join(symbols).replace(WORD_START, " ").strip()

    def _encode_piece_uncached(self, piece: str) -> tuple[str, ...]:
        symbols = [ch if ch in self.alphabet else UNK for ch in piece]
        while len(symbols) > 1:
            pairs = itertools.pairwise(symbols)
            rank, pair = min((self.ranks.get(p, len(self.ranks)), p) for p in pairs)
            if rank == len(self.ranks):
                break
            symbols = _merge(symbols, pair)
        return tuple(symbols)
