"""The ``streamproc`` command line: worker, plugins, config, produce, tail, get, dead-letters, ui,
demo, stack, bench."""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from streamproc.config import Settings, load_settings
from streamproc.errors import StreamprocError
from streamproc.ops.logs import configure_logging
from streamproc.redis_clients import sync_redis

DESCRIPTION = """Real-time ML event processor: Kafka events through PyTorch plugins to Redis and Kafka.

Settings come from STREAMPROC_* environment variables and an optional YAML file
(--config or STREAMPROC_CONFIG_FILE); see docs/configuration.md."""


TOOL_EXTRAS = ("dev", "bench")
"""Tool packages that ship apart from the production wheel, each with the extra of that name."""

STACK_USERS = frozenset({"worker", "produce", "tail", "get", "dead-letters", "bench", "ui"})
"""Commands that use the running local stack when no Kafka or Redis address is configured."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        configure_logging(settings.log_level, settings.log_format)
        if args.command in STACK_USERS:
            settings = _with_local_stack(settings)
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


def _with_local_stack(settings: Settings) -> Settings:
    """The settings with the local stack's addresses where none is configured, saying so
    in one line on stderr (unchanged where the dev tools, and so the stack, are absent)."""
    try:
        from streamproc.dev.stack import with_local_stack
    except ModuleNotFoundError:
        return settings
    settings, line = with_local_stack(settings)
    if line:
        print(f"streamproc: {line}", file=sys.stderr)
    return settings


def _version() -> str:
    try:
        return version("streamproc")
    except PackageNotFoundError:
        return "unknown (not installed)"


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
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
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
    p.add_argument("--limit", type=_count, default=0, help="stop after exactly N results (default 0: run until Ctrl-C)")
    p.add_argument("--images", type=Path, help="where images in results are saved (default: $STREAMPROC_CACHE/images)")
    p.set_defaults(handler=_tail)

    p = sub.add_parser("get", help="print the latest result of a kind for one key (from Redis)")
    p.add_argument("kind", help="result kind (tags, recommendations, artwork, transcript, translation, ...)")
    p.add_argument("key", help="the entity: user_id (playback), upload_id (upload), audio_id (audio)")
    p.add_argument("--raw", action="store_true", help="the whole record, images and long strings included")
    p.add_argument("--images", type=Path, help="where images are saved (default: $STREAMPROC_CACHE/images)")
    p.set_defaults(handler=_get)

    p = sub.add_parser("dead-letters", help="list, show or replay dead letters (refused events)")
    p.add_argument("action", choices=("list", "show", "replay"), help="list; show REF; replay (filtered)")
    p.add_argument("ref", nargs="?", help="show: <partition>@<offset> from list, or an event id")
    p.add_argument("--stage", help="only this stage (decode, prepare, infer, ...)")
    p.add_argument("--plugin", help="only letters of this plugin")
    p.add_argument("--reason", help="only reasons containing this text (case-insensitive)")
    p.add_argument("--event-id", help="only this event id")
    p.add_argument("--since", help="refused at or after: 15m, 2h, 1d ago, or an ISO 8601 time")
    p.add_argument("--until", help="refused at or before: a duration ago or an ISO 8601 time")
    p.add_argument("--all", action="store_true", help="replay: every letter (without a filter, replay refuses)")
    p.add_argument("--dry-run", action="store_true", help="replay: say what would be sent, send nothing")
    p.set_defaults(handler=_dead_letters)

    p = sub.add_parser("ui", help="serve a live page of results, dead letters and per-plugin figures (read-only)")
    p.add_argument("--bind", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.set_defaults(handler=_ui)

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
        "--skip",
        type=_skippable_stages,
        metavar="STAGES",
        help="leave out stages: transport, naive, competent, fair, exactly_once (comma-separated)",
    )
    p.add_argument(
        "--max-other-cores",
        type=float,
        help="a stage during or before which other processes used more cores than this is marked INVALID "
        "(default 0.25)",
    )
    p.set_defaults(handler=_bench)
    return parser


def _count(text: str) -> int:
    """An argparse type: a whole number, 0 or more (argparse refuses anything else, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: give 0 or more")
    return value


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc import preflight

    preflight.check_kafka(settings)
    preflight.check_redis(settings)
    from streamproc.worker import StreamprocWorker  # Faust: seconds to import, after the quick checks

    # With model processes only stateful plugins are loaded here (their update_state runs
    # in this process); every model is loaded in its model processes.
    runtimes, reports = _load_plugins(settings, load_models=True, stateless_models=settings.model_processes == 0)
    StreamprocWorker(settings, runtimes, load_failures=sum(1 for r in reports if r.error)).run()
    return 0


def _load_plugins(settings: Settings, load_models: bool, stateless_models: bool = True) -> tuple[dict, list]:
    """``registry.load_plugins``, saying on stderr what it loads and how long it took
    (loading models takes seconds; a silent terminal looks hung)."""
    from streamproc import preflight
    from streamproc.registry import load_plugins

    preflight.check_plugin_names(settings)
    preflight.check_device(settings)
    if not load_models:
        return load_plugins(settings, load_models=False)
    print(f"streamproc: loading plugins on {settings.device} device ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    runtimes, reports = load_plugins(settings, stateless_models=stateless_models)
    names = ", ".join(sorted(runtimes)) or "none"
    print(f"streamproc: loaded {names} in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return runtimes, reports


def _plugins(args: argparse.Namespace, settings: Settings) -> int:
    _, reports = _load_plugins(settings, load_models=not args.no_load)
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
    """Send demo events or a file's good lines; bad lines are reported (number, reason) and
    not sent, and make the exit status 1 once everything else is sent. The input topics are
    created first and their leaders awaited, so the first sends meet neither a missing
    topic nor a partition without a leader, and kafka-python's retry chatter stays quiet."""
    import logging

    from streamproc import preflight
    from streamproc.dev.demo_events import demo_records
    from streamproc.dev.producer import BadLine, check_readable, file_records, produce
    from streamproc.kafka_clients import ensure_topics

    if args.file is not None:
        check_readable(args.file)
    preflight.check_kafka(settings)
    bad: list[BadLine] = []
    if args.demo is not None:
        records = list(demo_records(args.demo, bad=not args.no_bad))
    else:
        records = []
        for item in file_records(args.file, settings):
            if isinstance(item, BadLine):
                print(f"streamproc: {args.file}: {item.describe()} (not sent)", file=sys.stderr, flush=True)
                bad.append(item)
            else:
                records.append(item)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    ensure_topics(settings.kafka, settings.kafka.input_topics.values(), wait_for_leaders=True)
    counts = produce(settings, records, len(records), settings.kafka.input_topics)
    print(json.dumps(counts))
    if bad:
        print(f"streamproc: {len(bad)} bad line(s) not sent, {len(records)} sent", file=sys.stderr)
        return 1
    return 0


def _tail(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc import preflight
    from streamproc.dev.feeds import FeedReader, summarize

    preflight.check_redis(settings)
    reader = FeedReader(
        sync_redis(settings.redis),
        settings.redis.key_prefix,
        args.kinds or None,
        from_start=args.from_start,
    )
    shown = 0
    while not args.limit or shown < args.limit:
        for record in reader.poll(block_ms=1000):
            print(summarize(record, args.images), flush=True)
            shown += 1
            if shown == args.limit:
                break
    return 0


def _get(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc import preflight
    from streamproc.dev.feeds import compact, latest

    preflight.check_redis(settings)
    record = latest(sync_redis(settings.redis), settings.redis.key_prefix, args.kind, args.key)
    if record is None:
        print(f"streamproc: no {args.kind} result for key {args.key!r} (none yet, or expired)", file=sys.stderr)
        return 1
    shown = record if args.raw else compact(record, args.images)
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    return 0


def _dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc import deadletters, preflight

    wanted = deadletters.LetterFilter(
        stage=args.stage,
        plugin=args.plugin,
        reason=args.reason,
        event_id=args.event_id,
        since_ms=deadletters.parse_time(args.since) if args.since else None,
        until_ms=deadletters.parse_time(args.until) if args.until else None,
    )
    if args.action == "show" and not args.ref:
        raise deadletters.DeadLetterError("show needs a letter: <partition>@<offset> (from list) or an event id")
    if args.action == "replay" and wanted == deadletters.LetterFilter() and not args.all:
        raise deadletters.DeadLetterError("replay needs a filter (--stage, --plugin, --reason, --since ...) or --all")
    preflight.check_kafka(settings)
    letters = deadletters.select(deadletters.read_letters(settings), wanted)
    if args.action == "show":
        print(deadletters.show(deadletters.find(letters, args.ref)))
        return 0
    if args.action == "list":
        for letter in letters:
            print(letter.line())
        print(f"{len(letters)} dead letter(s) in {settings.kafka.dead_letter_topic}", file=sys.stderr)
        return 0
    report = deadletters.plan_replay(letters)
    for letter, why in report.skipped:
        print(f"skipped {letter.ref}: {why}", file=sys.stderr)
    if not args.dry_run:
        deadletters.replay(settings, report)
    verb = "would replay" if args.dry_run else "replayed"
    for letter in report.sent:
        print(f"{verb} {letter.ref} (event {letter.doc.get('event_id') or '-'}) to {letter.doc['topic']}")
    print(f"{verb} {len(report.sent)} event(s), skipped {len(report.skipped)}", file=sys.stderr)
    return 0


def _ui(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc import preflight
    from streamproc.ui.server import serve

    preflight.check_kafka_and_redis(settings)  # the page reads Redis feeds and Kafka topics
    serve(settings, args.bind, args.port)
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from streamproc.dev.demo import run_demo

    return run_demo(settings, args.events, args.keep_stack)


SKIPPABLE_STAGES = frozenset({"transport", "naive", "competent", "fair", "exactly_once"})


def _skippable_stages(text: str) -> frozenset[str]:
    stages = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = stages - SKIPPABLE_STAGES
    if unknown:
        choices = ", ".join(sorted(SKIPPABLE_STAGES))
        raise argparse.ArgumentTypeError(f"unknown stage(s) {', '.join(sorted(unknown))}; choose {choices}")
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
