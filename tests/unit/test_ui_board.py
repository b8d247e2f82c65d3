"""The results page's board: cards per input, bounded sections, change numbers, media, figures."""

from __future__ import annotations

import base64
import json
from typing import Any

from streamproc.records import ResultRecord
from streamproc.ui.board import DEAD_LETTER_LIMIT, MAX_IMAGE_CHARS, OBJECTS_SHOWN, SECTION_LIMITS, Board
from streamproc.ui.media import Media, MediaCache, content_type
from streamproc.ui.stats import BUCKET_S, WINDOW_BUCKETS, PluginStats

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
T0 = 1_700_000_000_000


def record(kind: str, key: str, event_id: str, body: dict[str, Any], plugin: str = "p", ts: int = T0) -> dict:
    """A result record exactly as the worker writes it to a feed."""
    made = ResultRecord(event_id, plugin, "v1", kind, key, ts, ts + 40, body)
    return json.loads(made.to_json())


def test_the_results_of_one_upload_gather_on_one_card_with_its_image() -> None:
    board = Board()
    board.add_result(record("tags", "up1", "e1", {"label": "Bag", "in_distribution": True, "tags": []}, "tagger"))
    board.add_result(record("artwork", "up1", "e1", {"category": "Bag", "seed": 3, "images": ["iVBORw0KGgo="]}))
    board.add_result(record("translation", "up1", "e1", {"fields": {"title": "Un bolso"}}, "translator"))
    board.add_media("uploads", "up1", Media("e1", "image/png", PNG))
    (card,) = board.changes_since(0)["cards"]
    assert card["section"] == "uploads" and set(card["parts"]) == {"tags", "artwork", "translation"}
    assert card["parts"]["artwork"]["images"] == ["data:image/png;base64,iVBORw0KGgo="]
    assert card["media"] == "/media/uploads/up1?event=e1"


def test_a_transcripts_translation_joins_its_audio_card_not_an_upload() -> None:
    board = Board()
    board.add_result(record("transcript", "a1", "ea", {"text": "play", "rejected": False}, "speech"))
    board.add_result(record("translation", "a1", "ea", {"fields": {"text": "reproducir"}}, "translator"))
    cards = board.changes_since(0)["cards"]
    assert [(c["section"], sorted(c["parts"])) for c in cards] == [("audio", ["transcript", "translation"])]


def test_a_translation_read_before_its_transcript_moves_to_the_audio_card() -> None:
    board = Board()
    board.add_result(record("translation", "a1", "ea", {"fields": {"text": "reproducir"}}, "translator"))
    board.add_result(record("transcript", "a1", "ea", {"text": "play", "rejected": False}, "speech"))
    cards = board.changes_since(0)["cards"]
    assert [(c["section"], sorted(c["parts"])) for c in cards] == [("audio", ["transcript", "translation"])]


def test_artwork_that_is_not_base64_never_becomes_an_image_source() -> None:
    board = Board()
    board.add_result(record("artwork", "up1", "e1", {"images": ['x" onerror="alert(1)', "iVBORw0KGgo="]}))
    (card,) = board.changes_since(0)["cards"]
    assert card["parts"]["artwork"]["images"] == ["data:image/png;base64,iVBORw0KGgo="]


def test_each_section_keeps_only_its_most_recent_cards_and_dead_letters_their_last() -> None:
    board = Board()
    for i in range(SECTION_LIMITS["uploads"] + 50):
        board.add_result(record("tags", f"up{i}", f"e{i}", {"label": "Bag", "tags": []}))
    for i in range(DEAD_LETTER_LIMIT + 10):
        board.add_dead_letter({"stage": "decode", "reason": f"bad {i}", "original": "c2VjcmV0"})
    changes = board.changes_since(0)
    assert [c["key"] for c in changes["cards"]] == [f"up{i}" for i in range(50, SECTION_LIMITS["uploads"] + 50)]
    letters = changes["dead_letters"]
    assert len(letters) == DEAD_LETTER_LIMIT and letters[-1]["reason"] == f"bad {DEAD_LETTER_LIMIT + 9}"
    assert all("original" not in letter for letter in letters)


def test_a_browser_gets_only_what_changed_since_its_last_update() -> None:
    board = Board()
    board.add_result(record("tags", "up1", "e1", {"tags": []}))
    board.add_result(record("tags", "up2", "e2", {"tags": []}))
    seen = board.changes_since(0)["seq"]
    board.add_result(record("tags", "up1", "e3", {"tags": []}))
    changes = board.changes_since(seen)
    assert [(c["key"], c["event_id"]) for c in changes["cards"]] == [("up1", "e3")]
    assert board.changes_since(changes["seq"])["cards"] == []


def test_recommendation_cards_ask_for_their_users_history_and_show_the_latest_entries() -> None:
    board = Board()
    body = {"media": "video", "source": "model", "items": [{"item_id": "42", "score": 0.9}]}
    board.add_result(record("recommendations", "u1", "e1", body, "recommender"))
    assert board.history_wanted() == {"video:u1": ("recommender", "video:u1")}
    board.set_history("video:u1", {"entries": [["video:1", 1.0, T0, "a"], ["video:2", 2.0, T0 + 5, "b"]]})
    (card,) = board.changes_since(0)["cards"]
    assert [h["item"] for h in card["history"]] == ["video:2", "video:1"]


