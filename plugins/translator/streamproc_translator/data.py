"""Parallel English -> Spanish text: Bible verses from Debian's SWORD modules, and UI strings.

Owns the export of the two public-domain SWORD modules (``sword-text-web``: World English
Bible ``engWEB2015eb``; ``sword-text-sparv``: Reina-Valera 1909 ``spaRV1909eb``) through
``mod2imp`` (``libsword-utils``), the cleaning of their OSIS markup, the verse alignment,
and the deterministic split. The split is a function of the verse key only (SHA-256), so
it is fixed before any training and does not depend on the machine or the export order.

Optional extra training data: the human-translated message catalogs of installed Debian
packages (``/usr/share/locale/es/LC_MESSAGES/*.mo``), which differ between machines.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import re
import shutil
import struct
import subprocess
import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

ENGLISH_MODULE = "engWEB2015eb"
SPANISH_MODULE = "spaRV1909eb"
HELDOUT_FILE = "heldout.tsv"
HELDOUT_SIZE = 500
HELDOUT_MAX_WORDS = 15
MAX_LENGTH_RATIO = 1.8
"""Verses whose word counts differ by more than this factor are dropped (misaligned)."""

Split = Literal["train", "valid", "test"]


@dataclass(frozen=True)
class Pair:
    """One aligned sentence pair; ``key`` is the verse key, ``gettext:<source package>:<catalog>:<msgid>``,
    a ``corpus`` key (``ddtp:``/``appstream:<source package>:...``) or ``apertium:<source package>:<n>``
    (distilled)."""

    key: str
    en: str
    es: str


def split_of(key: str) -> Split:
    """The split of a verse key: 10 % test, 3 % validation, the rest training."""
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % 100
    if bucket < 10:
        return "test"
    return "valid" if bucket < 13 else "train"


_DROP_ELEMENTS = re.compile(r"<note\b[^>]*>.*?</note>|<title\b(?![^>]*canonical=\"true\")[^>]*>.*?</title>", re.S)
_INLINE_TAGS = re.compile(r"</?(?:w|transChange|q|seg|name|rdg|hi|foreign|divineName)\b[^>]*>")
_ADJACENT_WORDS = re.compile(r"(</(?:w|transChange)>)(?=<(?:w|transChange)\b)")
_ANY_TAG = re.compile(r"<[^>]*>")
_STRONGS = re.compile(r"\b[HG]\d{3,5}\b")


def clean_osis(raw: str) -> str:
    """Plain text of one verse of OSIS markup.

    Footnotes and non-canonical headings become a space (deleting them would glue the
    words around them); word-level tags vanish, except between two tagged words (RV1909
    writes ``<w>Gracia</w><transChange>sea</transChange>``); structural tags become a
    space; Strong's numbers and whitespace runs are removed.
    """
    text = _DROP_ELEMENTS.sub(" ", raw)
    text = _ADJACENT_WORDS.sub(r"\1 ", text)
    text = _INLINE_TAGS.sub("", text)
    text = _ANY_TAG.sub(" ", text)
    text = _STRONGS.sub(" ", text)
    text = unicodedata.normalize("NFC", text)
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([,.;:!?)\]])", r"\1", text)


def export_module(module: str) -> dict[str, str]:
    """Verse key -> clean text of a SWORD module, exported with ``mod2imp`` (raw OSIS).

    Raises ``FileNotFoundError`` when ``mod2imp`` is not installed and
    ``subprocess.CalledProcessError`` when the module is missing.
    """
    if shutil.which("mod2imp") is None:
        raise FileNotFoundError("mod2imp not found: install the Debian package libsword-utils")
    out = subprocess.run(["mod2imp", module], check=True, capture_output=True, text=True).stdout
    verses: dict[str, str] = {}
    key = None
    lines: list[str] = []
    for line in [*out.splitlines(), "$$$"]:
        if line.startswith("$$$"):
            if key is not None and re.search(r" [1-9]\d*:[1-9]\d*$", key):
                text = clean_osis(" ".join(lines))
                if text:
                    verses[key] = text
            key, lines = line[3:].strip(), []
        else:
            lines.append(line)
    return verses


def bible_pairs() -> list[Pair]:
    """Aligned verse pairs (both modules have the key, plausible length ratio), key order."""
    english = export_module(ENGLISH_MODULE)
    spanish = export_module(SPANISH_MODULE)
    pairs = []
    for key, en in english.items():
        es = spanish.get(key)
        if es is None:
            continue
        n_en, n_es = len(en.split()), len(es.split())
        if max(n_en, n_es) <= MAX_LENGTH_RATIO * min(n_en, n_es) + 2:
            pairs.append(Pair(key, en, es))
    return pairs


def heldout_pairs(pairs: list[Pair]) -> list[Pair]:
    """The evaluation set: the first 500 test-split pairs of <= 15 words per side.

    Ordered by the SHA-256 of the key, so the choice depends on the keys only.
    """
    short = [
        p
        for p in pairs
        if split_of(p.key) == "test"
        and len(p.en.split()) <= HELDOUT_MAX_WORDS
        and len(p.es.split()) <= HELDOUT_MAX_WORDS
    ]
    short.sort(key=lambda p: hashlib.sha256(p.key.encode()).hexdigest())
    return short[:HELDOUT_SIZE]


def write_pairs(path: Path, pairs: list[Pair]) -> None:
    """Write pairs as a UTF-8 TSV with a header (key, en, es)."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE)
        writer.writerow(["key", "en", "es"])
        writer.writerows([p.key, p.en, p.es] for p in pairs)


