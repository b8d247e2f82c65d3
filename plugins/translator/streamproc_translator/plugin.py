"""The ``translator`` plugin: English titles, descriptions and transcripts into Spanish.

Consumes ``upload`` events (``title`` and ``description``, in ``event.language``) and
``transcript`` results of the speech plugin (``body["text"]``, ``body["language"]``);
produces ``translation``. The model translates English -> Spanish only: an event whose
source language is not English, or whose configured targets (option ``targets``,
default ``["es"]``) hold no Spanish, gives ``None`` from ``prepare`` (nothing to do).
Other targets are ignored, so a result always holds exactly one translation:

    {"source_language": "en", "target_language": "es",
     "fields": {"title": "...", "description": "..."}  (or {"text": "..."} for transcripts),
     "truncated": false, "model_version": "translator-<sha256 prefix>"}

Only non-empty fields are translated. Texts are split into sentences; at most
``max_segments`` sentences per field (option, default 16) of at most
``max_source_tokens`` subwords each are translated, and ``truncated`` says when
anything was cut.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamproc.errors import ConfigError, InvalidInput
from streamproc.events import DerivedEvent, Event, UploadEvent
from streamproc.plugin import BatchPolicy, LoadContext, Plugin
from streamproc_translator.translator import EncodedSource, TextTranslator

SUPPORTED_PAIRS = frozenset({("en", "es")})
DEFAULT_MAX_SEGMENTS = 16
_SENTENCE_BREAK = re.compile(r"(?<=[.!?;])\s+|\s*\n\s*")


@dataclass(frozen=True)
class TranslationJob:
    """A prepared event: the language pair and, per field, its encoded sentences."""

    source_language: str
    target_language: str
    fields: Mapping[str, Sequence[EncodedSource]]
    truncated: bool


@dataclass(frozen=True)
class Translation:
    """The output of ``infer`` for one job: the pair, field -> translated text, truncation."""

    source_language: str
    target_language: str
    fields: Mapping[str, str]
    truncated: bool


def base_language(code: str) -> str:
    """``"en-US"`` -> ``"en"``."""
    return code.split("-")[0].lower()


class Translator(Plugin):
    """GRU encoder-decoder translator (English -> Spanish)."""

    name = "translator"
    consumes = ("upload", "transcript")
    produces = "translation"
    batch_policy = BatchPolicy(max_batch_size=16, max_wait_ms=10.0, max_queue=128)

    def load(self, context: LoadContext) -> None:
        """Read options (``targets``, ``max_segments``, ``weights_dir``) and the weights.

        Raises ``ConfigError`` for malformed options.
        """
        targets = context.options.get("targets", ["es"])
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, Sequence) or not all(isinstance(t, str) for t in targets):
            raise ConfigError(f"translator.targets: a list of language codes is required, got {targets!r}")
        self.targets = [base_language(t) for t in targets]
        self.max_segments = context.options.get("max_segments", DEFAULT_MAX_SEGMENTS)
        if not isinstance(self.max_segments, int) or self.max_segments < 1:
            raise ConfigError(f"translator.max_segments: a positive integer is required, got {self.max_segments!r}")
        weights_dir = context.options.get("weights_dir")
        folder = Path(weights_dir) if weights_dir is not None else None
        self.translator = TextTranslator.load(folder, context.device)
        self.model_version = self.translator.version

    def prepare(self, event: Event, state: Mapping[str, Any] | None) -> TranslationJob | None:
        """Encode the texts of an upload or a transcript; ``None`` when there is nothing to do.

        Raises ``InvalidInput`` for other event types and malformed transcript bodies.
        """
        if isinstance(event, UploadEvent):
            source = event.language
            texts = {"title": event.title, "description": event.description}
        elif isinstance(event, DerivedEvent) and event.type == "transcript":
            text = event.body.get("text")
            if not isinstance(text, str):
                raise InvalidInput(f"body.text: a string is required, got {type(text).__name__}")
            source = event.body.get("language", getattr(event.origin, "language", "en"))
            if not isinstance(source, str):
                raise InvalidInput(f"body.language: a language code is required, got {type(source).__name__}")
            texts = {"text": text}
        else:
            kind = event.type if isinstance(event, DerivedEvent) else type(event).__name__
            raise InvalidInput(f"type: translator takes uploads and transcripts, not {kind}")
        source = base_language(source)
        target = next((t for t in self.targets if (source, t) in SUPPORTED_PAIRS), None)
        if target is None:
            return None
        fields, truncated = {}, False
        for name, text in texts.items():
            sentences = [s for s in _SENTENCE_BREAK.split(text) if s.strip()]
            if not sentences:
                continue
            truncated |= len(sentences) > self.max_segments
            encoded = [self.translator.encode(s) for s in sentences[: self.max_segments]]
            truncated |= any(e.truncated for e in encoded)
            fields[name] = encoded
        if not fields:
            return None
        return TranslationJob(source, target, fields, truncated)

    def infer(self, batch: Sequence[TranslationJob]) -> list[Translation]:
        """Translate every sentence of every job in one batched decode."""
        flat = [s for job in batch for sentences in job.fields.values() for s in sentences]
        translated = iter(self.translator.translate_encoded(flat))
        outputs = []
        for job in batch:
            fields = {
                name: " ".join(t for t in (next(translated) for _ in sentences) if t)
                for name, sentences in job.fields.items()
            }
            outputs.append(Translation(job.source_language, job.target_language, fields, job.truncated))
        return outputs

    def result(self, event: Event, output: Translation) -> Mapping[str, Any]:
        """The translation body (see the module docstring)."""
        return {
            "source_language": output.source_language,
            "target_language": output.target_language,
            "fields": dict(output.fields),
            "truncated": output.truncated,
            "model_version": self.model_version,
        }
