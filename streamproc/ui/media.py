"""The images and audio clips of recent input events, for the page's ``<img>`` and ``<audio>``.

Results do not carry their input's media; the page's readers take them from the input
topics and keep the latest per (section, key) here, least recently stored evicted first,
within a byte budget.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

MEDIA_BUDGET_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Media:
    event_id: str
    content_type: str
    data: bytes


def content_type(section: str, data: bytes) -> str | None:
    """The MIME type the browser gets for an input's bytes; ``None`` when it is neither a
    PNG/JPEG image (uploads) nor a WAV file (audio), so nothing else is ever served."""
    if section == "uploads":
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return "image/png"
        if data.startswith(b"\xff\xd8\xff"):
            return "image/jpeg"
    if section == "audio" and data.startswith(b"RIFF") and data[8:12] == b"WAVE":
        return "audio/wav"
    return None


class MediaCache:
    """The latest media per (section, key), bounded by ``budget_bytes`` in total."""

    def __init__(self, budget_bytes: int = MEDIA_BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self._items: OrderedDict[tuple[str, str], Media] = OrderedDict()
        self._bytes = 0

    def put(self, section: str, key: str, media: Media) -> None:
        """Store (replacing that key's previous media); larger than the budget: not kept."""
        self._drop((section, key))
        if len(media.data) > self.budget_bytes:
            return
        self._items[(section, key)] = media
        self._bytes += len(media.data)
        while self._bytes > self.budget_bytes:
            self._drop(next(iter(self._items)))

    def get(self, section: str, key: str) -> Media | None:
        return self._items.get((section, key))

    def _drop(self, item: tuple[str, str]) -> None:
        old = self._items.pop(item, None)
        if old is not None:
            self._bytes -= len(old.data)
