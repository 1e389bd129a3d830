"""salespulse beside its peers on one log: events/s and CPU per event, in one run.

    python -m benchmarks.peers.compare [--count 300000] [--partitions 12]

Simulates ``--count`` valid events (30 days of an org, as benchmarks.throughput and
benchmarks.scale do), then, one after the other on the local stack, each reading its own
copy of that log from an events topic of ``--partitions`` partitions:

* salespulse: one worker projecting the whole KPI catalogue into Redis
  (``benchmarks.scale.measure``: worker CPU, and Redis CPU net of its idle cost, from the
  first look at the workers' progress to the look that saw everything projected);
* the Quix Streams peer (``benchmarks.peers.quix_peer``) and the Kafka Streams peer
  (``benchmarks.peers.kafka_streams``): the five KPIs of issue 21, each with its own state
  store; CPU of the whole process from its first record to its last result (start-up
  left out, as for salespulse). Their rows are checked against the oracle
  (``benchmarks.peers.check``): a peer that differs fails the run, as an unchecked
  figure proves nothing.

Prints a table: events/s, CPU µs per event (the process; for salespulse the worker and
Redis beside), and events per CPU second. The brokers' CPU is left out for all three: it
carries the peers' repartition and changelog topics (salespulse keeps its state in Redis,
whose CPU is counted). The log has 30 % of calls' events out of order, as telephony sends
them; salespulse's own figures are checked against the oracle by its test suite, not here.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import sys
import tempfile
import uuid
from dataclasses import dataclass
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import org_month
from benchmarks.ingest import delete_topics
from benchmarks.peers import kafka_streams_peer, quix_peer
from benchmarks.peers.check import mismatches
from benchmarks.scale import measure
from benchmarks.throughput import preload
from config.settings import Settings
from stack.servers import servers


@dataclass(frozen=True)
class Figures:
    name: str
    work: str
    events: int
    seconds: float
    process_cpu: float  # seconds: the worker, or the peer's process
    redis_cpu: float = 0.0  # seconds (salespulse only)

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def us(self, seconds: float) -> float:
        return seconds / self.events * 1e6

    @property
    def per_cpu_second(self) -> float:
        """Events per CPU second of everything counted (process and Redis)."""
        return self.events / (self.process_cpu + self.redis_cpu)


def salespulse(base: Settings, values: list[bytes], leads: int, timeout: float) -> Figures:
    result = measure("single", base, values, leads, base.partitions, 1, timeout)
    return Figures(
        "salespulse, 1 worker",
        "whole catalogue",
        result.metered,
        result.seconds,
        result.net("worker"),
        result.net("redis"),
    )


def _copy(base: Settings, values: list[bytes], name: str) -> Settings:
    """A topic prefix of the peer's own, with the log preloaded on its events topic."""
    settings = dataclasses.replace(base, topic_prefix=f"peer{name}{uuid.uuid4().hex[:8]}")
    preload(settings, values)
    return settings


def _checked(name: str, log: Path, rows: list[dict[str, Any]]) -> None:
    problems = mismatches(log, rows)
    if problems:
        raise SystemExit(f"the {name} peer differs from the oracle:\n" + "\n".join(problems))
    print(f"{name}: {len(rows):,} rows, equal to the oracle", file=sys.stderr, flush=True)


def quix(base: Settings, values: list[bytes], log: Path) -> Figures:
    settings = _copy(base, values, "quix")
    try:
        rows, progress = quix_peer.run(
            settings.bootstrap,
            settings.events_topic,
            len(values),
            timedelta(days=quix_peer.DEFAULT_GRACE_DAYS),
        )
    finally:
        asyncio.run(delete_topics(settings))
    _checked("Quix Streams", log, rows)
    if progress.late:
        raise SystemExit(f"the Quix Streams peer skipped {progress.late} window updates")
    assert progress.first is not None and progress.last is not None
    return Figures(
        f"Quix Streams {metadata.version('quixstreams')}",
        "five KPIs",
        progress.consumed,
        progress.last.wall - progress.first.wall,
        progress.last.cpu - progress.first.cpu,
    )


def kafka_streams(base: Settings, values: list[bytes], log: Path, timeout: float) -> Figures:
    kafka_streams_peer.build()
    settings = _copy(base, values, "ks")
    with tempfile.TemporaryDirectory(prefix="ks-compare-") as scratch:
        out = Path(scratch) / "rows.json"
        try:
            result = kafka_streams_peer.run(
                settings.bootstrap, settings.events_topic, len(values), out, timeout=timeout
            )
        finally:
            asyncio.run(delete_topics(settings))
        rows = json.loads(out.read_text())
    _checked("Kafka Streams", log, rows)
    return Figures(
        f"Kafka Streams {_kafka_streams_version()}",
        "five KPIs",
        result.events,
        result.steady_wall,
        result.steady_cpu,
    )


def _kafka_streams_version() -> str:
    """The kafka-streams version the peer's pom.xml pins."""
    pom = (kafka_streams_peer.PROJECT / "pom.xml").read_text()
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom)
    return found[1] if found else "?"


def table(runs: list[Figures]) -> str:
    lines = [
        "| | KPIs | events/s | process CPU µs/event | Redis CPU µs/event | events per CPU second |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for f in runs:
        redis = f"{f.us(f.redis_cpu):,.1f}" if f.redis_cpu else "-"
        lines.append(
            f"| {f.name} | {f.work} | {f.rate:,.0f} | {f.us(f.process_cpu):,.1f} | {redis} | "
            f"{f.per_cpu_second:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300_000, help="events to simulate")
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--timeout", type=float, default=1800, help="per run (seconds)")
    args = parser.parse_args(argv)
    if args.count < 1 or args.partitions < 1 or args.timeout <= 0:
        parser.error("--count and --partitions must be at least 1, --timeout positive")

    base = dataclasses.replace(Settings.from_env(), partitions=args.partitions)
    for server in servers(base):
        server.up()
    # A call's events in any order, as telephony sends them.
    values, leads = org_month(args.count, call_disorder_share=0.3)
    with tempfile.TemporaryDirectory(prefix="peers-") as scratch:
        log = Path(scratch) / "events.jsonl"
        log.write_bytes(b"".join(v + b"\n" for v in values))
        runs = [
            salespulse(base, values, leads, args.timeout),
            quix(base, values, log),
            kafka_streams(base, values, log, args.timeout),
        ]
    print(
        f"\n{len(values):,} valid events (30 days of an org), {args.partitions} partitions, "
        "one after the other on this machine; brokers' CPU left out for all three (it "
        "carries the peers' repartition and changelog topics, and salespulse's lead facts)"
    )
    print(table(runs))
    ours = runs[0].per_cpu_second
    for peer in runs[1:]:
        print(f"salespulse per CPU second against {peer.name}: {ours / peer.per_cpu_second:.2f} x")


if __name__ == "__main__":
    main()
