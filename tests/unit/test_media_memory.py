"""Image decoding is bounded in memory by ``peak_decode_bytes`` and reduced to what the caller needs.

Each decode runs in a fresh Python process that reports its resident-memory growth
(peak resident set after the decode minus the resident set just before it) and its
decoding time; the bomb files are generated here, small on disk and huge in pixels.
Run with ``-s`` to see the figures (timings are reported, never asserted).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

from PIL import Image

from streamproc.media import decode_image, peak_decode_bytes

SLACK_BYTES = 16 * 1024 * 1024  # the interpreter's own allocations during one decode
MEASURE = """
import json, resource, sys, time
from pathlib import Path
from streamproc.media import decode_image
def peak_resident():  # VmHWM belongs to this process image (ru_maxrss would carry the parent's over exec)
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024
data = Path(sys.argv[1]).read_bytes()
needed = tuple(json.loads(sys.argv[2])) if sys.argv[2] != "null" else None
decode_image(Path(sys.argv[3]).read_bytes())  # warm-up: Pillow's plugins load lazily
with open("/proc/self/statm") as statm:
    before = int(statm.read().split()[1]) * resource.getpagesize()
start = time.perf_counter()
image = decode_image(data, needed_size=needed)
seconds = time.perf_counter() - start
print(json.dumps({"growth": peak_resident() - before, "seconds": seconds, "size": image.size, "mode": image.mode}))
"""


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int, bit_depth: int, color_type: int, row: bytes, extra: bytes = b"") -> bytes:
    """A PNG of ``height`` identical rows, compressed row by row (the test never holds its pixels)."""
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(b"\0" + row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + extra + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def measure(tmp_path: Path, data: bytes, needed: tuple[int, int] | None = None) -> dict:
    bomb, small = tmp_path / "bomb", tmp_path / "small.png"
    bomb.write_bytes(data)
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "PNG")
    small.write_bytes(buffer.getvalue())
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(bomb), json.dumps(needed), str(small)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    figures = json.loads(done.stdout)
    print(f"{len(data)} B, needed {needed}: +{figures['growth'] / 2**20:.0f} MiB, {figures['seconds'] * 1000:.0f} ms")
    return figures


def test_sixteen_bit_png_bomb_decodes_within_its_memory_bound(tmp_path: Path) -> None:
    side = 6000  # 36 Mpx, under the default 40 Mpx guard: ~1 GB and 1.5 s before bands
    data = png_bomb(side, side, 16, 0, struct.pack(">H", 60000) * side)
    assert len(data) < 100_000
    figures = measure(tmp_path, data)
    assert figures["size"] == [side, side] and figures["mode"] == "L"
    assert figures["growth"] < peak_decode_bytes(side, side, "I;16") + SLACK_BYTES


def test_transparent_palette_png_bomb_decodes_within_its_memory_bound(tmp_path: Path) -> None:
    side = 6000
    palette = png_chunk(b"PLTE", bytes([0, 0, 0, 255, 0, 0])) + png_chunk(b"tRNS", bytes([0, 255]))
    data = png_bomb(side, side, 8, 3, bytes(side), palette)
    figures = measure(tmp_path, data)
    assert figures["size"] == [side, side] and figures["mode"] == "RGB"
    assert figures["growth"] < peak_decode_bytes(side, side, "P") + SLACK_BYTES


def test_bomb_reduced_to_the_needed_size_holds_only_the_decoded_image_and_a_band(tmp_path: Path) -> None:
    side = 6000
    data = png_bomb(side, side, 16, 0, struct.pack(">H", 60000) * side)
    figures = measure(tmp_path, data, (28, 28))
    assert figures["size"] == [-(-side // (side // 28))] * 2  # box reduction rounds up
    assert figures["growth"] < peak_decode_bytes(side, side, "I;16", side // 28) + SLACK_BYTES


def test_large_jpeg_is_decoded_reduced_in_the_decoder_when_the_model_needs_few_pixels(tmp_path: Path) -> None:
    side = 4000
    shades = Image.linear_gradient("L").resize((side, side)), Image.radial_gradient("L").resize((side, side))
    grain = Image.effect_noise((side, side), 8)  # a smooth photo-like picture with sensor noise
    buffer = io.BytesIO()
    Image.merge("RGB", (*shades, grain)).save(buffer, "JPEG", quality=90)
    full = measure(tmp_path, buffer.getvalue())
    reduced = measure(tmp_path, buffer.getvalue(), (28, 28))
    assert full["size"] == [side, side]
    assert 28 <= min(reduced["size"]) < 56
    draft = side // 8  # libjpeg's smallest DCT scale: the decoder never makes more than this
    assert reduced["growth"] < peak_decode_bytes(draft, draft, "RGB", draft // 28) + SLACK_BYTES
    assert reduced["growth"] < full["growth"]


def test_reduced_decode_keeps_both_sides_at_least_the_needed_size() -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (300, 90), (0, 0, 0, 0)).save(buffer, "PNG")
    image = decode_image(buffer.getvalue(), needed_size=(28, 28))
    assert image.size == (100, 30) and image.getpixel((0, 0)) == (255, 255, 255)
