"""General-domain English -> Spanish text from Debian's own metadata, its split and its dedupe.

Owns the parallel text that looks like what users upload (titles, one-line summaries,
descriptive sentences), all obtainable offline through apt:

- DDTP: Debian's translated package descriptions. ``Translation-es`` holds the Spanish
  description of a package next to the ``Description-md5`` of its English one, which is
  in ``Translation-en``. The synopsis (first line) gives a short title-register pair;
  the long description is split into paragraphs and sentences, and a paragraph is kept
  only when both sides have the same number of sentences (1:1 alignment).
- AppStream (DEP-11 ``Components-amd64.yml.gz``): application names, summaries and
  description paragraphs with their Spanish translations.

The split unit is the Debian *source* package (binary packages are mapped to their
source through the ``Packages`` index), so every text of a held-out package, in every
binary package built from it, is held out. The split depends on the source package name
only (SHA-256), and is fixed before any training.

The apt lists are fetched by ``fetch_lists`` (``apt-get update`` with
``Acquire::Languages { "en"; "es"; };`` into ``LIST_DIR``, a folder of its own, so that
the system's lists, and a later ``apt-get update`` that would delete the translations,
are left alone).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
import re
import subprocess
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml

LIST_DIR = Path.home() / ".cache" / "streamproc" / "translator-data"
APT_LISTS = Path("/var/lib/apt/lists")
GENERAL_HELDOUT_FILE = "general_heldout.tsv"
HELDOUT_PERCENT = 20
VALIDATION_PERCENT = 5
SHORT_MAX_WORDS = 12
LONG_MIN_WORDS = 13
LONG_MAX_WORDS = 60
MAX_LENGTH_RATIO = 1.8
REQUIRED_LISTS = (
    "*_debian_dists_bookworm_main_binary-amd64_Packages*",
    "*_debian_dists_bookworm_main_i18n_Translation-en*",
    "*_debian_dists_bookworm_main_i18n_Translation-es*",
    "*_debian_dists_bookworm_main_dep11_Components-amd64.yml*",
)
APT_CONFIG = """#clear Acquire::Languages;
Acquire::Languages { "en"; "es"; };
Dir::State::Lists "{lists}";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Debug::NoLocking "true";
"""
"""apt configuration of ``fetch_lists``: English and Spanish translations (Docker images set
``Acquire::Languages "none"``), lists in a folder of their own, the system's package cache untouched."""

Kind = Literal["short", "long"]


@dataclass(frozen=True)
class GeneralPair:
    """One aligned pair: ``key`` is ``<source>:<source package>:<field>``; ``kind`` short or long."""

    key: str
    package: str
    kind: Kind
    en: str
    es: str


