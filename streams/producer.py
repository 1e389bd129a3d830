"""Publish records to the raw topic: from the simulator or from a JSONL file.

Both paths key records the same way (``subject_key``), so a JSONL file written
by ``simulate --out`` and then ``produce``d lands exactly as a direct run would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from config.connections import kafka_options
from config.settings import Settings
from projections.events import EVENT_TYPES
from streams.preflight import require_topics


def subject_key(value: bytes) -> bytes | None:
    """The record key: the id of the entity the event is about, when it can be read."""
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    kind = document.get("type")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    subject = document.get(cls.SUBJECT) if cls else None
    return subject.encode() if isinstance(subject, str) and subject else None


def read_jsonl(path: Path) -> Iterator[bytes]:
    """One record per line, split on ``\\n`` only; blank lines are skipped."""
    with path.open("rb") as handle:
        for line in handle:
            line = line.rstrip(b"\n")
            if line.strip():
                yield line


def write_jsonl(path: Path, values: Iterable[bytes]) -> int:
    count = 0
    with path.open("wb") as handle:
        for value in values:
            if b"\n" in value:
                raise ValueError("a record containing a newline cannot be a JSONL line")
            handle.write(value + b"\n")
            count += 1
    return count


async def publish(
    settings: Settings,
    topic: str,
    values: Iterable[bytes],
    *,
    rate: float | None = None,
    on_progress: object = None,
) -> int:
    """Send every value with acks=all, at most ``rate`` records/s; returns the count sent.

    The producer is idempotent, so its own retries never add duplicates: every copy
    on the topic is one the caller sent. Raises ``PreflightError`` at once when Kafka does
    not answer or the topic does not exist (the producer would wait 30 s for it).
    """
    await require_topics(settings, [topic])
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        **kafka_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=10,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        request_timeout_ms=30_000,
    )
    sent = 0
    started = time.monotonic()
    pending: list[asyncio.Future[object]] = []
    try:
        await producer.start()
        for value in values:
            pending.append(await producer.send(topic, value, key=subject_key(value)))
            sent += 1
            if len(pending) >= 2_000:
                await asyncio.gather(*pending)
                pending.clear()
            if rate and sent % max(1, int(rate // 20)) == 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if callable(on_progress):
                on_progress(sent)
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    return sent
