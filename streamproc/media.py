"""Safe decoding of the media that events carry: PNG/JPEG images and WAV audio.

Every function here takes untrusted bytes and either returns a decoded value or raises
``MediaError`` with a reason; none may crash, hang or allocate without bound. Header
checks (``sniff_image_format``, ``wav_duration_s``) are cheap and run when the event is
decoded; full decodes run in the plugin that needs the pixels or samples.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from streamproc.errors import MediaError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
DEFAULT_MAX_PIXELS = 40_000_000
TARGET_SAMPLE_RATE = 16_000


def sniff_image_format(data: bytes) -> str:
    """Return ``"png"`` or ``"jpeg"`` from the magic bytes, or raise ``MediaError``."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    head = " ".join(f"0x{b:02X}" for b in data[:4]) or "none"
    raise MediaError(f"image: not a PNG or JPEG (first bytes {head})")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode PNG/JPEG bytes of any mode into an 8-bit ``L`` or ``RGB`` image.

    Guards: the format is sniffed first; the pixel count is read from the header and
    refused above ``max_pixels`` before any pixel is decoded (decompression bombs);
    truncated or corrupt files raise ``MediaError``. Transparent images are composited
    on white; 16-bit images are scaled to 8 bits; palettes are expanded.
    """
    fmt = sniff_image_format(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt.upper()])
            width, height = image.size
            if width * height > max_pixels:
                raise MediaError(
                    f"image: {width}x{height} pixels exceeds the limit of {max_pixels} (decompression bomb guard)"
                )
            image.load()
    except MediaError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise MediaError(f"image: refused as a decompression bomb ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error) as exc:
        raise MediaError(f"image: corrupt or truncated {fmt.upper()} ({exc})") from None
    return _to_8bit(image)


def _to_8bit(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() if array.size else 0.0
        scale = 255.0 / peak if peak > 255 else 1.0
        return Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    if image.mode in ("L", "RGB"):
        return image
    if image.mode == "1":
        return image.convert("L")
    return image.convert("RGB")


@dataclass(frozen=True)
class WavHeader:
    """The facts of a WAV file needed to decode it, read without decoding samples."""

    sample_rate: int
    channels: int
    bits_per_sample: int
    is_float: bool
    data_offset: int
    data_size: int

    @property
    def duration_s(self) -> float:
        frame = self.channels * self.bits_per_sample // 8
        return self.data_size / frame / self.sample_rate


def read_wav_header(data: bytes) -> WavHeader:
    """Parse a RIFF/WAVE header (PCM 8/16/24/32-bit or float32, 1-2 channels, 8-48 kHz)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        head = " ".join(f"0x{b:02X}" for b in data[:4]) or "none"
        raise MediaError(f"audio: not a RIFF/WAVE file (first bytes {head})")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise MediaError("audio: truncated fmt chunk")
            fmt = struct.unpack("<HHIIHH", data[body : body + 16])
            if fmt[0] == 0xFFFE and size >= 26 and body + 26 <= len(data):
                # WAVE_FORMAT_EXTENSIBLE: the real encoding tag opens the sub-format GUID
                fmt = (struct.unpack("<H", data[body + 24 : body + 26])[0], *fmt[1:])
        elif chunk_id == b"data":
            if fmt is None:
                raise MediaError("audio: data chunk before fmt chunk")
            return _header_from_fmt(fmt, body, min(size, len(data) - body))
        pos = body + size + (size & 1)
    raise MediaError("audio: no data chunk (truncated WAV)")


def _header_from_fmt(fmt: tuple[int, ...], offset: int, size: int) -> WavHeader:
    tag, channels, rate, _, _, bits = fmt
    is_float = tag == 3
    if tag not in (1, 3):
        raise MediaError(f"audio: unsupported WAV encoding tag {tag} (PCM or float only)")
    if channels not in (1, 2):
        raise MediaError(f"audio: {channels} channels (mono or stereo only)")
    if not 8_000 <= rate <= 48_000:
        raise MediaError(f"audio: sample rate {rate} Hz outside 8000-48000 Hz")
    if bits not in (8, 16, 24, 32) or (is_float and bits != 32):
        raise MediaError(f"audio: {bits}-bit samples unsupported")
    frame = channels * bits // 8
    return WavHeader(rate, channels, bits, is_float, offset, size - size % frame)


def wav_duration_s(data: bytes) -> float:
    """Duration of a WAV file in seconds, from its header alone."""
    return read_wav_header(data).duration_s


def decode_wav(data: bytes, max_seconds: float = 60.0) -> np.ndarray:
    """Decode WAV bytes into float32 mono samples at 16 kHz in [-1, 1].

    Stereo is averaged; other rates are resampled band-limited (FFT). Raises
    ``MediaError`` for anything that is not a supported WAV or is longer than
    ``max_seconds``. Empty audio gives an empty array.
    """
    header = read_wav_header(data)
    if header.duration_s > max_seconds:
        raise MediaError(f"audio: {header.duration_s:.1f} s exceeds the limit of {max_seconds:.0f} s")
    raw = data[header.data_offset : header.data_offset + header.data_size]
    samples = _pcm_to_float(raw, header.bits_per_sample, header.is_float)
    samples = samples.reshape(-1, header.channels).mean(axis=1)
    if not np.all(np.isfinite(samples)):
        raise MediaError("audio: samples are not finite numbers")
    return resample(samples, header.sample_rate, TARGET_SAMPLE_RATE)


def _pcm_to_float(raw: bytes, bits: int, is_float: bool) -> np.ndarray:
    if is_float:
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if bits == 8:
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if bits == 16:
        return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        return value.astype(np.float32) / float(1 << 23)
    return np.frombuffer(raw, dtype="<i4").astype(np.float32) / float(1 << 31)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling by FFT; returns float32."""
    if rate == target or samples.size == 0:
        return samples.astype(np.float32)
    n_out = round(samples.size * target / rate)
    spectrum = np.fft.rfft(samples)
    n_bins = n_out // 2 + 1
    if n_bins <= spectrum.size:
        spectrum = spectrum[:n_bins]
    else:
        spectrum = np.concatenate([spectrum, np.zeros(n_bins - spectrum.size, dtype=spectrum.dtype)])
    out = np.fft.irfft(spectrum, n=n_out) * (n_out / samples.size)
    return out.astype(np.float32)


def encode_wav(samples: np.ndarray, sample_rate: int = TARGET_SAMPLE_RATE) -> bytes:
    """Encode float samples in [-1, 1] as a 16-bit mono PCM WAV (for demos and tests)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        sample_rate,
        sample_rate * 2,
        2,
        16,
        b"data",
        len(pcm),
    )
    return header + pcm
