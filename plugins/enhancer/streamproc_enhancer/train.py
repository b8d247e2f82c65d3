"""Train the x2 and x4 networks on patches of the ``train`` sources; write weights and card.

    python -m streamproc_enhancer.train [--out DIR] [--patches 6000] [--epochs 8] [--threads 2]
                                        [--scales 2 4] [--init DIR]

A fixed pool of patches is drawn once per scale (seeded): a random crop of a random
training photograph, a random flip/rotation, degraded as uploads are (bicubic 1/scale;
Gaussian noise with probability 0.15; JPEG quality 60-95 with probability 0.3). The
network learns luma: mean squared error against the reference crop, Adam with cosine
decay.
Held-out sources are never opened. Only the networks of ``--scales`` are trained; with
``--init DIR`` training starts from the weights in DIR (their architecture replaces
``--features``/``--shrink``/``--mapping``) and the scales not trained keep them, so one
scale can be trained further alone; the card then records DIR's training section as
``initialised_from``. Writes ``enhancer.safetensors``, ``config.json`` and the card's
training section (``evaluate --write-card`` adds the figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torch.nn import functional as F

from streamproc_enhancer.data import SOURCES, Degradation, Photo, degrade, photos, random_crop
from streamproc_enhancer.imaging import luma_tensor
from streamproc_enhancer.model import SCALES, WEIGHTS_FILE, Enhancer, load_enhancer, shipped_weights_dir

TRANSPOSES = (None, *Image.Transpose)


def random_degradation(scale: int, rng: np.random.Generator) -> Degradation:
    """An upload-like degradation: noise w.p. 0.15 (sigma 0-3), JPEG w.p. 0.3 (q 60-95)."""
    sigma = float(rng.uniform(0.0, 3.0)) if rng.random() < 0.15 else 0.0
    quality = int(rng.integers(60, 96)) if rng.random() < 0.3 else None
    return Degradation(scale, sigma, quality)


def patch_pool(
    references: list[Photo], scale: int, count: int, lr_side: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` (low-resolution luma (N,1,s,s), reference luma (N,1,s*scale,s*scale)) pairs."""
    low, high = [], []
    for _ in range(count):
        photo = references[int(rng.integers(len(references)))]
        crop = random_crop(photo.image, lr_side * scale, rng)
        transpose = TRANSPOSES[int(rng.integers(len(TRANSPOSES)))]
        if transpose is not None:
            crop = crop.transpose(transpose)
        low.append(luma_tensor(degrade(crop, random_degradation(scale, rng), rng)))
        high.append(luma_tensor(crop))
    return torch.stack(low), torch.stack(high)


def fit(
    model: Enhancer, scale: int, pool: tuple[torch.Tensor, torch.Tensor], epochs: int, batch: int, lr: float, seed: int
) -> float:
    """Train ``model``'s network for ``scale`` on ``pool``; the last epoch's mean squared error."""
    net = model.nets[f"x{scale}"].train()
    low, high = pool
    steps = epochs * (len(low) // batch)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    generator = torch.Generator().manual_seed(seed)
    loss_sum = 0.0
    for epoch in range(epochs):
        order = torch.randperm(len(low), generator=generator)
        losses = []
        for start in range(0, len(order) - batch + 1, batch):
            index = order[start : start + batch]
            loss = F.mse_loss(net(low[index]), high[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        loss_sum = float(np.mean(losses))
        print(f"x{scale} epoch {epoch + 1}/{epochs}: MSE {loss_sum:.6f}", flush=True)
    net.eval()
    return loss_sum


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=shipped_weights_dir(), help="weights folder to write")
    parser.add_argument("--patches", type=int, default=6000, help="patches per scale")
    parser.add_argument("--lr-side", type=int, default=24, help="low-resolution patch side")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--features", type=int, default=48)
    parser.add_argument("--shrink", type=int, default=24)
    parser.add_argument("--mapping", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scales", type=int, nargs="+", choices=SCALES, default=list(SCALES), help="scales to train")
    parser.add_argument("--init", type=Path, default=None, help="start from the weights in this folder")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started, cpu_started = time.time(), time.process_time()
    references = list(photos("train"))
    print(f"{len(references)} training references from {sorted({p.source for p in references})}", flush=True)
    model = load_enhancer("cpu", args.init) if args.init else Enhancer(args.features, args.shrink, args.mapping)
    config = model.config
    final_loss = {}
    for scale in args.scales:
        pool = patch_pool(references, scale, args.patches, args.lr_side, rng)
        final_loss[f"x{scale}"] = round(fit(model, scale, pool, args.epochs, args.batch, args.lr, args.seed), 7)
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out / WEIGHTS_FILE))
    (args.out / "config.json").write_text(json.dumps(model.config, indent=2) + "\n")
    card = {
        "model": "streamproc-enhancer sub-pixel CNN super-resolution (x2, x4)",
        "architecture": (
            f"per scale, on luma: Conv5x5 {config['features']} PReLU -> Conv1x1 {config['shrink']} PReLU -> "
            f"{config['mapping']} x Conv3x3 {config['shrink']} PReLU -> Conv1x1 {config['features']} PReLU -> "
            "Conv3x3 scale^2 -> PixelShuffle (x0.25), on (y-0.5)/0.25, added to bicubic upscaling; "
            "chroma: bicubic RGB shifted by the luma correction; the residual is zeroed where the input is "
            "flat across the receptive field (13x13 low-resolution pixels)"
        ),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {
            "sources": {package: role for package, role in SOURCES.items()},
            "training_references": len(references),
            "reference": "each image reduced (Lanczos) to a longer side of 768 px",
            "licences": "see /usr/share/doc/<package>/copyright (CC BY-SA, GPL, LGPL and similar free licences)",
            "split": "whole Debian packages: 'train' sources for training only, 'heldout' sources for evaluation only",
        },
        "training": {
            "command": " ".join(["python -m streamproc_enhancer.train", *(argv if argv is not None else sys.argv[1:])]),
            "scales_trained": [f"x{scale}" for scale in args.scales],
            "degradation": "bicubic 1/scale; Gaussian noise sigma U(0,3) w.p. 0.15; JPEG quality 60-95 w.p. 0.3",
            "seed": args.seed,
            "threads": args.threads,
            "wall_time_s": round(time.time() - started, 1),
            "cpu_time_s": round(time.process_time() - cpu_started, 1),
            "final_mse": final_loss,
            "hyperparameters": {
                "patches_per_scale": args.patches,
                "lr_patch_side": args.lr_side,
                "epochs": args.epochs,
                "batch_size": args.batch,
                "lr": args.lr,
                "loss": "MSE on luma",
            },
        },
        "date": datetime.now(UTC).date().isoformat(),
    }
    if args.init:
        card["training"]["initialised_from"] = json.loads((args.init / "model_card.json").read_text())["training"]
    (args.out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {args.out} in {card['training']['wall_time_s']} s")


if __name__ == "__main__":
    main()
