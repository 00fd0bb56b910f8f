"""``msec verify`` against tampering with the real database files (SQLite) and PostgreSQL.

Each test builds an installation with signed readings and security events, lets the log
sign checkpoints, tampers with storage the way an attacker with database access would, and
expects ``msec verify`` to exit 1 naming the leaf index or record that was touched.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from msec.cli.main import app
from msec.ingest import Incoming
from msec.platform import Platform, Settings
from msec.platform.trust import RollbackDetected
from msec.sdk import Device
from msec.tlog import leaf_hash
from msec.tlog.sql import decode_bundle

READINGS = 600
MARKER = "tamper-marker-0001"


def fill(platform: Platform, device: Device, start: int, count: int) -> None:
    batch = [
        Incoming(device.seal([("environment", "temperature", 10.0 + (i % 20))]), None, "test")
        for i in range(start, start + count)
    ]
    for outcome in platform.ingestor.process(batch):
        assert outcome.ok


def open_platform(data_dir: Path, url: str | None = None) -> Platform:
    overrides: dict[str, Any] = {"data_dir": data_dir}
    if url:
        overrides["database"] = {"url": url}
    return Platform.open(Settings.load(None, **overrides))


def build(data_dir: Path, url: str | None = None) -> None:
    """An installation with READINGS readings, one marked event and a signed checkpoint."""
    platform = open_platform(data_dir, url)
    try:
        device = platform.add_device("llamas-v", "environment_station")
        fill(platform, device, 0, READINGS // 2)
        platform.trust.checkpoint()
        platform.events.warn("access_denied", MARKER, source="test")
        fill(platform, device, READINGS // 2, READINGS // 2)
        platform.trust.checkpoint()
    finally:
        platform.close()


def verify(data_dir: Path, *args: str, url: str | None = None) -> tuple[int, dict[str, Any]]:
    env = {"MSEC_DATABASE__URL": url} if url else {}
    result = CliRunner().invoke(
        app, ["verify", "--data-dir", str(data_dir), "--json", *args], env=env
    )
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.exit_code, report


def problems(report: dict[str, Any], what: str) -> list[dict[str, Any]]:
    return [p for p in report["problems"] if p["what"] == what]


@pytest.fixture
def installation(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    build(data_dir)
    return data_dir


def sql(data_dir: Path, *statements: str) -> None:
    """Tamper with the SQLite file directly, outside msec."""
    conn = sqlite3.connect(data_dir / "msec.db")
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def reading_index(data_dir: Path, ref: str) -> int:
    conn = sqlite3.connect(data_dir / "msec.db")
    try:
        provider, seq = ref.split("/")
        query = "SELECT leaf FROM twin_readings WHERE provider = ? AND seq = ?"
        return conn.execute(query, (provider, int(seq))).fetchone()[0]
    finally:
        conn.close()


# ---- SQLite: the embedded default -------------------------------------------------------------
def test_an_untouched_installation_is_intact(installation: Path) -> None:
    code, report = verify(installation)
    assert code == 0, report
    assert report["ok"] and report["size"] == READINGS + 2  # and the device's registration
    assert report["by_kind"] == {"device": 1, "reading": READINGS, "event": 1}
    assert report["checkpoints"] == 2 and report["external"] == 1  # the witness file


def test_a_changed_value_is_named(installation: Path) -> None:
    sql(installation, "UPDATE twin_readings SET value_num = 99.5 WHERE seq = 42")
    code, report = verify(installation)
    assert code == 1
    [modified] = problems(report, "modified")
    assert modified["ref"] == "llamas-v/42"
    assert modified["index"] == reading_index(installation, "llamas-v/42")
    assert problems(report, "root_mismatch")


def test_changed_bytes_in_the_database_file_are_found(installation: Path) -> None:
    sql(installation)  # everything checkpointed into the main file
    path = installation / "msec.db"
    data = path.read_bytes()
    assert data.count(MARKER.encode()) == 1
    path.write_bytes(data.replace(MARKER.encode(), MARKER.replace("1", "2").encode()))
    code, report = verify(installation)
    assert code == 1
    [modified] = problems(report, "modified")
    assert modified["index"] == READINGS // 2 + 1  # the event logged between the two halves


def test_a_deleted_reading_is_named(installation: Path) -> None:
    index = reading_index(installation, "llamas-v/7")
    sql(installation, "DELETE FROM twin_readings WHERE seq = 7")
    code, report = verify(installation)
    assert code == 1
    [missing] = problems(report, "missing_record")
    assert (missing["index"], missing["ref"]) == (index, "llamas-v/7")


def test_an_inserted_reading_is_named(installation: Path) -> None:
    sql(
        installation,
        "INSERT INTO twin_readings SELECT provider, 100000, service, resource, value_type, "
        "value_num, value_text, timestamp, stored_at, NULL FROM twin_readings WHERE seq = 3",
    )
    code, report = verify(installation)
    assert code == 1
    [inserted] = problems(report, "inserted")
    assert inserted["ref"] == "llamas-v/100000"


def test_reordered_leaves_are_named(installation: Path) -> None:
    # Swap two entries of the stored bundle: each still names a stored record, but not in
    # the order whose leaf hashes the tiles and checkpoints hold.
    conn = sqlite3.connect(installation / "msec.db")
    try:
        [(data,)] = conn.execute("SELECT entries FROM tlog_bundles WHERE bundle = 0")
        items = decode_bundle(data)
        items[10], items[20] = items[20], items[10]
        blob = b"".join(cbor2.dumps(list(item)) for item in items)
        conn.execute("UPDATE tlog_bundles SET entries = ? WHERE bundle = 0", (blob,))
        conn.commit()
    finally:
        conn.close()
    code, report = verify(installation)
    assert code == 1
    assert {(p["index"], p["ref"]) for p in problems(report, "modified")} == {
        (10, "llamas-v/20"), (20, "llamas-v/10")
    }
    assert problems(report, "root_mismatch")


def test_rewritten_leaves_and_tiles_are_caught_by_the_signed_checkpoints(
    installation: Path,
) -> None:
    """An attacker who recomputes every leaf hash and tile still cannot forge a signature."""
    sql(installation, "UPDATE twin_readings SET value_num = 0.5 WHERE seq = 5")
    platform = open_platform(installation)
    try:
        log = platform.trust.log
        entries = [
            (e.leaf_hash, e.kind, e.ref)
            for start in range(0, log.size(), 1000)
            for e in log.entries(start, start + 1000)
        ]
        with platform.engine.connect() as conn:
            data = platform.twin.leaf_data(conn, ["llamas-v/5"])["llamas-v/5"]
        index = next(i for i, (_, _, ref) in enumerate(entries) if ref == "llamas-v/5")
        entries[index] = (leaf_hash(data), "reading", "llamas-v/5")
        # Rebuild the log's tables from the tampered rows, as a careful attacker would.
        with platform.engine.begin() as conn:
            for table in ("tlog_bundles", "tlog_tiles"):
                conn.execute(sa.text(f"DELETE FROM {table}"))
            conn.execute(sa.text("UPDATE tlog_state SET size = 0"))
        log.append(entries)
    finally:
        platform.close()
    code, report = verify(installation)
    assert code == 1
    assert not problems(report, "modified") and not problems(report, "tile")
    mismatches = problems(report, "root_mismatch")
    assert len(mismatches) == 3  # both stored checkpoints and the witness


def test_truncated_leaves_are_a_rollback(installation: Path) -> None:
    # Cut the log back to 512 leaves (two full bundles) with everything that referred to it.
    sql(
        installation,
        "DELETE FROM tlog_bundles WHERE bundle >= 2",
        "DELETE FROM tlog_tiles WHERE level = 0 AND tile >= 2",
        "DELETE FROM twin_readings WHERE leaf >= 512",
        "UPDATE tlog_state SET size = 512",
        "DELETE FROM tlog_checkpoints WHERE size > 512",
    )
    code, report = verify(installation)
    assert code == 1
    [rollback] = problems(report, "rollback")
    assert f"has {READINGS + 2} leaves" in rollback["detail"]


def add_events(data_dir: Path, count: int) -> None:
    platform = open_platform(data_dir)
    try:
        for n in range(count):
            platform.events.warn("access_denied", f"later {n}", source="test")
        platform.trust.checkpoint()
    finally:
        platform.close()


def restore(data_dir: Path, backup: Path) -> None:
    for suffix in ("-wal", "-shm"):
        (data_dir / f"msec.db{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, data_dir / "msec.db")


def test_a_database_rolled_back_to_an_old_copy_is_detected(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    build(data_dir)
    sql(data_dir)
    backup = tmp_path / "old.db"
    shutil.copy(data_dir / "msec.db", backup)
    add_events(data_dir, 5)
    assert verify(data_dir)[0] == 0
    restore(data_dir, backup)
    code, report = verify(data_dir)
    assert code == 1
    [rollback] = problems(report, "rollback")
    assert "witness" in rollback["detail"] and f"has {READINGS + 7} leaves" in rollback["detail"]
    # The platform itself refuses to sign over the rolled-back database.
    platform = open_platform(data_dir)
    try:
        with pytest.raises(RollbackDetected):
            platform.trust.checkpoint()
    finally:
        platform.close()


def test_an_independent_witness_file_is_checked_and_updated(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    build(data_dir)
    sql(data_dir)
    backup = tmp_path / "old.db"
    shutil.copy(data_dir / "msec.db", backup)
    add_events(data_dir, 3)
    mine = tmp_path / "my-witness"
    assert verify(data_dir, "--update-witness", str(mine))[0] == 0
    assert mine.read_text().startswith(f"msec.local/default\n{READINGS + 5}\n")
    # The attacker restores the old database and removes the witness kept beside it:
    restore(data_dir, backup)
    (data_dir / "witness" / "checkpoint").unlink()
    assert verify(data_dir)[0] == 0  # nothing left on this host gives it away...
    code, report = verify(data_dir, "--witness", str(mine))
    assert code == 1 and problems(report, "rollback")  # ...but the outside witness does


def test_a_forged_checkpoint_note_is_named(installation: Path) -> None:
    sql(installation,
        "UPDATE tlog_checkpoints SET note = replace(note, 'msec.local', 'msec.locaI')")
    code, report = verify(installation)
    assert code == 1
    assert len(problems(report, "checkpoint")) == 2


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_usage_and_io_errors_exit_2(tmp_path: Path, installation: Path, damage: str) -> None:
    if damage == "missing":
        code, _ = verify(tmp_path / "nowhere")
    else:
        (installation / "msec.db").write_bytes(b"not a database" * 100)
        for suffix in ("-wal", "-shm"):
            (installation / f"msec.db{suffix}").unlink(missing_ok=True)
        code, _ = verify(installation)
    assert code == 2


# ---- PostgreSQL ------------------------------------------------------------------------------
@pytest.fixture
def pg_installation(
    tmp_path: Path, pg_url: str
) -> Iterator[tuple[Path, str, Callable[[str], None]]]:
    data_dir = tmp_path / "data"
    build(data_dir, pg_url)
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))

    def run(statement: str) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text(statement))

    yield data_dir, pg_url, run
    engine.dispose()


def test_postgresql_tampering_is_named(pg_installation: tuple[Path, str, Any]) -> None:
    data_dir, url, run = pg_installation
    assert verify(data_dir, url=url)[0] == 0
    run("UPDATE twin_readings SET value_num = 1.25 WHERE seq = 11")
    run("DELETE FROM twin_readings WHERE seq = 12")
    run("UPDATE guard_events SET detail = 'nothing happened'")
    code, report = verify(data_dir, url=url)
    assert code == 1
    assert [p["ref"] for p in problems(report, "modified")] == ["llamas-v/11", "1"]
    assert [p["ref"] for p in problems(report, "missing_record")] == ["llamas-v/12"]


# ---- msec log ------------------------------------------------------------------------------------
def test_log_key_and_checkpoint_commands(installation: Path) -> None:
    from msec.tlog import NoteVerifier, open_checkpoint

    runner = CliRunner()
    key = runner.invoke(app, ["log", "key", "--data-dir", str(installation)])
    assert key.exit_code == 0, key.output
    vkey = key.stdout.strip()
    assert vkey.startswith("msec.local/default+") and vkey.count("+") >= 2
    note = runner.invoke(app, ["log", "checkpoint", "--data-dir", str(installation)])
    assert note.exit_code == 0, note.output
    checkpoint = open_checkpoint(note.stdout, [NoteVerifier.from_string(vkey)])
    assert checkpoint.size == READINGS + 2
    missing = runner.invoke(app, ["log", "key", "--data-dir", str(installation / "nope")])
    assert missing.exit_code == 2


def test_device_registrations_and_revocations_are_logged(installation: Path) -> None:
    platform = open_platform(installation)
    try:
        platform.add_device("llamas-w", "environment_station")
        assert platform.registry.revoke("llamas-w")
        assert platform.registry.revoke("llamas-w")  # again: no second leaf
        platform.trust.checkpoint()
        assert platform.trust.find("revocation", "llamas-w") == READINGS + 3
    finally:
        platform.close()
    code, report = verify(installation)
    assert code == 0, report
    assert report["by_kind"]["device"] == 2 and report["by_kind"]["revocation"] == 1
    # An attacker who swaps a device's public key, un-revokes one and registers another:
    conn = sqlite3.connect(installation / "msec.db")
    try:
        [(key,)] = conn.execute("SELECT verify_key FROM registry_devices WHERE name='llamas-w'")
        conn.execute("UPDATE registry_devices SET verify_key = ? WHERE name = 'llamas-v'", (key,))
        conn.execute("UPDATE registry_devices SET revoked = 0 WHERE name = 'llamas-w'")
        conn.execute(
            "INSERT INTO registry_devices (name, kind, tenant, alg, verify_key, revoked, "
            "description, created) SELECT 'rogue', kind, tenant, alg, verify_key, 0, '', created "
            "FROM registry_devices WHERE name = 'llamas-v'"
        )
        conn.commit()
    finally:
        conn.close()
    code, report = verify(installation)
    assert code == 1
    assert [p["ref"] for p in problems(report, "modified")] == ["llamas-v"]
    assert [p["ref"] for p in problems(report, "missing_record")] == ["llamas-w"]
    assert [p["ref"] for p in problems(report, "inserted")] == ["rogue"]


def test_a_changed_latest_value_or_health_is_named(installation: Path) -> None:
    """The API's latest values and health are derived from the history: checked too."""
    sql(
        installation,
        "UPDATE twin_resources SET value_num = 5.0 WHERE provider = 'llamas-v' "
        "AND resource = 'temperature'",
        "UPDATE twin_providers SET last_seen = last_seen + 3600 WHERE name = 'llamas-v'",
    )
    code, report = verify(installation)
    assert code == 1
    assert {(p["ref"], p["detail"][:20]) for p in problems(report, "derived")} == {
        ("llamas-v/environment/temperature", "its latest value dif"),
        ("llamas-v", "its last_seen is not"),
    }
