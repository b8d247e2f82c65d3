"""The event contract: typed decoding and the reasons given for refusals."""

from __future__ import annotations

import base64
import json
import typing
from pathlib import Path

import numpy as np
import pytest

from streamproc.errors import InvalidEvent
from streamproc.events import (
    EVENT_MODELS,
    IDENTIFIER_FIELDS,
    AudioEvent,
    PayloadLimits,
    PlaybackEvent,
    UploadEvent,
    decode_event,
    event_json_schema,
)
from streamproc.media import encode_wav

PLAY = {
    "id": "e1",
    "type": "playback",
    "ts": 1,
    "user_id": "u1",
    "item_id": "42",
    "action": "like",
    "position_s": 3.5,
    "duration_s": 100.0,
    "media": "music",
}


def raw(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def test_playback_event_decodes_to_typed_event_keyed_by_user() -> None:
    event = decode_event(raw(PLAY))
    assert isinstance(event, PlaybackEvent)
    assert (event.key, event.action, event.media) == ("u1", "like", "music")


def test_upload_image_is_base64_decoded_once_and_keyed_by_upload() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"rest"
    event = decode_event(
        raw(
            {
                "id": "e2",
                "type": "upload",
                "ts": 1,
                "user_id": "u1",
                "upload_id": "up9",
                "image": base64.b64encode(png).decode(),
                "title": "t",
            }
        )
    )
    assert isinstance(event, UploadEvent)
    assert event.image == png and event.key == "up9"


def test_audio_event_is_keyed_by_audio_id() -> None:
    wav = encode_wav(np.zeros(160, np.float32))
    event = decode_event(
        raw(
            {
                "id": "e3",
                "type": "audio",
                "ts": 1,
                "user_id": "u",
                "audio_id": "a1",
                "audio": base64.b64encode(wav).decode(),
            }
        )
    )
    assert isinstance(event, AudioEvent) and event.key == "a1"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (b"{", "record: not JSON"),
        (b"\xff\xfe", "record: not UTF-8"),
        (b"[1, 2]", "a JSON object is required"),
        (b"[" * 100_000, "nested too deeply"),
        (raw({**PLAY, "type": "click"}), "unknown event type 'click'"),
        (raw({k: v for k, v in PLAY.items() if k != "media"}), "media: Field required"),
        (raw({**PLAY, "action": "rewind"}), "action: Input should be"),
        (raw({**PLAY, "ts": "yesterday"}), "ts: Input should be a valid integer"),
        (raw({**PLAY, "ts": 1.5}), "ts: Input should be a valid integer"),
        (raw({**PLAY, "user_id": True}), "user_id: Input should be a valid string"),
        (raw({**PLAY, "user_id": 4.0}), "user_id: Input should be a valid string"),
        (raw({**PLAY, "position_s": "3"}), "position_s: Input should be a valid number"),
        (raw({**PLAY, "id": ""}), "id: String should have at least 1 character"),
        (raw({**PLAY, "duration_s": 0}), "duration_s: Input should be greater than 0"),
    ],
)
def test_invalid_records_are_refused_with_a_reason_naming_the_field(record: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        decode_event(record)
    assert reason in refused.value.reason


def test_payload_limits_are_enforced_before_decoding() -> None:
    big = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 5000).decode()
    doc = {"id": "e", "type": "upload", "ts": 1, "user_id": "u", "upload_id": "x", "image": big}
    with pytest.raises(InvalidEvent, match="image: encoded size exceeds the limit of 1000 bytes"):
        decode_event(raw(doc), PayloadLimits(max_image_bytes=1000))
    with pytest.raises(InvalidEvent, match=r"record: .* exceeds the limit of 100"):
        decode_event(raw(doc), PayloadLimits(max_record_bytes=100))


def test_audio_longer_than_the_limit_is_refused_from_its_header() -> None:
    wav = encode_wav(np.zeros(16000 * 3, np.float32))
    doc = {
        "id": "e",
        "type": "audio",
        "ts": 1,
        "user_id": "u",
        "audio_id": "a",
        "audio": base64.b64encode(wav).decode(),
    }
    with pytest.raises(InvalidEvent, match=r"3\.0 s exceeds the limit of 2 s"):
        decode_event(raw(doc), PayloadLimits(max_audio_seconds=2))


def test_uri_inputs_are_off_by_default() -> None:
    doc = {"id": "e", "type": "upload", "ts": 1, "user_id": "u", "upload_id": "x", "image_uri": "file:///etc/passwd"}
    with pytest.raises(InvalidEvent, match="URI inputs are disabled"):
        decode_event(raw(doc))


