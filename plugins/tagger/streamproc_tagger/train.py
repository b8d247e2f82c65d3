"""Train the tagger CNN on Fashion-MNIST and write its weights and model card.

``python -m streamproc_tagger.train`` trains ``TaggerNet`` on 90% of the training set
(random 28x28 crops of the 2-pixel-padded image, horizontal flips; AdamW, one-cycle
learning rate, label smoothing), keeps the epoch with the best validation accuracy,
fits a softmax temperature on the validation images, reports the test set once and
writes ``model.safetensors``, ``config.json`` and ``model_card.json``.
``--baseline`` trains the seed's exact CNN the seed's way (Adam 1e-3, batch 32, no
augmentation, whole training set) and records its test metrics in the model card.
Progress goes to stderr. Everything is seeded; one CPU thread by default.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from streamproc_tagger.data import (
    CLASS_LABELS,
    CLASS_NAMES,
    DATA_DIR,
    DATA_LICENCE,
    SPLIT_SEED,
    VALIDATION_FRACTION,
    ImageSet,
    load_split,
    split_train_validation,
    to_float,
)
from streamproc_tagger.metrics import (
    classification_metrics,
    fit_temperature,
    majority_baseline,
    predict_logits,
)
from streamproc_tagger.model import (
    WEIGHTS_FILE,
    SeedNet,
    TaggerNet,
    load_tagger,
    shipped_weights_dir,
    weights_version,
)
from streamproc_tagger.outliers import outlier_images
from streamproc_tagger.outliers import sources as outlier_sources
from streamproc_tagger.product import render_set

CROP_PADDING = 2


def log(message: str) -> None:
    """One progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 28x28 crops of the zero-padded images and random horizontal flips."""
    n, _, h, w = images.shape
    padded = nn.functional.pad(images, [CROP_PADDING] * 4)
    offsets = torch.randint(0, 2 * CROP_PADDING + 1, (n, 2), generator=generator).tolist()
    crops = torch.stack([padded[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(offsets)])
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], crops.flip(3), crops)


@dataclass(frozen=True)
class OpenSetTraining:
    """The optional open-set parts of tagger training.

    ``product_images`` holds one product-style rendering (``product.render_set``) per fit
    image, used instead of the plain image with probability ``product_fraction``.
    ``outliers`` are preprocessed non-clothing images (train-role sources only); each step
    adds ``outlier_batch`` of them with the outlier-exposure loss (cross-entropy to the
    uniform distribution, Hendrycks et al. 2019) weighted by ``outlier_weight``.
    """

    product_images: torch.Tensor | None = None
    product_fraction: float = 0.0
    outliers: torch.Tensor | None = None
    outlier_batch: int = 0
    outlier_weight: float = 0.0


def run_epoch(
    model: nn.Module,
    data: ImageSet,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    augmented: bool = False,
    label_smoothing: float = 0.0,
    open_set: OpenSetTraining | None = None,
) -> float:
    """One shuffled pass over ``data``; returns the mean training loss."""
    model.train()
    open_set = open_set or OpenSetTraining()
    order = torch.randperm(len(data), generator=generator)
    total, seen = 0.0, 0
    for start in range(0, len(data), batch_size):
        idx = order[start : start + batch_size]
        pixels = data.images[idx]
        if open_set.product_images is not None:
            use_product = torch.rand(len(idx), generator=generator) < open_set.product_fraction
            pixels = torch.where(use_product[:, None, None, None], open_set.product_images[idx], pixels)
        n_in = len(idx)
        if open_set.outliers is not None and open_set.outlier_batch > 0:
            pick = torch.randint(0, len(open_set.outliers), (open_set.outlier_batch,), generator=generator)
            pixels = torch.cat([pixels, open_set.outliers[pick]])
        images = to_float(pixels)
        if augmented:
            images = augment(images, generator)
        images = images.contiguous(memory_format=torch.channels_last)
        logits = model(images)
        loss = nn.functional.cross_entropy(logits[:n_in], data.labels[idx], label_smoothing=label_smoothing)
        if len(logits) > n_in:
            uniform_ce = -nn.functional.log_softmax(logits[n_in:], dim=1).mean()
            loss = loss + open_set.outlier_weight * uniform_ce
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * len(idx)
        seen += len(idx)
    return total / seen


def train_seed_baseline(train: ImageSet, epochs: int = 5, seed: int = 0, batch_size: int = 32) -> SeedNet:
    """The seed's CNN trained the seed's way: Adam 1e-3, batch 32 (the Keras default), no
    augmentation, all of ``train``."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = SeedNet().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(1, epochs + 1):
        loss = run_epoch(model, train, optimizer, batch_size, generator)
        log(f"[seed-cnn] epoch {epoch}/{epochs} loss {loss:.4f}")
    return model.eval()


