"""Train the class-conditional DCGAN on Fashion-MNIST and write the generator and card.

``python -m streamproc_artwork.train`` trains ``Generator`` against the projection
``Discriminator`` on all 60,000 training images with the hinge loss (Adam, betas
0/0.9, one discriminator step per generator step), keeps an exponential moving
average (EMA) of the generator's weights, re-estimates the EMA generator's
batch-norm statistics at the end, writes ``generator.safetensors``, ``config.json`` and
``model_card.json``, then evaluates it (``streamproc_artwork.evaluate``) against the
test set in the tagger's feature space and adds the metrics to the card: the tagger
must be trained by then. Progress (losses, elapsed time, ETA) goes to stderr.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from streamproc_tagger.data import DATA_DIR, DATA_LICENCE
from torch import nn

from streamproc_artwork.data import gan_images
from streamproc_artwork.evaluate import write_quality_to_card
from streamproc_artwork.model import (
    LATENT_DIM,
    NUM_CLASSES,
    WEIGHTS_FILE,
    Discriminator,
    Generator,
    load_generator,
    shipped_weights_dir,
)


def log(message: str) -> None:
    """One progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for parameters; buffers are copied."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def mode_seeking_loss(fake: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mode-seeking term (Mao et al. 2019, MSGAN), to minimise: ``1 / (d_image / d_z)``.

    ``fake`` and ``z`` hold two halves generated for the same classes (pairs i, i + N/2);
    the term is small when different latents give images far apart, so a generator that
    maps many latents to one prototype pays for it.
    """
    image_a, image_b = fake.chunk(2)
    z_a, z_b = z.chunk(2)
    ratio = (image_a - image_b).abs().mean() / (z_a - z_b).abs().mean()
    return 1.0 / (ratio + 1e-5)


@torch.no_grad()
def recalibrate_batch_norm(generator: Generator, batches: int, batch_size: int, seed: int) -> None:
    """Re-estimate batch-norm statistics as exact averages over random (z, class) batches."""
    rng = torch.Generator().manual_seed(seed)
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    generator.train()
    for _ in range(batches):
        z = torch.randn(batch_size, LATENT_DIM, generator=rng)
        generator(z, torch.randint(0, NUM_CLASSES, (batch_size,), generator=rng))
    for m in norms:
        m.momentum = 0.1
    generator.eval()


def train_gan(args: argparse.Namespace) -> Generator:
    """Train the GAN; returns the EMA generator in eval mode with re-estimated BN stats."""
    torch.manual_seed(args.seed)
    rng = torch.Generator().manual_seed(args.seed)
    images, labels = gan_images("train")
    gen = Generator(args.g_width, args.embed_dim)
    disc = Discriminator(args.d_width)
    ema = copy.deepcopy(gen).eval()
    betas = (0.0, 0.9)
    opt_g = torch.optim.Adam(gen.parameters(), lr=args.lr_g, betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=args.lr_d, betas=betas)
    steps_per_epoch = len(labels) // args.batch_size
    total_steps = steps_per_epoch * args.epochs
    start, step = time.monotonic(), 0
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(labels), generator=rng)
        gen.train()
        for b in range(steps_per_epoch):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            real, y = images[idx], labels[idx]
            # with the mode-seeking term, fakes come in pairs of the same class (i, i + N/2)
            y_fake = y[: len(idx) // 2].repeat(2) if args.mode_seeking > 0 else y
            z = torch.randn(len(y_fake), LATENT_DIM, generator=rng)
            fake = gen(z, y_fake)
            h_real, h_fake = disc.body(real), disc.body(fake.detach())
            loss_d = (
                torch.relu(1.0 - disc.scores(h_real, y)).mean()
                + torch.relu(1.0 + disc.scores(h_fake, y_fake)).mean()
                + args.aux_weight * nn.functional.cross_entropy(disc.classifier(h_real), y)
            )
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            h_fake = disc.body(fake)
            loss_g = -disc.scores(h_fake, y_fake).mean() + args.aux_weight * (
                nn.functional.cross_entropy(disc.classifier(h_fake), y_fake)
            )
            if args.mode_seeking > 0:
                loss_g = loss_g + args.mode_seeking * mode_seeking_loss(fake, z)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            update_ema(ema, gen, args.ema if step >= args.ema_start else 0.0)
            step += 1
            if step % 100 == 0 or step == total_steps:
                elapsed = time.monotonic() - start
                log(
                    f"epoch {epoch}/{args.epochs} step {step}/{total_steps} "
                    f"loss_d {loss_d.item():.3f} loss_g {loss_g.item():.3f} "
                    f"elapsed {elapsed:.0f}s eta {elapsed / step * (total_steps - step):.0f}s"
                )
    recalibrate_batch_norm(ema, batches=100, batch_size=250, seed=args.seed)
    return ema


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the class-conditional Fashion-MNIST GAN.")
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--g-width", type=int, default=48)
    parser.add_argument("--d-width", type=int, default=32)
    parser.add_argument("--embed-dim", type=int, default=32)
    parser.add_argument("--lr-g", type=float, default=2e-4)
    parser.add_argument("--lr-d", type=float, default=2e-4)
    parser.add_argument("--aux-weight", type=float, default=1.5, help="AC-GAN class loss weight")
    parser.add_argument("--mode-seeking", type=float, default=1.5, help="weight of the mode-seeking (diversity) term")
    parser.add_argument("--ema", type=float, default=0.999, help="generator EMA decay")
    parser.add_argument("--ema-start", type=int, default=1000, help="steps before EMA starts")
    parser.add_argument(
        "--latent-scale",
        type=float,
        default=0.8,
        help="the scale the shipped generator draws at (config.json; training draws at 1.0): choose it with "
        "`python -m streamproc_artwork.evaluate --scan-scales ... --samples 10000 --seed 1` (its chosen_scale)",
    )
    parser.add_argument("--eval-samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="default: the package weights")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out or shipped_weights_dir()
    out.mkdir(parents=True, exist_ok=True)
    start, cpu_start = time.monotonic(), time.process_time()
    generator = train_gan(args)
    wall, cpu = time.monotonic() - start, time.process_time() - cpu_start
    state = {k: v.contiguous() for k, v in generator.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    config = {
        "width": args.g_width,
        "embed_dim": args.embed_dim,
        "latent_dim": LATENT_DIM,
        "latent_scale": args.latent_scale,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shipped = load_generator("cpu", out)
    card = {
        "model": "streamproc-artwork class-conditional DCGAN generator",
        "version": shipped.model_version,
        "architecture": (
            f"G: [z {LATENT_DIM} ; class embedding {args.embed_dim}] -> Linear -> "
            f"{2 * args.g_width}x7x7 BN-ReLU -> ConvT4x4/2 {args.g_width} BN-ReLU -> "
            "ConvT4x4/2 1 -> tanh (28x28). D (training only): spectral-norm "
            f"Conv4x4/2 {args.d_width}, {2 * args.d_width}, LeakyReLU 0.2, linear + "
            "class projection (+ auxiliary classifier on real images). Hinge loss; the "
            "shipped G is the EMA of G with re-estimated batch-norm statistics"
        ),
        "parameters": sum(p.numel() for p in shipped.parameters()),
        "data": {
            "source": f"Fashion-MNIST idx files from {DATA_DIR}",
            "licence": DATA_LICENCE,
            "split": "GAN trained on all 60,000 training images; evaluated against the 10,000 test images only",
        },
        "training": {
            "command": " ".join(["python -m streamproc_artwork.train", *(sys.argv[1:] if argv is None else argv)]),
            "seed": args.seed,
            "threads": args.threads,
            "wall_time_s": round(wall, 1),
            "cpu_time_s": round(cpu, 1),
            "hyperparameters": {
                k: getattr(args, k)
                for k in (
                    "epochs",
                    "batch_size",
                    "g_width",
                    "d_width",
                    "lr_g",
                    "lr_d",
                    "aux_weight",
                    "mode_seeking",
                    "ema",
                    "ema_start",
                    "latent_scale",
                )
            },
        },
        "output": (
            "28x28 white-on-black image, PNG at its native 28x28 by default "
            "(image_size > 28: a bilinear upscale, labelled in the result)"
        ),
        "date": datetime.date.today().isoformat(),
    }
    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    log(f"trained in {wall:.0f} s ({cpu:.0f} s CPU); wrote {out}")
    report = write_quality_to_card(out, args.eval_samples, args.seed)
    log(json.dumps(report["frechet_distance"]) + f" agreement {report['class_agreement']}")


if __name__ == "__main__":
    main()
