"""Confidence and rejection, measured: a held-out engine, out-of-grammar speech, noise, humans.

``python -m streamproc_speech.heldout report`` generates (and caches under
``~/.cache/streamproc/speech-eval/``) the test set and reports, with sample sizes and
95 % confidence intervals, what the served code path does with it:

- commands: grammar phrases said by the festival engine (voices ``FESTIVAL_VOICES``; no
  training or selection step ever used festival), clean and mixed here with white and
  pink noise at 20 and 10 dB SNR (the SNR is measured on the mixed signal over the
  speech samples, not assumed): word error rate, command accuracy, rejection rate;
- requests and free speech outside the grammar, said by the same festival voices
  (texts of ``outside``'s test half): false-accept rate;
- non-speech: tone chords, melodies, noise bursts and clicks between silences;
- real human recordings of Debian ``pocketsphinx-testdata`` (none is a command).

Every figure is given without rejection (the baseline: whatever the grammar decoder
finds is emitted, as before confidence existed) and at the threshold.

``python -m streamproc_speech.heldout calibrate`` chooses the threshold on the
calibration set: the training engines' validation voices (espeak-ng ``VAL_VARIANTS``)
saying grammar phrases (clean and noisy) and ``outside``'s calibration texts. It picks
the threshold that minimises the sum of two error rates: on commands, accepted wrong
plus rejected right; on out-of-grammar speech, accepted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from streamproc_speech.confidence import judge
from streamproc_speech.data import coloured_noise, heldout_specs
from streamproc_speech.evaluate import LIBRIVOX, REAL_RECORDINGS, TESTDATA, edit_distance, read_testdata
from streamproc_speech.features import SAMPLE_RATE
from streamproc_speech.grammar import all_phrases, phrases
from streamproc_speech.outside import free_speech, requests
from streamproc_speech.recognizer import Transcriber, weights_path
from streamproc_speech.synth import FESTIVAL_VOICES, VAL_VARIANTS, ClipSpec, synthesize

EVAL_CACHE = Path.home() / ".cache" / "streamproc" / "speech-eval"
NOISE_CONDITIONS = (("white", 20.0), ("pink", 20.0), ("white", 10.0), ("pink", 10.0))
KINDS = ("command", "request", "free_speech", "non_speech", "real")
PAD_S = 0.3  # silence around each utterance, as around a real command
CALIBRATION_SEED = 2_000
THRESHOLD_GRID = tuple(round(x, 4) for x in np.concatenate([[0.0], np.logspace(-4, 0, 41)]))


@dataclass(frozen=True)
class EvalClip:
    """One test clip: ``kind`` "command" (``text`` is its transcript), "request",
    "free_speech", "non_speech" or "real" (all four: nothing should be accepted)."""

    kind: str
    text: str
    source: str  # engine:voice, a generator name or a recording file
    condition: str  # "clean" or e.g. "white 10 dB"
    snr_db: float | None  # measured on the mix, over the speech samples
    samples: np.ndarray


@dataclass(frozen=True)
class Decoded:
    """The served code path's findings on one clip, before any threshold: per utterance
    (hypothesis, unconstrained transcription, confidence)."""

    utterances: tuple[tuple[str, str, float], ...]

    def output(self, threshold: float) -> tuple[str, bool]:
        """(emitted text, rejected) at ``threshold``, as the plugin would emit them."""
        accepted = [h for h, heard, c in self.utterances if judge(h, heard, c, threshold) is None]
        return " ".join(accepted), not accepted

    def baseline(self) -> str:
        """What the recognizer emitted before confidence existed: every non-empty hypothesis."""
        return " ".join(h for h, _, _ in self.utterances if h)

    def reasons(self, threshold: float) -> list[str]:
        found = [judge(h, heard, c, threshold) for h, heard, c in self.utterances]
        return [r for r in found if r is not None] or (["non_speech"] if not self.utterances else [])


def pad(samples: np.ndarray) -> np.ndarray:
    silence = np.zeros(int(PAD_S * SAMPLE_RATE), np.float32)
    return np.concatenate([silence, samples.astype(np.float32), silence])


def mix_at_snr(speech: np.ndarray, colour: str, snr_db: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """``speech`` padded with silence plus ``colour`` noise over the whole clip, scaled so
    that speech power over noise power on the speech samples is ``snr_db``; returns the
    mix and the SNR measured on it (speech and noise as actually added, after int16-range
    clipping)."""
    clean = pad(speech)
    start, end = int(PAD_S * SAMPLE_RATE), int(PAD_S * SAMPLE_RATE) + len(speech)
    noise = coloured_noise(len(clean), rng, colour)
    speech_power = float(np.mean(np.square(speech, dtype=np.float64)))
    noise *= math.sqrt(speech_power / float(np.mean(np.square(noise[start:end]))) / 10 ** (snr_db / 10))
    mixed = np.clip(clean + noise, -1.0, 1.0).astype(np.float32)
    added = mixed.astype(np.float64) - clean
    measured = 10 * math.log10(speech_power / float(np.mean(np.square(added[start:end]))))
    return mixed, measured


def non_speech_clips(count: int, seed: int) -> list[EvalClip]:
    """``count`` sounds that are not speech, each between silences (so that the voice
    activity detector fires): tone chords, melodies of harmonic notes, noise bursts and
    trains of clicks, 0.5-2.5 s long, at random levels (deterministic for ``seed``)."""
    rng = np.random.default_rng(seed)
    kinds: tuple[tuple[str, Callable[[int], np.ndarray]], ...] = (
        ("chord", lambda n: sum(np.sin(2 * np.pi * f * np.arange(n) / SAMPLE_RATE) for f in rng.uniform(150, 900, 3))),
        ("melody", lambda n: _melody(n, rng)),
        ("noise burst", lambda n: coloured_noise(n, rng, str(rng.choice(["white", "pink", "brown"])))),
        ("clicks", lambda n: _clicks(n, rng)),
    )
    out = []
    for i in range(count):
        name, make = kinds[i % len(kinds)]
        n = int(rng.uniform(0.5, 2.5) * SAMPLE_RATE)
        sound = np.asarray(make(n), dtype=np.float64)
        sound *= 10 ** (rng.uniform(-30, -6) / 20) / (np.max(np.abs(sound)) + 1e-9)
        floor = rng.normal(0, 1e-4, n + 2 * int(PAD_S * SAMPLE_RATE))
        out.append(EvalClip("non_speech", "", name, "clean", None, (pad(sound) + floor).astype(np.float32)))
    return out


def _melody(n: int, rng: np.random.Generator) -> np.ndarray:
    notes = int(rng.integers(3, 9))
    out = np.zeros(n)
    for k, start in enumerate(np.linspace(0, n, notes, endpoint=False).astype(int)):
        length = n // notes
        t = np.arange(length) / SAMPLE_RATE
        f0 = 220 * 2 ** (int(rng.integers(0, 24)) / 12)
        note = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 5)) * np.exp(-3 * t)
        out[start : start + length] += note * (1 if k % 2 else 0.8)
    return out


def _clicks(n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    for start in rng.integers(0, max(1, n - 200), size=int(rng.integers(3, 12))):
        out[start : start + 200] += rng.standard_normal(200) * np.exp(-np.arange(200) / 30)
    return out


def _synthesize_cached(specs: list[ClipSpec], cache: Path, progress: Callable[[str], None]) -> list[np.ndarray]:
    """``specs`` synthesised, from ``cache`` when the same list was synthesised before."""
    key = hashlib.sha256(json.dumps([asdict(s) for s in specs]).encode()).hexdigest()[:16]
    path = cache / f"clips-{key}.npz"
    if path.exists():
        arrays = np.load(path)
        ends = np.cumsum(arrays["lengths"])
        audio = arrays["audio"].astype(np.float32) / 32767.0
        return [audio[e - n : e] for e, n in zip(ends, arrays["lengths"], strict=True)]
    clips = []
    for i, spec in enumerate(specs):
        clips.append(synthesize(spec))
        if (i + 1) % 100 == 0 or i + 1 == len(specs):
            progress(f"synthesised {i + 1}/{len(specs)} clips")
    cache.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(np.concatenate(clips), -1, 1) * 32767).astype(np.int16)
    np.savez(path, audio=pcm, lengths=np.array([len(c) for c in clips], dtype=np.int64))
    return clips


def _voices(half: str) -> list[tuple[str, str]]:
    """(engine, voice) pairs of ``half``: festival voices for "test", validation espeak-ng
    variants for "calibration"."""
    if half == "test":
        return [("festival", v) for v in FESTIVAL_VOICES]
    return [("espeak-ng", f"en-us+{v}") for v in VAL_VARIANTS]


def _spec(text: str, engine: str, voice: str, rng: random.Random) -> ClipSpec:
    if engine == "festival":
        return ClipSpec(text, engine, voice, speed=round(rng.uniform(0.85, 1.2), 3))
    return ClipSpec(text, engine, voice, speed=rng.randint(130, 210), pitch=rng.randint(25, 80))


def build_set(half: str, per_voice: int, cache: Path, progress: Callable[[str], None]) -> list[EvalClip]:
    """The evaluation clips of ``half`` ("test" or "calibration"); see the module docstring."""
    rng = random.Random(CALIBRATION_SEED if half == "calibration" else 0)
    voices = _voices(half)
    if half == "test":
        command_specs = heldout_specs(per_voice)
    else:
        command_specs = [
            _spec(text, engine, voice, rng)
            for i, (engine, voice) in enumerate(voices)
            for text in phrases(per_voice, CALIBRATION_SEED + i)
        ]
    grammar = set(all_phrases())
    outside = [("request", t) for t in requests(half)] + [("free_speech", t) for t in free_speech(half)]
    if any(t in grammar for _, t in outside):
        raise ValueError("an out-of-grammar text is a grammar phrase")
    outside_specs = [(kind, _spec(t, engine, voice, rng)) for kind, t in outside for engine, voice in voices]
    specs = command_specs + [s for _, s in outside_specs]
    audio = _synthesize_cached(specs, cache, progress)
    noise_rng = np.random.default_rng(CALIBRATION_SEED if half == "calibration" else 0)
    clips = []
    for spec, samples in zip(command_specs, audio[: len(command_specs)], strict=True):
        source = f"{spec.engine}:{spec.voice}"
        clips.append(EvalClip("command", spec.text, source, "clean", None, pad(samples)))
        for colour, snr in NOISE_CONDITIONS:
            mixed, measured = mix_at_snr(samples, colour, snr, noise_rng)
            clips.append(EvalClip("command", spec.text, source, f"{colour} {snr:.0f} dB", measured, mixed))
    for (kind, spec), samples in zip(outside_specs, audio[len(command_specs) :], strict=True):
        clips.append(EvalClip(kind, "", f"{spec.engine}:{spec.voice}", "clean", None, pad(samples)))
    clips += non_speech_clips(40, seed=CALIBRATION_SEED + 1 if half == "calibration" else 1)
    if half == "test":
        for name, said in {**REAL_RECORDINGS, **LIBRIVOX}.items():
            if (TESTDATA / name).exists():
                clips.append(EvalClip("real", said, name, "clean", None, read_testdata(name)))
    return clips


def decode_all(clips: Sequence[EvalClip], weights_dir: Path | None, progress: Callable[[str], None]) -> list[Decoded]:
    """Every clip through the plugin's code path (VAD, features, model, grammar decoder,
    confidence), 16 clips per forward pass."""
    transcriber = Transcriber(weights_dir, torch.device("cpu"), "grammar", min_confidence=0.0)
    out: list[Decoded] = []
    started = time.monotonic()
    for i in range(0, len(clips), 16):
        prepared = [transcriber.prepare(c.samples) for c in clips[i : i + 16]]
        for transcript in transcriber.transcribe(prepared):
            out.append(Decoded(tuple((u.hypothesis, u.heard, u.confidence) for u in transcript.utterances)))
        if len(out) % 160 == 0 or len(out) == len(clips):
            rate = len(out) / (time.monotonic() - started)
            progress(
                f"decoded {len(out)}/{len(clips)} clips ({rate:.1f}/s, ETA {(len(clips) - len(out)) / rate:.0f} s)"
            )
    return out


# ---- statistics


def wilson(successes: int, n: int) -> dict[str, float | int]:
    """A proportion with its 95 % Wilson score interval."""
    if n == 0:
        return {"n": 0, "rate": float("nan"), "ci95": [float("nan"), float("nan")]}
    z, p = 1.959964, successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"n": n, "count": successes, "rate": round(p, 4), "ci95": [round(centre - half, 4), round(centre + half, 4)]}


def wer_with_ci(refs: Sequence[str], hyps: Sequence[str], resamples: int = 1000, seed: int = 0) -> dict[str, object]:
    """Corpus word error rate with a 95 % bootstrap interval over clips."""
    edits = np.array([edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps, strict=True)], dtype=float)
    words = np.array([len(r.split()) for r in refs], dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(refs), size=(resamples, len(refs)))
    boot = edits[picks].sum(axis=1) / words[picks].sum(axis=1)
    return {
        "clips": len(refs),
        "words": int(words.sum()),
        "wer": round(float(edits.sum() / words.sum()), 4),
        "ci95": [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)],
    }


def command_figures(clips: Sequence[EvalClip], decoded: Sequence[Decoded], threshold: float) -> dict[str, object]:
    """On command clips: baseline WER and accuracy; at ``threshold``: WER of the accepted,
    accuracy (accepted and exactly right, over all), wrong accepts, rejections."""
    refs = [c.text for c in clips]
    base = [d.baseline() for d in decoded]
    at = [d.output(threshold) for d in decoded]
    accepted = [i for i, (_, rejected) in enumerate(at) if not rejected]
    right = sum(at[i][0] == refs[i] for i in accepted)
    return {
        "baseline_wer": wer_with_ci(refs, base),
        "baseline_command_accuracy": wilson(sum(b == r for b, r in zip(base, refs, strict=True)), len(refs)),
        "accuracy": wilson(right, len(refs)),
        "wrong_accepted": wilson(len(accepted) - right, len(refs)),
        "rejected": wilson(len(refs) - len(accepted), len(refs)),
        "precision_of_accepted": wilson(right, len(accepted)),
        "wer_of_accepted": wer_with_ci([refs[i] for i in accepted], [at[i][0] for i in accepted]) if accepted else None,
    }


def false_accept_figures(decoded: Sequence[Decoded], threshold: float) -> dict[str, object]:
    """On clips that are no command: how often something is emitted, without and with rejection."""
    reasons: dict[str, int] = {}
    for d in decoded:
        if d.output(threshold)[1]:
            for r in set(d.reasons(threshold)):
                reasons[r] = reasons.get(r, 0) + 1
    return {
        "baseline_false_accept": wilson(sum(bool(d.baseline()) for d in decoded), len(decoded)),
        "false_accept": wilson(sum(not d.output(threshold)[1] for d in decoded), len(decoded)),
        "rejection_reasons": reasons,
    }


def report(clips: Sequence[EvalClip], decoded: Sequence[Decoded], threshold: float) -> dict[str, object]:
    """Every figure of the module docstring at ``threshold``."""
    out: dict[str, object] = {"threshold": threshold, "clips": len(clips)}
    commands = [i for i, c in enumerate(clips) if c.kind == "command"]
    conditions = sorted({clips[i].condition for i in commands}, key=lambda c: (c != "clean", c))
    per_condition: dict[str, object] = {}
    for condition in conditions:
        idx = [i for i in commands if clips[i].condition == condition]
        figures = command_figures([clips[i] for i in idx], [decoded[i] for i in idx], threshold)
        snrs = [clips[i].snr_db for i in idx if clips[i].snr_db is not None]
        if snrs:
            figures["measured_snr_db"] = {
                "mean": round(float(np.mean(snrs)), 3),
                "min": round(min(snrs), 3),
                "max": round(max(snrs), 3),
            }
        per_condition[condition] = figures
    out["commands"] = per_condition
    clean = [i for i in commands if clips[i].condition == "clean"]
    out["commands_clean_per_voice"] = {
        source: command_figures(
            [clips[i] for i in clean if clips[i].source == source],
            [decoded[i] for i in clean if clips[i].source == source],
            threshold,
        )
        for source in sorted({clips[i].source for i in clean})
    }
    for kind in ("request", "free_speech", "non_speech", "real"):
        idx = [i for i, c in enumerate(clips) if c.kind == kind]
        if idx:
            out[kind] = false_accept_figures([decoded[i] for i in idx], threshold)
    real = [i for i, c in enumerate(clips) if c.kind == "real"]
    out["real_outputs"] = {
        clips[i].source: {
            "said": clips[i].text,
            "baseline": decoded[i].baseline(),
            "emitted": decoded[i].output(threshold)[0],
        }
        for i in real
    }
    return out


def calibration_cost(clips: Sequence[EvalClip], decoded: Sequence[Decoded], threshold: float) -> dict[str, float]:
    """The two error rates ``calibrate`` balances at ``threshold``, and their sum."""
    command_errors = commands = outside_accepts = outside = 0
    for clip, d in zip(clips, decoded, strict=True):
        text, rejected = d.output(threshold)
        if clip.kind == "command":
            commands += 1
            command_errors += (not rejected and text != clip.text) or (rejected and d.baseline() == clip.text)
        elif clip.kind in ("request", "free_speech"):
            outside += 1
            outside_accepts += not rejected
    command_rate, outside_rate = command_errors / commands, outside_accepts / outside
    return {
        "command_errors": round(command_rate, 4),
        "false_accepts": round(outside_rate, 4),
        "sum": round(command_rate + outside_rate, 4),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("report", "calibrate"))
    parser.add_argument("--weights", type=Path, default=None, help="default: the packaged weights")
    parser.add_argument("--per-voice", type=int, default=110, help="command phrases per voice")
    parser.add_argument("--threshold", type=float, default=None, help="default: the weights' calibrated one")
    parser.add_argument("--write-threshold", action="store_true", help="calibrate: store it in config.json")
    parser.add_argument("--cache", type=Path, default=EVAL_CACHE)
    parser.add_argument("--update-card", action="store_true", help="write the report into model_card.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {message}", file=sys.stderr, flush=True)

    half = "test" if args.action == "report" else "calibration"
    clips = build_set(half, args.per_voice, args.cache, progress)
    counts = {kind: sum(c.kind == kind for c in clips) for kind in KINDS}
    progress(f"{len(clips)} {half} clips: {counts}")
    decoded = decode_all(clips, args.weights, progress)
    if args.action == "calibrate":
        curve = {str(t): calibration_cost(clips, decoded, t) for t in THRESHOLD_GRID}
        best = min(THRESHOLD_GRID, key=lambda t: (curve[str(t)]["sum"], t))
        result: dict[str, object] = {"chosen_threshold": best, "curve": curve, "clips": len(clips)}
        if args.write_threshold:
            config_path = weights_path(args.weights) / "config.json"
            config = json.loads(config_path.read_text())
            config["min_confidence"] = best
            config_path.write_text(json.dumps(config, indent=2) + "\n")
    else:
        threshold = args.threshold
        if threshold is None:
            threshold = Transcriber(args.weights, torch.device("cpu"), "grammar").min_confidence
        result = report(clips, decoded, threshold)
    result["command"] = "python -m streamproc_speech.heldout " + " ".join(sys.argv[1:] if argv is None else argv)
    result["seconds"] = round(time.monotonic() - started)
    print(json.dumps(result, indent=2))
    if args.update_card:
        card_path = weights_path(args.weights) / "model_card.json"
        card = json.loads(card_path.read_text())
        card[f"heldout_engine_{args.action}"] = result
        card_path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