def read_pairs(text: str) -> list[Pair]:
    """Parse the TSV written by ``write_pairs``."""
    rows = list(csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    return [Pair(*row) for row in rows[1:]]


def shipped_heldout() -> list[Pair]:
    """The held-out pairs shipped in the package (so evaluation needs no export)."""
    path = resources.files("streamproc_translator") / "weights" / HELDOUT_FILE
    return read_pairs(path.read_text(encoding="utf-8"))


def _read_mo(path: str) -> dict[str, str]:
    """msgid -> msgstr of a GNU .mo file; contexts are dropped, plural entries skipped."""
    data = Path(path).read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic == 0x950412DE else ">"
    _, count, ids_at, strs_at = struct.unpack(order + "4I", data[4:20])
    entries = {}
    for i in range(count):
        id_len, id_off = struct.unpack(order + "2I", data[ids_at + 8 * i : ids_at + 8 * i + 8])
        str_len, str_off = struct.unpack(order + "2I", data[strs_at + 8 * i : strs_at + 8 * i + 8])
        msgid = data[id_off : id_off + id_len]
        if not msgid or b"\x00" in msgid:
            continue
        msgid = msgid.split(b"\x04")[-1]
        try:
            entries[msgid.decode("utf-8")] = data[str_off : str_off + str_len].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return entries


_CATALOG_NOISE = re.compile(r"[%{}<>\\\[\]=|$@\n\t]|--|\w_\w|\.\w|^\W*$")


def catalog_sources(paths: list[str]) -> dict[str, str]:
    """Installed file -> the Debian source package that ships it (``dpkg -S`` and ``dpkg-query``).

    A file no installed package owns maps to its catalog name (the text domain, which is
    usually the source package's name). Without dpkg every file maps to its catalog name.
    """
    sources = {path: Path(path).stem for path in paths}
    if not paths or shutil.which("dpkg") is None:
        return sources
    owners = subprocess.run(["dpkg", "-S", *paths], capture_output=True, text=True).stdout
    binary_of: dict[str, str] = {}
    for line in owners.splitlines():
        packages, _, path = line.partition(": ")
        if path in sources:
            binary_of[path] = packages.split(",")[0].strip().split(":")[0]
    if not binary_of:
        return sources
    query = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${source:Package}\n", *sorted(set(binary_of.values()))],
        capture_output=True,
        text=True,
    ).stdout
    source_of = dict(line.split(" ", 1) for line in query.splitlines() if " " in line)
    for path, binary in binary_of.items():
        sources[path] = source_of.get(binary, binary).strip() or binary
    return sources


def catalog_pairs(language: str = "es", max_words: int = 20) -> list[Pair]:
    """Short English -> ``language`` pairs from the installed gettext catalogs.

    Skips strings with format directives, markup, option syntax or identifiers;
    removes mnemonic underscores; keeps pairs of at most ``max_words`` words per side.
    Each key names the catalog's source package (``catalog_sources``), so callers can hold
    out packages. Returns an empty list when no catalog is installed.
    """
    pairs: dict[str, Pair] = {}
    paths = sorted(glob.glob(f"/usr/share/locale/{language}/LC_MESSAGES/*.mo"))
    sources = catalog_sources(paths)
    for path in paths:
        catalog = Path(path).stem
        for msgid, msgstr in _read_mo(path).items():
            en = " ".join(msgid.replace("_", "").split())
            es = " ".join(unicodedata.normalize("NFC", msgstr).replace("_", "").split())
            if not es or en == es or _CATALOG_NOISE.search(msgid) or _CATALOG_NOISE.search(es):
                continue
            if max(len(en.split()), len(es.split())) > max_words:
                continue
            pairs.setdefault(en.lower(), Pair(f"gettext:{sources[path]}:{catalog}:{en}", en, es))
    return list(pairs.values())
