"""Three non-neural next-item baselines, fitted on the training split of one catalog.

All work in catalog-local indices ``0..n_items-1`` and score every item of the catalog
from a user's history (oldest first). Ranking ties are broken by training popularity,
then by lower index (see ``evaluate.rank_of``), so each baseline falls back to
popularity where it has no evidence.

- ``Popularity``: training interaction count.
- ``ItemKNN``: item-item cosine similarity of co-occurrence across users, summed over
  the user's last ``window`` (20) items.
- ``Markov``: first-order transition counts from the user's last item.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Popularity:
    """Scores an item by how often it occurs in training."""

    def __init__(self, train: Sequence[Sequence[int]], n_items: int) -> None:
        self.counts = np.zeros(n_items)
        for seq in train:
            np.add.at(self.counts, np.asarray(seq, dtype=np.int64), 1.0)

    def score(self, history: Sequence[int]) -> np.ndarray:
        return self.counts


class ItemKNN:
    """Item co-occurrence kNN: cosine similarity to the user's recent items."""

    def __init__(self, train: Sequence[Sequence[int]], n_items: int, window: int = 20) -> None:
        users = np.zeros((len(train), n_items), dtype=np.float32)
        for row, seq in enumerate(train):
            users[row, np.asarray(seq, dtype=np.int64)] = 1.0
        cooc = users.T @ users
        norm = np.sqrt(np.diag(cooc)) + 1e-9
        self.similarity = cooc / np.outer(norm, norm)
        np.fill_diagonal(self.similarity, 0.0)
        self.window = window

    def score(self, history: Sequence[int]) -> np.ndarray:
        recent = np.asarray(history[-self.window :], dtype=np.int64)
        return self.similarity[recent].sum(axis=0)


class Markov:
    """First-order Markov chain: how often each item followed the user's last item."""

    def __init__(self, train: Sequence[Sequence[int]], n_items: int) -> None:
        self.transitions = np.zeros((n_items, n_items), dtype=np.float32)
        for seq in train:
            if len(seq) > 1:
                np.add.at(self.transitions, (np.asarray(seq[:-1]), np.asarray(seq[1:])), 1.0)

    def score(self, history: Sequence[int]) -> np.ndarray:
        return self.transitions[history[-1]]
