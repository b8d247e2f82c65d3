"""Held-out evaluation of the tagger: accuracy, per-class accuracy, calibration, baselines.

``python -m streamproc_tagger.evaluate`` evaluates the shipped weights on the 10,000
Fashion-MNIST test images and, next to them, a majority-class baseline and the seed's
exact CNN trained the seed's way (``--baseline-epochs``; 0 skips it), and prints JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from typing import Any

import torch
from torch import nn

from streamproc_tagger.data import CLASS_LABELS, ImageSet, load_split, to_float
from streamproc_tagger.model import load_tagger

ECE_BINS = 15


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Logits (N, C) of ``model`` (put in eval mode) over uint8 images (N, 1, 28, 28)."""
    model.eval()
    device = next(model.parameters()).device
    chunks = [
        model(to_float(images[i : i + batch_size]).to(device)).float().cpu() for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE of top-1 confidence over ``bins`` equal-width bins in (0, 1]."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0.0, 1.0, bins + 1)
    ece = torch.zeros(())
    for lo, hi in itertools.pairwise(edges.tolist()):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            gap = (confidence[in_bin].mean() - correct[in_bin].mean()).abs()
            ece += gap * in_bin.float().mean()
    return float(ece)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(logits / T)`` (LBFGS)."""
    log_t = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> dict[str, Any]:
    """Accuracy, per-class accuracy, ECE (15 bins) and NLL of logits against labels."""
    probs = torch.softmax(logits / temperature, dim=1)
    predicted = probs.argmax(dim=1)
    per_class = {
        name: round(float((predicted[labels == c] == c).float().mean()), 4) for c, name in enumerate(CLASS_LABELS)
    }
    return {
        "accuracy": round(float((predicted == labels).float().mean()), 4),
        "per_class_accuracy": per_class,
        "ece_15_bins": round(expected_calibration_error(probs, labels), 4),
        "nll": round(float(nn.functional.cross_entropy(logits / temperature, labels)), 4),
    }


def majority_baseline(train: ImageSet, test: ImageSet) -> dict[str, float]:
    """Accuracy of always predicting the most frequent training class."""
    majority = int(torch.bincount(train.labels).argmax())
    return {"accuracy": round(float((test.labels == majority).float().mean()), 4)}


def evaluate(baseline_epochs: int = 5, seed: int = 0) -> dict[str, Any]:
    """Evaluate the shipped tagger and the baselines on the test set; returns metrics."""
    from streamproc_tagger.train import train_seed_baseline  # here: train imports this module

    torch.set_num_threads(1)
    train, test = load_split("train"), load_split("test")
    model = load_tagger("cpu")
    logits = predict_logits(model, test.images)
    report: dict[str, Any] = {
        "model_version": model.model_version,
        "test_images": len(test),
        "tagger": classification_metrics(logits, test.labels, float(model.temperature)),
        "baselines": {"majority_class": majority_baseline(train, test)},
    }
    if baseline_epochs > 0:
        seed_net = train_seed_baseline(train, epochs=baseline_epochs, seed=seed)
        seed_metrics = classification_metrics(predict_logits(seed_net, test.images), test.labels)
        report["baselines"]["seed_cnn"] = {"epochs": baseline_epochs, **seed_metrics}
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-epochs", type=int, default=5, help="0 skips the seed CNN")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.monotonic()
    report = evaluate(args.baseline_epochs, args.seed)
    print(f"evaluated in {time.monotonic() - start:.0f} s", file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
