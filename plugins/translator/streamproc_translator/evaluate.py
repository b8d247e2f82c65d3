"""Held-out evaluation: BLEU and chrF (sacrebleu) of the model and of both baselines.

The held-out set is the 500 test-split verse pairs of <= 15 words per side (see
``data.heldout_pairs``), read from the package, or re-exported from the Debian SWORD
modules with ``--from-export``. Baselines are computed fresh on every call.

    python -m streamproc_translator.evaluate [--weights-dir DIR] [--from-export] [--examples N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sacrebleu
import torch

from streamproc_translator import data
from streamproc_translator.baselines import FreeDictBaseline, copy_source
from streamproc_translator.translator import TextTranslator

BATCH_SIZE = 100


def scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu defaults), rounded to 0.1."""
    bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score
    chrf = sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score
    return {"bleu": round(bleu, 1), "chrf": round(chrf, 1)}


def translate_all(translator: TextTranslator, texts: Sequence[str]) -> list[str]:
    """Translate in batches of ``BATCH_SIZE`` under inference mode."""
    out: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(texts), BATCH_SIZE):
            out += translator.translate(texts[start : start + BATCH_SIZE])
    return out


def evaluate(
    weights_dir: Path | None = None, pairs: Sequence[data.Pair] | None = None, examples: int = 0
) -> dict[str, Any]:
    """Metrics of the model (``weights_dir``, default packaged) and baselines on ``pairs``.

    ``pairs`` defaults to the shipped held-out set. Returns ``{"pairs", "model",
    "dictionary", "copy", "model_version", "seconds"}`` plus ``"examples"`` when asked.
    """
    started = time.monotonic()
    pairs = data.shipped_heldout() if pairs is None else pairs
    english = [p.en for p in pairs]
    references = [p.es for p in pairs]
    translator = TextTranslator.load(weights_dir, torch.device("cpu"))
    hypotheses = translate_all(translator, english)
    dictionary = FreeDictBaseline()
    result: dict[str, Any] = {
        "pairs": len(pairs),
        "model": scores(hypotheses, references),
        "dictionary": scores([dictionary.translate(t) for t in english], references),
        "copy": scores([copy_source(t) for t in english], references),
        "model_version": translator.version,
    }
    if examples:
        result["examples"] = [
            {"en": p.en, "reference": p.es, "model": h} for p, h in zip(pairs[:examples], hypotheses, strict=False)
        ]
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights-dir", type=Path, default=None, help="default: packaged")
    parser.add_argument("--from-export", action="store_true", help="re-export the held-out pairs with mod2imp")
    parser.add_argument("--examples", type=int, default=0, help="also show N translations")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pairs = data.heldout_pairs(data.bible_pairs()) if args.from_export else None
    result = evaluate(args.weights_dir, pairs, args.examples)
    json.dump(result, sys.stdout, indent=2, ensure_ascii=False)
    print()


if __name__ == "__main__":
    main()
