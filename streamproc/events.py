"""The event contract: typed input events, derived (result) events and the decoder.

An input record is one UTF-8 JSON object: the envelope (``id``, ``type``, ``ts``,
``user_id``) plus the fields of its type, flat. ``decode_event`` turns bytes into a
typed, validated, immutable event or raises ``InvalidEvent`` with the reason.

Schema evolution: a producer may add fields before the worker knows them. Unknown fields
are accepted and dropped (``BaseEvent.ignored_fields`` names them, for a metric); values
are coerced only where no reading is ambiguous: an integer identifier becomes its decimal
string (``user_id`` 42 -> ``"42"``), a float ``ts`` or artwork ``count``/``seed`` with no
fractional part becomes an integer. Everything else keeps strict types (``"3"`` is not a
number, ``true`` not an identifier). ``event_json_schema`` publishes the contract as JSON
Schema (``docs/schemas/<type>.json``). Media
payloads arrive base64-encoded and are decoded here, once, after their encoded size
has been checked against the limits; pixel and sample decoding is left to the plugin
that needs it (``streamproc.media``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from streamproc.errors import InvalidEvent
from streamproc.media import sniff_image_format, wav_duration_s

Identifier = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[\w.:@/-]+$")]
LanguageCode = Annotated[str, Field(min_length=2, max_length=8, pattern=r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")]

PLAYBACK_ACTIONS = ("start", "progress", "complete", "skip", "like")
PEEK_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class PayloadLimits:
    """Limits checked before any media is decoded (defaults: 5 MiB image, 60 s audio)."""

    max_record_bytes: int = 8 * 1024 * 1024
    max_image_bytes: int = 5 * 1024 * 1024
    max_audio_bytes: int = 12 * 1024 * 1024
    max_audio_seconds: float = 60.0
    max_text_chars: int = 5000
    max_future_skew_s: float = 86_400.0
    allow_uris: bool = False
    uri_allowlist: tuple[str, ...] = ()


def _identifier_from_integer(value: Any) -> Any:
    """An integer identifier is read as its decimal string (never a bool or a float)."""
    return str(value) if type(value) is int else value


def _integer_from_integral_float(value: Any) -> Any:
    """A float with no fractional part is read as that integer (``1.7e12`` -> ``1700000000000``)."""
    return int(value) if type(value) is float and value.is_integer() else value


IDENTIFIER_FIELDS = ("id", "user_id", "item_id", "upload_id", "audio_id")
INTEGRAL_FIELDS = ("ts", "count", "seed")


class _Evolvable(BaseModel):
    """Strict types with unknown fields dropped and the unambiguous coercions above."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    @field_validator(*IDENTIFIER_FIELDS, mode="before", check_fields=False)
    @classmethod
    def _identifiers(cls, value: Any) -> Any:
        return _identifier_from_integer(value)

    @field_validator(*INTEGRAL_FIELDS, mode="before", check_fields=False)
    @classmethod
    def _integrals(cls, value: Any) -> Any:
        return _integer_from_integral_float(value)


class BaseEvent(_Evolvable):
    """The common envelope. ``key`` is the entity that orders the stream."""

    key_field: ClassVar[str] = "user_id"

    id: Identifier
    type: str
    ts: int = Field(ge=0, description="event time, epoch milliseconds")
    user_id: Identifier
    _ignored_fields: tuple[str, ...] = PrivateAttr(default=())

    @property
    def key(self) -> str:
        return str(getattr(self, self.key_field))

    @property
    def ignored_fields(self) -> tuple[str, ...]:
        """Fields of the record this version does not know (dropped), nested ones as ``artwork.x``."""
        return self._ignored_fields


class PlaybackEvent(BaseEvent):
    """A user started, progressed, completed, skipped or liked an item."""

    type: Literal["playback"]
    item_id: Identifier
    action: Literal["start", "progress", "complete", "skip", "like"]
    position_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    media: Literal["video", "music"]


class ArtworkRequest(_Evolvable):
    """Ask the artwork generator for ``count`` images of ``category``, seeded."""

    category: str = Field(min_length=1, max_length=64)
    count: int = Field(default=1, ge=1, le=16)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class UploadEvent(BaseEvent):
    """A user uploaded an image with a title and description; artwork may be requested."""

    key_field: ClassVar[str] = "upload_id"
    type: Literal["upload"]
    upload_id: Identifier
    image: bytes | None = None
    image_uri: str | None = None
    title: str = Field(default="", max_length=500)
    description: str = Field(default="", max_length=5000)
    language: LanguageCode = "en"
    artwork: ArtworkRequest | None = None


