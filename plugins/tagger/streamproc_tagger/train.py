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
from streamproc_tagger.evaluate import (
    classification_metrics,
    fit_temperature,
    majority_baseline,
    predict_logits,
)
from streamproc_tagger.model import (
    WEIGHTS_FILE,
    SeedNet,
    TaggerNet,
    shipped_weights_dir,
    weights_version,
)

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


def run_epoch(
    model: nn.Module,
    data: ImageSet,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    augmented: bool = False,
    label_smoothing: float = 0.0,
) -> float:
    """One shuffled pass over ``data``; returns the mean training loss."""
    model.train()
    order = torch.randperm(len(data), generator=generator)
    total, seen = 0.0, 0
    for start in range(0, len(data), batch_size):
        idx = order[start : start + batch_size]
        images = to_float(data.images[idx])
        if augmented:
            images = augment(images, generator)
        images = images.contiguous(memory_format=torch.channels_last)
        loss = nn.functional.cross_entropy(model(images), data.labels[idx], label_smoothing=label_smoothing)
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


def train_tagger(fit: ImageSet, val: ImageSet, args: argparse.Namespace) -> tuple[TaggerNet, list[dict[str, float]]]:
    """Train ``TaggerNet``; returns the best-validation-accuracy model and the history."""
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = TaggerNet(dropout=args.dropout).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * -(-len(fit) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.25)
    best_acc, best_state, since_best = -1.0, copy.deepcopy(model.state_dict()), 0
    history: list[dict[str, float]] = []
    start = time.monotonic()
    for epoch in range(1, args.epochs + 1):
        loss = run_epoch(model, fit, optimizer, args.batch_size, generator, scheduler, True, args.label_smoothing)
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


def main(argv: list[str] | None = None) -> None:
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
                    k: getattr(args, k) for k in ("batch_size", "lr", "weight_decay", "dropout", "label_smoothing")
                },
                "augmentation": f"random 28x28 crop of {CROP_PADDING}-px zero-padded image, horizontal flip p=0.5",
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
    card.setdefault("baselines", {})["majority_class"] = {
        "description": "always the most frequent training class (all tie: the first, label 0)",
        "test": majority_baseline(train, test),
    }
    write_json(card_path, card)
    log(f"test accuracy {card['test']['accuracy']:.4f}, wrote {out}")


if __name__ == "__main__":
    main()
