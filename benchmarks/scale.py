"""Scale-out and per-event costs: workers x partitions, on the single and the clustered stack.

    python -m benchmarks.scale [--count 200000] [--workers 1,2,3] [--partitions 12,48]
        [--stacks single,cluster] [--cluster-env SALESPULSE_NAME=VALUE ...] [--json FILE]

Simulates ``--count`` events once (30 days of an org, as benchmarks.throughput does). For
every stack, partition count and worker count it preloads a fresh copy of the valid events
onto topics of their own (a new prefix per run, so each run has its own partition count;
``benchmarks.throughput.preload``), measures the servers' idle cost, and runs the workers
with ``benchmarks.throughput.project``, which starts them, waits until every partition's
checkpoint is at the end of the events and lead-facts topics, and stops them.

The window. From ``project``'s first look at the engine's progress (every worker is
ready; events applied before it are left out of the count) to its look that saw
everything projected (``project`` calls the meter at both: its ``window`` argument).
Events/s = events applied in the window / its seconds (``project``'s own figure, from its
last look that saw nothing applied, is in the JSON: it leaves out the planning of the
first batch, which matters at small counts). CPU time (user + system) read at both ends:

* the workers: the pids ``project`` passes to the meter and their descendants, from
  /proc/<pid>/stat;
* Redis: ``INFO cpu`` (used_cpu_user + used_cpu_sys) summed over every node of the stack,
  masters and replicas;
* the Kafka brokers: /proc of the pids in the stack's pid files (and descendants);
* the machine: /proc/stat, busy time of every core (all but idle and iowait), whoever
  used it: other work on the machine shows there and nowhere else;
* this benchmark itself (its looks: Kafka clients and Redis reads), in the JSON only.

Idle cost. After the preload and a pause of SETTLE_SECONDS, for IDLE_SECONDS the
benchmark looks at the progress as ``project`` does, with no worker running: the CPU
Redis and the brokers use meanwhile (time passing, being watched) is not a cost of the
events. The table's CPU per 1,000 events is net of it (idle CPU-s per wall-s x the
window's seconds); the JSON has both.

After each run: Redis ``used_memory`` growth summed over the masters (one copy of the
state: ``project``'s ``Run.redis_bytes``), and the bytes of the run's events and
lead-facts topics on the brokers' disks (``*.log`` segment files of every copy; per copy
= / the replication factor).

Stacks. ``single`` is the stack the current ``SALESPULSE_*`` environment names (with
``SALESPULSE_STACK_CLUSTER=0``). ``cluster`` is the same environment with
``SALESPULSE_STACK_CLUSTER=1`` and every ``--cluster-env SALESPULSE_NAME=VALUE`` on top:
its own ``SALESPULSE_STACK_DIR`` and ports (``_KAFKA_PORT``, ``_KAFKA_CONTROLLER_PORT``,
``_REDIS_PORT``, ``_PROMETHEUS_PORT``, ``_WORKER_METRICS_PORT``), required when both stacks
run. A stack's Kafka and Redis are started when they do not run (``salespulse stack up``
does the same) and left running, as the other benchmarks leave theirs. Both must be
local stacks: the brokers' CPU and disks are read from their processes and folders. The
workers of a run get the stack's settings with the run's prefix and partition count
(``project`` gives them every setting: ``benchmarks.throughput.worker_environment``), and
metrics ports counted up from the stack's ``SALESPULSE_WORKER_METRICS_PORT`` (+10 each;
the first base from it whose ports are all free at that moment: ports from 32768 up are
also those of outgoing connections, and the benchmark's own looks use many).

Output: a markdown table (stack, partitions, workers, events/s, its ratio to one worker,
CPU seconds per 1,000 events of the workers, Redis, Kafka and their total, the engine's
and the whole machine's CPU seconds per wall second against its cores: where the cores
ran out) and lines on memory and disk; with ``--json FILE``, every run's figures and, per
stack, the per-event costs ``benchmarks.capacity --costs FILE`` reads (each the highest of
the stack's runs: the conservative choice). Topics, keys and the workers' Faust folders
of each run are deleted after it; the workers' logs stay in the stack folder.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import redis

from benchmarks import numbers, org_month
from benchmarks.soak import CLOCK_TICKS, process_stats
from benchmarks.throughput import Edge, applied, caught_up_on_stack, clean, preload, project
from config.connections import redis_access, redis_options
from config.settings import Settings
from projections.errors import EXIT_USAGE, SalespulseError, UsageError
from stack.servers import LocalServer, servers

STACKS = ("single", "cluster")
SATURATED = 0.9  # share of the machine's cores above which a run counts as out of cores
SETTLE_SECONDS = 3.0  # after the preload, before the idle cost is measured
IDLE_SECONDS = 5.0  # how long the idle cost is measured


class OneLineParser(argparse.ArgumentParser):
    """A wrong argument is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# The stacks ------------------------------------------------------------------------------


