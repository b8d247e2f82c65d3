"""The detector decodes an upload reduced to what its model needs: a 16-bit PNG bomb
(6000x6000 pixels in under 100 kB, ~1 GB to decode naively) costs at most
``peak_decode_bytes`` at the reduction factor, measured in a fresh process around
``prepare`` alone (the model is loaded before the measurement starts)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

from streamproc_detector.plugin import DECODE_SIZE

from streamproc.media import peak_decode_bytes

SLACK_BYTES = 16 * 1024 * 1024  # the interpreter's own allocations during one prepare
MEASURE = """
import json, resource, sys
from pathlib import Path
import torch
from streamproc.events import UploadEvent
from streamproc.testing import PluginHarness
torch.set_num_threads(1)
def peak_resident():  # VmHWM belongs to this process image
    return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) * 1024
def upload(path):
    data = Path(path).read_bytes()
    return UploadEvent(id="e", type="upload", ts=1_700_000_000_000, user_id="u", upload_id="up", image=data)
harness = PluginHarness.load("detector")
harness.plugin.prepare(upload(sys.argv[2]), None)  # warm-up: Pillow's plugins load lazily
bomb = upload(sys.argv[1])
with open("/proc/self/statm") as statm:
    before = int(statm.read().split()[1]) * resource.getpagesize()
fitted = harness.plugin.prepare(bomb, None)
print(json.dumps({"growth": peak_resident() - before, "size": [fitted.width, fitted.height]}))
"""


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def sixteen_bit_png(side: int) -> bytes:
    """A 16-bit gray PNG of ``side`` x ``side`` identical rows, compressed row by row."""
    row = b"\0" + struct.pack(">H", 60000) * side
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def test_a_png_bomb_upload_is_decoded_reduced_within_its_memory_bound(tmp_path: Path) -> None:
    side = 6000
    bomb, small = tmp_path / "bomb.png", tmp_path / "small.png"
    bomb.write_bytes(sixteen_bit_png(side))
    small.write_bytes(sixteen_bit_png(8))
    assert bomb.stat().st_size < 100_000
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(bomb), str(small)], capture_output=True, text=True, check=True, timeout=120
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    bound = peak_decode_bytes(side, side, "I;16", side // DECODE_SIZE[0]) + SLACK_BYTES
    print(
        f"prepare of a {side}x{side} 16-bit PNG: +{figures['growth'] / 2**20:.0f} MiB (bound {bound / 2**20:.0f} MiB)"
    )
    assert figures["size"] == [side, side]  # boxes are still reported in the upload's pixels
    assert figures["growth"] < bound
