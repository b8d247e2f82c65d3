"""What the page shows, in memory and bounded: one card per input, dead letters, figures.

A card gathers the results of one input entity: an upload (``uploads``: its image, tags,
detected objects, artwork, enhanced images, translation), an audio clip (``audio``: its
player, transcript, translation), a user's recommendations in one catalogue (``users``:
the list and the history that made it), or the latest result of any other kind
(``other``). Each section keeps its ``SECTION_LIMITS`` most recently changed cards; dead
letters keep the last ``DEAD_LETTER_LIMIT``. Every change takes the next change number (``seq``), so a browser
asks for what changed since the number it has: however many results arrive between two
updates, one update holds at most the bounded board.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from streamproc.ui.media import Media, MediaCache
from streamproc.ui.stats import PluginStats

SECTION_LIMITS = {"uploads": 24, "audio": 12, "users": 24, "other": 24}
DEAD_LETTER_LIMIT = 100
HISTORY_SHOWN = 10
ITEMS_SHOWN = 10
IMAGES_SHOWN = 8
MAX_IMAGE_CHARS = 1_000_000
"""A result's inline image longer than this (base64) is not sent to the page, only counted."""
OBJECTS_SHOWN = 20
MAX_TEXT = 2000
BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
DEAD_LETTER_FIELDS = ("event_id", "event_type", "stage", "plugin", "topic", "partition", "offset", "refused_ts")