def stack_environments(
    environ: dict[str, str], stacks: Sequence[str], cluster_env: Sequence[str]
) -> dict[str, dict[str, str]]:
    """The ``SALESPULSE_*`` environment of each stack named in ``stacks``."""
    own = {k: v for k, v in environ.items() if k.startswith("SALESPULSE_")}
    out = {}
    if "single" in stacks:
        out["single"] = {**own, "SALESPULSE_STACK_CLUSTER": "0"}
    if "cluster" in stacks:
        extra = {}
        for item in cluster_env:
            name, sep, value = item.partition("=")
            if not sep or not name.startswith("SALESPULSE_"):
                raise UsageError(f"--cluster-env {item!r}: use SALESPULSE_NAME=VALUE")
            extra[name] = value
        out["cluster"] = {**own, "SALESPULSE_STACK_CLUSTER": "1", **extra}
    return out


def stack_settings(environments: dict[str, dict[str, str]]) -> dict[str, Settings]:
    settings = {name: Settings.from_env(env) for name, env in environments.items()}
    for name, s in settings.items():
        if s.kafka_bootstrap or s.redis_url:
            raise UsageError(
                f"the {name} stack names servers of its own (SALESPULSE_KAFKA_BOOTSTRAP or "
                "SALESPULSE_REDIS_URL): this benchmark reads the CPU and disks of a local "
                "stack's processes; unset them"
            )
    if len(settings) == 2:
        single, cluster = settings["single"], settings["cluster"]
        if single.stack_path == cluster.stack_path:
            raise UsageError(
                "both stacks would use the folder "
                f"{single.stack_path}: give the cluster its own with "
                "--cluster-env SALESPULSE_STACK_DIR=DIR (and ports of its own)"
            )
        taken = {p for p, _ in single.kafka_node_ports} | {c for _, c in single.kafka_node_ports}
        taken |= set(single.redis_node_ports)
        clash = taken & (
            {p for p, _ in cluster.kafka_node_ports}
            | {c for _, c in cluster.kafka_node_ports}
            | set(cluster.redis_node_ports)
        )
        if clash:
            raise UsageError(
                f"both stacks would use port {min(clash)}: give the cluster ports of its own "
                "(--cluster-env SALESPULSE_KAFKA_PORT=..., _KAFKA_CONTROLLER_PORT, _REDIS_PORT)"
            )
    return settings


def stack_servers(settings: Settings) -> list[LocalServer]:
    """The local stack's Kafka and Redis servers: with ``SALESPULSE_STACK_CLUSTER``, every
    broker and Redis node of the clustered stack (stack/cluster.py)."""
    return [s for s in servers(settings) if s.name.startswith(("kafka", "redis"))]


# Meters ----------------------------------------------------------------------------------


COUNTERS = ("worker", "redis", "kafka", "bench", "machine")


