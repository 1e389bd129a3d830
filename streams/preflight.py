"""Up-front checks of the servers and topics a one-shot command needs.

Each fails within seconds with one message that names what to check, instead of
the clients' own retries (aiokafka waits 30 s for a missing topic, logging an
error every 100 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import TypeVar

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed
from redis.exceptions import AuthenticationError, ResponseError

from config.connections import (
    kafka_access,
    kafka_options,
    list_topics,
    redacted,
    redis_client,
    redis_options,
    stack_secrets,
)
from config.settings import Settings
from projections.errors import UsageError
from projections.store import REDIS_OR_SOCKET_FAILURES, RedisClient

TIMEOUT_SECONDS = 3.0
E = TypeVar("E", bound=BaseException)


class PreflightError(UsageError):
    """A server or topic a command needs is not there; the message says what to check."""


class KafkaUnreachable(PreflightError):
    def __init__(self, bootstrap: str) -> None:
        super().__init__(
            f"Kafka at {bootstrap} is not reachable: check SALESPULSE_KAFKA_BOOTSTRAP and "
            "SALESPULSE_KAFKA_SECURITY_PROTOCOL (or start the local stack: `salespulse stack up`)"
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
            "and SALESPULSE_REDIS_TLS (or start the local stack: `salespulse stack up`)"
        )
        self.url = url


class KafkaRefused(PreflightError):
    def __init__(self, bootstrap: str, what: str, check: str) -> None:
        super().__init__(f"Kafka at {bootstrap} answered but {what}: check {check}")


class RedisRefused(PreflightError):
    def __init__(self, url: str, what: str, check: str) -> None:
        super().__init__(f"Redis at {redacted(url)} answered but {what}: check {check}")


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
    settings: Settings, topics: Iterable[str] = (), timeout: float = TIMEOUT_SECONDS
) -> None:
    """Kafka answers (and takes our credentials) and has every topic of ``topics``.

    A topic created a moment ago may not be in every broker's metadata yet (the demo once
    published right after creating its topics and was told one was missing): a missing
    topic is asked for again for up to two seconds before it is reported."""
    wanted = list(topics)
    for attempt in range(5):
        try:
            with quiet_kafka():
                existing = await asyncio.wait_for(
                    list_topics(settings, int(timeout * 1000)), timeout + 2
                )
        except (KafkaError, OSError, TimeoutError, ValueError):
            raise await kafka_failure(settings, timeout) from None
        missing = [topic for topic in wanted if topic not in existing]
        if not missing:
            return
        if attempt < 4:
            await asyncio.sleep(0.5)
    raise TopicMissing(missing[0])


async def kafka_failure(settings: Settings, timeout: float = TIMEOUT_SECONDS) -> PreflightError:
    """Why Kafka did not answer: one connection to the first bootstrap server tells an
    untrusted certificate and refused credentials from a server that is not there."""
    access = kafka_access(settings)
    if access.protocol == "PLAINTEXT":
        return KafkaUnreachable(settings.bootstrap)
    host, _, port = settings.bootstrap.split(",")[0].strip().rpartition(":")
    try:
        with quiet_kafka():
            conn = await asyncio.wait_for(
                create_conn(
                    host.strip("[]"),
                    int(port),
                    request_timeout_ms=int(timeout * 1000),
                    max_idle_ms=None,
                    **kafka_options(settings),
                ),
                timeout + 1,
            )
        conn.close()
    except ssl.SSLCertVerificationError as exc:
        return KafkaRefused(
            settings.bootstrap,
            f"its certificate is not trusted ({exc.verify_message})",
            _check(settings, f"SALESPULSE_KAFKA_SSL_CAFILE={access.cafile or '(system CAs)'}"),
        )
    except SaslAuthenticationFailed:
        return KafkaRefused(
            settings.bootstrap,
            f"it refused user {access.username!r}",
            _check(
                settings,
                "SALESPULSE_KAFKA_SASL_USERNAME and "
                f"SALESPULSE_KAFKA_SASL_PASSWORD_FILE={access.password_file}",
            ),
        )
    except ssl.SSLError as exc:
        return _handshake_failed(settings, exc)
    except (KafkaError, OSError, TimeoutError, ValueError) as exc:
        # A broker that requires a client certificate ends the connection after the
        # handshake (TLS 1.3): aiokafka reports a closed connection caused by the alert.
        if isinstance(exc.__cause__, ssl.SSLError):
            return _handshake_failed(settings, exc.__cause__)
    return KafkaUnreachable(settings.bootstrap)


def _handshake_failed(settings: Settings, exc: ssl.SSLError) -> PreflightError:
    return KafkaRefused(
        settings.bootstrap,
        f"the TLS handshake failed ({exc.reason or exc})",
        _check(
            settings,
            "SALESPULSE_KAFKA_SECURITY_PROTOCOL and, if the broker requires a client "
            "certificate, SALESPULSE_KAFKA_SSL_CERTFILE and SALESPULSE_KAFKA_SSL_KEYFILE",
        ),
    )


def _check(settings: Settings, names: str) -> str:
    """What to check: ``names``, or, with SALESPULSE_STACK_SECURE (which uses the stack's own
    secrets in their place), the stack's secrets."""
    if not settings.stack_secure:
        return names
    folder = stack_secrets(settings).folder
    return (
        f"the secure stack's secrets in {folder} (SALESPULSE_STACK_SECURE=1 uses them; "
        "`salespulse stack up --secure` made them) and SALESPULSE_STACK_DIR"
    )


