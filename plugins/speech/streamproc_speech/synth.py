"""Synthetic speech: espeak-ng and flite for training, festival for the held-out test.

``python -m streamproc_speech.synth`` synthesises the training and validation clips
into a cache under ``~/.cache/streamproc/speech-data/`` (never inside the repository).
This module also owns the engine split, so that the held-out engine cannot leak into
training:

- train: espeak-ng, every variant except the validation ones, with each English accent;
  flite, all ``FLITE_VOICES``.
- validation (model selection and the rejection threshold only): espeak-ng variants
  ``VAL_VARIANTS``.
- test (never used in training or selection): the festival engine, ``FESTIVAL_VOICES``
  (see ``streamproc_speech.heldout``).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from streamproc.media import decode_wav
from streamproc_speech.features import VadConfig, speech_segments
from streamproc_speech.grammar import phrases

DEFAULT_CACHE = Path.home() / ".cache" / "streamproc" / "speech-data"
ESPEAK_ACCENTS = (
    "en",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-gb-x-rp",
    "en-029",
    "en-us-nyc",
)
VAL_VARIANTS = ("m6", "f4", "Lee", "klatt3")
FLITE_VOICES = ("kal", "kal16", "slt", "rms", "awb")
FLITE_SHARE = 0.3  # share of training clips spoken by flite voices
TRAINING_ENGINES = ("espeak-ng", "flite")
# Debian festival voices (festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts). kal and
# slt are the same speakers as flite's kal and slt (other engines, other signal
# processing); ked is a speaker no training engine has.
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")


@dataclass(frozen=True)
class ClipSpec:
    """How to say one phrase: engine, voice and prosody (espeak-ng words/min and pitch)."""

    text: str
    engine: str  # "espeak-ng", "flite" or "festival"
    voice: str  # "en-us+m3" for espeak-ng, "kal" for flite, "ked_diphone" for festival
    speed: float = 1.0  # espeak-ng: words per minute; flite and festival: duration stretch
    pitch: int = 50
    word_gap: int = 0


def espeak_variants() -> tuple[str, ...]:
    """The espeak-ng voice variants installed, sorted (names without spaces)."""
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    names = {line.split()[-1].removeprefix("!v/") for line in out.splitlines()[1:] if "!v/" in line}
    return tuple(sorted(n for n in names if " " not in n))


def train_variants() -> tuple[str, ...]:
    """espeak-ng variants used for training: all but the validation ones."""
    held = {v.lower() for v in VAL_VARIANTS}
    return tuple(v for v in espeak_variants() if v.lower() not in held)


def synthesize(spec: ClipSpec) -> np.ndarray:
    """Say ``spec.text``; 16 kHz mono float32 samples, trimmed to the speech.

    Raises ``RuntimeError`` when the synthesiser fails.
    """
    if spec.engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", spec.voice, "-s", str(int(spec.speed)), "-p", str(spec.pitch)]
        cmd += ["-g", str(spec.word_gap), "--stdout", spec.text]
        proc = subprocess.run(cmd, capture_output=True, check=False)
        wav = proc.stdout
    elif spec.engine == "flite":
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            cmd = ["flite", "-voice", spec.voice, "--setf", f"duration_stretch={spec.speed:.3f}"]
            proc = subprocess.run([*cmd, "-t", spec.text, "-o", tmp.name], capture_output=True)
            wav = Path(tmp.name).read_bytes()
    elif spec.engine == "festival":
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            cmd = ["text2wave", "-eval", f"(voice_{spec.voice})"]
            cmd += ["-eval", f"(Parameter.set 'Duration_Stretch {spec.speed:.3f})", "-o", tmp.name]
            proc = subprocess.run(cmd, input=spec.text.encode(), capture_output=True)
            wav = Path(tmp.name).read_bytes()
    else:
        raise ValueError(f"unknown engine {spec.engine!r}")
    if proc.returncode != 0 or not wav:
        raise RuntimeError(f"{spec.engine} failed for {spec}: {proc.stderr[-200:]!r}")
    return trim(decode_wav(wav))


def trim(samples: np.ndarray) -> np.ndarray:
    """Cut leading and trailing silence, keeping 50 ms around the speech."""
    segments = speech_segments(samples, VadConfig(pad_s=0.05, max_segment_s=60.0))
    if not segments:
        return samples[:0]
    return samples[segments[0].start : segments[-1].end]


def training_specs(count: int, seed: int, variants: tuple[str, ...]) -> list[ClipSpec]:
    """``count`` clip specs over ``variants`` and the flite voices (seeded); never festival."""
    rng = random.Random(seed)
    specs = []
    for text in phrases(count, seed):
        if rng.random() < FLITE_SHARE:
            voice = rng.choice(FLITE_VOICES)
            specs.append(ClipSpec(text, "flite", voice, speed=round(rng.uniform(0.8, 1.3), 3)))
        else:
            voice = f"{rng.choice(ESPEAK_ACCENTS)}+{rng.choice(variants)}"
            specs.append(
                ClipSpec(
                    text,
                    "espeak-ng",
                    voice,
                    speed=rng.randint(110, 230),
                    pitch=rng.randint(15, 90),
                    word_gap=rng.choice((0, 0, 0, 1, 2, 4)),
                )
            )
    return specs


def validation_specs(count: int, seed: int) -> list[ClipSpec]:
    """Validation clips: the validation espeak-ng variants only (seeded)."""
    rng = random.Random(seed)
    return [
        ClipSpec(
            text,
            "espeak-ng",
            f"{rng.choice(ESPEAK_ACCENTS)}+{rng.choice(VAL_VARIANTS)}",
            speed=rng.randint(130, 210),
            pitch=rng.randint(25, 80),
        )
        for text in phrases(count, seed)
    ]


def synthesize_all(specs: list[ClipSpec], workers: int) -> list[np.ndarray]:
    """Synthesise ``specs`` in order with up to ``workers`` processes."""
    if workers <= 1:
        return [synthesize(s) for s in specs]
    with Pool(workers) as pool:
        return pool.map(synthesize, specs, chunksize=32)


def save_split(path: Path, specs: list[ClipSpec], clips: list[np.ndarray]) -> None:
    """Write clips as one int16 array with offsets (``.npz``) plus specs (``.json``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    audio = np.concatenate(clips) if clips else np.zeros(0, np.float32)
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    np.savez(path.with_suffix(".npz"), audio=pcm, lengths=lengths)
    path.with_suffix(".json").write_text(json.dumps([asdict(s) for s in specs]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_CACHE, help="cache folder")
    parser.add_argument("--train", type=int, default=8000, help="training clips")
    parser.add_argument("--val", type=int, default=400, help="validation clips")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes (<= 2)")
    args = parser.parse_args(argv)
    for name, specs in (
        ("train", training_specs(args.train, args.seed, train_variants())),
        ("val", validation_specs(args.val, args.seed + 1)),
    ):
        started = time.monotonic()
        clips = synthesize_all(specs, min(args.workers, 2))
        keep = [i for i, c in enumerate(clips) if len(c) > 0]
        save_split(args.out / name, [specs[i] for i in keep], [clips[i] for i in keep])
        seconds = sum(len(clips[i]) for i in keep) / 16_000
        print(
            f"{name}: {len(keep)} clips ({len(specs) - len(keep)} empty dropped), "
            f"{seconds / 60:.1f} min of audio, {time.monotonic() - started:.0f} s",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
