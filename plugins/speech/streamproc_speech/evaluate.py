"""Held-out evaluation: word error rate of the shipped model next to pocketsphinx.

``evaluate`` synthesises held-out command clips (the festival engine, never used in
training or model selection, see ``streamproc_speech.synth``), degrades them per
condition (clean, 10 dB noise, reverb) and transcribes them with the model (grammar-constrained,
lexicon-constrained and greedy decoding) and with PyPI ``pocketsphinx`` (its default
English language model, and a JSGF grammar of the same command language). ``real_recordings`` does the same on the human
recordings of Debian's ``pocketsphinx-testdata`` whose words overlap the vocabulary.
``segmentation_accuracy`` measures the voice activity detector on concatenated clips
with known boundaries. ``python -m streamproc_speech.evaluate`` prints all as JSON.
Confidence and rejection are measured by ``streamproc_speech.heldout``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from streamproc_speech.data import degrade, heldout_specs
from streamproc_speech.features import SAMPLE_RATE, speech_segments
from streamproc_speech.grammar import jsgf, vocabulary
from streamproc_speech.recognizer import DECODERS, Transcriber
from streamproc_speech.synth import FESTIVAL_VOICES, synthesize

TESTDATA = Path("/usr/share/pocketsphinx/test/data")
# Recordings of pocketsphinx-testdata with a known transcript that shares words with
# the command vocabulary (the card names and "meters" are outside it).
REAL_RECORDINGS = {
    "cards/001.wav": "ten of clubs",
    "cards/002.wav": "four queen of clubs",
    "cards/003.wav": "seven of clubs",
    "cards/004.wav": "five five",
    "cards/005.wav": "eight of spades four of clubs seven of hearts",
    "goforward.raw": "go forward ten meters",
    "tidigits/dhd.2934z.raw": "two nine three four zero",
}
# Read speech of the same package (LibriVox, Sense and Sensibility): no word is a command.
LIBRIVOX = {
    "librivox/sense_and_sensibility_01_austen_64kb-0880.wav": "he was not an ill disposed young man",
    "librivox/sense_and_sensibility_01_austen_64kb-0890.wav": "unless to be rather cold hearted and rather selfish "
    "is to be ill disposed",
    "librivox/sense_and_sensibility_01_austen_64kb-0930.wav": "he might even have been made amiable himself",
}
# pocketsphinx's dictionary lacks this word of the grammar; give it a pronunciation.
EXTRA_PRONUNCIATIONS = {"unmute": "AH N M Y UW T"}


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER: word edits over reference words (0.0 for no reference words)."""
    edits = sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps, strict=True))
    words = sum(len(r.split()) for r in refs)
    return edits / words if words else 0.0


class Pocketsphinx:
    """PyPI pocketsphinx with its default en-us model: ``mode`` "lm" or "grammar"."""

    def __init__(self, mode: str) -> None:
        from pocketsphinx import Decoder  # the eval extra

        self._grammar_file = None
        if mode == "grammar":
            self._grammar_file = tempfile.NamedTemporaryFile("w", suffix=".gram")  # noqa: SIM115
            self._grammar_file.write(jsgf())
            self._grammar_file.flush()
            self.decoder = Decoder(loglevel="FATAL", lm=None)
            for word, phones in EXTRA_PRONUNCIATIONS.items():
                self.decoder.add_word(word, phones, False)
            self.decoder.add_jsgf_file("media", self._grammar_file.name)
            self.decoder.activate_search("media")
        elif mode == "lm":
            self.decoder = Decoder(loglevel="FATAL")
            for word, phones in EXTRA_PRONUNCIATIONS.items():
                self.decoder.add_word(word, phones, True)
        else:
            raise ValueError(f"unknown pocketsphinx mode {mode!r}")

    def transcribe(self, samples: np.ndarray) -> str:
        pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return " ".join(hyp.hypstr.lower().split()) if hyp is not None else ""