@dataclass(frozen=True)
class Reading:
    """Cumulative CPU seconds at one moment (monotonic ``at``)."""

    at: float
    worker: float
    redis: float
    kafka: float
    bench: float
    machine: float

    def since(self, earlier: Reading) -> dict[str, float]:
        """CPU seconds of each counter from ``earlier`` to this reading."""
        return {name: getattr(self, name) - getattr(earlier, name) for name in COUNTERS}


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has been busy since boot (/proc/stat)."""
    with open("/proc/stat") as stat:
        ticks = [int(x) for x in stat.readline().split()[1:9]]
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS


def redis_nodes(settings: Settings) -> list[redis.Redis]:
    """A client for each Redis node of the local stack (masters and replicas)."""
    _, options = redis_options(settings)
    tls = redis_access(settings).tls
    return [
        redis.Redis(host="127.0.0.1", port=port, ssl=tls, socket_timeout=30, **options)
        for port in settings.redis_node_ports
    ]


def redis_cpu_seconds(nodes: Sequence[redis.Redis]) -> float:
    total = 0.0
    for node in nodes:
        info = node.info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


def topic_bytes(homes: Sequence[Path], topic: str) -> int:
    """Bytes of ``topic``'s segment files under the brokers' folders, every copy."""
    partition_dir = re.compile(rf"{re.escape(topic)}-\d+")
    return sum(
        path.stat().st_size
        for home in homes
        for path in home.rglob("*.log")
        if partition_dir.fullmatch(path.parent.name)
    )


class Meter:
    """Reads the CPU counters: where ``project`` calls it (``window``: the first look and
    the look that saw everything projected), and around an idle spell (``idle``)."""

    def __init__(
        self, settings: Settings, kafka_pids: Sequence[int], nodes: Sequence[redis.Redis]
    ) -> None:
        self.settings = settings
        self.kafka_pids = list(kafka_pids)
        self.nodes = nodes
        self.start: Reading | None = None
        self.end: Reading | None = None
        self.applied_before = 0  # events applied before the first reading

    def read(self, workers: Sequence[int] = ()) -> Reading:
        """The counters now; ``worker``: of the processes ``workers`` and their descendants."""
        running = process_stats({str(pid): pid for pid in workers})
        brokers = process_stats({str(pid): pid for pid in self.kafka_pids})
        own = os.times()
        return Reading(
            at=time.monotonic(),
            worker=sum(cpu for _, cpu in running.values()),
            redis=redis_cpu_seconds(self.nodes),
            kafka=sum(cpu for _, cpu in brokers.values()),
            bench=own.user + own.system,
            machine=machine_busy_seconds(),
        )

    def window(self, edge: Edge, workers: Sequence[int]) -> None:
        """``project``'s ``window``: at the start, the events applied so far and the
        counters; at the end, the counters again."""
        if edge == "start":
            self.applied_before = asyncio.run(applied(self.settings))
            self.start = self.read(workers)
        else:
            self.end = self.read(workers)

    def idle(self, seconds: float) -> dict[str, float]:
        """CPU seconds per wall second of each counter while no worker runs and this
        process looks at the engine's progress as ``project`` does (``caught_up_on_stack``
        then ``applied``, every 0.1 s): the brokers' and Redis's cost of time passing and
        of being watched, which is not a cost of the events."""
        time.sleep(SETTLE_SECONDS)  # the preload's and the last run's clean-up's work done
        before = self.read()
        while time.monotonic() - before.at < seconds:
            asyncio.run(caught_up_on_stack(self.settings))
            asyncio.run(applied(self.settings))
            time.sleep(0.1)
        after = self.read()
        return {k: v / (after.at - before.at) for k, v in after.since(before).items()}


# One run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    stack: str
    partitions: int
    workers: int
    events: int  # in the log
    leads: int
    metered: int  # events applied in the metered window (the others before it)
    seconds: float  # the metered window
    project_rate: float  # events/s as benchmarks.throughput.project times them
    cpu: dict[str, float]  # CPU seconds in the window, by counter (COUNTERS)
    idle: dict[str, float]  # CPU seconds per wall second before the workers started
    redis_bytes: int  # used_memory growth over the masters
    events_topic_bytes: int  # on the brokers' disks, every copy
    facts_topic_bytes: int
    replication: int
    cores: int

    @property
    def rate(self) -> float:
        """Events/s over the metered window."""
        return self.metered / self.seconds

    def net(self, name: str) -> float:
        """CPU seconds of ``name`` in the window less its idle cost over as long (Redis and
        the brokers; the workers did not run before); at least 0."""
        idle = self.idle[name] if name in ("redis", "kafka") else 0.0
        return max(self.cpu[name] - idle * self.seconds, 0.0)

    @property
    def engine_net(self) -> float:
        return self.net("worker") + self.net("redis") + self.net("kafka")

    @property
    def engine_gross(self) -> float:
        return self.cpu["worker"] + self.cpu["redis"] + self.cpu["kafka"]

    def per_thousand(self, seconds: float) -> float:
        """CPU seconds per 1,000 events applied in the window."""
        return seconds / max(self.metered, 1) * 1_000

    def per_wall_second(self, seconds: float) -> float:
        return seconds / self.seconds

    @property
    def saturated(self) -> bool:
        return self.per_wall_second(self.cpu["machine"]) >= SATURATED * self.cores

    def as_dict(self) -> dict[str, Any]:
        def us(seconds: float) -> float:
            return round(self.per_thousand(seconds) * 1_000, 2)

        return {
            "stack": self.stack,
            "partitions": self.partitions,
            "workers": self.workers,
            "events": self.events,
            "leads": self.leads,
            "metered_events": self.metered,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.rate, 1),
            "events_per_second_as_throughput_times_it": round(self.project_rate, 1),
            "cpu_seconds": {k: round(v, 3) for k, v in self.cpu.items()},
            "idle_cpu_seconds_per_second": {k: round(v, 4) for k, v in self.idle.items()},
            "cpu_us_per_event": {k: us(v) for k, v in self.cpu.items()},
            "net_cpu_us_per_event": {k: us(self.net(k)) for k in ("worker", "redis", "kafka")},
            "cpu_seconds_per_wall_second": {
                "engine": round(self.per_wall_second(self.engine_gross), 3),
                "machine": round(self.per_wall_second(self.cpu["machine"]), 3),
            },
            "cores": self.cores,
            "redis_bytes": self.redis_bytes,
            "redis_bytes_per_event": round(self.redis_bytes / self.events, 1),
            "redis_bytes_per_lead": round(self.redis_bytes / max(self.leads, 1), 1),
            "replication": self.replication,
            "events_topic_bytes_per_event": round(
                self.events_topic_bytes / self.replication / self.events, 1
            ),
            "facts_topic_bytes_per_event": round(
                self.facts_topic_bytes / self.replication / self.events, 1
            ),
        }


def bindable(port: int) -> bool:
    """Nothing holds ``port`` on the loopback now: no server, and no connection of the moment
    (ports from 32768 up are also those Linux gives outgoing connections)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def metrics_base(start: int, workers: int) -> int:
    """The first port from ``start`` at which the metrics ports ``project`` gives its workers
    (+10 each) can all be bound now."""
    for base in range(start, start + 10):
        if all(bindable(base + 10 * n) for n in range(workers)):
            return base
    raise SalespulseError(
        f"no free worker metrics ports from {start} (+10 per worker): "
        "set SALESPULSE_WORKER_METRICS_PORT"
    )