class AudioEvent(BaseEvent):
    """A user uploaded a voice clip (WAV) to be transcribed."""

    key_field: ClassVar[str] = "audio_id"
    type: Literal["audio"]
    audio_id: Identifier
    audio: bytes | None = None
    audio_uri: str | None = None
    language: LanguageCode = "en"


InputEvent = PlaybackEvent | UploadEvent | AudioEvent
EVENT_MODELS: Mapping[str, type[BaseEvent]] = {
    "playback": PlaybackEvent,
    "upload": UploadEvent,
    "audio": AudioEvent,
}
MEDIA_FIELDS = {"upload": "image", "audio": "audio"}
URI_SCHEMES = ("file",)


@dataclass(frozen=True)
class DerivedEvent:
    """A plugin's result routed on to another plugin (transcript -> translator).

    ``type`` is the result kind, ``body`` the result body; ``origin`` is the input event
    it descends from, so the chained result keeps the original id, key and time.
    """

    type: str
    plugin: str
    body: Mapping[str, Any]
    origin: InputEvent

    @property
    def id(self) -> str:
        return self.origin.id

    @property
    def key(self) -> str:
        return self.origin.key

    @property
    def ts(self) -> int:
        return self.origin.ts

    @property
    def user_id(self) -> str:
        return self.origin.user_id


Event = InputEvent | DerivedEvent


