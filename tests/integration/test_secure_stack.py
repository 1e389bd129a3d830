"""The pipeline through a secured Kafka and Redis (`salespulse stack up --secure`).

Kafka listens only with SASL_SSL (SCRAM-SHA-512, certificates from the stack's own CA);
Redis only with TLS, a required client certificate and an ACL user (the default user is
off). The worker, the producer and the CLI connect with SALESPULSE_STACK_SECURE=1, and the
KPIs read back equal the oracle's. Then each way of getting it wrong is refused with one
line that names the setting to check, and nothing can get in without credentials.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config.connections import redis_client, stack_secrets
from config.settings import Settings
from projections.store import RedisStore, current_namespace
from simulator.log import SimConfig, format_instant, simulate
from simulator.org import build_org
from streams.worker_process import WorkerProcess
from tests.oracle import Oracle
from tests.support import (
    assert_matches_oracle,
    cli,
    feed_directory_first,
    salespulse,
    wait_for_exporter,
    write_valid_log,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# Ports of its own: the session's plain test stack (29092, 26379...) runs beside it.
SECURE_ENV = {
    "SALESPULSE_STACK_DIR": str(ROOT / ".salespulse/test-stack-secure"),
    "SALESPULSE_KAFKA_PORT": "28092",
    "SALESPULSE_KAFKA_CONTROLLER_PORT": "28093",
    "SALESPULSE_KAFKA_MTLS_PORT": "28094",
    "SALESPULSE_REDIS_PORT": "28379",
    "SALESPULSE_PROMETHEUS_PORT": "28090",
    "SALESPULSE_WORKER_METRICS_PORT": "28466",
    "SALESPULSE_EXPORTER_PORT": "28467",
    "SALESPULSE_PARTITIONS": "3",
    "SALESPULSE_STACK_SECURE": "1",
}


@pytest.fixture(scope="module")
def secure_env() -> Iterator[dict[str, str]]:
    """`salespulse stack up --secure` (Redis and Kafka) in a fresh folder; down at the end."""
    env = {**SECURE_ENV, "SALESPULSE_TOPIC_PREFIX": f"s{uuid.uuid4().hex[:8]}"}
    plain = {k: v for k, v in env.items() if k != "SALESPULSE_STACK_SECURE"}
    shutil.rmtree(SECURE_ENV["SALESPULSE_STACK_DIR"], ignore_errors=True)
    done = cli("stack", "up", "--secure", env=plain)
    try:
        assert done.returncode == 0, done.stderr
        yield env
    finally:
        cli("stack", "down", env=plain)


async def test_the_pipeline_through_sasl_ssl_and_redis_tls_matches_the_oracle(
    secure_env: dict[str, str], tmp_path: Path
) -> None:
    settings = Settings.from_env(secure_env)
    end_ms = time.time_ns() // 1_000_000
    records, _ = simulate(
        SimConfig(
            seed=16,
            count=6_000,
            end_ms=end_ms,
            history_ms=5 * 86_400_000,
            invalid_share=0.02,
            duplicate_share=0.03,
            late_share=0.03,
            call_disorder_share=0.3,
        )
    )
    log = tmp_path / "valid.jsonl"
    valid = write_valid_log(records, log)

    worker = WorkerProcess(secure_env, tmp_path / "worker.log")
    try:
        worker.start()
        await feed_directory_first(worker, settings, records, len(valid))

        org = build_org(4, 8, 6)
        scopes = [("org", ""), ("rep", org.reps[0].rep_id), ("queue", org.teams[0].queue_id)]
        scopes += [("team", t.team_id) for t in org.teams]
        client = redis_client(settings)
        try:
            store = RedisStore(client, await current_namespace(client, settings.topic_prefix))
            oracle = Oracle(log)
            await assert_matches_oracle(
                store, settings, oracle, scopes, ("today", "week", "all"), end_ms
            )
        finally:
            await client.aclose()

        def team_kpis() -> object:
            done = cli(
                "kpis", "--scope", "team", "--id", "emea", "--window", "all",
                "--as-of", format_instant(end_ms), "--json",
                env=secure_env,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)["kpis"]

        assert team_kpis() == oracle.kpis("team", "emea", "all", end_ms)
        assert b"Authenticated as salespulse via SCRAM-SHA-512" in worker.log()

        # A rebuild replays the log through the same secured clients into a new generation.
        done = cli("rebuild", "--processes", "2", env=secure_env)
        assert done.returncode == 0, done.stderr
        assert team_kpis() == oracle.kpis("team", "emea", "all", end_ms)

        # The exporter reads Redis (KPIs) and Kafka (lag) through them too.
        port = int(secure_env["SALESPULSE_EXPORTER_PORT"])
        exporter_log = tmp_path / "exporter.log"
        with salespulse(["exporter"], secure_env, exporter_log) as exporter:
            url = wait_for_exporter(exporter, port, exporter_log)
            with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
                exposition = response.read()
        assert b"salespulse_exporter_up 1.0" in exposition
        lags = [
            line for line in exposition.splitlines() if line.startswith(b"salespulse_consumer_lag{")
        ]
        assert lags and all(line.endswith(b" 0.0") for line in lags), lags
    finally:
        assert worker.stop() == 0


def _explicit(secure_env: dict[str, str], **overrides: str) -> dict[str, str]:
    """The stack's credentials as an operator configures a managed service: every setting
    spelled out (no SALESPULSE_STACK_SECURE), then ``overrides``."""
    folder = stack_secrets(Settings.from_env(secure_env)).folder
    env = {k: v for k, v in secure_env.items() if k != "SALESPULSE_STACK_SECURE"}
    env |= {
        "SALESPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SALESPULSE_KAFKA_SASL_USERNAME": "salespulse",
        "SALESPULSE_KAFKA_SASL_PASSWORD_FILE": str(folder / "kafka-password"),
        "SALESPULSE_KAFKA_SSL_CAFILE": str(folder / "ca.pem"),
        "SALESPULSE_REDIS_TLS": "1",
        "SALESPULSE_REDIS_USERNAME": "salespulse",
        "SALESPULSE_REDIS_PASSWORD_FILE": str(folder / "redis-password"),
        "SALESPULSE_REDIS_SSL_CAFILE": str(folder / "ca.pem"),
        "SALESPULSE_REDIS_SSL_CERTFILE": str(folder / "client.pem"),
        "SALESPULSE_REDIS_SSL_KEYFILE": str(folder / "client-key.pem"),
    }
    return env | overrides


@pytest.fixture(scope="module")
def strangers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A wrong password, an empty file, and a CA that signed nothing of the stack's."""
    folder = tmp_path_factory.mktemp("strangers")
    (folder / "wrong-password").write_text("not-the-password-at-all\n")
    (folder / "empty").write_text("")
    made = subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(folder / "ca-key.pem"),
            "-out", str(folder / "ca.pem"), "-days", "2", "-subj", "/CN=some other CA",
        ],
        capture_output=True,
        check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return {name: str(folder / name) for name in ("wrong-password", "empty", "ca.pem")}


