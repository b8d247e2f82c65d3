"""The independent judge: a Fashion-MNIST classifier that shares nothing with the tagger.

The generator's class agreement and diversity must not be measured only by the tagger,
whose features the generator's card already uses (and whose convolutional architecture
resembles the discriminator's). The judge is a multilayer perceptron on raw pixels:
784 -> 512 -> 256 -> 10, ReLU, dropout, no convolution, trained here on the 60,000
Fashion-MNIST training images (no augmentation), its accuracy measured
on the 10,000 test images. Its 256 penultimate activations (``JudgeNet.features``) are
the embedding in which generated images' spread is compared with real images'.

``python -m streamproc_artwork.judge`` trains it and writes ``judge/judge.safetensors``
and ``judge/judge_card.json`` (test accuracy, command, time) inside the package.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from streamproc_tagger.data import load_split
from torch import nn

JUDGE_FILE = "judge.safetensors"
CARD_FILE = "judge_card.json"
FEATURE_DIM = 256


class JudgeMissing(RuntimeError):
    """The judge's weights are not there: train it with ``python -m streamproc_artwork.judge``."""


class JudgeNet(nn.Module):
    """uint8-scaled images (N, 1, 28, 28) in [0, 1] -> class logits (N, 10)."""

    def __init__(self, dropout: float = 0.2) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, 512),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(512, FEATURE_DIM),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(FEATURE_DIM, 10))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (N, FEATURE_DIM)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def judge_dir() -> Path:
    """The folder of the judge's weights and card, inside the package."""
    return Path(str(resources.files("streamproc_artwork") / "judge"))


def load_judge(folder: Path | None = None) -> JudgeNet:
    """The trained judge on the CPU, eval mode, with ``model_version`` (``judge-<first 12
    hex of sha256 of its weights>``); ``JudgeMissing`` when it was never trained."""
    path = (folder or judge_dir()) / JUDGE_FILE
    if not path.exists():
        raise JudgeMissing(f"{path} missing: train the judge with `python -m streamproc_artwork.judge`")
    model = JudgeNet()
    model.load_state_dict(load_file(str(path)))
    model.model_version = "judge-" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return model.eval()


@torch.inference_mode()
def judge_outputs(judge: JudgeNet, images: torch.Tensor, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, FEATURE_DIM) and predicted classes (N,) of uint8 images (N, 1, 28, 28)."""
    feats, preds = [], []
    for i in range(0, len(images), batch_size):
        f = judge.features(images[i : i + batch_size].float().div(255.0))
        feats.append(f.numpy())
        preds.append(judge.head(f).argmax(dim=1).numpy())
    return np.concatenate(feats), np.concatenate(preds)


def train_judge(epochs: int, seed: int, batch_size: int = 128, lr: float = 1e-3) -> JudgeNet:
    """Adam with a cosine learning rate over all 60,000 training images; eval mode at the end."""
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    train = load_split("train")
    images = train.images.float().div(255.0)
    model = JudgeNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * (len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    start = time.monotonic()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(images), generator=rng)
        for b in range(len(images) // batch_size):
            idx = order[b * batch_size : (b + 1) * batch_size]
            loss = nn.functional.cross_entropy(model(images[idx]), train.labels[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
        print(f"epoch {epoch}/{epochs} loss {loss.item():.3f} {time.monotonic() - start:.0f}s", file=sys.stderr)
    return model.eval()


def judge_test_accuracy(judge: JudgeNet) -> tuple[float, int]:
    """Accuracy on the 10,000 Fashion-MNIST test images, and their number."""
    test = load_split("test")
    _, preds = judge_outputs(judge, test.images)
    return float((preds == test.labels.numpy()).mean()), len(test)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the artwork generator's independent judge (an MLP).")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default: the package's judge/ folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = args.out or judge_dir()
    out.mkdir(parents=True, exist_ok=True)
    start, cpu_start = time.monotonic(), time.process_time()
    judge = train_judge(args.epochs, args.seed)
    wall, cpu = time.monotonic() - start, time.process_time() - cpu_start
    save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, str(out / JUDGE_FILE))
    accuracy, n = judge_test_accuracy(load_judge(out))
    card = {
        "model": "artwork judge: MLP 784 -> 512 -> 256 -> 10 (ReLU, dropout 0.2), no convolution",
        "purpose": "independent class agreement and embedding for the artwork generator's evaluation only",
        "training": {
            "command": " ".join(["python -m streamproc_artwork.judge", *(sys.argv[1:] if argv is None else argv)]),
            "data": "all 60,000 Fashion-MNIST training images, no augmentation",
            "epochs": args.epochs,
            "seed": args.seed,
            "threads": 1,
            "wall_time_s": round(wall, 1),
            "cpu_time_s": round(cpu, 1),
        },
        "test_accuracy": round(accuracy, 4),
        "test_samples": n,
        "date": datetime.date.today().isoformat(),
    }
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()
