"""The hostile-input scenario: hypothesis worlds of valid events with ids from all of Unicode
(every separator the engine uses, braces, newlines, maximal lengths), and one entity with
10,000 events, through the real worker.

Its verdict, beside the harness's usual one:

* ingest forwarded exactly the records the contract accepts (the events topic holds each
  once) and dead-lettered exactly the others, once each;
* every KPI of every scope the events name, in every window, equals the oracle over the
  events topic without the records dead-lettered as unprocessable;
* the distinct events in the projections equal the distinct events the oracle counts.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import orjson

from projections.events import RepUpserted, TeamUpserted
from projections.validation import Reason, Rejection, format_instant_ms, parse_event
from projections.windows import WINDOWS
from streams.ingest import HEADER_OFFSET, HEADER_PARTITION, HEADER_REASON, HEADER_TOPIC
from tests.faults.harness import REPORT, Row, Scenario, table
from tests.hostile import hostile_world, numbered, subjects
from tests.kafka_reader import read_topic
from tests.oracle import Oracle
from tests.support import differences, hypothesis_examples

ENTITY_EVENTS = 10_000
LEAD = "lead|{one}:e:%7C/\u2028" + "\U0001f600" * 20  # every separator, and long


class HostileScenario(Scenario):
    def __init__(
        self, name: str, stack_env: dict[str, str], folder: Path, *, worlds: int, seed: int
    ) -> None:
        # Ingest takes the whole entity in one batch (one transaction), so the projection
        # gets its 10,000 events in one batch too.
        extra = {"SALESPULSE_INGEST_BATCH_SIZE": "20000"}
        self.prepare(name, stack_env, folder, 1_000.0, extra)
        records = numbered(hypothesis_examples(hostile_world(self.end_ms), worlds))
        random.Random(seed).shuffle(records)
        valid = [r for r in records if not isinstance(self._parse(r), Rejection)]
        self.invalid = [r for r in records if isinstance(self._parse(r), Rejection)]
        # By the parsed type, not by the bytes: a hostile id may end in ".upserted", and an
        # email sent before its rep's upsert in the same batch would be credited elsewhere.
        self.directory = [
            r for r in valid if isinstance(self._parse(r), RepUpserted | TeamUpserted)
        ]
        first = set(self.directory)
        self.rest = [r for r in records if r not in first]
        self.entity = self._entity()
        self.valid = valid + self.entity
        self.events_in = len(records) + len(self.entity)

    def _parse(self, record: bytes) -> object:
        return parse_event(record, now_ms=self.end_ms)

    def _entity(self) -> list[bytes]:
        """One lead with ENTITY_EVENTS events: created, then responses and stage changes. No
        rep: its events count the same whenever the directory is learnt, so they can wait on
        the raw topic before the worker starts and reach it in one batch."""
        at = self.end_ms - 3_600_000

        def event(n: int, kind: str, **fields: object) -> bytes:
            moment = format_instant_ms(at + n * 300)
            body = {"event_id": f"big{n}", "type": kind, "occurred_at": moment, **fields}
            return orjson.dumps({**body, "schema_version": 1})

        out = [event(0, "lead.created", lead_id=LEAD, origin="sales", lead_source="|")]
        for n in range(1, ENTITY_EVENTS):
            if n % 2:
                sentiment = ("positive", "negative", "neutral")[n % 3]
                out.append(event(n, "lead.responded", lead_id=LEAD, sentiment=sentiment))
            else:
                out.append(event(n, "lead.stage_changed", lead_id=LEAD, stage=f"stage:{n % 5}|"))
        return out

    async def verify(self, poison: object = ()) -> Row:
        await self.wait_caught_up()
        s = self.settings
        events = await read_topic(s, s.events_topic, s.partitions, expect=len(self.valid))
        assert Counter(e.value for e in events) == Counter(self.valid), "forwarded != valid"
        dead = await read_topic(s, s.dlq_topic, s.partitions, expect=len(self.invalid))
        by_source = {
            (d.headers[HEADER_TOPIC], d.headers[HEADER_PARTITION], d.headers[HEADER_OFFSET]): d
            for d in dead
        }

        def dead_as(reason: Reason) -> set[tuple[int, int]]:
            return {
                (int(d.headers[HEADER_PARTITION]), int(d.headers[HEADER_OFFSET]))
                for d in by_source.values()
                if d.headers[HEADER_REASON] == reason.value.encode()
            }

        unprocessable, too_late = dead_as(Reason.UNPROCESSABLE), dead_as(Reason.TOO_LATE)
        rejected = [
            d.value for d in by_source.values() if d.headers[HEADER_TOPIC] == s.raw_topic.encode()
        ]
        # The events topic as the worker read it, partition by partition in offset order: the
        # oracle judges lateness (hostile times are decades apart) on that order itself.
        events.sort(key=lambda e: (e.partition, e.offset))
        log = self.folder / "forwarded.jsonl"
        log.write_bytes(b"".join(e.value + b"\n" for e in events))
        oracle = Oracle(
            log,
            partitions=s.partitions,
            left_out={e.value.decode() for e in events if (e.partition, e.offset) in unprocessable},
        )
        late = {(events[i].partition, events[i].offset) for i in oracle.late_at}
        assert too_late == late, "the events dead-lettered as too late != the oracle's"
        kept = [e.value for e in events if (e.partition, e.offset) not in unprocessable | too_late]
        store = await self.store()
        partitions = range(s.partitions)
        projected = sum(int(p.get("!applied", 0)) for p in await store.progress(partitions))
        view = await store.directory(partitions, s.rules)
        scopes = [("org", "")] + [
            (sc, i) for sc, ids in subjects(kept).items() for i in sorted(ids)
        ]
        examples, compared = await differences(
            store, partitions, view, oracle, scopes, WINDOWS, self.end_ms
        )
        drift = len(examples)
        row = Row(
            self.name,
            self.events_in,
            projected,
            oracle.distinct_events(),
            drift,
            compared,
            len(by_source),
            len(self.invalid) + len(unprocessable) + len(too_late),
            list(self.recoveries),
            copies=len(dead) - len(by_source),
        )
        REPORT.append(row)
        print(
            f"\n{table([row])}\n{len(unprocessable)} dead-lettered as unprocessable, "
            f"{len(too_late)} as too late"
        )
        assert not examples, f"{drift} figures drifted, e.g. {examples[:3]}"
        assert projected == row.expected, f"{projected} distinct events projected"
        assert row.copies == 0, f"{row.copies} dead letters were written twice"
        assert Counter(rejected) == Counter(self.invalid), "dead letters != invalid records"
        return row
