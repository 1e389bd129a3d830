"""docker-compose.yml cannot run here (no Docker engine); check it is whole instead, and
that it is locked down: only what a browser opens is published, Kafka and Redis take only
authenticated TLS, and every service is given the credentials it needs."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import Settings
from streams.webhooks import SECRETS as WEBHOOK_SECRETS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {f"SALESPULSE_{f.name.upper()}" for f in fields(Settings)}
# What each salespulse command talks to, and so the credentials its service must be given.
NEEDS = {
    "worker": {"kafka", "redis", "reader"},
    "exporter": {"kafka", "redis", "reader"},
    "publish-kpis": {"kafka", "redis"},
    "ingest": {"kafka"},
    "simulate": {"kafka"},
}
LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def published(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each port the service publishes."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.append(
                (port.get("host_ip", ""), str(port.get("published", "")), str(port["target"]))
            )
            continue
        parts = str(port).split(":")
        address = parts[0] if len(parts) == 3 else ""
        found.append((address, parts[-2] if len(parts) > 1 else "", parts[-1]))
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def secret_paths(service: dict[str, Any]) -> dict[str, str]:
    """Where each Docker secret of the service is mounted: path -> secret name."""
    found = {}
    for secret in service.get("secrets", []):
        if isinstance(secret, str):
            secret = {"source": secret}
        target = secret.get("target", secret["source"])
        path = target if target.startswith("/") else f"/run/secrets/{target}"
        found[path] = secret["source"]
    return found


def salespulse_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if "build" in s}


def test_the_stack_has_every_server(compose: dict[str, Any]) -> None:
    assert {"kafka", "redis", "prometheus", "grafana", "worker", "exporter"} <= set(
        compose["services"]
    )


def test_every_dependency_waits_for_a_health_check(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert rule == {"condition": "service_healthy"}, name
            assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"


def test_mounted_files_and_build_contexts_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").is_file()
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_published_ports_do_not_clash(compose: dict[str, Any]) -> None:
    ports = [p[:2] for s in compose["services"].values() for p in published(s)]
    assert len(ports) == len(set(ports))


def test_only_what_a_browser_opens_is_published_and_on_the_loopback(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    publishing = {name for name, service in services.items() if published(service)}
    # The exporter's wallboard and API, and Grafana; nothing a browser has no use for.
    assert publishing == {"exporter", "grafana"}
    exporter_port = environment(services["exporter"])["SALESPULSE_EXPORTER_PORT"]
    assert [p[2] for p in published(services["exporter"])] == [exporter_port]
    for name in publishing:
        for address, _, _ in published(services[name]):
            assert address in LOOPBACK, f"{name} is published on {address or 'every address'}"
    # And each asks who is there: the reader token, a Grafana login.
    assert environment(services["exporter"])["SALESPULSE_READER_TOKEN_FILE"]
    grafana = environment(services["grafana"])
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD__FILE"] in secret_paths(services["grafana"])


def test_the_prometheus_lifecycle_and_admin_apis_are_off(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key in ["command", "entrypoint"]:
            words = service.get(key, [])
            text = words if isinstance(words, str) else " ".join(words)
            assert "--web.enable-lifecycle" not in text, name
            assert "--web.enable-admin-api" not in text, name


def test_bind_mounts_are_read_only_and_secrets_come_from_files(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            if volume.startswith("."):
                assert volume.endswith(":ro"), f"{name} mounts {volume} writable"
    for name, secret in compose["secrets"].items():
        assert secret["file"].startswith("./deploy/secrets/"), name


def test_kafka_listeners_that_other_containers_reach_are_not_plaintext(
    compose: dict[str, Any],
) -> None:
    kafka = compose["services"]["kafka"]
    env = environment(kafka)
    assert not published(kafka)
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    for listener in env["KAFKA_LISTENERS"].split(","):
        name, _, address = listener.partition("://")
        host = address.rpartition(":")[0].strip("[]")
        if host not in LOOPBACK:
            assert protocols[name] in {"SSL", "SASL_SSL"}, f"{listener} is {protocols[name]}"
    for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(","):
        name = listener.partition("://")[0]
        assert protocols[name] in {"SSL", "SASL_SSL"}, f"{listener} is {protocols[name]}"
    assert protocols[env["KAFKA_INTER_BROKER_LISTENER_NAME"]] == "SASL_SSL"
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"


def test_kafka_creates_the_scram_user_the_services_log_in_as(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    script = kafka["command"][-1]
    mounts = dict(v.split(":")[1::-1] for v in kafka["volumes"] if v.startswith("."))
    assert mounts[script] == "./deploy/kafka/start.sh"
    text = (ROOT / "deploy/kafka/start.sh").read_text()
    assert "--add-scram" in text and "$SALESPULSE_KAFKA_SASL_USERNAME" in text
    assert "/run/secrets/kafka_password" in secret_paths(kafka)
    assert "exec /etc/kafka/docker/run" in text, "the image's own start-up must follow"
    user = environment(kafka)["SALESPULSE_KAFKA_SASL_USERNAME"]
    clients = [
        s for s in compose["services"].values() if "SALESPULSE_KAFKA_BOOTSTRAP" in environment(s)
    ]
    assert clients
    for service in clients:
        assert environment(service)["SALESPULSE_KAFKA_SASL_USERNAME"] == user


def test_redis_takes_only_tls_and_its_acl_users(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    option = dict(zip(command[1::2], command[2::2], strict=False))
    assert option["--port"] == "0", "Redis must have no plain-text port"
    assert option["--tls-port"] == "6379"
    assert "--requirepass" in option or secret_paths(redis).get(option.get("--aclfile", ""))
    assert "nopass" not in command and "--protected-mode" not in command
    assert not published(redis)


def test_every_salespulse_service_gets_the_credentials_it_needs(compose: dict[str, Any]) -> None:
    services = salespulse_services(compose)
    assert {s["command"][0] for s in services.values()} == NEEDS.keys()
    kafka_address = environment(compose["services"]["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    for name, service in services.items():
        env, mounted = environment(service), secret_paths(service)
        needs = NEEDS[service["command"][0]]
        if "kafka" in needs:
            assert f"://{env['SALESPULSE_KAFKA_BOOTSTRAP']}" in kafka_address, name
            assert env["SALESPULSE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", name
            assert env["SALESPULSE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", name
            assert env["SALESPULSE_KAFKA_SASL_PASSWORD_FILE"] in mounted, name
            assert env["SALESPULSE_KAFKA_SSL_CAFILE"] in mounted, name
        if "redis" in needs:
            assert env["SALESPULSE_REDIS_URL"].startswith("rediss://redis:"), name
            assert env["SALESPULSE_REDIS_TLS"] == "true", name
            assert env["SALESPULSE_REDIS_USERNAME"], name
            assert env["SALESPULSE_REDIS_PASSWORD_FILE"] in mounted, name
            assert env["SALESPULSE_REDIS_SSL_CAFILE"] in mounted, name
        if "reader" in needs:
            assert env["SALESPULSE_READER_TOKEN_FILE"] in mounted, name
            healthcheck = " ".join(service["healthcheck"]["test"])
            assert env["SALESPULSE_READER_TOKEN_FILE"] in healthcheck, f"{name}: 401 when healthy"


def test_every_file_a_service_is_pointed_at_is_mounted(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        mounted = set(secret_paths(service))
        mounted |= {v.split(":")[1] for v in service.get("volumes", [])}
        for key, value in environment(service).items():
            if value.startswith("/run/secrets/") or value.startswith("/etc/salespulse/"):
                assert value in mounted, f"{name}: {key}={value} is not mounted"
        for secret in secret_paths(service).values():
            assert secret in compose["secrets"], f"{name} uses undeclared secret {secret}"


def test_every_salespulse_variable_is_a_setting_that_accepts_its_value(
    compose: dict[str, Any],
) -> None:
    for name, service in salespulse_services(compose).items():
        env = environment(service)
        unknown = {k for k in env if k.startswith("SALESPULSE_")} - SETTINGS
        assert not unknown, f"{name}: no such setting {sorted(unknown)}"
        Settings.from_env(env)  # raises SettingsError on a value it cannot use


def test_the_env_example_names_only_webhook_secrets_and_settings() -> None:
    names = [
        line.split("=", 1)[0]
        for line in (ROOT / "deploy/.env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert set(WEBHOOK_SECRETS.values()) <= set(names)
    assert set(names) <= set(WEBHOOK_SECRETS.values()) | SETTINGS
    ignored = (ROOT / "deploy/.gitignore").read_text().split()
    assert {"/.env", "/secrets/"} <= set(ignored)


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("deploy/make-secrets.sh needs openssl")
    out = tmp_path_factory.mktemp("compose") / "secrets"
    subprocess.run(
        ["bash", str(ROOT / "deploy/make-secrets.sh"), str(out)], check=True, capture_output=True
    )
    return out


def test_make_secrets_writes_every_file_compose_mounts(
    compose: dict[str, Any], secrets_dir: Path
) -> None:
    for name, secret in compose["secrets"].items():
        path = secrets_dir / Path(secret["file"]).name
        assert path.is_file() and path.stat().st_size, f"make-secrets.sh does not write {name}"
    for name in ["kafka-password", "kafka-broker-password", "redis-password", "reader-token"]:
        assert len((secrets_dir / name).read_text().strip()) >= 16, name
    assert secrets_dir.stat().st_mode & 0o077 == 0
    assert (secrets_dir / "ca.key").stat().st_mode & 0o077 == 0


def test_the_redis_acl_has_no_open_user_and_knows_the_services_user(
    compose: dict[str, Any], secrets_dir: Path
) -> None:
    rules = [line.split() for line in (secrets_dir / "redis-users.acl").read_text().splitlines()]
    users = {rule[1]: rule[2:] for rule in rules}
    assert "off" in users["default"]
    assert all("nopass" not in rule for rule in users.values())
    password = (secrets_dir / "redis-password").read_text().strip()
    for name, service in compose["services"].items():
        user = environment(service).get("SALESPULSE_REDIS_USERNAME")
        if user:
            assert "on" in users[user], name
            assert f"#{hashlib.sha256(password.encode()).hexdigest()}" in users[user], name


def openssl(*args: str, given: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], input=given, capture_output=True, check=True).stdout


def test_the_certificates_are_signed_by_the_ca_for_the_hosts_clients_dial(
    secrets_dir: Path,
) -> None:
    keystore_password = f"file:{secrets_dir / 'kafka-keystore-password'}"
    certificates = {
        "redis": (secrets_dir / "redis.crt").read_bytes(),
        "kafka": openssl(
            "pkcs12",
            "-in",
            str(secrets_dir / "kafka.p12"),
            "-nokeys",
            "-clcerts",
            "-passin",
            keystore_password,
        ),
    }
    for host, certificate in certificates.items():
        names = openssl("x509", "-noout", "-ext", "subjectAltName", given=certificate).decode()
        assert f"DNS:{host}," in f"{names.strip()},", names
        openssl("verify", "-CAfile", str(secrets_dir / "ca.crt"), given=certificate)


def test_worker_points_at_the_compose_servers(compose: dict[str, Any]) -> None:
    env = compose["services"]["worker"]["environment"]
    assert env["SALESPULSE_KAFKA_BOOTSTRAP"].split(":")[0] in compose["services"]
    assert env["SALESPULSE_REDIS_URL"].split("//")[1].split(":")[0] in compose["services"]
    assert env["SALESPULSE_METRICS_HOST"] == "0.0.0.0"


def test_prometheus_scrapes_the_worker_and_loads_the_repository_rules(
    compose: dict[str, Any],
) -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = [
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    port = compose["services"]["worker"]["environment"]["SALESPULSE_WORKER_METRICS_PORT"]
    assert f"worker:{port}" in targets
    port = compose["services"]["exporter"]["environment"]["SALESPULSE_EXPORTER_PORT"]
    assert f"exporter:{port}" in targets
    # Both ask for the reader token: every job sends the file Prometheus has as a secret.
    token = compose["services"]["exporter"]["environment"]["SALESPULSE_READER_TOKEN_FILE"]
    assert token in secret_paths(compose["services"]["prometheus"])
    for job in config["scrape_configs"]:
        assert job["authorization"] == {"credentials_file": token}, job["job_name"]
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./exporters/rules:/etc/prometheus/rules:ro" in mounts
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert list((ROOT / "exporters/rules").glob("*.yml"))


def test_grafana_data_source_has_a_pinned_uid() -> None:
    config = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    (source,) = config["datasources"]
    assert source["uid"] == "salespulse-prometheus"
    assert source["url"] == "http://prometheus:9090"
