"""Held-out evaluation of the tagger: accuracy, per-class accuracy, calibration, baselines,
product-style renderings and open-set rejection.

``python -m streamproc_tagger.evaluate`` evaluates the shipped weights (``--weights-dir``)
on the 6,000 validation and 10,000 Fashion-MNIST test images and, next to them, a
majority-class baseline and the seed's exact CNN trained the seed's way
(``--baseline-epochs``; 0 skips it), and prints JSON. ``--write-card`` records the
tagger's own figures (version, validation, test) in ``model_card.json``.

``python -m streamproc_tagger.evaluate --open-set`` measures instead (``--write-card``
records it; ``--previous-weights DIR`` adds the same figures for a closed-set model,
e.g. the one before open-set training, scored by its max-softmax):

- accuracy on the test set rendered as product shots (``product.EVALUATION_STYLES``);
- open-set rejection: the shipped detector's ``in_distribution_score`` against the
  max-softmax baseline on the 10,000 test images (in distribution) and ``--per-source``
  images of every test-role outlier source (never used in training or selection):
  AUROC and the false-accept rate at the point where at most 2% of the test items are
  rejected, pooled and per source, with 95% bootstrap intervals (by item; pooled also
  by source); and, at the shipped ``rejection_threshold``, the fraction of test items,
  product-style renderings and outliers of each source rejected (95% Wilson intervals).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamproc_tagger.data import ImageSet, load_split, split_train_validation, to_float
from streamproc_tagger.metrics import (
    BOOTSTRAP_REPS,
    auroc,
    bootstrap_ci,
    classification_metrics,
    false_accept_rate,
    majority_baseline,
    operating_threshold,
    pooled_auroc,
    pooled_false_accept,
    predict_logits,
    wilson_ci,
)
from streamproc_tagger.model import load_tagger, shipped_weights_dir
from streamproc_tagger.openset import DEFAULT_REJECTION_THRESHOLD, ModelOutputs, load_detector, model_outputs
from streamproc_tagger.outliers import outlier_images
from streamproc_tagger.outliers import sources as outlier_sources
from streamproc_tagger.product import EVALUATION_STYLES, render_set
from streamproc_tagger.train import train_seed_baseline


def open_set_figures(
    in_scores: np.ndarray, out_scores: dict[str, np.ndarray], reps: int = BOOTSTRAP_REPS
) -> dict[str, Any]:
    """AUROC and false-accept rate at the 2% operating point, pooled (CI by item and by
    source) and per source (CI by item), with sample sizes. The bootstrap intervals of a
    false-accept rate collapse to [0, 0] when no item of a source is accepted, so each also
    gets the 95% Wilson interval of accepted / n at the measured threshold (``_wilson95``)."""
    names = list(out_scores)
    groups = [out_scores[n] for n in names]
    threshold = operating_threshold(in_scores)
    pooled = np.concatenate(groups)
    figures: dict[str, Any] = {
        "n_in_distribution": len(in_scores),
        "n_out_of_distribution": int(sum(len(g) for g in groups)),
        "n_sources": len(groups),
        "auroc": round(pooled_auroc(in_scores, groups), 4),
        "auroc_ci95_items": bootstrap_ci(pooled_auroc, in_scores, groups, reps=reps),
        "auroc_ci95_sources": bootstrap_ci(pooled_auroc, in_scores, groups, by_source=True, reps=reps),
        "false_accept_at_2pct": round(pooled_false_accept(in_scores, groups), 4),
        "false_accept_at_2pct_ci95_items": bootstrap_ci(pooled_false_accept, in_scores, groups, reps=reps),
        "false_accept_at_2pct_ci95_sources": bootstrap_ci(
            pooled_false_accept, in_scores, groups, by_source=True, reps=reps
        ),
        "false_accept_at_2pct_wilson95": wilson_ci(int((pooled >= threshold).sum()), len(pooled)),
        "in_distribution_rejected_at_operating_point": round(float(np.mean(in_scores < threshold)), 4),
        "per_source": {},
    }
    for name, group in zip(names, groups, strict=True):
        figures["per_source"][name] = {
            "n": len(group),
            "auroc": round(auroc(in_scores, group), 4),
            "auroc_ci95": bootstrap_ci(pooled_auroc, in_scores, [group], reps=reps),
            "false_accept_at_2pct": round(false_accept_rate(in_scores, group), 4),
            "false_accept_at_2pct_ci95": bootstrap_ci(pooled_false_accept, in_scores, [group], reps=reps),
            "false_accept_at_2pct_wilson95": wilson_ci(int((group >= threshold).sum()), len(group)),
        }
    return figures


def evaluate(weights_dir: Path, baseline_epochs: int = 5, seed: int = 0) -> dict[str, Any]:
    """Validation and test metrics of the weights in ``weights_dir`` (temperature-scaled, and
    the test set before scaling), the majority-class baseline and, unless
    ``baseline_epochs`` is 0, the seed CNN trained the seed's way."""
    torch.set_num_threads(1)
    train, test = load_split("train"), load_split("test")
    _, val = split_train_validation(train)
    model = load_tagger("cpu", weights_dir)
    temperature = float(model.temperature)
    test_logits = predict_logits(model, test.images)
    report: dict[str, Any] = {
        "version": model.model_version,
        "validation": classification_metrics(predict_logits(model, val.images), val.labels, temperature),
        "test": classification_metrics(test_logits, test.labels, temperature),
        "test_uncalibrated": {
            k: v for k, v in classification_metrics(test_logits, test.labels).items() if k in ("ece_15_bins", "nll")
        },
        "baselines": {"majority_class": majority_baseline(train, test)},
    }
    if baseline_epochs > 0:
        seed_net = train_seed_baseline(train, epochs=baseline_epochs, seed=seed)
        seed_metrics = classification_metrics(predict_logits(seed_net, test.images), test.labels)
        report["baselines"]["seed_cnn"] = {"epochs": baseline_epochs, **seed_metrics}
    return report