def decode_event(raw: bytes | None, limits: PayloadLimits = PayloadLimits(), now_ms: int | None = None) -> InputEvent:
    """Decode one Kafka record value into a typed input event.

    Raises ``InvalidEvent`` with a reason naming the field when the record is a tombstone
    (no value), is not UTF-8 JSON (NaN, Infinity, numbers beyond float range or with more
    digits than Python converts are not JSON either), has an unknown type, misses or
    mistypes a field, exceeds a payload limit, carries media whose header is not PNG/JPEG
    (images) or WAV (audio), or is stamped more than ``limits.max_future_skew_s`` after
    ``now_ms`` (default: the wall clock).
    """
    if raw is None:
        raise InvalidEvent("record: a tombstone (null value) carries no event")
    if len(raw) > limits.max_record_bytes:
        raise InvalidEvent(f"record: {len(raw)} bytes exceeds the limit of {limits.max_record_bytes}")
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"record: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"record: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:  # a number JSON allows but Python refuses: too many digits, NaN, out of range
        raise InvalidEvent(f"record: not JSON ({str(exc)[:120]})") from None
    except RecursionError:
        raise InvalidEvent("record: JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise InvalidEvent(f"record: a JSON object is required, got {type(doc).__name__}")
    event_type = doc.get("type")
    model = EVENT_MODELS.get(event_type) if isinstance(event_type, str) else None
    if model is None:
        known = ", ".join(EVENT_MODELS)
        raise InvalidEvent(f"type: unknown event type {event_type!r} (known: {known})")
    media_field = MEDIA_FIELDS.get(event_type)
    if media_field is not None:
        _decode_media_field(doc, media_field, event_type, limits)
        if doc.get(f"{media_field}_uri") is not None and doc.get(media_field) is None:
            doc[media_field] = _read_uri(doc[f"{media_field}_uri"], media_field, event_type, limits)
    try:
        event = model.model_validate(doc)
    except ValidationError as exc:
        raise InvalidEvent(_validation_reason(exc)) from None
    event._ignored_fields = _unknown_fields(doc, model)
    _check_limits(event, limits)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if event.ts > now_ms + limits.max_future_skew_s * 1000:
        ahead_s = (event.ts - now_ms) // 1000  # integers: a ts of 10**400 overflows a float
        raise InvalidEvent(
            f"ts: {_number_text(event.ts)} is {_number_text(ahead_s)} s in the future "
            f"(more than limits.max_future_skew_s, {limits.max_future_skew_s:.0f} s)"
        )
    return event


def _number_text(number: int) -> str:
    """An integer for a reason: whole up to 20 digits, else its first digits and its length."""
    text = str(number)
    return text if len(text) <= 20 else f"{text[:6]}... ({len(text)} digits)"


def _unknown_fields(doc: Mapping[str, Any], model: type[BaseEvent]) -> tuple[str, ...]:
    unknown = [name for name in doc if name not in model.model_fields]
    artwork = doc.get("artwork")
    if "artwork" in model.model_fields and isinstance(artwork, dict):
        unknown += [f"artwork.{name}" for name in artwork if name not in ArtworkRequest.model_fields]
    return tuple(unknown)


def event_json_schema(event_type: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one input event type as it travels on Kafka.

    Generated from the model: media fields are base64 text, identifiers also accept
    integers, ``ts`` any integral number (JSON Schema's ``integer`` includes ``1.0``), and
    other properties are allowed (ignored by the worker). Payload limits (sizes, media
    headers, the future-skew bound) are settings, checked by the decoder, not part of it."""
    model = EVENT_MODELS[event_type]
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    for definition in (schema, *schema.get("$defs", {}).values()):
        definition["additionalProperties"] = True
        for name, prop in definition.get("properties", {}).items():
            if name in IDENTIFIER_FIELDS:
                definition["properties"][name] = {"anyOf": [prop, {"type": "integer"}]}
            _base64_text(prop)
    return schema


def _base64_text(prop: dict[str, Any]) -> None:
    for option in prop.get("anyOf", [prop]):
        if option.get("format") == "binary":
            del option["format"]
            option["contentEncoding"] = "base64"


def peek_identity(raw: bytes | None) -> tuple[str | None, str | None]:
    """The ``id`` and ``type`` of a record that may not be a valid event (for its dead
    letter), when it is a JSON object holding them as short strings; else ``None``."""
    if raw is None or len(raw) > PEEK_MAX_BYTES:
        return None, None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    found = (doc.get("id"), doc.get("type"))
    return tuple(v if isinstance(v, str) and len(v) <= 256 else None for v in found)  # type: ignore[return-value]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _decode_media_field(doc: dict[str, Any], name: str, event_type: str, limits: PayloadLimits) -> None:
    value = doc.get(name)
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidEvent(f"{name}: base64 text is required, got {type(value).__name__}")
    max_bytes = limits.max_image_bytes if event_type == "upload" else limits.max_audio_bytes
    if len(value) > (max_bytes * 4) // 3 + 4:
        raise InvalidEvent(f"{name}: encoded size exceeds the limit of {max_bytes} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidEvent(f"{name}: not valid base64 ({exc})") from None
    if len(data) > max_bytes:
        raise InvalidEvent(f"{name}: {len(data)} bytes exceeds the limit of {max_bytes}")
    doc[name] = data


def _read_uri(uri: object, name: str, event_type: str, limits: PayloadLimits) -> bytes:
    """Read a ``file://`` URI under an allow-listed directory, bounded by the size limit."""
    field = f"{name}_uri"
    if not isinstance(uri, str):
        raise InvalidEvent(f"{field}: a string is required")
    if not limits.allow_uris:
        raise InvalidEvent(f"{field}: URI inputs are disabled (limits.allow_uris)")
    parsed = urlparse(uri)
    if parsed.scheme not in URI_SCHEMES or parsed.netloc not in ("", "localhost"):
        raise InvalidEvent(f"{field}: scheme {parsed.scheme!r} not allowed (allowed: file:// on this host)")
    path = os.path.realpath(unquote(parsed.path))
    allowed = [os.path.realpath(prefix) for prefix in limits.uri_allowlist]
    if not any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in allowed):
        raise InvalidEvent(f"{field}: path not under an allow-listed directory (limits.uri_allowlist)")
    max_bytes = limits.max_image_bytes if event_type == "upload" else limits.max_audio_bytes
    try:
        with open(path, "rb") as media:
            data = media.read(max_bytes + 1)
    except OSError as exc:
        raise InvalidEvent(f"{field}: cannot read ({exc.strerror})") from None
    if len(data) > max_bytes:
        raise InvalidEvent(f"{field}: file exceeds the limit of {max_bytes} bytes")
    return data


def _check_limits(event: InputEvent, limits: PayloadLimits) -> None:
    if isinstance(event, UploadEvent):
        if (
            event.image is None
            and event.image_uri is None
            and event.artwork is None
            and not (event.title or event.description)
        ):
            raise InvalidEvent("upload: carries nothing to process (no image, text or artwork)")
        if event.image is not None:
            sniff_image_format(event.image)
        if len(event.title) + len(event.description) > limits.max_text_chars:
            raise InvalidEvent(f"text: title and description exceed {limits.max_text_chars} characters")
    elif isinstance(event, AudioEvent):
        if event.audio is None and event.audio_uri is None:
            raise InvalidEvent("audio: one of audio or audio_uri is required")
        if event.audio is not None:
            seconds = wav_duration_s(event.audio)
            if seconds > limits.max_audio_seconds:
                raise InvalidEvent(f"audio: {seconds:.1f} s exceeds the limit of {limits.max_audio_seconds:.0f} s")


def _validation_reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "record"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
