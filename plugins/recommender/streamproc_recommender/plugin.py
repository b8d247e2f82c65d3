"""The ``recommender`` plugin: next items for a user, from their playback history.

Keyed state per ``"<media>:<user_id>"`` (``history``: one window entry per item and the
set of every item ever watched). For each playback event (except ``progress``, unless
``recompute_on_progress``), the user's positive items as of the event, mapped to model
items through the operator's catalogue (``catalogue``), feed the sequence model, which
ranks the catalogue's items of the event's media; items the user has ever watched are
never returned. A user with no usable history gets the items trending in this worker's
live stream (``trending``).

Threads: ``update_state`` runs on the engine's event loop and is pure (it reads only the
options). ``prepare``, ``infer`` and ``result`` run on the plugin thread; the trending
counters are read and updated in ``prepare`` only.

Options (``plugins.recommender.options``): ``RecommenderOptions`` below.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamproc.errors import ConfigError, InvalidInput
from streamproc.events import Event, PlaybackEvent
from streamproc.plugin import BatchPolicy, LoadContext, Plugin
from streamproc_recommender import watched as watched_set
from streamproc_recommender.artifacts import load_artifacts
from streamproc_recommender.catalogue import Catalogue
from streamproc_recommender.history import apply_event, namespaced_item, read_history
from streamproc_recommender.model import PAD, SequenceRecommender
from streamproc_recommender.trending import Trending
from streamproc_recommender.vocab import Vocabulary

DEFAULT_HISTORY_SIZE = 200
DEFAULT_WATCHED_SIZE = 10_000

UNKNOWN_ITEMS = Counter(
    "streamproc_recommender_unknown_items_total",
    "Playback events whose item id is not in the recommender's catalogue (option catalogue)",
    ["media"],
)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """A prepared event: the model input, or a cold-start answer already taken.

    ``sequence`` holds vocabulary indices of the user's positives (last ``max_len``),
    ``exclude`` the vocabulary indices of every watched item. ``trending`` is set, and
    ``sequence`` empty, when the user has no usable history. ``unknown`` counts the
    window's items (as of the event) that the catalogue does not map.
    """

    media: str
    sequence: tuple[int, ...]
    exclude: tuple[int, ...]
    unknown: int
    trending: tuple[tuple[str, float], ...] | None = None


@dataclass(frozen=True)
class Recommendation:
    """Top items ``(platform item id, score)`` best first, where they came from, and how
    many history items were unknown."""

    items: tuple[tuple[str, float], ...]
    source: str
    unknown: int


class RecommenderOptions(BaseModel):
    """``plugins.recommender.options``, validated by the engine before ``load``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    top_k: int = Field(10, ge=1, le=100, description="items per recommendation")
    recompute_on_progress: bool = Field(False, description="recommend again on progress events")
    trending_half_life_s: float = Field(3600.0, gt=0, description="decay of the live trending counts")
    history_size: int = Field(DEFAULT_HISTORY_SIZE, ge=1, le=10_000, description="items in the model's window")
    watched_size: int = Field(
        DEFAULT_WATCHED_SIZE, le=1_000_000, description="items excluded per user (at least history_size)"
    )
    catalogue: str = Field("movielens", min_length=1, description='"movielens", "none" or a catalogue file path')
    weights_dir: Path | None = Field(None, description="folder of weights (default: the shipped ones)", strict=False)

    @model_validator(mode="after")
    def _watched_covers_history(self) -> RecommenderOptions:
        if self.watched_size < self.history_size:
            raise ValueError(f"watched_size ({self.watched_size}) must be at least history_size ({self.history_size})")
        return self


