"""The simulator's log made one minute at a time, for traffic that runs as long as a soak.

``simulate`` makes a whole log at once; cut into one-minute logs, it would end every
episode at its minute's end (calls that never end, leads never touched). ``LiveLog`` starts
episodes in the minute being made and makes their later events, duplicates and late events
in the minute the simulator sends them, with the simulator's own episodes, envelopes and
defects (benchmarks/soak.py runs it in a child process).
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson

from simulator.episodes import Draft, Ids
from simulator.log import INVALID_CLASSES, SimConfig, _corrupt, _episode, _finish
from simulator.org import build_org
from streams.producer import subject_key

# Shares of the simulated traffic, as in the fault suite (tests/faults/harness.py).
DUPLICATES, LATE, CALL_DISORDER, INVALID = 0.03, 0.03, 0.3, 0.01
CAMPAIGNS = 6  # the simulator's default


@dataclass(frozen=True)
class Job:
    start_ms: int  # this minute of event time
    end_ms: int
    send: int  # records to hand back, in send order
    horizon_ms: int  # the end of the run: what is due later is never made


@dataclass(frozen=True)
class Chunk:
    records: list[tuple[bytes | None, bytes]]  # (key, value)
    episodes: int  # started in this minute
    types: dict[str, int]  # valid events made in this minute, by type
    pending: int  # events of started episodes, not due yet
    carried: int  # records made, not sent yet (duplicates, late, a full minute's rest)
    dropped: int  # events and copies due after the end of the run: never made
    seconds: float


class LiveLog:
    """The simulator's log (simulator.log.simulate), made one minute at a time.

    ``simulate`` makes a whole log at once; cut into one-minute logs it would cut every
    episode at its minute's end (calls that never end, leads never touched). Here episodes
    start in the minute being made and their later events, duplicates and late events are
    made in the minute the simulator sends them, with the simulator's own episodes, envelopes
    and defects, and its shares: each event is late with ``LATE``, sent again with
    ``DUPLICATES`` and gives an invalid record with ``INVALID`` of all records, and the
    events of a call are sent in shuffled order with ``CALL_DISORDER``.
    """

    def __init__(self, seed: int, teams: int, reps: int, max_event_bytes: int) -> None:
        self.rng = random.Random(f"soak:{seed}")
        self.ids = Ids(self.rng)
        self.org = build_org(teams, reps, CAMPAIGNS)
        self.teams, self.reps, self.max_event_bytes = teams, reps, max_event_bytes
        self.drafts: list[tuple[int, int, Draft]] = []  # heap by send time
        self.records: list[tuple[int, int, bytes]] = []  # heap by send time
        self.seq = 0
        self.invalid = 0
        self.dropped = 0

    def _push(self, heap: list[Any], emit_ms: int, item: object, horizon_ms: int) -> None:
        if emit_ms > horizon_ms:
            self.dropped += 1
            return
        heapq.heappush(heap, (emit_ms, self.seq, item))
        self.seq += 1

    def _start(self, config: SimConfig, episodes: int, horizon_ms: int) -> None:
        rng = self.rng
        for _ in range(episodes):
            drafts = _episode(rng, self.ids, self.org, config)
            emits = [
                d["at"] + int(math.exp(rng.uniform(math.log(60_000), math.log(3 * 86_400_000))))
                if rng.random() < LATE
                else d["at"] + rng.randint(0, 2_000)
                for d in drafts
            ]
            calls: dict[str, list[int]] = {}
            for i, draft in enumerate(drafts):
                if draft["type"].startswith("call."):
                    calls.setdefault(draft["call_id"], []).append(i)
            for indexes in calls.values():
                if len(indexes) > 1 and rng.random() < CALL_DISORDER:
                    shuffled = [emits[i] for i in indexes]
                    rng.shuffle(shuffled)
                    for i, emit in zip(indexes, shuffled, strict=True):
                        emits[i] = emit
            for draft, emit in zip(drafts, emits, strict=True):
                self._push(self.drafts, emit, draft, horizon_ms)

    def minute(self, job: Job) -> Chunk:
        started = time.perf_counter()
        rng = self.rng
        config = SimConfig(
            seed=0,
            count=0,
            end_ms=job.end_ms,
            history_ms=job.end_ms - job.start_ms,
            teams=self.teams,
            reps_per_team=self.reps,
            campaigns=CAMPAIGNS,
        )
        valid = 1 - DUPLICATES - INVALID
        ready: list[tuple[int, int, bytes]] = []
        types: Counter[str] = Counter()
        episodes = 0
        while True:
            while self.drafts and self.drafts[0][0] <= job.end_ms:
                emit, _, draft = heapq.heappop(self.drafts)
                event = _finish(draft, rng, self.ids, config)
                body = _compact(orjson.dumps({k: v for k, v in event.items() if k != "_at"}))
                types[event["type"]] += 1
                ready.append((emit, self.seq, body))
                self.seq += 1
                if rng.random() < DUPLICATES / valid:
                    self._push(self.records, emit + rng.randint(1, 600_000), body, job.horizon_ms)
                if rng.random() < INVALID / valid:
                    reason = INVALID_CLASSES[self.invalid % len(INVALID_CLASSES)]
                    self.invalid += 1
                    bad = _compact(_corrupt(reason, event, rng, self.max_event_bytes))
                    ready.append((rng.randint(job.start_ms, job.end_ms), self.seq, bad))
                    self.seq += 1
            while self.records and self.records[0][0] <= job.end_ms:
                ready.append(heapq.heappop(self.records))
            if len(ready) >= job.send:
                break
            more = max(1, (job.send - len(ready)) // 3)  # an episode has ~2 events due at once
            self._start(config, more, job.horizon_ms)
            episodes += more
        ready.sort()
        for item in ready[job.send :]:  # due, but the minute is full: first in the next one
            heapq.heappush(self.records, item)
        return Chunk(
            [(subject_key(value), value) for _, _, value in ready[: job.send]],
            episodes,
            dict(sorted(types.items())),
            len(self.drafts),
            len(self.records),
            self.dropped,
            time.perf_counter() - started,
        )


def _compact(value: bytes) -> bytes:
    """A copy of exactly its size: orjson's bytes keep a buffer of 4 KiB and more, which
    makes 180,000 records take 700 MiB instead of 55."""
    return memoryview(value).tobytes()
