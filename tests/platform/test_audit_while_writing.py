"""The audit beside a platform that keeps writing (the running platform's tamper check).

The audit reads the log in short read transactions: between them SQLite must be able to
reset its WAL (one snapshot held for the whole audit let the WAL grow by gigabytes at
10,000 homes), and whatever is appended or erased meanwhile must neither be reported as
tampering nor hide tampering.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from msec.ingest import Incoming
from msec.platform import Platform, Settings
from msec.sdk import Device
from msec.tlog.audit import AuditReport, audit

READINGS = 2000  # eight bundles of 256 leaves


def fill(platform: Platform, device: Device, count: int) -> None:
    batch = [
        Incoming(device.seal([("environment", "temperature", 10.0 + i % 20)]), None, "test")
        for i in range(count)
    ]
    assert all(outcome.ok for outcome in platform.ingestor.process(batch))


def audit_of(platform: Platform, on_chunk: object = None) -> AuditReport:
    trust = platform.trust
    return audit(
        trust.engine,
        trust.sources,
        trust.verifier,
        trust.origin,
        derived=trust.derived,
        progress=on_chunk,  # type: ignore[arg-type]
        bundles_per_read=1,
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


def test_tampering_is_still_named_while_the_log_grows(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    platform = Platform.open(Settings.load(None, data_dir=data_dir))
    try:
        device = platform.add_device("llamas-v", "environment_station")
        fill(platform, device, READINGS)
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
    finally:
        platform.close()


def test_a_log_that_shrinks_during_the_audit_is_a_rollback(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    platform = Platform.open(Settings.load(None, data_dir=data_dir))
    try:
        device = platform.add_device("llamas-v", "environment_station")
        fill(platform, device, READINGS)
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
    finally:
        platform.close()
