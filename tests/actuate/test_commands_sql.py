"""The commands store, on SQLite and PostgreSQL (the ``engine`` fixture runs each test on both)."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from msec.actuate.command import Command
from msec.actuate.sql import ACKNOWLEDGED, FAILED, SENT, SqlCommands

NOW = 1_767_225_600.0


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def store(engine: Engine, clock: Clock) -> SqlCommands:
    commands = SqlCommands(engine, clock=clock)
    commands.create_schema()
    commands.create_schema()  # idempotent
    return commands


def command(seq: int, *, device: str = "plug-01", at: float = NOW, **more: object) -> Command:
    base = Command(
        device, "plug", "switch", {"on": True, "why": "ünïcode"}, seq, at, at + 30,
        Command.new_id(), "user:alice",
    )
    return replace(base, **more)  # type: ignore[arg-type]


def test_seq_strictly_increases_per_device(store: SqlCommands, clock: Clock) -> None:
    first = store.next_seq("plug-01")
    assert first == int(NOW * 1000)  # never below the clock in milliseconds
    assert [store.next_seq("plug-01") for _ in range(3)] == [first + 1, first + 2, first + 3]
    assert store.next_seq("plug-02") == first  # devices count on their own
    clock.t = NOW - 3600  # the clock going back never makes a number go back
    assert store.next_seq("plug-01") == first + 4
    clock.t = NOW + 10
    assert store.next_seq("plug-01") == int((NOW + 10) * 1000)


def test_seq_survives_a_new_store(engine: Engine, store: SqlCommands, clock: Clock) -> None:
    clock.t = 1.0  # a tiny floor, so only the stored counter matters
    a = store.next_seq("plug-01")
    b = SqlCommands(engine, clock=clock).next_seq("plug-01")
    assert b == a + 1


def test_concurrent_allocations_never_repeat(store: SqlCommands, clock: Clock) -> None:
    clock.t = 1.0
    got: list[int] = []
    lock = threading.Lock()

    def allocate() -> None:
        for _ in range(10):
            seq = store.next_seq("plug-01")
            with lock:
                got.append(seq)

    threads = [threading.Thread(target=allocate) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 60
    assert len(set(got)) == 60
    assert max(got) == min(got) + 59


def test_record_get_and_recent(store: SqlCommands) -> None:
    older, newer = command(1), command(2, at=NOW + 5, args=None)
    other = command(1, device="plug-02")
    for c in (older, newer, other):
        store.record(c)
    got = store.get(older.id)
    assert got is not None
    assert (got.device, got.service, got.resource, got.seq) == ("plug-01", "plug", "switch", 1)
    assert got.args == {"on": True, "why": "ünïcode"}
    assert (got.principal_id, got.issued_at, got.expires_at) == ("user:alice", NOW, NOW + 30)
    assert (got.status, got.acked_at, got.detail) == (SENT, None, None)
    assert [c.id for c in store.recent("plug-01")] == [newer.id, older.id]
    assert store.recent("plug-01", limit=1)[0].args is None
    assert [c.id for c in store.recent("plug-02")] == [other.id]
    assert store.recent("nobody") == []
    assert store.get("f" * 32) is None


def test_ids_and_device_seqs_are_unique(store: SqlCommands) -> None:
    first = command(1)
    store.record(first)
    with pytest.raises(IntegrityError):
        store.record(replace(first, seq=2))  # same id
    with pytest.raises(IntegrityError):
        store.record(command(1))  # same device and seq


def test_acknowledge_settles_once(store: SqlCommands, clock: Clock) -> None:
    ok, bad = command(1), command(2)
    store.record(ok)
    store.record(bad)
    clock.t = NOW + 2
    done = store.acknowledge(ok.id, True, "device reported plug/switch")
    assert done is not None
    assert (done.status, done.acked_at, done.detail) == (
        ACKNOWLEDGED, NOW + 2, "device reported plug/switch",
    )
    failed = store.acknowledge(bad.id, False, "x" * 1000)
    assert failed is not None and failed.status == FAILED and len(failed.detail or "") == 500
    # Settled is settled: a late answer changes nothing.
    again = store.acknowledge(ok.id, False, "late")
    assert again is not None and again.status == ACKNOWLEDGED and again.detail != "late"
    assert store.acknowledge("0" * 32, True) is None


def test_a_failed_send_can_be_recorded_as_such(store: SqlCommands) -> None:
    c = command(1)
    store.record(c, status=FAILED, detail="broker down")
    got = store.get(c.id)
    assert got is not None and (got.status, got.detail) == (FAILED, "broker down")
