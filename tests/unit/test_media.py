"""Safe media decoding: every image and WAV variant users send, and every corruption, typed."""

from __future__ import annotations

import contextlib
import io
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from streamproc.errors import InvalidEvent, MediaError
from streamproc.events import decode_event
from streamproc.media import decode_image, decode_wav, encode_wav, read_wav_header, sniff_image_format


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("image", "mode"),
    [
        (Image.new("L", (30, 20), 100), "L"),
        (Image.new("RGB", (30, 20), (1, 2, 3)), "RGB"),
        (Image.new("RGBA", (30, 20), (10, 20, 30, 0)), "RGB"),
        (Image.new("P", (30, 20), 3), "RGB"),
        (Image.fromarray(np.full((20, 30), 60000, np.uint16)), "L"),
        (Image.new("1", (30, 20), 1), "L"),
    ],
)
def test_png_of_any_mode_decodes_to_8bit_l_or_rgb(image: Image.Image, mode: str) -> None:
    decoded = decode_image(encode(image))
    assert decoded.mode == mode and decoded.size == (30, 20)


def test_transparent_pixels_are_composited_on_white() -> None:
    decoded = decode_image(encode(Image.new("RGBA", (4, 4), (0, 0, 0, 0))))
    assert decoded.getpixel((0, 0)) == (255, 255, 255)


def test_jpeg_decodes() -> None:
    assert decode_image(encode(Image.new("RGB", (16, 16), (200, 0, 0)), "JPEG")).mode == "RGB"


def test_decompression_bomb_is_refused_before_pixels_are_decoded() -> None:
    bomb = encode(Image.new("L", (5000, 5000), 0))
    with pytest.raises(MediaError, match="decompression bomb"):
        decode_image(bomb, max_pixels=1_000_000)


def test_image_over_the_callers_byte_limit_is_refused_before_decoding() -> None:
    png = encode(Image.new("L", (64, 64), 0))
    with pytest.raises(MediaError, match=f"{len(png)} bytes exceeds the limit of {len(png) - 1}"):
        decode_image(png, max_bytes=len(png) - 1)
    assert decode_image(png, max_bytes=len(png)).size == (64, 64)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_image_is_decoded_reduced_but_never_below_the_needed_size(fmt: str) -> None:
    data = encode(Image.new("RGB", (1000, 600), (10, 200, 30)), fmt)
    image = decode_image(data, needed_size=(28, 28))
    assert 28 <= min(image.size) < 56 and image.mode == "RGB"
    assert decode_image(data, needed_size=(2000, 2000)).size == (1000, 600)


@pytest.mark.parametrize("data", [b"", b"GIF89a....", b"\x89PNG\r\n\x1a\n" + b"\0" * 30, b"\xff\xd8\xff\xe0garbage"])
def test_not_an_image_or_corrupt_image_raises_media_error_with_the_same_words_every_time(data: bytes) -> None:
    reasons = []
    for _ in range(2):
        with pytest.raises(MediaError) as refused:
            decode_image(data)
        reasons.append(str(refused.value))
    assert reasons[0] == reasons[1] and "object" not in reasons[0] and "<" not in reasons[0], reasons


def test_truncated_png_raises_media_error() -> None:
    png = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)))
    with pytest.raises(MediaError, match="corrupt or truncated"):
        decode_image(png[: len(png) // 2])


def wav_bytes(samples: np.ndarray, rate: int, bits: int, channels: int, tag: int = 1) -> bytes:
    frames = np.repeat(samples[:, None], channels, axis=1).reshape(-1)
    if tag == 3:
        pcm = frames.astype("<f4").tobytes()
    elif bits == 8:
        pcm = (frames * 127 + 128).astype(np.uint8).tobytes()
    elif bits == 16:
        pcm = (frames * 32767).astype("<i2").tobytes()
    elif bits == 24:
        ints = (frames * (2**23 - 1)).astype("<i4")
        pcm = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    else:
        pcm = (frames * (2**31 - 1)).astype("<i4").tobytes()
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(pcm))
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", len(pcm))
        + pcm
    )


@pytest.mark.parametrize(
    ("rate", "bits", "channels", "tag"),
    [
        (8000, 8, 1, 1),
        (16000, 16, 1, 1),
        (22050, 16, 2, 1),
        (44100, 24, 2, 1),
        (48000, 32, 1, 1),
        (32000, 32, 2, 3),
    ],
)
def test_wav_of_any_depth_rate_and_channels_becomes_16khz_mono(rate: int, bits: int, channels: int, tag: int) -> None:
    t = np.arange(rate // 2) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    samples = decode_wav(wav_bytes(tone, rate, bits, channels, tag))
    assert samples.dtype == np.float32 and abs(samples.size - 8000) <= 1
    assert 0.3 < np.abs(samples).max() < 0.6
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * 16000 / samples.size - 440) < 5


def test_empty_wav_gives_no_samples() -> None:
    assert decode_wav(encode_wav(np.zeros(0, np.float32))).size == 0


@pytest.mark.parametrize(
    "data", [b"", b"RIFF", b"RIFF\0\0\0\0WAVE", b"RIFF\0\0\0\0WAVEdata\4\0\0\0abcd", b"OggS" + b"\0" * 40]
)
def test_corrupt_wav_raises_media_error(data: bytes) -> None:
    with pytest.raises(MediaError):
        decode_wav(data)


def test_unsupported_wav_encoding_is_named() -> None:
    with pytest.raises(MediaError, match="sample rate 96000"):
        read_wav_header(wav_bytes(np.zeros(10, np.float32), 96000, 16, 1))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzzed_image_bytes_never_crash_only_media_errors(data: bytes) -> None:
    for candidate in (data, b"\x89PNG\r\n\x1a\n" + data, b"\xff\xd8\xff" + data):
        with contextlib.suppress(MediaError):
            decode_image(candidate, max_pixels=1_000_000)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzzed_wav_bytes_never_crash_only_media_errors(data: bytes) -> None:
    for candidate in (data, b"RIFF\x00\x01\x00\x00WAVEfmt " + data):
        with contextlib.suppress(MediaError):
            decode_wav(candidate, max_seconds=5)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.dictionaries(
            st.text(max_size=10),
            st.one_of(st.none(), st.integers(), st.text(max_size=20), st.floats(), st.booleans()),
            max_size=8,
        ).map(lambda d: __import__("json").dumps(d).encode()),
    )
)
def test_fuzzed_records_are_decoded_or_refused_with_a_typed_error(data: bytes) -> None:
    try:
        decode_event(data)
    except InvalidEvent as refused:
        assert refused.reason
    assert sniff_image_format(b"\x89PNG\r\n\x1a\n") == "png"
