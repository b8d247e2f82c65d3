"""The item vocabulary: namespaced item ids <-> model indices, per-catalog index ranges.

Index 0 is padding. Each catalog owns one contiguous index range, so masking a request
to its own catalog is one slice. ``popularity`` holds the training interaction count of
each index: the cold-start fallback before the stream has shown any event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamproc_recommender.data import Catalog

PAD_TOKEN = "<pad>"


@dataclass(frozen=True)
class Vocabulary:
    """Items in index order (``items[0]`` is padding) and each catalog's ``[start, stop)``."""

    items: tuple[str, ...]
    ranges: Mapping[str, tuple[int, int]]
    popularity: tuple[int, ...]
    index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {item: i for i, item in enumerate(self.items)})

    @classmethod
    def build(cls, catalogs: Iterable[Catalog]) -> Vocabulary:
        """Index every catalog's items in order; count training interactions per item."""
        items = [PAD_TOKEN]
        ranges: dict[str, tuple[int, int]] = {}
        counts: dict[str, int] = {}
        for catalog in catalogs:
            ranges[catalog.media] = (len(items), len(items) + len(catalog.items))
            items.extend(catalog.items)
            for seq in catalog.train_sequences().values():
                for item in seq:
                    counts[item] = counts.get(item, 0) + 1
        return cls(tuple(items), ranges, tuple(counts.get(item, 0) for item in items))

    def __len__(self) -> int:
        return len(self.items)

    def encode(self, items: Iterable[str]) -> list[int]:
        """Indices of the known items, in order; unknown items are dropped."""
        return [self.index[item] for item in items if item in self.index]

    def to_json(self) -> dict[str, Any]:
        return {
            "items": list(self.items),
            "ranges": {media: list(bounds) for media, bounds in self.ranges.items()},
            "popularity": list(self.popularity),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Vocabulary:
        return cls(
            items=tuple(str(item) for item in doc["items"]),
            ranges={media: (int(bounds[0]), int(bounds[1])) for media, bounds in doc["ranges"].items()},
            popularity=tuple(int(count) for count in doc["popularity"]),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json()), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