def rejected_share(scores: torch.Tensor, threshold: float) -> dict[str, Any]:
    """Fraction of ``scores`` below ``threshold``, with n and a 95% Wilson interval."""
    rejected = int((scores < threshold).sum())
    return {"n": len(scores), "rejected": round(rejected / len(scores), 4), "ci95": wilson_ci(rejected, len(scores))}


def log(message: str) -> None:
    """One progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class EvaluationImages:
    """The preprocessed images every open-set report reads (uint8 (N, 1, 28, 28)): the test
    set, its product-style renderings by style, and the test-role outliers by source."""

    test: ImageSet
    product: dict[str, torch.Tensor]
    outliers: dict[str, torch.Tensor]


def evaluation_images(per_source: int, seed: int) -> EvaluationImages:
    """Render and preprocess the test set in every evaluation style, and ``per_source``
    images of every test-role outlier source (fixed by ``seed``)."""
    test = load_split("test")
    product = {}
    for name, style in EVALUATION_STYLES.items():
        log(f"rendering the test set: {name} ...")
        product[name] = render_set(test.images, style)
    outliers = {}
    for candidate in outlier_sources("test"):
        log(f"test outliers: {per_source} images from {candidate.name} ...")
        outliers[candidate.name] = outlier_images(candidate, per_source, seed)
    return EvaluationImages(test, product, outliers)


def accuracy_of(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy, rounded to 4 decimals."""
    return round(float((logits.argmax(1) == labels).float().mean()), 4)


def max_softmax(outputs: ModelOutputs, temperature: float) -> np.ndarray:
    """The max-softmax baseline score (the top-1 calibrated probability) of each image."""
    return torch.softmax(outputs.logits / temperature, 1).amax(1).numpy()


def previous_model_report(weights_dir: Path, images: EvaluationImages, reps: int) -> dict[str, Any]:
    """What a closed-set model without a detector does on the same images: product-style
    accuracy and its max-softmax as the open-set score (a confidence cut-off)."""
    model = load_tagger("cpu", weights_dir)
    temperature = float(model.temperature)
    plain = model_outputs(model, to_float(images.test.images))
    product = {"plain": {"accuracy": accuracy_of(plain.logits, images.test.labels)}}
    for name, pixels in images.product.items():
        product[name] = {"accuracy": accuracy_of(model_outputs(model, to_float(pixels)).logits, images.test.labels)}
    out = {name: max_softmax(model_outputs(model, to_float(p)), temperature) for name, p in images.outliers.items()}
    return {
        "model_version": model.model_version,
        "product_style_test_accuracy": product,
        "max_softmax": open_set_figures(max_softmax(plain, temperature), out, reps),
    }


