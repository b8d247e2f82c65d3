"""Train the recommender on both catalogs and write the weights folder with its model card.

``python -m streamproc_recommender.train [--out DIR] [--seed 0]``: seeded, one CPU
thread, progress (epoch, loss, validation metrics, ETA) on stderr. Training reads each
user's training split only; the epoch with the best mean validation NDCG@10 is kept
(early stopping), then the test split is evaluated once, next to the baselines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from streamproc_recommender.artifacts import CARD_FILE, save_artifacts, shipped_weights_dir
from streamproc_recommender.data import Catalog, load_catalogs
from streamproc_recommender.evaluate import K, evaluate_baselines, evaluate_model
from streamproc_recommender.model import PAD, ModelConfig, SequenceRecommender
from streamproc_recommender.vocab import Vocabulary


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def training_windows(catalog: Catalog, vocab: Vocabulary, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-item targets of one catalog, both ``[N, max_len]`` and left-padded.

    Each training sequence is cut from its end into windows of ``max_len + 1`` items; a
    window predicts each of its items from the items before it.
    """
    inputs, targets = [], []
    for seq in catalog.train_sequences().values():
        indices = vocab.encode(seq)
        for end in range(len(indices), 1, -max_len):
            window = indices[max(0, end - max_len - 1) : end]
            pad = [PAD] * (max_len + 1 - len(window))
            inputs.append(pad + window[:-1])
            targets.append(pad + window[1:])
    return torch.tensor(inputs), torch.tensor(targets)


def epoch_batches(
    windows: Sequence[tuple[torch.Tensor, torch.Tensor]], batch_size: int, rng: np.random.Generator
) -> list[tuple[int, torch.Tensor]]:
    """Shuffled ``(catalog position, window rows)`` batches, each from a single catalog."""
    batches = []
    for position, (inputs, _) in enumerate(windows):
        order = torch.from_numpy(rng.permutation(len(inputs)))
        batches.extend((position, order[i : i + batch_size]) for i in range(0, len(order), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def batch_loss(
    model: SequenceRecommender, inputs: torch.Tensor, targets: torch.Tensor, bounds: tuple[int, int]
) -> torch.Tensor:
    """Mean cross-entropy of each real target against every item of its catalog."""
    start, stop = bounds
    real = targets != PAD
    hidden = model.encode(inputs)[real]
    logits = hidden @ model.item_emb.weight[start:stop].T
    return F.cross_entropy(logits, targets[real] - start)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="weights folder (default: shipped)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=200, help="upper bound on epochs")
    parser.add_argument("--patience", type=int, default=15, help="epochs without improvement")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.3)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    out = args.out or shipped_weights_dir()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started = time.monotonic()

    catalogs = list(load_catalogs().values())
    vocab = Vocabulary.build(catalogs)
    config = ModelConfig(len(vocab), args.max_len, args.dim, args.layers, args.heads, args.dropout)
    model = SequenceRecommender(config)
    windows = [training_windows(c, vocab, config.max_len) for c in catalogs]
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    n_params = sum(p.numel() for p in model.parameters())
    n_windows = sum(len(inputs) for inputs, _ in windows)
    log(f"{len(vocab) - 1} items, {n_windows} training windows, {n_params} parameters")

    best_score, best_epoch, best_state = -1.0, 0, model.state_dict()
    best_valid: dict[str, dict[str, float]] = {}
    for epoch in range(1, args.epochs + 1):
        epoch_start = time.monotonic()
        model.train()
        total, count = 0.0, 0
        for position, rows in epoch_batches(windows, args.batch_size, rng):
            inputs, targets = windows[position]
            bounds = vocab.ranges[catalogs[position].media]
            loss = batch_loss(model, inputs[rows], targets[rows], bounds)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
            count += len(rows)
        model.eval()
        valid = {c.media: evaluate_model(model, vocab, c, "valid") for c in catalogs}
        score = float(np.mean([m[f"ndcg@{K}"] for m in valid.values()]))
        if score > best_score:
            best_score, best_epoch, best_valid = score, epoch, valid
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        seconds = time.monotonic() - epoch_start
        shown = " ".join(f"{media} hr={m[f'hr@{K}']:.3f} ndcg={m[f'ndcg@{K}']:.3f}" for media, m in valid.items())
        log(
            f"epoch {epoch}/{args.epochs} loss={total / count:.4f} valid: {shown} "
            f"best@{best_epoch} {seconds:.1f}s/epoch ETA<={seconds * (args.epochs - epoch):.0f}s"
        )
        if epoch - best_epoch >= args.patience:
            log(f"early stop: no improvement for {args.patience} epochs")
            break

    model.load_state_dict(best_state)
    model.eval()
    test = {
        c.media: {"model": evaluate_model(model, vocab, c, "test"), **evaluate_baselines(vocab, c, "test")}
        for c in catalogs
    }
    version = save_artifacts(out, model, vocab)
    wall = time.monotonic() - started
    card = model_card(args, argv, config, n_params, catalogs, version, (epoch, best_epoch), best_valid, test, wall)
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    log(json.dumps(test, indent=2))
    log(f"wrote {out} ({version}) in {wall:.0f}s")


def model_card(
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    config: ModelConfig,
    n_params: int,
    catalogs: Sequence[Catalog],
    version: str,
    epochs: tuple[int, int],
    valid: dict[str, dict[str, float]],
    test: dict[str, dict[str, dict[str, float]]],
    wall_s: float,
) -> dict[str, object]:
    """The provenance and held-out quality of the trained weights."""
    flags = " ".join(sys.argv[1:] if argv is None else argv)
    epochs_run, best_epoch = epochs
    return {
        "name": "recommender",
        "version": version,
        "architecture": (
            f"SASRec-style causal transformer: {config.layers} pre-norm blocks, dim {config.dim}, "
            f"{config.heads} head(s), dropout {config.dropout}, learned positions, last "
            f"{config.max_len} items, output tied to the item embedding; one model over the "
            "namespaced video+music vocabulary, softmax restricted to the request's catalog"
        ),
        "parameters": n_params,
        "config": config.to_json(),
        "data": {c.media: {"source": c.source, "users": len(c.sequences), "items": len(c.items)} for c in catalogs},
        "licence": (
            "MovieLens-100k is provided by GroupLens Research (University of Minnesota) for "
            "research use under the GroupLens terms (no commercial use, no redistribution, "
            "cite Harper & Konstan 2015); weights trained on it inherit these terms. The music "
            "data is synthetic, generated by streamproc_recommender.data.generate_music."
        ),
        "split": (
            "leave-last-out per user: interactions stably sorted by (timestamp, item id), "
            "second last = validation, last = test, the rest = training; full ranking over "
            "the user's catalog with the user's earlier items excluded; ranking ties broken "
            "by training popularity then item index; baselines fitted on the training split"
        ),
        "training": {
            "command": f"python -m streamproc_recommender.train {flags}".strip(),
            "seed": args.seed,
            "epochs_run": epochs_run,
            "best_epoch": best_epoch,
            "optimizer": f"Adam lr {args.lr}, batch {args.batch_size}, full-catalog softmax loss",
            "early_stopping": f"mean validation NDCG@{K}, patience {args.patience}",
            "wall_time_s": round(wall_s, 1),
            "device": "cpu, 1 thread",
        },
        "metrics": {
            "test": test,
            "valid_best_epoch": valid,
            "note": "music metrics are on SYNTHETIC data and say nothing about real listening",
        },
        "date": dt.date.today().isoformat(),
    }


if __name__ == "__main__":
    main()
