"""The bundled media plugins against the real stack: tagger and artwork on uploads, artwork
chained into the enhancer, the detector on pictures of several items, speech chained into
the translator on audio (subtitles), results in Redis and on output topics."""

from __future__ import annotations

import base64
import importlib.util
import json
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis
from harness import WorkerProcess, create_topics, make_settings, produce, read_topic

from streamproc.dev.demo_events import fashion_images, several_items
from streamproc.media import decode_image

pytestmark = pytest.mark.integration


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"{package} is not installed: run deploy/local/setup.sh (tagger test extra)")
    return Path(spec.submodule_search_locations[0]).joinpath(*parts)


PHOTOS = {
    "astronaut": ("skimage", "data", "astronaut.png"),
    "chelsea": ("skimage", "data", "chelsea.png"),
    "china": ("sklearn", "datasets", "images", "china.jpg"),
    "flower": ("sklearn", "datasets", "images", "flower.jpg"),
}


def upload(event_id: str, **fields) -> tuple[bytes, bytes]:
    doc = {
        "id": event_id,
        "type": "upload",
        "ts": int(time.time() * 1000),
        "user_id": "u1",
        "upload_id": event_id,
        "language": "en",
        **fields,
    }
    return event_id.encode(), json.dumps(doc).encode()


def test_real_photos_get_tags_and_artwork_requests_get_seeded_pngs(endpoints, unique, tmp_path: Path) -> None:
    settings = make_settings(endpoints, unique, {}, enabled_plugins=["tagger", "artwork"])
    create_topics(endpoints.kafka_bootstrap, settings["kafka"]["input_topics"].values())
    photos = {name: _package_file(*parts).read_bytes() for name, parts in PHOTOS.items()}
    records = [upload(name, image=base64.b64encode(data).decode(), title=name) for name, data in photos.items()]
    art = {"category": "sneaker", "count": 2, "seed": 42}
    records += [
        upload("art-1", title="art", artwork=art),
        upload("art-2", title="art again", artwork=art),
        upload("art-bad", title="art", artwork={"category": "spaceship", "count": 1, "seed": 1}),
    ]
    worker = WorkerProcess(settings, tmp_path).start()
    try:
        produce(endpoints.kafka_bootstrap, f"{unique}-upload", records)
        tags = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-tags", len(photos))
        artwork = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-artwork", 2)
        letters = read_topic(endpoints.kafka_bootstrap, f"{unique}-dlq", 1)
    finally:
        worker.terminate()
    assert {r["event_id"] for r in tags} == set(photos)
    for record in tags:
        probabilities = [t["probability"] for t in record["body"]["tags"]]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
    by_id = {r["event_id"]: r["body"] for r in artwork}
    assert by_id["art-1"]["images"] == by_id["art-2"]["images"], "the same seed must give the same bytes"
    for encoded in by_id["art-1"]["images"]:
        image = decode_image(base64.b64decode(encoded))
        assert image.size[0] >= 28
    assert [d["plugin"] for d in letters] == ["artwork"] and "spaceship" in letters[0]["reason"]
    client = redis.Redis.from_url(endpoints.redis_url)
    prefix = settings["redis"]["key_prefix"]
    latest = json.loads(client.get(f"{prefix}latest:artwork:art-1"))
    assert latest["body"]["images"] == by_id["art-1"]["images"]
    assert json.loads(client.get(f"{prefix}latest:tags:chelsea"))["plugin"] == "tagger"


def _flite(text: str, voice: str, path: Path) -> bytes:
    flite = shutil.which("flite")
    if flite is None:
        pytest.fail("flite missing: run deploy/local/setup.sh (speech plugin apt packages)")
    subprocess.run([flite, "-voice", voice, "-t", text, "-o", str(path)], check=True)
    return path.read_bytes()