class TooFewMetered(Exception):
    """The workers applied (nearly) the whole log before the first look at their counters."""


def measure(
    stack: str,
    base: Settings,
    values: list[bytes],
    leads: int,
    partitions: int,
    workers: int,
    timeout: float,
) -> Result:
    """One run: a fresh copy of the log on ``partitions`` partitions, ``workers`` workers."""
    prefix = f"scale{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(
        base,
        topic_prefix=prefix,
        partitions=partitions,
        worker_metrics_port=metrics_base(base.worker_metrics_port, workers),
    )
    kafka = [s for s in stack_servers(settings) if s.name.startswith("kafka")]
    nodes = redis_nodes(settings)
    meter = Meter(settings, [pid for s in kafka if (pid := s.pid())], nodes)
    try:
        preload(settings, values)
        idle = meter.idle(IDLE_SECONDS)
        run = project(settings, len(values), workers, timeout, window=meter.window)
        homes = [s.home for s in kafka]
        events_bytes = topic_bytes(homes, settings.events_topic)
        facts_bytes = topic_bytes(homes, settings.facts_topic)
    finally:
        asyncio.run(clean(settings))
        shutil.rmtree(settings.stack_path / "faust" / f"{prefix}-worker", ignore_errors=True)
        for node in nodes:
            node.close()
    assert meter.start is not None and meter.end is not None  # project() returned
    if len(values) - meter.applied_before < max(len(values) // 10, 1):
        raise TooFewMetered(
            f"the workers applied {meter.applied_before:,} of {len(values):,} events before the "
            "first look, too few left to meter"
        )
    return Result(
        stack=stack,
        partitions=partitions,
        workers=workers,
        events=len(values),
        leads=leads,
        metered=len(values) - meter.applied_before,
        seconds=max(meter.end.at - meter.start.at, 1e-3),
        project_rate=run.rate,
        cpu=meter.end.since(meter.start),
        idle=idle,
        redis_bytes=run.redis_bytes,
        events_topic_bytes=events_bytes,
        facts_topic_bytes=facts_bytes,
        replication=settings.replication_factor,
        cores=os.cpu_count() or 1,
    )


# Output ------------------------------------------------------------------------------------


def table(results: Sequence[Result]) -> str:
    """The markdown table: CPU per 1,000 events net of idle; per wall second as used."""
    lines = [
        "| stack | partitions | workers | events/s | x 1 worker | worker CPU s/1k events "
        "| Redis | Kafka | total | engine CPU-s/wall-s | machine CPU-s/wall-s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ones = [
            x.rate
            for x in results
            if (x.stack, x.partitions, x.workers) == (r.stack, r.partitions, 1)
        ]
        speedup = f"{r.rate / ones[0]:.2f}" if ones else ""
        machine = r.per_wall_second(r.cpu["machine"])
        lines.append(
            f"| {r.stack} | {r.partitions} | {r.workers} | {r.rate:,.0f} | {speedup} "
            f"| {r.per_thousand(r.net('worker')):.3f} | {r.per_thousand(r.net('redis')):.3f} "
            f"| {r.per_thousand(r.net('kafka')):.3f} | {r.per_thousand(r.engine_net):.3f} "
            f"| {r.per_wall_second(r.engine_gross):.2f} "
            f"| {machine:.2f}{' (out of cores)' if r.saturated else ''} |"
        )
    return "\n".join(lines)


def footnotes(results: Sequence[Result], event_bytes: float) -> list[str]:
    cores = results[0].cores
    lines = [
        f"CPU s/1k events: net of each server's idle cost (CPU-s per wall-s measured for "
        f"{IDLE_SECONDS:.0f} s before the workers start, while this benchmark polls as it "
        "does during the run); CPU-s/wall-s: everything the engine's processes used",
        f"machine: {cores} cores, so {cores} CPU-s per wall-s is all of it (others' work "
        f"on the machine included); 'out of cores': busy at least {SATURATED:.0%} of that",
        f"events: {results[0].events:,} ({results[0].leads:,} leads), "
        f"{event_bytes:,.0f} B per event as produced (JSON value)",
    ]
    for stack, c in costs(results, event_bytes).items():
        runs = [r for r in results if r.stack == stack]
        out = [f"{r.partitions}p/{r.workers}w" for r in runs if r.saturated]
        lines += [
            f"{stack}: idle Kafka {max(r.idle['kafka'] for r in runs):.3f}, "
            f"Redis {max(r.idle['redis'] for r in runs):.3f} CPU-s per wall-s (highest); "
            f"out of cores in {', '.join(out) or 'no run'}",
            f"{stack}: Redis {c['redis_bytes_per_event']:,.0f} B per event, "
            f"{c['redis_bytes_per_lead']:,.0f} B per lead (used_memory growth, masters); "
            f"Kafka per copy {c['kafka_bytes_per_event']:,.0f} B per event on the events topic "
            f"and {c['facts_bytes_per_event']:,.0f} on lead facts "
            f"(replication {c['replication']})",
        ]
    return lines


def costs(results: Sequence[Result], event_bytes: float) -> dict[str, dict[str, Any]]:
    """Per stack, the per-event costs benchmarks.capacity reads (``--costs``): each the
    highest of the stack's runs (the conservative choice), CPU net of idle."""
    out: dict[str, dict[str, Any]] = {}
    for stack in dict.fromkeys(r.stack for r in results):
        runs = [r.as_dict() for r in results if r.stack == stack]
        one_worker = [r for r in runs if r["workers"] == 1] or runs
        out[stack] = {
            "worker_cpu_us_per_event": max(r["net_cpu_us_per_event"]["worker"] for r in runs),
            "redis_cpu_us_per_event": max(r["net_cpu_us_per_event"]["redis"] for r in runs),
            "kafka_cpu_us_per_event": max(r["net_cpu_us_per_event"]["kafka"] for r in runs),
            "redis_bytes_per_event": max(r["redis_bytes_per_event"] for r in runs),
            "redis_bytes_per_lead": max(r["redis_bytes_per_lead"] for r in runs),
            "events_per_lead": round(runs[0]["events"] / max(runs[0]["leads"], 1), 2),
            "kafka_bytes_per_event": max(r["events_topic_bytes_per_event"] for r in runs),
            "facts_bytes_per_event": max(r["facts_topic_bytes_per_event"] for r in runs),
            "event_bytes": round(event_bytes, 1),
            "worker_events_per_second": max(r["events_per_second"] for r in one_worker),
            "replication": runs[0]["replication"],
            "source": f"benchmarks.scale, {stack} stack, highest of {len(runs)} runs",
        }
    return out


# Main --------------------------------------------------------------------------------------


def _stacks(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",")]
    if not names or any(name not in STACKS for name in names) or len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: use single, cluster or single,cluster")
    return names