def open_set_training(fit: ImageSet, args: argparse.Namespace) -> OpenSetTraining:
    """Render the product-style copies and the outlier pool that ``args`` ask for."""
    product_images, outliers = None, None
    if args.product_augment > 0:
        log(f"rendering {len(fit)} product-style copies of the fit images ...")
        product_images = render_set(fit.images, None, seed=args.seed)
    if args.outlier_exposure > 0:
        pool = []
        for candidate in outlier_sources("train"):
            log(f"outlier exposure: {args.outliers_per_source} images from {candidate.name} ...")
            pool.append(outlier_images(candidate, args.outliers_per_source, seed=args.seed))
        outliers = torch.cat(pool)
    return OpenSetTraining(
        product_images=product_images,
        product_fraction=args.product_augment,
        outliers=outliers,
        outlier_batch=args.outlier_batch if outliers is not None else 0,
        outlier_weight=args.outlier_exposure,
    )


def train_tagger(fit: ImageSet, val: ImageSet, args: argparse.Namespace) -> tuple[TaggerNet, list[dict[str, float]]]:
    """Train ``TaggerNet``; returns the best-validation-accuracy model and the history.

    Starts from ``args.init_weights`` when given (fine-tuning), else from scratch. Stops
    early after ``args.patience`` epochs without validation gain, or after the epoch that
    passes ``args.max_minutes`` of wall time.
    """
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    open_set = open_set_training(fit, args)
    if args.init_weights is not None:
        model = load_tagger("cpu", args.init_weights).to(memory_format=torch.channels_last)
        model.temperature.fill_(1.0)
        log(f"fine-tuning from {args.init_weights} ({model.model_version})")
    else:
        model = TaggerNet(dropout=args.dropout).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * -(-len(fit) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.25)
    best_acc, best_state, since_best = -1.0, copy.deepcopy(model.state_dict()), 0
    history: list[dict[str, float]] = []
    start = time.monotonic()
    for epoch in range(1, args.epochs + 1):
        loss = run_epoch(
            model, fit, optimizer, args.batch_size, generator, scheduler, True, args.label_smoothing, open_set
        )
        logits = predict_logits(model, val.images)
        val_acc = float((logits.argmax(1) == val.labels).float().mean())
        elapsed = time.monotonic() - start
        eta = elapsed / epoch * (args.epochs - epoch)
        history.append({"epoch": epoch, "train_loss": round(loss, 4), "val_accuracy": val_acc})
        log(f"epoch {epoch}/{args.epochs} loss {loss:.4f} val_acc {val_acc:.4f} elapsed {elapsed:.0f}s eta {eta:.0f}s")
        if val_acc > best_acc:
            best_acc, best_state, since_best = val_acc, copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
            if since_best >= args.patience:
                log(f"early stop: no validation gain for {args.patience} epochs")
                break
        if args.max_minutes is not None and elapsed > 60 * args.max_minutes:
            log(f"stop: wall-time budget of {args.max_minutes} min used")
            break
    model.load_state_dict(best_state)
    return model.eval(), history


