"""The CLI as a user runs it: bad arguments get one line and a non-zero exit."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streams.producer import read_jsonl, subject_key

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["simulate", "--invalid", "2"], "not a share between 0 and 1"),
        (["simulate", "--count", "-5"], "must be greater than 0"),
        (["simulate", "--count", "ten"], "is not a number"),
        (["simulate", "--history", "3w"], "is not a duration"),
        (["simulate", "--end", "2026-11-22T10:00:00"], "has no UTC offset"),
        (["simulate", "--duration", "10"], "--duration needs --rate"),
        (["simulate", "--count", "5", "--duration", "3"], "not allowed with argument"),
        (["stack", "sideways"], "invalid choice"),
        (["produce", "/no/such/file.jsonl"], "no such file"),
        (["frobnicate"], "invalid choice"),
        (["rebuild", "--processes", "0"], "must be greater than 0"),
        (
            ["kpis", "--window", "1h", "--as-of", "2026-01-01T00:00:00Z"],
            "--as-of: the 1h window as of that instant is no longer kept",
        ),
        (
            ["kpis", "--window", "today", "--as-of", "2026-01-01T00:00:00Z"],
            "--as-of: the today window as of that instant is no longer kept",
        ),
        ([], "required"),
    ],
)
def test_bad_arguments_get_one_line(args: list[str], says: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("salespulse: error:") and says in lines[0]


def test_bad_setting_gets_one_line() -> None:
    done = run("topics", env={"SALESPULSE_PARTITIONS": "many"})
    assert done.returncode == 2
    assert (
        done.stderr.strip() == "salespulse: error: SALESPULSE_PARTITIONS='many' is not a valid int"
    )


def test_simulate_to_a_file_writes_the_log_and_the_tally(tmp_path: Path) -> None:
    out, tally_path = tmp_path / "log.jsonl", tmp_path / "tally.json"
    done = run(
        "simulate",
        "--count",
        "2000",
        "--seed",
        "9",
        "--invalid",
        "0.1",
        "--duplicates",
        "0.05",
        "--end",
        "2026-11-20T12:00:00Z",
        "--out",
        str(out),
        "--tally",
        str(tally_path),
    )
    assert done.returncode == 0, done.stderr
    lines = list(read_jsonl(out))
    tally = json.loads(tally_path.read_text())
    assert len(lines) == tally["records"] == 2000
    assert sum(tally["invalid"].values()) == 200
    assert sum(tally["duplicates"].values()) == 100
    again = tmp_path / "again.jsonl"
    run(
        "simulate",
        "--count",
        "2000",
        "--seed",
        "9",
        "--invalid",
        "0.1",
        "--duplicates",
        "0.05",
        "--end",
        "2026-11-20T12:00:00Z",
        "--out",
        str(again),
    )
    assert again.read_bytes() == out.read_bytes()


def test_subject_key_is_the_entity_id() -> None:
    assert subject_key(b'{"type":"call.ended","call_id":"c-9"}') == b"c-9"
    assert subject_key(b'{"type":"rep.upserted","rep_id":"r","team_id":"t"}') == b"r"
    assert subject_key(b'{"type":"nope","call_id":"c"}') is None
    assert subject_key(b"\xff garbage") is None
    assert subject_key(b"[1]") is None


EXPORT = ROOT / "tests" / "data" / "exports" / "hubspot-crm-exports-all-deals-2024-04-01.csv"
HUBSPOT_MAPPING = ROOT / "deploy" / "csv" / "hubspot-deals.toml"
BACKFILL = ["backfill", "csv", str(EXPORT), "--mapping", str(HUBSPOT_MAPPING)]
SUMMARY = re.compile(
    r"backfill hubspot-crm-exports-all-deals-2024-04-01\.csv: 14 rows in [0-9.]+s"
    r"( \([0-9,.]+ rows/s\))?"
)


def test_a_backfill_logs_one_final_line_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    """A short backfill with stderr to a pipe: no carriage returns, only the summary."""
    done = run(*BACKFILL, "--zone", "America/New_York", "--out", str(tmp_path / "out.jsonl"))
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert " INFO streams.progress_display: " in lines[0] and SUMMARY.search(lines[0]), lines
    assert "events opportunity.created: 13" in done.stdout


def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    """SALESPULSE_LOG_FORMAT=json: every log line is a JSON object with time, level, logger,
    process and message (python-json-logger); the report on stdout is unchanged."""
    out = str(tmp_path / "out.jsonl")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            *BACKFILL,
            "--zone",
            "America/New_York",
            "--out",
            out,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "SALESPULSE_LOG_FORMAT": "json"},
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.splitlines()
    record = json.loads(line)
    assert set(record) >= {"time", "level", "name", "process", "message"}
    assert (record["level"], record["name"]) == ("INFO", "streams.progress_display")
    assert SUMMARY.search(record["message"]), record
    assert "events opportunity.created: 13" in done.stdout


def test_a_backfill_logs_a_progress_line_every_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The same, with the log interval at 0: a line per row (rows, rate, share of the file's
    bytes, time left) and the summary."""
    from streams import cli, progress_display

    monkeypatch.setattr(progress_display, "LOG_EVERY_SECONDS", 0.0)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal, even under pytest -s
    caplog.set_level(logging.INFO)
    with pytest.raises(SystemExit) as exited:
        cli.main([*BACKFILL, "--zone", "America/New_York", "--out", str(tmp_path / "o.jsonl")])
    assert exited.value.code == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "streams.progress_display"]
    assert len(lines) == 14 + 1, lines
    first = "backfill hubspot-crm-exports-all-deals-2024-04-01.csv: 1 rows, "
    assert lines[0].startswith(first) and "%, ETA " in lines[0], lines[0]
    assert lines[13].startswith(first.replace(" 1 rows", " 14 rows"))
    assert ", 100%, ETA 0.0s" in lines[13], lines[13]  # the whole file read
    assert SUMMARY.fullmatch(lines[14]), lines[14]


