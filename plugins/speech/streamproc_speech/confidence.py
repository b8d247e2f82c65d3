"""How sure the recognizer is of a hypothesis, and when it refuses one.

The confidence of a decoded hypothesis is a likelihood ratio on the CTC posteriors:
the probability of the best frame-by-frame path that spells the hypothesis (a Viterbi
forced alignment) over the probability of the best path with no constraint at all
(each frame's most probable token). It is 1.0 when the unconstrained network already
says exactly the hypothesis, and falls towards 0 as the grammar has to force frames
away from what the network heard. A word's confidence is the same ratio over the
frames from its first to its last letter; the utterance's covers every frame, so words
heard between or around the grammar's words (an out-of-grammar request) lower it too.

``judge`` turns a hypothesis, the unconstrained transcription and the confidence into
a verdict: accepted, or rejected with one reason:

- ``non_speech``: the unconstrained network hears no letter at all (silence, noise,
  tones);
- ``out_of_grammar``: the grammar finds no command in what was heard, or the confidence
  is below the threshold and the unconstrained transcription is far from the
  hypothesis (more than half of its characters differ): something else was said;
- ``low_confidence``: the confidence is below the threshold, but what was heard is
  close to the hypothesis: a command, said unclearly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamproc_speech.model import BLANK, encode_text

REASONS = ("non_speech", "out_of_grammar", "low_confidence")
FAR_FROM_HYPOTHESIS = 0.5  # character edit rate above which the network heard something else


@dataclass(frozen=True)
class Scored:
    """The confidence of one utterance's hypothesis and of each of its words (0..1)."""

    confidence: float
    words: tuple[tuple[str, float], ...]


def forced_alignment(log_probs: np.ndarray, tokens: list[int]) -> np.ndarray | None:
    """The token of each frame on the most probable CTC path spelling ``tokens``.

    ``log_probs`` is (frames, token ids); returns an int array of length frames (blank is
    0), or ``None`` when the frames are too few to spell ``tokens``.
    """
    frames = len(log_probs)
    labels = np.zeros(2 * len(tokens) + 1, dtype=np.int64)
    labels[1::2] = tokens
    n = len(labels)
    if frames == 0:
        return None
    emit = log_probs[:, labels]
    # a label may be entered from two back when it is a letter different from that one
    skip = np.zeros(n, dtype=bool)
    skip[2:] = (labels[2:] != BLANK) & (labels[2:] != labels[:-2])
    score = np.full(n, -np.inf)
    score[0] = emit[0, 0]
    if n > 1:
        score[1] = emit[0, 1]
    back = np.zeros((frames, n), dtype=np.int8)
    for t in range(1, frames):
        one = np.concatenate([[-np.inf], score[:-1]])
        two = np.where(skip, np.concatenate([[-np.inf, -np.inf], score[:-2]]), -np.inf)
        stacked = np.stack([score, one, two])
        choice = stacked.argmax(axis=0)
        back[t] = choice
        score = stacked[choice, np.arange(n)] + emit[t]
    ends = [n - 1] + ([n - 2] if n > 1 else [])
    state = max(ends, key=lambda s: score[s])
    if not np.isfinite(score[state]):
        return None
    path = np.zeros(frames, dtype=np.int64)
    for t in range(frames - 1, -1, -1):
        path[t] = labels[state]
        state -= int(back[t, state])
    return path


def score_hypothesis(log_probs: np.ndarray, hypothesis: str) -> Scored:
    """The confidence of ``hypothesis`` (lowercase words) given ``log_probs`` (frames, tokens).

    An empty hypothesis, or one the frames cannot spell, has confidence 0.0.
    """
    log_probs = np.asarray(log_probs, dtype=np.float64)
    if not hypothesis or len(log_probs) == 0:
        return Scored(0.0, tuple((w, 0.0) for w in hypothesis.split()))
    path = forced_alignment(log_probs, encode_text(hypothesis))
    if path is None:
        return Scored(0.0, tuple((w, 0.0) for w in hypothesis.split()))
    frames = np.arange(len(log_probs))
    # log of (constrained path's frame probability / best frame probability), <= 0
    deficit = log_probs[frames, path] - log_probs.max(axis=1)
    spans = _character_spans(path)  # one (first, last) frame span per character, spaces included
    words, position = [], 0
    for word in hypothesis.split(" "):
        first, last = spans[position][0], spans[position + len(word) - 1][1]
        words.append((word, math.exp(float(deficit[first : last + 1].sum()))))
        position += len(word) + 1
    return Scored(math.exp(float(deficit.sum())), tuple(words))


def _character_spans(path: np.ndarray) -> list[tuple[int, int]]:
    """The (first, last) frame of each character a CTC path emits, in order."""
    spans: list[tuple[int, int]] = []
    for t, token in enumerate(path.tolist()):
        if token == BLANK:
            continue
        if t > 0 and path[t - 1] == token:
            spans[-1] = (spans[-1][0], t)
        else:
            spans.append((t, t))
    return spans


def character_edit_rate(reference: str, hypothesis: str) -> float:
    """Character edits turning ``reference`` into ``hypothesis``, over ``len(reference)``
    (1.0 for an empty reference and a non-empty hypothesis, 0.0 for both empty)."""
    if not reference:
        return 1.0 if hypothesis else 0.0
    row = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hypothesis, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(reference)


def judge(hypothesis: str, heard: str, confidence: float, threshold: float) -> str | None:
    """``None`` to accept ``hypothesis``, else the rejection reason (one of ``REASONS``).

    ``heard`` is the unconstrained (greedy) transcription of the same frames.
    """
    if not heard or not hypothesis:
        return "non_speech" if not heard else "out_of_grammar"
    if confidence >= threshold:
        return None
    if character_edit_rate(heard, hypothesis) > FAR_FROM_HYPOTHESIS:
        return "out_of_grammar"
    return "low_confidence"
