"""GPU check of the bundled plugins: speed with bf16 autocast and fp32, and agreement with the CPU.

One run, in process, with no network and no Kafka or Redis (the GPU machine reaches
neither), under 8 minutes. For each bundled plugin:

1. agreement: the same events through the plugin on the CPU (fp32, the reference) and on
   the GPU in fp32 and in bf16 autocast, batch by batch in the same order; compared per
   plugin with the tolerances in ``TOLERANCES`` (tagger: every class probability within
   1e-2 and the same top-1; speech and translator: identical strings, the agreement
   rate reported; recommender: same top-1, shared items' scores within 1e-2; artwork:
   per-image mean absolute pixel difference within 4 grey levels of 255);
2. the compute limit on the GPU: ``PluginRuntime.run_batch`` at a sweep of batch sizes
   (as ``streamproc bench`` stage a), per precision;
3. an in-process pipeline on the GPU: the engine's ``MicroBatcher`` feeding
   ``PluginRuntime.run_batch`` on the plugin's thread, driven by asyncio: maximum
   throughput, then latency (submit -> outcome) at 50% and 90% of it. It covers
   batching (queue, ``max_wait_ms``, ``max_batch_size``), the hand-off to the plugin
   thread, prepare/infer/result and the device copies; it does NOT cover Kafka
   consumption, event decoding, keyed state in Redis, the ordered publisher, the Redis
   and Kafka writes or offset commits (``streamproc bench`` measures those on a machine
   with Kafka and Redis).

Events come from ``deploy/gpu/inputs.jsonl.gz`` (real demo events made on a machine with
the demo data: ``--write-inputs``), so the GPU machine needs neither the datasets nor
espeak-ng. The script imports streamproc and the plugins from this repository copy
(``plugins/*/pyproject.toml`` entry points) when they are not installed; it needs
torch with CUDA, numpy, pillow, safetensors, pydantic, pyyaml and the plugins' weights.

    python deploy/gpu/gpu_check.py --out DIR            # on the GPU machine
    python deploy/gpu/gpu_check.py --out DIR --device cpu --budget-s 120   # a dry run here
    python deploy/gpu/gpu_check.py --write-inputs       # where the demo data is installed

Writes ``DIR/gpu_check.json`` and prints the device name and a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import importlib
import io
import json
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
INPUTS = Path(__file__).resolve().with_name("inputs.jsonl.gz")
ENTRY_POINT_GROUP = "streamproc.plugins"
TOLERANCES = {
    "tagger": "every class probability within 1e-2 of the CPU's and the same top-1 class",
    "speech": "identical transcript text",
    "translator": "identical translated strings (every field)",
    "recommender": "same top-1 item, scores of shared items within 1e-2",
    "artwork": "per-image mean absolute pixel difference <= 4 grey levels (of 255)",
}
# Share of events that must agree for a PASS: fp32 on the GPU should agree almost always;
# bf16 rounds activations to 8 bits of mantissa, so near-ties may flip.
REQUIRED_AGREEMENT = {"fp32": 0.98, "bf16": 0.90}
SIZES = (1, 4, 16, 64, 256)


def _use_repository_copy() -> dict[str, str]:
    """Put the repo and its plugins on sys.path; their entry points from pyproject.toml."""
    for path in [REPO, *sorted((REPO / "plugins").glob("*"))]:
        if path.is_dir() and str(path) not in sys.path:
            sys.path.insert(0, str(path))
    entry_points = {}
    for project in sorted((REPO / "plugins").glob("*/pyproject.toml")):
        data = tomllib.loads(project.read_text())
        entry_points.update(data.get("project", {}).get("entry-points", {}).get(ENTRY_POINT_GROUP, {}))
    return entry_points


def _plugin_class(target: str) -> type:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _say(message: str) -> None:
    print(message, flush=True)


def write_inputs(path: Path) -> None:
    """Real demo events for every bundled plugin, for machines without the demo data.

    Uploads: Fashion-MNIST test images (PNG, 112 px) titled with English sentences of
    the translator's held-out set, every other one asking for artwork. Audio: voice
    commands of the speech grammar spoken by espeak-ng voices, stored as 16 kHz WAV (the
    recognizer's rate; half the bytes of espeak's 22.05 kHz). Playback: demo playback.
    """
    import random
    import shutil
    import subprocess

    from streamproc.dev.demo_events import FASHION_CLASSES, demo_records, fashion_images, fix_wav_sizes
    from streamproc.media import decode_wav, encode_wav

    rng = random.Random(11)
    lines: list[dict[str, Any]] = []
    ts = int(time.time() * 1000)
    for record in demo_records(256, seed=11, bad=False):
        if record.event_type == "playback":
            lines.append({"key": record.key.decode(), "value": record.value.decode(), "type": "playback"})
    heldout = REPO / "plugins/translator/streamproc_translator/weights/heldout.tsv"
    sentences = [row.split("\t")[1] for row in heldout.read_text().splitlines()[1:] if row.count("\t") >= 2]
    images = fashion_images(64, rng)
    for i, (label, png) in enumerate(images):
        doc: dict[str, Any] = {
            "id": f"gpu-upload-{i}",
            "type": "upload",
            "ts": ts + i,
            "user_id": f"u{i % 7}",
            "upload_id": f"gpu-up{i}",
            "image": base64.b64encode(png).decode(),
            "title": sentences[i % len(sentences)] if sentences else "A photo",
            "description": sentences[(i + 64) % len(sentences)] if sentences else "",
            "language": "en",
        }
        if i % 2 == 0:
            doc["artwork"] = {"category": FASHION_CLASSES[label], "count": 2, "seed": i}
        lines.append({"key": doc["upload_id"], "value": json.dumps(doc), "type": "upload"})
    espeak = shutil.which("espeak-ng")
    try:
        from streamproc_speech.grammar import phrases

        texts = phrases(32, 11)
    except Exception:
        texts = ["play", "pause", "next", "volume up", "play episode seven", "skip ten seconds"] * 6
    voices = ("en-us", "en", "en-gb-x-rp", "en-us+f3")
    for i, text in enumerate(texts[:32] if espeak else []):
        done = subprocess.run(
            [espeak, "-v", voices[i % len(voices)], "-s", str(140 + 10 * (i % 4)), "--stdout", text],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0 or not done.stdout.startswith(b"RIFF"):
            continue
        doc = {
            "id": f"gpu-audio-{i}",
            "type": "audio",
            "ts": ts + 1000 + i,
            "user_id": f"u{i % 5}",
            "audio_id": f"gpu-a{i}",
            "audio": base64.b64encode(encode_wav(decode_wav(fix_wav_sizes(done.stdout)))).decode(),
            "language": "en",
        }
        lines.append({"key": doc["audio_id"], "value": json.dumps(doc), "type": "audio"})
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for line in lines:
            event_id = json.loads(line["value"])["id"]
            out.write(json.dumps({**line, "id": event_id, "results": 1}) + "\n")
    counts = {t: sum(1 for x in lines if x["type"] == t) for t in ("playback", "upload", "audio")}
    _say(f"wrote {path} ({path.stat().st_size // 1024} KiB): {counts}")


def read_inputs(path: Path) -> list[Any]:
    from streamproc.bench.workload import WorkloadRecord

    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [WorkloadRecord.from_json(line) for line in lines if line.strip()]


def _bodies(outcomes: Sequence[Any]) -> list[Mapping[str, Any] | None]:
    return [o.body if o.failure is None else None for o in outcomes]


def _png_pixels(text: str) -> Any:
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("L"), dtype=np.float32)


def _agree(plugin: str, ref: Mapping[str, Any], got: Mapping[str, Any]) -> tuple[bool, dict[str, float]]:
    """Whether one GPU result body agrees with the CPU's, and the differences measured."""
    if plugin == "tagger":
        p_ref = {t["label"]: t["probability"] for t in ref["tags"]}
        p_got = {t["label"]: t["probability"] for t in got["tags"]}
        worst = max((abs(p_ref[k] - p_got.get(k, 0.0)) for k in p_ref), default=0.0)
        same_top = ref["tags"][0]["label"] == got["tags"][0]["label"]
        return same_top and worst <= 1e-2, {"max_abs_probability": worst}
    if plugin == "speech":
        return ref["text"] == got["text"], {}
    if plugin == "translator":
        return dict(ref["fields"]) == dict(got["fields"]), {}
    if plugin == "recommender":
        s_ref = {i["item_id"]: i["score"] for i in ref["items"]}
        s_got = {i["item_id"]: i["score"] for i in got["items"]}
        shared = set(s_ref) & set(s_got)
        worst = max((abs(s_ref[k] - s_got[k]) for k in shared), default=0.0)
        same_top = bool(ref["items"]) == bool(got["items"]) and (
            not ref["items"] or ref["items"][0]["item_id"] == got["items"][0]["item_id"]
        )
        overlap = len(shared) / max(len(set(s_ref) | set(s_got)), 1)
        return same_top and worst <= 1e-2, {"max_abs_score": worst, "topk_jaccard": overlap}
    if plugin == "artwork":
        diffs = [
            float(abs(_png_pixels(a) - _png_pixels(b)).mean())
            for a, b in zip(ref["images"], got["images"], strict=False)
        ]
        worst = max(diffs, default=0.0)
        return len(ref["images"]) == len(got["images"]) and worst <= 4.0, {"mean_abs_pixel": worst}
    return ref == got, {}


