"""Rebuild the training data from its offline sources and retrain the GRU, in one command.

    python -m streamproc_translator.reproduce --out DIR [--smoke] [--refresh-lists]

1. The apt lists the corpus reads (bookworm ``Packages``, ``Translation-en``,
   ``Translation-es``, DEP-11 components) are fetched into ``corpus.LIST_DIR`` with
   ``corpus.fetch_lists`` when missing (or always, with ``--refresh-lists``). The other
   sources are Debian packages (``apt-packages.txt``: the SWORD Bibles, Apertium) and the
   gettext catalogs installed on the machine.
2. Both held-out sets are rebuilt from the same sources and compared with the shipped,
   frozen ones (``weights/general_heldout.tsv``, ``weights/heldout.tsv``). They are never
   rewritten: a difference (the Debian archive changed) is reported, and training
   deduplicates against the shipped sets either way.
3. ``train`` runs with the arguments recorded in the shipped model card
   (``training.command``), writing weights, vocabularies and card into ``--out``.

``--smoke`` runs the same steps with a short training (2,000 pairs, 200 distilled, one
epoch, 50 validation texts) to check the pipeline; its weights are not a model to ship.
A full run took 1,576 s on one CPU thread (model card ``training.wall_time_s``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path

from streamproc_translator import corpus, data, train
from streamproc_translator.translator import packaged_weights

SMOKE_ARGS = shlex.split("--epochs 1 --max-pairs 2000 --distill 200 --valid-size 50 --time-budget-min 10")
REQUIRED_COMMANDS = {"mod2imp": "libsword-utils", "apertium": "apertium apertium-eng-spa"}


class MissingSource(RuntimeError):
    """A training source is not installed on this machine; the message names the Debian package."""


def recorded_arguments() -> list[str]:
    """The ``train`` arguments of the shipped model (its card's ``training.command``), without ``--out``."""
    card = json.loads((Path(str(packaged_weights())) / "model_card.json").read_text(encoding="utf-8"))
    words = shlex.split(card["training"]["command"])[3:]  # after "python -m streamproc_translator.train"
    arguments = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--out":
            skip = True
        else:
            arguments.append(word)
    return arguments


def heldout_differences() -> dict[str, int]:
    """Per held-out set, how many texts a fresh build has that the shipped, frozen set has not (0: identical)."""
    general = set(corpus.general_split(corpus.all_pairs(), 600, 250)) ^ set(corpus.shipped_general())
    bible = set(data.heldout_pairs(data.bible_pairs())) ^ set(data.shipped_heldout())
    return {"general": len(general), "bible": len(bible)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (weights, vocabularies, card)")
    parser.add_argument("--smoke", action="store_true", help="a short training that checks the pipeline")
    parser.add_argument("--refresh-lists", action="store_true", help="fetch the apt lists even when present")
    args = parser.parse_args(argv)
    for command, package in REQUIRED_COMMANDS.items():
        if shutil.which(command) is None:
            raise MissingSource(f"{command} not found: apt-get install {package} (plugins/translator/apt-packages.txt)")
    if args.refresh_lists or not corpus.lists_present():
        train.log(f"fetching the apt lists into {corpus.LIST_DIR} ...")
        corpus.fetch_lists()
    differences = heldout_differences()
    train.log(f"held-out sets rebuilt from the sources; texts differing from the shipped ones: {differences}")
    arguments = [*recorded_arguments(), "--out", str(args.out), *(SMOKE_ARGS if args.smoke else [])]
    train.log("python -m streamproc_translator.train " + shlex.join(arguments))
    train.main(arguments)


if __name__ == "__main__":
    main()
