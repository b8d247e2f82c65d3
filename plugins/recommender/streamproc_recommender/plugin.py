"""The ``recommender`` plugin: next items for a user, from their playback history.

Keyed state per ``"<media>:<user_id>"`` (``history``). For each playback event (except
``progress``, unless ``recompute_on_progress``), the user's positive items as of the
event feed the sequence model, which ranks the items of the event's catalog; items the
user has watched are never returned. A user with no usable history gets the worker's
trending items of that catalog (``trending``).

Options (``plugins.recommender.options``): ``top_k`` (10, 1..100),
``recompute_on_progress`` (false), ``trending_half_life_s`` (3600, event time),
``history_size`` (200 entries kept per user), ``weights_dir`` (default: shipped weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from streamproc.errors import ConfigError, InvalidInput
from streamproc.events import Event, PlaybackEvent
from streamproc.plugin import BatchPolicy, LoadContext, Plugin
from streamproc_recommender.artifacts import load_artifacts
from streamproc_recommender.history import ACTION_WEIGHTS, append_event, namespaced_item, view_as_of
from streamproc_recommender.model import PAD, SequenceRecommender
from streamproc_recommender.trending import Trending
from streamproc_recommender.vocab import Vocabulary

DEFAULT_HISTORY_SIZE = 200


@dataclass(frozen=True)
class Request:
    """A prepared event: the model input, or a cold-start answer already taken.

    ``sequence`` holds vocabulary indices of the user's positives (last ``max_len``),
    ``exclude`` the indices of every watched item. ``trending`` is set, and ``sequence``
    empty, when the user has no usable history.
    """

    media: str
    sequence: tuple[int, ...]
    exclude: tuple[int, ...]
    trending: tuple[tuple[str, float], ...] | None = None


@dataclass(frozen=True)
class Recommendation:
    """Top items ``(item id, score)`` best first, and where they came from."""

    items: tuple[tuple[str, float], ...]
    source: str


@dataclass(frozen=True)
class Options:
    """Validated plugin options."""

    top_k: int = 10
    recompute_on_progress: bool = False
    trending_half_life_s: float = 3600.0
    history_size: int = DEFAULT_HISTORY_SIZE
    weights_dir: Path | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Options:
        """Raises ``ConfigError`` naming the option on an unknown key or a bad value."""
        unknown = set(raw) - {"top_k", "recompute_on_progress", "trending_half_life_s", "history_size", "weights_dir"}
        if unknown:
            raise ConfigError(f"plugins.recommender.options: unknown option(s) {sorted(unknown)}")
        options = cls(
            top_k=raw.get("top_k", cls.top_k),
            recompute_on_progress=raw.get("recompute_on_progress", cls.recompute_on_progress),
            trending_half_life_s=raw.get("trending_half_life_s", cls.trending_half_life_s),
            history_size=raw.get("history_size", cls.history_size),
            weights_dir=Path(raw["weights_dir"]) if raw.get("weights_dir") else None,
        )
        if not (isinstance(options.top_k, int) and 1 <= options.top_k <= 100):
            raise ConfigError(f"plugins.recommender.options.top_k: an integer 1..100, got {options.top_k!r}")
        if not isinstance(options.recompute_on_progress, bool):
            raise ConfigError("plugins.recommender.options.recompute_on_progress: true or false")
        half_life = options.trending_half_life_s
        if not (isinstance(half_life, int | float) and half_life > 0):
            raise ConfigError(f"plugins.recommender.options.trending_half_life_s: > 0, got {half_life!r}")
        if not (isinstance(options.history_size, int) and 1 <= options.history_size <= 10_000):
            raise ConfigError(
                f"plugins.recommender.options.history_size: an integer 1..10000, got {options.history_size!r}"
            )
        return options


class Recommender(Plugin):
    """Next-item recommendations for playback events (video and music catalogs)."""

    name: ClassVar[str] = "recommender"
    consumes: ClassVar[tuple[str, ...]] = ("playback",)
    produces: ClassVar[str] = "recommendations"
    batch_policy: ClassVar[BatchPolicy] = BatchPolicy(max_batch_size=64, max_wait_ms=5.0, max_queue=512)

    def __init__(self) -> None:
        self.options = Options()
        self.model: SequenceRecommender | None = None
        self.vocab: Vocabulary | None = None
        self.trending: dict[str, Trending] = {}
        self.context = LoadContext(device=torch.device("cpu"))

    def load(self, context: LoadContext) -> None:
        """Read the weights (``weights_dir`` option or the shipped ones) onto the device.

        Raises ``ConfigError`` on a bad option or an unreadable weights folder.
        """
        self.options = Options.parse(context.options)
        try:
            artifacts = load_artifacts(self.options.weights_dir, context.device)
        except (OSError, ValueError, KeyError) as exc:
            where = self.options.weights_dir or "the shipped weights"
            raise ConfigError(f"plugins.recommender.options.weights_dir: cannot load {where}: {exc}") from exc
        self.model, self.vocab, self.model_version = artifacts.model, artifacts.vocab, artifacts.version
        self.context = context
        half_life_ms = self.options.trending_half_life_s * 1000.0
        self.trending = {
            media: Trending(self.vocab.popularity[start:stop], half_life_ms)
            for media, (start, stop) in self.vocab.ranges.items()
        }

    def state_key(self, event: Event) -> str | None:
        """``"<media>:<user_id>"`` for playback events; other events carry no state."""
        return f"{event.media}:{event.user_id}" if isinstance(event, PlaybackEvent) else None

    def update_state(self, state: Mapping[str, Any] | None, event: Event) -> Mapping[str, Any]:
        """Append the event to the user's bounded history; a known event id changes nothing."""
        if not isinstance(event, PlaybackEvent):
            return state or {"entries": []}
        return append_event(state, event, self.options.history_size)

    def prepare(self, event: Event, state: Mapping[str, Any] | None) -> Request | None:
        """Count the event in trending, then build the request from the history as of it.

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
        start, _ = vocab.ranges[event.media]
        if item in vocab.index:
            weight = ACTION_WEIGHTS[event.action]
            self.trending[event.media].observe(event.id, vocab.index[item] - start, weight, event.ts)
        if event.action == "progress" and not self.options.recompute_on_progress:
            return None
        view = view_as_of(state, event.ts)
        sequence = tuple(vocab.encode(view.positives))
        exclude = tuple(vocab.encode(sorted(view.watched)))
        if sequence:
            return Request(event.media, sequence[-model.config.max_len :], exclude)
        top = self.trending[event.media].top(self.options.top_k, [i - start for i in exclude])
        items = tuple((vocab.items[start + i], score) for i, score in top)
        return Request(event.media, (), exclude, trending=items)

    def infer(self, batch: Sequence[Request]) -> list[Recommendation]:
        """One forward pass over the requests that need the model; cold-start requests
        pass their trending items through."""
        ranked = iter(self.rank([r for r in batch if r.trending is None]))
        return [Recommendation(r.trending, "trending") if r.trending is not None else next(ranked) for r in batch]

    def rank(self, requests: Sequence[Request]) -> list[Recommendation]:
        """Top-k of each request's catalog by the model, watched items masked out.

        Scores are the model's probabilities over the catalog's unwatched items.
        """
        model, vocab = self.loaded()
        if not requests:
            return []
        max_len = model.config.max_len
        seq = torch.full((len(requests), max_len), PAD, dtype=torch.long)
        allowed = torch.full((len(requests), len(vocab)), float("-inf"))
        for row, request in enumerate(requests):
            seq[row, max_len - len(request.sequence) :] = torch.tensor(request.sequence)
            start, stop = vocab.ranges[request.media]
            allowed[row, start:stop] = 0.0
            allowed[row, list(request.exclude)] = float("-inf")
        logits = model(self.context.to_device(seq)).float() + self.context.to_device(allowed)
        k = min(self.options.top_k, len(vocab))
        probs, top = (t.cpu().tolist() for t in torch.softmax(logits, dim=-1).topk(k, dim=-1))
        return [
            Recommendation(
                tuple((vocab.items[t], p) for p, t in zip(row_p, row_t, strict=True) if p > 0.0),
                "model",
            )
            for row_p, row_t in zip(probs, top, strict=True)
        ]

    def loaded(self) -> tuple[SequenceRecommender, Vocabulary]:
        """The model and vocabulary; raises ``RuntimeError`` before ``load``."""
        if self.model is None or self.vocab is None:
            raise RuntimeError("recommender: load() must be called first")
        return self.model, self.vocab

    def result(self, event: Event, output: Recommendation) -> Mapping[str, Any]:
        """``{"media", "model_version", "source", "items": [{"item_id", "score"}]}``."""
        media = event.media if isinstance(event, PlaybackEvent) else None
        return {
            "media": media,
            "model_version": self.model_version,
            "source": output.source,
            "items": [{"item_id": item, "score": round(score, 6)} for item, score in output.items],
        }
