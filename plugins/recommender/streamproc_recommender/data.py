"""Interaction data of the two catalogs and the leave-last-out split.

- ``video``: MovieLens-100k, read from the ``recbole`` 1.2.1 wheel (the wheel is located
  with ``importlib.util.find_spec`` and never imported). Every rating is an interaction.
- ``music``: a SYNTHETIC catalog and listening log generated here, deterministically from
  a seed: genres hold artists, artists hold ordered albums, and users listen in sessions
  that follow an album in order and drift to related artists of their favourite genres.

Each user's interactions are ordered by a stable sort on ``(timestamp, item id)``: equal
timestamps are frequent in MovieLens and the order among them is by ascending item id
(numeric for MovieLens). The split is leave-last-out: the last item of each user is the
test target, the second last the validation target, and everything before is training.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MEDIA = ("video", "music")
RECBOLE_PIP = "pip install --no-deps recbole==1.2.1"
MUSIC_SEED = 20240501


class DataUnavailable(RuntimeError):
    """An offline data set is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Catalog:
    """One media catalog: its items and each user's time-ordered interactions.

    ``items`` are namespaced ids (``"video:242"``) in vocabulary order; ``sequences`` maps
    a user id to that user's items, oldest first, each item at most once.
    """

    media: str
    items: tuple[str, ...]
    sequences: dict[str, tuple[str, ...]]
    source: str

    def train_sequences(self) -> dict[str, tuple[str, ...]]:
        """Each user's interactions without the validation and test targets."""
        return {user: seq[:-2] for user, seq in self.sequences.items()}

    def holdout(self, split: str) -> list[tuple[tuple[str, ...], str]]:
        """``(history, target)`` per user for ``split`` ``"valid"`` or ``"test"``.

        The history is everything before the target: for ``"test"`` it includes the
        validation item, as it would at serving time.
        """
        if split not in ("valid", "test"):
            raise ValueError(f"split: 'valid' or 'test', got {split!r}")
        cut = 2 if split == "valid" else 1
        return [(seq[:-cut], seq[-cut]) for seq in self.sequences.values()]


def movielens_dir() -> Path:
    """The ``ml-100k`` folder inside the installed ``recbole`` wheel, without importing it."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailable(
            f"MovieLens-100k is read from the recbole wheel, which is not installed: run `{RECBOLE_PIP}`"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    if not (folder / "ml-100k.inter").is_file():
        raise DataUnavailable(f"{folder}/ml-100k.inter is missing: reinstall with `{RECBOLE_PIP}`")
    return folder


def load_movielens() -> Catalog:
    """MovieLens-100k as the ``video`` catalog (943 users, 1,682 items, 100,000 ratings)."""
    path = movielens_dir() / "ml-100k.inter"
    events: dict[str, list[tuple[float, int]]] = {}
    items: set[int] = set()
    with path.open(encoding="utf-8") as lines:
        header = next(lines).rstrip("\n").split("\t")
        col = {name.split(":")[0]: i for i, name in enumerate(header)}
        for line in lines:
            fields = line.rstrip("\n").split("\t")
            item = int(fields[col["item_id"]])
            events.setdefault(fields[col["user_id"]], []).append((float(fields[col["timestamp"]]), item))
            items.add(item)
    sequences = {
        user: tuple(f"video:{item}" for _, item in sorted(pairs))
        for user, pairs in sorted(events.items(), key=lambda kv: int(kv[0]))
    }
    return Catalog(
        media="video",
        items=tuple(f"video:{item}" for item in sorted(items)),
        sequences=sequences,
        source="MovieLens-100k (GroupLens, research use) via the recbole 1.2.1 wheel",
    )


GENRES = ("rock", "jazz", "pop", "folk", "metal", "soul", "techno", "classical")
ARTISTS_PER_GENRE = 6
ALBUMS_PER_ARTIST = 2
TRACKS_PER_ALBUM = 8
MUSIC_USERS = 800


def generate_music(seed: int = MUSIC_SEED) -> Catalog:
    """The SYNTHETIC ``music`` catalog and listening log, identical for the same seed.

    Structure: 8 genres x 6 artists x 2 albums x 8 tracks (768 tracks, ids
    ``"music:<genre>-<artist>-<album><track>"``). Artists have Zipf-like popularity. Each
    user prefers 1 to 3 genres. A session picks a genre by preference, an artist by
    popularity (and, half the time, the artist next to the previous one in that genre),
    and plays the artist's unheard tracks in album order for 3 to 8 tracks; one play in
    ten is a random popular track instead. A user hears each track at most once.
    """
    rng = np.random.default_rng(seed)
    tracks = [
        [
            [f"music:{genre}-{artist:02d}-{'ab'[album]}{track:02d}" for track in range(1, TRACKS_PER_ALBUM + 1)]
            for album in range(ALBUMS_PER_ARTIST)
        ]
        for genre in GENRES
        for artist in range(1, ARTISTS_PER_GENRE + 1)
    ]
    artist_pop = 1.0 / np.arange(1, ARTISTS_PER_GENRE + 1) ** 0.8
    artist_pop /= artist_pop.sum()
    catalog = [t for artist in tracks for album in artist for t in album]
    global_pop = np.repeat(np.tile(artist_pop, len(GENRES)), ALBUMS_PER_ARTIST * TRACKS_PER_ALBUM)
    global_pop /= global_pop.sum()

    sequences: dict[str, tuple[str, ...]] = {}
    for user in range(1, MUSIC_USERS + 1):
        n_genres = int(rng.integers(1, 4))
        genres = rng.choice(len(GENRES), size=n_genres, replace=False)
        preference = rng.dirichlet(np.ones(n_genres))
        length = int(rng.integers(20, 90))
        heard: list[str] = []
        heard_set: set[str] = set()
        artist = -1
        while len(heard) < length:
            genre = int(genres[rng.choice(n_genres, p=preference)])
            if artist >= 0 and artist // ARTISTS_PER_GENRE == genre and rng.random() < 0.5:
                artist = genre * ARTISTS_PER_GENRE + (artist + 1) % ARTISTS_PER_GENRE
            else:
                artist = genre * ARTISTS_PER_GENRE + int(rng.choice(ARTISTS_PER_GENRE, p=artist_pop))
            unheard = [t for album in tracks[artist] for t in album if t not in heard_set]
            for track in unheard[: int(rng.integers(3, 9))]:
                if rng.random() < 0.1:
                    track = catalog[int(rng.choice(len(catalog), p=global_pop))]
                if track not in heard_set:
                    heard.append(track)
                    heard_set.add(track)
        sequences[str(user)] = tuple(heard[:length])
    return Catalog(
        media="music",
        items=tuple(catalog),
        sequences=sequences,
        source=f"SYNTHETIC music catalog and listening log (data.generate_music, seed {seed})",
    )


def load_catalogs() -> dict[str, Catalog]:
    """Both catalogs, keyed by media, in vocabulary order (``video`` then ``music``)."""
    return {"video": load_movielens(), "music": generate_music()}
