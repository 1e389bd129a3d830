"""Capacity model: what 1 million, 100 million and 1 billion events a day need, and what binds.

    python -m benchmarks.capacity [--costs FILE.json] [--stack single|cluster]
        [--headroom 2] [--events-per-rep 250] [--months 12]

Pure arithmetic over per-event costs: the measured ones from ``benchmarks.scale --json FILE``
(``--costs FILE``; ``--stack`` picks the stack's figures, the cluster's when the file has
them), or the defaults of ``Costs``, each taken from benchmarks/RESULTS.md (the comment
says where). docs/capacity.md explains the model, its inputs and what it leaves out.

For each size (events a day, peaks 10x the mean) it prints: workers and Kafka partitions,
Redis CPU, memory and shards, Kafka storage and brokers, the exporter's scrape and
replicas, which resource binds first, and what the design would have to change.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from benchmarks import positive
from projections.errors import EXIT_USAGE

SECONDS_PER_DAY = 86_400
DAYS_PER_MONTH = 30
GIB = 2**30
TIB = 2**40
SIZES = (1_000_000, 100_000_000, 1_000_000_000)
BASE_PARTITIONS = 12  # what salespulse creates by default (SALESPULSE_PARTITIONS)


@dataclass(frozen=True)
class Costs:
    """What one event costs; defaults from benchmarks/RESULTS.md."""

    # Worker CPU of the projection loop. RESULTS.md section 1: one worker projects 15,851
    # events/s over a preloaded log, bound by its one Python thread: 1e6 / 15,851.
    projection_cpu_us_per_event: float = 63.1
    # Worker CPU of the ingest loop (the same thread). RESULTS.md section 2, the ingest
    # paragraph: 92 us of worker CPU per event from the raw topic to Redis, less the 63.1.
    ingest_cpu_us_per_event: float = 28.9
    # Redis CPU of the projection's loads and commits (ingest does not use Redis).
    # RESULTS.md section 2, the same paragraph: 32 us of Redis CPU per event.
    redis_cpu_us_per_event: float = 32.0
    # Broker CPU. RESULTS.md section 2: the broker used 12-16 % of a core at 5,000 events/s
    # (raw topic, ingest's transactions, events, lead facts): 0.16 / 5,000.
    kafka_cpu_us_per_event: float = 32.0
    # Redis used_memory per event while everything an event writes is kept (records and
    # buckets inside their time). RESULTS.md section 5: 255.7 MiB after 1,000,000 events.
    redis_bytes_per_event: float = 268.1
    # What stays of an event once its records have ended and the buckets of its days and
    # weeks have expired: leads' compacted records, month to year buckets. RESULTS.md
    # "Footprint and state expiry": used_memory growth from day 120 to day 150 of
    # benchmarks.footprint over the 116,400 valid events of those 30 days.
    redis_growth_bytes_per_event: float = 61.3
    # RESULTS.md section 5: 2,837 B per lead (the same memory counted by lead).
    redis_bytes_per_lead: float = 2_837.0
    # RESULTS.md section 1: 1,000,000 events of 94,529 leads.
    events_per_lead: float = 10.58
    # Bytes on a broker's disk per event, one copy, the events topic (and as much again on
    # the raw topic); and the lead facts it leads to. RESULTS.md "Scaling and capacity
    # (issue 19)": the segment files after benchmarks.scale.
    kafka_bytes_per_event: float = 263.0
    facts_bytes_per_event: float = 28.0
    # The exporter's scrape per 1,000 exported reps. Reads come from per-scope rollups and
    # no longer grow with the partitions, and the KPI families are written as text:
    # RESULTS.md "Bounded state and reads (issue 20)": read + build 224 and 226 ms at 12
    # and 48 partitions (one run each: within its noise), render 8 ms.
    scrape_read_ms_per_partition: float = 0.0
    scrape_read_ms_at_12: float = 224.0
    scrape_render_ms: float = 8.0
    source: str = "benchmarks/RESULTS.md"

    @property
    def worker_cpu_us_per_event(self) -> float:
        """A worker runs both loops in one thread."""
        return self.projection_cpu_us_per_event + self.ingest_cpu_us_per_event

    @property
    def scrape_read_ms_fixed(self) -> float:
        """The part of the read + build time at 12 partitions that does not grow with them."""
        return self.scrape_read_ms_at_12 - BASE_PARTITIONS * self.scrape_read_ms_per_partition


def costs_from_json(document: dict[str, Any], stack: str | None) -> Costs:
    """The defaults, with the per-event costs a ``benchmarks.scale --json`` file measured on
    ``stack`` (None: the cluster's when the file has them, else the single stack's)."""
    measured = document["costs"]
    name = stack or ("cluster" if "cluster" in measured else "single")
    if name not in measured:
        raise KeyError(name)
    c = measured[name]
    return replace(
        Costs(),
        projection_cpu_us_per_event=float(c["worker_cpu_us_per_event"]),
        redis_cpu_us_per_event=float(c["redis_cpu_us_per_event"]),
        kafka_cpu_us_per_event=float(c["kafka_cpu_us_per_event"]),
        redis_bytes_per_event=float(c["redis_bytes_per_event"]),
        redis_bytes_per_lead=float(c["redis_bytes_per_lead"]),
        events_per_lead=float(c["events_per_lead"]),
        kafka_bytes_per_event=float(c["kafka_bytes_per_event"]),
        facts_bytes_per_event=float(c["facts_bytes_per_event"]),
        source=str(c.get("source", f"benchmarks.scale, {name} stack")),
    )


@dataclass(frozen=True)
class Assumptions:
    peak_factor: float = 10.0  # the busiest second against the day's mean
    # Every process and server is sized to carry the peak at 1 / headroom of what it can:
    # room for a failed worker's partitions, a backlog to drain, reads, a burst.
    headroom: float = 2.0
    min_workers: int = 2  # one may fail
    partition_growth: float = 2.0  # partitions for twice the workers: topics keep their count
    events_per_rep_per_day: float = 250.0  # calls, emails, meetings, deals of one rep
    invalid_share: float = 0.01  # records dead-lettered (kept 30 days)
    replication: int = 3  # copies of every partition (SALESPULSE_TOPIC_REPLICATION_FACTOR)
    raw_days: float = 7.0  # streams/topics.py: the raw topic's retention
    dlq_days: float = 30.0  # and the dead-letter topic's; events and lead facts: forever
    redis_shard_bytes: float = 25 * GIB  # usable memory of one Redis master (maxmemory)
    broker_disk_bytes: float = 4 * TIB  # usable disk of one broker
    broker_cores: float = 4.0
    min_brokers: int = 3  # replication 3 needs 3
    scrape_interval_s: float = 5.0  # stack/templates/prometheus.yml
    months: int = 12  # the horizon that storage and memory are sized for
    # How long an event's state is kept whole: records end 35 days after their last event
    # (docs/lateness.md), day buckets live 40 days and week buckets 120 (projections/
    # windows.py). After that only redis_growth_bytes_per_event of it stays.
    state_kept_days: float = 120.0


# The arithmetic --------------------------------------------------------------------------


def mean_rate(events_per_day: float) -> float:
    """Events/s over the day."""
    return events_per_day / SECONDS_PER_DAY


def peak_rate(events_per_day: float, peak_factor: float) -> float:
    return mean_rate(events_per_day) * peak_factor


def cores(rate: float, us_per_event: float) -> float:
    """CPU cores kept busy by ``rate`` events/s at ``us_per_event`` each."""
    return rate * us_per_event / 1e6


def units(load: float, per_unit: float, headroom: float = 1.0) -> int:
    """How many units of ``per_unit`` carry ``load`` at 1 / ``headroom`` of each (at least 1)."""
    return max(1, math.ceil(round(load * headroom / per_unit, 9)))


def workers_needed(worker_cores: float, a: Assumptions) -> int:
    """A worker is one Python thread: at most one core."""
    return max(a.min_workers, units(worker_cores, 1.0, a.headroom))


def partitions_for(needed: float) -> int:
    """The smallest of 12, 24, 48, 96... that is at least ``needed``."""
    partitions = BASE_PARTITIONS
    while partitions < needed:
        partitions *= 2
    return partitions


def partitions_needed(workers: int, masters: int, a: Assumptions) -> int:
    """Partitions for ``partition_growth`` times the workers (a topic cannot gain partitions:
    the keys would move, and the projections are kept per partition), and at least one per
    Redis master: a partition's keys share one hash tag, so one slot, so one master."""
    return partitions_for(max(workers * a.partition_growth, masters))


