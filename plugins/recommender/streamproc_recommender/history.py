"""A user's playback history in one catalog: the keyed state of the recommender.

The state is JSON: ``{"entries": [[item, weight, ts, event_id], ...]}`` in arrival order,
at most ``max_entries`` long (the oldest entries are dropped first). Items are namespaced
(``"video:242"``). Action weights: ``like`` 2, ``complete`` 1, ``start`` 0.25,
``progress`` 0.1, ``skip`` -1. An item is a positive when the sum of its weights is
above zero: a start then a skip (-0.75) is a negative and is not fed to the model, while
a full watch (start + complete, 1.25) or a like outweighs one later skip. Every item in
the history counts as watched and is never recommended back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamproc.errors import InvalidInput
from streamproc.events import PlaybackEvent

ACTION_WEIGHTS: Mapping[str, float] = {
    "like": 2.0,
    "complete": 1.0,
    "start": 0.25,
    "progress": 0.1,
    "skip": -1.0,
}
MEDIA_PREFIXES = ("video:", "music:")


def namespaced_item(event: PlaybackEvent) -> str:
    """The event's item id in its media namespace (``"242"`` -> ``"video:242"``).

    Raises ``InvalidInput`` when the id carries the other media's prefix.
    """
    item = event.item_id
    if not item.startswith(MEDIA_PREFIXES):
        return f"{event.media}:{item}"
    if not item.startswith(f"{event.media}:"):
        raise InvalidInput(f"item_id: {item!r} is not in the {event.media!r} catalog of this event")
    return item


def append_event(state: Mapping[str, Any] | None, event: PlaybackEvent, max_entries: int) -> Mapping[str, Any]:
    """The state after ``event``; pure. An event id already in the history is a no-op
    (the same state is returned), and so is an event whose item id is refused. A
    malformed state (not written by this module) is replaced by a fresh history."""
    try:
        entries = entries_of(state)
    except InvalidInput:
        state, entries = None, []
    if any(entry[3] == event.id for entry in entries):
        return state or {"entries": []}
    try:
        item = namespaced_item(event)
    except InvalidInput:
        return state or {"entries": []}
    entry = (item, ACTION_WEIGHTS[event.action], event.ts, event.id)
    return {"entries": [*entries, entry][-max_entries:]}


Entry = tuple[str, float, int, str]


def entries_of(state: Mapping[str, Any] | None) -> list[Entry]:
    """The validated entries of a state (``None``: empty). Raises ``InvalidInput``.

    Entries this module made are tuples, checked when they were made; entries decoded
    from JSON (lists) are checked here. The worker applies every playback event to the
    user's state on its event loop, so a history is checked once when it is read from
    Redis, not once per event (profiled: re-checking every entry of every history on
    every event was a third of the worker's time; docs/performance.md).
    """
    if state is None:
        return []
    entries = state.get("entries") if isinstance(state, Mapping) else None
    if not isinstance(entries, list):
        raise InvalidInput("state: 'entries' must be a list")
    return [entry if type(entry) is tuple else _checked(entry) for entry in entries]


def _checked(entry: Any) -> Entry:
    if not (
        isinstance(entry, list)
        and len(entry) == 4
        and isinstance(entry[0], str)
        and isinstance(entry[1], int | float)
        and isinstance(entry[2], int)
        and isinstance(entry[3], str)
    ):
        raise InvalidInput(f"state: malformed entry {entry!r} (want [item, weight, ts, event_id])")
    return (entry[0], entry[1], entry[2], entry[3])


@dataclass(frozen=True)
class HistoryView:
    """The history as of one moment: positives oldest first, and every watched item."""

    positives: tuple[str, ...]
    watched: frozenset[str]


def view_as_of(state: Mapping[str, Any] | None, ts: int) -> HistoryView:
    """Entries with ``ts`` at or before ``ts``, stably ordered by time (then arrival).

    Positives are ordered by their latest entry. Raises ``InvalidInput`` on a malformed
    state.
    """
    entries = sorted((e for e in entries_of(state) if e[2] <= ts), key=lambda e: e[2])
    net: dict[str, float] = {}
    latest: dict[str, int] = {}
    for position, (item, weight, _, _) in enumerate(entries):
        net[item] = net.get(item, 0.0) + weight
        latest[item] = position
    positives = sorted((item for item, w in net.items() if w > 0), key=latest.__getitem__)
    return HistoryView(tuple(positives), frozenset(net))