def _refused(env: dict[str, str], *command: str) -> str:
    """The one line a command prints when refused, after checking it exits 2."""
    done = cli(*command, env=env)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_the_explicit_settings_work(secure_env: dict[str, str]) -> None:
    """The refusals below change one setting of a configuration that works."""
    env = _explicit(secure_env)
    assert cli("topics", env=env).returncode == 0
    done = cli("kpis", "--window", "all", env=env)
    assert done.returncode == 0, done.stderr


def test_a_wrong_kafka_password_is_refused(
    secure_env: dict[str, str], strangers: dict[str, str]
) -> None:
    env = _explicit(secure_env, SALESPULSE_KAFKA_SASL_PASSWORD_FILE=strangers["wrong-password"])
    line = _refused(env, "topics")
    assert "refused user 'salespulse'" in line
    assert "SALESPULSE_KAFKA_SASL_PASSWORD_FILE" in line
    assert "not-the-password" not in line
    # The worker too, before it serves anything.
    line = _refused(env, "worker")
    assert "SALESPULSE_KAFKA_SASL_PASSWORD_FILE" in line


def test_an_untrusted_kafka_certificate_is_refused(
    secure_env: dict[str, str], strangers: dict[str, str]
) -> None:
    env = _explicit(secure_env, SALESPULSE_KAFKA_SSL_CAFILE=strangers["ca.pem"])
    line = _refused(env, "topics")
    assert "certificate is not trusted" in line and "SALESPULSE_KAFKA_SSL_CAFILE" in line


def test_a_wrong_redis_password_is_refused(
    secure_env: dict[str, str], strangers: dict[str, str]
) -> None:
    env = _explicit(secure_env, SALESPULSE_REDIS_PASSWORD_FILE=strangers["wrong-password"])
    line = _refused(env, "kpis")
    assert "refused user 'salespulse'" in line and "SALESPULSE_REDIS_PASSWORD_FILE" in line