def redis_bytes(events_per_day: float, days: float, costs: Costs, a: Assumptions) -> float:
    """Redis memory after ``days`` of events, one copy: the last ``state_kept_days`` whole,
    the days before only what stays of them (docs/capacity.md)."""
    kept = min(days, a.state_kept_days)
    return events_per_day * (
        kept * costs.redis_bytes_per_event + (days - kept) * costs.redis_growth_bytes_per_event
    )


def kafka_bytes(
    events_per_day: float, days: float, costs: Costs, a: Assumptions
) -> dict[str, float]:
    """Bytes on the brokers' disks after ``days`` (every copy), by topic: the events and the
    lead facts are kept for ever, the raw topic 7 days, the dead letters 30."""
    per_day = events_per_day * a.replication
    return {
        "events": per_day * days * costs.kafka_bytes_per_event,
        "lead-facts": per_day * days * costs.facts_bytes_per_event,
        "raw": per_day * min(days, a.raw_days) * costs.kafka_bytes_per_event,
        "dlq": per_day * a.invalid_share * min(days, a.dlq_days) * costs.kafka_bytes_per_event,
    }


def brokers_needed(storage: float, kafka_cores: float, a: Assumptions) -> int:
    return max(
        a.min_brokers,
        units(storage, a.broker_disk_bytes),
        units(kafka_cores, a.broker_cores, a.headroom),
    )


