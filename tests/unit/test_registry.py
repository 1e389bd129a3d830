"""The KPI registry (``projections.catalogue.CATALOGUE``) is the one description of a KPI."""

from __future__ import annotations

import pytest

from projections.catalogue import BY_ID, CATALOGUE, KPI_IDS, SCOPES, Kind, evaluate
from tools import kpi_docs

pytestmark = pytest.mark.unit


def test_the_docs_table_is_written_from_the_registry() -> None:
    assert kpi_docs.main(["--check"]) == 0, "run python -m tools.kpi_docs"


def test_ids_are_unique_and_every_kpi_says_how_it_is_computed() -> None:
    assert len(BY_ID) == len(CATALOGUE)
    for kpi in CATALOGUE:
        computed = kpi.compute is not None or kpi.by_scope is not None
        assert computed == (kpi.source == "sums"), kpi.id
        assert (kpi.kind is Kind.HISTOGRAM) == (kpi.histogram is not None), kpi.id


@pytest.mark.parametrize("scope", SCOPES)
def test_evaluate_answers_every_kpi_computed_from_sums_for_its_scopes(scope: str) -> None:
    expected = {
        kpi.id
        for kpi in CATALOGUE
        if kpi.source == "sums" and (kpi.by_scope is None or scope in kpi.by_scope)
    }
    assert set(evaluate(scope, {}, {})) == expected


def test_the_read_side_answers_every_kpi_but_the_quota() -> None:
    assert set(KPI_IDS) == set(BY_ID) - {"quota_attainment_ratio"}


def test_ratio_metrics_end_in_ratio_and_other_names_are_the_id() -> None:
    assert BY_ID["win_rate"].metric == "salespulse_win_rate_ratio"
    assert BY_ID["service_level_ratio"].metric == "salespulse_service_level_ratio"
    assert BY_ID["win_loss_ratio"].metric == "salespulse_win_loss_ratio"  # a quotient
    assert BY_ID["revenue_won"].metric == "salespulse_revenue_won"