def main(argv: Sequence[str] | None = None) -> None:
    parser = OneLineParser(prog="benchmarks.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000, help="events to simulate")
    parser.add_argument("--workers", type=numbers, default=[1, 2, 3], help="e.g. 1,2,3")
    parser.add_argument("--partitions", type=numbers, default=[12, 48], help="e.g. 12,48")
    parser.add_argument("--stacks", type=_stacks, default=["single"], help="single,cluster")
    parser.add_argument(
        "--cluster-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a SALESPULSE_ setting of the cluster stack (repeat): its folder and ports",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--timeout", type=float, default=1800, help="per run (seconds)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count must be at least 1, not {args.count}")
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, not {args.timeout}")
    try:
        environments = stack_environments(dict(os.environ), args.stacks, args.cluster_env)
        settings = stack_settings(environments)
        for s in settings.values():
            for server in stack_servers(s):
                server.up()
    except SalespulseError as exc:
        parser.exit(exc.exit_code, "".join(f"{parser.prog}: error: {x}\n" for x in exc.lines()))

    values, leads = org_month(args.count)
    event_bytes = sum(map(len, values)) / len(values)
    results = []
    for stack, base in settings.items():
        for partitions in args.partitions:
            for workers in args.workers:
                try:
                    result = measure(stack, base, values, leads, partitions, workers, args.timeout)
                except TooFewMetered as exc:  # the other runs still count
                    print(
                        f"{stack} stack, {partitions} partitions, {workers} worker(s): {exc}; "
                        "left out (a larger --count meters more)",
                        file=sys.stderr,
                        flush=True,
                    )
                    continue
                results.append(result)
                print(
                    f"{stack} stack, {partitions} partitions, {workers} worker(s): "
                    f"{result.rate:,.0f} events/s",
                    file=sys.stderr,
                    flush=True,
                )
    if not results:
        raise SystemExit("no run had events left to meter: use a larger --count")
    print(table(results))
    print()
    for line in footnotes(results, event_bytes):
        print(line)
    if args.json:
        document = {
            "command": "python -m benchmarks.scale "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": {"cores": os.cpu_count()},
            "events": len(values),
            "leads": leads,
            "event_bytes": round(event_bytes, 1),
            "runs": [r.as_dict() for r in results],
            "costs": costs(results, event_bytes),
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
