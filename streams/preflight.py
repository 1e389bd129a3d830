"""Up-front checks of the servers and topics a one-shot command needs.

Each fails within seconds with one message that names what to check, instead of
the clients' own retries (aiokafka waits 30 s for a missing topic, logging an
error every 100 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable, Iterator
from contextvars import ContextVar

import redis.asyncio as aioredis
from aiokafka.errors import KafkaError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from streams.topics import list_topics

TIMEOUT_SECONDS = 3.0


class PreflightError(Exception):
    """A server or topic a command needs is not there; the message says what to check."""


class KafkaUnreachable(PreflightError):
    def __init__(self, bootstrap: str) -> None:
        super().__init__(
            f"Kafka at {bootstrap} is not reachable: check SALESPULSE_KAFKA_BOOTSTRAP "
            "(or start the local stack: `salespulse stack up`)"
        )
        self.bootstrap = bootstrap


class TopicMissing(PreflightError):
    def __init__(self, topic: str) -> None:
        super().__init__(
            f"topic {topic} does not exist: start a worker or run `salespulse topics` first "
            "(or check SALESPULSE_TOPIC_PREFIX)"
        )
        self.topic = topic


class RedisUnreachable(PreflightError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            f"Redis at {redacted(url)} is not reachable ({reason}): check SALESPULSE_REDIS_URL "
            "(or start the local stack: `salespulse stack up`)"
        )
        self.url = url


def redacted(url: str) -> str:
    """The URL without its password."""
    return re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", url)


_checking: ContextVar[bool] = ContextVar("checking", default=False)


def _unless_checking(record: logging.LogRecord) -> bool:
    return not _checking.get()


@contextlib.contextmanager
def quiet_kafka() -> Iterator[None]:
    """aiokafka logs each failed connection at ERROR; the check reports the failure once.

    A context variable, not the logger's level: tasks outside the check still log.
    """
    logging.getLogger("aiokafka").addFilter(_unless_checking)  # once: the same filter
    token = _checking.set(True)
    try:
        yield
    finally:
        _checking.reset(token)


async def require_topics(
    bootstrap: str, topics: Iterable[str] = (), timeout: float = TIMEOUT_SECONDS
) -> None:
    """Kafka answers and has every topic of ``topics``."""
    try:
        with quiet_kafka():
            existing = await asyncio.wait_for(
                list_topics(bootstrap, int(timeout * 1000)), timeout + 2
            )
    except (KafkaError, OSError, TimeoutError, ValueError):
        raise KafkaUnreachable(bootstrap) from None
    for topic in topics:
        if topic not in existing:
            raise TopicMissing(topic)


async def require_redis(url: str, timeout: float = TIMEOUT_SECONDS) -> None:
    """Redis answers a PING, without the retries of the clients that keep running."""
    try:
        client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        raise RedisUnreachable(url, str(exc)) from None
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise RedisUnreachable(url, " ".join(str(exc).split()) or type(exc).__name__) from None
    finally:
        await client.aclose()
