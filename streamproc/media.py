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


def decode_image(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    max_bytes: int | None = None,
    needed_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode PNG/JPEG bytes of any mode into an 8-bit ``L`` or ``RGB`` image.

    Guards: the encoded size is refused above ``max_bytes`` (when given); the format is
    sniffed; the pixel count is read from the header and refused above ``max_pixels``
    before any pixel is decoded (decompression bombs); truncated or corrupt files raise
    ``MediaError``. Transparent images are composited on white; 16-bit images are
    scaled to 8 bits; palettes are expanded.

    ``needed_size`` (width, height) is the smallest image the caller needs: the image is
    reduced by the largest integer factor that keeps both sides at least that big,
    inside the JPEG decoder (DCT scaling by 1/2, 1/4 or 1/8) and then by box averaging.
    A caller that needs 28x28 pixels never pays for a full-resolution 4000x4000 image.

    Memory: PNG has no reduced decoding, so its pixels are decoded whole in their own
    mode (1 byte per pixel for palette and 8-bit gray, 2 for 16-bit gray, 4 for colour);
    every conversion (16-bit scaling, palette expansion, compositing) then runs on bands
    of about ``BAND_PIXELS`` pixels, each reduced before the next is converted. The peak
    is the decoded image, plus the output, plus one band's conversion
    (``peak_decode_bytes`` states the bound).
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise MediaError(f"image: {len(data)} bytes exceeds the limit of {max_bytes}")
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
            if needed_size is not None and fmt == "jpeg":
                image.draft(None, needed_size)
            image.load()
            return _to_8bit(image, _reduce_factor(image.size, needed_size))
    except MediaError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise MediaError(f"image: refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:  # its message holds the repr of our BytesIO: same cause, other words
        raise MediaError(f"image: corrupt or truncated {fmt.upper()} (the decoder cannot identify it)") from None
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        raise MediaError(f"image: corrupt or truncated {fmt.upper()} ({exc})") from None


BAND_PIXELS = 1 << 20
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}


def peak_decode_bytes(width: int, height: int, mode: str, factor: int = 1) -> int:
    """Upper bound of the pixel memory ``decode_image`` holds at once for an image.

    The decoded image in its own ``mode`` (Pillow stores every multi-channel 8-bit mode
    and every 32-bit mode in 4 bytes per pixel), the 8-bit output reduced by ``factor``
    and one band's conversion (at most 24 bytes per pixel of ``BAND_PIXELS``: the
    cropped band and its expansions, as float32 samples or as RGBA, background and
    composite).
    """
    source = width * height * _BYTES_PER_PIXEL.get(mode, 4)
    output = -(-width // factor) * -(-height // factor) * (1 if _output_mode(mode) == "L" else 4)
    return source + output + 24 * BAND_PIXELS


def _output_mode(mode: str) -> str:
    return "L" if mode in (*_SIXTEEN_BIT_MODES, "1", "L") else "RGB"


def _reduce_factor(size: tuple[int, int], needed_size: tuple[int, int] | None) -> int:
    if needed_size is None:
        return 1
    return max(1, min(size[0] // max(1, needed_size[0]), size[1] // max(1, needed_size[1])))


def _to_8bit(image: Image.Image, factor: int) -> Image.Image:
    """``image`` as ``L`` or ``RGB``, reduced by ``factor``, converted band by band."""
    if image.mode in ("L", "RGB"):
        return image.reduce(factor) if factor > 1 else image
    width, height = image.size
    scale = _sixteen_bit_scale(image) if image.mode in _SIXTEEN_BIT_MODES else 1.0
    output = Image.new(_output_mode(image.mode), (-(-width // factor), -(-height // factor)))
    band_rows = max(factor, BAND_PIXELS // width // factor * factor)
    for top in range(0, height, band_rows):
        band = _band_to_8bit(image.crop((0, top, width, min(height, top + band_rows))), scale)
        output.paste(band.reduce(factor) if factor > 1 else band, (0, top // factor))
    return output


def _sixteen_bit_scale(image: Image.Image) -> float:
    _, peak = image.getextrema()
    return 255.0 / float(peak) if peak > 255 else 1.0


def _band_to_8bit(band: Image.Image, scale: float) -> Image.Image:
    if band.mode in _SIXTEEN_BIT_MODES:
        array = np.asarray(band, dtype=np.float32) * np.float32(scale)
        return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    if band.mode == "P":
        band = band.convert("RGBA")
    if band.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", band.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, band.convert("RGBA")).convert("RGB")
    if band.mode == "1":
        return band.convert("L")
    return band.convert("RGB")


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
