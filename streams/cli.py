"""``salespulse``: the one console command, with subcommands.

Every failure the user can fix is reported as one line on stderr with a
non-zero exit code; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from config.connections import check_credentials, redis_client
from config.settings import Settings
from projections.catalogue import SCOPES
from projections.errors import EXIT_FAILED, EXIT_USAGE, SalespulseError, UsageError
from projections.windows import WINDOWS
from streams.logs import configure_logging
from streams.progress import Progress, reporting


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"salespulse: error: {message}\n")


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a share between 0 and 1")
    return value


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
        return value

    parse.__name__ = kind.__name__
    return parse


def _instant_ms(text: str) -> int:
    from projections.validation import InvalidField, parse_instant_ms

    try:
        return parse_instant_ms(text, "instant")
    except InvalidField as exc:
        raise argparse.ArgumentTypeError(exc.detail) from None


def _duration_ms(text: str) -> int:
    units = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit() or int(text[:-1]) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90m, 12h or 14d")
    return int(text[:-1]) * units[text[-1]]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="salespulse", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    stack = commands.add_parser("stack", help="start, stop or inspect the local servers")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument(
        "--secure",
        action="store_true",
        help="Kafka with SASL_SSL (SCRAM-SHA-512), Redis with TLS and an ACL user, a local CA "
        "(the same as SALESPULSE_STACK_SECURE=1, which every other command then needs)",
    )
    stack.add_argument(
        "--cluster",
        action="store_true",
        help="3 Kafka brokers (KRaft, 3 controller voters) and a Redis Cluster of 3 masters and 3 "
        "replicas (the same as SALESPULSE_STACK_CLUSTER=1, which every other command then needs)",
    )

    commands.add_parser("topics", help="create the engine's topics if they are missing")
    commands.add_parser("worker", help="run the Faust worker (ingest and projection agents)")
    commands.add_parser("exporter", help="serve the projections as Prometheus metrics")
    commands.add_parser("publish-kpis", help="send KPI changes to the compacted <prefix>.kpi topic")
    commands.add_parser(
        "ingest", help="serve the webhook endpoints (HubSpot, Twilio, Aircall, canonical events)"
    )

    sim = commands.add_parser("simulate", help="generate a realistic, seeded event log")
    size = sim.add_mutually_exclusive_group()
    size.add_argument("--count", type=_positive(int), help="records to produce (default 20000)")
    size.add_argument(
        "--duration",
        type=_positive(float),
        help="seconds to produce for, at --rate (count = rate x duration)",
    )
    sim.add_argument("--rate", type=_positive(float), help="records per second (default: max)")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--teams", type=_positive(int), default=4)
    sim.add_argument("--reps-per-team", type=_positive(int), default=8)
    sim.add_argument("--campaigns", type=_positive(int), default=6)
    sim.add_argument("--end", type=_instant_ms, help="event time of the log's end (default now)")
    sim.add_argument(
        "--history",
        type=_duration_ms,
        default="14d",
        help="event-time span of the log, ending at --end (default 14d)",
    )
    sim.add_argument("--duplicates", type=_share, default=0.0, help="share of exact copies")
    sim.add_argument(
        "--late",
        type=_share,
        default=0.0,
        help="share of events sent minutes to days after they happened",
    )
    sim.add_argument(
        "--call-disorder",
        type=_share,
        default=0.0,
        help="share of calls whose events are sent out of order",
    )
    sim.add_argument(
        "--invalid",
        type=_share,
        default=0.0,
        help="share of invalid records, of every bad-input class",
    )
    sim.add_argument("--out", type=Path, help="write JSONL here instead of producing to Kafka")
    sim.add_argument("--tally", type=Path, help="write the generator's own tally (JSON) here")

    produce = commands.add_parser("produce", help="publish a JSONL file to the raw topic")
    produce.add_argument("file", type=Path)
    produce.add_argument("--rate", type=_positive(float), help="records per second")

    backfill = commands.add_parser("backfill", help="import a CRM export as canonical events")
    backfill.add_argument("format", choices=["crm-opportunities", "csv"])
    backfill.add_argument(
        "path", type=Path, help="the export's folder (crm-opportunities) or CSV file (csv)"
    )
    backfill.add_argument("--mapping", type=Path, help="csv: the mapping file (docs/adapters.md)")
    backfill.add_argument("--zone", default="UTC", help="IANA zone of the export's dates")
    backfill.add_argument("--out", type=Path, help="write JSONL here instead of producing")

    rebuild = commands.add_parser(
        "rebuild", help="replay the log into a new generation of the projections, then switch"
    )
    rebuild.add_argument(
        "--processes",
        type=_positive(int),
        help="replay processes, each taking some partitions (default: the CPUs, at most the "
        "partitions)",
    )

    watch = commands.add_parser("watch", help="show the worker's counts, live")
    watch.add_argument("--interval", type=_positive(float), default=1.0)
    watch.add_argument("--once", action="store_true", help="print one table and exit")

    kpis = commands.add_parser("kpis", help="KPIs of one scope and window, from the projections")
    kpis.add_argument("--scope", choices=SCOPES, default="org")
    kpis.add_argument("--id", default="", help="team, rep, campaign or queue id (not for org)")
    kpis.add_argument("--window", choices=WINDOWS, default="today")
    kpis.add_argument("--as-of", type=_instant_ms, help="RFC 3339 instant (default now)")
    kpis.add_argument(
        "--json",
        action="store_true",
        help="one JSON object: exact figures (money in minor units), each KPI's unit, the currency",
    )

    demo = commands.add_parser("demo", help="stack up, worker, simulator, live counts")
    demo.add_argument("--count", type=_positive(int), default=60_000)
    demo.add_argument("--rate", type=_positive(float), default=2_000.0)
    return parser


# Commands that keep running: their credentials are checked before they start anything.
SERVICES = frozenset({"worker", "exporter", "ingest", "publish-kpis"})


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(settings)
        handler = HANDLERS[args.command]
        if args.command in SERVICES:
            check_credentials(settings)
        code = handler(settings, args)
    except SalespulseError as exc:  # the one place an error becomes what the user reads
        for line in exc.lines():
            print(f"salespulse: error: {line}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)


def cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
    from config.connections import stack_secrets
    from stack.cluster import cluster_report, refuse_other_kind
    from stack.servers import servers

    if args.secure and args.cluster:
        raise UsageError("--secure and --cluster: the local stack is one or the other")
    if args.secure:
        settings = dataclasses.replace(settings, stack_secure=True)
    if args.cluster:
        settings = dataclasses.replace(settings, stack_cluster=True)
    settings.check()  # again with the flags: the cluster's bus ports, one kind of stack
    refuse_other_kind(settings)
    if args.action == "up":
        for server in servers(settings):
            seconds = server.up()
            print(f"{server.name:<11} up  {server.address:<28} ({seconds:.1f}s)", flush=True)
        if settings.stack_secure:
            print(
                f"secure: CA, users and passwords in {stack_secrets(settings).folder}; "
                "run every salespulse command with SALESPULSE_STACK_SECURE=1"
            )
        if settings.stack_cluster:
            print(
                f"cluster: Kafka {settings.bootstrap}, Redis Cluster {settings.redis}; "
                "run every salespulse command with SALESPULSE_STACK_CLUSTER=1"
            )
        return 0
    if args.action == "down":
        for server in reversed(servers(settings)):
            if server.external:
                print(f"{server.name:<11} external, left running")
            else:
                print(f"{server.name:<11} {'stopped' if server.down() else 'was not running'}")
        return 0
    report = cluster_report(settings) if settings.stack_cluster else None
    healthy = report.healthy if report else True
    for server in servers(settings):
        st = server.status()
        state = "external" if st.external else ("running" if st.pid else "stopped")
        answer = "answering" if st.answering else "not answering"
        role = f"  {report.roles[st.name]}" if report and st.name in report.roles else ""
        healthy &= st.answering
        print(f"{st.name:<11} {state:<9} pid={st.pid or '-':<8} {st.address:<28} {answer}{role}")
    for line in report.lines if report else []:
        print(line)
    return 0 if healthy else EXIT_FAILED


def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from streams.preflight import require_topics
    from streams.topics import ensure_topics

    asyncio.run(require_topics(settings))
    created = asyncio.run(ensure_topics(settings))
    print("created: " + (", ".join(created) if created else "nothing, all topics exist"))
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from streams.worker import run_worker

    return run_worker(settings)


def cmd_exporter(settings: Settings, args: argparse.Namespace) -> int:
    from exporters.server import run_exporter

    return run_exporter(settings)


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.config import MappingsError
    from streams.webhooks import run_ingest

    try:
        return run_ingest(settings)
    except MappingsError as exc:
        raise exc.about(settings.mappings_file) from None
    except OSError as exc:
        raise UsageError(f"cannot start the ingest service: {exc}") from None


def cmd_publish_kpis(settings: Settings, args: argparse.Namespace) -> int:
    from streams.kpi_publisher import run_publisher
    from streams.preflight import require_redis, require_topics

    # Once running, the publisher rides out outages; a wrong address fails at start-up.
    asyncio.run(require_topics(settings))
    asyncio.run(require_redis(settings))
    return run_publisher(settings)


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from simulator.log import SimConfig, simulate
    from streams.preflight import require_topics
    from streams.producer import publish, write_jsonl

    if args.duration is not None and args.rate is None:
        raise UsageError("--duration needs --rate")
    if not args.out:  # before generating the log, which can take a while
        asyncio.run(require_topics(settings, [settings.raw_topic]))
    count = int(args.duration * args.rate) if args.duration else (args.count or 20_000)
    config = SimConfig(
        seed=args.seed,
        count=count,
        end_ms=args.end if args.end is not None else time.time_ns() // 1_000_000,
        history_ms=args.history,
        teams=args.teams,
        reps_per_team=args.reps_per_team,
        campaigns=args.campaigns,
        duplicate_share=args.duplicates,
        late_share=args.late,
        call_disorder_share=args.call_disorder,
        invalid_share=args.invalid,
        max_event_bytes=settings.max_event_bytes,
    )
    records, tally = simulate(config)
    values = [r.value for r in records]
    if args.out:
        write_jsonl(args.out, values)
        print(f"wrote {len(values)} records to {args.out}", file=sys.stderr)
    else:
        started = time.monotonic()
        sent = asyncio.run(publish(settings, settings.raw_topic, values, rate=args.rate))
        took = time.monotonic() - started
        print(
            f"produced {sent} records to {settings.raw_topic} in {took:.1f}s "
            f"({sent / took:,.0f}/s)",
            file=sys.stderr,
        )
    summary = orjson.dumps(tally.as_dict(), option=orjson.OPT_INDENT_2)
    if args.tally:
        args.tally.write_bytes(summary + b"\n")
    print(summary.decode())
    return 0


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from streams.producer import publish, read_jsonl

    if not args.file.is_file():
        raise UsageError(f"{args.file}: no such file")
    started = time.monotonic()
    sent = asyncio.run(publish(settings, settings.raw_topic, read_jsonl(args.file), rate=args.rate))
    print(
        f"produced {sent} records from {args.file} to {settings.raw_topic} "
        f"in {time.monotonic() - started:.1f}s"
    )
    return 0


def cmd_backfill(settings: Settings, args: argparse.Namespace) -> int:
    from streams.backfill import crm_opportunities, in_time_order
    from streams.producer import write_jsonl
    from streams.progress_display import stderr_progress

    try:
        ZoneInfo(args.zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"--zone {args.zone!r} is not an IANA time zone") from None
    label = f"backfill {args.path.name}"
    if args.format == "csv":
        events, report = _csv_backfill(args, stderr_progress(label, "rows"))
    else:
        if not args.path.is_dir():
            raise UsageError(f"{args.path}: no such folder")
        progress = stderr_progress(label, "rows")
        events, report = crm_opportunities(args.path, args.zone, progress)
    events = in_time_order(events)  # an export out of time order would be "too late"
    if args.out:
        write_jsonl(args.out, events)
    else:
        sending = stderr_progress(f"{label}: publish to {settings.raw_topic}", "events")
        asyncio.run(_publish_backfill(settings, events, sending))
    for line in report.lines():
        print(line)
    return 0


def _csv_backfill(args: argparse.Namespace, progress: Progress) -> tuple[list[bytes], Any]:
    from adapters.csv_mapping import CsvMappingError, parse_csv_mapping
    from streams.backfill import csv_export

    if args.mapping is None:
        raise UsageError("backfill csv needs --mapping FILE.toml (docs/adapters.md)")
    if not args.path.is_file():
        raise UsageError(f"{args.path}: no such file")
    if not args.mapping.is_file():
        raise UsageError(f"--mapping {args.mapping}: no such file")
    try:
        mapping = parse_csv_mapping(args.mapping.read_text())
    except CsvMappingError as exc:
        raise exc.about(args.mapping) from None
    return csv_export(args.path, mapping, args.zone, time.time_ns() // 1_000_000, progress)


async def _publish_backfill(settings: Settings, events: list[bytes], progress: Progress) -> None:
    """Directory first, and wait until the projections know it, then the deals."""
    from streams.backfill import directory_ids
    from streams.preflight import require_redis
    from streams.producer import publish

    await require_redis(settings)  # before the directory is sent, not after
    reps = directory_ids(events)
    directory = [e for e in events if b'.upserted"' in e]
    deals = [e for e in events if b'.upserted"' not in e]
    with reporting(progress):
        await publish(
            settings,
            settings.raw_topic,
            directory,
            on_progress=lambda sent: progress.update(sent, sent, len(events)),
        )
        await _directory_projected(settings, reps)
        await publish(
            settings,
            settings.raw_topic,
            deals,
            on_progress=lambda sent: progress.update(
                len(directory) + sent, len(directory) + sent, len(events)
            ),
        )


async def _directory_projected(settings: Settings, reps: set[str]) -> None:
    """Wait until the projections know every rep of the directory just sent."""
    from projections.store import RedisStore, current_namespace

    client = redis_client(settings)
    try:
        store = RedisStore(
            client, await current_namespace(client, settings.topic_prefix, create=False)
        )
        deadline = time.monotonic() + 120
        while True:
            view = await store.directory(range(settings.partitions), settings.rules)
            if all(view.team_of(rep, 2**62) != "unassigned" for rep in reps):
                break
            if time.monotonic() > deadline:
                raise UsageError(
                    "the directory was not projected within 120 s: is a worker "
                    "running (`salespulse worker`)?"
                )
            await asyncio.sleep(0.5)
    finally:
        await client.aclose()


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from streams.preflight import require_redis, require_topics
    from streams.progress_display import stderr_progress
    from streams.rebuild import rebuild

    asyncio.run(require_topics(settings, [settings.events_topic, settings.facts_topic]))
    asyncio.run(require_redis(settings))
    processes = args.processes or min(os.cpu_count() or 1, settings.partitions)
    report = asyncio.run(rebuild(settings, processes, stderr_progress))
    print(
        f"rebuilt {report.old} -> {report.new}: {report.records:,} records replayed in "
        f"{report.seconds:.1f}s ({report.rate:,.0f}/s, {processes} replay "
        f"process{'es' * (processes > 1)}); readers switched; "
        f"{report.dropped_keys:,} keys of {report.old} deleted"
    )
    return 0


def cmd_watch(settings: Settings, args: argparse.Namespace) -> int:
    from streams.watch import watch

    return watch(settings, interval=args.interval, once=args.once)


def cmd_kpis(settings: Settings, args: argparse.Namespace) -> int:
    from projections.windows import answerable, too_old
    from streams.kpis_command import show_kpis

    if args.scope != "org" and not args.id:
        raise UsageError(f"--scope {args.scope} needs --id")
    now_ms = time.time_ns() // 1_000_000
    as_of = args.as_of if args.as_of is not None else now_ms
    if not answerable(args.window, as_of, now_ms):
        raise UsageError(f"--as-of: {too_old(args.window)}")
    return show_kpis(settings, args.scope, args.id, args.window, as_of, as_json=args.json)


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from streams.demo import run_demo

    return run_demo(settings, count=args.count, rate=args.rate)


HANDLERS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "stack": cmd_stack,
    "topics": cmd_topics,
    "worker": cmd_worker,
    "exporter": cmd_exporter,
    "publish-kpis": cmd_publish_kpis,
    "ingest": cmd_ingest,
    "simulate": cmd_simulate,
    "produce": cmd_produce,
    "backfill": cmd_backfill,
    "rebuild": cmd_rebuild,
    "watch": cmd_watch,
    "kpis": cmd_kpis,
    "demo": cmd_demo,
}

if __name__ == "__main__":
    main()
