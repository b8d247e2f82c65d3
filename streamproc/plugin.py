"""Plugin API v1: what a model plugin implements, and what the engine gives it.

A plugin is a class registered in the ``streamproc.plugins`` entry-point group. The
engine owns batching, threads, devices, retries, metrics, state persistence and sinks;
the plugin writes model code only:

- ``load(context)``: read weights (safetensors only), move the model to
  ``context.device``. Called once, before any event.
- ``prepare(event, state)``: CPU-side decode and validation of one event. Returns the
  model input for that event, or ``None`` when the event carries nothing for this
  plugin (for example an upload without an artwork request). Raises ``InvalidInput``
  (or ``MediaError``) with a reason to refuse the event; it goes to the dead-letter
  topic. Runs on a worker thread, never on the event loop.
- ``infer(batch)``: one batched forward pass over the prepared inputs, in order; returns
  one output per input. The engine calls it under ``torch.inference_mode()`` and, on
  CUDA, under autocast. An exception fails the whole batch; the engine retries the
  items one by one before dead-lettering the ones that still fail.
- ``result(event, output)``: the JSON-serialisable result body for one event.

Plugins that keep memory across events (the recommender's per-user history) define
``state_key`` and ``update_state``. The engine applies ``update_state`` at most once per
input record, in input order per key, persists the new state before the input offset
is committed, and passes the updated state to ``prepare``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel

from streamproc.events import Event

API_VERSION = 1
"""The plugin API this engine implements; a plugin declares the one it was written for."""
SUPPORTED_API_VERSIONS = frozenset({1})
ENTRY_POINT_GROUP = "streamproc.plugins"


@dataclass(frozen=True)
class BatchPolicy:
    """How the engine batches a plugin's inputs (Triton-style dynamic batching).

    A batch is run as soon as ``max_batch_size`` inputs wait or the oldest has waited
    ``max_wait_ms``. At most ``max_queue`` inputs wait; beyond that the worker stops
    fetching (backpressure) instead of dropping anything.
    """

    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_queue < self.max_batch_size or self.max_wait_ms < 0:
            raise ValueError(f"invalid batch policy {self}")


@dataclass(frozen=True)
class LoadContext:
    """What the engine hands a plugin at load time.

    ``device`` is where the model must live; ``autocast_dtype`` is the reduced precision
    the engine will autocast ``infer`` to (``None``: float32); ``options`` are the
    plugin's settings from configuration (``plugins.<name>.options``).
    """

    device: torch.device
    autocast_dtype: torch.dtype | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """Copy a CPU tensor to the device: pinned memory and a non-blocking copy on CUDA."""
        if self.device.type != "cuda":
            return tensor.to(self.device)
        return tensor.pin_memory().to(self.device, non_blocking=True)


class Plugin(ABC):
    """Base class of every model plugin. Subclasses set the class attributes below."""

    name: ClassVar[str]
    """Unique plugin name, used in routes, configuration, metrics and result records."""
    consumes: ClassVar[tuple[str, ...]]
    """Event types (``playback``, ``upload``, ``audio``) or result kinds it accepts by default."""
    produces: ClassVar[str]
    """The kind of result it produces (``recommendations``, ``tags``, ``transcript`` ...)."""
    batch_policy: ClassVar[BatchPolicy] = BatchPolicy()
    """Default batching; configuration may override each field."""
    api_version: ClassVar[int] = API_VERSION
    """The plugin API version the plugin was written for; the engine refuses one it does not support."""
    Options: ClassVar[type[BaseModel] | None] = None
    """Optional pydantic model of ``plugins.<name>.options``. When set, the engine validates the
    configured options against it before ``load`` (uniform ``ConfigError`` messages), passes
    the validated values, defaults filled in, as ``context.options``, and lists the fields in
    ``streamproc config --reference``."""

    model_version: str = "unversioned"
    """Set by ``load``: identifies the weights (for example a hash or a model-card version)."""

    @abstractmethod
    def load(self, context: LoadContext) -> None:
        """Load weights and move the model to ``context.device``."""

    @abstractmethod
    def prepare(self, event: Event, state: Mapping[str, Any] | None) -> Any | None:
        """Decode and validate one event; ``None`` means "nothing to do for this event"."""

    @abstractmethod
    def infer(self, batch: Sequence[Any]) -> Sequence[Any]:
        """Run the model on a batch of prepared inputs; one output per input, in order."""

    @abstractmethod
    def result(self, event: Event, output: Any) -> Mapping[str, Any]:
        """Build the JSON-serialisable result body for one event from its output."""

    def state_key(self, event: Event) -> str | None:
        """The key of the state this event reads and updates; ``None``: stateless."""
        return None

    def update_state(self, state: Mapping[str, Any] | None, event: Event) -> Mapping[str, Any]:
        """Return the new state after ``event`` (pure; JSON-serialisable; no I/O)."""
        raise NotImplementedError(f"{type(self).__name__} declares no state")