def compare(plugin: str, reference: Sequence[Any], candidate: Sequence[Any]) -> dict[str, Any]:
    """Agreement of a GPU run with the CPU reference, item by item."""
    agreed, both, failures = 0, 0, 0
    worst: dict[str, float] = {}
    for ref, got in zip(_bodies(reference), _bodies(candidate), strict=True):
        if ref is None or got is None:
            failures += (ref is None) != (got is None)
            continue
        both += 1
        ok, diffs = _agree(plugin, ref, got)
        agreed += ok
        for key, value in diffs.items():
            pick = min if key == "topk_jaccard" else max  # the worst overlap is the smallest
            worst[key] = pick(worst.get(key, value), value)
    return {
        "compared": both,
        "agreement_rate": round(agreed / both, 4) if both else None,
        "outcome_mismatches": failures,
        "worst": {k: round(v, 6) for k, v in worst.items()},
        "tolerance": TOLERANCES.get(plugin, "identical result bodies"),
    }


def _run_all(thread: Any, items: Sequence[Any], size: int) -> list[Any]:
    outcomes = []
    for start in range(0, len(items), size):
        batch_outcomes, _, _ = thread.run_batch(items[start : start + size])
        outcomes.extend(batch_outcomes)
    return outcomes


def check_plugin(
    name: str,
    cls: type,
    records: Sequence[Any],
    device: Any,
    deadline: float,
    stage_s: float,
) -> dict[str, Any]:
    """Agreement, sweep and in-process pipeline of one plugin, in both precisions."""
    import torch

    from streamproc.bench.compute import EventSelector, PluginThread, sizes_to_try, sweep
    from streamproc.config import PluginSettings
    from streamproc.engine.routing import PluginRoute, Router
    from streamproc.engine.runtime import PluginRuntime
    from streamproc.events import PayloadLimits

    options = {"tagger": {"top_k": 10}, "translator": {"backend": "gru"}}.get(name, {})  # the networks, on the GPU
    settings = PluginSettings(options=options)

    def runtime_on(where: Any, dtype: Any) -> Any:
        runtime = PluginRuntime(cls(), settings, where, dtype, 1)
        runtime.load()
        return runtime

    def thread_on(where: Any, dtype: Any) -> Any:
        return PluginThread(runtime_on(where, dtype))

    out: dict[str, Any] = {}
    started = time.perf_counter()
    selector_rt = runtime_on(torch.device("cpu"), None)
    router = Router([PluginRoute(name, tuple(cls.consumes), cls.produces, "-")])
    selector = EventSelector({name: selector_rt}, router, PayloadLimits(), True, pool=iter(records))
    chosen = selector.take(len(records))
    if not chosen:
        return {"error": "no input event carries work for this plugin"}
    items = [(s.event, s.states.get(name)) for s in chosen]
    size = selector_rt.policy.max_batch_size
    out["events"] = len(items)
    out["policy"] = {"max_batch_size": size, "max_wait_ms": selector_rt.policy.max_wait_ms}
    reference = _run_all(thread_on(torch.device("cpu"), None), items, size)
    cpu_points = sweep(PluginThread(selector_rt), items, [size], budget_s=min(2.0, stage_s))
    out["cpu_fp32_events_per_s"] = round(cpu_points[0].events_per_s, 2)
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", None)):
        if time.time() > deadline:
            out[precision] = {"skipped": "time budget spent"}
            continue
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        thread = thread_on(device, dtype if device.type == "cuda" else None)
        section: dict[str, Any] = {"autocast": str(dtype) if dtype is not None else "none (fp32)"}
        agreement = compare(name, reference, _run_all(thread, items, size))
        agreement["required"] = REQUIRED_AGREEMENT[precision]
        rate = agreement["agreement_rate"]
        agreement["result"] = "n/a" if rate is None else ("PASS" if rate >= REQUIRED_AGREEMENT[precision] else "MISS")
        section["agreement"] = agreement
        sizes = sorted({*SIZES, *sizes_to_try(size)})
        sweep_until = min(deadline, time.time() + 1.5 * stage_s)
        points = sweep(thread, items, sizes, budget_s=stage_s / len(sizes), min_batches=2, deadline=sweep_until)
        best = max(points, key=lambda p: p.events_per_s)
        section["sweep"] = [p.summary() for p in points]
        section["best_batch_size"] = best.batch_size
        section["events_per_s"] = round(best.events_per_s, 2)
        if time.time() < deadline:
            section["in_process"] = asyncio.run(_in_process(thread.runtime, items, best.events_per_s, stage_s))
        if device.type == "cuda":
            section["max_memory_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out[precision] = section
        thread.close()
        del thread
        if device.type == "cuda":
            torch.cuda.empty_cache()
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


async def _in_process(runtime: Any, items: Sequence[Any], compute_rate: float, stage_s: float) -> dict[str, Any]:
    """MicroBatcher + run_batch: maximum, then latency at 50% and 90% of it."""
    from streamproc.bench.compute import drive_batcher

    window = stage_s / 2
    count = int(max(4 * runtime.policy.max_batch_size, compute_rate * window))
    top = await drive_batcher(runtime, items, count, max_s=window)
    out: dict[str, Any] = {"max": top.summary()}
    rate = top.events_per_s or (top.completed / top.seconds if top.seconds else None)
    for load in (0.5, 0.9):
        if not rate:
            break
        paced = await drive_batcher(
            runtime, items, max(10, int(load * rate * window)), rate=load * rate, warmup_s=min(1.0, window / 4)
        )
        out[f"{round(load * 100)}"] = {"offered_events_per_s": round(load * rate, 2), **paced.summary()}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for gpu_check.json")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    parser.add_argument("--plugins", help="comma-separated (default: every bundled plugin)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="overall time budget (default 420 s)")
    parser.add_argument("--inputs", type=Path, default=INPUTS, help="events file (default deploy/gpu/inputs.jsonl.gz)")
    parser.add_argument("--write-inputs", action="store_true", help="write the events file from the demo data")
    args = parser.parse_args(argv)
    started = time.time()
    entry_points = _use_repository_copy()
    if args.write_inputs:
        write_inputs(args.inputs)
        return 0
    if args.out is None:
        parser.error("--out is required")
    import torch

    from streamproc.engine.runtime import configure_cpu_threads

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        _say(f"CUDA is not available here (torch {torch.__version__}); use --device cpu for a dry run")
        return 2
    configure_cpu_threads(0, plugin_threads=1, reserved_cores=0)  # one batch at a time: every core
    facts: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(
            name=torch.cuda.get_device_name(device),
            capability=f"{props.major}.{props.minor}",
            memory_gb=round(props.total_memory / 1e9, 1),
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in the agreement check
        torch.backends.cudnn.allow_tf32 = False
    _say(f"device: {facts.get('name', device)} ({facts})")
    records = read_inputs(args.inputs)
    wanted = args.plugins.split(",") if args.plugins else sorted(entry_points)
    report: dict[str, Any] = {"machine": facts, "inputs": str(args.inputs), "plugins": {}, "covers": _COVERS}
    deadline = started + args.budget_s
    for index, name in enumerate(wanted):
        remaining = deadline - time.time()
        if remaining < 20:
            report["plugins"][name] = {"skipped": "time budget spent"}
            continue
        stage_s = min(10.0, remaining / (len(wanted) - index) / 8)
        _say(f"[{name}] checking (stage budget {stage_s:.1f} s) ...")
        try:
            cls = _plugin_class(entry_points[name])
            result = check_plugin(name, cls, records, device, deadline, stage_s)
        except Exception as exc:  # one plugin's failure is reported; the others still run
            result = {"error": f"{type(exc).__name__}: {exc}"}
        report["plugins"][name] = result
        _say(_plugin_line(name, result))
    report["seconds"] = round(time.time() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    _say(f"wrote {args.out / 'gpu_check.json'} in {report['seconds']} s")
    return 0


_COVERS = (
    "in-process pipeline = MicroBatcher (queue, max_wait_ms, max_batch_size) + plugin thread + "
    "PluginRuntime.run_batch (prepare, infer under inference mode/autocast, result) on the device; "
    "not Kafka, decoding, Redis state, ordered publishing, sink writes or commits"
)


def _plugin_line(name: str, result: Mapping[str, Any]) -> str:
    if "error" in result or "skipped" in result:
        return f"[{name}] {result.get('error') or result.get('skipped')}"
    parts = [f"[{name}] {result['events']} events; CPU fp32 {result['cpu_fp32_events_per_s']}/s"]
    for precision in ("bf16", "fp32"):
        section = result.get(precision) or {}
        if "events_per_s" not in section:
            continue
        agreement = section["agreement"]
        pipeline = ((section.get("in_process") or {}).get("50") or {}).get("latency") or {}
        parts.append(
            f"{precision}: {section['events_per_s']}/s at batch {section['best_batch_size']}, "
            f"agreement {agreement['agreement_rate']} {agreement['result']}, "
            f"p99 at 50% {pipeline.get('p99_ms', 'n/a')} ms"
        )
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