def test_an_untrusted_redis_certificate_is_refused(
    secure_env: dict[str, str], strangers: dict[str, str]
) -> None:
    env = _explicit(secure_env, SALESPULSE_REDIS_SSL_CAFILE=strangers["ca.pem"])
    line = _refused(env, "kpis")
    assert "certificate is not trusted" in line and "SALESPULSE_REDIS_SSL_CAFILE" in line


def _mutual_tls(secure_env: dict[str, str], **overrides: str) -> dict[str, str]:
    """Kafka through the stack's second listener: TLS with a client certificate, no user."""
    folder = stack_secrets(Settings.from_env(secure_env)).folder
    env = _explicit(secure_env)
    for name in ("MECHANISM", "USERNAME", "PASSWORD_FILE"):
        env.pop(f"SALESPULSE_KAFKA_SASL_{name}", None)
    env |= {
        "SALESPULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{secure_env['SALESPULSE_KAFKA_MTLS_PORT']}",
        "SALESPULSE_KAFKA_SECURITY_PROTOCOL": "SSL",
        "SALESPULSE_KAFKA_SSL_CERTFILE": str(folder / "client.pem"),
        "SALESPULSE_KAFKA_SSL_KEYFILE": str(folder / "client-key.pem"),
    }
    return env | overrides


def test_kafka_with_a_client_certificate_serves_and_without_one_refuses(
    secure_env: dict[str, str], tmp_path: Path
) -> None:
    env = _mutual_tls(secure_env)
    events = tmp_path / "events.jsonl"
    done = cli("simulate", "--count", "300", "--seed", "3", "--out", str(events), env=env)
    assert done.returncode == 0, done.stderr
    done = cli("produce", str(events), env=env)
    assert done.returncode == 0, done.stderr
    # Without the certificate the broker ends the handshake, whatever the CA trusts.
    del env["SALESPULSE_KAFKA_SSL_CERTFILE"], env["SALESPULSE_KAFKA_SSL_KEYFILE"]
    line = _refused(env, "topics")
    assert "SALESPULSE_KAFKA_SSL_CERTFILE" in line, line


def test_redis_without_a_client_certificate_is_refused(secure_env: dict[str, str]) -> None:
    env = _explicit(secure_env)
    del env["SALESPULSE_REDIS_SSL_CERTFILE"], env["SALESPULSE_REDIS_SSL_KEYFILE"]
    line = _refused(env, "kpis")
    assert "SALESPULSE_REDIS_SSL_CERTFILE" in line


@pytest.mark.parametrize(
    "setting",
    ["SALESPULSE_KAFKA_SASL_PASSWORD_FILE", "SALESPULSE_REDIS_PASSWORD_FILE"],
)
def test_an_empty_password_file_is_refused(
    secure_env: dict[str, str], strangers: dict[str, str], setting: str
) -> None:
    env = _explicit(secure_env, **{setting: strangers["empty"]})
    line = _refused(env, "kpis" if "REDIS" in setting else "topics")
    assert f"{setting}={strangers['empty']}" in line and "0 characters" in line


def test_nothing_gets_in_without_credentials(secure_env: dict[str, str]) -> None:
    plain = {k: v for k, v in secure_env.items() if k != "SALESPULSE_STACK_SECURE"}
    assert "not reachable" in _refused(plain, "topics")  # no PLAINTEXT listener
    assert "not reachable" in _refused(plain, "kpis")  # no plain Redis port
    # TLS with the right CA and client certificate, but no user: the default user is off.
    folder = stack_secrets(Settings.from_env(secure_env)).folder
    client = redis.Redis(
        host="127.0.0.1",
        port=int(secure_env["SALESPULSE_REDIS_PORT"]),
        ssl=True,
        ssl_ca_certs=str(folder / "ca.pem"),
        ssl_certfile=str(folder / "client.pem"),
        ssl_keyfile=str(folder / "client-key.pem"),
        socket_timeout=5,
    )
    with pytest.raises(redis.AuthenticationError):
        client.get("anything")
    client.close()
    # The stack's Redis keeps no password in the clear, only its SHA-256.
    acl = (Path(secure_env["SALESPULSE_STACK_DIR"]) / "redis" / "users.acl").read_text()
    assert (folder / "redis-password").read_text().strip() not in acl
    assert "user default off" in acl
