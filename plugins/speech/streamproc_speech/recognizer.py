"""Audio in, words out: voice-activity segmentation, features, batched CTC model, decoding.

``Transcriber`` is what both the plugin and the evaluation run, so that the figures in
the model card are those of the served code path. ``prepare`` is per item and CPU-only;
``transcribe`` runs one forward pass over every utterance of every item of a batch.
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

from streamproc_speech.decoding import LexiconDecoder, greedy_decode
from streamproc_speech.features import SAMPLE_RATE, Segment, log_mel, speech_segments
from streamproc_speech.grammar import vocabulary, word_successors
from streamproc_speech.model import CtcRecognizer, ModelConfig, pad_features

DECODERS = ("grammar", "lexicon", "greedy")


@dataclass(frozen=True)
class PreparedAudio:
    """One clip cut into utterances: their spans and log-mel features (CPU)."""

    duration_s: float
    segments: tuple[Segment, ...]
    features: tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Transcript:
    """The recognised words of one clip and of each of its utterances (silent ones dropped)."""

    duration_s: float
    text: str
    segments: tuple[tuple[Segment, str], ...]


def weights_path(weights_dir: str | Path | None) -> Path:
    """The folder of the weights: ``weights_dir`` if given, else the packaged weights."""
    if weights_dir is not None:
        return Path(weights_dir)
    return Path(str(resources.files("streamproc_speech") / "weights"))


class Transcriber:
    """The loaded model and decoder. Thread-safe for ``prepare``; ``transcribe`` is not."""

    def __init__(self, weights_dir: str | Path | None, device: torch.device, decoder: str) -> None:
        """Load ``model.safetensors`` and ``config.json`` from ``weights_dir`` onto ``device``.

        Raises ``ValueError`` for an unknown ``decoder`` and ``FileNotFoundError`` for
        missing weights.
        """
        if decoder not in DECODERS:
            raise ValueError(f"decoder: {decoder!r} is not one of {', '.join(DECODERS)}")
        folder = weights_path(weights_dir)
        doc = json.loads((folder / "config.json").read_text())
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
        texts: list[str] = []
        if features:
            padded, lengths = pad_features(features)
            log_probs, out_lengths = self.model(padded.to(self.device), lengths)
            log_probs = log_probs.float().cpu().numpy()
            for lp, n in zip(log_probs, out_lengths.tolist(), strict=True):
                frames = lp[:n]
                texts.append(greedy_decode(frames) if self.decoder == "greedy" else self.lexicon.decode(frames))
        out, pos = [], 0
        for item in batch:
            spans = [(s, t) for s, t in zip(item.segments, texts[pos : pos + len(item.segments)], strict=True) if t]
            pos += len(item.segments)
            out.append(Transcript(item.duration_s, " ".join(t for _, t in spans), tuple(spans)))
        return out
