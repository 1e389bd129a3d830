"""Real data: the CRM + Sales Opportunities export, backfilled through the real stack.

The all-time figures read back with `salespulse kpis` equal the README table of
../shared/data/crm-sales-opportunities, which was computed from the CSV directly.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from streams.worker_process import WorkerProcess
from tests.support import ROOT, cli

pytestmark = pytest.mark.integration

DATA = ROOT.parent / "shared" / "data" / "crm-sales-opportunities"

# From the data set's README ("Headline figures computed directly from the CSV").
REGIONS = {
    "central": (1_629, 975, 3_346_293),
    "west": (1_438, 811, 3_568_647),
    "east": (1_171, 687, 3_090_594),
}


def kpis(scope: str, scope_id: str, env: dict[str, str]) -> dict[str, dict]:  # type: ignore[type-arg]
    args = ["kpis", "--scope", scope, "--window", "all", "--json"]
    done = cli(*args, *(["--id", scope_id] if scope_id else []), env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["kpis"]  # type: ignore[no-any-return]


@pytest.mark.skipif(not DATA.is_dir(), reason="the shared data set is not beside the checkout")
def test_crm_export_all_time_figures(any_stack_env: dict[str, str], tmp_path: Path) -> None:
    env = {**any_stack_env, "SALESPULSE_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}"}
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.start()
        done = cli("backfill", "crm-opportunities", str(DATA), env=env)
        assert done.returncode == 0, done.stderr
        assert "skipped (no engage_date (Prospecting)): 500" in done.stdout
        events = 38 + 8_300 + 6_711
        deadline = time.monotonic() + 120
        while worker.metrics().projected["applied"] < events:
            assert time.monotonic() < deadline, worker.metrics().projected
            time.sleep(0.5)
    finally:
        assert worker.stop() == 0

    org = kpis("org", "", env)
    assert org["win_rate"]["numerator"] == 4_238
    assert org["win_rate"]["denominator"] == 4_238 + 2_473
    assert round(org["win_rate"]["value"], 4) == 0.6315
    assert round(org["win_loss_ratio"]["value"], 3) == 1.714
    assert org["revenue_won"]["value"] == 10_005_534 * 100  # minor units
    assert round(org["average_deal_size"]["value"] / 100, 2) == 2_360.91
    assert round(org["sales_cycle_seconds"]["value"] / 86_400, 2) == 51.78
    assert org["opportunities_created"]["value"] == 8_300  # Prospecting rows have no date
    for region, (won, lost, revenue) in REGIONS.items():
        team = kpis("team", region, env)
        assert team["win_rate"]["numerator"] == won, region
        assert team["win_rate"]["denominator"] == won + lost, region
        assert team["revenue_won"]["value"] == revenue * 100, region
