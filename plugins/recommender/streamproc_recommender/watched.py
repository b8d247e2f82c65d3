"""The set of every item a user has watched in one catalog: compact, bounded, JSON-safe.

An item is stored as a 32-bit hash of its namespaced platform id (the first 4 bytes of
BLAKE2b, little-endian), never as Python's ``hash()``, which is salted per process: the
same history gives the same state in every worker. The set is a JSON string, the base64
of the packed ``uint32`` hashes in the order the items were first watched: 4 bytes per
item, 5.33 characters of JSON. At most ``cap`` items are kept; past it the items watched
first are forgotten (and may be recommended again).

No false negatives: an item that was added (and not forgotten) is always a member. False
positives come from hash collisions only: an unwatched item is taken for watched with
probability ``n / 2**32`` for ``n`` watched items (2.3e-6 at the default cap of 10,000),
which only removes that item from one user's candidates.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

import numpy as np

from streamproc.errors import InvalidInput

EMPTY = ""
HASH_DTYPE = np.dtype("<u4")


def item_hash(item: str) -> int:
    """The stable 32-bit hash of a namespaced item id (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(item.encode("utf-8"), digest_size=4).digest(), "little")


def item_hashes(items: list[str]) -> np.ndarray:
    """``item_hash`` of each item, as a ``uint32`` array."""
    return np.fromiter((item_hash(item) for item in items), dtype=HASH_DTYPE, count=len(items))


def decode(encoded: str) -> np.ndarray:
    """The hashes of an encoded set, oldest first. Raises ``InvalidInput`` if malformed."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"state: 'watched' is not base64 ({exc})") from exc
    if len(raw) % HASH_DTYPE.itemsize:
        raise InvalidInput(f"state: 'watched' holds {len(raw)} bytes, not a multiple of 4")
    return np.frombuffer(raw, dtype=HASH_DTYPE)


def encode(hashes: np.ndarray) -> str:
    """The JSON string of a hash array (see ``decode``)."""
    return base64.b64encode(np.ascontiguousarray(hashes, dtype=HASH_DTYPE).tobytes()).decode("ascii")


def with_item(encoded: str, item: str, cap: int) -> str:
    """The set with ``item`` added (the same string when it is already a member), keeping
    the last ``cap`` items. Pure. Raises ``InvalidInput`` on a malformed set."""
    hashes = decode(encoded)
    value = item_hash(item)
    if bool((hashes == value).any()):
        return encoded
    return encode(np.append(hashes, np.asarray([value], dtype=HASH_DTYPE))[-cap:])