def test_media_is_served_only_as_png_jpeg_or_wav_within_the_byte_budget() -> None:
    assert content_type("uploads", PNG) == "image/png"
    assert content_type("uploads", b"<svg onload=alert(1)>") is None
    assert content_type("audio", b"RIFF\x00\x00\x00\x00WAVEfmt ") == "audio/wav"
    cache = MediaCache(budget_bytes=3 * len(PNG))
    for i in range(5):
        cache.put("uploads", f"k{i}", Media(f"e{i}", "image/png", PNG))
    assert [cache.get("uploads", f"k{i}") is not None for i in range(5)] == [False, False, True, True, True]


def test_plugin_figures_count_results_per_bucket_and_drop_those_older_than_the_window() -> None:
    stats = PluginStats()
    now = T0
    for latency in (10, 20, 30, 40):
        stats.add("tagger", now - latency, now)
    stats.add("tagger", now - 1000, now - (WINDOW_BUCKETS + 1) * BUCKET_S * 1000)
    (row,) = stats.summary(now)
    assert row["results_window"] == 4 and row["counts"][-1] == 4
    assert (row["latency_p50_ms"], row["latency_p95_ms"], row["samples"]) == (30, 40, 4)
    assert row["per_s_last_minute"] == round(4 / 60, 2)


def test_an_upload_image_is_read_from_an_input_events_base64() -> None:
    from aiokafka import ConsumerRecord

    from streamproc.ui.sources import media_handler

    board = Board()
    value = b'{"id": "e1", "type": "upload", "upload_id": "up1", "image": "' + base64.b64encode(PNG) + b'", "ts": 1}'
    media_handler(board, ConsumerRecord("t", 0, 0, 0, 0, b"up1", value, None, 0, len(value), []))
    media = board.media.get("uploads", "up1")
    assert media is not None and media.data == PNG and media.event_id == "e1"


def test_enhanced_images_join_their_uploads_card_with_scale_and_size() -> None:
    board = Board()
    board.add_result(record("artwork", "up1", "e1", {"category": "dress", "seed": 9, "images": ["iVBORw0KGgo="]}))
    body = {"source": "artwork", "scale": 4, "width": 112, "height": 112, "category": "dress", "images": ["iVBO"]}
    board.add_result(record("enhance", "up1", "e1", body, "enhancer"))
    (card,) = board.changes_since(0)["cards"]
    assert card["section"] == "uploads" and set(card["parts"]) == {"artwork", "enhance"}
    enhanced = card["parts"]["enhance"]
    assert (enhanced["source"], enhanced["scale"], enhanced["width"], enhanced["height"]) == ("artwork", 4, 112, 112)
    assert enhanced["images"] == ["data:image/png;base64,iVBO"] and enhanced["images_left_out"] == 0


def test_an_image_too_long_for_the_page_is_counted_not_sent() -> None:
    board = Board()
    body = {"source": "upload", "scale": 2, "images": ["A" * (MAX_IMAGE_CHARS + 4), "iVBO", "not base64!"]}
    board.add_result(record("enhance", "up1", "e1", body, "enhancer"))
    (card,) = board.changes_since(0)["cards"]
    assert card["parts"]["enhance"]["images"] == ["data:image/png;base64,iVBO"]
    assert card["parts"]["enhance"]["images_left_out"] == 1


def test_detections_keep_label_score_box_and_a_rejected_boxs_reason() -> None:
    board = Board()
    objects = [
        {"label": "bag", "score": 0.91, "box": [4.0, 8.0, 50.5, 60.0]},
        {"label": "dress", "score": 0.4, "box": [60, 8, 100, 70], "in_distribution": False, "rejected_reason": "noise"},
        {"label": "coat", "score": 0.5, "box": [1, 2, 3, 4], "in_distribution": True, "in_distribution_score": 0.2},
        {"label": "shirt", "score": 0.8, "box": [1, 2, 3]},
    ]
    written = record("objects", "up1", "e1", {"objects": objects, "width": 160, "height": 120}, "detector")
    written["body"]["objects"].append({"label": "shirt", "box": [1, 2, 3, float("nan")]})  # JSON a feed may hold
    board.add_result(written)
    (card,) = board.changes_since(0)["cards"]
    shown = card["parts"]["objects"]
    assert card["section"] == "uploads" and (shown["width"], shown["height"], shown["found"]) == (160, 120, 3)
    assert shown["objects"][0] == {
        "label": "bag",
        "score": 0.91,
        "box": [4.0, 8.0, 50.5, 60.0],
        "rejected": False,
        "reason": None,
    }
    assert [(o["rejected"], o["reason"]) for o in shown["objects"][1:]] == [(True, "noise"), (False, None)]


def test_detections_are_bounded_and_need_the_pictures_size_to_be_drawn() -> None:
    board = Board()
    many = [{"label": "bag", "score": 0.5, "box": [i, i, i + 5, i + 5]} for i in range(OBJECTS_SHOWN + 5)]
    board.add_result(record("objects", "up1", "e1", {"objects": many, "width": 200, "height": 200}))
    board.add_result(record("objects", "up2", "e2", {"objects": many, "height": 200}))
    first, second = board.changes_since(0)["cards"]
    assert first["parts"]["objects"]["found"] == OBJECTS_SHOWN + 5
    assert len(first["parts"]["objects"]["objects"]) == OBJECTS_SHOWN
    assert second["parts"]["objects"]["objects"] == []
