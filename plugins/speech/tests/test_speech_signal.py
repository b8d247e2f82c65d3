"""Features, voice activity detection, grammar and decoding, on inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import torch
from streamproc_speech.decoding import LexiconDecoder, greedy_decode
from streamproc_speech.evaluate import word_error_rate
from streamproc_speech.features import N_MELS, frame_energy_db, log_mel, mel_filterbank, speech_segments
from streamproc_speech.grammar import jsgf, number_words, phrases, vocabulary
from streamproc_speech.model import ALPHABET, CtcRecognizer, ModelConfig, encode_text, pad_features


def test_log_mel_is_nearly_level_independent_and_normalised() -> None:
    hiss = np.random.default_rng(0).normal(0, 1, 16_000).astype(np.float32)
    loud, quiet = log_mel(0.3 * hiss), log_mel(0.03 * hiss)  # 20 dB apart
    assert loud.shape == (98, N_MELS)
    # only the few time-frequency cells near the 1e-6 energy floor move
    assert float((loud - quiet).abs().mean()) < 0.01
    assert abs(float(loud.mean())) < 1e-4 and abs(float(loud.std()) - 1) < 1e-3
    assert log_mel(np.zeros(10, np.float32)).shape == (1, N_MELS)


def test_mel_filters_cover_the_band_in_order() -> None:
    filters = mel_filterbank()
    assert filters.shape == (201, N_MELS) and bool((filters >= 0).all())
    peaks = filters.argmax(dim=0)
    assert bool((peaks[1:] >= peaks[:-1]).all())


def test_vad_finds_bursts_separated_by_pauses_and_bridges_short_gaps() -> None:
    rate, rng = 16_000, np.random.default_rng(0)
    audio = rng.normal(0, 1e-4, 6 * rate)
    for start, end in ((0.5, 1.0), (1.2, 1.6), (3.0, 4.0)):  # the 0.2 s gap is a pause between words
        audio[int(start * rate) : int(end * rate)] += rng.normal(0, 0.1, int((end - start) * rate))
    segments = speech_segments(audio)
    # each segment keeps 0.3 s of context on both sides
    assert [(round(s.start_s, 2), round(s.end_s, 1)) for s in segments] == [(0.18, 1.9), (2.68, 4.3)]
    assert speech_segments(np.zeros(rate)) == [] and speech_segments(np.zeros(0)) == []
    assert math.isinf(frame_energy_db(np.zeros(800))[0])


def test_grammar_phrases_use_only_vocabulary_words_and_jsgf_covers_them() -> None:
    words = set(vocabulary())
    drawn = phrases(500, seed=3)
    assert drawn == phrases(500, seed=3)
    assert all(set(p.split()) <= words and p == " ".join(p.split()) for p in drawn)
    grammar = jsgf()
    assert all(w in grammar for w in words)
    assert [number_words(n) for n in (0, 7, 13, 40, 99)] == ["zero", "seven", "thirteen", "forty", "ninety nine"]


def _frames_for(text: str, noise: float = 0.0) -> np.ndarray:
    """Log-probabilities that spell ``text`` with a blank between characters."""
    ids = []
    for token in encode_text(text):
        ids += [token, 0]
    probs = np.full((len(ids), len(ALPHABET) + 1), noise)
    probs[np.arange(len(ids)), ids] = 1.0
    return np.log(probs / probs.sum(axis=1, keepdims=True) + 1e-12)


def test_greedy_and_lexicon_decoding_spell_clean_paths() -> None:
    frames = _frames_for("skip ten seconds")
    assert greedy_decode(frames) == "skip ten seconds"
    assert LexiconDecoder(vocabulary()).decode(frames) == "skip ten seconds"
    assert greedy_decode(_frames_for("")) == "" and LexiconDecoder(vocabulary()).decode(np.zeros((0, 28))) == ""


def test_lexicon_decoding_repairs_a_misspelt_word() -> None:
    frames = _frames_for("volume ub")
    ub = len(encode_text("volume ")) * 2 + 2  # frame of "b"
    frames[ub] = np.log(np.full(len(ALPHABET) + 1, 0.01))
    frames[ub, encode_text("b")[0]], frames[ub, encode_text("p")[0]] = math.log(0.5), math.log(0.3)
    assert greedy_decode(frames) == "volume ub"
    assert LexiconDecoder(vocabulary()).decode(frames) == "volume up"


def test_model_outputs_do_not_depend_on_batch_padding() -> None:
    torch.manual_seed(0)
    model = CtcRecognizer(ModelConfig(hidden=32)).eval()
    feats = [torch.randn(n, N_MELS) for n in (50, 31, 7)]
    padded, lengths = pad_features(feats)
    with torch.no_grad():
        batch, out_lengths = model(padded, lengths)
        for i, f in enumerate(feats):
            single, n = model(f[None], torch.tensor([len(f)]))
            assert int(n) == int(out_lengths[i]) == math.ceil(len(f) / 3)
            assert torch.allclose(single[0], batch[i, : int(n)], atol=1e-5)


def test_word_error_rate_counts_substitutions_insertions_and_deletions() -> None:
    assert word_error_rate(["play episode seven"], ["play episode seven"]) == 0.0
    assert word_error_rate(["play episode seven", "stop"], ["play seven", "stop now"]) == 0.5
    assert word_error_rate(["volume up"], ["volume down up"]) == 0.5
