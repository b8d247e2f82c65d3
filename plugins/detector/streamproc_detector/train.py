"""Train the detector on scenes of Fashion-MNIST TRAIN items on ``train`` backgrounds.

    python -m streamproc_detector.train [--out DIR] [--scenes 10000] [--epochs 5] [--threads 2]

A fixed pool of scenes is composed once (seeded); targets follow CenterNet: a Gaussian
peak per item at its centre cell on its class's heatmap (sigma proportional to the box
side), the box size and sub-cell offset at that cell. Loss: penalty-reduced focal loss
on the heatmaps + L1 on offsets + 0.1 x L1 on sizes, normalised by the item count.
Test items and held-out backgrounds are never used. Writes ``detector.safetensors``,
``config.json`` and the card's training section (``evaluate --write-card`` adds figures).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from streamproc_enhancer.data import SOURCES
from streamproc_tagger.data import DATA_LICENCE

from streamproc_detector.model import NUM_CLASSES, STRIDE, WEIGHTS_FILE, ItemDetector, shipped_weights_dir
from streamproc_detector.scenes import ITEM_SIDES, MAX_ITEMS, SCENE_SIDE, Scene, SceneMaker

GAUSSIAN_ALPHA = 0.54


def targets(scenes: list[Scene]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(heatmaps (N, C, G, G), sizes (N, 2, G, G), offsets (N, 2, G, G), centre mask (N, G, G))."""
    grid = SCENE_SIDE // STRIDE
    heat = np.zeros((len(scenes), NUM_CLASSES, grid, grid), np.float32)
    size = np.zeros((len(scenes), 2, grid, grid), np.float32)
    offset = np.zeros((len(scenes), 2, grid, grid), np.float32)
    mask = np.zeros((len(scenes), grid, grid), np.float32)
    ys, xs = np.mgrid[0:grid, 0:grid]
    for n, scene in enumerate(scenes):
        for box, label in zip(scene.boxes, scene.labels, strict=True):
            w, h = (box[2] - box[0]) / STRIDE, (box[3] - box[1]) / STRIDE
            cx, cy = (box[0] + box[2]) / 2 / STRIDE, (box[1] + box[3]) / 2 / STRIDE
            ix, iy = min(int(cx), grid - 1), min(int(cy), grid - 1)
            sx, sy = max(GAUSSIAN_ALPHA * w / 6, 0.5), max(GAUSSIAN_ALPHA * h / 6, 0.5)
            peak = np.exp(-((xs - ix) ** 2) / (2 * sx**2) - ((ys - iy) ** 2) / (2 * sy**2))
            heat[n, label] = np.maximum(heat[n, label], peak)
            size[n, :, iy, ix] = (w, h)
            offset[n, :, iy, ix] = (cx - ix, cy - iy)
            mask[n, iy, ix] = 1.0
    return torch.from_numpy(heat), torch.from_numpy(size), torch.from_numpy(offset), torch.from_numpy(mask)


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), summed."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1).float()
    pos = -torch.log(p) * (1 - p) ** 2 * positive
    neg = -torch.log(1 - p) * p**2 * (1 - target) ** 4 * (1 - positive)
    return (pos + neg).sum()


def detection_loss(model: ItemDetector, scenes: list[Scene]) -> torch.Tensor:
    images = torch.from_numpy(np.stack([s.pixels for s in scenes])).float().div(255.0).unsqueeze(1)
    heat_t, size_t, offset_t, mask = targets(scenes)
    heat, size, offset = model(images)
    count = mask.sum().clamp(min=1.0)
    m = mask.unsqueeze(1)
    size_loss = ((size - size_t).abs() * m).sum()
    offset_loss = ((offset - offset_t).abs() * m).sum()
    return (focal_loss(heat, heat_t) + offset_loss + 0.1 * size_loss) / count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=shipped_weights_dir(), help="weights folder to write")
    parser.add_argument("--scenes", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started, cpu_started = time.time(), time.process_time()
    maker = SceneMaker.for_role("train", "train")
    pool = [maker.scene(rng) for _ in range(args.scenes)]
    print(f"{len(pool)} training scenes on {len(maker.backgrounds)} backgrounds", flush=True)
    model = ItemDetector(args.width).train()
    steps = args.epochs * (len(pool) // args.batch)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, args.lr, total_steps=steps, pct_start=0.1)
    losses: list[float] = []
    for epoch in range(args.epochs):
        order = rng.permutation(len(pool))
        losses = []
        for start in range(0, len(order) - args.batch + 1, args.batch):
            loss = detection_loss(model, [pool[i] for i in order[start : start + args.batch]])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        print(f"epoch {epoch + 1}/{args.epochs}: loss {np.mean(losses):.4f}", flush=True)
    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out / WEIGHTS_FILE))
    (args.out / "config.json").write_text(json.dumps({"width": args.width}, indent=2) + "\n")
    card = {
        "model": "streamproc-detector anchor-free single-shot CNN (CenterNet-style) for clothing items",
        "architecture": (
            f"luma 96x96 -> Conv3x3/2 {args.width // 2}, Conv3x3/2 {args.width}, Conv3x3 {args.width} (stride 4) -> "
            f"3 x Conv3x3 {2 * args.width} (stride 8, first /2) -> nearest x2 + stride-4 skip -> Conv3x3 "
            f"{2 * args.width}; heads: class heatmaps (10), size (2), offset (2); BN + ReLU; 3x3 peak "
            "decoding + class-aware NMS"
        ),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {
            "items": "Fashion-MNIST TRAIN split (60,000) for training; TEST split (10,000) for evaluation only",
            "items_licence": DATA_LICENCE,
            "backgrounds": {package: role for package, role in SOURCES.items()},
            "backgrounds_licences": "see /usr/share/doc/<package>/copyright",
            "scenes": f"{SCENE_SIDE}x{SCENE_SIDE} luma, 1-{MAX_ITEMS} items of {ITEM_SIDES[0]}-{ITEM_SIDES[1]} px, "
            "overlapping up to half a box, random contrast and polarity",
        },
        "training": {
            "command": "python -m streamproc_detector.train",
            "seed": args.seed,
            "threads": args.threads,
            "wall_time_s": round(time.time() - started, 1),
            "cpu_time_s": round(time.process_time() - cpu_started, 1),
            "final_loss": round(float(np.mean(losses)), 4),
            "hyperparameters": {
                "scenes": args.scenes,
                "epochs": args.epochs,
                "batch_size": args.batch,
                "lr": args.lr,
                "optimiser": "AdamW (weight decay 1e-4), one-cycle",
            },
        },
        "date": datetime.now(UTC).date().isoformat(),
    }
    (args.out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {args.out} in {card['training']['wall_time_s']} s")


if __name__ == "__main__":
    main()
