from __future__ import annotations

import os
import subprocess
import sys

import pytest

from config.rate_limits import DEFAULT_LIMITS, Limit
from config.settings import Settings, SettingsError
from tests.support import ROOT

pytestmark = pytest.mark.unit


def test_defaults_point_at_the_local_stack() -> None:
    settings = Settings.from_env({})
    assert settings.bootstrap == "127.0.0.1:19092"
    assert settings.redis == "redis://127.0.0.1:16379/0"
    assert (settings.raw_topic, settings.events_topic, settings.dlq_topic) == (
        "salespulse.events.raw",
        "salespulse.events",
        "salespulse.events.dlq",
    )


def test_environment_overrides_and_prefix() -> None:
    settings = Settings.from_env(
        {
            "SALESPULSE_KAFKA_BOOTSTRAP": "broker:9092",
            "SALESPULSE_TOPIC_PREFIX": "acme",
            "SALESPULSE_MAX_EVENT_BYTES": "1024",
            "SALESPULSE_INGEST_BATCH_SECONDS": "0.5",
        }
    )
    assert settings.bootstrap == "broker:9092"
    assert settings.dlq_topic == "acme.events.dlq"
    assert settings.limits.max_event_bytes == 1024
    assert settings.ingest_batch_seconds == 0.5
    mapped = Settings.from_env({"SALESPULSE_QUEUE_TEAMS": "q-emea=emea, q-apac = apac"})
    assert mapped.rules.queue_teams == (("q-emea", "emea"), ("q-apac", "apac"))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SALESPULSE_PARTITIONS": "0"}, "at least 1"),
        ({"SALESPULSE_PARTITIONS": "x"}, "not a valid int"),
        ({"SALESPULSE_TOPIC_PREFIX": "a b"}, "letters, digits"),
        ({"SALESPULSE_MAX_EVENT_BYTES": "10"}, "at least 256"),
        ({"SALESPULSE_INGEST_BATCH_SECONDS": "soon"}, "not a valid float"),
        ({"SALESPULSE_INGEST_LINGER_SECONDS": "-0.1"}, "LINGER_SECONDS must be from 0 to 10"),
        ({"SALESPULSE_PROJECTION_LINGER_SECONDS": "nan"}, "LINGER_SECONDS must be from 0 to 10"),
        ({"SALESPULSE_LOG_LEVEL": "loud"}, "use debug, info"),
        ({"SALESPULSE_LOG_FORMAT": "xml"}, "SALESPULSE_LOG_FORMAT='xml': use text or json"),
        ({"SALESPULSE_QUEUE_TEAMS": "q1=emea,q2"}, "'q2' is not queue=team"),
        ({"SALESPULSE_EXPORT_REP_WINDOWS": "today,fortnight"}, "use windows of 15m"),
        ({"SALESPULSE_EXPORT_REP_WINDOWS": " , "}, "use windows of 15m"),
        ({"SALESPULSE_EXPORT_REP_KPIS": "activities,calls"}, "unknown KPI 'calls'"),
        ({"SALESPULSE_EXPORT_REP_HISTOGRAM_BUCKETS": "maybe"}, "not a valid bool"),
        (
            {"SALESPULSE_INGEST_RATE_LIMITS": "twilio=fast"},
            "SALESPULSE_INGEST_RATE_LIMITS: 'twilio=fast' is not source=rate/s:burst",
        ),
        ({"SALESPULSE_INGEST_RATE_LIMITS": "skype=1/s:1"}, "unknown source 'skype'"),
        ({"SALESPULSE_INGEST_RATE_LIMITS": "hubspot=0/s:5"}, "use hubspot=off"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_ingest_rate_limits_override_the_named_sources_only() -> None:
    settings = Settings.from_env({"SALESPULSE_INGEST_RATE_LIMITS": "hubspot=5/s:50,twilio=off"})
    assert settings.rate_limits["hubspot"] == Limit(5, 50)
    assert settings.rate_limits["twilio"] is None
    assert settings.rate_limits["aircall"] == DEFAULT_LIMITS["aircall"]
    assert Settings().rate_limits == DEFAULT_LIMITS
    assert set(
        Settings.from_env({"SALESPULSE_INGEST_RATE_LIMITS": "off"}).rate_limits.values()
    ) == {None}


def test_a_bad_rate_limit_stops_the_ingest_service_with_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "ingest"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "SALESPULSE_INGEST_RATE_LIMITS": "twilio=500/s"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "salespulse: error: SALESPULSE_INGEST_RATE_LIMITS: 'twilio=500/s' is not "
        "source=rate/s:burst (e.g. twilio=500/s:5000 or twilio=off)\n"
    )


def test_the_currency_is_an_iso_4217_code_of_the_table() -> None:
    assert Settings.from_env({}).currency == "USD"
    assert Settings.from_env({"SALESPULSE_CURRENCY": "JPY"}).currency == "JPY"
    assert Settings.from_env({"SALESPULSE_CURRENCY": "KWD"}).currency == "KWD"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("usd", "SALESPULSE_CURRENCY='usd' is not an ISO 4217 currency code: write it in capitals"),
        ("XYZ", "SALESPULSE_CURRENCY='XYZ' is not an ISO 4217 currency code (e.g. USD, EUR, JPY)"),
        ("US", "'US' is not an ISO 4217"),
        ("", "'' is not an ISO 4217"),
        ("USD ", "'USD ' is not an ISO 4217"),
        ("XAU", "'XAU' is not"),  # gold: a code of the standard, not money people are paid in
        ("€", "'€' is not"),
    ],
)
def test_an_unknown_currency_is_refused_in_one_line(code: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"SALESPULSE_CURRENCY": code})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_unknown_currency_stops_a_command_with_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "kpis"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "SALESPULSE_CURRENCY": "usd"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "salespulse: error: SALESPULSE_CURRENCY='usd' is not an ISO 4217 currency code: "
        "write it in capitals, 'USD'\n"
    )