def read_card(path: Path) -> dict[str, Any]:
    """The existing model card, or an empty one."""
    return json.loads(path.read_text()) if path.exists() else {}


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` as indented JSON with a trailing newline."""
    path.write_text(json.dumps(doc, indent=2) + "\n")


def command_line(argv: list[str] | None) -> str:
    """The training command as typed (for the model card)."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python -m streamproc_tagger.train", *args])


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m streamproc_tagger.train``."""
    parser = argparse.ArgumentParser(
        description="Train the Fashion-MNIST tagger CNN (or, with --baseline, the seed CNN)."
    )
    parser.add_argument("--baseline", action="store_true", help="train the seed CNN instead")
    parser.add_argument("--epochs", type=int, default=None, help="default 10 (baseline: 5)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak one-cycle learning rate")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--label-smoothing", type=float, default=0.05)
    parser.add_argument("--patience", type=int, default=4, help="early-stopping patience")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="default: the package weights")
    parser.add_argument("--init-weights", type=Path, default=None, help="fine-tune from this weights folder")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop after the epoch passing this")
    parser.add_argument(
        "--product-augment", type=float, default=0.0, help="fraction of items shown as product-style renderings"
    )
    parser.add_argument("--outlier-exposure", type=float, default=0.0, help="weight of the outlier-exposure loss")
    parser.add_argument("--outlier-batch", type=int, default=64, help="outliers added to each batch")
    parser.add_argument("--outliers-per-source", type=int, default=3000)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out or shipped_weights_dir()
    out.mkdir(parents=True, exist_ok=True)
    card_path = out / "model_card.json"
    train, test = load_split("train"), load_split("test")
    start, cpu_start = time.monotonic(), time.process_time()

    if args.baseline:
        epochs = args.epochs or 5
        seed_net = train_seed_baseline(train, epochs=epochs, seed=args.seed)
        wall, cpu = time.monotonic() - start, time.process_time() - cpu_start
        metrics = classification_metrics(predict_logits(seed_net, test.images), test.labels)
        log(f"seed CNN test accuracy {metrics['accuracy']:.4f} ({wall:.0f} s)")
        card = read_card(card_path)
        card.setdefault("baselines", {})["seed_cnn"] = {
            "description": "the seed's Keras CNN (Conv32-pool-Conv64-pool-Dense64-10), "
            "Adam 1e-3, batch 32, no augmentation, all 60,000 training images",
            "parameters": sum(p.numel() for p in seed_net.parameters()),
            "epochs": epochs,
            "training_command": command_line(argv),
            "seed": args.seed,
            "wall_time_s": round(wall, 1),
            "cpu_time_s": round(cpu, 1),
            "test": metrics,
        }
        write_json(card_path, card)
        return

    args.epochs = args.epochs or 10
    previous_version = weights_version(args.init_weights / WEIGHTS_FILE) if args.init_weights else None
    fit, val = split_train_validation(train)
    log(f"training TaggerNet on {len(fit)} images, validating on {len(val)}")
    model, history = train_tagger(fit, val, args)
    wall, cpu = time.monotonic() - start, time.process_time() - cpu_start
    val_logits = predict_logits(model, val.images)
    temperature = fit_temperature(val_logits, val.labels)
    model.temperature.fill_(temperature)
    log(f"fitted temperature {temperature:.3f}; evaluating on the test set")
    test_logits = predict_logits(model, test.images)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    config = {"num_classes": len(CLASS_LABELS), "dropout": args.dropout, "input": [1, 28, 28]}
    write_json(out / "config.json", config)

    card = read_card(card_path)
    card.update(
        {
            "model": "streamproc-tagger TaggerNet",
            "version": weights_version(out / WEIGHTS_FILE),
            "architecture": "Conv3x3-BN-ReLU 32, maxpool, 64, 64, maxpool, 128, "
            "dropout, Dense 128-BN-ReLU (features), dropout, Dense 10; "
            "temperature-scaled softmax",
            "parameters": sum(p.numel() for p in model.parameters()),
            "classes": dict(zip(CLASS_LABELS, CLASS_NAMES, strict=True)),
            "data": {
                "source": f"Fashion-MNIST idx files from {DATA_DIR}",
                "licence": DATA_LICENCE,
                "split": f"official test set (10,000) for this report only; training set "
                f"split stratified {1 - VALIDATION_FRACTION:.0%}/{VALIDATION_FRACTION:.0%} "
                f"fit/validation with numpy seed {SPLIT_SEED}",
            },
            "training": {
                "command": command_line(argv),
                "seed": args.seed,
                "threads": args.threads,
                "wall_time_s": round(wall, 1),
                "cpu_time_s": round(cpu, 1),
                "machine": platform.processor() or platform.machine(),
                "epochs_run": len(history),
                "best_epoch": int(max(history, key=lambda h: h["val_accuracy"])["epoch"]),
                "history": history,
                "hyperparameters": {
                    k: getattr(args, k)
                    for k in (
                        "batch_size",
                        "lr",
                        "weight_decay",
                        "dropout",
                        "label_smoothing",
                        "product_augment",
                        "outlier_exposure",
                        "outlier_batch",
                        "outliers_per_source",
                    )
                },
                "init_weights": previous_version,
                "augmentation": f"random 28x28 crop of {CROP_PADDING}-px zero-padded image, horizontal flip p=0.5"
                + (
                    f"; {args.product_augment:.0%} of items as product-style renderings (product.random_style)"
                    if args.product_augment > 0
                    else ""
                ),
                "outlier_exposure_sources": [s.name for s in outlier_sources("train")] if args.outlier_exposure else [],
                "temperature": round(temperature, 4),
            },
            "validation": classification_metrics(val_logits, val.labels, temperature),
            "test": classification_metrics(test_logits, test.labels, temperature),
            "test_uncalibrated": {
                k: v for k, v in classification_metrics(test_logits, test.labels).items() if k in ("ece_15_bins", "nll")
            },
            "date": datetime.date.today().isoformat(),
        }
    )
    for stale in ("product_style_test_accuracy", "open_set", "previous_model"):
        card.pop(stale, None)  # measured on other weights; re-measure after calibrating
    card.get("measured_by", {}).pop("open_set", None)
    card.setdefault("baselines", {})["majority_class"] = {
        "description": "always the most frequent training class (all tie: the first, label 0)",
        "test": majority_baseline(train, test),
    }
    write_json(card_path, card)
    log(f"test accuracy {card['test']['accuracy']:.4f}, wrote {out}")
    log(
        f"the open-set detector in {out} (if any) was fitted for other weights: run "
        f"python -m streamproc_tagger.calibrate --weights-dir {out}, then "
        f"python -m streamproc_tagger.evaluate --open-set --weights-dir {out} --write-card"
    )


if __name__ == "__main__":
    main()
