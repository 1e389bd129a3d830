"""The planner's modules compiled by mypyc (projections/__init__.py): a build is taken only
for exactly the sources present, is what the tests run when there is one, and plans as the
same modules run as Python do."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import projections
from projections import BUILDS, COMPILED, compiled_build, sources_digest

pytestmark = pytest.mark.unit

PACKAGE = Path(projections.__file__).resolve().parent


def _copy(tmp_path: Path) -> Path:
    package = tmp_path / "projections"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    return package


def _fake_build(build: Path, leave_out: str = "") -> None:
    (build / "projections").mkdir(parents=True)
    (build / "0123__mypyc.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    for name in COMPILED:
        if name != leave_out:
            (build / "projections" / f"{name}.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")


def test_a_build_is_taken_for_its_own_sources_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SALESPULSE_COMPILED", raising=False)
    package, builds = _copy(tmp_path), tmp_path / "builds"
    assert compiled_build(package, builds) is None  # nothing built
    build = builds / sources_digest(package)
    _fake_build(build)
    assert compiled_build(package, builds) == build
    monkeypatch.setenv("SALESPULSE_COMPILED", "0")
    assert compiled_build(package, builds) is None  # turned off
    monkeypatch.delenv("SALESPULSE_COMPILED")
    # Any edit of a module, even a comment, and the build is not the sources' any more: the
    # compiled ones, and those whose types and constants they were compiled against.
    for name in [*COMPILED, "events", "facts", "lateness"]:
        module = package / f"{name}.py"
        kept = module.read_bytes()
        module.write_bytes(kept + b"# edited\n")
        assert compiled_build(package, builds) is None, name
        module.write_bytes(kept)
    assert compiled_build(package, builds) == build


def test_a_build_without_one_of_its_modules_is_not_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SALESPULSE_COMPILED", raising=False)
    package, builds = _copy(tmp_path), tmp_path / "builds"
    _fake_build(builds / sources_digest(package), leave_out="windows")
    assert compiled_build(package, builds) is None


def test_the_modules_in_use_are_the_build_of_the_present_sources() -> None:
    build = compiled_build(PACKAGE, BUILDS)
    if build is None:
        pytest.skip("no compiled build of these sources (make compiled; needs a C compiler)")
    for name in COMPILED:
        module = importlib.import_module(f"projections.{name}")
        assert Path(module.__file__ or "").parent == build / "projections", name


PLAN_LOG = """
import sys
import orjson
import projections.commit_payload
import projections.engine
from benchmarks.stages import decode_all
from config.settings import Settings
from projections.commit_payload import Keys, commit_call
from projections.engine import DirectoryView, plan_batch
from projections.stores import Commit
from simulator import org
from simulator.log import VALID, SimConfig, simulate

# Teams in zones whose offsets are not whole hours, two of them changing it in the log's
# month (Chatham on 27 September 2026, Lord Howe by half an hour on 4 October), and an org
# zone of a half-hour offset that changes on 4 October too.
org.TEAM_TEMPLATES = (
    ("emea", "EMEA", "Europe/Berlin"),
    ("amer-east", "Americas East", "America/New_York"),
    ("chatham", "Chatham", "Pacific/Chatham"),
    ("lord-howe", "Lord Howe", "Australia/Lord_Howe"),
    ("nepal", "Nepal", "Asia/Kathmandu"),
    ("newfoundland", "Newfoundland", "America/St_Johns"),
)
day_ms = 86_400_000
end_ms = 1_791_500_000_000  # 2026-10-08T22:53:20Z
config = SimConfig(
    seed=12,
    count=6_000,
    end_ms=end_ms,
    history_ms=30 * day_ms,
    teams=6,
    reps_per_team=6,
    call_disorder_share=0.3,
    local_offset_share=0.5,
)
records, _ = simulate(config)
rules = Settings.from_env({"SALESPULSE_ORG_TIMEZONE": "Australia/Adelaide"}).rules
out = []
# The log planned as it comes (its last events minutes old: every bucket kept), then 10 days
# later (10 to 40 days old: most tiers' expiries on the way).
for now_ms in (end_ms + 60_000, end_ms + 10 * day_ms):
    events = decode_all([r.value for r in records if r.label == VALID], now_ms)
    directory, stored, facts = DirectoryView({}, rules), {}, []
    for first in range(0, len(events), 500):
        batch = [*events[first : first + 500], *facts]
        plan = plan_batch(stored, batch, directory, rules, now_ms)
        stored.update(plan.records)
        facts = plan.facts
        out.append(sorted((repr(k), sorted(v.items())) for k, v in plan.deltas.items()))
        out.append(sorted((repr(k), sorted(v.items())) for k, v in plan.changed_fields.items()))
        # What the commit of the batch sends: its keys and its argument.
        moves = {"events": (first - 1 if first else None, first + len(batch) - 1)}
        commit = Commit(0, moves, plan, stream_ms=plan.newest_ms, horizon_ms=35 * day_ms)
        keys, payload, marks, shards = commit_call(Keys("t:g1"), commit, now_ms)
        out.append([keys, orjson.loads(payload), marks, shards])
modules = (projections.engine.__file__, projections.commit_payload.__file__)
sys.stdout.buffer.write(orjson.dumps(modules) + b"\\n" + orjson.dumps(out))
"""


def test_compiled_and_python_modules_plan_a_log_and_its_commits_alike() -> None:
    build = compiled_build(PACKAGE, BUILDS)
    if build is None:
        pytest.skip("no compiled build of these sources (make compiled; needs a C compiler)")
    results = {}
    for compiled in ("1", "0"):
        done = subprocess.run(
            [sys.executable, "-c", PLAN_LOG],
            # One hash seed for both: a commit lists the keys of a plan's sets in their order.
            env={**os.environ, "SALESPULSE_COMPILED": compiled, "PYTHONHASHSEED": "0"},
            cwd=PACKAGE.parent,
            capture_output=True,
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        where, _, plans = done.stdout.partition(b"\n")
        for module in orjson.loads(where):
            assert module.endswith(".so" if compiled == "1" else ".py"), module
        results[compiled] = orjson.loads(plans)
    assert results["1"] == results["0"]
    assert sum(len(deltas) for deltas in results["0"][::3]) > 1_000  # a log, not nothing
    assert sum(len(payload["d"]) for _, payload, _, _ in results["0"][2::3]) > 1_000


def test_without_a_compiler_nothing_is_built_and_the_modules_run_as_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools import compile_planner

    monkeypatch.setattr(compile_planner.shutil, "which", lambda name: None)
    package, builds = _copy(tmp_path), tmp_path / "builds"
    said = compile_planner.build(package, builds)
    assert said.startswith("no C compiler (")
    assert said.endswith("the planner's modules run as Python")
    assert compiled_build(package, builds) is None


def test_an_up_to_date_build_is_taken_without_compiling_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools import compile_planner

    monkeypatch.delenv("SALESPULSE_COMPILED", raising=False)
    package, builds = _copy(tmp_path), tmp_path / "builds"
    current = builds / sources_digest(package)
    _fake_build(current)
    said = compile_planner.build(package, builds)
    assert said.startswith("compiled planner up to date")
    assert compiled_build(package, builds) == current