def model_transcriber(weights_dir: str | Path | None, decoder: str) -> Callable[[list[np.ndarray]], list[str]]:
    """Batch transcription with the plugin's code path (VAD, features, model, decoder) at the
    weights' calibrated rejection threshold: a rejected utterance emits no words, so it
    counts as deletions in the word error rate."""

    transcriber = Transcriber(weights_dir, torch.device("cpu"), decoder)

    def run(clips: list[np.ndarray]) -> list[str]:
        out = []
        for i in range(0, len(clips), 16):
            prepared = [transcriber.prepare(c) for c in clips[i : i + 16]]
            out += [t.text for t in transcriber.transcribe(prepared)]
        return out

    return run


def systems(weights_dir: str | Path | None, baselines: bool) -> dict[str, Callable[[list[np.ndarray]], list[str]]]:
    """The recognisers compared: the model's two decoders and the pocketsphinx baselines."""
    found: dict[str, Callable[[list[np.ndarray]], list[str]]] = {
        f"model_{decoder}": model_transcriber(weights_dir, decoder) for decoder in DECODERS
    }
    if baselines:
        for mode in ("lm", "grammar"):
            engine = Pocketsphinx(mode)
            found[f"pocketsphinx_{mode}"] = lambda clips, e=engine: [e.transcribe(c) for c in clips]
    return found


def evaluate(
    weights_dir: str | Path | None = None,
    per_voice: int = 30,
    conditions: Sequence[str] = ("clean", "noisy", "reverb"),
    baselines: bool = True,
) -> dict[str, object]:
    """WER of each system per condition and festival voice on held-out command clips."""
    torch.set_num_threads(1)
    specs = heldout_specs(per_voice)
    clean = [synthesize(s) for s in specs]
    refs = [s.text for s in specs]
    groups = {"all": list(range(len(specs)))}
    for voice in FESTIVAL_VOICES:
        groups[f"festival:{voice}"] = [i for i, s in enumerate(specs) if s.voice == voice]
    found = systems(weights_dir, baselines)
    results: dict[str, object] = {"clips": len(specs), "voices": sorted({s.voice for s in specs})}
    for condition in conditions:
        audio = [degrade(c, condition, i) for i, c in enumerate(clean)]
        per_system = {}
        for name, run in found.items():
            started = time.monotonic()
            hyps = run(audio)
            per_system[name] = {
                group: round(word_error_rate([refs[i] for i in idx], [hyps[i] for i in idx]), 4)
                for group, idx in groups.items()
            }
            per_system[name]["seconds"] = round(time.monotonic() - started, 1)
        results[condition] = per_system
    return results


def read_testdata(name: str) -> np.ndarray:
    """A recording of pocketsphinx-testdata as 16 kHz mono float32 samples."""
    from streamproc.media import decode_wav

    data = (TESTDATA / name).read_bytes()
    if name.endswith(".raw"):  # headerless 16 kHz 16-bit mono
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    return decode_wav(data)


def real_recordings(weights_dir: str | Path | None = None, baselines: bool = True) -> dict[str, object]:
    """WER on the human recordings of ``REAL_RECORDINGS``: on the full transcripts, and with
    reference and hypothesis both reduced to the words of the vocabulary (what the model
    can say; an out-of-vocabulary word is then neither required nor counted)."""
    names = [n for n in REAL_RECORDINGS if (TESTDATA / n).exists()]
    if not names:
        return {"recordings": 0, "note": "pocketsphinx-testdata is not installed"}
    audio = [read_testdata(n) for n in names]
    refs = [REAL_RECORDINGS[n] for n in names]
    words = set(vocabulary())
    in_vocab = [" ".join(w for w in r.split() if w in words) for r in refs]
    results: dict[str, object] = {
        "recordings": len(names),
        "reference_words": sum(len(r.split()) for r in refs),
        "in_vocabulary_words": sum(len(r.split()) for r in in_vocab),
    }
    for name, run in systems(weights_dir, baselines).items():
        hyps = run(audio)
        hyps_in_vocab = [" ".join(w for w in h.split() if w in words) for h in hyps]
        results[name] = {
            "wer_full": round(word_error_rate(refs, hyps), 4),
            "wer_in_vocabulary": round(word_error_rate(in_vocab, hyps_in_vocab), 4),
            "hypotheses": dict(zip(names, hyps, strict=True)),
        }
    return results