class Recommender(Plugin):
    """Next-item recommendations for playback events (video and music catalogs)."""

    name: ClassVar[str] = "recommender"
    consumes: ClassVar[tuple[str, ...]] = ("playback",)
    produces: ClassVar[str] = "recommendations"
    batch_policy: ClassVar[BatchPolicy] = BatchPolicy(max_batch_size=64, max_wait_ms=5.0, max_queue=512)
    Options: ClassVar[type[BaseModel]] = RecommenderOptions

    def __init__(self) -> None:
        self.options = RecommenderOptions()
        self.model: SequenceRecommender | None = None
        self.vocab: Vocabulary | None = None
        self.catalogue = Catalogue("none", {}, {})
        self.trending: dict[str, Trending] = {}
        self.item_hashes: dict[str, np.ndarray] = {}
        self.allowed: dict[str, torch.Tensor] = {}
        self.context = LoadContext(device=torch.device("cpu"))

    def load(self, context: LoadContext) -> None:
        """Read the weights (``weights_dir`` option or the shipped ones) onto the device and
        the catalogue (``catalogue`` option); seed trending with training popularity.

        Raises ``ConfigError`` on a bad option, an unreadable weights folder or catalogue.
        """
        self.options = RecommenderOptions.model_validate(dict(context.options), strict=False)
        try:
            artifacts = load_artifacts(self.options.weights_dir, context.device)
        except (OSError, ValueError, KeyError) as exc:
            where = self.options.weights_dir or "the shipped weights"
            raise ConfigError(f"plugins.recommender.options.weights_dir: cannot load {where}: {exc}") from exc
        vocab = artifacts.vocab
        self.model, self.vocab, self.model_version = artifacts.model, vocab, artifacts.version
        self.catalogue = catalogue = Catalogue.load(self.options.catalogue, vocab)
        if catalogue.name == "movielens":
            log.warning(
                "recommender: catalogue 'movielens': item ids are read as MovieLens-100k movie ids and the "
                "synthetic music ids (demo); set plugins.recommender.options.catalogue for a real platform"
            )
        self.context = context
        half_life_ms = self.options.trending_half_life_s * 1000.0
        for media, (start, stop) in vocab.ranges.items():
            platform = [catalogue.to_platform.get(index, "") for index in range(start, stop)]
            # Unmapped model items get hash 0 here; they are never allowed, so never excluded wrongly.
            self.item_hashes[media] = watched_set.item_hashes(platform)
            allowed = torch.full((len(vocab),), float("-inf"))
            mapped = [index for index in range(start, stop) if index in catalogue.to_platform]
            allowed[mapped] = 0.0
            self.allowed[media] = allowed
            seed = {catalogue.to_platform[i]: float(vocab.popularity[i]) for i in mapped}
            self.trending[media] = Trending(seed, half_life_ms)

    def state_key(self, event: Event) -> str | None:
        """``"<media>:<user_id>"`` for playback events; other events carry no state."""
        return f"{event.media}:{event.user_id}" if isinstance(event, PlaybackEvent) else None

    def update_state(self, state: Mapping[str, Any] | None, event: Event) -> Mapping[str, Any]:
        """The user's history after the event (``history.apply_event``): pure, deterministic,
        JSON; a known event id changes nothing; a state of the previous format is migrated."""
        if not isinstance(event, PlaybackEvent):
            return state or read_history(None).to_state()
        return apply_event(state, event, self.options.history_size, self.options.watched_size)

    def prepare(self, event: Event, state: Mapping[str, Any] | None) -> Request | None:
        """Count the event in trending (and, when its item is unknown, in
        ``streamproc_recommender_unknown_items_total``), then build the request from the
        history as of the event.

        Returns ``None`` for ``progress`` events unless ``recompute_on_progress``. Raises
        ``InvalidInput`` for a non-playback event, an item id of the other catalog, a
        catalog these weights lack, or a malformed state.
        """
        model, vocab = self.loaded()
        if not isinstance(event, PlaybackEvent):
            raise InvalidInput(f"type: the recommender takes playback events, got {event.type!r}")
        if event.media not in vocab.ranges:
            raise InvalidInput(f"media: these weights have no {event.media!r} catalog")
        item = namespaced_item(event)
        if item not in self.catalogue.to_model:
            UNKNOWN_ITEMS.labels(event.media).inc()
        self.trending[event.media].observe(event.id, item, event.action, event.ts)
        if event.action == "progress" and not self.options.recompute_on_progress:
            return None
        history = read_history(state)
        watched = watched_set.decode(history.watched)
        view = history.view_as_of(event.ts)
        to_model = self.catalogue.to_model
        unknown = sum(1 for i in view.items if i not in to_model)
        sequence = tuple(to_model[i] for i in view.positives if i in to_model)
        start, _ = vocab.ranges[event.media]
        # Every watched item: the watched set, and the window (which may hold items watched
        # so long ago that the watched set has forgotten them).
        excluded = set((np.flatnonzero(np.isin(self.item_hashes[event.media], watched)) + start).tolist())
        excluded.update(to_model[entry[0]] for entry in history.entries if entry[0] in to_model)
        exclude = tuple(sorted(excluded))
        if sequence:
            return Request(event.media, sequence[-model.config.max_len :], exclude, unknown)
        window = watched_set.item_hashes([entry[0] for entry in history.entries])
        top = self.trending[event.media].top(self.options.top_k, np.concatenate([watched, window]))
        return Request(event.media, (), exclude, unknown, trending=tuple(top))

    def infer(self, batch: Sequence[Request]) -> list[Recommendation]:
        """One forward pass over the requests that need the model; cold-start requests
        pass their trending items through."""
        ranked = iter(self.rank([r for r in batch if r.trending is None]))
        return [
            Recommendation(r.trending, "trending", r.unknown) if r.trending is not None else next(ranked) for r in batch
        ]

    def rank(self, requests: Sequence[Request]) -> list[Recommendation]:
        """Top-k of each request's catalogue items by the model, watched items masked out,
        as platform ids.

        Scores are the model's probabilities over the catalogue's unwatched items.
        """
        model, vocab = self.loaded()
        if not requests:
            return []
        max_len = model.config.max_len
        seq = torch.full((len(requests), max_len), PAD, dtype=torch.long)
        allowed = torch.stack([self.allowed[request.media] for request in requests])
        for row, request in enumerate(requests):
            seq[row, max_len - len(request.sequence) :] = torch.tensor(request.sequence)
            allowed[row, list(request.exclude)] = float("-inf")
        logits = model(self.context.to_device(seq)).float() + self.context.to_device(allowed)
        k = min(self.options.top_k, len(vocab))
        probs, top = (t.cpu().tolist() for t in torch.softmax(logits, dim=-1).topk(k, dim=-1))
        to_platform = self.catalogue.to_platform
        return [
            Recommendation(
                tuple((to_platform[t], p) for p, t in zip(row_p, row_t, strict=True) if p > 0.0),
                "model",
                request.unknown,
            )
            for row_p, row_t, request in zip(probs, top, requests, strict=True)
        ]

    def loaded(self) -> tuple[SequenceRecommender, Vocabulary]:
        """The model and vocabulary; raises ``RuntimeError`` before ``load``."""
        if self.model is None or self.vocab is None:
            raise RuntimeError("recommender: load() must be called first")
        return self.model, self.vocab

    def result(self, event: Event, output: Recommendation) -> Mapping[str, Any]:
        """``{"media", "model_version", "source", "unknown_items", "items": [{"item_id",
        "score"}]}``; ``unknown_items`` counts the history window's items (as of the event)
        that the catalogue does not map."""
        media = event.media if isinstance(event, PlaybackEvent) else None
        return {
            "media": media,
            "model_version": self.model_version,
            "source": output.source,
            "unknown_items": output.unknown,
            "items": [{"item_id": item, "score": round(score, 6)} for item, score in output.items],
        }
