"""Ingest throughput: preload the raw topic, then time one worker draining it.

    python -m benchmarks.ingest [--count N] [--invalid SHARE]

Uses the local stack (started if needed) with topics of its own, and prints
one table: producer rate, worker records/s (from the last look that saw nothing
read to the first that saw everything read), batch
sizes, and the worker's peak RSS. The numbers are for this machine only;
compare runs made on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from config.connections import kafka_options
from config.settings import Settings
from simulator.log import SimConfig, simulate
from stack.servers import servers
from streams.producer import publish
from streams.topics import ensure_topics, topic_configs
from streams.worker_process import WorkerProcess


async def delete_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **kafka_options(settings))
    await admin.start()
    try:
        await admin.delete_topics(list(topic_configs(settings)))
    finally:
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--invalid", type=float, default=0.01)
    parser.add_argument("--timeout", type=float, default=1800, help="give up after (seconds)")
    args = parser.parse_args()

    base = Settings.from_env()
    for server in servers(base):
        server.up()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    env = {"SALESPULSE_TOPIC_PREFIX": prefix}
    settings = dataclasses.replace(base, topic_prefix=prefix)
    asyncio.run(ensure_topics(settings))

    records, _ = simulate(
        SimConfig(
            seed=11,
            count=args.count,
            end_ms=time.time_ns() // 1_000_000,
            invalid_share=args.invalid,
            duplicate_share=0.01,
        )
    )
    started = time.monotonic()
    asyncio.run(publish(settings, settings.raw_topic, [r.value for r in records]))
    produce_s = time.monotonic() - started

    worker = WorkerProcess(env, Path(settings.stack_dir) / f"{prefix}-worker.log")
    try:
        worker.start(timeout=120)
        # From the last look that saw nothing read yet to the first that saw everything read:
        # at small counts one batch can take the whole topic between two looks.
        idle = time.monotonic()
        done = None
        deadline = idle + args.timeout
        while time.monotonic() < deadline:
            snap = worker.metrics()
            now = time.monotonic()
            if snap.records == 0:
                idle = now
            elif snap.records >= args.count:
                done = now
                break
            time.sleep(0.05)
        if done is None:
            raise SystemExit(f"the worker did not read {args.count:,} records in {args.timeout}s")
        span = done - idle
        rate = args.count / span
        snap = worker.metrics()
        rss = worker.peak_rss_bytes()
    finally:
        worker.stop()
        asyncio.run(delete_topics(settings))

    print(f"{'records':<34}{args.count:>14,}")
    print(f"{'producer (acks=all, idempotent)':<34}{args.count / produce_s:>14,.0f} records/s")
    print(f"{'worker ingest':<34}{rate:>14,.0f} records/s")
    busy = snap.batch_seconds / span * 100 if span else 0.0
    print(f"{'worker busy in its batch code':<34}{busy:>13.0f} %")
    print(
        f"{'batches, mean size':<34}{snap.batches:>14,.0f}"
        f"{snap.batched_records / snap.batches:>10,.0f}"
    )
    print(f"{'worker peak RSS':<34}{rss / 2**20:>14,.0f} MiB")


if __name__ == "__main__":
    main()