def test_audio_is_transcribed_then_translated_with_the_original_event_id(endpoints, unique, tmp_path: Path) -> None:
    settings = make_settings(endpoints, unique, {}, enabled_plugins=["speech", "translator"])
    create_topics(endpoints.kafka_bootstrap, settings["kafka"]["input_topics"].values())
    phrases = {"c1": ("volume up", "rms"), "c2": ("play episode seven", "awb"), "c3": ("pause", "rms")}
    records = []
    for event_id, (text, voice) in phrases.items():
        wav = _flite(text, voice, tmp_path / f"{event_id}.wav")
        doc = {
            "id": event_id,
            "type": "audio",
            "ts": int(time.time() * 1000),
            "user_id": "u1",
            "audio_id": event_id,
            "audio": base64.b64encode(wav).decode(),
            "language": "en",
        }
        records.append((event_id.encode(), json.dumps(doc).encode()))
    worker = WorkerProcess(settings, tmp_path).start()
    try:
        produce(endpoints.kafka_bootstrap, f"{unique}-audio", records)
        transcripts = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-transcript", len(phrases))
        translations = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-translation", len(phrases))
    finally:
        worker.terminate()
    heard = {r["event_id"]: r["body"]["text"] for r in transcripts}
    assert set(heard) == set(phrases)
    correct = sum(heard[i] == text for i, (text, _) in phrases.items())
    assert correct >= 2, f"unseen voices: {heard}"
    spanish = {r["event_id"]: r["body"] for r in translations}
    assert set(spanish) == set(phrases), "each translation carries its audio event's id"
    for body in spanish.values():
        assert body["target_language"] == "es" and body["fields"]["text"]
    client = redis.Redis.from_url(endpoints.redis_url)
    prefix = settings["redis"]["key_prefix"]
    latest = json.loads(client.get(f"{prefix}latest:translation:c1"))
    assert latest["event_id"] == "c1" and latest["plugin"] == "translator"


def _scene_png() -> bytes:
    """A picture holding several Fashion-MNIST test items (the demo's composition)."""
    images = fashion_images(3, random.Random(5))
    if not images:
        pytest.fail("dataset-fashion-mnist missing: run deploy/local/setup.sh (tagger apt packages)")
    return several_items([png for _, png in images])


def test_artwork_reaches_users_enhanced_and_pictures_get_their_objects(endpoints, unique, tmp_path: Path) -> None:
    settings = make_settings(endpoints, unique, {}, enabled_plugins=["artwork", "enhancer", "detector"])
    create_topics(endpoints.kafka_bootstrap, settings["kafka"]["input_topics"].values())
    art = {"category": "dress", "count": 2, "seed": 9}
    scene = base64.b64encode(_scene_png()).decode()
    records = [upload("art-1", title="art", artwork=art), upload("scene-1", title="my clothes", image=scene)]
    worker = WorkerProcess(settings, tmp_path).start(ready_timeout_s=240)
    try:
        produce(endpoints.kafka_bootstrap, f"{unique}-upload", records)
        enhanced = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-enhance", 2, timeout_s=180)
        objects = read_topic(endpoints.kafka_bootstrap, f"{unique}-out-objects", 1, timeout_s=180)
        letters = read_topic(endpoints.kafka_bootstrap, f"{unique}-dlq", 0, timeout_s=2)
    finally:
        worker.terminate()
    assert letters == []
    by_id = {r["event_id"]: r for r in enhanced}
    assert set(by_id) == {"art-1", "scene-1"} and len(enhanced) == 2
    artwork_body = by_id["art-1"]["body"]
    assert (artwork_body["source"], artwork_body["category"], len(artwork_body["images"])) == ("artwork", "dress", 2)
    for encoded in artwork_body["images"]:
        assert min(decode_image(base64.b64decode(encoded)).size) >= 112
    assert by_id["scene-1"]["body"]["source"] == "upload"
    (found,) = objects
    assert found["event_id"] == "scene-1" and found["body"]["objects"], "the picture's items were found"
    client = redis.Redis.from_url(endpoints.redis_url)
    prefix = settings["redis"]["key_prefix"]
    latest = json.loads(client.get(f"{prefix}latest:enhance:art-1"))
    assert latest["plugin"] == "enhancer" and latest["body"]["images"] == artwork_body["images"]
    assert json.loads(client.get(f"{prefix}latest:objects:scene-1"))["body"] == found["body"]
