"""Datasets: the cached synthetic training clips, augmentation, and the held-out test set.

Training and validation clips come from the cache that ``streamproc_speech.synth``
writes. ``Augmenter`` perturbs training clips on the fly (speed, gain, silence margins,
room reverb, coloured noise), seeded. ``heldout_specs`` lists the deterministic
held-out test clips: voices that neither training nor model selection ever heard
(flite ``rms`` and ``awb``, espeak-ng variants ``TEST_VARIANTS``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamproc.media import resample
from streamproc_speech.features import SAMPLE_RATE
from streamproc_speech.grammar import phrases
from streamproc_speech.synth import DEFAULT_CACHE, FESTIVAL_VOICES, ClipSpec

HELDOUT_SEED = 1_000


@dataclass(frozen=True)
class Clip:
    """One utterance: 16 kHz mono float32 samples and its transcript."""

    samples: np.ndarray
    text: str
    voice: str


def load_split(name: str, cache: Path = DEFAULT_CACHE) -> list[Clip]:
    """The clips of split ``name`` ("train" or "val") from the synthesis cache.

    Raises ``FileNotFoundError`` with the command to run when the cache is missing.
    """
    npz, meta = (cache / name).with_suffix(".npz"), (cache / name).with_suffix(".json")
    if not npz.exists() or not meta.exists():
        raise FileNotFoundError(f"{npz} missing: run `python -m streamproc_speech.synth` first")
    arrays = np.load(npz)
    specs = json.loads(meta.read_text())
    ends = np.cumsum(arrays["lengths"])
    audio = arrays["audio"].astype(np.float32) / 32767.0
    return [
        Clip(audio[end - length : end], spec["text"], f"{spec['engine']}:{spec['voice']}")
        for spec, end, length in zip(specs, ends, arrays["lengths"], strict=True)
    ]


def coloured_noise(length: int, rng: np.random.Generator, colour: str) -> np.ndarray:
    """``length`` samples of white, pink (power ~ 1/f) or brown (~ 1/f^2) noise, float64."""
    white = rng.standard_normal(length)
    if colour == "white":
        return white
    spectrum = np.fft.rfft(white)
    freqs = np.maximum(np.fft.rfftfreq(length, 1 / SAMPLE_RATE), 20.0)
    spectrum /= np.sqrt(freqs) if colour == "pink" else freqs
    return np.fft.irfft(spectrum, n=length)


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator, colour: str) -> np.ndarray:
    """``samples`` plus white, pink or brown noise at ``snr_db`` below the signal power."""
    noise = coloured_noise(len(samples), rng, colour)
    signal_power = float(np.mean(np.square(samples))) + 1e-12
    noise *= np.sqrt(signal_power / (np.mean(np.square(noise)) + 1e-12) / 10 ** (snr_db / 10))
    return (samples + noise).astype(np.float32)


def add_reverb(samples: np.ndarray, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """``samples`` convolved with a synthetic room response (decaying noise tail)."""
    n = int(rt60_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    response = rng.standard_normal(n) * np.exp(-6.9 * t / rt60_s) * 0.3
    response[0] = 1.0
    size = 1 << (len(samples) + n - 1).bit_length()  # a fast FFT length
    wet = np.fft.irfft(np.fft.rfft(samples, size) * np.fft.rfft(response, size), size)[: len(samples)]
    peak = np.max(np.abs(wet)) + 1e-9
    return (wet * min(1.0, 0.9 / peak) if peak > 0.9 else wet).astype(np.float32)


class Augmenter:
    """Seeded random perturbation of training clips (returns new arrays)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        rng = self.rng
        speed = rng.uniform(0.85, 1.1)
        x = resample(samples, int(SAMPLE_RATE * speed), SAMPLE_RATE)
        margins = (rng.uniform(0.03, 0.35, size=2) * SAMPLE_RATE).astype(int)
        x = np.concatenate([np.zeros(margins[0], np.float32), x, np.zeros(margins[1], np.float32)])
        x = x * (10 ** (rng.uniform(-25, 0) / 20) / (np.max(np.abs(x)) + 1e-9))
        if rng.random() < 0.2:
            x = telephone_band(x)
        if rng.random() < 0.3:
            x = add_reverb(x, rng.uniform(0.15, 0.7), rng)
        if rng.random() < 0.6:
            x = add_noise(x, rng.uniform(0, 30), rng, str(rng.choice(["white", "pink", "brown"])))
        else:  # a faint floor, so that digital silence is never the only silence seen
            x = add_noise(x, rng.uniform(45, 70), rng, "white")
        return x.astype(np.float32)


def telephone_band(samples: np.ndarray) -> np.ndarray:
    """``samples`` through an 8 kHz telephone channel: 300-3400 Hz band, back at 16 kHz."""
    narrow = resample(samples, SAMPLE_RATE, 8_000)
    spectrum = np.fft.rfft(narrow)
    freqs = np.fft.rfftfreq(len(narrow), 1 / 8_000)
    spectrum[(freqs < 300) | (freqs > 3_400)] = 0
    return resample(np.fft.irfft(spectrum, n=len(narrow)).astype(np.float32), 8_000, SAMPLE_RATE)[: len(samples)]


def heldout_specs(per_voice: int, seed: int = HELDOUT_SEED) -> list[ClipSpec]:
    """``per_voice`` in-grammar clips for each festival voice, duration stretch 0.85-1.2
    (deterministic for ``seed``)."""
    rng = random.Random(seed)
    specs: list[ClipSpec] = []
    for i, voice in enumerate(FESTIVAL_VOICES):
        for text in phrases(per_voice, seed + i):
            specs.append(ClipSpec(text, "festival", voice, speed=round(rng.uniform(0.85, 1.2), 3)))
    return specs


def degrade(samples: np.ndarray, condition: str, seed: int) -> np.ndarray:
    """A held-out clip under ``condition``: "clean", "noisy" (10 dB SNR white or pink
    noise) or "reverb" (RT60 0.5 s). Deterministic for ``seed``; silence margins of
    0.3 s are added first, as around a real utterance.
    """
    rng = np.random.default_rng(seed)
    pad = np.zeros(int(0.3 * SAMPLE_RATE), np.float32)
    x = np.concatenate([pad, samples, pad])
    if condition == "noisy":
        return add_noise(x, 10.0, rng, "white" if seed % 2 else "pink")
    if condition == "reverb":
        return add_reverb(x, 0.5, rng)
    if condition != "clean":
        raise ValueError(f"unknown condition {condition!r}")
    return x