def test_a_backfill_redraws_one_line_on_a_terminal(tmp_path: Path) -> None:
    """stderr is a terminal (a pseudo-terminal here): the line is drawn with a carriage
    return and ends with the summary and a newline; nothing is logged."""
    import pty
    import termios

    controller, terminal = pty.openpty()
    termios.tcsetwinsize(terminal, (24, 160))
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *BACKFILL, "--out", str(tmp_path / "o.jsonl")],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=terminal,
        )
        os.close(terminal)
        assert process.wait(timeout=60) == 0
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    text = shown.decode()
    assert "INFO" not in text, text
    assert text.startswith("\r") and text.endswith("\r\n"), repr(text)  # the tty adds \r to \n
    assert SUMMARY.fullmatch(text.strip()), repr(text)


def test_every_error_a_user_can_fix_is_one_line_per_problem_with_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """One place (cli.main) turns every SalespulseError into its lines and exit code: a
    failed rebuild (it used to escape as a traceback), a file with problems (mappings,
    targets and CSV mappings say them the same way), a usage error."""
    from adapters.csv_mapping import CsvMappingError
    from projections.errors import SalespulseError
    from projections.targets import TargetsError
    from streams import cli
    from streams.rebuild import RebuildFailed

    def failing(error: Exception) -> object:
        def handler(settings: object, args: object) -> int:
            raise error

        return handler

    cases: list[tuple[SalespulseError, int]] = [
        (RebuildFailed("replay process 2 exited with 1"), 1),
        (TargetsError(["line 3: unknown kpi 'calls'", "line 9: no window"]).about("t.toml"), 2),
        (CsvMappingError(["[[event]] 1: no type"]).about(tmp_path / "m.toml"), 2),
    ]
    for error, code in cases:
        monkeypatch.setitem(cli.HANDLERS, "watch", failing(error))
        with pytest.raises(SystemExit) as exited:
            cli.main(["watch", "--once"])
        assert exited.value.code == code
        printed = capsys.readouterr().err.splitlines()
        assert printed == [f"salespulse: error: {line}" for line in error.lines()]
        assert "Traceback" not in "".join(printed)
    assert capsys.readouterr().err == ""