def reps_for(events_per_day: float, a: Assumptions) -> float:
    return events_per_day / a.events_per_rep_per_day


def scrape_seconds(reps: float, partitions: int, costs: Costs) -> float:
    """One scrape of every rep's metrics: reading, building and rendering grow with the reps;
    the engine-health part of reading a little with the partitions."""
    per_thousand_ms = (
        costs.scrape_read_ms_fixed
        + costs.scrape_read_ms_per_partition * partitions
        + costs.scrape_render_ms
    )
    return reps / 1000 * per_thousand_ms / 1000


def exporters_needed(scrape_s: float, a: Assumptions) -> int:
    """Replicas for availability (2), or as many shards as keep each one's scrape within
    1 / headroom of the scrape interval (the exporter cannot be sharded today)."""
    return max(2, units(scrape_s, a.scrape_interval_s, a.headroom))


@dataclass(frozen=True)
class Sizing:
    events_per_day: float
    mean: float
    peak: float
    worker_cores: float
    workers: int
    partitions: int
    redis_cores: float
    redis_cpu_shards: int
    redis_month: float  # bytes after the first month, one copy
    redis_horizon: float  # ... after the horizon's months
    redis_shards_first_month: int
    redis_shards_horizon: int
    kafka_cores: float
    kafka_month: float  # bytes on the brokers after the first month, every copy
    kafka_horizon: float  # after the horizon
    brokers: int
    reps: float
    scrape_s: float
    exporters: int
    pressure: dict[str, float]  # share of one unit each resource needs; above 1: outgrown

    @property
    def binds_first(self) -> str:
        return max(self.pressure, key=lambda name: self.pressure[name])


def size(events_per_day: float, costs: Costs, a: Assumptions) -> Sizing:
    peak = peak_rate(events_per_day, a.peak_factor)
    worker_cores = cores(peak, costs.worker_cpu_us_per_event)
    workers = workers_needed(worker_cores, a)
    redis_cores = cores(peak, costs.redis_cpu_us_per_event)
    month = redis_bytes(events_per_day, DAYS_PER_MONTH, costs, a)
    horizon_days = a.months * DAYS_PER_MONTH
    redis_horizon = redis_bytes(events_per_day, horizon_days, costs, a)
    masters_horizon = units(redis_horizon, a.redis_shard_bytes)
    partitions = partitions_needed(workers, masters_horizon, a)
    kafka_cores = cores(peak, costs.kafka_cpu_us_per_event)
    kafka_month = sum(kafka_bytes(events_per_day, DAYS_PER_MONTH, costs, a).values())
    kafka_horizon = sum(kafka_bytes(events_per_day, horizon_days, costs, a).values())
    reps = reps_for(events_per_day, a)
    scrape_s = scrape_seconds(reps, partitions, costs)
    return Sizing(
        events_per_day=events_per_day,
        mean=mean_rate(events_per_day),
        peak=peak,
        worker_cores=worker_cores,
        workers=workers,
        partitions=partitions,
        redis_cores=redis_cores,
        redis_cpu_shards=units(redis_cores, 1.0, a.headroom),
        redis_month=month,
        redis_horizon=redis_horizon,
        redis_shards_first_month=units(month, a.redis_shard_bytes),
        redis_shards_horizon=masters_horizon,
        kafka_cores=kafka_cores,
        kafka_month=kafka_month,
        kafka_horizon=kafka_horizon,
        brokers=brokers_needed(kafka_horizon, kafka_cores, a),
        reps=reps,
        scrape_s=scrape_s,
        exporters=exporters_needed(scrape_s, a),
        pressure={
            # What one worker, one Redis master, one broker cluster of 3, one exporter would
            # have to carry at the peak with the headroom, or hold after the first month.
            "worker CPU": worker_cores * a.headroom,
            "Redis CPU": redis_cores * a.headroom,
            "Redis memory": month / a.redis_shard_bytes,
            "Kafka storage": kafka_month / (a.min_brokers * a.broker_disk_bytes),
            "exporter scrape": scrape_s * a.headroom / a.scrape_interval_s,
        },
    )


