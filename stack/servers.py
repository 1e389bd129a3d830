"""Real Kafka, Redis and Prometheus servers as local processes on loopback.

Each server keeps its data, log and pid file under ``Settings.stack_dir``.
``up`` is idempotent: a server whose pid file names a live process that
answers is left alone.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis

from config.connections import (
    StackSecrets,
    list_topics,
    redacted,
    redis_access,
    redis_address,
    redis_sync_client,
    stack_secrets,
)
from config.reader_access import reader_token
from config.secret_files import SecretError
from config.settings import Settings
from projections.errors import SalespulseError
from stack.install import kafka_libs, require_binary, require_java
from stack.secure import (
    SecretsError,
    ensure_secrets,
    kafka_security_properties,
    redis_acl,
    redis_tls_arguments,
    scram_users,
)

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
RULES_DIR = Path(__file__).resolve().parent.parent / "exporters" / "rules"


# Servers started by this process, kept so they are reaped (not left as zombies or
# reported as leaked) when this same process stops them.
_children: dict[int, subprocess.Popen[bytes]] = {}


# How every local Redis runs and keeps its data: in the foreground, no snapshots, and an AOF
# (projections keep their checkpoints there: AOF makes a restart lose at most 1 s); and how it
# lays out hashes.
REDIS_SETTINGS = [
    "--daemonize",
    "no",
    "--save",
    "",
    "--appendonly",
    "yes",
    "--appendfsync",
    "everysec",
    # Hashes stay in Redis's compact listpack form while every value is at most this long.
    # The default, 64 bytes, is a few bytes short of some of a lead record's markers (a
    # response's rep, sentiment, team and zone), and a lead record with one such value took
    # 1,501 bytes as a hash table against 506 for the others (docs/managed.md;
    # benchmarks/RESULTS.md, "Compact hashes").
    "--hash-max-listpack-value",
    "128",
]


class StackError(SalespulseError):
    """A server could not be started, or did not answer in time."""


@dataclass(frozen=True)
class Status:
    name: str
    address: str
    pid: int | None  # None: not started by us (external) or not running
    answering: bool
    external: bool


class LocalServer:
    name = ""
    ready_timeout = 60.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.stack_path / self.name

    # Overridden per server --------------------------------------------------

    @property
    def address(self) -> str:
        raise NotImplementedError

    @property
    def external(self) -> bool:
        return False

    def install(self) -> None:
        """Make sure the binaries exist; raise StackError saying what to install."""

    def prepare(self) -> list[str]:
        """Write config files; return the command line."""
        raise NotImplementedError

    def answering(self) -> bool:
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether ``up`` may return: it answers, unless it cannot before its peers start."""
        return self.answering()

    # Shared process handling ----------------------------------------------------

    @property
    def pid_file(self) -> Path:
        return self.home / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.home / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split()[2] == "Z":
                    return None  # a zombie is not a server
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            return None
        return pid

    def up(self) -> float:
        """Start if needed and wait until it answers; returns seconds spent."""
        started = time.monotonic()
        if self.external:
            if not self.answering():
                raise StackError(
                    f"{self.name}: the configured server {self.address} does not answer"
                )
            return time.monotonic() - started
        running = self.pid() is not None
        secure_mark = self.settings.stack_path / "secure"
        if running and secure_mark.exists() != self.settings.stack_secure:
            kind = "secure" if secure_mark.exists() else "plain"
            raise StackError(
                f"{self.name} runs as part of a {kind} stack in {self.settings.stack_path}: "
                f"{'add' if kind == 'secure' else 'drop'} --secure (SALESPULSE_STACK_SECURE), "
                "or `salespulse stack down` first"
            )
        if running and self.ready():
            return time.monotonic() - started
        if not running and self.answering():
            # Not ours: a server left behind by another run (its pid file gone) holds the
            # port. Adopting it would make `down` and every fault test miss it.
            raise StackError(
                f"{self.name}: something already answers at {self.address}, but no pid file "
                f"under {self.home} names it (left from another run?): stop it, or choose "
                "other ports (SALESPULSE_*_PORT)"
            )
        self.install()
        self.home.mkdir(parents=True, exist_ok=True)
        if self.settings.stack_secure:
            secure_mark.touch()
        elif not any(server.pid() for server in servers(self.settings)):
            secure_mark.unlink(missing_ok=True)  # the stack starts again, plain
        command = self.prepare()
        with self.log_file.open("ab") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.home,
            )
        self.pid_file.write_text(str(process.pid))
        _children[process.pid] = process
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise StackError(
                    f"{self.name} exited with code {process.returncode}"
                    f"{_last_words(self.log_file)}; see {self.log_file}"
                )
            if self.ready():
                return time.monotonic() - started
            time.sleep(0.2)
        raise StackError(
            f"{self.name} did not answer within {self.ready_timeout:.0f}s; see {self.log_file}"
        )

    def down(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``; True if a process was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        child = _children.pop(pid, None)
        if child is not None:  # our own child: wait() also reaps it
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        else:
            deadline = time.monotonic() + timeout
            while self.pid() is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.pid() is not None:
                os.kill(pid, signal.SIGKILL)
                while self.pid() is not None:
                    time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL at once, as a crash or an OOM kill would; True if a process was killed."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        child = _children.pop(pid, None)
        if child is not None:
            child.wait()
        else:
            while self.pid() is not None:
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> Status:
        return Status(
            self.name,
            self.address,
            None if self.external else self.pid(),
            self.answering(),
            self.external,
        )


class Kafka(LocalServer):
    name = "kafka"
    ready_timeout = 90.0

    @property
    def address(self) -> str:
        return self.settings.bootstrap

    @property
    def external(self) -> bool:
        return bool(self.settings.kafka_bootstrap)

    def install(self) -> None:
        require_java(17)
        self.libs = kafka_libs(self.settings.kafka_version)

    def prepare(self) -> list[str]:
        s = self.settings
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        folder = stack_secrets(s)
        mtls = s.stack_secure and s.kafka_mtls_port > 0
        if s.stack_secure:
            _ensure_secrets(folder)
        config = (
            (TEMPLATES / "kafka-server.properties")
            .read_text()
            .format(
                port=s.kafka_port,
                controller_port=s.kafka_controller_port,
                data=data,
                partitions=s.partitions,
                client="SASL_SSL" if s.stack_secure else "PLAINTEXT",
                more_listeners=f",MTLS://127.0.0.1:{s.kafka_mtls_port}" if mtls else "",
                more_protocols=",MTLS:SSL" if mtls else "",
                security=kafka_security_properties(folder, mtls) if s.stack_secure else "",
            )
        )
        properties = self.home / "server.properties"
        properties.write_text(config)
        if s.stack_secure:  # it holds the keystore's and the broker user's passwords
            properties.chmod(0o600)
            self.home.chmod(0o700)
        (self.home / "log4j2.properties").write_text(
            (TEMPLATES / "kafka-log4j2.properties").read_text()
        )
        classpath = f"{self.libs}/*"
        java = [
            "java",
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            classpath,
        ]
        secure_mark = self.home / "secure"
        if (data / "meta.properties").exists() and secure_mark.exists() != s.stack_secure:
            raise StackError(
                f"{data} holds a {'secure' if secure_mark.exists() else 'plain'} Kafka; "
                "use another SALESPULSE_STACK_DIR for the other kind, or remove this one"
            )
        if not (data / "meta.properties").exists():
            cluster_id = "-"
            while cluster_id.startswith("-"):  # one in 64 would read as an option (as Kafka's
                # own Uuid.randomUuid() knows): the 2026-11-30 CI run met one
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            formatted = subprocess.run(
                [
                    *java,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(self.home / "server.properties"),
                    "--standalone",
                    "--ignore-formatted",
                    *(scram_users(folder) if s.stack_secure else []),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if formatted.returncode != 0:
                raise StackError(f"kafka storage format failed: {formatted.stderr[-500:]}")
            if s.stack_secure:
                secure_mark.touch()
        return [*java, "kafka.Kafka", str(self.home / "server.properties")]

    def answering(self) -> bool:
        client_log = logging.getLogger("aiokafka")
        level = client_log.level
        client_log.setLevel(logging.CRITICAL)  # refused connections are expected while starting
        try:
            asyncio.run(asyncio.wait_for(list_topics(self.settings, 3_000), 5))
        except Exception:  # any failure to list topics means "not ready yet"
            return False
        finally:
            client_log.setLevel(level)
        return True


class Redis(LocalServer):
    name = "redis"

    @property
    def address(self) -> str:
        return redacted(redis_address(redis_access(self.settings)))

    @property
    def external(self) -> bool:
        return bool(self.settings.redis_url)

    def install(self) -> None:
        require_binary("redis-server", "redis-server")

    def prepare(self) -> list[str]:
        if self.settings.stack_secure:
            folder = stack_secrets(self.settings)
            _ensure_secrets(folder)
            acl = self.home / "users.acl"
            acl.write_text(redis_acl(folder))
            acl.chmod(0o600)
            listen = redis_tls_arguments(folder, self.settings.redis_port, acl)
        else:
            listen = ["--port", str(self.settings.redis_port)]
        return [
            shutil.which("redis-server") or "redis-server",
            "--bind",
            "127.0.0.1",
            *listen,
            "--dir",
            str(self.home),
            *REDIS_SETTINGS,
        ]

    def answering(self) -> bool:
        try:
            client = redis_sync_client(self.settings)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.RedisError, SecretError):
            return False


class Prometheus(LocalServer):
    name = "prometheus"

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.settings.prometheus_port}"

    def install(self) -> None:
        require_binary("prometheus", "prometheus")

    def prepare(self) -> list[str]:
        s = self.settings
        reader_auth = ""
        if s.reader_token_file:
            reader_token(s)  # fails closed now (SecretError) rather than at every scrape
            # Prometheus reads the file at each scrape: a new token needs no restart.
            token_file = json.dumps(str(Path(s.reader_token_file).resolve()))
            reader_auth = f"    authorization: {{type: Bearer, credentials_file: {token_file}}}"
        config = (
            (TEMPLATES / "prometheus.yml")
            .read_text()
            .format(
                worker_port=s.worker_metrics_port,
                exporter_port=s.exporter_port,
                rules=RULES_DIR,
                reader_auth=reader_auth,
            )
        )
        (self.home / "prometheus.yml").write_text(config)
        # No --web.enable-lifecycle: nothing here reloads or stops Prometheus over HTTP, and
        # that API would let anyone on the machine do so.
        return [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={self.home / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.home / 'data'}",
            f"--web.listen-address=127.0.0.1:{s.prometheus_port}",
        ]

    def answering(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.address}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False


def _ensure_secrets(folder: StackSecrets) -> None:
    try:
        ensure_secrets(folder)
    except SecretsError as exc:
        raise StackError(str(exc)) from None


def servers(settings: Settings) -> list[LocalServer]:
    """The servers of the local stack in start order (``down`` goes in reverse)."""
    if settings.stack_cluster:
        from stack.cluster import cluster_servers  # it builds on the classes above

        return cluster_servers(settings)
    return [Redis(settings), Kafka(settings), Prometheus(settings)]


def _last_words(log_file: Path) -> str:
    """The last line a server that exited at start wrote (its reason, for Redis and Kafka
    alike), to quote in the one-line error: a CI log shows it, not the server's log file."""
    try:
        with log_file.open("rb") as log:
            log.seek(max(0, log_file.stat().st_size - 4096))
            lines = [line.strip() for line in log.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    said = [line for line in lines if line]
    return f' ("{said[-1][:300]}")' if said else ""
