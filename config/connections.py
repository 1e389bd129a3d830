"""How every process reaches Kafka and Redis: addresses plus the security that settings ask for.

Every Kafka client (consumers, producers, admin) of every process takes ``kafka_options``;
every Redis client comes from ``redis_client``/``redis_sync_client``. Passwords and keys are
read from files when a client is made, so a rotated file is picked up by the next client,
and a file that is configured but empty or unreadable stops the process with one line
naming the setting (``SecretError``). With ``SALESPULSE_STACK_SECURE`` the local stack's own
CA, user and passwords (written by ``salespulse stack up --secure``) are used.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from aiokafka.admin import AIOKafkaAdminClient
from redis.cluster import ClusterNode as SyncClusterNode

from config.secret_files import SecretError, read_secret_file
from config.settings import Settings
from projections.store import RedisClient, cluster_seeds, connect

# The user the secure local stack creates in Kafka (SCRAM) and in Redis (ACL).
STACK_USER = "salespulse"


@dataclass(frozen=True)
class StackSecrets:
    """Where ``stack up --secure`` keeps its CA, certificates and passwords."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def kafka_password(self) -> Path:
        return self.folder / "kafka-password"

    @property
    def redis_password(self) -> Path:
        return self.folder / "redis-password"

    @property
    def client_cert(self) -> Path:
        return self.folder / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.folder / "client-key.pem"


def stack_secrets(settings: Settings) -> StackSecrets:
    return StackSecrets(settings.stack_path / "secrets")


@dataclass(frozen=True)
class KafkaAccess:
    protocol: str
    mechanism: str = ""
    username: str = ""
    password_file: str = ""
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""
    key_password_file: str = ""


