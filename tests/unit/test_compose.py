"""docker-compose.yml cannot run here (no Docker engine); check it is whole instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


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
    published = [p.split(":")[0] for s in compose["services"].values() for p in s.get("ports", [])]
    assert len(published) == len(set(published))


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
