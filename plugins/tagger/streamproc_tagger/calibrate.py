"""Fit and choose the open-set detector of a trained tagger, on training and validation data only.

``python -m streamproc_tagger.calibrate [--weights-dir DIR]``:

1. fits class-conditional Gaussians to the penultimate features of the 54,000 fit images;
2. scores the 6,000 validation images and ``--per-source`` images of every
   validation-role outlier source (``outliers.sources("validation")``) with each
   candidate score of ``openset.METHODS``;
3. keeps the method with the lowest pooled false-accept rate at the point where 2% of
   validation items are rejected (ties: higher AUROC);
4. writes ``ood.safetensors`` and ``ood.json`` (with the validation table) next to the
   weights. The validation items' scores become the reference of the p-values.

No test-role source and no test image is read here. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamproc_tagger.data import load_split, split_train_validation, to_float
from streamproc_tagger.metrics import auroc, false_accept_rate
from streamproc_tagger.model import load_tagger, shipped_weights_dir
from streamproc_tagger.openset import (
    METHODS,
    ModelOutputs,
    OpenSetDetector,
    candidate_scores,
    fit_gaussians,
    model_outputs,
)
from streamproc_tagger.outliers import outlier_images
from streamproc_tagger.outliers import sources as outlier_sources

DEFAULT_PER_SOURCE = 300


def log(message: str) -> None:
    """One progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def method_figures(in_scores: np.ndarray, out_scores: dict[str, np.ndarray]) -> dict[str, Any]:
    """Validation AUROC and false-accept at 2% rejection, pooled and per source (no CIs: selection only)."""
    pooled = np.concatenate(list(out_scores.values()))
    return {
        "auroc": round(auroc(in_scores, pooled), 4),
        "false_accept_at_2pct": round(false_accept_rate(in_scores, pooled), 4),
        "per_source_false_accept_at_2pct": {
            name: round(false_accept_rate(in_scores, group), 4) for name, group in out_scores.items()
        },
    }


def calibrate(weights_dir: Path, per_source: int = DEFAULT_PER_SOURCE, seed: int = 0) -> dict[str, Any]:
    """Fit, compare and save the detector of the weights in ``weights_dir``; returns the report."""
    model = load_tagger("cpu", weights_dir)
    temperature = float(model.temperature)
    fit, val = split_train_validation(load_split("train"))
    log(f"features of {len(fit)} fit images ...")
    fit_outputs = model_outputs(model, to_float(fit.images))
    gaussians = fit_gaussians(fit_outputs.features, fit.labels)
    val_outputs = model_outputs(model, to_float(val.images))
    outlier_outputs: dict[str, ModelOutputs] = {}
    for candidate in outlier_sources("validation"):
        log(f"validation outliers: {per_source} images from {candidate.name} ...")
        outlier_outputs[candidate.name] = model_outputs(model, to_float(outlier_images(candidate, per_source, seed)))
    val_scores = candidate_scores(val_outputs, temperature, gaussians)
    standardise = {k: (float(v.mean()), float(v.std())) for k, v in val_scores.items()}
    version = model.model_version
    detectors = {m: OpenSetDetector(m, gaussians, temperature, torch.zeros(1), standardise, version) for m in METHODS}
    table = {
        method: method_figures(
            detector.raw_score(val_outputs).numpy(),
            {name: detector.raw_score(outputs).numpy() for name, outputs in outlier_outputs.items()},
        )
        for method, detector in detectors.items()
    }
    chosen = min(METHODS, key=lambda m: (table[m]["false_accept_at_2pct"], -table[m]["auroc"]))
    for method in METHODS:
        figures = table[method]
        log(f"{method:20s} AUROC {figures['auroc']:.4f}  false accept at 2% {figures['false_accept_at_2pct']:.4f}")
    log(f"chosen: {chosen}")
    reference = detectors[chosen].raw_score(val_outputs)
    detector = OpenSetDetector(chosen, gaussians, temperature, reference, standardise, version)
    report = {
        "chosen_method": chosen,
        "selection_rule": "lowest pooled false-accept rate at 2% validation rejection, then highest AUROC",
        "gaussians_fitted_on": f"{len(fit)} fit images (plain)",
        "reference_items": f"{len(val)} validation images (plain)",
        "validation_sources": {s.name: s.kind for s in outlier_sources("validation")},
        "validation_images_per_source": per_source,
        "validation": table,
        "seed": seed,
    }
    detector.save(weights_dir, report)
    log(f"wrote the detector to {weights_dir}")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", type=Path, default=None, help="default: the package weights")
    parser.add_argument("--per-source", type=int, default=DEFAULT_PER_SOURCE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.monotonic()
    calibrate(args.weights_dir or shipped_weights_dir(), args.per_source, args.seed)
    log(f"calibrated in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
