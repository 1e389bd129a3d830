"""Up-front checks: what they answer, without a server (the integration tests use real ones)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError

from config.settings import Settings
from streams import cli, preflight, watch
from streams.preflight import (
    KafkaUnreachable,
    PreflightError,
    RedisUnreachable,
    TopicMissing,
    redacted,
    require_redis,
    require_topics,
)

pytestmark = pytest.mark.unit

KAFKA = Settings(kafka_bootstrap="k:9092")


def fake_kafka(monkeypatch: pytest.MonkeyPatch, topics: list[str] | Exception) -> None:
    async def list_topics(settings: Settings, timeout_ms: int) -> list[str]:
        logging.getLogger("aiokafka").error('Unable connect to "%s"', settings.bootstrap)
        if isinstance(topics, Exception):
            raise topics
        return topics

    monkeypatch.setattr(preflight, "list_topics", list_topics)


async def test_a_missing_topic_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_kafka(monkeypatch, ["p.events"])
    await require_topics(KAFKA, ["p.events"])
    with pytest.raises(TopicMissing, match=r"^topic p\.events\.raw does not exist: .*topics"):
        await require_topics(KAFKA, ["p.events", "p.events.raw"])


async def test_kafka_that_does_not_answer_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_kafka(monkeypatch, KafkaConnectionError("Unable to bootstrap"))
    with pytest.raises(KafkaUnreachable, match="SALESPULSE_KAFKA_BOOTSTRAP") as caught:
        await require_topics(KAFKA, ["p.events.raw"])
    assert caught.value.bootstrap == "k:9092"
    assert "k:9092" in str(caught.value)
    assert not [r for r in caplog.records if r.name == "aiokafka"]  # the check says it once
    logging.getLogger("aiokafka").error("after the check")
    assert [r.message for r in caplog.records if r.name == "aiokafka"] == ["after the check"]


async def test_a_redis_url_that_cannot_be_used_names_the_setting() -> None:
    with pytest.raises(RedisUnreachable, match="SALESPULSE_REDIS_URL"):
        await require_redis(Settings(redis_url="http://127.0.0.1:6379/0"))


def test_a_redis_password_is_not_shown() -> None:
    assert redacted("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redacted("rediss://user:s3cret@host/1") == "rediss://user:***@host/1"
    assert redacted("redis://host:6379/0") == "redis://host:6379/0"
    assert "s3cret" not in str(RedisUnreachable("redis://:s3cret@host:6379/0", "refused"))


def test_watch_once_without_a_worker_says_to_start_one(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(url: str, timeout: float = 2.0) -> watch.Snapshot:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(watch, "scrape", refused)
    with pytest.raises(PreflightError, match=r"salespulse worker.*SALESPULSE_WORKER_METRICS_PORT"):
        watch.watch(Settings(worker_metrics_port=1), interval=1.0, once=True)


def test_a_failed_check_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def produce(settings: Settings, args: object) -> int:
        raise TopicMissing("p.events.raw")

    monkeypatch.setitem(cli.HANDLERS, "produce", produce)
    with pytest.raises(SystemExit) as exited:
        cli.main(["produce", str(tmp_path / "log.jsonl")])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"salespulse: error: {TopicMissing('p.events.raw')}\n"
