"""The weights folder: what a trained recommender is made of on disk, and how it is read.

Files: ``model.safetensors`` (tensors only), ``config.json`` (``ModelConfig``),
``vocab.json`` (``Vocabulary``) and ``model_card.json`` (provenance and metrics). The
shipped folder is the package's ``weights/``; any other folder with the same files can
be used instead (``weights_dir`` option, ``--weights-dir`` flags).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from streamproc_recommender.model import ModelConfig, SequenceRecommender
from streamproc_recommender.vocab import Vocabulary

MODEL_NAME = "recommender"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
CARD_FILE = "model_card.json"


def shipped_weights_dir() -> Path:
    """The ``weights/`` folder installed with the package."""
    return Path(str(resources.files("streamproc_recommender") / "weights"))


@dataclass(frozen=True)
class Artifacts:
    """A loaded model (in eval mode, on the requested device), its vocabulary and version."""

    model: SequenceRecommender
    vocab: Vocabulary
    version: str


def load_artifacts(folder: Path | None = None, device: torch.device | None = None) -> Artifacts:
    """Read a weights folder (default: the shipped one). Raises ``FileNotFoundError``."""
    folder = folder or shipped_weights_dir()
    weights = folder / WEIGHTS_FILE
    config = ModelConfig(**json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")))
    vocab = Vocabulary.load(folder / VOCAB_FILE)
    if config.vocab_size != len(vocab):
        raise ValueError(f"{folder}: config vocab_size {config.vocab_size} != {len(vocab)} items")
    model = SequenceRecommender(config)
    model.load_state_dict(load_file(str(weights)))
    model.to(device or torch.device("cpu")).eval()
    return Artifacts(model, vocab, model_version(weights))


def model_version(weights: Path) -> str:
    """``recommender-<first 12 hex digits of the sha256 of the safetensors file>``."""
    return f"{MODEL_NAME}-{hashlib.sha256(weights.read_bytes()).hexdigest()[:12]}"


def save_artifacts(folder: Path, model: SequenceRecommender, vocab: Vocabulary) -> str:
    """Write weights, config and vocabulary into ``folder``; return the model version."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"name": MODEL_NAME})
    (folder / CONFIG_FILE).write_text(json.dumps(model.config.to_json(), indent=2), encoding="utf-8")
    vocab.save(folder / VOCAB_FILE)
    return model_version(folder / WEIGHTS_FILE)
