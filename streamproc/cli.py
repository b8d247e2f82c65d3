"""The ``streamproc`` command line: worker, plugins, config, produce, tail, demo, stack, bench."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streamproc.config import Settings, load_settings
from streamproc.errors import StreamprocError
from streamproc.ops.logs import configure_logging

DESCRIPTION = """Real-time ML event processor: Kafka events through PyTorch plugins to Redis and Kafka.

Settings come from STREAMPROC_* environment variables and an optional YAML file
(--config or STREAMPROC_CONFIG_FILE); see docs/configuration.md."""


TOOL_EXTRAS = ("dev", "bench")
"""Tool packages that ship apart from the production wheel, each with the extra of that name."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        configure_logging(settings.log_level, settings.log_format)
        return int(args.handler(args, settings) or 0)
    except StreamprocError as exc:
        print(f"streamproc: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = _missing_extra(exc)
        if extra is None:
            raise
        print(
            f"streamproc: error: `streamproc {args.command}` needs the {extra} tools, which this installation "
            f"lacks: pip install 'streamproc[{extra}]'",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130


def _missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The extra (``dev``, ``bench``) whose package is missing, if that is what failed."""
    parts = (exc.name or "").split(".")
    if parts[0] == "streamproc" and len(parts) > 1 and parts[1] in TOOL_EXTRAS:
        return parts[1]
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamproc", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", metavar="FILE", help="YAML settings file (default: $STREAMPROC_CONFIG_FILE)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("worker", help="run the stream worker until SIGTERM")
    p.set_defaults(handler=_worker)

    p = sub.add_parser("plugins", help="list discovered plugins and those that failed to load")
    p.add_argument("--no-load", action="store_true", help="only discover; do not load model weights")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_plugins)

    p = sub.add_parser("config", help="print the effective configuration (secrets masked)")
    p.add_argument("--reference", action="store_true", help="print the reference of every setting (Markdown)")
    p.set_defaults(handler=_config)

    p = sub.add_parser("produce", help="send demo events or a JSON-lines file to the input topics")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--demo", type=int, metavar="N", help="N demo events of every type (plus a few bad ones)")
    source.add_argument("--file", type=Path, metavar="PATH", help="JSON-lines file, one event per line")
    p.add_argument("--no-bad", action="store_true", help="with --demo: leave out the deliberately bad events")
    p.set_defaults(handler=_produce)

    p = sub.add_parser("tail", help="print live results from Redis feeds")
    p.add_argument("kinds", nargs="*", help="result kinds (default: every feed)")
    p.add_argument("--from-start", action="store_true", help="print the feed's existing entries first")
    p.add_argument("--limit", type=int, default=0, help="stop after N results (default: run until Ctrl-C)")
    p.set_defaults(handler=_tail)

    p = sub.add_parser("demo", help="local stack + worker + demo events, results live, and a summary")
    p.add_argument("--events", type=int, default=200, help="number of demo events (default 200)")
    p.add_argument("--keep-stack", action="store_true", help="leave the local stack running afterwards")
    p.set_defaults(handler=_demo)

    p = sub.add_parser("stack", help="manage the local Kafka + Redis stack (development and tests)")
    p.add_argument(
        "action",
        choices=("up", "down", "status", "fetch"),
        help="up: start (or show the running stack); down: stop; status; fetch: download Kafka's jars",
    )
    p.add_argument("--home", type=Path, help="stack directory (default: $STREAMPROC_CACHE/stack)")
    p.set_defaults(handler=_stack)

    p = sub.add_parser("bench", help="compute and transport limits, the pipeline and a naive baseline, side by side")
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="output folder (default bench-results)")
    p.add_argument("--events", type=int, help="most events per throughput run (default 4000; --quick 300)")
    p.add_argument("--duration", type=float, help="seconds of each paced latency run (default 20; --quick 5)")
    p.add_argument("--plugins", help="comma-separated plugins (default: every installed, enabled plugin)")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a measurement")
    p.add_argument("--no-mixed", action="store_true", help="leave out the mixed workload")
    p.add_argument("--profile", action="store_true", help="py-spy the worker during each maximum-throughput run")
    p.add_argument("--workers", type=int, default=1, help="worker processes in the pipeline's consumer group")
    p.add_argument(
        "--skip", type=_skippable_stages, metavar="STAGES", help="leave out stages: transport, naive (comma-separated)"
    )
    p.set_defaults(handler=_bench)
    return parser


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc.registry import load_plugins
    from streamproc.worker import StreamprocWorker

    runtimes, reports = load_plugins(settings)
    StreamprocWorker(settings, runtimes, load_failures=sum(1 for r in reports if r.error)).run()
    return 0


def _plugins(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc.registry import load_plugins

    _, reports = load_plugins(settings, load_models=not args.no_load)
    if args.json:
        print(json.dumps([r.__dict__ for r in reports], indent=2))
        return 0
    if not reports:
        print("no plugins installed (entry-point group streamproc.plugins)")
    for r in reports:
        if r.error:
            print(f"FAILED  {r.name:<12} ({r.distribution}): {r.error}")
        else:
            print(
                f"ok      {r.name:<12} {r.distribution} {r.version}  consumes {','.join(r.consumes)} "
                f"-> {r.produces}  device {r.device}  model {r.model_version}"
            )
    return 1 if any(r.error for r in reports) else 0


def _config(args: argparse.Namespace, settings: Settings) -> int:
    import yaml

    from streamproc.config import reference_markdown, reference_rows
    from streamproc.registry import options_reference

    if args.reference:
        print(reference_markdown(), end="")
        for name, options in options_reference():
            print(f"\nOptions of the `{name}` plugin (`plugins.{name}.options`):\n")
            print("| YAML path | default | meaning |\n| --- | --- | --- |")
            print("\n".join(reference_rows(options, ("plugins", name, "options"), with_env=False)))
        return 0
    print(yaml.safe_dump(settings.masked(), sort_keys=False), end="")
    return 0


def _produce(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc.dev.demo_events import demo_records
    from streamproc.dev.producer import file_records, produce

    if args.demo is not None:
        records = list(demo_records(args.demo, bad=not args.no_bad))
    else:
        records = list(file_records(args.file, settings))
    counts = produce(settings, records, len(records), settings.kafka.input_topics)
    print(json.dumps(counts))
    return 0


def _tail(args: argparse.Namespace, settings: Settings) -> int:
    import redis

    from streamproc.dev.feeds import FeedReader, summarize

    reader = FeedReader(
        redis.Redis.from_url(settings.redis.url),
        settings.redis.key_prefix,
        args.kinds or None,
        from_start=args.from_start,
    )
    shown = 0
    while not args.limit or shown < args.limit:
        for record in reader.poll(block_ms=1000):
            print(summarize(record), flush=True)
            shown += 1
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc.dev.demo import run_demo

    return run_demo(settings, args.events, args.keep_stack)


def _skippable_stages(text: str) -> frozenset[str]:
    stages = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = stages - {"transport", "naive"}
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown stage(s) {', '.join(sorted(unknown))}; choose transport, naive")
    return stages


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc.bench.run import BenchOptions, run_bench_command

    return run_bench_command(settings, BenchOptions.from_args(args))


def _stack(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc.dev.stack import LocalStack, main_progress

    stack = LocalStack(args.home)
    if args.action == "fetch":
        print(stack.ensure_kafka_jars(main_progress))
    elif args.action == "up":
        print(stack.up(main_progress).describe())
    elif args.action == "down":
        print("stack stopped" if stack.down() else "no stack running")
    else:
        info = stack.status()
        print(info.describe() if info else "no stack running")
        return 0 if info else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
