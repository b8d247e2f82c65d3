"""The live results page in a real browser, against the real stack and a running worker.

One worker with the seven bundled plugins takes the demo's events (every type, the bad
ones, the out-of-scope ones); ``streamproc ui`` serves the page; headless Chromium shows
it. A second page takes a flood of results straight into its own feeds to show the page
stays responsive at thousands of results per second.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from harness import WorkerProcess, create_topics, make_settings, password_redis, produce, read_topic, wait_for
from PIL import Image, UnidentifiedImageError

from streamproc.config import Settings
from streamproc.dev.demo_events import OUT_OF_SCOPE_PREFIX, demo_records, several_items
from streamproc.dev.stack import free_ports
from streamproc.ops.health import HealthServer
from streamproc.ops.metrics import Metrics
from streamproc.records import ResultRecord
from streamproc.ui.board import SECTION_LIMITS

pytestmark = pytest.mark.integration

BUNDLED = ("recommender", "tagger", "translator", "speech", "artwork", "enhancer", "detector")
RESULTS_BOUND_S = 150
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "ui.png"
MAX_SCREENSHOT_HEIGHT = 3600
FLOOD_RESULTS = 20_000


@dataclass
class Page:
    url: str
    settings: dict[str, Any]
    worker: WorkerProcess | None
    process: subprocess.Popen[bytes]
    produced_at: float = 0.0
    """``time.monotonic()`` when the events were sent."""
    pictures: tuple[str, ...] = ()
    """The upload ids whose image is the demo's picture of several items."""
    noise_photo: str = ""
    """The upload id of the demo's photo of noise (out of scope for every model)."""


