"""Side-by-side evaluation through the plugin's public path: event -> prepare -> infer -> result.

Systems, all in one run: the plugin with ``backend: gru`` (the trained network), the
plugin with ``backend: apertium``, FreeDict word-by-word, and copying the source. Data:
the general held-out set (``weights/general_heldout.tsv``: whole held-out Debian source
packages, 600 short and 250 long texts, frozen before training) and the Bible held-out
verses (``weights/heldout.tsv``). Each English text is sent as the title of an upload
with ``language: "en"``, so language identification, segmentation and decoding are
exactly what the service runs. Scores: sacrebleu corpus BLEU and chrF with a 95 %
bootstrap interval (1,000 resamples of the texts), and the GRU/Apertium chrF ratio with a
paired bootstrap interval. Also CPU latency per text at batch 1 and batch 16.

    python -m streamproc_translator.evaluate [--weights-dir DIR] [--limit N] [--json FILE] [--model-card]

``--model-card`` writes the report (without the examples), the command, the date, the git
commit of the plugin (``checkout``) and the machine into the ``evaluation`` section of
``weights/model_card.json`` (of ``--weights-dir`` when given).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sacrebleu
import torch
from sacrebleu.metrics import BLEU, CHRF

from streamproc.events import UploadEvent
from streamproc.testing import PluginHarness
from streamproc_translator import corpus, data
from streamproc_translator.baselines import FreeDictBaseline, copy_source
from streamproc_translator.translator import TextTranslator, packaged_weights

BATCH_SIZE = 16
RESAMPLES = 1000


def translate_all(translator: TextTranslator, texts: Sequence[str]) -> list[str]:
    """The bare network on whole texts (validation during training only, not the service path)."""
    out: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(texts), 100):
            out += translator.translate(texts[start : start + 100])
    return out


def upload(text: str, n: int) -> UploadEvent:
    return UploadEvent(
        id=f"eval{n}", type="upload", ts=0, user_id="eval", upload_id=f"eval{n}", title=text, language="en"
    )


def plugin(backend: str, weights_dir: Path | None = None, batch_size: int = BATCH_SIZE) -> PluginHarness:
    """The installed plugin with ``backend``, loaded by the engine's harness with batches of ``batch_size``."""
    options: dict[str, Any] = {"backend": backend}
    if weights_dir is not None:
        options["weights_dir"] = str(weights_dir)
    return PluginHarness.load("translator", options, batch={"max_batch_size": batch_size})


def through_plugin(harness: PluginHarness, texts: Sequence[str]) -> list[str]:
    """The title translation of each text, as the service produces it (event -> prepare -> infer -> result)."""
    return [body["fields"]["title"] if body else "" for body in harness.results(uploads(texts))]


def passed_through(harness: PluginHarness, texts: Sequence[str]) -> int:
    """How many of ``texts`` language identification kept from being translated (passed through)."""
    bodies = harness.results(uploads(texts))
    return sum(1 for body in bodies if body is None or not body["languages"]["title"]["translated"])


def truncated(harness: PluginHarness, texts: Sequence[str]) -> int:
    """How many of ``texts`` came back with ``truncated: true`` (an output hit its cap, or input was cut)."""
    return sum(1 for body in harness.results(uploads(texts)) if body is not None and body["truncated"])


def uploads(texts: Sequence[str]) -> list[UploadEvent]:
    return [upload(t, i) for i, t in enumerate(texts)]


