"""The operator's catalogue: which platform item ids are which model items.

The model knows the items it was trained on (its vocabulary: MovieLens-100k movies
``"video:1"`` .. ``"video:1682"`` and the synthetic ``"music:..."`` tracks). A platform's
own item ids mean nothing to it until the operator maps them (``catalogue`` option):

- ``"movielens"`` (default, for the demo and tests): platform ids *are* the model's ids:
  ``video:242`` (or ``242`` with ``media: video``) is MovieLens movie 242. Only right
  for a platform that really uses MovieLens-100k ids.
- ``"none"``: no item is known; every user gets trending items from the live stream.
- a path to a ``.json`` or ``.csv`` file mapping namespaced platform ids to model items.
  JSON: one object ``{"video:tt0114709": "video:1", "music:8f2c": 1700}``. CSV: a header
  ``item_id,model_item`` then one row per item. A model item is a vocabulary id
  (``"video:1"``, stable across retrains on the same data) or a vocabulary index (an
  integer, or a CSV cell of digits; indices change when the model is retrained). Each
  model item may be mapped once and only within its own media.

Model items without a platform id are never recommended; platform ids without a model
item are *unknown*: they are kept in the history and excluded from results, but do not
feed the model (counted in ``streamproc_recommender_unknown_items_total``). The plugin
has no Redis client, so a Redis-backed catalogue would need the core (not provided).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamproc.errors import ConfigError
from streamproc_recommender.vocab import Vocabulary

BUILTIN = ("movielens", "none")
OPTION = "plugins.recommender.options.catalogue"


@dataclass(frozen=True)
class Catalogue:
    """Namespaced platform item id <-> model vocabulary index (a one-to-one mapping)."""

    name: str
    to_model: Mapping[str, int]
    to_platform: Mapping[int, str]

    @classmethod
    def load(cls, spec: str, vocab: Vocabulary) -> Catalogue:
        """``"movielens"``, ``"none"`` or a file path (see the module doc).

        Raises ``ConfigError`` naming the option on an unreadable or inconsistent file.
        """
        if spec == "movielens":
            pairs = {item: index for index, item in enumerate(vocab.items) if index > 0}
        elif spec == "none":
            pairs = {}
        else:
            pairs = _read(Path(spec), vocab)
        to_platform: dict[int, str] = {}
        for platform_id, index in pairs.items():
            if index in to_platform:
                raise ConfigError(
                    f"{OPTION}: {spec}: {platform_id!r} and {to_platform[index]!r} both map to {vocab.items[index]!r}"
                )
            to_platform[index] = platform_id
        return cls(spec, pairs, to_platform)


def _read(path: Path, vocab: Vocabulary) -> dict[str, int]:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise ValueError("a JSON catalogue is one object {platform id: model item}")
            rows = list(raw.items())
        elif path.suffix == ".csv":
            reader = csv.DictReader(text.splitlines())
            if reader.fieldnames is None or not {"item_id", "model_item"} <= set(reader.fieldnames):
                raise ValueError("a CSV catalogue needs the header item_id,model_item")
            rows = [(row["item_id"], _cell(row["model_item"])) for row in reader]
        else:
            raise ValueError("the file name must end in .json or .csv")
        return dict(_pair(platform_id, model_item, vocab) for platform_id, model_item in rows)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{OPTION}: cannot use {path}: {exc}") from exc


def _cell(value: str) -> str | int:
    return int(value) if value.strip().isdigit() else value.strip()


def _pair(platform_id: Any, model_item: Any, vocab: Vocabulary) -> tuple[str, int]:
    """``(platform id, vocabulary index)``; raises ``ValueError`` naming the row."""
    if not isinstance(platform_id, str) or ":" not in platform_id:
        raise ValueError(f"platform id {platform_id!r} is not namespaced (video:<id> or music:<id>)")
    media = platform_id.split(":", 1)[0]
    if media not in vocab.ranges:
        raise ValueError(f"platform id {platform_id!r}: no {media!r} catalog in the model")
    if isinstance(model_item, int) and not isinstance(model_item, bool):
        index = model_item
    elif isinstance(model_item, str) and model_item in vocab.index:
        index = vocab.index[model_item]
    else:
        raise ValueError(f"{platform_id!r}: {model_item!r} is not a model item")
    start, stop = vocab.ranges[media]
    if not start <= index < stop:
        raise ValueError(f"{platform_id!r}: model item {model_item!r} is not in the model's {media!r} catalog")
    return platform_id, index
