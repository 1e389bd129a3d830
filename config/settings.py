"""One frozen settings object, read once from ``SALESPULSE_*`` environment variables."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from config.rate_limits import Limit, parse_limits
from projections.catalogue import CATALOGUE
from projections.contributions import Rules
from projections.display import CURRENCIES, UnknownCurrency
from projections.errors import UsageError
from projections.lateness import DEFAULT_HORIZON, parse_horizon
from projections.targets import TARGETABLE
from projections.validation import Limits
from projections.windows import WINDOWS


class SettingsError(UsageError, ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True, slots=True)
class Settings:
    # Where the servers are. Unset means "the local stack" (see stack/).
    kafka_bootstrap: str = ""
    redis_url: str = ""
    # Local stack: ports on 127.0.0.1 and the folder for data and logs.
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    # `stack up --secure` only: a second client listener with TLS and a required client
    # certificate (SALESPULSE_KAFKA_SECURITY_PROTOCOL=SSL clients); 0: none.
    kafka_mtls_port: int = 0
    redis_port: int = 16379
    prometheus_port: int = 19090
    stack_dir: str = ".salespulse/stack"
    kafka_version: str = "4.1.1"
    # `salespulse stack up --secure`: the local Kafka listens with SASL_SSL (SCRAM-SHA-512) and
    # Redis with TLS and an ACL user; every process given this setting connects that way with
    # the CA, user and passwords the stack wrote under <stack_dir>/secrets, in place of the
    # Kafka and Redis security settings below (docs/security.md).
    stack_secure: bool = False
    # `salespulse stack up --cluster`: the local stack is 3 Kafka brokers (KRaft, 3 controller
    # voters) and a Redis Cluster of 3 masters and 3 replicas, on the ports counted up from
    # kafka_port/kafka_controller_port (+2 per broker) and redis_port (+1 per node). Every
    # process given this setting uses them: the 3 brokers as bootstrap, the cluster client.
    stack_cluster: bool = False
    # SALESPULSE_REDIS_URL names a Redis Cluster: one node, or several seeds after the scheme
    # (redis://10.0.0.1:6379,10.0.0.2:6379); every process then uses the cluster client.
    redis_cluster: bool = False
    # Kafka connection security (docs/security.md). PLAINTEXT, SSL (TLS; with a client
    # certificate when the broker asks for one) or SASL_SSL. Passwords and keys only from files.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"  # or SCRAM-SHA-256, PLAIN
    kafka_sasl_username: str = ""
    kafka_sasl_password_file: str = ""
    kafka_ssl_cafile: str = ""  # the CA that signed the brokers' certificates; unset: system CAs
    kafka_ssl_certfile: str = ""  # the client certificate (PEM), for brokers that require one
    kafka_ssl_keyfile: str = ""  # its private key (PEM)
    kafka_ssl_key_password_file: str = ""  # if that key is encrypted
    # Redis connection security: TLS (also implied by a rediss:// URL) and an ACL user.
    redis_username: str = ""
    redis_password_file: str = ""
    redis_tls: bool = False
    redis_ssl_cafile: str = ""
    redis_ssl_certfile: str = ""
    redis_ssl_keyfile: str = ""
    # Readers of the exporter (API, /metrics, wallboard) and the worker's /metrics: a bearer
    # token (or basic auth with the token as password) read from this file; unset: open.
    reader_token_file: str = ""
    # Topics.
    topic_prefix: str = "salespulse"
    partitions: int = 12
    # Created topics only (existing ones are left as they are): copies of each partition,
    # and how many must have a write before it is acknowledged (acks=all). 0: 1 and 1 on one
    # broker, 3 and 2 on the clustered local stack.
    topic_replication_factor: int = 0
    topic_min_insync_replicas: int = 0
    # Ingest.
    max_event_bytes: int = 65_536
    max_future_seconds: int = 86_400
    ingest_batch_size: int = 10_000
    ingest_batch_seconds: float = 0.2
    # Once records come, how long ingest and the projection keep fetching to fill a batch
    # (a batch's fixed costs are then paid for more records): benchmarks/RESULTS.md.
    ingest_linger_seconds: float = 0.1
    session_timeout_seconds: float = 10.0
    # A worker's name in its consumer groups (static membership: a restarted worker takes its
    # partitions back at once) and in its ingest transactions (a restarted worker aborts
    # what its killed predecessor left open). Unique per running worker, the same across its
    # restarts: a StatefulSet pod name, say. Default: <host name>-<worker metrics port>.
    worker_id: str = ""
    # An ingest transaction left open by a worker that died is aborted after this long (the
    # projection waits for it on the partitions it wrote to, when nobody restarts the worker).
    transaction_timeout_seconds: float = 10.0
    worker_metrics_port: int = 9466
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 inside a container
    exporter_port: int = 9467
    # `salespulse ingest`: the webhook and canonical-event HTTP service (docs/adapters.md).
    # Its secrets are read from SALESPULSE_INGEST_TOKEN, SALESPULSE_HUBSPOT_CLIENT_SECRET,
    # SALESPULSE_TWILIO_AUTH_TOKEN, SALESPULSE_AIRCALL_TOKEN (or the file named by the same
    # name + _FILE), never from here, so they are never printed with the settings.
    ingest_port: int = 9468
    ingest_max_body_bytes: int = 1_048_576
    # The public base URL vendors call (https://hooks.example.com); signatures cover it.
    ingest_public_url: str = ""
    # Token buckets per endpoint and credential, checked once a delivery is authenticated:
    # "source=rate/s:burst,..." (e.g. "hubspot=5/s:50,twilio=off"); a source not named
    # keeps its default (config/rate_limits.py), "off" alone lifts every limit.
    ingest_rate_limits: str = ""
    mappings_file: str = ""
    # Cardinality bounds of the exporter: windows exported per rep, reps per team.
    export_rep_windows: str = "today,week,month"
    export_max_reps_per_team: int = 200
    # Per-rep histograms keep only the +Inf bucket, _sum and _count (mean and count) unless
    # this is set; team, queue, campaign and org histograms always have every bucket.
    export_rep_histogram_buckets: bool = False
    export_rep_kpis: str = ",".join(kpi.id for kpi in CATALOGUE if kpi.per_rep)
    # The engine is stale (API health, wallboard banner) when records wait and nothing was
    # committed for this long.
    stale_after_seconds: float = 60.0
    # How often the KPI publisher sends changes (at most one record per key per interval).
    kpi_publish_interval_seconds: float = 1.0
    # TOML file of KPI targets (docs/targets.md); reloaded by the exporter when it changes.
    targets_file: str = ""
    # The ISO 4217 currency of every amount (kept in its minor units): people read major units
    # with this code (`salespulse kpis`, the wallboard); the API names it and its exponent.
    currency: str = "USD"
    log_level: str = "info"
    log_format: str = "text"  # or "json": one JSON object per line (streams/logs.py)
    # Projections. Changing a rule changes what a KPI means: rebuild after changing it.
    org_timezone: str = "UTC"
    service_level_seconds: int = 20
    follow_up_hours: int = 24
    # How late an event may be, behind its partition's stream time, and still be applied
    # (docs/lateness.md): 35d, 12h, 90m, 600s.
    lateness_horizon: str = DEFAULT_HORIZON
    queue_teams: str = ""  # "queue=team,queue=team": contact-centre queues by team
    projection_batch_size: int = 20_000
    projection_batch_seconds: float = 0.2
    projection_linger_seconds: float = 0.1
    # The projection loop retries a batch while Redis does not answer for up to this long,
    # then exits (without committing) for its supervisor to restart it.
    redis_outage_seconds: float = 300.0

    @property
    def kafka_node_ports(self) -> list[tuple[int, int]]:
        """(client port, controller port) of each broker of the local stack."""
        count = CLUSTER_BROKERS if self.stack_cluster else 1
        return [(self.kafka_port + 2 * i, self.kafka_controller_port + 2 * i) for i in range(count)]

    @property
    def redis_node_ports(self) -> list[int]:
        """The port of each Redis node of the local stack (its cluster bus: + REDIS_BUS_OFFSET)."""
        return [
            self.redis_port + i for i in range(CLUSTER_REDIS_NODES if self.stack_cluster else 1)
        ]

    @property
    def stack_ports(self) -> list[int]:
        """Every port the local stack's servers listen on (Kafka's client and controller
        ports, the mTLS listener when set, each Redis node and its cluster bus, Prometheus)."""
        ports = [port for pair in self.kafka_node_ports for port in pair]
        ports += [self.kafka_mtls_port] if self.kafka_mtls_port else []
        ports += self.redis_node_ports
        if self.stack_cluster:
            ports += [port + REDIS_BUS_OFFSET for port in self.redis_node_ports]
        return [*ports, self.prometheus_port]

    @property
    def bootstrap(self) -> str:
        local = ",".join(f"127.0.0.1:{client}" for client, _ in self.kafka_node_ports)
        return self.kafka_bootstrap or local

    @property
    def redis(self) -> str:
        if self.redis_url:
            return self.redis_url
        if self.stack_cluster:  # every master as a seed: a client started while one is down
            seeds = self.redis_node_ports[: CLUSTER_REDIS_NODES // 2]
            return "redis://" + ",".join(f"127.0.0.1:{port}" for port in seeds)
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def uses_redis_cluster(self) -> bool:
        return self.redis_cluster or (self.stack_cluster and not self.redis_url)

    @property
    def replication_factor(self) -> int:
        """Copies of each partition of a topic salespulse creates."""
        return self.topic_replication_factor or (3 if self.stack_cluster else 1)

    @property
    def min_insync_replicas(self) -> int:
        return self.topic_min_insync_replicas or min(
            2 if self.stack_cluster else 1, self.replication_factor
        )

    @property
    def worker_name(self) -> str:
        return self.worker_id or f"{socket.gethostname()}-{self.worker_metrics_port}"

    @property
    def raw_topic(self) -> str:
        return f"{self.topic_prefix}.events.raw"

    @property
    def events_topic(self) -> str:
        return f"{self.topic_prefix}.events"

    @property
    def facts_topic(self) -> str:
        return f"{self.topic_prefix}.lead-facts"

    @property
    def kpi_topic(self) -> str:
        return f"{self.topic_prefix}.kpi"

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic_prefix}.events.dlq"

    @property
    def rep_windows(self) -> tuple[str, ...]:
        return tuple(w.strip() for w in self.export_rep_windows.split(",") if w.strip())

    @property
    def rep_kpis(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.export_rep_kpis.split(",") if k.strip())

    @property
    def rules(self) -> Rules:
        return Rules(
            org_zone=self.org_timezone,
            service_level_seconds=self.service_level_seconds,
            follow_up_hours=self.follow_up_hours,
            queue_teams=self.queue_team_pairs,
            lateness_horizon_ms=parse_horizon(self.lateness_horizon),
        )

    @property
    def queue_team_pairs(self) -> tuple[tuple[str, str], ...]:
        pairs = [item.split("=", 1) for item in self.queue_teams.split(",") if item.strip()]
        return tuple((queue.strip(), team.strip()) for queue, team in pairs)

    @property
    def limits(self) -> Limits:
        return Limits(
            max_event_bytes=self.max_event_bytes, max_future_ms=self.max_future_seconds * 1000
        )

    @property
    def rate_limits(self) -> dict[str, Limit | None]:
        """The ingest service's limit per source (None: no limit)."""
        return parse_limits(self.ingest_rate_limits)

    @property
    def stack_path(self) -> Path:
        return Path(self.stack_dir).resolve()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``SALESPULSE_<FIELD>`` for every field; unknown or bad values fail loudly."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in fields(cls):
            name = f"SALESPULSE_{field.name.upper()}"
            if name not in environ:
                continue
            text = environ[name]
            try:
                if field.type == "int":
                    values[field.name] = int(text)
                elif field.type == "float":
                    values[field.name] = float(text)
                elif field.type == "bool":
                    if text.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                        raise ValueError(text)
                    values[field.name] = text.lower() in {"1", "true", "yes"}
                else:
                    values[field.name] = text
            except ValueError:
                raise SettingsError(f"{name}={text!r} is not a valid {field.type}") from None
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        if self.log_level.lower() not in {"debug", "info", "warning", "error", "critical"}:
            raise SettingsError(
                f"SALESPULSE_LOG_LEVEL={self.log_level!r}: use debug, info, warning or error"
            )
        try:
            parse_horizon(self.lateness_horizon)
        except ValueError as exc:
            raise SettingsError(f"SALESPULSE_LATENESS_HORIZON={exc}") from None
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"SALESPULSE_LOG_FORMAT={self.log_format!r}: use text or json")
        if self.currency not in CURRENCIES:
            raise SettingsError(f"SALESPULSE_CURRENCY={UnknownCurrency(self.currency)}")
        if not _known_zone(self.org_timezone):
            raise SettingsError(
                f"SALESPULSE_ORG_TIMEZONE={self.org_timezone!r} is not an IANA time zone"
            )
        for item in filter(str.strip, self.queue_teams.split(",")):
            queue, _, team = item.partition("=")
            if not queue.strip() or not team.strip():
                raise SettingsError(
                    f"SALESPULSE_QUEUE_TEAMS: {item!r} is not queue=team (e.g. q-emea=emea)"
                )
        try:
            parse_limits(self.ingest_rate_limits)
        except ValueError as exc:
            raise SettingsError(f"SALESPULSE_INGEST_RATE_LIMITS: {exc}") from None
        unknown = self.rep_kpis - set(TARGETABLE)
        if unknown:
            raise SettingsError(f"SALESPULSE_EXPORT_REP_KPIS: unknown KPI {sorted(unknown)[0]!r}")
        bad_windows = set(self.rep_windows) - set(WINDOWS)
        if bad_windows or not self.rep_windows:
            raise SettingsError(
                f"SALESPULSE_EXPORT_REP_WINDOWS={self.export_rep_windows!r}: "
                f"use windows of {', '.join(WINDOWS)}"
            )
        if self.partitions < 1:
            raise SettingsError(f"SALESPULSE_PARTITIONS must be at least 1, not {self.partitions}")
        if self.kpi_publish_interval_seconds <= 0:
            raise SettingsError("SALESPULSE_KPI_PUBLISH_INTERVAL_SECONDS must be above 0")
        if self.transaction_timeout_seconds < 1:
            raise SettingsError("SALESPULSE_TRANSACTION_TIMEOUT_SECONDS must be at least 1")
        if any(c not in _TOPIC_CHARS for c in self.worker_id):
            raise SettingsError(
                f"SALESPULSE_WORKER_ID={self.worker_id!r}: use letters, digits, . _ -"
            )
        if self.kafka_security_protocol not in KAFKA_PROTOCOLS:
            raise SettingsError(
                f"SALESPULSE_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol!r}: "
                f"use {', '.join(KAFKA_PROTOCOLS)}"
            )
        if self.kafka_sasl_mechanism not in SASL_MECHANISMS:
            raise SettingsError(
                f"SALESPULSE_KAFKA_SASL_MECHANISM={self.kafka_sasl_mechanism!r}: "
                f"use {', '.join(SASL_MECHANISMS)}"
            )
        if self.kafka_security_protocol == "SASL_SSL" and not (
            self.kafka_sasl_username and self.kafka_sasl_password_file
        ):
            raise SettingsError(
                "SALESPULSE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs "
                "SALESPULSE_KAFKA_SASL_USERNAME and SALESPULSE_KAFKA_SASL_PASSWORD_FILE"
            )
        sasl = {
            "SALESPULSE_KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "SALESPULSE_KAFKA_SASL_PASSWORD_FILE": self.kafka_sasl_password_file,
        }
        tls = {
            "SALESPULSE_KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "SALESPULSE_KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "SALESPULSE_KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
            "SALESPULSE_KAFKA_SSL_KEY_PASSWORD_FILE": self.kafka_ssl_key_password_file,
        }
        # Security that is configured but would not be used is a mistake, not a default.
        unused = []
        if self.kafka_security_protocol != "SASL_SSL":
            unused += [name for name, value in sasl.items() if value]
        if self.kafka_security_protocol == "PLAINTEXT":
            unused += [name for name, value in tls.items() if value]
        if unused:
            raise SettingsError(
                f"{unused[0]} is set but SALESPULSE_KAFKA_SECURITY_PROTOCOL="
                f"{self.kafka_security_protocol} does not use it: set the protocol "
                f"({', '.join(KAFKA_PROTOCOLS[1:])})"
            )
        redis_tls = self.redis_tls or self.redis_url.startswith("rediss://")
        if self.redis_password_file and not redis_tls:
            raise SettingsError(
                "SALESPULSE_REDIS_PASSWORD_FILE without TLS would send the password in the "
                "clear: set SALESPULSE_REDIS_TLS=1 (or use a rediss:// URL)"
            )
        ssl_files = (self.redis_ssl_cafile, self.redis_ssl_certfile, self.redis_ssl_keyfile)
        if any(ssl_files) and not redis_tls:
            raise SettingsError(
                "SALESPULSE_REDIS_SSL_* is set but TLS is off: set SALESPULSE_REDIS_TLS=1"
            )
        overriding = sorted(
            key
            for key, _ in parse_qsl(urlsplit(self.redis_url).query)
            if key.startswith("ssl") or key in {"password", "username"}
        )
        if overriding:
            # redis-py lets URL parameters override the client's options (verification too).
            raise SettingsError(
                f"SALESPULSE_REDIS_URL: drop the parameter {overriding[0]!r}; TLS and "
                "credentials come from SALESPULSE_REDIS_TLS, _USERNAME, _PASSWORD_FILE, _SSL_*"
            )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise SettingsError(
                "SALESPULSE_KAFKA_SSL_CERTFILE and SALESPULSE_KAFKA_SSL_KEYFILE go together"
            )
        if bool(self.redis_ssl_certfile) != bool(self.redis_ssl_keyfile):
            raise SettingsError(
                "SALESPULSE_REDIS_SSL_CERTFILE and SALESPULSE_REDIS_SSL_KEYFILE go together"
            )
        if self.topic_replication_factor < 0:
            raise SettingsError("SALESPULSE_TOPIC_REPLICATION_FACTOR must be at least 1 (0: auto)")
        if not 1 <= self.min_insync_replicas <= self.replication_factor:
            raise SettingsError(
                f"SALESPULSE_TOPIC_MIN_INSYNC_REPLICAS={self.topic_min_insync_replicas}: "
                f"use 1 to SALESPULSE_TOPIC_REPLICATION_FACTOR ({self.replication_factor})"
            )
        if self.stack_cluster and self.stack_secure:
            raise SettingsError(
                "SALESPULSE_STACK_CLUSTER and SALESPULSE_STACK_SECURE: the local stack is one "
                "or the other (a secured cluster is configured with the Kafka and Redis settings)"
            )
        if self.stack_cluster and self.redis_node_ports[-1] + REDIS_BUS_OFFSET >= EPHEMERAL_PORTS:
            raise SettingsError(
                f"SALESPULSE_REDIS_PORT={self.redis_port}: the cluster's bus ports (+"
                f"{REDIS_BUS_OFFSET}) would reach {EPHEMERAL_PORTS}, where Linux picks the ports "
                "of outgoing connections (one could hold a bus port); use a port below "
                f"{EPHEMERAL_PORTS - REDIS_BUS_OFFSET - CLUSTER_REDIS_NODES + 1}"
            )
        if self.redis_cluster and not self.redis_url:
            raise SettingsError(
                "SALESPULSE_REDIS_CLUSTER=1 needs SALESPULSE_REDIS_URL (a node of the cluster)"
            )
        if self.ingest_batch_size < 1:
            raise SettingsError("SALESPULSE_INGEST_BATCH_SIZE must be at least 1")
        for name in ("ingest_linger_seconds", "projection_linger_seconds"):
            if not 0 <= getattr(self, name) <= 10:
                raise SettingsError(f"SALESPULSE_{name.upper()} must be from 0 to 10 seconds")
        if self.max_event_bytes < 256:
            raise SettingsError("SALESPULSE_MAX_EVENT_BYTES must be at least 256")
        if not self.topic_prefix or any(c not in _TOPIC_CHARS for c in self.topic_prefix):
            raise SettingsError(
                f"SALESPULSE_TOPIC_PREFIX={self.topic_prefix!r}: use letters, digits, . _ -"
            )


def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


# The clustered local stack: brokers, Redis nodes (half masters, half replicas), and how far
# above a Redis node's port its cluster bus listens.
CLUSTER_BROKERS = 3
CLUSTER_REDIS_NODES = 6
REDIS_BUS_OFFSET = 1_000
# The first port Linux hands to outgoing connections (net.ipv4.ip_local_port_range).
EPHEMERAL_PORTS = 32_768

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")

_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
