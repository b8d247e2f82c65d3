"""Signal processing before the network: log-mel features and voice-activity segmentation.

``log_mel`` turns 16 kHz mono samples into normalised 80-band log-mel frames (25 ms
window, 10 ms hop) with torch only. ``speech_segments`` is an energy-based voice
activity detector: it finds the stretches of speech in long audio, so that each
utterance is recognised on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

SAMPLE_RATE = 16_000
N_MELS = 80
WIN = 400  # 25 ms
HOP = 160  # 10 ms
F_MIN, F_MAX = 20.0, 7_600.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=1)
def mel_filterbank() -> torch.Tensor:
    """Triangular HTK-mel filters, shape (n_fft // 2 + 1, N_MELS), each of unit area."""
    n_freqs = WIN // 2 + 1
    freqs = np.linspace(0.0, SAMPLE_RATE / 2, n_freqs)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(F_MIN)), _hz_to_mel(np.array(F_MAX)), N_MELS + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= 2.0 / (upper - lower)
    return torch.from_numpy(weights.T.astype(np.float32))


def log_mel(samples: np.ndarray) -> torch.Tensor:
    """Normalised log-mel features of one utterance, shape (frames, N_MELS), float32.

    ``samples``: 16 kHz mono float samples. Each band has its mean over the utterance
    removed (channel normalisation) and the whole is scaled to unit variance (gain
    normalisation), so the features do not depend on the recording level. Audio
    shorter than one window is zero-padded to one frame.
    """
    wave = torch.from_numpy(np.asarray(samples, dtype=np.float32))
    if wave.numel() < WIN:
        wave = torch.nn.functional.pad(wave, (0, WIN - wave.numel()))
    spec = torch.stft(
        wave,
        n_fft=WIN,
        hop_length=HOP,
        window=torch.hann_window(WIN),
        center=False,
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()  # (freqs, frames)
    mel = torch.log(power.T @ mel_filterbank() + 1e-6)
    mel = mel - mel.mean(dim=0, keepdim=True)
    return mel / (mel.std() + 1e-5)


@dataclass(frozen=True)
class Segment:
    """One stretch of speech, in samples of the 16 kHz signal: ``[start, end)``."""

    start: int
    end: int

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE


def frame_energy_db(samples: np.ndarray) -> np.ndarray:
    """RMS level in dBFS of 25 ms frames every 10 ms (``-inf`` for digital silence)."""
    n_frames = 1 + (len(samples) - WIN) // HOP if len(samples) >= WIN else 0
    if n_frames == 0:
        return np.zeros(0)
    idx = np.arange(WIN)[None, :] + HOP * np.arange(n_frames)[:, None]
    rms = np.sqrt(np.mean(np.square(samples[idx], dtype=np.float64), axis=1))
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(rms)


@dataclass(frozen=True)
class VadConfig:
    """Voice activity detector settings (seconds and dB).

    A frame is speech when its level is above all of: ``floor_margin_db`` over the noise
    floor (the 5th percentile of frame levels), ``peak_range_db`` below the loudest
    frames (99th percentile), and ``absolute_db``. Pauses shorter than ``min_pause_s``
    are bridged (they are gaps between words, not between utterances); bursts shorter
    than ``min_speech_s`` are dropped (clicks); each segment is widened by ``pad_s`` on
    both sides and cut into pieces of at most ``max_segment_s``.
    """

    floor_margin_db: float = 12.0
    peak_range_db: float = 40.0
    absolute_db: float = -60.0
    min_pause_s: float = 0.45
    min_speech_s: float = 0.08
    pad_s: float = 0.3
    max_segment_s: float = 8.0


def speech_segments(samples: np.ndarray, config: VadConfig = VadConfig()) -> list[Segment]:
    """The speech segments of 16 kHz mono ``samples``, in time order, non-overlapping.

    Silence (digital or below ``config.absolute_db``) and empty audio give ``[]``.
    """
    levels = frame_energy_db(samples)
    if levels.size == 0 or not np.isfinite(levels).any():
        return []
    finite = np.where(np.isfinite(levels), levels, -200.0)
    floor, peak = np.percentile(finite, 5), np.percentile(finite, 99)
    threshold = max(floor + config.floor_margin_db, peak - config.peak_range_db, config.absolute_db)
    active = finite > threshold
    frames_per_s = SAMPLE_RATE / HOP
    runs = _runs(active)
    # bridge short pauses, then drop short bursts
    merged: list[list[int]] = []
    for start, end in runs:
        if merged and start - merged[-1][1] < config.min_pause_s * frames_per_s:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    pad = int(config.pad_s * SAMPLE_RATE)
    max_len = int(config.max_segment_s * SAMPLE_RATE)
    segments: list[Segment] = []
    for start, end in merged:
        if end - start < config.min_speech_s * frames_per_s:
            continue
        lo = max(0, start * HOP - pad)
        hi = min(len(samples), (end - 1) * HOP + WIN + pad)
        if segments and lo < segments[-1].end:
            lo = segments[-1].end
        for piece in range(lo, hi, max_len):
            segments.append(Segment(piece, min(hi, piece + max_len)))
    return segments


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges where ``mask`` is true."""
    padded = np.concatenate([[False], mask, [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(changes[::2].tolist(), changes[1::2].tolist(), strict=True))
