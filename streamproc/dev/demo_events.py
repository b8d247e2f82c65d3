"""Demo events of every type, made from data on this machine, plus a few bad ones.

Playback: a handful of users watching MovieLens item ids and listening to music items.
Upload: Fashion-MNIST test images (Debian ``dataset-fashion-mnist``) upscaled to PNG, with
English titles, some asking for artwork (which the enhancer then upscales), some a
picture of several items side by side (for the detector). Audio: spoken media commands
synthesised with ``espeak-ng``. Bad: malformed JSON, an unknown type, a missing field, a corrupt image.
Sources missing on the machine are skipped with a note, never faked.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from streamproc.media import encode_wav

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
TITLES = (
    "My new summer outfit",
    "Vintage coat from the market",
    "Running shoes for the marathon",
    "A bag for every day",
    "Evening dress for the gala",
)
# Music items of the recommender's catalog (genre-artist-track), so demo listening is recognised.
OUT_OF_SCOPE_PREFIX = "out-of-scope-"
MUSIC_ITEMS = tuple(f"{genre}-01-a0{n}" for genre in ("rock", "jazz", "pop", "classical") for n in range(1, 9))
COMMANDS = ("play", "pause", "next", "volume up", "play episode seven", "skip ten seconds")


@dataclass(frozen=True)
class DemoRecord:
    """One record to produce: its key and value bytes, and the event id when valid."""

    key: bytes | None
    value: bytes
    event_id: str | None
    event_type: str


def demo_records(count: int, seed: int = 7, bad: bool = True, t0: int | None = None) -> Iterator[DemoRecord]:
    """``count`` records mixing all types (half playback), then the bad ones.

    Event times start at ``t0`` (epoch ms, default now) and advance 1 ms per event.
    """
    rng = random.Random(seed)
    images = fashion_images(max(1, count // 4), rng)
    clips = _spoken_commands(rng, max(1, min(6, count // 8)))
    t0 = int(time.time() * 1000) if t0 is None else t0
    for i in range(count):
        ts = t0 + i
        roll = i % 4
        if roll == 3 and clips:
            _text, wav = clips[i % len(clips)]
            doc = {
                "id": f"demo-audio-{i}",
                "type": "audio",
                "ts": ts,
                "user_id": f"u{i % 5}",
                "audio_id": f"a{i}",
                "audio": base64.b64encode(wav).decode(),
                "language": "en",
            }
        elif roll == 2 and images:
            label, png = images[i % len(images)]
            if i % 8 == 6:
                png = several_items([images[(i + k) % len(images)][1] for k in range(3)])
            doc = {
                "id": f"demo-upload-{i}",
                "type": "upload",
                "ts": ts,
                "user_id": f"u{i % 5}",
                "upload_id": f"up{i}",
                "image": base64.b64encode(png).decode(),
                "title": rng.choice(TITLES),
                "description": "Photo taken at home.",
                "language": "en",
            }
            if i % 8 == 2:
                doc["artwork"] = {"category": FASHION_CLASSES[label], "count": 2, "seed": i}
        else:
            media = "music" if i % 3 == 0 else "video"
            item = rng.randint(1, 200) if media == "video" else rng.choice(MUSIC_ITEMS)
            doc = {
                "id": f"demo-play-{i}",
                "type": "playback",
                "ts": ts,
                "user_id": f"u{i % 5}",
                "item_id": f"{item}",
                "action": rng.choice(("start", "complete", "like", "skip")),
                "position_s": 0.0,
                "duration_s": 3600.0 if media == "video" else 200.0,
                "media": media,
            }
        key = doc.get("audio_id") or doc.get("upload_id") or doc["user_id"]
        yield DemoRecord(key.encode(), json.dumps(doc).encode(), doc["id"], doc["type"])
    if bad:
        yield from _bad_records(t0)
        yield from out_of_scope_records(t0, rng)


def out_of_scope_records(ts: int, rng: random.Random) -> Iterator[DemoRecord]:
    """Valid events the models were not made for, each answered with a rejection and its
    reason (ids start with ``OUT_OF_SCOPE_PREFIX``): a photo that is noise, not clothing,
    titled in Spanish (tagger: unknown; translator: not English, passed through); a clip
    of noise, not speech (speech: rejected); an item no catalogue knows (recommender:
    counted as unknown)."""
    noise = np.random.default_rng(rng.randrange(2**32))
    image = Image.fromarray(noise.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    png = io.BytesIO()
    image.save(png, format="PNG")
    envelope = {"ts": ts, "user_id": "u-scope"}
    upload = {
        "id": f"{OUT_OF_SCOPE_PREFIX}noise-photo",
        "type": "upload",
        "upload_id": "scope-up",
        "image": base64.b64encode(png.getvalue()).decode(),
        "title": "Atardecer sobre el lago",
        "language": "en",
    }
    audio = {
        "id": f"{OUT_OF_SCOPE_PREFIX}noise-clip",
        "type": "audio",
        "audio_id": "scope-a",
        "audio": base64.b64encode(encode_wav((0.3 * noise.standard_normal(16_000)).astype(np.float32))).decode(),
    }
    play = {
        "id": f"{OUT_OF_SCOPE_PREFIX}unknown-item",
        "type": "playback",
        "item_id": "tt0111161",
        "action": "complete",
        "position_s": 0.0,
        "duration_s": 8520.0,
        "media": "video",
    }
    for doc, key in ((upload, "scope-up"), (audio, "scope-a"), (play, "u-scope")):
        doc = {**envelope, **doc}
        yield DemoRecord(key.encode(), json.dumps(doc).encode(), doc["id"], doc["type"])


def _bad_records(ts: int) -> Iterator[DemoRecord]:
    yield DemoRecord(b"bad-1", b'{"id": "bad-json", "type": "playback",', None, "invalid")
    yield DemoRecord(
        b"bad-2",
        json.dumps({"id": "bad-type", "type": "telemetry", "ts": ts, "user_id": "u1"}).encode(),
        None,
        "invalid",
    )
    yield DemoRecord(
        b"bad-3",
        json.dumps(
            {
                "id": "bad-field",
                "type": "playback",
                "ts": ts,
                "user_id": "u1",
                "item_id": "5",
                "action": "rewind",
                "position_s": 0,
                "duration_s": 10,
                "media": "video",
            }
        ).encode(),
        None,
        "invalid",
    )
    corrupt = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40).decode()
    yield DemoRecord(
        b"bad-4",
        json.dumps(
            {
                "id": "bad-image",
                "type": "upload",
                "ts": ts,
                "user_id": "u1",
                "upload_id": "bad-4",
                "image": corrupt,
                "title": "broken",
            }
        ).encode(),
        "bad-image",
        "upload",
    )


def fashion_images(count: int, rng: random.Random) -> list[tuple[int, bytes]]:
    if not FASHION_MNIST.exists():
        print(f"demo: {FASHION_MNIST} missing (apt-get install dataset-fashion-mnist); no image uploads")
        return []
    raw = gzip.decompress(FASHION_MNIST.read_bytes())
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    labels = np.frombuffer(
        gzip.decompress(FASHION_MNIST.with_name("t10k-labels-idx1-ubyte.gz").read_bytes()), dtype=np.uint8, offset=8
    )
    out = []
    for index in rng.sample(range(len(pixels)), min(count, 50)):
        buffer = io.BytesIO()
        Image.fromarray(pixels[index]).resize((112, 112), Image.Resampling.BICUBIC).save(buffer, "PNG")
        out.append((int(labels[index]), buffer.getvalue()))
    return out


def several_items(pngs: list[bytes], side: int = 160, item_side: int = 44) -> bytes:
    """A PNG picture of the given item images side by side on a grey gradient (one upload
    holding several clothing items)."""
    gradient = np.linspace(70, 130, side, dtype=np.float32)
    canvas = Image.fromarray(np.tile(gradient, (side, 1)).astype(np.uint8))
    step = (side - item_side) // max(1, len(pngs) - 1)
    for k, png in enumerate(pngs):
        item = Image.open(io.BytesIO(png)).convert("L").resize((item_side, item_side), Image.Resampling.BILINEAR)
        top = 12 + (k % 2) * (side - item_side - 24)
        canvas.paste(item, (k * step, top), mask=item.point(lambda v: min(255, v * 4)))
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return buffer.getvalue()


def _spoken_commands(rng: random.Random, count: int) -> list[tuple[str, bytes]]:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        print("demo: espeak-ng missing (apt-get install espeak-ng); no audio events")
        return []
    clips = []
    for text in rng.sample(COMMANDS, min(count, len(COMMANDS))):
        done = subprocess.run([espeak, "-v", "en-us", "-s", "150", "--stdout", text], capture_output=True, check=False)
        if done.returncode == 0 and done.stdout.startswith(b"RIFF"):
            clips.append((text, fix_wav_sizes(done.stdout)))
    return clips


def fix_wav_sizes(wav: bytes) -> bytes:
    """espeak-ng writes streaming WAV headers with unknown sizes; set the real ones."""
    data_at = wav.find(b"data")
    if data_at < 0:
        return wav
    body = len(wav) - (data_at + 8)
    fixed = bytearray(wav)
    fixed[4:8] = (len(wav) - 8).to_bytes(4, "little")
    fixed[data_at + 4 : data_at + 8] = body.to_bytes(4, "little")
    return bytes(fixed)
