"""The audit beside a platform that keeps writing (the running platform's tamper check).

The audit reads the log in short read transactions: between them SQLite must be able to
reset its WAL (one snapshot held for the whole audit let the WAL grow by gigabytes at
10,000 homes), and whatever is appended or erased meanwhile must neither be reported as
tampering nor hide tampering.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from msec.ingest import Incoming
from msec.platform import Platform, Settings
from msec.sdk import Device
from msec.tlog.audit import AuditReport, Pace, audit

READINGS = 2000  # eight bundles of 256 leaves


def fill(platform: Platform, device: Device, count: int) -> None:
    batch = [
        Incoming(device.seal([("environment", "temperature", 10.0 + i % 20)]), None, "test")
        for i in range(count)
    ]
    assert all(outcome.ok for outcome in platform.ingestor.process(batch))


Filled = tuple[Platform, Device, Path]


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[Filled]:
    """A platform on SQLite with READINGS readings of one device."""
    data_dir = tmp_path / "data"
    platform = Platform.open(Settings.load(None, data_dir=data_dir))
    try:
        device = platform.add_device("llamas-v", "environment_station")
        fill(platform, device, READINGS)
        yield platform, device, data_dir
    finally:
        platform.close()


QUICK = Pace(most_bundles=1, gap_s=0.01)  # one bundle a read, hardly a pause


def audit_of(platform: Platform, on_chunk: object = None, pace: Pace = QUICK) -> AuditReport:
    trust = platform.trust
    return audit(
        trust.engine,
        trust.sources,
        trust.verifier,
        trust.origin,
        derived=trust.derived,
        progress=on_chunk,  # type: ignore[arg-type]
        pace=pace,
    )


def truncate_wal(data_dir: Path) -> tuple[int, int, int]:
    """``PRAGMA wal_checkpoint(TRUNCATE)`` from another connection: (busy, log, done)."""
    conn = sqlite3.connect(data_dir / "msec.db", timeout=5)
    try:
        busy, log, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return int(busy), int(log), int(done)
    finally:
        conn.close()


def test_the_log_growing_during_the_audit_is_checked_to_its_end(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    platform = Platform.open(Settings.load(None, data_dir=data_dir))
    try:
        device = platform.add_device("llamas-v", "environment_station")
        note = b'{"pulse": 61}'
        # Maria's record is checked before she is erased, Jose's after.
        platform.companion.put("maria", "r-1", note, kind="note", log=platform.trust.log)
        fill(platform, device, READINGS)
        platform.trust.checkpoint()
        platform.companion.put("jose", "r-2", note, kind="note", log=platform.trust.log)
        seen: list[tuple[int, int]] = []
        busy: list[int] = []

        def between_chunks(done: int, total: int) -> None:
            seen.append((done, total))
            if len(seen) <= 3:  # the log grows while it is read, and a person is erased
                fill(platform, device, 300)
            if len(seen) == 3:
                platform.companion.erase("maria", log=platform.trust.log)
                platform.companion.erase("jose", log=platform.trust.log)
            busy.append(truncate_wal(data_dir)[0])

        report = audit_of(platform, between_chunks)
        assert report.ok, report.as_dict()["problems"]
        assert len(seen) >= 8 and seen[-1][1] > seen[0][1]
        assert report.size == platform.trust.log.size() == READINGS + 1 + 2 + 900 + 2
        assert report.by_kind["reading"] == READINGS + 900
        assert report.erased == 1 and report.checkpoints >= 1  # Jose's record
        assert busy and not any(busy)  # no read transaction held between chunks
    finally:
        platform.close()


def test_tampering_is_still_named_while_the_log_grows(filled: Filled) -> None:
    platform, device, data_dir = filled
    platform.trust.checkpoint()
    conn = sqlite3.connect(data_dir / "msec.db", timeout=5)
    try:  # an early reading changed, a late one removed, a row added with no leaf
        conn.execute("UPDATE twin_readings SET value_num = 99.5 WHERE seq = 42")
        conn.execute(f"DELETE FROM twin_readings WHERE seq = {READINGS - 5}")
        conn.execute(
            "INSERT INTO twin_readings SELECT provider, 100000, service, resource, "
            "value_type, value_num, value_text, timestamp, stored_at, NULL "
            "FROM twin_readings WHERE seq = 3"
        )
        conn.commit()
    finally:
        conn.close()
    chunks: list[int] = []

    def between_chunks(done: int, total: int) -> None:
        chunks.append(done)
        if len(chunks) == 2:
            fill(platform, device, 500)

    report = audit_of(platform, between_chunks)
    named = {(p.what, p.ref) for p in report.problems}
    assert ("modified", "llamas-v/42") in named
    assert ("missing_record", f"llamas-v/{READINGS - 5}") in named
    assert ("inserted", "llamas-v/100000") in named
    assert ("root_mismatch", None) in named  # the signed checkpoint covers seq 42
    assert report.size == READINGS + 1 + 500
    kinds = {p.what for p in report.problems}
    assert kinds <= {"modified", "missing_record", "inserted", "root_mismatch", "tile"}, kinds


def test_a_log_that_shrinks_during_the_audit_is_a_rollback(filled: Filled) -> None:
    platform, _, data_dir = filled
    calls: list[int] = []

    def between_chunks(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 4:  # an old copy of the database put back mid-audit
            conn = sqlite3.connect(data_dir / "msec.db", timeout=5)
            try:
                conn.execute("UPDATE tlog_state SET size = 300")
                conn.commit()
            finally:
                conn.close()

    report = audit_of(platform, between_chunks)
    assert not report.ok
    assert [p.what for p in report.problems] == ["rollback"]
    assert report.size == 300


def test_an_audit_outrun_by_the_writers_still_ends(filled: Filled) -> None:
    platform, device, _ = filled
    calls: list[int] = []

    def between_chunks(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) <= 40:  # more leaves appended than one read checks
            fill(platform, device, 600)

    report = audit_of(platform, between_chunks)
    assert report.ok, report.as_dict()["problems"]
    # 8 reads to the start's end, 3 more no closer to the end, then the rest at once.
    assert len(calls) <= 12, len(calls)
    assert report.size == platform.trust.log.size() == READINGS + 1 + 600 * len(calls)


def wal_salt(data_dir: Path) -> bytes:
    """The WAL header's salts: SQLite changes them each time it starts the WAL over."""
    with open(data_dir / "msec.db-wal", "rb") as fh:
        return fh.read(32)[16:24]