def _bucket(source_package: str) -> int:
    digest = hashlib.sha256(f"general:{source_package}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100


def is_heldout_package(source_package: str) -> bool:
    """Whether a source package is held out (20 % of packages, by SHA-256 of the name)."""
    return _bucket(source_package) < HELDOUT_PERCENT


def is_validation_package(source_package: str) -> bool:
    """Whether a source package is kept for model selection (5 %, disjoint from the held-out ones)."""
    return HELDOUT_PERCENT <= _bucket(source_package) < HELDOUT_PERCENT + VALIDATION_PERCENT


def lists_present() -> bool:
    """Whether every apt list the corpus reads is in ``LIST_DIR`` or ``APT_LISTS``."""
    return all(any(any(folder.glob(p)) for folder in (LIST_DIR, APT_LISTS)) for p in REQUIRED_LISTS)


def fetch_lists(list_dir: Path | None = None) -> None:
    """Fetch the apt lists of the configured Debian sources, with their English and Spanish
    translations, into ``list_dir`` (default ``LIST_DIR``) with ``apt-get update``.

    Needs root (apt drops to its ``_apt`` user to download) and the Debian mirror of
    ``/etc/apt/sources.list.d``. Raises ``FileNotFoundError`` when a list the corpus reads
    is still missing afterwards, and ``subprocess.CalledProcessError`` when apt fails.
    """
    folder = list_dir or LIST_DIR
    (folder / "partial").mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as config:
        config.write(APT_CONFIG.replace("{lists}", str(folder)))
        config.flush()
        subprocess.run(["apt-get", "-c", config.name, "-q", "update"], check=True, capture_output=True, text=True)
    missing = [pattern for pattern in REQUIRED_LISTS if not any(folder.glob(pattern))]
    if missing:
        raise FileNotFoundError(f"apt-get update left no list {missing} in {folder}")


def _list_file(pattern: str) -> Path:
    """The first apt list file matching ``pattern`` in ``LIST_DIR`` or ``APT_LISTS``."""
    for folder in (LIST_DIR, APT_LISTS):
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    raise FileNotFoundError(
        f"no apt list {pattern!r} in {LIST_DIR} or {APT_LISTS}: fetch them with "
        "python -m streamproc_translator.reproduce (corpus.fetch_lists)"
    )


def _read_list(pattern: str) -> str:
    """Text of an apt list file, decompressed by apt's own helper (lz4, xz, gz ...)."""
    path = _list_file(pattern)
    return subprocess.run(
        ["/usr/lib/apt/apt-helper", "cat-file", str(path)], check=True, capture_output=True, text=True
    ).stdout


def source_of_binaries() -> dict[str, str]:
    """Binary package -> source package, from bookworm main's ``Packages`` index."""
    sources: dict[str, str] = {}
    for block in _read_list("*_debian_dists_bookworm_main_binary-amd64_Packages*").split("\n\n"):
        package = re.search(r"^Package: (\S+)", block, re.M)
        source = re.search(r"^Source: (\S+)", block, re.M)
        if package:
            sources[package.group(1)] = source.group(1) if source else package.group(1)
    return sources


def _descriptions(text: str, language: str) -> dict[tuple[str, str], str]:
    """(package, description md5) -> raw description of a ``Translation-<language>`` file."""
    found = {}
    pattern = re.compile(rf"^Description-{language}: (.*(?:\n .*)*)", re.M)
    for block in text.split("\n\n"):
        package = re.search(r"^Package: (\S+)", block, re.M)
        md5 = re.search(r"^Description-md5: (\S+)", block, re.M)
        body = pattern.search(block)
        if package and md5 and body:
            found[(package.group(1), md5.group(1))] = body.group(1)
    return found


def clean(text: str) -> str:
    """NFC, single spaces, no space before closing punctuation."""
    text = " ".join(unicodedata.normalize("NFC", text).split())
    return re.sub(r"\s+([,.;:!?)\]])", r"\1", text)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'«¿¡(]?[A-ZÁÉÍÓÚÑ0-9])")
_BULLET = re.compile(r"^\s*[*\-+o•]\s+")


def sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph (after ``.``, ``!``, ``?`` before a capital or digit)."""
    return [s for s in (clean(s) for s in _SENTENCE_END.split(paragraph)) if s]


def _paragraphs(long_description: str) -> list[list[str]]:
    """A DDTP long description as paragraphs of units; a bullet item is a unit of its own."""
    paragraphs = []
    for chunk in re.split(r"\n \.\s*(?:\n|$)", "\n" + long_description):
        units: list[str] = []
        for line in chunk.split("\n"):
            if not line.strip():
                continue
            if _BULLET.match(line) or not units:
                units.append(_BULLET.sub("", line))
            else:
                units[-1] += " " + line.strip()
        paragraphs.append(units)
    return paragraphs


def _aligned(en_units: list[str], es_units: list[str]) -> Iterator[tuple[str, str]]:
    """Sentence pairs of two aligned lists of units, where each unit splits 1:1."""
    if len(en_units) != len(es_units):
        return
    for en_unit, es_unit in zip(en_units, es_units, strict=True):
        en_s, es_s = sentences(en_unit), sentences(es_unit)
        if len(en_s) == len(es_s):
            yield from zip(en_s, es_s, strict=True)


def _plausible(en: str, es: str) -> bool:
    n_en, n_es = len(en.split()), len(es.split())
    return en != es and n_en > 0 and max(n_en, n_es) <= MAX_LENGTH_RATIO * min(n_en, n_es) + 2


def _kind(en: str) -> Kind | None:
    words = len(en.split())
    if words <= SHORT_MAX_WORDS:
        return "short"
    return "long" if LONG_MIN_WORDS <= words <= LONG_MAX_WORDS else None


def ddtp_pairs(sources: dict[str, str]) -> list[GeneralPair]:
    """Synopsis and long-description sentence pairs of every package translated to Spanish."""
    english = _descriptions(_read_list("*_debian_dists_bookworm_main_i18n_Translation-en*"), "en")
    spanish = _descriptions(_read_list("*_debian_dists_bookworm_main_i18n_Translation-es*"), "es")
    pairs = []
    for (package, md5), es_raw in sorted(spanish.items()):
        en_raw = english.get((package, md5))
        if en_raw is None:
            continue
        source = sources.get(package, package)
        en_synopsis, _, en_long = en_raw.partition("\n")
        es_synopsis, _, es_long = es_raw.partition("\n")
        candidates = [("synopsis", clean(en_synopsis), clean(es_synopsis))]
        for en_p, es_p in zip(_paragraphs(en_long), _paragraphs(es_long), strict=False):
            candidates += [("long", en, es) for en, es in _aligned(en_p, es_p)]
        for index, (field, en, es) in enumerate(candidates):
            kind = _kind(en)
            if kind is not None and _plausible(en, es):
                pairs.append(GeneralPair(f"ddtp:{source}:{package}:{field}{index}", source, kind, en, es))
    return pairs


def english_descriptions(sources: dict[str, str]) -> list[tuple[str, str]]:
    """(source package, text) of every English synopsis and description sentence (monolingual).

    For distillation: these English texts get their Spanish side from a teacher system.
    """
    english = _descriptions(_read_list("*_debian_dists_bookworm_main_i18n_Translation-en*"), "en")
    texts = []
    for (package, _), raw in sorted(english.items()):
        source = sources.get(package, package)
        synopsis, _, long = raw.partition("\n")
        texts.append((source, clean(synopsis)))
        for paragraph in _paragraphs(long):
            texts += [(source, s) for unit in paragraph for s in sentences(unit)]
    return texts


def _html_paragraphs(html: str) -> list[str]:
    return [clean(re.sub(r"<[^>]+>", " ", p)) for p in re.findall(r"<(?:p|li)>(.*?)</(?:p|li)>", html, re.S)]


def appstream_pairs(sources: dict[str, str]) -> list[GeneralPair]:
    """Name, summary and description sentence pairs of the AppStream components."""
    path = _list_file("*_debian_dists_bookworm_main_dep11_Components-amd64.yml*")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    pairs = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for doc in yaml.load_all(fh, Loader=loader):
            package = doc.get("Package") if isinstance(doc, dict) else None
            if not package:
                continue
            source = sources.get(package, package)
            component = doc.get("ID", package)
            candidates = []
            for field in ("Name", "Summary"):
                values = doc.get(field) or {}
                if "C" in values and "es" in values:
                    candidates.append((field.lower(), clean(values["C"]), clean(values["es"])))
            description = doc.get("Description") or {}
            if "C" in description and "es" in description:
                en_p, es_p = _html_paragraphs(description["C"]), _html_paragraphs(description["es"])
                candidates += [("description", en, es) for en, es in _aligned(en_p, es_p)]
            for index, (field, en, es) in enumerate(candidates):
                kind = _kind(en)
                if kind is not None and _plausible(en, es):
                    pairs.append(GeneralPair(f"appstream:{source}:{component}:{field}{index}", source, kind, en, es))
    return pairs


def all_pairs() -> list[GeneralPair]:
    """Every DDTP and AppStream pair, in a stable order."""
    sources = source_of_binaries()
    return ddtp_pairs(sources) + appstream_pairs(sources)


def fingerprint(text: str) -> str:
    """Letters of ``text`` only, lowercased (exact-duplicate key, robust to case and punctuation)."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).lower() if ch.isalpha())


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", unicodedata.normalize("NFKC", text).lower())


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    """The distinct ``n``-grams of ``words`` (from ``_words``: NFKC, lowercased, no punctuation)."""
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


class DuplicateFilter:
    """Tells whether a text duplicates one of a reference set, exactly or nearly.

    Exact: same ``fingerprint``. Near, for a reference of 3 or more word trigrams: the text
    shares at least ``overlap`` of them (half a sentence copied, a version number changed,
    a clause added ...). Near, for a shorter reference of 2 or more words (a title such as
    "Terminal emulator for GNOME"): the text has at most twice the reference's words and
    shares at least ``overlap`` of its word bigrams ("GNOME terminal emulator", "A terminal
    emulator for GNOME"). A one-word reference has only exact duplicates. With
    ``short_texts=False`` shorter references have only exact duplicates too (the rule the
    frozen general held-out set was built with).
    """

    def __init__(self, texts: Iterable[str], overlap: float = 0.5, short_texts: bool = True) -> None:
        self.overlap = overlap
        self.short_texts = short_texts
        self.exact: set[str] = set()
        self.index: dict[tuple[str, ...], list[int]] = {}
        self.grams: list[int] = []
        """Per reference: how many n-grams it has."""
        self.max_words: list[float] = []
        """Per reference: the longest text that can nearly duplicate it."""
        for text in texts:
            self.add(text)

    def add(self, text: str) -> None:
        """Add one reference text."""
        self.exact.add(fingerprint(text))
        words = _words(text)
        grams = _ngrams(words, 3)
        max_words = math.inf
        if len(grams) < 3:
            grams, max_words = (_ngrams(words, 2) if self.short_texts else set()), 2 * len(words)
        if not grams:
            return
        for gram in grams:
            self.index.setdefault(gram, []).append(len(self.grams))
        self.grams.append(len(grams))
        self.max_words.append(max_words)

    def __contains__(self, text: str) -> bool:
        if fingerprint(text) in self.exact:
            return True
        words = _words(text)
        shared: dict[int, int] = {}
        for gram in _ngrams(words, 3) | _ngrams(words, 2):
            for ref in self.index.get(gram, ()):
                if len(words) <= self.max_words[ref]:
                    shared[ref] = shared.get(ref, 0) + 1
        return any(n >= self.overlap * self.grams[ref] for ref, n in shared.items())


def general_split(pairs: list[GeneralPair], short_size: int, long_size: int) -> list[GeneralPair]:
    """The general held-out set: ``short_size`` short and ``long_size`` long pairs of held-out packages.

    Pairs are taken in SHA-256 order of their key, skipping any that duplicates (exactly
    or nearly, on either side) a pair already taken, so the set has no internal repeats.
    Near means the trigram rule only (``short_texts=False``): the shipped set was frozen
    with it, and a fresh build must equal it.
    """
    chosen: list[GeneralPair] = []
    seen = DuplicateFilter([], short_texts=False)
    for kind, size in (("short", short_size), ("long", long_size)):
        candidates = [p for p in pairs if p.kind == kind and is_heldout_package(p.package)]
        candidates.sort(key=lambda p: hashlib.sha256(p.key.encode()).hexdigest())
        count = 0
        for pair in candidates:
            if count == size:
                break
            if pair.en in seen or pair.es in seen:
                continue
            chosen.append(pair)
            seen.add(pair.en)
            seen.add(pair.es)
            count += 1
    return chosen


def write_general(path: Path, pairs: Iterable[GeneralPair]) -> None:
    """UTF-8 TSV with a header (key, package, kind, en, es)."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE, escapechar="\\")
        writer.writerow(["key", "package", "kind", "en", "es"])
        writer.writerows([p.key, p.package, p.kind, p.en, p.es] for p in pairs)


def read_general(text: str) -> list[GeneralPair]:
    rows = list(csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\"))
    return [GeneralPair(key, package, kind, en, es) for key, package, kind, en, es in rows[1:]]  # type: ignore[arg-type]


def shipped_general() -> list[GeneralPair]:
    """The general held-out set shipped with the package (fixed before training)."""
    path = resources.files("streamproc_translator") / "weights" / GENERAL_HELDOUT_FILE
    return read_general(path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> None:
    """Build the general held-out set (run once, before training) and print its counts."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Build and freeze the general-domain held-out set.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "weights" / GENERAL_HELDOUT_FILE)
    parser.add_argument("--short", type=int, default=600, help="short (title-register) pairs")
    parser.add_argument("--long", type=int, default=250, help="long sentence pairs")
    args = parser.parse_args(argv)
    heldout = general_split(all_pairs(), args.short, args.long)
    write_general(args.out, heldout)
    kinds = {kind: sum(p.kind == kind for p in heldout) for kind in ("short", "long")}
    packages = len({p.package for p in heldout})
    print(f"wrote {args.out}: {kinds} pairs from {packages} held-out source packages", file=sys.stderr)


if __name__ == "__main__":
    main()
