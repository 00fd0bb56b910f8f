"""SqlEventLog on SQLite (a temporary file) and on PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine

from msec.core.models import SecurityEvent
from msec.guard import MAX_DETAIL, EventLog, SqlEventLog
from msec.twin import make_engine


@pytest.fixture
def log(engine: Engine) -> SqlEventLog:
    log = SqlEventLog(engine)
    log.create_schema()
    log.create_schema()  # idempotent
    return log


def event(
    reason: str,
    device: str | None = "dev-1",
    *,
    timestamp: float = 0.0,
    extra: dict[str, str] | None = None,
    id: int | None = None,
) -> SecurityEvent:
    return SecurityEvent(
        reason=reason,
        detail=f"{reason} seen",
        source="ingest",
        device=device,
        timestamp=timestamp,
        extra=extra or {},
        id=id,
    )


def test_sql_event_log_is_an_event_log(log: SqlEventLog) -> None:
    checked: EventLog = log
    assert checked.counts() == {}


def test_record_sets_ids_and_timestamps(log: SqlEventLog) -> None:
    before = time.time()
    given = [
        event("replay"),
        event("bad_signature", timestamp=123.5, extra={"topic": "msec/t/dev-1/x/y"}),
        event("replay", device=None),
    ]

    stored = log.record(given)

    assert [e.reason for e in stored] == ["replay", "bad_signature", "replay"]
    ids = [e.id for e in stored]
    assert all(isinstance(i, int) for i in ids) and ids == sorted(ids) and len(set(ids)) == 3
    assert before <= stored[0].timestamp <= time.time()
    assert stored[1].timestamp == 123.5
    assert stored[1].extra == {"topic": "msec/t/dev-1/x/y"}
    assert log.query() == stored[::-1]  # newest first, exactly as returned
    assert log.record([]) == []


def test_caller_ids_are_ignored(log: SqlEventLog) -> None:
    first = log.record([event("replay", id=999)])[0]
    second = log.record([event("replay", id=1)])[0]
    assert first.id is not None and second.id is not None and second.id > first.id


def test_detail_is_truncated_and_made_storable(log: SqlEventLog) -> None:
    long = SecurityEvent(reason="malformed", detail="x" * 5000)
    odd = SecurityEvent(
        reason="malformed",
        detail="nul \x00 and lone \ud800",
        device="dev\x00",
        extra={"k\x00": "v\udcff"},
    )

    stored_long, stored_odd = log.record([long, odd])

    assert stored_long.detail == "x" * MAX_DETAIL
    assert stored_odd.detail == "nul \\x00 and lone \\ud800"
    assert stored_odd.device == "dev\\x00"
    assert stored_odd.extra == {"k\\x00": "v\\udcff"}
    assert log.query(reason="malformed") == [stored_odd, stored_long]


def test_query_filters_and_limit(log: SqlEventLog) -> None:
    log.record([event("replay", "a"), event("replay", "b"), event("schema", "a")])
    log.record([event("replay", "a")])

    assert [(e.reason, e.device) for e in log.query()] == [
        ("replay", "a"),
        ("schema", "a"),
        ("replay", "b"),
        ("replay", "a"),
    ]
    assert [e.device for e in log.query(reason="replay")] == ["a", "b", "a"]
    assert [e.reason for e in log.query(device="a")] == ["replay", "schema", "replay"]
    assert len(log.query(reason="replay", device="a")) == 2
    assert len(log.query(reason="replay", limit=1)) == 1
    assert log.query(limit=0) == []
    assert log.query(reason="nothing") == []
    assert log.query(device="nobody") == []


def test_counts_per_reason(log: SqlEventLog) -> None:
    log.record([event("replay"), event("replay"), event("schema")])
    log.record([event("out_of_range")])

    assert log.counts() == {"out_of_range": 1, "replay": 2, "schema": 1}


def test_survives_a_new_engine(log: SqlEventLog, engine: Engine) -> None:
    stored = log.record([event("unknown_device")])
    other = make_engine(engine.url.render_as_string(hide_password=False))
    try:
        assert SqlEventLog(other).query() == stored
    finally:
        other.dispose()
