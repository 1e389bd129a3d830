"""The capacity model's arithmetic (benchmarks/capacity.py), each value worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.capacity import (
    Assumptions,
    Costs,
    brokers_needed,
    changes,
    cores,
    costs_from_json,
    exporters_needed,
    kafka_bytes,
    main,
    mean_rate,
    partitions_for,
    partitions_needed,
    peak_rate,
    redis_bytes,
    reps_for,
    scrape_seconds,
    size,
    units,
    workers_needed,
)

pytestmark = pytest.mark.unit

TIB = 2**40

# Round costs, so that every figure below can be checked with pencil and paper.
ROUND = Costs(
    projection_cpu_us_per_event=60,
    ingest_cpu_us_per_event=40,
    redis_cpu_us_per_event=50,
    kafka_cpu_us_per_event=20,
    redis_bytes_per_event=100,
    redis_growth_bytes_per_event=10,
    kafka_bytes_per_event=200,
    facts_bytes_per_event=20,
    scrape_read_ms_at_12=600,
    scrape_read_ms_per_partition=10,
    scrape_render_ms=100,
)


def test_rates_from_events_a_day() -> None:
    assert mean_rate(86_400_000) == 1_000  # 86.4 million a day: 1,000 a second
    assert peak_rate(86_400_000, 10) == 10_000
    assert cores(10_000, 92) == pytest.approx(0.92)  # 10,000/s x 92 us = 0.92 s a second


def test_units_round_up_with_headroom_and_never_go_below_one() -> None:
    assert units(0.92, 1.0, 2.0) == 2  # 1.84 cores of load
    assert units(0.5, 1.0, 2.0) == 1  # exactly one: not two
    assert units(0.1 + 0.2, 0.3) == 1  # 1.0000000000000002 is still one
    assert units(0.0, 1.0) == 1
    assert units(10.0, 4.0) == 3  # 2.5


def test_workers_a_core_each_at_least_two() -> None:
    assert workers_needed(0.01, Assumptions()) == 2  # one may fail
    assert workers_needed(10.65, Assumptions()) == 22  # 21.3 cores with 2x headroom
    assert workers_needed(10.65, Assumptions(headroom=1.0)) == 11


def test_partitions_double_from_twelve() -> None:
    assert partitions_for(4) == 12
    assert partitions_for(12) == 12
    assert partitions_for(13) == 24
    assert partitions_for(44) == 48
    assert partitions_for(360) == 384
    # 22 workers grow to 44; 8 masters need 8: 48. 3 workers (6), 30 masters: 48.
    assert partitions_needed(22, 8, Assumptions()) == 48
    assert partitions_needed(3, 30, Assumptions()) == 48


def test_redis_memory_keeps_120_days_whole_then_what_stays() -> None:
    costs = Costs(redis_bytes_per_event=268, redis_growth_bytes_per_event=20)
    # 1 million events a day x 30 days x 268 B: all of it still kept whole.
    assert redis_bytes(1_000_000, 30, costs, Assumptions()) == 8_040_000_000
    # 200 days: the last 120 whole (32,160 B per daily event), 80 days at 20 B (1,600).
    assert redis_bytes(1_000_000, 200, costs, Assumptions()) == 33_760_000_000


def test_kafka_bytes_by_topic_and_retention() -> None:
    costs = Costs(kafka_bytes_per_event=250, facts_bytes_per_event=30)
    # 1 million events a day, 3 copies: 3 million records' worth a day.
    month = kafka_bytes(1_000_000, 30, costs, Assumptions())
    assert month == {
        "events": 3_000_000 * 30 * 250,  # kept for ever: 30 days
        "lead-facts": 3_000_000 * 30 * 30,
        "raw": 3_000_000 * 7 * 250,  # only the last 7 days
        "dlq": 3_000_000 * 0.01 * 30 * 250,  # 1 % of them, 30 days
    }
    three_days = kafka_bytes(1_000_000, 3, costs, Assumptions())
    assert three_days["raw"] == 3_000_000 * 3 * 250
    assert three_days["dlq"] == pytest.approx(3_000_000 * 0.01 * 3 * 250)


def test_brokers_by_disk_cpu_and_replication() -> None:
    a = Assumptions()  # 4 TiB and 4 cores a broker, 2x headroom, at least 3
    assert brokers_needed(10 * TIB, 0.1, a) == 3  # 2.5 brokers of disk
    assert brokers_needed(13 * TIB, 0.1, a) == 4  # 3.25
    assert brokers_needed(0, 7.0, a) == 4  # 14 cores of load over 4 a broker: 3.5


def test_scrape_grows_with_reps_and_partitions() -> None:
    assert reps_for(1_000_000, Assumptions()) == 4_000  # 250 events a rep a day
    # The defaults give back RESULTS.md's 232 ms at 1,000 reps and 12 partitions.
    assert scrape_seconds(1_000, 12, Costs()) == pytest.approx(0.232)
    # 600 ms read at 12 partitions, 10 of them per partition: 480 fixed; at 48 partitions
    # 480 + 480 + 100 render = 1,060 ms per 1,000 reps; 4,000 reps: 4.24 s.
    assert scrape_seconds(4_000, 48, ROUND) == pytest.approx(4.24)
    assert exporters_needed(2.6, Assumptions()) == 2  # 5.2 s of a 5 s interval: 2 anyway
    assert exporters_needed(10.0, Assumptions()) == 4  # 20 s / 5 s


def test_defaults_add_the_two_loops_of_a_worker() -> None:
    assert Costs().worker_cpu_us_per_event == pytest.approx(92.0)  # RESULTS.md: 92 us
    assert ROUND.worker_cpu_us_per_event == 100


def test_one_size_by_hand() -> None:
    a = Assumptions(redis_shard_bytes=10e9, broker_disk_bytes=1e12)
    s = size(8_640_000, ROUND, a)  # mean 100/s, peak 1,000/s
    assert (s.mean, s.peak) == (pytest.approx(100), pytest.approx(1_000))
    assert s.worker_cores == pytest.approx(0.1)  # 1,000/s x 100 us
    assert s.workers == 2
    assert s.redis_cores == pytest.approx(0.05)
    assert s.redis_cpu_shards == 1
    assert s.redis_month == pytest.approx(25.92e9)  # 8.64 M x 30 x 100 B
    assert s.redis_shards_first_month == 3  # 2.592 masters of 10 GB
    # 360 days: 8.64 M x (120 x 100 + 240 x 10) = 124.416 GB: 12.4 masters.
    assert s.redis_horizon == pytest.approx(124.416e9)
    assert s.redis_shards_horizon == 13
    assert s.partitions == 24  # one per master: 13, rounded up to 24
    # Every copy, 360 days: events 25.92 M x 360 x 200 = 1,866.24 GB, lead facts 186.624 GB,
    # raw 7 days 36.288 GB, DLQ 1.5552 GB: 2,090.7072 GB, 3 brokers of 1 TB.
    assert s.kafka_horizon == pytest.approx(2_090.7072e9)
    assert s.brokers == 3
    assert s.reps == pytest.approx(34_560)
    # 34.56 thousand reps x (480 + 10 x 24 + 100) ms = 28.3392 s; 2x / 5 s: 12 exporters.
    assert s.scrape_s == pytest.approx(28.3392)
    assert s.exporters == 12
    # The first month: 155.52 + 15.552 + 36.288 + 1.5552 = 208.9152 GB of 3 TB.
    assert s.pressure == {
        "worker CPU": pytest.approx(0.2),
        "Redis CPU": pytest.approx(0.1),
        "Redis memory": pytest.approx(2.592),
        "Kafka storage": pytest.approx(0.0696384),
        "exporter scrape": pytest.approx(11.33568),
    }
    assert s.binds_first == "exporter scrape"


def test_what_would_have_to_change() -> None:
    small = size(10_000, ROUND, Assumptions())
    assert changes(small, ROUND, Assumptions()) == [
        "nothing: one of each, sized as above, carries it for the horizon"
    ]
    big = changes(size(1_000_000_000, Costs(), Assumptions()), Costs(), Assumptions())
    assert [line.split(":")[0] for line in big] == [
        "Redis memory",
        "one exporter cannot scrape every rep",
        "Redis CPU",
        "per-event Python",
        "the log is kept for ever",
    ]


SCALE_JSON = {
    "costs": {
        stack: {
            "worker_cpu_us_per_event": 70.0 + n,
            "redis_cpu_us_per_event": 40.0,
            "kafka_cpu_us_per_event": 9.0,
            "redis_bytes_per_event": 300.0,
            "redis_bytes_per_lead": 3_000.0,
            "events_per_lead": 10.0,
            "kafka_bytes_per_event": 260.0,
            "facts_bytes_per_event": 30.0,
            "source": f"benchmarks.scale, {stack} stack",
        }
        for n, stack in enumerate(("single", "cluster"))
    }
}


def test_measured_costs_replace_the_defaults() -> None:
    cluster = costs_from_json(SCALE_JSON, None)  # the cluster's, when the file has them
    assert cluster.projection_cpu_us_per_event == 71.0
    assert cluster.worker_cpu_us_per_event == pytest.approx(71.0 + 28.9)  # ingest: default
    assert cluster.source == "benchmarks.scale, cluster stack"
    assert costs_from_json(SCALE_JSON, "single").projection_cpu_us_per_event == 70.0
    only_single = {"costs": {"single": SCALE_JSON["costs"]["single"]}}
    assert costs_from_json(only_single, None).redis_bytes_per_event == 300.0
    with pytest.raises(KeyError):
        costs_from_json(only_single, "cluster")


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps(SCALE_JSON))
    main(["--costs", str(costs), "--stack", "single"])
    out = capsys.readouterr().out
    assert out.startswith("costs: benchmarks.scale, single stack; worker 98.9 us/event")
    assert "| binds first |" in out
    for argv, error in [
        (["--stack", "single"], "--stack needs --costs"),
        (["--costs", str(tmp_path / "none.json")], "No such file or directory"),
        (["--headroom", "0"], "must be positive, not 0"),
    ]:
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert error in err and err.count("\n") == 1, err
