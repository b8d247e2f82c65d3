"""Provenance of the general held-out set, and its separation from the training data.

The general held-out set (``weights/general_heldout.tsv``) is rebuilt from Debian's apt
lists and must equal the shipped one; the training data, rebuilt by ``train.training_data``
from the same sources, must not hold any held-out text: not exactly (same letters after
NFKC and lowercasing, ``corpus.fingerprint``), not nearly (sharing >= 50 % of a held-out
text's word trigrams, or of a short held-out title's bigrams, ``corpus.DuplicateFilter``), and
no text of a held-out or validation source package (gettext catalogs included).
"""

from __future__ import annotations

import random
import shutil

import pytest
from conftest import needs_apertium
from streamproc_translator import corpus, data, reproduce, train

needs_lists = pytest.mark.skipif(
    not corpus.lists_present(), reason="needs the apt lists: python -m streamproc_translator.reproduce fetches them"
)
needs_sword = pytest.mark.skipif(shutil.which("mod2imp") is None, reason="needs libsword-utils")


@pytest.fixture(scope="module")
def training_pairs() -> list[data.Pair]:
    """The training pairs ``train`` builds with the shipped model's recorded arguments (all 15,000 distilled)."""
    args = train.parse_args([*reproduce.recorded_arguments(), "--out", "unused"])
    pairs, _, _, sizes = train.training_data(args, random.Random(0))
    assert sizes["distilled_apertium"] > 14_000 and sizes["general_human_kept"] > 5000 and sizes["bible_kept"] > 5000
    return pairs


def test_general_heldout_set_has_the_sizes_and_registers_of_issue_17() -> None:
    pairs = corpus.shipped_general()
    assert sum(p.kind == "short" for p in pairs) >= 500 and sum(p.kind == "long" for p in pairs) >= 200
    assert all(len(p.en.split()) <= corpus.SHORT_MAX_WORDS for p in pairs if p.kind == "short")
    assert all(len(p.en.split()) >= corpus.LONG_MIN_WORDS for p in pairs if p.kind == "long")
    assert all(corpus.is_heldout_package(p.package) for p in pairs)


@needs_lists
def test_shipped_general_heldout_set_equals_a_fresh_build_from_the_apt_lists() -> None:
    assert corpus.general_split(corpus.all_pairs(), 600, 250) == corpus.shipped_general()


@needs_lists
@needs_sword
@needs_apertium
def test_no_training_pair_repeats_a_held_out_text_exactly(training_pairs: list[data.Pair]) -> None:
    held = corpus.shipped_general()
    bible = data.shipped_heldout()
    held_texts = {corpus.fingerprint(t) for p in [*held, *bible] for t in (p.en, p.es)}
    leaks = [p for p in training_pairs if {corpus.fingerprint(p.en), corpus.fingerprint(p.es)} & held_texts]
    assert leaks == []


@needs_lists
@needs_sword
@needs_apertium
def test_no_training_pair_nearly_repeats_a_held_out_text(training_pairs: list[data.Pair]) -> None:
    held = [*corpus.shipped_general(), *data.shipped_heldout()]
    english = corpus.DuplicateFilter(p.en for p in held)
    spanish = corpus.DuplicateFilter(p.es for p in held)
    leaks = [p for p in training_pairs if p.en in english or p.es in spanish]
    assert leaks == []


@needs_lists
@needs_sword
@needs_apertium
def test_no_training_pair_comes_from_a_held_out_or_validation_package(training_pairs: list[data.Pair]) -> None:
    prefixes = ("ddtp:", "appstream:", "apertium:", "gettext:")
    packages = {p.key.split(":")[1] for p in training_pairs if p.key.startswith(prefixes)}
    assert len(packages) > 1000
    assert all(any(p.key.startswith(prefix) for p in training_pairs) for prefix in prefixes)
    assert not [p for p in packages if corpus.is_heldout_package(p) or corpus.is_validation_package(p)]
