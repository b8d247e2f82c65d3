"""The event contract: typed decoding and the reasons given for refusals."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from streamproc.errors import InvalidEvent
from streamproc.events import AudioEvent, PayloadLimits, PlaybackEvent, UploadEvent, decode_event
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
        (raw({**PLAY, "extra": 1}), "extra: Extra inputs are not permitted"),
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
