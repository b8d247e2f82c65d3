"""Reading results back from Redis: live feeds (``streamproc tail``) and latest look-ups."""

from __future__ import annotations

import json
from typing import Any

import redis

from streamproc.engine.keys import FEED_FIELD, RedisKeys

MAX_SHOWN_STRING = 60


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


def summarize(record: dict[str, Any]) -> str:
    """One line for a result record: plugin, key and a compact body (long strings elided)."""
    body = json.dumps(_compact(record.get("body", {})), ensure_ascii=False)
    if len(body) > 160:
        body = body[:157] + "..."
    return f"[{record.get('plugin')}] {record.get('kind')} {record.get('key')}: {body}"


def _compact(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_SHOWN_STRING:
        return f"<{len(value)} chars>"
    if isinstance(value, list):
        return [_compact(v) for v in value[:5]] + (["..."] if len(value) > 5 else [])
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    return value
