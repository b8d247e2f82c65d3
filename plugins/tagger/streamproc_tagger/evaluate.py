"""Held-out evaluation of the tagger: accuracy, per-class accuracy, calibration, baselines,
product-style renderings and open-set rejection.

``python -m streamproc_tagger.evaluate`` evaluates the shipped weights on the 10,000
Fashion-MNIST test images and, next to them, a majority-class baseline and the seed's
exact CNN trained the seed's way (``--baseline-epochs``; 0 skips it), and prints JSON.

``python -m streamproc_tagger.evaluate --open-set`` measures instead (``--write-card``
also records it in ``model_card.json``):

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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamproc_tagger.data import load_split, to_float
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
from streamproc_tagger.openset import DEFAULT_REJECTION_THRESHOLD, load_detector, model_outputs
from streamproc_tagger.outliers import outlier_images
from streamproc_tagger.outliers import sources as outlier_sources
from streamproc_tagger.product import EVALUATION_STYLES, render_set
from streamproc_tagger.train import train_seed_baseline


def open_set_figures(
    in_scores: np.ndarray, out_scores: dict[str, np.ndarray], reps: int = BOOTSTRAP_REPS
) -> dict[str, Any]:
    """AUROC and false-accept rate at the 2% operating point, pooled (CI by item and by
    source) and per source (CI by item), with sample sizes."""
    names = list(out_scores)
    groups = [out_scores[n] for n in names]
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
        "in_distribution_rejected_at_operating_point": round(
            float(np.mean(in_scores < operating_threshold(in_scores))), 4
        ),
        "per_source": {},
    }
    for name, group in zip(names, groups, strict=True):
        figures["per_source"][name] = {
            "n": len(group),
            "auroc": round(auroc(in_scores, group), 4),
            "auroc_ci95": bootstrap_ci(pooled_auroc, in_scores, [group], reps=reps),
            "false_accept_at_2pct": round(false_accept_rate(in_scores, group), 4),
            "false_accept_at_2pct_ci95": bootstrap_ci(pooled_false_accept, in_scores, [group], reps=reps),
        }
    return figures


def evaluate(baseline_epochs: int = 5, seed: int = 0) -> dict[str, Any]:
    """Evaluate the shipped tagger and the baselines on the test set; returns metrics."""
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


def rejected_share(scores: torch.Tensor, threshold: float) -> dict[str, Any]:
    """Fraction of ``scores`` below ``threshold``, with n and a 95% Wilson interval."""
    rejected = int((scores < threshold).sum())
    return {"n": len(scores), "rejected": round(rejected / len(scores), 4), "ci95": wilson_ci(rejected, len(scores))}


def open_set_report(
    weights_dir: Path, per_source: int = 300, seed: int = 0, reps: int = BOOTSTRAP_REPS
) -> dict[str, Any]:
    """Product-style accuracy and open-set figures of the weights in ``weights_dir`` (see module doc)."""
    torch.set_num_threads(1)
    model, detector = load_tagger("cpu", weights_dir), load_detector(weights_dir)
    temperature = float(model.temperature)
    test = load_split("test")
    plain = model_outputs(model, to_float(test.images))
    ours = {"test items": detector.in_distribution_score(plain)}
    baseline = {"test items": torch.softmax(plain.logits / temperature, 1).amax(1)}
    product: dict[str, Any] = {
        "plain": {"accuracy": round(float((plain.logits.argmax(1) == test.labels).float().mean()), 4)}
    }
    for name, style in EVALUATION_STYLES.items():
        print(f"rendering the test set: {name} ...", file=sys.stderr, flush=True)
        outputs = model_outputs(model, to_float(render_set(test.images, style)))
        accuracy = float((outputs.logits.argmax(1) == test.labels).float().mean())
        product[name] = {
            "accuracy": round(accuracy, 4),
            "rejected_at_shipped_threshold": rejected_share(
                detector.in_distribution_score(outputs), DEFAULT_REJECTION_THRESHOLD
            ),
        }
    out_ours: dict[str, np.ndarray] = {}
    out_baseline: dict[str, np.ndarray] = {}
    at_threshold: dict[str, Any] = {
        "threshold": DEFAULT_REJECTION_THRESHOLD,
        "test items": rejected_share(ours["test items"], DEFAULT_REJECTION_THRESHOLD),
    }
    for candidate in outlier_sources("test"):
        print(f"test outliers: {per_source} images from {candidate.name} ...", file=sys.stderr, flush=True)
        outputs = model_outputs(model, to_float(outlier_images(candidate, per_source, seed)))
        scores = detector.in_distribution_score(outputs)
        out_ours[candidate.name] = scores.numpy()
        out_baseline[candidate.name] = torch.softmax(outputs.logits / temperature, 1).amax(1).numpy()
        at_threshold[candidate.name] = rejected_share(scores, DEFAULT_REJECTION_THRESHOLD)
    print("bootstrapping ...", file=sys.stderr, flush=True)
    return {
        "model_version": model.model_version,
        "detector": detector.method,
        "product_style_test_accuracy": product,
        "open_set": {
            "test_sources": {s.name: s.kind for s in outlier_sources("test")},
            "images_per_source": per_source,
            "seed": seed,
            "bootstrap_reps": reps,
            "shipped_detector": open_set_figures(ours["test items"].numpy(), out_ours, reps),
            "baseline_max_softmax": open_set_figures(baseline["test items"].numpy(), out_baseline, reps),
            "at_shipped_threshold": at_threshold,
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-epochs", type=int, default=5, help="0 skips the seed CNN")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--open-set", action="store_true", help="product-style and open-set figures instead")
    parser.add_argument("--per-source", type=int, default=300, help="--open-set: images per test source")
    parser.add_argument("--weights-dir", type=Path, default=None, help="--open-set: default the shipped weights")
    parser.add_argument("--write-card", action="store_true", help="--open-set: record in the model card")
    args = parser.parse_args(argv)
    start = time.monotonic()
    if args.open_set:
        folder = args.weights_dir or shipped_weights_dir()
        report = open_set_report(folder, args.per_source, args.seed)
        typed = sys.argv[1:] if argv is None else argv
        report["command"] = " ".join(["python -m streamproc_tagger.evaluate", *typed])
        if args.write_card:
            card_path = folder / "model_card.json"
            card = json.loads(card_path.read_text())
            card.update({k: report[k] for k in ("product_style_test_accuracy", "open_set")})
            card["open_set"]["command"] = report["command"]
            card_path.write_text(json.dumps(card, indent=2) + "\n")
    else:
        report = evaluate(args.baseline_epochs, args.seed)
    print(f"evaluated in {time.monotonic() - start:.0f} s", file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
