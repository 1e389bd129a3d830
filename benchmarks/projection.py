"""Projection throughput and Redis footprint: one worker projecting the whole catalogue.

    python -m benchmarks.projection [--count N]

Preloads N valid simulated events straight onto the events topic (the ingest
agent is not measured here; see benchmarks.ingest), starts one worker, and
times it until its Redis checkpoints reach the end of the events and
lead-facts topics. Prints events/s, batch figures, Redis memory per 100,000
leads and per 1,000,000 events, and the worker's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
import uuid
from pathlib import Path

import redis

from benchmarks.ingest import delete_topics
from projections.namespaces import current_namespace, drop, pointer
from projections.store import Store, connect
from simulator.log import VALID, SimConfig, simulate
from stack.servers import servers
from streams.producer import publish
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.worker_process import WorkerProcess
from tests.kafka_reader import caught_up


async def _caught_up(settings: Settings) -> bool:
    client = connect(settings.redis)
    try:
        namespace = await current_namespace(client, settings.topic_prefix)
        return await caught_up(settings, Store(client, namespace))
    finally:
        await client.aclose()


async def _clean(settings: Settings) -> None:
    """Delete the benchmark's generation, pointer and topics."""
    client = connect(settings.redis)
    try:
        await drop(client, await current_namespace(client, settings.topic_prefix))
        await client.delete(pointer(settings.topic_prefix))
    finally:
        await client.aclose()
    await delete_topics(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--timeout", type=float, default=1800, help="give up after (seconds)")
    args = parser.parse_args()

    base = Settings.from_env()
    for server in servers(base):
        server.up()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(base, topic_prefix=prefix)
    asyncio.run(ensure_topics(settings))
    records, tally = simulate(
        SimConfig(
            seed=12,
            count=args.count,
            end_ms=time.time_ns() // 1_000_000,
            history_ms=30 * 86_400_000,
        )
    )
    values = [r.value for r in records if r.label == VALID]
    asyncio.run(publish(settings.bootstrap, settings.events_topic, values))
    memory = redis.Redis.from_url(settings.redis)
    before = int(memory.info("memory")["used_memory"])

    worker = WorkerProcess(
        {"SALESPULSE_TOPIC_PREFIX": prefix}, Path(settings.stack_dir) / f"{prefix}-worker.log"
    )
    try:
        worker.start(timeout=120)
        started = time.monotonic()
        while not asyncio.run(_caught_up(settings)):
            if time.monotonic() - started > args.timeout:
                raise SystemExit(f"the projections did not catch up in {args.timeout}s")
            time.sleep(0.2)
        seconds = time.monotonic() - started
        snap = worker.metrics()
        rss = worker.peak_rss_bytes()
    finally:
        worker.stop()
    after = int(memory.info("memory")["used_memory"])
    used = after - before
    asyncio.run(_clean(settings))
    leads = tally.valid["lead.created"]
    print(f"{'events':<36}{len(values):>14,}")
    print(f"{'worker projection (whole catalogue)':<36}{len(values) / seconds:>14,.0f} events/s")
    print(f"{'lead facts published':<36}{snap.lead_facts['published']:>14,}")
    print(f"{'Redis memory used':<36}{used / 2**20:>14,.1f} MiB")
    print(
        f"{'  per 100,000 leads':<36}{used / leads * 100_000 / 2**20:>14,.1f} MiB "
        f"({used / leads:,.0f} B per lead, {leads:,} leads)"
    )
    print(f"{'  per 1,000,000 events':<36}{used / len(values) * 1e6 / 2**20:>14,.1f} MiB")
    print(f"{'worker peak RSS':<36}{rss / 2**20:>14,.0f} MiB")


if __name__ == "__main__":
    main()
