"""Erasure as seen on disk: the SQLite files and a backup of the key file taken afterwards.

The database files are read as bytes, as an attacker with a copy of them would. Connections
start with ``secure_delete`` OFF (the SQLite default, though some distributions compile it
ON), so these tests prove that the store turns it on itself: without it, page splits during
ordinary inserts leave stale copies of wrapped keys behind.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, event, select

from msec.companion import (
    CompanionError,
    FileKeyWrapper,
    NewRecord,
    SqlCompanion,
    data_key_aad,
    leaf_sources,
    record_aad,
)
from msec.companion.sql import records_table, subjects_table
from msec.tlog import NoteSigner, SqlLog
from msec.tlog.audit import audit
from msec.twin import make_engine

SECRET = b"blood glucose 7.9 mmol/L, insulin missed"
NAME = "maria.garcia"
WRAPPED_SIZE = 12 + 32 + 16


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "db" / "msec.db"


@pytest.fixture
def sqlite_engine(db_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{db_path}")

    @event.listens_for(engine, "connect")
    def _insecure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA secure_delete=OFF")

    yield engine
    engine.dispose()


def database_bytes(db_path: Path) -> bytes:
    """Everything SQLite keeps on disk for the database: main file, WAL and shared memory."""
    return b"".join(
        path.read_bytes()
        for path in (db_path, db_path.with_name(db_path.name + "-wal"))
        if path.exists()
    )


def unwrappable(blob: bytes, kek: FileKeyWrapper, subject_id: str) -> Iterator[bytes]:
    """Yield every data key that any 60-byte window of ``blob`` unwraps to under ``kek``."""
    aad = data_key_aad(subject_id)
    for start in range(len(blob) - WRAPPED_SIZE + 1):
        window = blob[start : start + WRAPPED_SIZE]
        try:
            yield kek.unwrap(window, aad)
        except CompanionError:
            continue


def fill(engine: Engine, store: SqlCompanion, log: SqlLog) -> dict[str, Any]:
    """Store enough subjects to split B-tree pages, and Maria's records among them."""
    store.put_many(
        [NewRecord(f"citizen-{i:04d}", f"c-{i}", os.urandom(64), "post") for i in range(150)],
        log=log,
    )
    maria = store.put_many(
        [
            NewRecord(NAME, "m-1", b'{"note": "%s"}' % SECRET, "reading"),
            NewRecord(NAME, "m-2", SECRET * 300, "post", "text/plain"),  # overflow pages
        ],
        log=log,
    )
    store.put_many(
        [NewRecord(f"late-{i:04d}", f"l-{i}", os.urandom(64), "post") for i in range(150)],
        log=log,
    )
    with engine.connect() as conn:
        wrapped = conn.execute(
            select(subjects_table.c.wrapped_key).where(subjects_table.c.name == NAME)
        ).scalar_one()
        rows = conn.execute(
            select(records_table).where(records_table.c.subject_id == maria[0].subject_id)
        ).all()
    return {"subject_id": maria[0].subject_id, "wrapped": bytes(wrapped), "rows": rows}


def test_after_erasure_no_file_or_later_key_backup_recovers_anything(
    sqlite_engine: Engine, db_path: Path, tmp_path: Path
) -> None:
    kek_path = tmp_path / "keys" / "companion.key"
    store = SqlCompanion(sqlite_engine, FileKeyWrapper(kek_path))
    store.create_schema()
    log = SqlLog(sqlite_engine)
    log.create_schema()
    before = fill(sqlite_engine, store, log)
    subject_id = before["subject_id"]

    on_disk = database_bytes(db_path)
    assert SECRET not in on_disk  # encrypted at rest, before any erasure
    # The scan below finds the data key while its wrapped copy is still stored.
    data_keys = set(unwrappable(on_disk, FileKeyWrapper(kek_path), subject_id))
    assert len(data_keys) == 1

    erasure = store.erase(NAME, log=log)
    assert erasure.scrubbed and erasure.record_count == 2

    backup = tmp_path / "backup" / "companion.key"  # the key file, backed up after erasure
    backup.parent.mkdir()
    shutil.copy(kek_path, backup)
    on_disk = database_bytes(db_path)
    assert not db_path.with_name("msec.db-wal").exists() or (
        db_path.with_name("msec.db-wal").stat().st_size == 0
    )
    assert SECRET not in on_disk
    assert NAME.encode() not in on_disk
    assert before["wrapped"] not in on_disk
    for row in before["rows"]:
        ciphertext = bytes(row.ciphertext)
        assert all(
            ciphertext[i : i + 32] not in on_disk for i in range(0, len(ciphertext) - 32, 32)
        )
    assert list(unwrappable(on_disk, FileKeyWrapper(backup, create=False), subject_id)) == []

    # Ciphertexts captured before erasure stay sealed: the backed-up KEK is not the data key,
    # and (above) no stored bytes unwrap to it any more.
    kek = backup.read_bytes()
    for row in before["rows"]:
        aad = record_aad(row.record_id, row.subject_id, row.kind, row.content_type)
        with pytest.raises(InvalidTag):
            AESGCM(kek).decrypt(bytes(row.nonce), bytes(row.ciphertext), aad)
        # Only the destroyed data key opens them: proof that the capture was real.
        (data_key,) = data_keys
        AESGCM(data_key).decrypt(bytes(row.nonce), bytes(row.ciphertext), aad)

    signer = NoteSigner.generate("example.com/companion")
    log.checkpoint(signer, signer.name)
    report = audit(sqlite_engine, leaf_sources(), signer.verifier(), signer.name)
    assert report.ok, report.problems
    assert report.erased == 2


def test_rotation_scrubs_keys_wrapped_under_the_old_kek(
    sqlite_engine: Engine, db_path: Path, tmp_path: Path
) -> None:
    old_path = tmp_path / "keys" / "old.key"
    store = SqlCompanion(sqlite_engine, FileKeyWrapper(old_path))
    store.create_schema()
    log = SqlLog(sqlite_engine)
    log.create_schema()
    before = fill(sqlite_engine, store, log)
    assert store.rotate(FileKeyWrapper(tmp_path / "keys" / "new.key")) == 301
    on_disk = database_bytes(db_path)
    assert before["wrapped"] not in on_disk
    # A stolen copy of the old key file opens nothing stored after rotation.
    assert list(unwrappable(on_disk, FileKeyWrapper(old_path), before["subject_id"])) == []
    assert store.get("m-1")[1] == b'{"note": "%s"}' % SECRET
