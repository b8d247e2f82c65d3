"""The ``translator`` plugin: English titles, descriptions and transcripts into Spanish.

Consumes ``upload`` events (``title`` and ``description``; ``event.language`` is a hint)
and ``transcript`` results of the speech plugin (``body["text"]``, ``body["language"]``);
produces ``translation``. Only English -> Spanish: an event whose configured targets
(option ``targets``, default ``["es"]``) hold no Spanish gives ``None`` from ``prepare``.
Options are the pydantic model ``TranslatorOptions`` (``Translator.Options``).

Each non-empty field is checked by language identification (``language``) before
anything is translated. A field that is not English is passed through unchanged
(``non_english: "pass"``, the default) or the event is refused with ``InvalidInput``
(``non_english: "refuse"``); it is never "translated". English fields are cut into
segments (``segments``), at most ``max_segments`` per field, translated by the
configured backend (option ``backend``: ``"apertium"``, Debian's rule-based system and
the default, being the better of the two on the general held-out set; or ``"gru"``, the
plugin's own network) and joined with single spaces. Result body:

    {"source_language": "en", "target_language": "es", "backend": "apertium",
     "fields": {"title": "...", "description": "..."}   (or {"text": ...} for transcripts),
     "languages": {"title": {"language": "en", "confidence": 0.92, "translated": true}, ...},
     "segments": {"title": [{"source": [0, 20], "target": [0, 19], "truncated": false}], ...},
     "truncated": false, "model_version": "..."}

``languages`` holds, per non-empty field, the detected language (``"und"`` for a text
without letters, such as a bare URL), its probability, and whether it was translated.
``source_language``/``target_language`` name the pair the plugin translates, also when
every field was passed through. ``segments`` gives, per translated field, the character
span ``[start, end)`` of each source segment and of its translation in the output.
``truncated`` is true when anything was cut: a segment beyond ``max_segments``, a
segment over the source subword limit, or an output that hit its length limit (GRU).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streamproc.errors import ConfigError, InvalidInput
from streamproc.events import DerivedEvent, Event, UploadEvent
from streamproc.plugin import BatchPolicy, LoadContext, Plugin
from streamproc_translator.apertium import ApertiumTranslator
from streamproc_translator.language import Detection, LanguageGuard
from streamproc_translator.segments import Span, segment
from streamproc_translator.translator import Decoded, EncodedSource, TextTranslator

SUPPORTED_PAIRS = frozenset({("en", "es")})
DEFAULT_BACKEND: Literal["gru", "apertium"] = "apertium"
"""The better of the two on the general held-out set (see the README's table)."""
DEFAULT_MAX_SEGMENTS = 16
MAX_SEGMENT_WORDS = 30
"""Longer sentences are cut at a clause boundary (the issue: > 30 words dropped content)."""


def base_language(code: str) -> str:
    """``"en-US"`` -> ``"en"``."""
    return code.split("-")[0].lower()


class TranslatorOptions(BaseModel):
    """``plugins.translator.options``; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    targets: list[str] = Field(
        default_factory=lambda: ["es"],
        description="Target language codes (a single code is accepted); only 'es' is translated, "
        "regional codes are reduced to the language ('es-MX' -> 'es').",
    )
    backend: Literal["gru", "apertium"] = Field(
        default=DEFAULT_BACKEND,
        description="'apertium': Debian's rule-based eng-spa system (needs the apertium and "
        "apertium-eng-spa packages; the better one on the general held-out set, see the README); "
        "'gru': the plugin's own GRU attention network.",
    )
    max_segments: int = Field(
        default=DEFAULT_MAX_SEGMENTS, ge=1, description="Segments translated per field; more sets truncated."
    )
    non_english: Literal["pass", "refuse"] = Field(
        default="pass",
        description="A field identified as not English is passed through unchanged ('pass') or the "
        "event is refused with InvalidInput ('refuse'); it is never translated.",
    )
    weights_dir: str | None = Field(
        default=None, description="GRU backend: folder of the weights (default: the packaged ones)."
    )
    apertium_executable: str = Field(
        default="apertium", description="Apertium backend: the apertium command (name or path)."
    )

    @field_validator("targets", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("targets")
    @classmethod
    def _base_languages(cls, value: list[str]) -> list[str]:
        return [base_language(code) for code in value]

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> TranslatorOptions:
        """Raises ``ConfigError`` naming the first bad option (as the engine does)."""
        try:
            return cls.model_validate(dict(raw))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "options"
            raise ConfigError(f"plugins.translator.options.{where}: {first['msg']}") from None


@dataclass(frozen=True)
class FieldJob:
    """One field to translate: its text, segment spans, and per segment the backend input."""

    text: str
    spans: Sequence[Span]
    inputs: Sequence[EncodedSource | str]
    truncated: bool


@dataclass(frozen=True)
class TranslationJob:
    """A prepared event: the pair, the fields to translate, the passed-through ones, detections."""

    source_language: str
    target_language: str
    fields: Mapping[str, FieldJob]
    passed: Mapping[str, str]
    detections: Mapping[str, Detection]


@dataclass(frozen=True)
class Translation:
    """The output of ``infer`` for one job: field -> text, segment alignment, truncation."""

    job: TranslationJob
    fields: Mapping[str, str]
    segments: Mapping[str, list[dict[str, Any]]]
    truncated: bool


class Translator(Plugin):
    """English -> Spanish translator with language identification and two backends."""

    name = "translator"
    consumes = ("upload", "transcript")
    produces = "translation"
    batch_policy = BatchPolicy(max_batch_size=16, max_wait_ms=10.0, max_queue=128)
    Options: ClassVar[type[BaseModel] | None] = TranslatorOptions

    def load(self, context: LoadContext) -> None:
        """Load language identification and the configured backend (see ``TranslatorOptions``).

        Raises ``ConfigError`` for a malformed option, and for the apertium backend when the
        ``apertium`` binary or its eng-spa data is missing.
        """
        options = TranslatorOptions.parse(context.options)
        self.targets = options.targets
        self.max_segments = options.max_segments
        self.backend = options.backend
        self.non_english = options.non_english
        self.guard = LanguageGuard()
        self.gru: TextTranslator | None = None
        self.apertium: ApertiumTranslator | None = None
        if self.backend == "gru":
            weights_dir = Path(options.weights_dir) if options.weights_dir else None
            self.gru = TextTranslator.load(weights_dir, context.device)
            self.model_version = self.gru.version
        else:
            self.apertium = ApertiumTranslator(options.apertium_executable)
            self.model_version = self.apertium.version

    def prepare(self, event: Event, state: Mapping[str, Any] | None) -> TranslationJob | None:
        """Detect, segment and encode the texts; ``None`` when there is nothing to do.

        Raises ``InvalidInput`` for other event types, malformed transcript bodies, and
        (with ``non_english: "refuse"``) a field that is not English.
        """
        if isinstance(event, UploadEvent):
            hint = event.language
            texts = {"title": event.title, "description": event.description}
        elif isinstance(event, DerivedEvent) and event.type == "transcript":
            text = event.body.get("text")
            if not isinstance(text, str):
                raise InvalidInput(f"body.text: a string is required, got {type(text).__name__}")
            hint = event.body.get("language", getattr(event.origin, "language", "en"))
            if not isinstance(hint, str):
                raise InvalidInput(f"body.language: a language code is required, got {type(hint).__name__}")
            texts = {"text": text}
        else:
            kind = event.type if isinstance(event, DerivedEvent) else type(event).__name__
            raise InvalidInput(f"type: translator takes uploads and transcripts, not {kind}")
        hint = base_language(hint)
        target = next((t for t in self.targets if ("en", t) in SUPPORTED_PAIRS), None)
        if target is None:
            return None
        fields: dict[str, FieldJob] = {}
        passed: dict[str, str] = {}
        detections: dict[str, Detection] = {}
        for name, text in texts.items():
            if not text.strip():
                continue
            detection = self.guard.detect(text)
            detections[name] = detection
            if not self.guard.is_english(detection, hint):
                if self.non_english == "refuse":
                    raise InvalidInput(
                        f"{name}: detected language {detection.language!r} (confidence {detection.confidence}, "
                        f"hint {hint!r}), not English; the translator only translates English"
                    )
                passed[name] = text
                continue
            spans = segment(text, MAX_SEGMENT_WORDS)
            truncated = len(spans) > self.max_segments
            spans = spans[: self.max_segments]
            pieces = [text[start:end] for start, end in spans]
            if self.gru is not None:
                encoded = [self.gru.encode(p) for p in pieces]
                truncated |= any(e.truncated for e in encoded)
                fields[name] = FieldJob(text, spans, encoded, truncated)
            else:
                fields[name] = FieldJob(text, spans, pieces, truncated)
        if not detections:
            return None
        return TranslationJob("en", target, fields, passed, detections)

    def _translate(self, inputs: Sequence[EncodedSource | str]) -> list[Decoded]:
        if self.gru is not None:
            return self.gru.translate_encoded([i for i in inputs if isinstance(i, EncodedSource)])
        assert self.apertium is not None
        return [Decoded(t, False) for t in self.apertium.translate([str(i) for i in inputs])]

    def infer(self, batch: Sequence[TranslationJob]) -> list[Translation]:
        """Translate every segment of every job in one batched call, then regroup by field."""
        flat = [i for job in batch for f in job.fields.values() for i in f.inputs]
        decoded = iter(self._translate(flat))
        outputs = []
        for job in batch:
            fields: dict[str, str] = dict(job.passed)
            alignment: dict[str, list[dict[str, Any]]] = {}
            truncated = False
            for name, field in job.fields.items():
                out, rows = "", []
                for span in field.spans:
                    piece = next(decoded)
                    start = len(out) + (1 if out and piece.text else 0)
                    out = f"{out} {piece.text}" if out and piece.text else out + piece.text
                    rows.append({"source": list(span), "target": [start, len(out)], "truncated": piece.hit_cap})
                    truncated |= piece.hit_cap
                fields[name] = out
                alignment[name] = rows
                truncated |= field.truncated
            outputs.append(Translation(job, fields, alignment, truncated))
        return outputs

    def result(self, event: Event, output: Translation) -> Mapping[str, Any]:
        """The translation body (see the module docstring)."""
        job = output.job
        return {
            "source_language": job.source_language,
            "target_language": job.target_language,
            "backend": self.backend,
            "fields": {name: output.fields[name] for name in job.detections},
            "languages": {
                name: {"language": d.language, "confidence": d.confidence, "translated": name in job.fields}
                for name, d in job.detections.items()
            },
            "segments": output.segments,
            "truncated": output.truncated,
            "model_version": self.model_version,
        }
