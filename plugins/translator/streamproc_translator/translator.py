"""Text in, text out: the trained network with its tokenizers, limits and decoding.

``TextTranslator`` owns what turns English sentences into Spanish ones: source
normalisation, subword encoding with truncation to ``max_source_tokens``, one batched
decode (beam search, or greedy when ``beam_size`` is 1), and the replacement of ``<unk>`` outputs by the source word the
decoder attended to most (unseen characters such as emoji are copied, not lost).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors

from streamproc_translator.bpe import (
    EOS_ID,
    PAD_ID,
    UNK_ID,
    WORD_START,
    Tokenizer,
    normalize_source,
    pretokenize,
)
from streamproc_translator.model import ModelConfig, Seq2SeqTranslator

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SOURCE_TOKENIZER_FILE = "source_bpe.json"
TARGET_TOKENIZER_FILE = "target_bpe.json"


def packaged_weights() -> Traversable:
    """The weights folder shipped inside the package."""
    return resources.files("streamproc_translator") / "weights"


@dataclass(frozen=True)
class EncodedSource:
    """Source subword ids (truncated) and, per id, the source word it came from."""

    ids: list[int]
    words: list[str]
    word_of: list[int]
    truncated: bool


@dataclass(frozen=True)
class Decoded:
    """One translated text, and whether its output hit the length limit."""

    text: str
    hit_cap: bool


class TextTranslator:
    """English -> Spanish translation with a trained ``Seq2SeqTranslator``."""

    def __init__(
        self,
        model: Seq2SeqTranslator,
        source: Tokenizer,
        target: Tokenizer,
        max_source_tokens: int,
        max_target_tokens: int,
        beam_size: int,
        version: str,
        no_repeat_ngram: int = 0,
    ) -> None:
        self.model = model
        self.source = source
        self.target = target
        self.max_source_tokens = max_source_tokens
        self.max_target_tokens = max_target_tokens
        self.beam_size = beam_size
        self.version = version
        self.no_repeat_ngram = no_repeat_ngram

    @classmethod
    def load(cls, folder: Traversable | Path | None, device: torch.device) -> TextTranslator:
        """Read weights, tokenizers and config from ``folder`` (default: the packaged ones).

        The version is ``translator-`` plus the first 12 hex digits of the SHA-256 of the
        safetensors file. The model is put in eval mode on ``device``.
        """
        folder = packaged_weights() if folder is None else folder
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        raw = (folder / WEIGHTS_FILE).read_bytes()
        model = Seq2SeqTranslator(ModelConfig(**config["model"]))
        model.load_state_dict(load_safetensors(raw))
        model.to(device).eval()
        return cls(
            model,
            Tokenizer(json.loads((folder / SOURCE_TOKENIZER_FILE).read_text(encoding="utf-8"))),
            Tokenizer(json.loads((folder / TARGET_TOKENIZER_FILE).read_text(encoding="utf-8"))),
            int(config["max_source_tokens"]),
            int(config["max_target_tokens"]),
            int(config["beam_size"]),
            "translator-" + hashlib.sha256(raw).hexdigest()[:12],
            int(config.get("no_repeat_ngram", 0)),
        )

    @property
    def device(self) -> torch.device:
        return self.model.output_bias.device

    def encode(self, text: str) -> EncodedSource:
        """Normalise and encode one English text; empty ``ids`` when nothing is left."""
        words = pretokenize(normalize_source(text))
        ids: list[int] = []
        word_of: list[int] = []
        for index, word in enumerate(words):
            for symbol in self.source.encode_piece(word):
                ids.append(self.source.ids.get(symbol, UNK_ID))
                word_of.append(index)
        truncated = len(ids) > self.max_source_tokens
        limit = self.max_source_tokens
        return EncodedSource(ids[:limit], words, word_of[:limit], truncated)

    def translate_encoded(self, sources: Sequence[EncodedSource]) -> list[Decoded]:
        """Translate encoded sources in one batched decode; empty ones give ("", False).

        ``hit_cap`` is true when an output used every step of its length limit
        (``min(max_target_tokens, 2 x source subwords + 8)``), i.e. its end was forced.
        """
        todo = [i for i, s in enumerate(sources) if s.ids]
        results = [Decoded("", False)] * len(sources)
        if not todo:
            return results
        lengths = torch.tensor([len(sources[i].ids) for i in todo])
        src = torch.full((len(todo), int(lengths.max())), PAD_ID, dtype=torch.long)
        for row, i in enumerate(todo):
            src[row, : len(sources[i].ids)] = torch.tensor(sources[i].ids)
        # Each sentence's own limit, so that a batch decodes like its sentences one by one.
        max_lens = (lengths * 2 + 8).clamp(max=self.max_target_tokens).to(self.device)
        src = src.to(self.device)
        if self.beam_size > 1:
            ids, focus = self.model.beam_search(
                src, lengths, max_lens, self.beam_size, no_repeat_ngram=self.no_repeat_ngram
            )
        else:
            ids, focus = self.model.greedy(src, lengths, max_lens)
        for row, i in enumerate(todo):
            row_ids = ids[row].tolist()
            steps = row_ids.index(EOS_ID) + 1 if EOS_ID in row_ids else len(row_ids)
            text = self._detokenize(row_ids, focus[row].tolist(), sources[i])
            results[i] = Decoded(text, steps >= int(max_lens[row]))
        return results

    def translate(self, texts: Sequence[str]) -> list[str]:
        """Translate English texts (each truncated to the source limit) in one batch."""
        return [d.text for d in self.translate_encoded([self.encode(t) for t in texts])]

    def _detokenize(self, ids: list[int], focus: list[int], source: EncodedSource) -> str:
        symbols = []
        for token, position in zip(ids, focus, strict=True):
            if token in (EOS_ID, PAD_ID):
                break
            if token == UNK_ID:
                word = source.words[source.word_of[position]]
                symbols.append(word if word.startswith(WORD_START) else WORD_START + word)
            else:
                symbols.append(self.target.vocab[token])
        text = " ".join("".join(symbols).replace(WORD_START, " ").split())
        # A word the tokenizer could not represent (an emoji, a rare script) is never dropped:
        # when the decoder did not copy it, it is appended.
        unknown = dict.fromkeys(
            source.words[source.word_of[i]].lstrip(WORD_START) for i, t in enumerate(source.ids) if t == UNK_ID
        )
        missing = [word for word in unknown if word not in text]
        return " ".join([text, *missing]) if missing else text