class Board:
    """Cards, dead letters and per-plugin figures, with change numbers."""

    def __init__(self, media: MediaCache | None = None) -> None:
        self.media = media or MediaCache()
        self.stats = PluginStats()
        self.seq = 0
        self.results_read = 0
        self.sources: dict[str, str] = {}
        self._cards: dict[str, OrderedDict[str, dict[str, Any]]] = {s: OrderedDict() for s in SECTION_LIMITS}
        self._dead_letters: deque[dict[str, Any]] = deque(maxlen=DEAD_LETTER_LIMIT)
        self._history_wanted: dict[str, tuple[str, str]] = {}

    def add_result(self, record: Mapping[str, Any]) -> None:
        """Put one result record (as the worker writes it to the feeds) on its card."""
        kind, key, plugin = str(record.get("kind")), str(record.get("key")), str(record.get("plugin"))
        body = record.get("body") if isinstance(record.get("body"), Mapping) else {}
        event_ts, result_ts = _int(record.get("event_ts")), _int(record.get("result_ts"))
        self.results_read += 1
        self.stats.add(plugin, event_ts, result_ts)
        section, card_id = self._place(kind, key, str(record.get("event_id")), body)
        part = {"plugin": plugin, "model_version": record.get("model_version"), "result_ts": result_ts}
        part.update(_part(kind, body))
        card = self._card(section, card_id, key, str(record.get("event_id")))
        if kind == "transcript":
            card["parts"].update(self._adopt_translation(key, card["event_id"]))
        card["parts"][kind] = part
        if section == "users":
            media = body.get("media")
            state_key = f"{media}:{key}" if media else key
            self._history_wanted[card_id] = (plugin, state_key)

    def add_dead_letter(self, letter: Mapping[str, Any]) -> None:
        """Show one dead letter (as the worker writes it to the dead-letter topic); its
        original is never sent to the page."""
        shown = {name: letter.get(name) for name in DEAD_LETTER_FIELDS}
        shown["reason"] = _text(letter.get("reason"))
        self.seq += 1
        shown["seq"] = self.seq
        self._dead_letters.append(shown)

    def add_media(self, section: str, key: str, media: Media) -> None:
        """Keep an input's image or clip; its card, if shown, now links to it."""
        self.media.put(section, key, media)
        card = self._cards[section].get(key)
        if card is not None and card["event_id"] == media.event_id:
            self._touch(section, key, card)

    def history_wanted(self) -> dict[str, tuple[str, str]]:
        """Recommendation cards whose history to read: card id -> (plugin, state key). Drained."""
        wanted, self._history_wanted = self._history_wanted, {}
        return {card_id: where for card_id, where in wanted.items() if card_id in self._cards["users"]}

    def set_history(self, card_id: str, state: Mapping[str, Any] | None) -> None:
        """Show the latest entries of a plugin state's ``entries`` (``[item, weight, ts,
        event id]``, the recommender's history) on the card."""
        card = self._cards["users"].get(card_id)
        if card is None:
            return
        entries = state.get("entries") if isinstance(state, Mapping) else None
        rows = [e for e in entries if isinstance(e, list) and len(e) >= 3] if isinstance(entries, list) else []
        rows.sort(key=lambda e: _int(e[2]), reverse=True)
        card["history"] = [
            {"item": str(e[0]), "weight": e[1] if isinstance(e[1], int | float) else None, "ts": _int(e[2])}
            for e in rows[:HISTORY_SHOWN]
        ]
        self._touch("users", card_id, card)

    def set_source(self, name: str, status: str) -> None:
        """How a reader is doing (``connected``, ``waiting for topic x``, an error), shown on the page."""
        self.sources[name] = status

    def changes_since(self, seq: int, now_ms: int | None = None) -> dict[str, Any]:
        """Cards and dead letters changed after change number ``seq`` (oldest change first),
        the figures, and the change number the browser has after applying them."""
        cards = [
            {**card, "section": section, "media": self._media_url(section, card)}
            for section, cards in self._cards.items()
            for card in cards.values()
            if card["seq"] > seq
        ]
        cards.sort(key=lambda c: c["seq"])
        return {
            "seq": self.seq,
            "cards": cards,
            "dead_letters": [d for d in self._dead_letters if d["seq"] > seq],
            "stats": self.stats.summary(now_ms if now_ms is not None else int(time.time() * 1000)),
            "results_read": self.results_read,
            "sources": dict(self.sources),
            "limits": {**SECTION_LIMITS, "dead_letters": DEAD_LETTER_LIMIT},
        }

    def _place(self, kind: str, key: str, event_id: str, body: Mapping[str, Any]) -> tuple[str, str]:
        """The section and card id a result goes to."""
        if kind in ("tags", "artwork", "enhance", "objects"):
            return "uploads", key
        if kind == "transcript":
            return "audio", key
        if kind == "translation":
            audio = self._cards["audio"].get(key)
            return ("audio", key) if audio is not None and audio["event_id"] == event_id else ("uploads", key)
        if kind == "recommendations":
            media = body.get("media")
            return "users", f"{media}:{key}" if media else key
        return "other", f"{kind}:{key}"

    def _adopt_translation(self, key: str, event_id: str) -> dict[str, Any]:
        """The translation of a transcript read before the transcript itself (feeds are read
        side by side), taken off the upload card it was put on for want of an audio card."""
        stray = self._cards["uploads"].get(key)
        if stray is None or stray["event_id"] != event_id or set(stray["parts"]) != {"translation"}:
            return {}
        del self._cards["uploads"][key]
        return stray["parts"]

    def _card(self, section: str, card_id: str, key: str, event_id: str) -> dict[str, Any]:
        """The card, new when the entity's input changed (a new event id), and touched."""
        cards = self._cards[section]
        card = cards.get(card_id)
        if card is None or (section != "users" and card["event_id"] != event_id):
            card = {"id": card_id, "key": key, "event_id": event_id, "parts": {}, "seq": 0}
            if section == "users" and card_id in cards:
                card["history"] = cards[card_id].get("history", [])
            cards[card_id] = card
        card["event_id"] = event_id
        self._touch(section, card_id, card)
        while len(cards) > SECTION_LIMITS[section]:
            cards.popitem(last=False)
        return card

    def _touch(self, section: str, card_id: str, card: dict[str, Any]) -> None:
        self.seq += 1
        card["seq"] = self.seq
        self._cards[section].move_to_end(card_id)

    def _media_url(self, section: str, card: Mapping[str, Any]) -> str | None:
        media = self.media.get(section, card["key"])
        if media is None or media.event_id != card["event_id"]:
            return None
        return f"/media/{section}/{quote(card['key'], safe='')}?event={quote(media.event_id, safe='')}"


