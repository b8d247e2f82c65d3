"""Audio in, words out: voice-activity segmentation, features, batched CTC model, decoding,
confidence and rejection.

``Transcriber`` is what both the plugin and the evaluation run, so that the figures in
the model card are those of the served code path. ``prepare`` is per item and CPU-only;
``transcribe`` runs one forward pass over every utterance of every item of a batch, then
decodes, scores and judges each utterance (``streamproc_speech.confidence``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from streamproc_speech.confidence import REASONS, judge, score_hypothesis
from streamproc_speech.decoding import LexiconDecoder, greedy_decode
from streamproc_speech.features import SAMPLE_RATE, Segment, log_mel, speech_segments
from streamproc_speech.grammar import vocabulary, word_successors
from streamproc_speech.model import CtcRecognizer, ModelConfig, pad_features

DECODERS = ("grammar", "lexicon", "greedy")
# The shipped threshold is stored with the weights (config.json "min_confidence"), chosen on
# validation voices of the training engines (never on the held-out festival set) by
# ``python -m streamproc_speech.heldout calibrate --write-threshold``.
DEFAULT_MIN_CONFIDENCE = 0.5  # for weights whose config.json has no calibrated "min_confidence"


@dataclass(frozen=True)
class PreparedAudio:
    """One clip cut into utterances: their spans and log-mel features (CPU)."""

    duration_s: float
    segments: tuple[Segment, ...]
    features: tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Utterance:
    """One segment's verdict: the decoded hypothesis, accepted or rejected.

    ``hypothesis`` is what the decoder found (``""`` when it found nothing), ``heard`` the
    unconstrained best path; ``confidence`` and ``words`` score the hypothesis (0..1);
    ``rejection`` is ``None`` (accepted) or one of ``confidence.REASONS``.
    """

    segment: Segment
    hypothesis: str
    heard: str
    confidence: float
    words: tuple[tuple[str, float], ...]
    rejection: str | None

    @property
    def text(self) -> str:
        """The hypothesis when accepted, else ``""`` (rejected words are never emitted)."""
        return self.hypothesis if self.rejection is None else ""


@dataclass(frozen=True)
class Transcript:
    """The verdicts of every utterance the voice activity detector found in one clip."""

    duration_s: float
    utterances: tuple[Utterance, ...]

    @property
    def accepted(self) -> tuple[Utterance, ...]:
        return tuple(u for u in self.utterances if u.rejection is None)

    @property
    def text(self) -> str:
        """The accepted utterances' words, in time order (``""`` when none is accepted)."""
        return " ".join(u.text for u in self.accepted)

    @property
    def rejection(self) -> str | None:
        """``None`` when some utterance is accepted; else why the clip is rejected:
        ``non_speech`` without any utterance, else the weightiest reason among them
        (out_of_grammar, then low_confidence, then non_speech)."""
        if self.accepted:
            return None
        reasons = {u.rejection for u in self.utterances}
        return next((r for r in REASONS[1:] + REASONS[:1] if r in reasons), "non_speech")

    @property
    def confidence(self) -> float:
        """The lowest accepted utterance's confidence, else the highest rejected one's (0.0 without any)."""
        if self.accepted:
            return min(u.confidence for u in self.accepted)
        return max((u.confidence for u in self.utterances), default=0.0)


def weights_path(weights_dir: str | Path | None) -> Path:
    """The folder of the weights: ``weights_dir`` if given, else the packaged weights."""
    if weights_dir is not None:
        return Path(weights_dir)
    return Path(str(resources.files("streamproc_speech") / "weights"))


class Transcriber:
    """The loaded model and decoder. Thread-safe for ``prepare``; ``transcribe`` is not."""

    def __init__(
        self,
        weights_dir: str | Path | None,
        device: torch.device,
        decoder: str,
        min_confidence: float | None = None,
    ) -> None:
        """Load ``model.safetensors`` and ``config.json`` from ``weights_dir`` onto ``device``.

        Utterances whose confidence is below ``min_confidence`` (0..1; ``None``: the
        threshold calibrated for these weights, in ``config.json``) are rejected.
        Raises ``ValueError`` for an unknown ``decoder`` or a threshold outside 0..1 and
        ``FileNotFoundError`` for missing weights.
        """
        if decoder not in DECODERS:
            raise ValueError(f"decoder: {decoder!r} is not one of {', '.join(DECODERS)}")
        folder = weights_path(weights_dir)
        doc = json.loads((folder / "config.json").read_text())
        if min_confidence is None:
            min_confidence = float(doc.get("min_confidence", DEFAULT_MIN_CONFIDENCE))
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence: {min_confidence!r} is not within 0..1")
        self.min_confidence = min_confidence
        weights = folder / "model.safetensors"
        self.version = "speech-ctc-" + hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
        self.model = CtcRecognizer(ModelConfig.from_json(doc["model"]))
        self.model.load_state_dict(load_file(str(weights)))
        self.model.to(device).eval()
        self.device = device
        self.decoder = decoder
        successors = word_successors() if decoder == "grammar" else None
        self.lexicon = LexiconDecoder(vocabulary(), beam=int(doc["beam"]), successors=successors)

    @staticmethod
    def prepare(samples: np.ndarray) -> PreparedAudio:
        """Segment 16 kHz mono ``samples`` into utterances and compute their features."""
        segments = tuple(speech_segments(samples))
        features = tuple(log_mel(samples[s.start : s.end]) for s in segments)
        return PreparedAudio(len(samples) / SAMPLE_RATE, segments, features)

    @torch.no_grad()
    def transcribe(self, batch: list[PreparedAudio]) -> list[Transcript]:
        """Transcribe every item of ``batch`` with one forward pass over all utterances."""
        features = [f for item in batch for f in item.features]
        posteriors: list[np.ndarray] = []
        if features:
            padded, lengths = pad_features(features)
            log_probs, out_lengths = self.model(padded.to(self.device), lengths)
            log_probs = log_probs.float().cpu().numpy()
            posteriors = [lp[:n] for lp, n in zip(log_probs, out_lengths.tolist(), strict=True)]
        out, pos = [], 0
        for item in batch:
            frames = posteriors[pos : pos + len(item.segments)]
            pos += len(item.segments)
            utterances = tuple(self._utterance(s, f) for s, f in zip(item.segments, frames, strict=True))
            out.append(Transcript(item.duration_s, utterances))
        return out

    def _utterance(self, segment: Segment, frames: np.ndarray) -> Utterance:
        heard = greedy_decode(frames)
        hypothesis = heard if self.decoder == "greedy" else self.lexicon.decode(frames)
        scored = score_hypothesis(frames, hypothesis)
        rejection = judge(hypothesis, heard, scored.confidence, self.min_confidence)
        return Utterance(segment, hypothesis, heard, scored.confidence, scored.words, rejection)
