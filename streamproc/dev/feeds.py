"""Reading results back from Redis: live feeds (``streamproc tail``) and latest look-ups
(``streamproc get``), printed compactly: long strings elided, images (base64 PNG/JPEG in a
result body) written once to a folder and shown as their format, size and path."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path
from typing import Any

import redis

from streamproc.dev.stack import cache_dir
from streamproc.engine.keys import FEED_FIELD, RedisKeys

MAX_SHOWN_STRING = 160
"""Longer strings (not images) are shown as their length: a rejection reason fits, a blob does not."""
IMAGE_PREFIXES = {"iVBORw0KGgo": "png", "/9j/": "jpeg"}
"""Base64 openings of the PNG signature and the JPEG start-of-image marker."""


class FeedReader:
    """Reads result records from the Redis feeds of the given kinds (all kinds when none).

    Keeps one cursor per feed; feeds that appear later are picked up from their start
    (``from_start``) or from the moment they are found.
    """

    def __init__(
        self, client: redis.Redis, prefix: str, kinds: list[str] | None = None, from_start: bool = True
    ) -> None:
        self.client = client
        self.keys = RedisKeys(prefix)
        self.kinds = kinds
        self.from_start = from_start
        self._cursors: dict[str, str] = {}

    def poll(self, block_ms: int = 0) -> list[dict[str, Any]]:
        """Records added since the last poll, waiting up to ``block_ms`` when there are none."""
        names = (
            [self.keys.feed(k) for k in self.kinds]
            if self.kinds
            else [key.decode() for key in self.client.scan_iter(self.keys.feed_pattern())]
        )
        for name in names:
            self._cursors.setdefault(name, "0" if self.from_start else "$")
        if not self._cursors:
            return []
        answer = self.client.xread(self._cursors, count=1000, block=block_ms or None)
        records = []
        for stream, entries in answer or []:
            for entry_id, fields in entries:
                self._cursors[stream.decode()] = entry_id.decode()
                records.append(json.loads(fields[FEED_FIELD.encode()]))
        return records


def latest(client: redis.Redis, prefix: str, kind: str, key: str) -> dict[str, Any] | None:
    """The latest result record of ``kind`` for entity ``key``, or ``None`` (none, or expired)."""
    raw = client.get(RedisKeys(prefix).latest(kind, key))
    return None if raw is None else json.loads(raw)


def summarize(record: dict[str, Any], image_dir: Path | None = None) -> str:
    """One line for a result record: plugin, key and a compact body (long strings elided,
    images saved under ``image_dir`` and shown as ``<png 1.2 kB: path>``)."""
    body = json.dumps(compact(record.get("body", {}), image_dir), ensure_ascii=False)
    if len(body) > 400:
        body = body[:397] + "..."
    return f"[{record.get('plugin')}] {record.get('kind')} {record.get('key')}: {body}"


def compact(value: Any, image_dir: Path | None = None) -> Any:
    """``value`` with images replaced by their format, size and saved path (under
    ``image_dir``, default ``$STREAMPROC_CACHE/images``), and other strings over
    ``MAX_SHOWN_STRING`` characters by their length."""
    if isinstance(value, str):
        image = _save_image(value, image_dir or cache_dir() / "images")
        return image or (f"<{len(value)} chars>" if len(value) > MAX_SHOWN_STRING else value)
    if isinstance(value, list):
        return [compact(v, image_dir) for v in value[:5]] + (["..."] if len(value) > 5 else [])
    if isinstance(value, dict):
        return {k: compact(v, image_dir) for k, v in value.items()}
    return value


def _save_image(text: str, image_dir: Path) -> str | None:
    """Save a base64 PNG/JPEG under its content hash (once); its description, or ``None``."""
    fmt = next((f for prefix, f in IMAGE_PREFIXES.items() if text.startswith(prefix)), None)
    if fmt is None:
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    path = image_dir / f"{hashlib.sha256(data).hexdigest()[:16]}.{'jpg' if fmt == 'jpeg' else fmt}"
    if not path.exists():
        image_dir.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return f"<{fmt} {len(data) / 1000:.1f} kB: {path}>"
