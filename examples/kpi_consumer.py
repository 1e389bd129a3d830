"""Read the KPI change topic: the latest value of every KPI key, then follow new changes.

    python -m examples.kpi_consumer [--bootstrap 127.0.0.1:19092] [--topic salespulse.kpi]
                                    [--follow]

A downstream consumer (a commission calculator, a CRM field, a warehouse loader) reads the
compacted topic from the beginning to rebuild its view, keeping per key the record with
the highest ``revision`` (Kafka keeps per-key order, so that is also the last one read),
and then keeps consuming. Records are JSON (schemas/kpi-change-v1.schema.json).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer


def keep_latest(
    view: dict[str, dict[str, Any]], key: bytes, value: bytes | None
) -> dict[str, Any] | None:
    """Fold one record into the view: a tombstone (no value) removes the key (a label that
    is gone, such as a stage no lead is in any more); an older revision never wins."""
    if value is None:
        view.pop(key.decode(), None)
        return None
    record: dict[str, Any] = orjson.loads(value)
    current = view.get(key.decode())
    if current is None or record["revision"] >= current["revision"]:
        view[key.decode()] = record
    return record


async def latest_values(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    """Every key's latest record, from the beginning of the topic to its current end."""
    # Subscribed without a group: this consumer gets every partition, and keeps no offsets.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        tps = sorted(consumer.assignment())
        ends = await consumer.end_offsets(tps)
        for tp, start in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, start)
        view: dict[str, dict[str, Any]] = {}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, messages in (await consumer.getmany(timeout_ms=1_000)).items():
                for message in messages:
                    if message.offset < ends[tp] and message.key:
                        keep_latest(view, message.key, message.value)
        return view
    finally:
        await consumer.stop()


async def follow(bootstrap: str, topic: str) -> None:
    """Print every change as it arrives (after the view is built)."""
    view = await latest_values(bootstrap, topic)
    print(f"{len(view):,} KPI keys; following {topic} ...", flush=True)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        async for message in consumer:
            if not message.key:
                continue
            record = keep_latest(view, message.key, message.value)
            if record is None:
                print(f"{message.key.decode()} removed")
            else:
                flag = "  (correction)" if record["correction"] else ""
                print(f"{message.key.decode()} = {record['value']} r{record['revision']}{flag}")
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--topic", default="salespulse.kpi")
    parser.add_argument("--follow", action="store_true", help="keep printing new changes")
    args = parser.parse_args()
    if args.follow:
        asyncio.run(follow(args.bootstrap, args.topic))
        return
    view = asyncio.run(latest_values(args.bootstrap, args.topic))
    for key in sorted(view):
        print(f"{key} = {view[key]['value']}")


if __name__ == "__main__":
    main()