def open_set_report(
    weights_dir: Path,
    per_source: int = 300,
    seed: int = 0,
    reps: int = BOOTSTRAP_REPS,
    previous_dir: Path | None = None,
) -> dict[str, Any]:
    """Product-style accuracy and open-set figures of the weights in ``weights_dir`` (see the
    module doc); with ``previous_dir``, the same for that closed-set model's max-softmax."""
    torch.set_num_threads(1)
    model, detector = load_tagger("cpu", weights_dir), load_detector(weights_dir)
    temperature = float(model.temperature)
    images = evaluation_images(per_source, seed)
    labels = images.test.labels
    plain = model_outputs(model, to_float(images.test.images))
    test_scores = detector.in_distribution_score(plain)
    product: dict[str, Any] = {"plain": {"accuracy": accuracy_of(plain.logits, labels)}}
    for name, pixels in images.product.items():
        outputs = model_outputs(model, to_float(pixels))
        product[name] = {
            "accuracy": accuracy_of(outputs.logits, labels),
            "rejected_at_shipped_threshold": rejected_share(
                detector.in_distribution_score(outputs), DEFAULT_REJECTION_THRESHOLD
            ),
        }
    out_ours: dict[str, np.ndarray] = {}
    out_baseline: dict[str, np.ndarray] = {}
    at_threshold: dict[str, Any] = {
        "threshold": DEFAULT_REJECTION_THRESHOLD,
        "test items": rejected_share(test_scores, DEFAULT_REJECTION_THRESHOLD),
    }
    for name, pixels in images.outliers.items():
        outputs = model_outputs(model, to_float(pixels))
        scores = detector.in_distribution_score(outputs)
        out_ours[name] = scores.numpy()
        out_baseline[name] = max_softmax(outputs, temperature)
        at_threshold[name] = rejected_share(scores, DEFAULT_REJECTION_THRESHOLD)
    log("bootstrapping ...")
    report: dict[str, Any] = {
        "model_version": model.model_version,
        "detector": detector.method,
        "product_style_test_accuracy": product,
        "open_set": {
            "test_sources": {s.name: s.kind for s in outlier_sources("test")},
            "images_per_source": per_source,
            "seed": seed,
            "bootstrap_reps": reps,
            "shipped_detector": open_set_figures(test_scores.numpy(), out_ours, reps),
            "baseline_max_softmax": open_set_figures(max_softmax(plain, temperature), out_baseline, reps),
            "at_shipped_threshold": at_threshold,
        },
    }
    if previous_dir is not None:
        log(f"previous model from {previous_dir} ...")
        report["previous_model"] = previous_model_report(previous_dir, images, reps)
    return report


CARD_KEYS = {
    "open_set": ("product_style_test_accuracy", "open_set", "previous_model"),
    "plain": ("version", "validation", "test", "test_uncalibrated"),
}
"""What ``--write-card`` records in ``model_card.json`` from each kind of report."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-epochs", type=int, default=5, help="0 skips the seed CNN")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--open-set", action="store_true", help="product-style and open-set figures instead")
    parser.add_argument("--per-source", type=int, default=300, help="--open-set: images per test source")
    parser.add_argument("--weights-dir", type=Path, default=None, help="default: the shipped weights")
    parser.add_argument(
        "--previous-weights", type=Path, default=None, help="--open-set: also measure this closed-set model"
    )
    parser.add_argument("--write-card", action="store_true", help="record the figures in the model card")
    args = parser.parse_args(argv)
    start = time.monotonic()
    folder = args.weights_dir or shipped_weights_dir()
    typed = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m streamproc_tagger.evaluate", *typed])
    if args.open_set:
        report = open_set_report(folder, args.per_source, args.seed, previous_dir=args.previous_weights)
    else:
        report = evaluate(folder, args.baseline_epochs, args.seed)
    report["command"] = command
    if args.write_card:
        card_path = folder / "model_card.json"
        card = json.loads(card_path.read_text())
        kind = "open_set" if args.open_set else "plain"
        card.update({k: report[k] for k in CARD_KEYS[kind] if k in report})
        card.setdefault("measured_by", {})[kind] = command
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    log(f"evaluated in {time.monotonic() - start:.0f} s")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
