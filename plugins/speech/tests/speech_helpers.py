"""Helpers for the speech plugin tests: held-out voices saying commands, WAV files, events."""

from __future__ import annotations

import struct

import numpy as np
from streamproc_speech.synth import ClipSpec, synthesize

from streamproc.events import AudioEvent


def say(text: str, voice: str = "rms") -> np.ndarray:
    """``text`` spoken by a flite voice (rms or awb), 16 kHz float32, with 0.3 s of silence around
    (as around a real command: speech cut off at its last sample is heard cut off)."""
    silence = np.zeros(4_800, np.float32)
    return np.concatenate([silence, synthesize(ClipSpec(text, "flite", voice)), silence])


def say_heldout(text: str, voice: str = "ked_diphone") -> np.ndarray:
    """``text`` spoken by the held-out engine (festival), 16 kHz float32, with 0.3 s of silence around."""
    silence = np.zeros(4_800, np.float32)
    return np.concatenate([silence, synthesize(ClipSpec(text, "festival", voice)), silence])


def wav_bytes(samples: np.ndarray, rate: int = 16_000, channels: int = 1, bits: int = 16) -> bytes:
    """Encode float samples (frames x channels, or mono) as a PCM WAV file."""
    frames = samples.reshape(len(samples), -1 if samples.size else 1)
    frames = np.repeat(frames, channels, axis=1) if frames.shape[1] == 1 else frames
    scale = float(2 ** (bits - 1) - 1)
    ints = np.round(np.clip(frames, -1, 1) * scale).astype(np.int64).reshape(-1)
    width = bits // 8
    if width == 3:  # little-endian 24-bit: the low three bytes of each int32
        data = ints.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        data = ints.astype(f"<i{width}").tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16, 1, channels, rate,
        rate * channels * width, channels * width, bits, b"data", len(data),
    )  # fmt: skip
    return header + data


def audio_event(audio: bytes | None, event_id: str = "e1", language: str = "en", **extra: object) -> AudioEvent:
    return AudioEvent(
        id=event_id, type="audio", ts=0, user_id="u1", audio_id=f"a-{event_id}", audio=audio, language=language, **extra
    )
