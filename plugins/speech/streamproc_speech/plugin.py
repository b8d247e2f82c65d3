"""The ``speech`` plugin: audio events in, ``transcript`` results out.

Result body (the translator plugin consumes ``text`` and ``language``)::

    {"text": "volume up", "language": "en", "duration_s": 2.1,
     "rejected": false, "reason": null, "confidence": 0.93,
     "segments": [{"start_s": 0.41, "end_s": 1.32, "text": "volume up", "confidence": 0.93,
                   "words": [{"word": "volume", "confidence": 0.97}, {"word": "up", "confidence": 0.96}]}],
     "rejected_segments": [],
     "model_version": "speech-ctc-<sha256[:12]>"}

``text`` is the accepted commands' lowercase words separated by single spaces. Each
utterance the voice activity detector finds is accepted (in ``segments``) or rejected
(in ``rejected_segments``, with ``start_s``, ``end_s``, ``reason`` and ``confidence``;
its words are never emitted). A clip none of whose utterances is accepted has
``rejected: true``, ``text: ""``, no ``segments`` and a ``reason``: ``non_speech``
(nothing speech-like, including silence and empty audio), ``out_of_grammar`` (speech,
but not a command) or ``low_confidence`` (a command-like utterance heard unclearly); see
``streamproc_speech.confidence``. ``confidence`` (0..1) is the lowest accepted
utterance's, or the highest rejected one's.

Options (``plugins.speech.options``, validated at load, ``ConfigError`` when invalid):
``weights_dir`` (default: the packaged weights); ``decoder``: "grammar" (default; words
and word successions of the command grammar, any number of commands per utterance),
"lexicon" (any sequence of vocabulary words) or "greedy" (unconstrained best path; may
produce non-words, and its confidence is always 1.0); ``min_confidence`` (0..1, default: the
threshold calibrated for the weights, stored in their ``config.json``): utterances scoring
below it are rejected; 0.0 rejects only what the grammar cannot decode at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamproc.errors import InvalidInput
from streamproc.events import AudioEvent, Event
from streamproc.media import decode_wav
from streamproc.plugin import BatchPolicy, LoadContext, Plugin
from streamproc_speech.recognizer import PreparedAudio, Transcriber, Transcript


class SpeechOptions(BaseModel):
    """``plugins.speech.options``; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    weights_dir: str | None = Field(None, description="folder of the model weights (default: the shipped ones)")
    decoder: Literal["grammar", "lexicon", "greedy"] = Field(
        "grammar", description="grammar: the command grammar; lexicon: any known words; greedy: raw characters"
    )
    min_confidence: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="commands below this utterance confidence are rejected (default: the model card's threshold)",
    )


class SpeechRecognizer(Plugin):
    """English voice-command recognizer (CTC over characters, grammar-constrained decoding)."""

    name: ClassVar[str] = "speech"
    consumes: ClassVar[tuple[str, ...]] = ("audio",)
    produces: ClassVar[str] = "transcript"
    batch_policy: ClassVar[BatchPolicy] = BatchPolicy(max_batch_size=16, max_wait_ms=10.0, max_queue=128)

    Options: ClassVar[type[BaseModel] | None] = SpeechOptions

    def load(self, context: LoadContext) -> None:
        """Load the weights onto ``context.device``. ``context.options`` are validated by the
        engine against ``SpeechOptions`` (``pydantic.ValidationError`` when called directly
        with bad ones)."""
        options = SpeechOptions.model_validate(dict(context.options))
        self._transcriber = Transcriber(options.weights_dir, context.device, options.decoder, options.min_confidence)
        self.model_version = self._transcriber.version

    def prepare(self, event: Event, state: Mapping[str, Any] | None) -> PreparedAudio:
        """Decode the WAV and cut it into utterances.

        Raises ``InvalidInput`` for a non-audio event, a URI-only event or a language
        other than English, and ``MediaError`` for audio that is not a supported WAV.
        """
        if not isinstance(event, AudioEvent):
            raise InvalidInput(f"type: the speech plugin takes audio events, not {event.type!r}")
        if event.language != "en" and not event.language.startswith("en-"):
            raise InvalidInput(f"language: {event.language!r} is not supported (English only)")
        if event.audio is None:
            raise InvalidInput("audio: inline WAV bytes are required (audio_uri is not fetched)")
        return Transcriber.prepare(decode_wav(event.audio))

    def infer(self, batch: Sequence[PreparedAudio]) -> Sequence[Transcript]:
        """One forward pass over every utterance of the batch; one transcript per item."""
        return self._transcriber.transcribe(list(batch))

    def result(self, event: Event, output: Transcript) -> Mapping[str, Any]:
        assert isinstance(event, AudioEvent)
        return {
            "text": output.text,
            "language": event.language,
            "duration_s": round(output.duration_s, 3),
            "rejected": output.rejection is not None,
            "reason": output.rejection,
            "confidence": round(output.confidence, 4),
            "segments": [
                {
                    "start_s": round(u.segment.start_s, 3),
                    "end_s": round(u.segment.end_s, 3),
                    "text": u.text,
                    "confidence": round(u.confidence, 4),
                    "words": [{"word": w, "confidence": round(c, 4)} for w, c in u.words],
                }
                for u in output.accepted
            ],
            "rejected_segments": [
                {
                    "start_s": round(u.segment.start_s, 3),
                    "end_s": round(u.segment.end_s, 3),
                    "reason": u.rejection,
                    "confidence": round(u.confidence, 4),
                }
                for u in output.utterances
                if u.rejection is not None
            ],
            "model_version": self.model_version,
        }
