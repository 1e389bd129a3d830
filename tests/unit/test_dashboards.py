"""The Grafana dashboards: current with their builder (tools/dashboards.py), every query names
real metrics, and a panel showing a KPI says what the registry says about it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import streams.metrics  # noqa: F401  (registers the worker's metrics)
from projections.catalogue import BY_ID, CATALOGUE, Kpi, Unit
from tools.dashboards import DASHBOARDS, OUT_DIR, UNITS, main, rendered

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\b(salespulse[a-z0-9_:]*)")
VARIABLE = re.compile(r"\$(\w+)")


def _exported_names() -> set[str]:
    names = set()
    for kpi in CATALOGUE:
        name = kpi.metric
        if kpi.histogram is not None:
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            continue
        names.add(name)
        if kpi.has_parts:
            names |= {f"{name}_numerator", f"{name}_denominator"}
    sources = "".join(
        (ROOT / "exporters" / name).read_text()
        for name in ("health.py", "server.py", "families.py")
    )
    names |= set(re.findall(r'"(salespulse_[a-z_]+)"', sources))
    for family in REGISTRY.collect():
        names |= {sample.name for sample in family.samples}
        if family.type == "histogram":
            names.add(f"{family.name}_bucket")
        if family.type == "counter":  # labelled counters have no samples until first used
            names.add(f"{family.name}_total")
    for rules in (ROOT / "exporters" / "rules").glob("*.yml"):
        for group in yaml.safe_load(rules.read_text())["groups"]:
            names |= {rule["record"] for rule in group["rules"] if "record" in rule}
    return names


def _dashboards() -> dict[str, dict[str, Any]]:
    return {name: json.loads((OUT_DIR / f"{name}.json").read_text()) for name in DASHBOARDS}


def test_the_files_are_what_the_builder_makes() -> None:
    for name, text in rendered().items():
        assert (OUT_DIR / name).read_text() == text, f"{name}: run python -m tools.dashboards"
    assert main(["--check"]) == 0


def test_uids_are_fixed_and_unique_and_use_the_provisioned_data_source() -> None:
    source = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    (uid,) = [d["uid"] for d in source["datasources"]]
    boards = _dashboards()
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids) == 5
    assert all(u.startswith("salespulse-") for u in uids)
    for board in boards.values():
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == uid
            assert all(t["datasource"]["uid"] == uid for t in panel["targets"])


def test_every_query_names_an_exported_metric_and_a_defined_variable() -> None:
    known = _exported_names()
    for name, board in _dashboards().items():
        defined = {v["name"] for v in board["templating"]["list"]}
        for panel in board["panels"]:
            assert panel["fieldConfig"]["defaults"]["unit"], f"{name}: {panel['title']} no unit"
            steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            assert steps[0]["value"] is None
            for target in panel["targets"]:
                used = set(NAME.findall(target["expr"]))
                assert used, target["expr"]
                assert used <= known, f"{name}/{panel['title']}: unknown {used - known}"
                missing = set(VARIABLE.findall(target["expr"])) - defined
                assert not missing, f"{name}/{panel['title']}: undefined ${missing}"


def test_calendar_windows_come_from_the_engine_not_from_grafana() -> None:
    for board in _dashboards().values():
        text = json.dumps(board["panels"])
        assert "now/d" not in text and "now/w" not in text


def test_compose_provisions_every_dashboard_file() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == "/etc/grafana/dashboards/salespulse"
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/salespulse.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards/salespulse"
    assert sorted(p.name for p in OUT_DIR.glob("*.json")) == sorted(rendered())


def _kpi_of_series() -> dict[str, Kpi]:
    """Each series name a KPI is exported as (a histogram's mean is its sum over its count)."""
    out: dict[str, Kpi] = {}
    for kpi in CATALOGUE:
        names = [kpi.metric]
        if kpi.histogram is not None:
            names = [f"{kpi.metric}_sum", f"{kpi.metric}_count"]
        out |= dict.fromkeys(names, kpi)
    return out


def _kpi_panels() -> list[tuple[str, dict[str, Any], Kpi]]:
    """(dashboard, panel, KPI) of every panel whose queries show one KPI."""
    by_series = _kpi_of_series()
    out = []
    for name, board in _dashboards().items():
        for panel in board["panels"]:
            shown = {
                by_series[used].id
                for target in panel["targets"]
                for used in NAME.findall(target["expr"])
                if used in by_series
            }
            if shown:
                assert len(shown) == 1, f"{name}/{panel['title']}: {shown}"
                out.append((name, panel, BY_ID[shown.pop()]))
    return out


def test_every_registry_unit_has_a_grafana_unit() -> None:
    assert set(UNITS) == set(Unit)
    assert UNITS[Unit.RATIO] == "percentunit" and UNITS[Unit.SECONDS] == "s"


def test_a_kpi_panel_takes_its_title_unit_and_direction_from_the_registry() -> None:
    panels = _kpi_panels()
    assert len(panels) >= 20
    for name, panel, kpi in panels:
        where = f"{name}/{panel['title']}"
        assert panel["title"].startswith(kpi.title), where
        assert panel["fieldConfig"]["defaults"]["unit"] == UNITS[kpi.unit], where
        steps = [s["color"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]
        if len(steps) > 1:
            assert steps[-1] == ("red" if kpi.lower_is_better else "green"), where
        for target in panel["targets"]:
            if target["expr"].startswith(("topk", "bottomk")):
                best = "bottomk" if kpi.lower_is_better else "topk"
                assert target["expr"].startswith(f"{best}("), where