def test_an_upload_with_nothing_to_process_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="carries nothing to process"):
        decode_event(raw({"id": "e", "type": "upload", "ts": 1, "user_id": "u", "upload_id": "x"}))


def test_uri_inputs_when_enabled_read_only_allow_listed_files(tmp_path) -> None:
    allowed = tmp_path / "media"
    allowed.mkdir()
    png = b"\x89PNG\r\n\x1a\n" + b"body"
    (allowed / "a.png").write_bytes(png)
    (tmp_path / "secret.png").write_bytes(png)
    limits = PayloadLimits(allow_uris=True, uri_allowlist=(str(allowed),), max_image_bytes=100)

    def upload(uri: str) -> bytes:
        return raw({"id": "e", "type": "upload", "ts": 1, "user_id": "u", "upload_id": "x", "image_uri": uri})

    assert decode_event(upload(f"file://{allowed}/a.png"), limits).image == png
    for uri, reason in [
        (f"file://{allowed}/../secret.png", "not under an allow-listed directory"),
        (f"file://{tmp_path}/secret.png", "not under an allow-listed directory"),
        ("http://example.com/a.png", "scheme 'http' not allowed"),
        (f"file://{allowed}/missing.png", "cannot read"),
    ]:
        with pytest.raises(InvalidEvent, match=reason):
            decode_event(upload(uri), limits)
    (allowed / "big.png").write_bytes(png + b"\0" * 200)
    with pytest.raises(InvalidEvent, match="exceeds the limit of 100 bytes"):
        decode_event(upload(f"file://{allowed}/big.png"), limits)


SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def test_unknown_fields_are_accepted_dropped_and_named() -> None:
    doc = {**PLAY, "app_version": "3.1.0", "client": {"os": "android"}}
    event = decode_event(raw(doc))
    assert event.model_dump() == decode_event(raw(PLAY)).model_dump()
    assert event.ignored_fields == ("app_version", "client")
    assert not hasattr(event, "app_version")
    upload = {"id": "e", "type": "upload", "ts": 1, "user_id": "u", "upload_id": "x", "title": "t"}
    event = decode_event(raw({**upload, "artwork": {"category": "bag", "style": "ink"}}))
    assert isinstance(event, UploadEvent) and event.artwork is not None and event.artwork.category == "bag"
    assert event.ignored_fields == ("artwork.style",)
    assert decode_event(raw(PLAY)).ignored_fields == ()


def test_unambiguous_numbers_are_coerced_integer_ids_and_integral_float_times() -> None:
    event = decode_event(raw({**PLAY, "id": 7, "user_id": 42, "item_id": 1234, "ts": 1.7e12}))
    assert isinstance(event, PlaybackEvent)
    assert (event.id, event.user_id, event.item_id, event.key) == ("7", "42", "1234", "42")
    assert event.ts == 1_700_000_000_000 and type(event.ts) is int
    upload = {"id": "e", "type": "upload", "ts": 1, "user_id": "u", "upload_id": 9}
    event = decode_event(raw({**upload, "artwork": {"category": "bag", "count": 2.0, "seed": 5.0}}))
    assert isinstance(event, UploadEvent) and event.key == "9"
    assert event.artwork is not None and (event.artwork.count, event.artwork.seed) == (2, 5)


def test_published_json_schemas_are_generated_from_the_models() -> None:
    for event_type in EVENT_MODELS:
        path = SCHEMAS / f"{event_type}.json"
        assert path.exists(), f"missing {path}: run python deploy/tools/write_schemas.py"
        published = json.loads(path.read_text())
        assert published == event_json_schema(event_type), f"{path} is stale: regenerate it"


def test_json_schemas_state_what_the_decoder_accepts() -> None:
    for event_type, model in EVENT_MODELS.items():
        schema = event_json_schema(event_type)
        props = schema["properties"]
        assert set(props) == set(model.model_fields), event_type
        assert set(schema["required"]) == {n for n, f in model.model_fields.items() if f.is_required()}
        assert schema["additionalProperties"] is True, "unknown fields are accepted"
        assert props["type"]["const"] == event_type
        assert props["ts"]["type"] == "integer"  # JSON Schema's integer includes 1.0, as the decoder does
        for name in set(IDENTIFIER_FIELDS) & set(props):
            assert {"type": "integer"} in props[name]["anyOf"], f"{event_type}.{name} accepts integers"
        for name, field in model.model_fields.items():
            if typing.get_origin(field.annotation) is typing.Literal and name != "type":
                assert props[name]["enum"] == list(typing.get_args(field.annotation)), f"{event_type}.{name}"
    media = event_json_schema("upload")["properties"]["image"]["anyOf"][0]
    assert media == {"type": "string", "contentEncoding": "base64"}