def test_between_its_reads_sqlite_starts_its_wal_over(filled: Filled) -> None:
    platform, device, data_dir = filled
    started = threading.Event()
    stop = threading.Event()
    salts: set[bytes] = set()

    def write() -> None:  # the platform storing readings, checkpointing after each commit
        checkpointer = sqlite3.connect(data_dir / "msec.db", timeout=10)
        # Until the audit ends (or 6 s: on a loaded machine the audit's reads take longer,
        # and a WAL that nobody writes to never starts over).
        deadline = time.monotonic() + 6.0
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                fill(platform, device, 20)
                checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
                if started.is_set():  # the audit runs: note each start-over the writer sees
                    salts.add(wal_salt(data_dir))
                started.set()
                time.sleep(0.02)
        finally:
            checkpointer.close()

    writer = threading.Thread(target=write)
    writer.start()
    started.wait(10)
    try:
        report = audit_of(platform, lambda done, total: salts.add(wal_salt(data_dir)),
                          Pace(most_bundles=1, gap_s=0.2))  # fmt: skip
    finally:
        stop.set()
        writer.join()
    assert report.ok, report.as_dict()["problems"]
    # The WAL started over again and again while the audit ran: it did not grow.
    assert len(salts) >= 3, salts


def test_the_pace_adapts_its_reads_and_pauses_only_when_asked() -> None:
    pace = Pace(read_s=0.2, gap_s=0.5, most_bundles=40)
    assert pace.next_bundles(40, 1.0) == 20 and pace.next_bundles(1, 1.0) == 1
    assert pace.next_bundles(10, 0.05) == 20 and pace.next_bundles(40, 0.01) == 40
    assert pace.next_bundles(10, 0.15) == 10
    assert pace.pause_s(0.2, growing=False) == 0 and pace.pause_s(0.2, growing=True) == 0.5
    half = Pace(share=0.25, gap_s=0.1)
    assert half.pause_s(1.0, growing=False) == 3.0 and half.pause_s(0.01, growing=True) == 0.1
    for bad in ({"share": 0}, {"share": 1.5}, {"read_s": 0}, {"gap_s": -1}, {"most_bundles": 0}):
        try:
            Pace(**bad)  # type: ignore[arg-type]
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")