def _part(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """What the page shows of a result body, by kind; other kinds: the body as short JSON text."""
    if kind == "tags":
        tags = body.get("tags") if isinstance(body.get("tags"), list) else []
        return {
            "label": _text(body.get("label")),
            "in_distribution": body.get("in_distribution"),
            "rejected_reason": _text(body.get("rejected_reason")),
            "tags": [{"name": _text(t.get("name") or t.get("label")), "p": t.get("probability")} for t in tags[:5]],
        }
    if kind == "artwork":
        return {"category": _text(body.get("category")), "seed": body.get("seed"), **_images(body)}
    if kind == "enhance":
        return {
            "source": _text(body.get("source")),
            "scale": _number(body.get("scale")),
            "width": _number(body.get("width")),
            "height": _number(body.get("height")),
            "category": _text(body.get("category")),
            **_images(body),
        }
    if kind == "objects":
        width, height = _number(body.get("width")), _number(body.get("height"))
        found = body.get("objects") if isinstance(body.get("objects"), list) else []
        drawable = (width or 0) > 0 and (height or 0) > 0
        objects = [shown for shown in map(_object, found) if shown is not None] if drawable else []
        return {"width": width, "height": height, "found": len(objects), "objects": objects[:OBJECTS_SHOWN]}
    if kind == "transcript":
        return {
            key: body.get(key) if key in ("rejected", "confidence", "duration_s") else _text(body.get(key))
            for key in ("text", "rejected", "reason", "confidence", "duration_s")
        }
    if kind == "translation":
        fields = body.get("fields") if isinstance(body.get("fields"), Mapping) else {}
        return {
            "source_language": _text(body.get("source_language")),
            "target_language": _text(body.get("target_language")),
            "backend": _text(body.get("backend")),
            "fields": {str(k): _text(v) for k, v in fields.items()},
            "truncated": body.get("truncated"),
        }
    if kind == "recommendations":
        items = body.get("items") if isinstance(body.get("items"), list) else []
        return {
            "media": _text(body.get("media")),
            "source": _text(body.get("source")),
            "unknown_items": body.get("unknown_items"),
            "items": [
                {"item": _text(i.get("item_id")), "score": i.get("score")}
                for i in items[:ITEMS_SHOWN]
                if isinstance(i, Mapping)
            ],
        }
    return {"json": _text(json.dumps(body, ensure_ascii=False, default=str))}


def _images(body: Mapping[str, Any]) -> dict[str, Any]:
    """A body's ``images`` (base64, ``format`` png or jpeg) as ``data:`` URLs, at most
    ``IMAGES_SHOWN``; what is not base64 never becomes a source, and images longer than
    ``MAX_IMAGE_CHARS`` are left out and counted in ``images_left_out``."""
    images = body.get("images") if isinstance(body.get("images"), list) else []
    fmt = "png" if body.get("format", "png") == "png" else "jpeg"
    valid = [i for i in images[:IMAGES_SHOWN] if isinstance(i, str) and BASE64.match(i)]
    kept = [f"data:image/{fmt};base64,{i}" for i in valid if len(i) <= MAX_IMAGE_CHARS]
    return {"images": kept, "images_left_out": len(valid) - len(kept)}


def _object(found: Any) -> dict[str, Any] | None:
    """One detected object (``label``, ``score``, ``box`` [x0, y0, x1, y1] in the upload's
    pixels) as the page draws it, or ``None`` without a box of four numbers. A box the
    detector rejected (``in_distribution`` false, as the tagger says it of a whole image)
    keeps its ``rejected_reason``."""
    if not isinstance(found, Mapping):
        return None
    box = found.get("box")
    if not (isinstance(box, list) and len(box) == 4 and all(_number(v) is not None for v in box)):
        return None
    rejected = found.get("in_distribution") is False
    return {
        "label": _text(found.get("label")),
        "score": _number(found.get("score")),
        "box": box,
        "rejected": rejected,
        "reason": _text(found.get("rejected_reason")) if rejected else None,
    }


def _number(value: Any) -> int | float | None:
    """``value`` when it is a finite number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0
