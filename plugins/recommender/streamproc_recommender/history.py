"""A user's playback history in one catalog: the keyed state of the recommender.

The state is JSON (format version 2)::

    {"v": 2,
     "entries": [[item, weight, ts, event_id], ...],
     "watched": "<base64>",
     "recent_ids": ["<event id>", ...]}

- ``entries``: the model's window, **one entry per item** (namespaced platform id such as
  ``"video:242"``), least recently touched first, at most ``history_size`` items. An
  event on an item already in the window updates its entry in place and moves it to the
  end: ``weight`` is the item's summed action weight, ``ts`` its latest event time,
  ``event_id`` the id of its latest event. A new item evicts the least recently touched
  one, so ``progress`` heartbeats never push other items out.
- ``watched``: every item the user ever had an event for, skipped or not (``watched``
  module: 32-bit hashes, at most ``watched_size`` items). These are never recommended
  back, whether or not they are still in the window.
- ``recent_ids``: the ids of the last ``RECENT_IDS`` events applied: a replayed event
  among them changes nothing.

Action weights: ``like`` 2, ``complete`` 1, ``start`` 0.25, ``skip`` -1; ``progress``
0.1 only when it is the item's first event (a watch whose ``start`` was lost), otherwise
it adds nothing and only refreshes the item's recency: however many heartbeats a client
sends, they cannot turn a skipped item into a positive. An item is a *positive* when its
weight is above zero (a start then a skip is not; a full watch or a like outweighs one
later skip).

Size per user and catalog: about 50 bytes per window entry for short ids (``history_size``
200: about 10 kB), 5.33 bytes per watched item (``watched_size`` 10,000: at most 53.3 kB),
and up to ``RECENT_IDS`` event ids. ``read_history`` migrates the previous format (no
``"v"``: one entry per *event*, ``{"entries": [[item, weight, ts, event_id], ...]}``) on
read: entries of the same item are merged (weights summed as they were, latest time and
id kept) and every item becomes watched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamproc.errors import InvalidInput
from streamproc.events import PlaybackEvent
from streamproc_recommender import watched as watched_set

ACTION_WEIGHTS: Mapping[str, float] = {
    "like": 2.0,
    "complete": 1.0,
    "start": 0.25,
    "progress": 0.1,
    "skip": -1.0,
}
MEDIA_PREFIXES = ("video:", "music:")
STATE_VERSION = 2
RECENT_IDS = 64

Entry = tuple[str, float, int, str]


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


@dataclass(frozen=True)
class HistoryView:
    """The window as of one moment, in event-time order: the positive items and all items."""

    positives: tuple[str, ...]
    items: tuple[str, ...]


@dataclass(frozen=True)
class History:
    """A decoded state: the window (one entry per item), the watched set, recent event ids."""

    entries: tuple[Entry, ...]
    watched: str
    recent_ids: tuple[str, ...]

    def to_state(self) -> dict[str, Any]:
        """The JSON-serialisable state document (format version 2)."""
        return {
            "v": STATE_VERSION,
            "entries": list(self.entries),
            "watched": self.watched,
            "recent_ids": list(self.recent_ids),
        }

    def view_as_of(self, ts: int) -> HistoryView:
        """Window items whose latest event is at or before ``ts``, by that time (ties: the
        order they were touched in). An item touched again after ``ts`` is left out."""
        ordered = sorted((e for e in self.entries if e[2] <= ts), key=lambda e: e[2])
        return HistoryView(tuple(e[0] for e in ordered if e[1] > 0), tuple(e[0] for e in ordered))


EMPTY = History((), watched_set.EMPTY, ())


def read_history(state: Mapping[str, Any] | None) -> History:
    """The history in a state (``None``: empty), migrating the previous format.

    Raises ``InvalidInput`` on a malformed state. Entries this module made are tuples,
    checked when they were made; entries decoded from JSON (lists) are checked here, so a
    history is checked once when the worker reads it from Redis, not on every event
    (profiled: re-checking every entry on every event was a third of the worker's time).
    The ``watched`` string is decoded (and checked) only where it is used.
    """
    if state is None:
        return EMPTY
    if not isinstance(state, Mapping):
        raise InvalidInput("state: not a JSON object")
    entries = state.get("entries")
    if not isinstance(entries, list):
        raise InvalidInput("state: 'entries' must be a list")
    checked = [entry if type(entry) is tuple else _checked(entry) for entry in entries]
    version = state.get("v")
    if version is None:
        return _migrated(checked)
    if version != STATE_VERSION:
        raise InvalidInput(f"state: unknown format version {version!r}")
    watched, recent_ids = state.get("watched"), state.get("recent_ids")
    if not isinstance(watched, str):
        raise InvalidInput("state: 'watched' must be a string")
    if not (isinstance(recent_ids, list) and all(isinstance(i, str) for i in recent_ids)):
        raise InvalidInput("state: 'recent_ids' must be a list of strings")
    return History(tuple(checked), watched, tuple(recent_ids))


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
    return (entry[0], float(entry[1]), entry[2], entry[3])


def _migrated(events: list[Entry]) -> History:
    """A history of the previous format (one entry per event, in arrival order)."""
    merged: dict[str, Entry] = {}
    first_seen: dict[str, None] = {}
    for item, weight, ts, event_id in events:
        first_seen.setdefault(item, None)
        old = merged.pop(item, None)
        if old is not None:
            weight, ts = old[1] + weight, max(old[2], ts)
        merged[item] = (item, weight, ts, event_id)
    watched = watched_set.encode(watched_set.item_hashes(list(first_seen)))
    return History(tuple(merged.values()), watched, tuple(e[3] for e in events[-RECENT_IDS:]))


def apply_event(
    state: Mapping[str, Any] | None, event: PlaybackEvent, history_size: int, watched_size: int
) -> Mapping[str, Any]:
    """The state after ``event``; pure and deterministic (the same inputs give an equal
    result in every process; ``state`` is not modified).

    A replayed event id (among ``recent_ids``) and an event whose item id is refused leave
    the state as it was (the same object; an empty state for ``None``). A malformed
    state (not written by this module) is replaced by a fresh history.
    """
    try:
        return _applied(read_history(state), state, event, history_size, watched_size)
    except InvalidInput:
        return _applied(EMPTY, None, event, history_size, watched_size)


def _applied(
    history: History, state: Mapping[str, Any] | None, event: PlaybackEvent, history_size: int, watched_size: int
) -> Mapping[str, Any]:
    unchanged = state if state is not None else history.to_state()
    if event.id in history.recent_ids:
        return unchanged
    try:
        item = namespaced_item(event)
    except InvalidInput:
        return unchanged
    weight = ACTION_WEIGHTS[event.action]
    position = next((i for i, entry in enumerate(history.entries) if entry[0] == item), None)
    if position is None:
        entries = (*history.entries, (item, weight, event.ts, event.id))[-history_size:]
        watched = watched_set.with_item(history.watched, item, watched_size)
    else:
        old = history.entries[position]
        added = 0.0 if event.action == "progress" else weight
        entry = (item, old[1] + added, max(old[2], event.ts), event.id)
        entries = (*history.entries[:position], *history.entries[position + 1 :], entry)
        watched = history.watched
    recent_ids = (*history.recent_ids, event.id)[-RECENT_IDS:]
    return History(entries, watched, recent_ids).to_state()