def kafka_access(settings: Settings) -> KafkaAccess:
    if settings.stack_secure:
        secrets = stack_secrets(settings)
        return KafkaAccess(
            "SASL_SSL",
            "SCRAM-SHA-512",
            STACK_USER,
            str(secrets.kafka_password),
            str(secrets.ca),
        )
    s = settings
    return KafkaAccess(
        s.kafka_security_protocol,
        s.kafka_sasl_mechanism,
        s.kafka_sasl_username,
        s.kafka_sasl_password_file,
        s.kafka_ssl_cafile,
        s.kafka_ssl_certfile,
        s.kafka_ssl_keyfile,
        s.kafka_ssl_key_password_file,
    )


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for every aiokafka client: nothing for PLAINTEXT."""
    access = kafka_access(settings)
    if access.protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {
        "security_protocol": access.protocol,
        "ssl_context": tls_context(
            "SALESPULSE_KAFKA_SSL",
            access.cafile,
            access.certfile,
            access.keyfile,
            access.key_password_file,
        ),
    }
    if access.protocol == "SASL_SSL":
        where = f"SALESPULSE_KAFKA_SASL_PASSWORD_FILE={access.password_file}"
        options.update(
            sasl_mechanism=access.mechanism,
            sasl_plain_username=access.username,
            sasl_plain_password=read_secret_file(where, access.password_file, min_chars=1),
        )
    return options


def tls_context(
    prefix: str, cafile: str, certfile: str = "", keyfile: str = "", key_password_file: str = ""
) -> ssl.SSLContext:
    """Verify the server against ``cafile`` (the system's CAs when unset), host name included;
    present ``certfile``/``keyfile`` when set. A file that cannot be used names its setting."""
    try:
        context = ssl.create_default_context(cafile=cafile or None)
    except (OSError, ssl.SSLError) as exc:
        raise SecretError(f"{prefix}_CAFILE={cafile}: {_reason(exc)}") from None
    if certfile:
        password = None
        if key_password_file:
            where = f"{prefix}_KEY_PASSWORD_FILE={key_password_file}"
            password = read_secret_file(where, key_password_file, min_chars=1)
        try:
            context.load_cert_chain(certfile, keyfile or None, password)
        except (OSError, ssl.SSLError) as exc:
            raise SecretError(
                f"{prefix}_CERTFILE={certfile} with {prefix}_KEYFILE={keyfile}: {_reason(exc)}"
            ) from None
    return context


def _reason(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "cannot read it (permission denied)"
    return f"not a usable PEM file ({' '.join(str(exc).split()) or type(exc).__name__})"


@dataclass(frozen=True)
class RedisAccess:
    url: str
    username: str = ""
    password_file: str = ""
    tls: bool = False
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""


def redis_access(settings: Settings) -> RedisAccess:
    if settings.stack_secure:
        secrets = stack_secrets(settings)
        return RedisAccess(
            f"rediss://127.0.0.1:{settings.redis_port}/0"
            if not settings.redis_url
            else settings.redis_url,
            STACK_USER,
            str(secrets.redis_password),
            True,
            str(secrets.ca),
            str(secrets.client_cert),
            str(secrets.client_key),
        )
    s = settings
    return RedisAccess(
        s.redis,
        s.redis_username,
        s.redis_password_file,
        s.redis_tls or s.redis.startswith("rediss://"),
        s.redis_ssl_cafile,
        s.redis_ssl_certfile,
        s.redis_ssl_keyfile,
    )


def redis_options(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The URL (``rediss://`` when TLS is asked for) and the keyword arguments of a client."""
    access = redis_access(settings)
    url, options = redis_address(access), dict[str, Any]()
    if access.username:
        options["username"] = access.username
    if access.password_file:
        where = f"SALESPULSE_REDIS_PASSWORD_FILE={access.password_file}"
        options["password"] = read_secret_file(where, access.password_file, min_chars=1)
    if access.tls:
        # Checked here, so that a bad file is a one-line error, not a failure per connection.
        tls_context("SALESPULSE_REDIS_SSL", access.cafile, access.certfile, access.keyfile)
        options.update(ssl_cert_reqs="required", ssl_check_hostname=True)
        if access.cafile:
            options["ssl_ca_certs"] = access.cafile
        if access.certfile:
            options.update(ssl_certfile=access.certfile, ssl_keyfile=access.keyfile)
    return url, options


def redis_address(access: RedisAccess) -> str:
    """The URL a client uses: ``rediss://`` when TLS is asked for."""
    if access.tls:
        return urlunsplit(urlsplit(access.url)._replace(scheme="rediss"))
    return access.url


def redis_client(
    settings: Settings, retries: int = 6, timeout: float = 10.0, connect_timeout: float = 5.0
) -> RedisClient:
    """The asyncio client of every process (retries, see ``connect``): a cluster client when
    the settings name a Redis Cluster."""
    url, options = redis_options(settings)
    return connect(
        url,
        retries,
        cluster=settings.uses_redis_cluster,
        timeout=timeout,
        connect_timeout=connect_timeout,
        **options,
    )


def redis_sync_client(settings: Settings, timeout: float = 2.0) -> redis.Redis | redis.RedisCluster:
    """A blocking client for one-off checks (benchmarks, tests)."""
    url, options = redis_options(settings)
    if settings.uses_redis_cluster:
        seeds, credentials, tls = cluster_seeds(url)
        return redis.RedisCluster(
            startup_nodes=[SyncClusterNode(node.host, node.port) for node in seeds],
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            **{"ssl": tls, **credentials, **options},
        )
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, **options
    )


def redacted(url: str) -> str:
    """The URL without its password (in the address or as a ``password=`` parameter)."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "password" for key, _ in query):
        hidden = [(key, "***" if key == "password" else value) for key, value in query]
        parts = parts._replace(query=urlencode(hidden, safe="*"))
    return urlunsplit(parts)


def faust_credentials(settings: Settings) -> Any:
    """``broker_credentials`` of the Faust app, the same security as ``kafka_options``."""
    import faust

    options = kafka_options(settings)
    if not options:
        return None
    if options["security_protocol"] == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    return faust.SASLCredentials(
        username=options["sasl_plain_username"],
        password=options["sasl_plain_password"],
        ssl_context=options["ssl_context"],
        mechanism=options["sasl_mechanism"],
    )


def check_credentials(settings: Settings) -> None:
    """Read every configured password, key and certificate once, so that a process that keeps
    running fails at start (SecretError naming the setting), not at its first connection."""
    kafka_options(settings)
    redis_options(settings)


async def list_topics(settings: Settings, timeout_ms: int = 5_000) -> list[str]:
    """The topics Kafka lists: the cheapest proof that a broker answers with these settings."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap,
        request_timeout_ms=timeout_ms,
        **kafka_options(settings),
    )
    try:
        await admin.start()
        return sorted(await admin.list_topics())
    finally:
        await admin.close()
