"""Exporter scrape cost at 100, 1,000 and 10,000 reps in 20 teams, at 12 and 48 partitions.

    python -m benchmarks.scrape [--reps 100,1000,10000] [--partitions 12,48]

For each partition count and rep count: projects a day of activity for each rep
straight into Redis (through the projector, without Kafka), then times the
exporter's scrape in two steps, reading and building the metric families, and
rendering the text format (median of 3 scrapes each), and counts the series and
bytes. Uses the local stack's Redis (started if needed); cleans up after itself.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import orjson

from benchmarks import numbers
from config.connections import redis_client
from config.settings import Settings
from exporters.exposition import render
from exporters.server import Exporter
from projections.engine import DirectoryView
from projections.facts import LeadFact
from projections.namespaces import pointer
from projections.store import RedisStore, current_namespace, drop
from projections.validation import Rejection, parse_event
from stack.servers import servers
from streams.projector import Positioned, Projector

TEAMS = 20


def _events(reps: int, now_ms: int) -> list[bytes]:
    def event(n: int, type_name: str, **fields: object) -> bytes:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((now_ms - n * 1000) / 1000))
        return orjson.dumps(
            {
                "event_id": f"b{n}-{type_name}",
                "type": type_name,
                "occurred_at": at,
                "schema_version": 1,
                **fields,
            }
        )

    out = [
        event(t, "team.upserted", team_id=f"team-{t}", name=f"Team {t}", timezone="Europe/Berlin")
        for t in range(TEAMS)
    ]
    for r in range(reps):
        rep, team = f"rep-{r}", f"team-{r % TEAMS}"
        out.append(event(r, "rep.upserted", rep_id=rep, name=rep, team_id=team, active=True))
        out.append(
            event(r, "lead.created", lead_id=f"l{r}", origin="sales", lead_source="x", rep_id=rep)
        )
        out.append(event(r, "email.sent", message_id=f"m{r}", rep_id=rep, lead_id=f"l{r}"))
        out.append(
            event(
                r,
                "call.started",
                call_id=f"c{r}",
                direction="outbound",
                rep_id=rep,
                lead_id=f"l{r}",
            )
        )
        out.append(
            event(
                r,
                "opportunity.closed",
                opportunity_id=f"o{r}",
                rep_id=rep,
                outcome="won",
                amount_minor=1000,
            )
        )
    return out


@asynccontextmanager
async def projected(base: Settings, reps: int, partitions: int) -> AsyncIterator[Settings]:
    """Settings of a fresh topic prefix whose projections hold a day of ``reps`` reps over
    ``partitions`` partitions (straight through the projector); dropped at the end."""
    settings = dataclasses.replace(
        base, topic_prefix=f"benchscrape{uuid.uuid4().hex[:6]}", partitions=partitions
    )
    client = redis_client(settings)
    try:
        store = RedisStore(client, await current_namespace(client, settings.topic_prefix))

        async def no_facts(_facts: Sequence[LeadFact]) -> None:
            return None

        projector = Projector(store, DirectoryView({}, settings.rules), settings.rules, no_facts)
        now_ms = time.time_ns() // 1_000_000
        offsets = [0] * settings.partitions
        batch = []
        for raw in _events(reps, now_ms):
            event = parse_event(raw, now_ms=now_ms)
            assert not isinstance(event, Rejection), event
            p = zlib.crc32(event.subject_id.encode()) % settings.partitions
            batch.append(Positioned("events", p, offsets[p], event))
            offsets[p] += 1
        for start in range(0, len(batch), 5_000):
            await projector.apply(batch[start : start + 5_000])
        yield settings
    finally:
        await drop(client, await current_namespace(client, settings.topic_prefix))
        await client.delete(pointer(settings.topic_prefix))
        await client.aclose()


def redis_up(settings: Settings) -> None:
    for server in servers(settings):
        if server.name == "redis":
            server.up()


async def _measure(
    base: Settings, reps: int, partitions: int
) -> tuple[float, float, int, int, int]:
    async with projected(base, reps, partitions) as settings:
        exporter = Exporter(settings)
        builds, renders, series, size = [], [], 0, 0
        for _ in range(3):
            started = time.perf_counter()
            families = await exporter.kpi_families()
            built = time.perf_counter()
            body = render(families)
            builds.append(built - started)
            renders.append(time.perf_counter() - built)
            size = len(body)
            series = sum(1 for line in body.splitlines() if not line.startswith(b"#"))
        await exporter.client.aclose()
        exported = min(reps, TEAMS * settings.export_max_reps_per_team)
        return statistics.median(builds), statistics.median(renders), series, size, exported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=numbers, default=[100, 1_000, 10_000])
    parser.add_argument("--partitions", type=numbers, default=[12, 48])
    args = parser.parse_args()
    base = Settings.from_env()
    redis_up(base)
    print("scrape of the default exporter settings, median of 3")
    print(
        f"{'partitions':>10}{'reps':>8}{'exported':>10}{'series':>10}{'bytes':>12}"
        f"{'read+build':>13}{'render':>9}{'total':>9}"
    )
    for partitions in args.partitions:
        for reps in args.reps:
            build, draw, series, size, exported = asyncio.run(_measure(base, reps, partitions))
            print(
                f"{partitions:>10}{reps:>8,}{exported:>10,}{series:>10,}{size:>12,}"
                f"{build * 1000:>10,.0f} ms{draw * 1000:>6,.0f} ms"
                f"{(build + draw) * 1000:>6,.0f} ms"
            )


if __name__ == "__main__":
    main()
