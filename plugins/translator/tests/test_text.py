"""Data preparation and tokenisation: OSIS cleaning, the split, BPE, the dictionary baseline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from streamproc_translator import data
from streamproc_translator.baselines import FREEDICT_DATA, FreeDictBaseline
from streamproc_translator.bpe import UNK_ID, Tokenizer, learn_bpe, normalize_source
from streamproc_translator.corpus import DuplicateFilter, fingerprint
from streamproc_translator.model import repeated_ngram_ban
from streamproc_translator.segments import segment
from streamproc_translator.train import heldout_filter


def test_footnotes_become_a_space_and_strongs_tags_vanish() -> None:
    raw = (
        '<w lemma="strong:H0430">God</w><note placement="foot"><reference>1:1 </reference>'
        'The Hebrew word.</note><w lemma="strong:H1254">created</w> H2416 the earth.'
    )
    assert data.clean_osis(raw) == "God created the earth."


def test_adjacent_tagged_words_stay_apart_and_suffixes_stay_attached() -> None:
    raw = (
        '<w lemma="strong:G5485">Gracia</w><transChange type="added">sea</transChange>'
        '<w lemma="strong:G5213">á vosotros</w>, y hécho<transChange type="added">lo</transChange>.'
    )
    assert data.clean_osis(raw) == "Gracia sea á vosotros, y hécholo."


def test_split_depends_on_the_key_only() -> None:
    keys = [f"Genesis {c}:{v}" for c in range(1, 40) for v in range(1, 30)]
    splits = [data.split_of(k) for k in keys]
    assert splits == [data.split_of(k) for k in keys]
    assert 0.05 < splits.count("test") / len(keys) < 0.15


def test_shipped_heldout_pairs_are_short_and_from_the_test_split() -> None:
    pairs = data.shipped_heldout()
    assert len(pairs) == data.HELDOUT_SIZE
    assert all(data.split_of(p.key) == "test" for p in pairs)
    assert all(len(p.en.split()) <= 15 and len(p.es.split()) <= 15 for p in pairs)


@pytest.mark.skipif(shutil.which("mod2imp") is None, reason="needs libsword-utils")
def test_shipped_heldout_pairs_match_a_fresh_export_of_the_debian_modules() -> None:
    assert data.heldout_pairs(data.bible_pairs()) == data.shipped_heldout()


def test_bpe_round_trips_text_and_maps_unseen_characters_to_unk() -> None:
    texts = ["the king went to the city.", "the kings of the earth", "to the city!"] * 5
    tokenizer = Tokenizer(learn_bpe(texts, merges=30, min_char_count=1))
    text = normalize_source("The King went to the City!")
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert UNK_ID in tokenizer.encode("the king ☃")


def test_transcript_style_normalisation_drops_punctuation_and_case() -> None:
    assert normalize_source("Play “Episode” Seven!", strip_punctuation=True) == ("play episode seven")


@pytest.mark.skipif(not FREEDICT_DATA.exists(), reason="needs dict-freedict-eng-spa")
def test_dictionary_baseline_translates_known_words_and_copies_unknown_ones() -> None:
    baseline = FreeDictBaseline()
    assert baseline.translate("The water, Zorblax.") == "El agua, Zorblax."


def test_repetition_guard_bans_the_subword_that_would_repeat_a_trigram() -> None:
    history = torch.tensor([[5, 6, 7, 5, 6], [5, 6, 7, 8, 9]])
    ban = repeated_ngram_ban(history, 3, vocab=12)
    assert ban[0].nonzero().flatten().tolist() == [7]
    assert not ban[1].any()


def test_segments_cut_long_sentences_at_clauses_and_keep_every_word() -> None:
    text = "Short one. " + ", ".join(["word " * 8] * 4) + "end.\nNext line"
    spans = segment(text, 10)
    assert all(len(text[s:e].split()) <= 10 for s, e in spans)
    assert " ".join(text[s:e] for s, e in spans).split() == text.split()
    assert text[spans[0][0] : spans[0][1]] == "Short one."


@pytest.mark.skipif(shutil.which("mod2imp") is None, reason="needs libsword-utils")
def test_bible_training_verses_that_duplicate_held_out_ones_are_dropped() -> None:
    verses = data.bible_pairs()
    heldout = data.heldout_pairs(verses)
    train = [p for p in verses if data.split_of(p.key) == "train"]
    fresh = heldout_filter([(p.en, p.es) for p in heldout])
    held_keys = {fingerprint(p.en) for p in heldout}
    assert any(fingerprint(p.en) in held_keys for p in train)  # the split alone leaks repeated verses
    kept = [p for p in train if fresh(p)]
    assert not any(fingerprint(p.en) in held_keys for p in kept)
    showcase = "Grace to you and peace from God our Father and the Lord Jesus Christ."
    assert any(p.en == showcase for p in heldout)
    assert not any(showcase.lower().rstrip(".") in p.en.lower() for p in kept)


def test_near_duplicates_share_half_the_trigrams_of_a_held_out_text() -> None:
    held = DuplicateFilter(["A fast, small and lightweight image viewer for the X Window System"])
    assert "a fast small and lightweight image viewer for the x window system!" in held
    assert "A fast, small and lightweight image viewer for GNOME and KDE" in held
    assert "A small command-line tool to convert images" not in held


def test_near_duplicates_of_a_short_title_share_half_its_bigrams_at_up_to_twice_its_length() -> None:
    held = DuplicateFilter(["Terminal emulator for GNOME"])
    assert "GNOME terminal emulator" not in held  # one bigram of three is shared
    assert "A terminal emulator for GNOME" in held
    assert "Terminal emulator for KDE" in held
    assert "A terminal emulator for GNOME with tabs, profiles and a search bar" not in held
    assert "Video player" not in held


def test_a_one_word_title_has_only_exact_duplicates() -> None:
    held = DuplicateFilter(["Inkscape"])
    assert "inkscape!" in held
    assert "Inkscape extensions" not in held


def test_the_frozen_held_out_rule_gives_short_titles_only_exact_duplicates() -> None:
    held = DuplicateFilter(["Terminal emulator for GNOME"], short_texts=False)
    assert "terminal emulator for gnome" in held
    assert "A terminal emulator for GNOME" not in held


@pytest.mark.skipif(not Path("/usr/share/locale/es/LC_MESSAGES/apt.mo").exists(), reason="needs apt's Spanish catalog")
def test_a_gettext_catalog_is_keyed_by_the_source_package_that_ships_it() -> None:
    catalogs = ["/usr/share/locale/es/LC_MESSAGES/apt.mo", "/usr/share/locale/es/LC_MESSAGES/no-such-domain.mo"]
    sources = data.catalog_sources(catalogs)
    assert sources[catalogs[0]] == "apt"
    assert sources[catalogs[1]] == "no-such-domain"  # owned by no package: its domain name
