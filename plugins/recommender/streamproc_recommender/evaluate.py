"""Held-out evaluation of the model and the baselines: HR@10 and NDCG@10.

Protocol (per catalog): leave-last-out by time (``data``); the target is ranked against
every item of its catalog, the user's earlier items excluded. Ties are broken by training
popularity, then by lower index. The model reads the last ``max_len`` items of the
history; baselines are fitted on the training split only, like the model.

``python -m streamproc_recommender.evaluate [--split test] [--weights-dir DIR]`` prints
the metrics as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from streamproc_recommender.artifacts import load_artifacts
from streamproc_recommender.baselines import ItemKNN, Markov, Popularity
from streamproc_recommender.data import Catalog, load_catalogs
from streamproc_recommender.model import PAD, SequenceRecommender
from streamproc_recommender.vocab import Vocabulary

K = 10
Holdout = list[tuple[list[int], int]]


def local_holdout(catalog: Catalog, vocab: Vocabulary, split: str) -> Holdout:
    """``(history, target)`` per user in catalog-local indices."""
    start = vocab.ranges[catalog.media][0]
    return [
        ([i - start for i in vocab.encode(history)], vocab.index[target] - start)
        for history, target in catalog.holdout(split)
    ]


def local_train(catalog: Catalog, vocab: Vocabulary) -> list[list[int]]:
    """Training sequences in catalog-local indices."""
    start = vocab.ranges[catalog.media][0]
    return [[i - start for i in vocab.encode(seq)] for seq in catalog.train_sequences().values()]


def rank_of(scores: np.ndarray, target: int, exclude: Sequence[int], popularity: np.ndarray) -> int:
    """0-based rank of ``target`` among the non-excluded items (ties: popularity, index)."""
    s, p, t = scores[target], popularity[target], target
    ahead = (scores > s) | ((scores == s) & ((popularity > p) | ((popularity == p) & (np.arange(len(scores)) < t))))
    ahead[np.asarray(exclude, dtype=np.int64)] = False
    return int(ahead.sum())


def metrics(ranks: Sequence[int], k: int = K) -> dict[str, float]:
    """Hit rate and NDCG at ``k`` (one relevant item per user)."""
    r = np.asarray(ranks)
    return {
        f"hr@{k}": float((r < k).mean()),
        f"ndcg@{k}": float(np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0).mean()),
    }


def evaluate_scorer(
    score: Callable[[list[int]], np.ndarray], holdout: Holdout, popularity: np.ndarray
) -> dict[str, float]:
    """Metrics of a history -> catalog scores function over the held-out users."""
    return metrics([rank_of(score(h), t, h, popularity) for h, t in holdout])


def model_scores(
    model: SequenceRecommender, vocab: Vocabulary, media: str, histories: Sequence[list[int]]
) -> np.ndarray:
    """Model logits ``[users, catalog items]`` for catalog-local histories, in batches."""
    start, stop = vocab.ranges[media]
    max_len = model.config.max_len
    device = next(model.parameters()).device
    rows = []
    with torch.inference_mode():
        for i in range(0, len(histories), 256):
            chunk = histories[i : i + 256]
            seq = torch.full((len(chunk), max_len), PAD, dtype=torch.long)
            for row, history in enumerate(chunk):
                recent = [h + start for h in history[-max_len:]]
                seq[row, max_len - len(recent) :] = torch.tensor(recent, dtype=torch.long)
            rows.append(model(seq.to(device))[:, start:stop].float().cpu().numpy())
    return np.concatenate(rows)


def evaluate_model(model: SequenceRecommender, vocab: Vocabulary, catalog: Catalog, split: str) -> dict[str, float]:
    """The model's metrics on one catalog's ``split``."""
    holdout = local_holdout(catalog, vocab, split)
    scores = model_scores(model, vocab, catalog.media, [h for h, _ in holdout])
    popularity = catalog_popularity(vocab, catalog.media)
    return metrics([rank_of(scores[u], t, h, popularity) for u, (h, t) in enumerate(holdout)])


def catalog_popularity(vocab: Vocabulary, media: str) -> np.ndarray:
    start, stop = vocab.ranges[media]
    return np.asarray(vocab.popularity[start:stop], dtype=np.float64)


def evaluate_baselines(vocab: Vocabulary, catalog: Catalog, split: str) -> dict[str, dict[str, float]]:
    """Popularity, item-kNN and Markov metrics on one catalog's ``split``, fitted fresh."""
    train = local_train(catalog, vocab)
    n_items = len(catalog.items)
    holdout = local_holdout(catalog, vocab, split)
    popularity = catalog_popularity(vocab, catalog.media)
    return {
        name: evaluate_scorer(baseline.score, holdout, popularity)
        for name, baseline in (
            ("popularity", Popularity(train, n_items)),
            ("item_knn", ItemKNN(train, n_items)),
            ("markov", Markov(train, n_items)),
        )
    }


def evaluate(weights_dir: Path | None = None, split: str = "test") -> dict[str, dict[str, dict[str, float]]]:
    """``{media: {"model" | baseline: {"hr@10", "ndcg@10"}}}`` for the given weights."""
    artifacts = load_artifacts(weights_dir)
    results = {}
    for media, catalog in load_catalogs().items():
        results[media] = {
            "model": evaluate_model(artifacts.model, artifacts.vocab, catalog, split),
            **evaluate_baselines(artifacts.vocab, catalog, split),
        }
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("valid", "test"), default="test")
    parser.add_argument("--weights-dir", type=Path, default=None, help="default: shipped weights")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    json.dump(evaluate(args.weights_dir, args.split), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
