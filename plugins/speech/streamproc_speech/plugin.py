"""The ``speech`` plugin: audio events in, ``transcript`` results out.

Result body (the translator plugin consumes it)::

    {"text": "volume up", "language": "en", "duration_s": 2.1,
     "segments": [{"start_s": 0.41, "end_s": 1.32, "text": "volume up"}],
     "model_version": "speech-ctc-<sha256[:12]>"}

``text`` is lowercase words separated by single spaces (empty for silent or empty
audio); each segment is one utterance found by the voice activity detector. Options
(``plugins.speech.options``): ``weights_dir`` (default: the packaged weights) and
``decoder``: "grammar" (default; words and word successions of the command grammar, any
number of commands per utterance), "lexicon" (any sequence of vocabulary words) or
"greedy" (unconstrained best path; may produce non-words).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from streamproc.errors import InvalidInput
from streamproc.events import AudioEvent, Event
from streamproc.media import decode_wav
from streamproc.plugin import BatchPolicy, LoadContext, Plugin
from streamproc_speech.recognizer import PreparedAudio, Transcriber, Transcript


class SpeechRecognizer(Plugin):
    """English voice-command recognizer (CTC over characters, grammar-constrained decoding)."""

    name: ClassVar[str] = "speech"
    consumes: ClassVar[tuple[str, ...]] = ("audio",)
    produces: ClassVar[str] = "transcript"
    batch_policy: ClassVar[BatchPolicy] = BatchPolicy(max_batch_size=16, max_wait_ms=10.0, max_queue=128)

    def load(self, context: LoadContext) -> None:
        """Load the weights onto ``context.device``; raises ``ValueError`` for bad options."""
        self._transcriber = Transcriber(
            context.options.get("weights_dir"),
            context.device,
            str(context.options.get("decoder", "grammar")),
        )
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
            "segments": [
                {"start_s": round(s.start_s, 3), "end_s": round(s.end_s, 3), "text": text}
                for s, text in output.segments
            ],
            "model_version": self.model_version,
        }