def segmentation_accuracy(files: int = 20, seed: int = 7) -> dict[str, float]:
    """VAD accuracy on ``files`` synthetic recordings of 2-4 held-out utterances separated
    by 0.8-3 s pauses, half with 15 dB noise. A true utterance counts as found when one
    detected segment overlaps it and no other; boundary error is measured on those (it
    includes the 0.3 s of context the detector deliberately keeps on each side)."""
    rng = np.random.default_rng(seed)
    specs = heldout_specs(10)
    exact, found, total, detected, within = 0, 0, 0, 0, 0
    errors: list[float] = []
    speech_hits = speech_frames = 0
    for f in range(files):
        picks = rng.choice(len(specs), size=int(rng.integers(2, 5)), replace=False)
        pieces, truth, pos = [], [], 0
        for k in picks:
            gap = np.zeros(int(rng.uniform(0.8, 3.0) * SAMPLE_RATE), np.float32)
            speech = synthesize(specs[int(k)]) * rng.uniform(0.2, 1.0)
            pieces += [gap, speech.astype(np.float32)]
            truth.append((pos + len(gap), pos + len(gap) + len(speech)))
            pos += len(gap) + len(speech)
        pieces.append(np.zeros(SAMPLE_RATE, np.float32))
        audio = np.concatenate(pieces)
        if f % 2:
            from streamproc_speech.data import add_noise

            audio = add_noise(audio, 15.0, rng, "pink")
        segments = speech_segments(audio)
        total += len(truth)
        detected += len(segments)
        exact += len(segments) == len(truth)
        for start, end in truth:
            overlapping = [s for s in segments if s.start < end and s.end > start]
            if len(overlapping) == 1:
                found += 1
                errors += [abs(overlapping[0].start - start), abs(overlapping[0].end - end)]
                within += sum(e <= SAMPLE_RATE // 2 for e in errors[-2:])
            covered = sum(max(0, min(end, s.end) - max(start, s.start)) for s in overlapping)
            speech_hits += covered
            speech_frames += end - start
    return {
        "files": files,
        "utterances": total,
        "segments_detected": detected,
        "files_with_exact_count": round(exact / files, 4),
        "utterance_recall": round(found / total, 4),
        "speech_covered": round(speech_hits / speech_frames, 4),
        "mean_boundary_error_ms": round(float(np.mean(errors)) / SAMPLE_RATE * 1000, 1),
        "boundaries_within_500ms": round(within / len(errors), 4),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="default: packaged weights")
    parser.add_argument("--per-voice", type=int, default=30, help="command clips per festival voice")
    parser.add_argument("--update-card", action="store_true", help="write into model_card.json")
    args = parser.parse_args(argv)
    started = time.monotonic()
    metrics = {
        "heldout": evaluate(args.weights, args.per_voice),
        "real_recordings": real_recordings(args.weights),
        "segmentation": segmentation_accuracy(),
    }
    metrics["evaluation_command"] = "python -m streamproc_speech.evaluate " + " ".join(sys.argv[1:])
    metrics["evaluation_seconds"] = round(time.monotonic() - started)
    print(json.dumps(metrics, indent=2))
    if args.update_card:
        from streamproc_speech.recognizer import weights_path

        card_path = weights_path(args.weights) / "model_card.json"
        card = json.loads(card_path.read_text())
        card["metrics"] = metrics
        card_path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