def changes(s: Sizing, costs: Costs, a: Assumptions) -> list[str]:
    """What the design would have to change for this size, beyond adding units."""
    out = []
    if s.redis_shards_horizon > 1:
        out.append(
            f"Redis memory: {_bytes(s.redis_horizon)} after {a.months} months "
            f"({s.redis_shards_horizon} masters of {_bytes(a.redis_shard_bytes)}, each with "
            f"a replica), still growing by {_bytes(_growth_month(s, costs))} a month once "
            f"the first {a.state_kept_days:g} days are in (leads' compacted records and "
            "month to year buckets stay): a partition's state must fit one master"
        )
    if s.exporters > 2:
        out.append(
            f"one exporter cannot scrape every rep: one scrape of {s.reps:,.0f} reps takes "
            f"{s.scrape_s:,.1f} s against a {a.scrape_interval_s:.0f} s interval "
            f"(~{s.reps * 69 / 1e6:,.1f} million series; reads no longer fan out over "
            "partitions, the cost is building and rendering every rep's series); per-rep "
            "figures from the API or the KPI topic rather than Prometheus, or exporters "
            "sharded by team"
        )
    if s.redis_cpu_shards > 1:
        out.append(
            f"Redis CPU: {s.redis_cores:,.2f} cores at the peak for writes alone; one Lua "
            "commit per partition per batch and each partition's keys in one hash slot, so "
            f"a partition cannot be spread: {s.partitions} partitions over "
            f"{max(s.redis_cpu_shards, s.redis_shards_first_month)} masters balance only "
            "with several partitions per master; reads (exporter, KPI publisher) share "
            "the same threads"
        )
    if s.workers > BASE_PARTITIONS:
        out.append(
            f"per-event Python: {s.workers} workers at "
            f"{costs.worker_cpu_us_per_event:,.0f} us of CPU per event; planning was half of "
            "it when the default costs were measured, before the planner was compiled "
            "(mypyc): measure again with --costs; fewer buckets per event, or an incremental "
            "planner, would shrink the fleet"
        )
    if s.kafka_horizon > a.min_brokers * a.broker_disk_bytes:
        out.append(
            f"the log is kept for ever: {_bytes(s.kafka_month)} a month on the brokers "
            f"(replication {a.replication}); tiered storage for the events topic, and "
            "compressed batches (producers send uncompressed JSON today)"
        )
    return out or ["nothing: one of each, sized as above, carries it for the horizon"]


# Output ----------------------------------------------------------------------------------


def _bytes(value: float) -> str:
    for unit, scale in (("TiB", TIB), ("GiB", GIB), ("MiB", 2**20)):
        if value >= scale:
            return f"{value / scale:,.1f} {unit}"
    return f"{value:,.0f} B"


def _growth_month(s: Sizing, costs: Costs) -> float:
    """Redis memory a month adds once the first ``state_kept_days`` are in."""
    return s.events_per_day * DAYS_PER_MONTH * costs.redis_growth_bytes_per_event


def _day(events_per_day: float) -> str:
    for unit, scale in (("billion", 1e9), ("million", 1e6)):
        if events_per_day >= scale:
            return f"{events_per_day / scale:g} {unit}/day"
    return f"{events_per_day:,.0f}/day"