async def _in_a_cluster(client: RedisClient) -> bool:
    """Whether this Redis is a node of a cluster. CLUSTER INFO, not INFO: an ACL user without
    the dangerous commands (docs/security.md) may run it; a Redis without cluster support
    refuses it, and so does one that does not let this user ask (then it is not told)."""
    try:
        await client.execute_command("CLUSTER", "INFO")
    except ResponseError:
        return False
    return True


def _first_cause(exc: BaseException, kind: type[E]) -> E | None:
    """``exc`` or the first exception of its causes that is a ``kind``."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


async def require_redis(settings: Settings, timeout: float = TIMEOUT_SECONDS) -> None:
    """Redis answers a PING (our credentials taken), without the retries of the clients that
    keep running."""
    url, options = redis_options(settings)
    try:
        client = redis_client(settings, retries=0, timeout=timeout, connect_timeout=timeout)
    except ValueError as exc:
        raise RedisUnreachable(url, str(exc)) from None
    try:
        try:
            await client.ping()
            cluster_node = not settings.uses_redis_cluster and await _in_a_cluster(client)
        except REDIS_OR_SOCKET_FAILURES as exc:
            # The cluster client wraps what a node answered when it found no node to use.
            raise _first_cause(exc, AuthenticationError) or exc from None
        if cluster_node:
            raise PreflightError(
                f"Redis at {redacted(url)} is a node of a Redis Cluster: set "
                "SALESPULSE_REDIS_CLUSTER=1 (every process then uses the cluster client)"
            )
    except AuthenticationError:
        user = options.get("username", "default")
        raise RedisRefused(
            url,
            f"it refused user {user!r}",
            _check(settings, "SALESPULSE_REDIS_USERNAME and SALESPULSE_REDIS_PASSWORD_FILE"),
        ) from None
    except REDIS_OR_SOCKET_FAILURES as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if "certificate verify failed" in reason:
            raise RedisRefused(
                url,
                "its certificate is not trusted",
                _check(settings, "SALESPULSE_REDIS_SSL_CAFILE"),
            ) from None
        if "NOAUTH" in reason or "WRONGPASS" in reason:
            raise RedisRefused(
                url,
                "it asks for credentials",
                _check(settings, "SALESPULSE_REDIS_USERNAME and SALESPULSE_REDIS_PASSWORD_FILE"),
            ) from None
        if url.startswith("rediss://") and (
            "reset by peer" in reason or "CERTIFICATE_REQ" in reason
        ):
            raise RedisRefused(
                url,
                "it closed the TLS connection (as a server that requires a client certificate "
                "does)",
                _check(settings, "SALESPULSE_REDIS_SSL_CERTFILE and SALESPULSE_REDIS_SSL_KEYFILE"),
            ) from None
        raise RedisUnreachable(url, reason) from None
    finally:
        await client.aclose()