def start_ui(settings: dict[str, Any], workdir: Path) -> Page:
    """``streamproc ui`` in a child process on a free port, once it answers."""
    config = workdir / f"ui-{uuid.uuid4().hex[:6]}.yaml"
    config.write_text(yaml.safe_dump(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_") or k == "STREAMPROC_CACHE"}
    env["STREAMPROC_CONFIG_FILE"] = str(config)
    port = free_ports(1)[0]
    log = (workdir / f"ui-{port}.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamproc", "ui", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    url = f"http://127.0.0.1:{port}/"
    wait_for(lambda: _status(url) == 200 or process.poll() is not None, 60, "the page to answer")
    assert process.poll() is None, (workdir / f"ui-{port}.log").read_text()
    return Page(url, settings, None, process)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status
    except OSError:
        return 0


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def live(endpoints: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    """The page of a running worker that took the demo's events, good and bad."""
    name = f"ui{uuid.uuid4().hex[:8]}"
    workdir = tmp_path_factory.mktemp("ui")
    settings = make_settings(endpoints, name, {}, enabled_plugins=list(BUNDLED))
    topics = settings["kafka"]["input_topics"]
    create_topics(endpoints.kafka_bootstrap, topics.values())
    page = start_ui(settings, workdir)
    page.worker = WorkerProcess(settings, workdir)
    try:
        page.worker.start(ready_timeout_s=240)
        by_topic: dict[str, list[tuple[bytes | None, bytes]]] = {}
        for record in demo_records(16, bad=True):
            topic = topics.get(record.event_type, topics["playback"])
            by_topic.setdefault(topic, []).append((record.key, record.value))
            if record.event_type == "upload" and _is_several_items_picture(json.loads(record.value)):
                page.pictures += (json.loads(record.value)["upload_id"],)
            if record.event_id == f"{OUT_OF_SCOPE_PREFIX}noise-photo":
                page.noise_photo = json.loads(record.value)["upload_id"]
        page.produced_at = time.monotonic()
        for topic, records in by_topic.items():
            produce(endpoints.kafka_bootstrap, topic, records)
        yield page
    finally:
        page.worker.kill()
        stop(page.process)


def _is_several_items_picture(upload: dict[str, Any]) -> bool:
    """Whether a demo upload's image is ``several_items``'s square (single items are
    smaller; the corrupt image of the bad events does not decode)."""
    side = inspect.signature(several_items).parameters["side"].default
    try:
        with Image.open(io.BytesIO(base64.b64decode(upload.get("image", "")))) as image:
            return image.size == (side, side)
    except UnidentifiedImageError:
        return False


def shown(browser: Any, script: str, *arguments: Any) -> Any:
    return browser.execute_script(script, *arguments)


def test_every_bundled_plugins_results_appear_on_the_page_within_the_bound(browser: Any, live: Page) -> None:
    browser.get(live.url)
    plugins: set[str] = set()

    def every_plugin_shown() -> bool:
        plugins.update(shown(browser, "return [...document.querySelectorAll('.part')].map(p => p.dataset.plugin)"))
        return plugins >= set(BUNDLED)

    wait_for(every_plugin_shown, RESULTS_BOUND_S, f"results of {BUNDLED} on the page (shown: {sorted(plugins)})")
    print(f"every bundled plugin's results on the page {time.monotonic() - live.produced_at:.1f} s after the events")
    assert shown(browser, "return document.getElementById('status').textContent") == "live"
    rows = shown(browser, "return [...document.querySelectorAll('#stats-rows tr')].map(r => r.dataset.plugin)")
    assert set(rows) >= set(BUNDLED), "every plugin has its throughput and latency row"


def test_uploads_show_their_image_tags_and_artwork_that_decodes(browser: Any, live: Page) -> None:
    browser.get(live.url)
    decoded = "return [...document.querySelectorAll('{}')].filter(i => i.complete && i.naturalWidth > 0).length"
    wait_for(lambda: shown(browser, decoded.format("img.artwork")) > 0, RESULTS_BOUND_S, "an artwork image decoded")
    wait_for(lambda: shown(browser, decoded.format("img.upload-image")) > 0, 60, "an uploaded image decoded")
    width = shown(browser, "return document.querySelector('img.artwork').naturalWidth")
    assert width >= 28
    rejected = "return [...document.querySelectorAll('.part-tags .rejected')].map(e => e.textContent)"
    wait_for(lambda: shown(browser, rejected), 60, "the tagger's rejection of the noise photo")
    assert all(text.startswith("rejected: ") and len(text) > len("rejected: ") for text in shown(browser, rejected))


def test_enhanced_images_decode_at_their_scale_beside_their_input(browser: Any, live: Page) -> None:
    browser.get(live.url)
    widths = "return [...document.querySelectorAll('.part-enhance[data-source={}] img.enhanced')].filter(i => i.complete && i.naturalWidth > 0).map(i => i.naturalWidth)"  # noqa: E501
    wait_for(lambda: shown(browser, widths.format("artwork")), RESULTS_BOUND_S, "enhanced artwork decoded")
    assert min(shown(browser, widths.format("artwork"))) >= 112, "artwork reaches users at 112 px or more"
    pairs = """return [...document.querySelectorAll('.part-enhance[data-source=upload] .pair')]
        .map(p => [p.querySelector('img.enhance-input'), p.querySelector('img.enhanced')])
        .filter(([i, o]) => i && o && i.complete && o.complete && i.naturalWidth > 0 && o.naturalWidth > 0)
        .map(([i, o]) => [i.naturalWidth, o.naturalWidth, Number(o.dataset.scale)])"""
    wait_for(lambda: shown(browser, pairs), 60, "an enhanced upload decoded beside its input")
    for input_width, output_width, scale in shown(browser, pairs):
        assert scale in (2, 4) and output_width == input_width * scale


def test_a_picture_of_several_items_shows_labelled_boxes_over_it(browser: Any, live: Page) -> None:
    assert live.pictures, "the demo sends pictures of several items"
    browser.get(live.url)
    boxes = """return [...document.querySelectorAll('#section-uploads [data-card-id]')]
        .filter(c => arguments[0].includes(c.dataset.cardId))
        .flatMap(c => [...c.querySelectorAll('.part-objects .detections')])
        .filter(f => f.querySelector('img.detected-image')?.naturalWidth > 0)
        .flatMap(f => [...f.querySelectorAll('.box')].map(b => {
          const [box, frame] = [b.getBoundingClientRect(), f.getBoundingClientRect()];
          const inside = box.width > 0 && box.height > 0 && box.left >= frame.left - 1 && box.top >= frame.top - 1
            && box.right <= frame.right + 1 && box.bottom <= frame.bottom + 1;
          return [b.textContent, b.classList.contains('rejected-box'), inside];
        }))"""
    found = f"boxes on the pictures {live.pictures}"
    wait_for(lambda: shown(browser, boxes, list(live.pictures)), RESULTS_BOUND_S, found)
    drawn = shown(browser, boxes, list(live.pictures))
    for label, _, inside in drawn:
        number, name = label.split(" ", 1)
        assert number.isdigit() and name and inside, f"box {label!r} is numbered, labelled and on the picture"
    assert any(not rejected for _, rejected, _ in drawn), f"an item found, not only rejected boxes: {drawn}"


def test_a_rejected_box_is_drawn_as_rejected_with_its_reason(browser: Any, endpoints: Any, tmp_path: Path) -> None:
    """A detector result in the worker's format with one box rejected (``in_distribution``
    false and ``rejected_reason``, as the detector says it), written into a feed of its own."""
    name = f"boxes{uuid.uuid4().hex[:8]}"
    reason = "not like the clothing the model knows: in_distribution_score 0.004"
    objects = [
        {"label": "bag", "score": 0.81, "box": [10.0, 10.0, 60.0, 70.0], "in_distribution": True},
        {
            "label": "dress",
            "score": 0.35,
            "box": [80.0, 20.0, 150.0, 140.0],
            "in_distribution": False,
            "rejected_reason": reason,
        },
    ]
    now_ms = int(time.time() * 1000)
    body = {"objects": objects, "width": 160, "height": 160}
    made = ResultRecord("scene", "detector", "v1", "objects", "scene-up", now_ms - 30, now_ms, body)
    client = redis.Redis.from_url(endpoints.redis_url)
    client.xadd(f"t:{name}:feed:objects", {"record": made.to_json()})
    page = start_ui(make_settings(endpoints, name, {}), tmp_path)
    try:
        browser.get(page.url)
        boxes = "return [...document.querySelectorAll('.part-objects .box')].map(b => [b.className, b.textContent])"
        wait_for(lambda: len(shown(browser, boxes)) == 2, 30, "both boxes drawn")
        assert shown(browser, boxes) == [["box", "1 bag"], ["box rejected-box", "2 rejected"]]
        listed = "return [...document.querySelectorAll('.part-objects li')].map(li => [li.className, li.textContent])"
        assert shown(browser, listed) == [["", "bag 81.0%"], ["rejected", f"rejected (dress 35.0%): {reason}"]]
    finally:
        stop(page.process)
        client.delete(f"t:{name}:feed:objects")


def test_the_boxes_found_on_a_photo_of_noise_are_drawn_rejected_with_the_detectors_reason(
    browser: Any, live: Page
) -> None:
    assert live.noise_photo, "the demo sends a photo of noise"
    browser.get(live.url)
    card = f"document.querySelector('#section-uploads [data-card-id=\"{live.noise_photo}\"] .part-objects')"
    wait_for(lambda: shown(browser, f"return {card} !== null"), RESULTS_BOUND_S, "the detector's answer to the noise")
    boxes = shown(browser, f"return [...{card}.querySelectorAll('.box')].map(b => b.className)")
    listed = shown(browser, f"return [...{card}.querySelectorAll('li')].map(li => [li.className, li.textContent])")
    assert boxes, "the detector draws boxes on this noise (its rejection is what this test shows)"
    assert set(boxes) == {"box rejected-box"} and len(listed) == len(boxes)
    for kind, text in listed:
        assert kind == "rejected" and text.startswith("rejected (") and "in_distribution_score" in text


def test_audio_cards_play_the_clip_and_show_transcript_and_translation(browser: Any, live: Page) -> None:
    browser.get(live.url)
    card = "document.querySelector('#section-audio [data-card-id] audio')"
    wait_for(lambda: shown(browser, f"return {card} !== null"), RESULTS_BOUND_S, "an audio card with its player")
    kind = browser.execute_async_script(
        f"const done = arguments[0]; fetch({card}.src).then(r => done(r.headers.get('content-type')))"
    )
    assert kind == "audio/wav"
    both = "return [...document.querySelectorAll('#section-audio .card')].filter(c => c.querySelector('.part-transcript') && c.querySelector('.part-translation')).length"  # noqa: E501
    wait_for(lambda: shown(browser, both) > 0, RESULTS_BOUND_S, "a transcript with its translation on one card")


def test_recommendations_show_the_history_that_produced_them(browser: Any, live: Page) -> None:
    browser.get(live.url)
    history = "return [...document.querySelectorAll('#section-users .card')].filter(c => c.querySelector('.part-recommendations li') && c.querySelector('.history li')).length"  # noqa: E501
    wait_for(lambda: shown(browser, history) > 0, RESULTS_BOUND_S, "a user's recommendations with their history")


def test_the_dead_letter_list_shows_each_refused_events_stage_and_reason(browser: Any, live: Page) -> None:
    letters = read_topic(live.settings["kafka"]["bootstrap"], live.settings["kafka"]["dead_letter_topic"], 4)
    refused = {(d["stage"], d["reason"]) for d in letters}
    assert any(d["event_id"] == "bad-image" for d in letters)
    browser.get(live.url)
    rows = "return [...document.querySelectorAll('tr.dead-letter')].map(r => [r.dataset.stage, r.querySelector('.reason').textContent])"  # noqa: E501
    wait_for(lambda: refused <= {tuple(r) for r in shown(browser, rows)}, 60, f"dead letters {refused} on the page")


def test_the_page_never_carries_a_setting_or_an_original(browser: Any, live: Page) -> None:
    browser.get(live.url)
    wait_for(lambda: shown(browser, "return document.querySelectorAll('tr.dead-letter').length") > 0, 60, "letters")
    with urllib.request.urlopen(live.url + "events", timeout=5) as stream:
        first = stream.readline() + stream.readline() + stream.readline()
    update = json.loads(first.decode().split("data: ", 1)[1])
    text = json.dumps(update) + browser.page_source
    assert live.settings["redis"]["url"] not in text and live.settings["kafka"]["bootstrap"] not in text
    assert all("original" not in letter for letter in update["dead_letters"])


def test_the_page_reads_a_password_protected_redis_and_never_shows_the_password(
    browser: Any, endpoints: Any, tmp_path: Path
) -> None:
    """The right password: the page shows the feed and never the password. A wrong one at
    start: ``ui`` stops within 5 s with one line naming the setting (the first-hour rule of
    every command). A password that changes while the page runs: the page says Redis is
    unreachable and goes on serving."""
    name, password = f"pw{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    pages: list[Page] = []
    with password_redis(password) as port:
        client = redis.Redis(port=port, password=password)
        try:
            client.xadd(f"t:{name}:feed:tags", {"record": flood_record(1, int(time.time() * 1000))})
            settings = make_settings(endpoints, name, {})
            settings["redis"].update(url=f"redis://127.0.0.1:{port}/0", password=password)
            pages.append(start_ui(settings, tmp_path))
            browser.get(pages[0].url)
            wait_for(lambda: shown(browser, "return document.querySelectorAll('.card').length") == 1, 30, "the card")
            with urllib.request.urlopen(pages[0].url + "events", timeout=5) as stream:
                update = stream.readline() + stream.readline() + stream.readline()
            assert password not in browser.page_source and password.encode() not in update

            wrong = {**settings, "redis": {**settings["redis"], "password": "wrong"}}
            config = tmp_path / "wrong.yaml"
            config.write_text(yaml.safe_dump(wrong))
            env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_") or k == "STREAMPROC_CACHE"}
            started = time.monotonic()
            refused = subprocess.run(
                [sys.executable, "-m", "streamproc", "--config", str(config), "ui", "--port", "0"],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
                check=False,
            )
            assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
            assert "refused the credentials" in refused.stderr and "STREAMPROC_REDIS_PASSWORD" in refused.stderr
            assert password not in refused.stderr and time.monotonic() - started < 5 + 10  # + interpreter start

            client.config_set("requirepass", f"{password}-changed")
            client.client_kill_filter(_type="normal", skipme=True)  # the page must authenticate again
            sources = "return document.getElementById('sources').textContent"
            wait_for(lambda: "redis: unreachable" in shown(browser, sources), 30, "the page saying Redis refused it")
            assert pages[0].process.poll() is None, "a refused password is shown on the page, it does not stop it"
        finally:
            for page in pages:
                stop(page.process)


def test_the_worker_serves_the_same_page_on_its_http_port_when_the_setting_is_on(browser: Any, live: Page) -> None:
    settings = Settings.model_validate({**live.settings, "http": {"bind": "127.0.0.1", "port": 0, "ui": True}})
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = HealthServer(Metrics(), "127.0.0.1", 0, lambda: (True, "ok"), lambda: (True, "ok"), settings=settings)
    port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=30)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        cards = "return document.querySelectorAll('.card').length"
        wait_for(lambda: shown(browser, cards) > 0, 60, "cards on the worker's port")
        assert _status(f"http://127.0.0.1:{port}/metrics") == 200
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
    off = HealthServer(Metrics(), "127.0.0.1", 0, lambda: (True, ""), lambda: (True, ""), settings=Settings())
    assert off._page_settings is None, "http.ui is off by default"


def test_the_page_screenshot_is_written_for_the_docs(browser: Any, live: Page, tmp_path: Path) -> None:
    """Written to docs/ui.png with ``STREAMPROC_UPDATE_DOCS=1`` (else to a temporary folder,
    so that a test run leaves the clone unchanged)."""
    screenshot = SCREENSHOT if os.environ.get("STREAMPROC_UPDATE_DOCS") == "1" else tmp_path / "ui.png"
    browser.get(live.url)
    for selector in ("img.artwork", "img.enhanced", ".part-objects .box"):
        found = f"return document.querySelectorAll('{selector}').length"
        wait_for(lambda found=found: shown(browser, found) > 0, 60, selector)
    time.sleep(1.0)  # one more update: figures and images settle
    window = browser.get_window_size()
    for _ in range(3):  # the whole page, as tall as it is once laid out at that size
        height = shown(browser, "return document.documentElement.scrollHeight + (window.outerHeight - innerHeight)")
        browser.set_window_size(window["width"], min(max(height, window["height"]), MAX_SCREENSHOT_HEIGHT))
        time.sleep(0.5)
    browser.save_screenshot(str(screenshot))
    browser.set_window_size(window["width"], window["height"])
    with Image.open(screenshot) as image:
        assert image.format == "PNG" and image.width >= 1000 and image.height >= 1000


def flood_record(i: int, now_ms: int) -> bytes:
    """A result as the worker writes it: tags for a thousand uploads, recommendations for 500 users."""
    if i % 2:
        body = {"label": "Bag", "in_distribution": True, "tags": [{"name": "bag", "probability": 0.9}]}
        made = ResultRecord(f"f{i}", "tagger", "v1", "tags", f"up{i % 1000}", now_ms - 30, now_ms, body)
    else:
        body = {"media": "video", "source": "model", "items": [{"item_id": str(i), "score": 0.5}]}
        made = ResultRecord(f"f{i}", "recommender", "v1", "recommendations", f"u{i % 500}", now_ms - 20, now_ms, body)
    return made.to_json()


def test_thousands_of_results_per_second_leave_the_page_responsive_and_bounded(
    browser: Any, endpoints: Any, tmp_path: Path
) -> None:
    name = f"flood{uuid.uuid4().hex[:8]}"
    settings = make_settings(endpoints, name, {})
    page = start_ui(settings, tmp_path)
    client = redis.Redis.from_url(endpoints.redis_url)
    feeds = {"tags": f"t:{name}:feed:tags", "recommendations": f"t:{name}:feed:recommendations"}
    try:
        for i, feed in enumerate(feeds.values()):  # feeds found before the flood are read whole
            client.xadd(feed, {"record": flood_record(i, int(time.time() * 1000))})
        browser.get(page.url)
        wait_for(lambda: shown(browser, "return document.querySelectorAll('.card').length") == 2, 30, "both feeds")
        started = time.monotonic()
        for batch in range(0, FLOOD_RESULTS, 1000):
            pipe = client.pipeline(transaction=False)
            now_ms = int(time.time() * 1000)
            for i in range(batch, batch + 1000):
                pipe.xadd(feeds["tags" if i % 2 else "recommendations"], {"record": flood_record(i, now_ms)})
            pipe.execute()
        written_s = time.monotonic() - started
        round_trips = []

        def all_read() -> bool:
            asked = time.monotonic()
            text = shown(browser, "return document.getElementById('results-read').textContent")
            round_trips.append(time.monotonic() - asked)
            return text.startswith(f"{FLOOD_RESULTS + 2} ")

        wait_for(all_read, 120, f"{FLOOD_RESULTS} results read by the page", interval_s=0.1)
        read_s = time.monotonic() - started
        stats = shown(browser, "return window.streamprocUi")
        counts = shown(browser, "return [...document.querySelectorAll('.cards')].map(c => c.children.length)")
    finally:
        stop(page.process)
        client.delete(*feeds.values())
    print(
        f"flood: {FLOOD_RESULTS} results written in {written_s:.1f} s ({FLOOD_RESULTS / written_s:.0f}/s), all read "
        f"by the page after {read_s:.1f} s; {stats['updates']} updates in {stats['frames']} frames, longest DOM "
        f"update {stats['maxApplyMs']:.1f} ms; longest script round trip {max(round_trips) * 1000:.0f} ms "
        f"({len(round_trips)} polls)"
    )
    assert max(counts) <= max(SECTION_LIMITS.values())
    assert stats["maxApplyMs"] < 500, "one DOM update must not freeze the page"
    assert max(round_trips) < 2.0, "the page must answer scripts while the flood arrives"