def render(sizings: Sequence[Sizing], costs: Costs, a: Assumptions) -> str:
    def row(name: str, cells: Sequence[str]) -> str:
        return f"| {name} | " + " | ".join(cells) + " |"

    lines = [
        f"costs: {costs.source}; worker {costs.worker_cpu_us_per_event:,.1f} us/event "
        f"(projection {costs.projection_cpu_us_per_event:,.1f} + ingest "
        f"{costs.ingest_cpu_us_per_event:,.1f}), Redis {costs.redis_cpu_us_per_event:,.1f} "
        f"us and {costs.redis_bytes_per_event:,.0f} B/event kept "
        f"{a.state_kept_days:g} days, then {costs.redis_growth_bytes_per_event:,.0f}, Kafka "
        f"{costs.kafka_cpu_us_per_event:,.1f} us and {costs.kafka_bytes_per_event:,.0f} + "
        f"{costs.facts_bytes_per_event:,.0f} B/event per copy",
        f"assumptions: peak {a.peak_factor:g}x the mean, headroom {a.headroom:g}x, "
        f"{a.events_per_rep_per_day:g} events per rep a day, replication {a.replication}, "
        f"{_bytes(a.redis_shard_bytes)} per Redis master, {_bytes(a.broker_disk_bytes)} and "
        f"{a.broker_cores:g} cores per broker, horizon {a.months} months",
        "",
        row("", [_day(s.events_per_day) for s in sizings]),
        "|---|" + "---:|" * len(sizings),
    ]
    table: list[tuple[str, list[str]]] = [
        ("events/s mean / peak", [f"{s.mean:,.0f} / {s.peak:,.0f}" for s in sizings]),
        ("worker CPU at peak (cores)", [f"{s.worker_cores:,.2f}" for s in sizings]),
        ("workers", [f"{s.workers}" for s in sizings]),
        (
            f"Kafka partitions (for {a.partition_growth:g}x the workers / the masters)",
            [
                f"{s.partitions} ({s.workers * a.partition_growth:g} / {s.redis_shards_horizon})"
                for s in sizings
            ],
        ),
        ("Redis CPU at peak (cores, writes)", [f"{s.redis_cores:,.2f}" for s in sizings]),
        (
            "leads added per month",
            [f"{s.events_per_day * DAYS_PER_MONTH / costs.events_per_lead:,.0f}" for s in sizings],
        ),
        ("Redis memory after 1 month", [_bytes(s.redis_month) for s in sizings]),
        (
            f"Redis memory growth per month after {a.state_kept_days:g} days",
            [_bytes(_growth_month(s, costs)) for s in sizings],
        ),
        (
            f"Redis masters: CPU / 1 month / {a.months} months",
            [
                f"{s.redis_cpu_shards} / {s.redis_shards_first_month} / {s.redis_shards_horizon}"
                for s in sizings
            ],
        ),
        (
            f"Redis RAM after {a.months} months (+1 replica)",
            [_bytes(2 * s.redis_horizon) for s in sizings],
        ),
        ("Kafka CPU at peak (cores)", [f"{s.kafka_cores:,.2f}" for s in sizings]),
        ("Kafka disk after 1 month", [_bytes(s.kafka_month) for s in sizings]),
        (f"Kafka disk after {a.months} months", [_bytes(s.kafka_horizon) for s in sizings]),
        ("Kafka brokers", [f"{s.brokers}" for s in sizings]),
        ("reps", [f"{s.reps:,.0f}" for s in sizings]),
        ("one scrape of every rep", [f"{s.scrape_s:,.1f} s" for s in sizings]),
        (
            "exporters",
            [
                f"{s.exporters}" + (" if sharded by team" if s.exporters > 2 else "")
                for s in sizings
            ],
        ),
        ("binds first", [s.binds_first for s in sizings]),
    ]
    lines += [row(name, cells) for name, cells in table]
    lines += ["", "share of one unit each resource needs (above 1: outgrown):"]
    for s in sizings:
        shares = ", ".join(f"{name} {value:,.2f}" for name, value in s.pressure.items())
        lines.append(f"  {_day(s.events_per_day)}: {shares}")
    lines += ["", "what the design would have to change:"]
    for s in sizings:
        lines.append(f"  {_day(s.events_per_day)}:")
        lines += [f"    - {change}" for change in changes(s, costs, a)]
    return "\n".join(lines)


# Main --------------------------------------------------------------------------------------


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def main(argv: Sequence[str] | None = None) -> None:
    parser = OneLineParser(prog="benchmarks.capacity", description=__doc__.splitlines()[0])
    parser.add_argument("--costs", type=Path, help="JSON of benchmarks.scale --json")
    parser.add_argument("--stack", choices=("single", "cluster"), help="whose costs (--costs)")
    parser.add_argument("--headroom", type=positive, default=Assumptions.headroom)
    parser.add_argument(
        "--events-per-rep", type=positive, default=Assumptions.events_per_rep_per_day
    )
    parser.add_argument(
        "--months", type=_positive_int, default=Assumptions.months, help="memory, disk horizon"
    )
    args = parser.parse_args(argv)
    costs = Costs()
    if args.costs:
        try:
            costs = costs_from_json(json.loads(args.costs.read_text()), args.stack)
        except OSError as exc:
            parser.error(f"--costs {args.costs}: {exc.strerror}")
        except (ValueError, KeyError, TypeError) as exc:
            parser.error(f"--costs {args.costs}: not benchmarks.scale --json output ({exc!r})")
    elif args.stack:
        parser.error("--stack needs --costs")
    a = Assumptions(
        headroom=args.headroom, events_per_rep_per_day=args.events_per_rep, months=args.months
    )
    print(render([size(n, costs, a) for n in SIZES], costs, a))


if __name__ == "__main__":
    main()
