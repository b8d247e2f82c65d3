"""Apertium English -> Spanish (Debian ``apertium`` + ``apertium-eng-spa``), a rule-based system.

Used three ways: as the plugin's ``apertium`` backend, as a reference system in the
evaluation, and as the teacher that translates English monolingual text into synthetic
training pairs (sequence-level distillation).

Many texts go through one ``apertium -u eng-spa`` process, separated by blank lines:
Apertium keeps a blank line as a paragraph boundary and never moves words across it
(a check on 151 package synopses gave the same output, text for text, as one process
per text). Within a text it may reorder words across single line breaks, so line
breaks inside a text are turned into spaces first.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from streamproc.errors import ConfigError

APERTIUM_PAIR = "eng-spa"
CHUNK = 2000
"""Texts per Apertium process (bounds the size of one call)."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


class ApertiumTranslator:
    """Rule-based English -> Spanish translation by the Apertium command-line tool.

    Raises ``ConfigError`` at construction when ``apertium`` or its eng-spa data is
    missing, so that a misconfigured service fails at load, not at inference.
    """

    def __init__(self, executable: str = "apertium", timeout_s: float = 120.0) -> None:
        path = shutil.which(executable)
        if path is None:
            raise ConfigError(
                f"translator.backend apertium: {executable!r} not found; install the Debian packages "
                "apertium and apertium-eng-spa"
            )
        self.executable = path
        self.timeout_s = timeout_s
        try:
            probe = self._run(["test"])
        except (RuntimeError, subprocess.SubprocessError) as error:
            raise ConfigError(f"translator.backend apertium: {executable} eng-spa fails: {error}") from error
        if probe != ["Prueba"]:
            raise ConfigError(
                f"translator.backend apertium: the {APERTIUM_PAIR} pair does not work "
                f"(install apertium-eng-spa); 'test' gave {probe!r}"
            )
        self.version = "apertium-" + APERTIUM_PAIR

    def _run(self, texts: Sequence[str]) -> list[str]:
        try:
            done = subprocess.run(
                [self.executable, "-u", APERTIUM_PAIR],
                input="\n\n".join(texts) + "\n",
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=True,
            )
        except subprocess.CalledProcessError as error:
            raise RuntimeError(f"apertium failed: {error.stderr.strip()[:300]}") from error
        outputs = [part.strip() for part in done.stdout.split("\n\n")]
        if len(outputs) != len(texts):
            raise RuntimeError(f"apertium returned {len(outputs)} texts for {len(texts)}")
        return outputs

    def translate(self, texts: Sequence[str]) -> list[str]:
        """Spanish for each English text (empty texts give ""), in order."""
        results = [""] * len(texts)
        todo = [i for i, text in enumerate(texts) if text.strip()]
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            for i, out in zip(chunk, self._run([_one_line(texts[i]) for i in chunk]), strict=True):
                results[i] = out
        return results
