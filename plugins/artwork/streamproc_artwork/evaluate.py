"""Honest quality of the generator, measured with the tagger CNN.

Fréchet distance (FD) between Gaussian fits of the tagger's penultimate features
(``TaggerNet.features``, 128 values) of two image sets, as FID does with Inception:

- ``generated``: generator samples, balanced over the 10 classes, vs the test set;
- ``floor``: real training images vs the test set (real-vs-real; what a perfect
  generator would get at the same sample size);
- ``ceiling_uniform`` / ``ceiling_gaussian``: noise images vs the test set.

plus class agreement: the share of generated images the tagger assigns to the
requested class (for reference, ``tagger_test_accuracy`` is its accuracy on real test
images). All images are quantised to 8 bits first, as the plugin's PNGs are.
``python -m streamproc_artwork.evaluate`` prints the metrics as JSON.
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
from streamproc_tagger.data import CLASS_LABELS, load_split
from streamproc_tagger.model import TaggerNet, load_tagger

from streamproc_artwork.model import (
    LATENT_DIM,
    NUM_CLASSES,
    Generator,
    load_generator,
    shipped_weights_dir,
    to_uint8,
)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between Gaussian fits of feature sets ``a`` (N, D) and ``b`` (M, D).

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``; the trace of the square root
    is computed from the eigenvalues of ``S_a^(1/2) S_b S_a^(1/2)`` (symmetric PSD).
    """
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = a64.mean(axis=0), b64.mean(axis=0)
    cov_a, cov_b = np.cov(a64, rowvar=False), np.cov(b64, rowvar=False)
    eig_a, vec_a = np.linalg.eigh(cov_a)
    sqrt_a = (vec_a * np.sqrt(np.clip(eig_a, 0.0, None))) @ vec_a.T
    cross = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
    trace_sqrt = np.sqrt(np.clip(cross, 0.0, None)).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)


@torch.inference_mode()
def tagger_outputs(tagger: TaggerNet, images: torch.Tensor, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, 128) and predicted classes (N,) of uint8 images (N, 1, 28, 28)."""
    feats, preds = [], []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].float().div(255.0)
        f = tagger.features(x)
        feats.append(f.numpy())
        preds.append(tagger.head(f).argmax(dim=1).numpy())
    return np.concatenate(feats), np.concatenate(preds)


@torch.inference_mode()
def generate_balanced(
    generator: Generator, per_class: int, seed: int, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` uint8 samples of each class (class-major order) and their labels."""
    rng = torch.Generator().manual_seed(seed)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    z = torch.randn(len(labels), LATENT_DIM, generator=rng)
    images = [
        to_uint8(generator(z[i : i + batch_size], labels[i : i + batch_size]))
        for i in range(0, len(labels), batch_size)
    ]
    return torch.cat(images), labels


def noise_images(kind: str, n: int, seed: int) -> torch.Tensor:
    """uint8 noise images: ``uniform`` in [0, 255] or ``gaussian`` (mean/std of the data)."""
    rng = torch.Generator().manual_seed(seed)
    if kind == "uniform":
        return torch.randint(0, 256, (n, 1, 28, 28), generator=rng, dtype=torch.uint8)
    noise = torch.randn(n, 1, 28, 28, generator=rng) * 90.0 + 73.0
    return noise.round().clamp(0, 255).to(torch.uint8)


def quality_report(generator: Generator, tagger: TaggerNet, n_generated: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """FD (generated, floor, noise ceilings) vs the test set, and class agreement."""
    test, train = load_split("test"), load_split("train")
    test_feats, test_preds = tagger_outputs(tagger, test.images)
    per_class = n_generated // NUM_CLASSES
    images, labels = generate_balanced(generator, per_class, seed)
    gen_feats, gen_preds = tagger_outputs(tagger, images)
    agree = gen_preds == labels.numpy()
    real_idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    real_feats, _ = tagger_outputs(tagger, train.images[real_idx[: len(labels)]])
    n = len(labels)
    fd = {
        "generated": frechet_distance(gen_feats, test_feats),
        "floor_real_train_vs_test": frechet_distance(real_feats, test_feats),
        "ceiling_uniform_noise": frechet_distance(
            tagger_outputs(tagger, noise_images("uniform", n, seed))[0], test_feats
        ),
        "ceiling_gaussian_noise": frechet_distance(
            tagger_outputs(tagger, noise_images("gaussian", n, seed))[0], test_feats
        ),
    }
    return {
        "samples": n,
        "reference": "Fashion-MNIST test set (10,000 images), tagger penultimate features",
        "frechet_distance": {k: round(v, 3) for k, v in fd.items()},
        "class_agreement": round(float(agree.mean()), 4),
        "class_agreement_per_class": {
            name: round(float(agree[labels.numpy() == c].mean()), 4) for c, name in enumerate(CLASS_LABELS)
        },
        "tagger_test_accuracy": round(float((test_preds == test.labels.numpy()).mean()), 4),
    }


def write_quality_to_card(weights_dir: Path, samples: int, seed: int) -> dict[str, Any]:
    """Evaluate the generator in ``weights_dir`` and record the report in its model card."""
    tagger = load_tagger("cpu")
    report = quality_report(load_generator("cpu", weights_dir), tagger, samples, seed)
    card_path = weights_dir / "model_card.json"
    card = json.loads(card_path.read_text())
    card["evaluation"] = {
        "command": f"python -m streamproc_artwork.evaluate --samples {samples} --seed {seed}",
        "tagger": tagger.model_version,
    }
    card["test"] = report
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate the shipped artwork generator.")
    parser.add_argument("--samples", type=int, default=10_000, help="generated images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights-dir", type=Path, default=None, help="default: shipped")
    parser.add_argument("--write-card", action="store_true", help="record in model_card.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.monotonic()
    weights_dir = args.weights_dir or shipped_weights_dir()
    if args.write_card:
        report = write_quality_to_card(weights_dir, args.samples, args.seed)
    else:
        generator = load_generator("cpu", weights_dir)
        report = quality_report(generator, load_tagger("cpu"), args.samples, args.seed)
    print(f"evaluated in {time.monotonic() - start:.0f} s", file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