def _stats(metric: BLEU | CHRF, hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    return np.array(metric._extract_corpus_statistics(list(hypotheses), [list(references)]), dtype=float)


def _score(metric: BLEU | CHRF, stats: np.ndarray) -> float:
    return float(metric._compute_score_from_stats(list(stats.sum(axis=0))).score)


def scored(systems: dict[str, list[str]], references: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """BLEU and chrF with 95 % bootstrap intervals per system, plus the paired gru/apertium chrF ratio."""
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(references), size=(RESAMPLES, len(references)))
    table: dict[str, Any] = {"n": len(references)}
    chrf_boot: dict[str, np.ndarray] = {}
    for name, hypotheses in systems.items():
        row = {}
        for label, metric in (("bleu", BLEU()), ("chrf", CHRF())):
            stats = _stats(metric, hypotheses, references)
            boot = np.array([_score(metric, stats[idx]) for idx in samples])
            if label == "chrf":
                chrf_boot[name] = boot
            low, high = np.percentile(boot, [2.5, 97.5])
            row[label] = round(_score(metric, stats), 1)
            row[f"{label}_ci95"] = [round(float(low), 1), round(float(high), 1)]
        table[name] = row
    if "gru" in systems and "apertium" in systems:
        ratio = chrf_boot["gru"] / chrf_boot["apertium"]
        point = table["gru"]["chrf"] / table["apertium"]["chrf"]
        table["gru_over_apertium_chrf"] = {
            "ratio": round(point, 3),
            "ci95": [round(float(x), 3) for x in np.percentile(ratio, [2.5, 97.5])],
        }
    if "gru" in systems and "freedict" in systems:
        diff = chrf_boot["gru"] - chrf_boot["freedict"]
        table["gru_minus_freedict_chrf_ci95"] = [round(float(x), 1) for x in np.percentile(diff, [2.5, 97.5])]
    return table


def latency(backend: str, texts: Sequence[str], weights_dir: Path | None = None, repeats: int = 3) -> dict[str, Any]:
    """Milliseconds per text and texts per second at batch 1 and batch 16 (CPU, this process's threads).

    Each batch size is timed ``repeats`` times over ``texts``; the best run (least disturbed
    by other processes on a shared machine) and the median run are reported.
    """
    result: dict[str, Any] = {"texts": len(texts), "repeats": repeats}
    for batch in (1, BATCH_SIZE):
        harness = plugin(backend, weights_dir, batch)
        through_plugin(harness, texts[:batch])  # warm-up
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            through_plugin(harness, texts)
            runs.append(time.perf_counter() - started)
        best, median = min(runs), float(np.median(runs))
        result[f"batch{batch}_ms_per_text"] = {
            "best": round(1000 * best / len(texts), 1),
            "median": round(1000 * median / len(texts), 1),
        }
        result[f"batch{batch}_texts_per_s"] = {
            "best": round(len(texts) / best, 1),
            "median": round(len(texts) / median, 1),
        }
    return result


def machine() -> dict[str, Any]:
    """The machine the latency was measured on, and how busy it was."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_before": round(os.getloadavg()[0], 2),
        "note": "apertium runs one external process per infer call (batch), so batch 1 pays its start-up per text",
    }


def checkout() -> str:
    """The git commit of the plugin's code and weights, ``+modified`` when its files differ from it."""
    folder = str(Path(__file__).resolve().parent.parent)
    try:
        head = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
        status = subprocess.run(
            ["git", "-C", folder, "status", "--porcelain", "--", "."], check=True, capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head.stdout.strip() + ("+modified" if status.stdout.strip() else "")


def timing(weights_dir: Path | None = None, timing_texts: int = 64) -> dict[str, Any]:
    """Latency of both backends on the first ``timing_texts`` short general held-out texts."""
    texts = [p.en for p in corpus.shipped_general() if p.kind == "short"][:timing_texts]
    report: dict[str, Any] = {"latency_machine": machine()}
    report["latency_cpu_1_thread"] = {name: latency(name, texts, weights_dir) for name in ("gru", "apertium")}
    report["latency_machine"]["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    return report


def evaluate(weights_dir: Path | None = None, limit: int = 0, timing_texts: int = 64) -> dict[str, Any]:
    """The side-by-side tables (general short/long/all and Bible) and the latency figures."""
    plugins = {"gru": plugin("gru", weights_dir), "apertium": plugin("apertium")}
    dictionary = FreeDictBaseline()
    systems: dict[str, Callable[[Sequence[str]], list[str]]] = {
        "gru": lambda texts: through_plugin(plugins["gru"], texts),
        "apertium": lambda texts: through_plugin(plugins["apertium"], texts),
        "freedict": lambda texts: [dictionary.translate(t) for t in texts],
        "copy": lambda texts: [copy_source(t) for t in texts],
    }
    general = corpus.shipped_general()
    bible = data.shipped_heldout()
    if limit:
        general = general[:limit] + [p for p in general if p.kind == "long"][: limit // 3]
        bible = bible[:limit]
    report: dict[str, Any] = {"model_version": plugins["gru"].plugin.model_version, "sacrebleu": sacrebleu.__version__}
    outputs: dict[str, dict[str, list[str]]] = {}
    for set_name, english, references in (
        ("general", [p.en for p in general], [p.es for p in general]),
        ("bible", [p.en for p in bible], [p.es for p in bible]),
    ):
        outputs[set_name] = {name: run(english) for name, run in systems.items()}
        report[set_name] = scored(outputs[set_name], references)
        # Language identification on the same path: the English sources should all be translated,
        # the Spanish references, sent as English uploads, none.
        report[set_name]["language_identification"] = {
            "english_sources_passed_through": passed_through(plugins["gru"], english),
            "spanish_references_labelled_en_translated": len(references) - passed_through(plugins["gru"], references),
            "n": len(references),
        }
        report[set_name]["gru_results_truncated"] = truncated(plugins["gru"], english)
        if set_name == "general":
            for kind in ("short", "long"):
                index = [i for i, p in enumerate(general) if p.kind == kind]
                kind_systems = {name: [hyp[i] for i in index] for name, hyp in outputs[set_name].items()}
                report[f"general_{kind}"] = scored(kind_systems, [references[i] for i in index])
    bleu, chrf = BLEU(), CHRF()
    bleu.corpus_score(["a"], [["a"]])
    chrf.corpus_score(["a"], [["a"]])
    report["signatures"] = {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}
    report.update(timing(weights_dir, timing_texts))
    report["examples"] = [
        {"en": p.en, "reference": p.es, **{name: outputs["general"][name][i] for name in ("gru", "apertium")}}
        for i, p in enumerate(general[:8])
    ]
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights-dir", type=Path, default=None, help="GRU weights (default: packaged)")
    parser.add_argument("--limit", type=int, default=0, help="first N pairs of each set (smoke runs)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--model-card", action="store_true", help="record the report in the model card")
    parser.add_argument("--latency-only", action="store_true", help="measure (and record) only the latency")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    commit = checkout()  # before the card is written
    report = timing(args.weights_dir) if args.latency_only else evaluate(args.weights_dir, args.limit)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print(text)
    if args.model_card:
        card_path = Path(str(args.weights_dir or packaged_weights())) / "model_card.json"
        card = json.loads(card_path.read_text(encoding="utf-8"))
        command = " ".join(["python -m streamproc_translator.evaluate", *(sys.argv[1:] if argv is None else argv)])
        measured = {k: v for k, v in report.items() if k != "examples"}
        today = datetime.date.today().isoformat()
        if args.latency_only:
            card.setdefault("evaluation", {}).update(
                measured, latency_command=command, latency_date=today, latency_commit=commit
            )
        else:
            card["evaluation"] = {"command": command, "date": today, "commit": commit, **measured}
        card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
