"""SqlCompanion on SQLite (a file) and PostgreSQL (a fresh database per test).

Round trips, associated-data binding, key-encryption keys and rotation, export, erasure, and
the leaves it logs, checked with the same audit ``msec verify`` runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, select, text, update

from msec.companion import (
    ERASURE_LEAF_KIND,
    RECORD_LEAF_KIND,
    CompanionError,
    DuplicateRecord,
    FileKeyWrapper,
    KeyRing,
    NewRecord,
    SqlCompanion,
    UnknownRecord,
    UnknownSubject,
    count_records,
    erased_subjects,
    erasure_leaf_data,
    iter_record_refs,
    leaf_data_for,
    leaf_sources,
    record_leaf_data,
)
from msec.companion.sql import records_table, subjects_table
from msec.tlog import NoteSigner, SqlLog, leaf_hash
from msec.tlog.audit import audit

ORIGIN = "example.com/companion"


@pytest.fixture
def kek_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "companion.key"


@pytest.fixture
def store(engine: Engine, kek_path: Path) -> SqlCompanion:
    store = SqlCompanion(engine, KeyRing(FileKeyWrapper(kek_path)))
    store.create_schema()
    return store


@pytest.fixture
def log(engine: Engine) -> SqlLog:
    log = SqlLog(engine)
    log.create_schema()
    return log


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A caller's transaction holding the write lock, as SqlLog.append requires."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


def stored_rows(engine: Engine) -> dict[str, dict[str, object]]:
    with engine.connect() as conn:
        return {row.record_id: dict(row._mapping) for row in conn.execute(select(records_table))}


def audit_ok(engine: Engine, log: SqlLog, signer: NoteSigner) -> dict[str, object]:
    """Sign a checkpoint and run the audit of ``msec verify``; it must find nothing wrong."""
    log.checkpoint(signer, ORIGIN)
    report = audit(engine, leaf_sources(), signer.verifier(), ORIGIN)
    assert report.ok, report.problems
    return report.as_dict()


def test_round_trip(store: SqlCompanion) -> None:
    first = store.put("maria.garcia", "bp-1", b'{"systolic": 121}', kind="reading")
    second = store.put(
        "maria.garcia", "photo-1", b"\x00\xff binary", kind="post", content_type="image/png"
    )
    assert first.subject_id == second.subject_id == store.subject("maria.garcia", create=False)
    assert len(first.subject_id) == 32 and first.leaf_index is None
    meta, plaintext = store.get("bp-1")
    assert plaintext == b'{"systolic": 121}'
    assert (meta.record_id, meta.kind, meta.content_type) == ("bp-1", "reading", "application/json")
    assert meta.created == first.created
    assert [(m.record_id, p) for m, p in store.records("maria.garcia")] == [
        ("bp-1", b'{"systolic": 121}'),
        ("photo-1", b"\x00\xff binary"),
    ]
    assert store.put("juan.perez", "a-1", b"", kind="account").subject_id != first.subject_id
    assert store.get("a-1")[1] == b""
    with pytest.raises(UnknownRecord, match="never stored"):
        store.get("nothing")
    with pytest.raises(UnknownSubject, match="no subject named 'nobody'"):
        store.subject("nobody", create=False)
    with pytest.raises(UnknownSubject):
        list(store.records("nobody"))


def test_plaintext_is_not_stored(store: SqlCompanion, engine: Engine) -> None:
    store.put("maria.garcia", "bp-1", b'{"diagnosis": "very private"}', kind="reading")
    with engine.connect() as conn:
        wrapped = conn.execute(select(subjects_table.c.wrapped_key)).scalar_one()
    (row,) = stored_rows(engine).values()
    assert b"very private" not in row["ciphertext"]
    assert len(row["nonce"]) == 12 and len(wrapped) == 12 + 32 + 16


def test_put_many_logs_one_leaf_per_record_in_order(
    store: SqlCompanion, log: SqlLog, engine: Engine
) -> None:
    store.put("someone.else", "first", b"{}", kind="reading", log=log)
    batch = [
        NewRecord("maria.garcia", f"m-{i}", json.dumps({"i": i}).encode(), "reading")
        for i in range(5)
    ] + [NewRecord("juan.perez", "j-0", b"{}", "account")]
    stored = store.put_many(batch, log=log)
    assert [s.record_id for s in stored] == [r.record_id for r in batch]
    assert [s.leaf_index for s in stored] == list(range(1, 7))
    rows = stored_rows(engine)
    for entry, record in zip(log.entries(1, 7), stored, strict=True):
        assert entry.kind == RECORD_LEAF_KIND
        assert entry.ref == f"{record.subject_id}/{record.record_id}"
        row = rows[record.record_id]
        assert entry.leaf_hash == leaf_hash(
            record_leaf_data(
                row["record_id"],
                row["subject_id"],
                row["kind"],
                row["content_type"],
                row["nonce"],
                row["ciphertext"],
                row["created"],
            )
        )
    with engine.connect() as conn:
        data = leaf_data_for(conn, RECORD_LEAF_KIND, [e.ref for e in log.entries(1, 7)])
    assert {ref: leaf_hash(value) for ref, value in data.items()} == {
        e.ref: e.leaf_hash for e in log.entries(1, 7)
    }
    assert audit_ok(engine, log, NoteSigner.generate(ORIGIN))["by_kind"] == {"record": 7}
    # Read back in one call, however many are asked for (here over a thousand).
    asked = [*(f"none-{i}" for i in range(1200)), *(r.record_id for r in batch), "first"]
    found = store.get_many(asked)
    assert sorted(found) == sorted([r.record_id for r in batch] + ["first"])
    assert {k: v[1] for k, v in found.items() if k.startswith("m-")} == {
        r.record_id: r.plaintext for r in batch if r.name == "maria.garcia"
    }


def test_duplicate_record_ids(store: SqlCompanion, log: SqlLog, engine: Engine) -> None:
    store.put("maria.garcia", "r-1", b"1", kind="reading", log=log)
    with pytest.raises(DuplicateRecord, match="'r-1' is already stored"):
        store.put_many(
            [
                NewRecord("maria.garcia", "r-2", b"2", "reading"),
                NewRecord("juan.perez", "r-1", b"1", "reading"),
            ],
            log=log,
        )
    with pytest.raises(DuplicateRecord, match="'r-3'"):
        store.put_many([NewRecord("a", "r-3", b"", "k"), NewRecord("a", "r-3", b"", "k")])
    assert set(stored_rows(engine)) == {"r-1"} and log.size() == 1
    with pytest.raises(UnknownSubject):  # the failed batch created no subject either
        store.subject("juan.perez", create=False)
    kept = store.put_many(
        [
            NewRecord("maria.garcia", "r-1", b"again", "reading"),
            NewRecord("maria.garcia", "r-2", b"2", "reading"),
            NewRecord("maria.garcia", "r-2", b"2 again", "reading"),
        ],
        log=log,
        skip_existing=True,
    )
    assert [(r.record_id, r.leaf_index) for r in kept] == [("r-2", 1)]
    assert store.get("r-1")[1] == b"1" and store.get("r-2")[1] == b"2"
    assert store.put_many([NewRecord("maria.garcia", "r-1", b"", "k")], skip_existing=True) == []


def test_malformed_input_is_refused(store: SqlCompanion) -> None:
    for name, record_id, kind in [
        ("", "r", "k"),
        ("n", "", "k"),
        ("n", "r", ""),
        ("n\x00", "r", "k"),
    ]:
        with pytest.raises(ValueError):
            store.put(name, record_id, b"", kind=kind)
    with pytest.raises(ValueError, match="bytes"):
        store.put("n", "r", "text", kind="k")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.erase("n", reason="a\x00b")


def test_caller_transaction_commits_or_rolls_back_with_the_leaf(
    store: SqlCompanion, log: SqlLog, engine: Engine
) -> None:
    with pytest.raises(RuntimeError), write_transaction(engine) as conn:
        store.put("maria.garcia", "r-1", b"x", kind="reading", log=log, conn=conn)
        raise RuntimeError("the caller's own write failed")
    assert stored_rows(engine) == {} and log.size() == 0
    with pytest.raises(UnknownSubject):
        store.subject("maria.garcia", create=False)
    with write_transaction(engine) as conn:
        subject_id = store.subject("maria.garcia", conn=conn)
        record = store.put("maria.garcia", "r-1", b"x", kind="reading", log=log, conn=conn)
    assert record.subject_id == subject_id and record.leaf_index == 0
    assert log.size() == 1 and store.get("r-1")[1] == b"x"


@pytest.mark.parametrize(
    "tamper",
    ["swap_ciphertexts", "move_to_other_subject", "relabel_kind", "relabel_content_type"],
)
def test_ciphertext_is_bound_to_its_record_and_subject(
    store: SqlCompanion, engine: Engine, tamper: str
) -> None:
    store.put("maria.garcia", "a", b'{"v": 1}', kind="reading")
    store.put("maria.garcia", "b", b'{"v": 2}', kind="reading")
    other = store.put("juan.perez", "c", b'{"v": 3}', kind="reading").subject_id
    rows = stored_rows(engine)
    r = records_table.c
    with engine.begin() as conn:
        if tamper == "swap_ciphertexts":
            for mine, theirs in (("a", "b"), ("b", "a")):
                conn.execute(
                    update(records_table)
                    .where(r.record_id == mine)
                    .values(nonce=rows[theirs]["nonce"], ciphertext=rows[theirs]["ciphertext"])
                )
        elif tamper == "move_to_other_subject":
            conn.execute(update(records_table).where(r.record_id == "a").values(subject_id=other))
        elif tamper == "relabel_kind":
            conn.execute(update(records_table).where(r.record_id == "a").values(kind="post"))
        else:
            conn.execute(
                update(records_table).where(r.record_id == "a").values(content_type="text/plain")
            )
    with pytest.raises(CompanionError, match="'a' fails authentication"):
        store.get("a")
    assert store.get("c")[1] == b'{"v": 3}'


def test_wrong_or_missing_kek_is_a_clear_error(
    store: SqlCompanion, engine: Engine, tmp_path: Path
) -> None:
    store.put("maria.garcia", "r-1", b"secret", kind="reading")
    stranger = SqlCompanion(engine, FileKeyWrapper(tmp_path / "other.key"))
    with pytest.raises(CompanionError, match="which is not loaded") as caught:
        stranger.get("r-1")
    assert "secret" not in str(caught.value)
    with pytest.raises(CompanionError, match="not loaded"):
        stranger.put("maria.garcia", "r-2", b"x", kind="reading")
    with engine.begin() as conn:
        wrapped = conn.execute(select(subjects_table.c.wrapped_key)).scalar_one()
        conn.execute(update(subjects_table).values(wrapped_key=wrapped[:-1] + b"\x00"))
    with pytest.raises(CompanionError, match="altered or moved"):
        store.get("r-1")


def test_rotation_rewraps_keys_without_touching_records(
    store: SqlCompanion, engine: Engine, kek_path: Path, tmp_path: Path
) -> None:
    for i in range(3):
        store.put(f"person-{i}", f"r-{i}", f"reading {i}".encode(), kind="reading")
    store.erase("person-2")
    before = stored_rows(engine)
    new_path = tmp_path / "keys" / "companion-2.key"
    new = FileKeyWrapper(new_path)
    assert store.rotate(new) == 2  # the erased subject has no key to re-wrap
    assert store.keyring.current is new
    assert stored_rows(engine) == before
    with engine.connect() as conn:
        kek_ids = conn.execute(
            select(subjects_table.c.kek_id).where(subjects_table.c.wrapped_key.is_not(None))
        ).scalars()
        assert set(kek_ids) == {new.key_id}
    kek_path.unlink()  # the old KEK is destroyed
    reopened = SqlCompanion(engine, FileKeyWrapper(new_path, create=False))
    assert [reopened.get(f"r-{i}")[1] for i in range(2)] == [b"reading 0", b"reading 1"]
    reopened.put("person-0", "r-9", b"after", kind="reading")
    assert reopened.rotate(new) == 0


def test_export_is_json(store: SqlCompanion) -> None:
    store.put("maria.garcia", "bp-1", b'{"systolic": 121, "unit": "mmHg"}', kind="reading")
    store.put("maria.garcia", "bad-json", b"{not json", kind="reading")
    store.put("maria.garcia", "photo", b"\x89PNG\x00", kind="post", content_type="image/png")
    store.put(
        "maria.garcia", "ld", b'{"@id": "x"}', kind="post", content_type="application/ld+json"
    )
    store.put("juan.perez", "other", b"{}", kind="account")
    doc = json.loads(json.dumps(store.export("maria.garcia")))
    assert doc["format"] == "msec.companion.export/1"
    assert doc["subject"] == "maria.garcia"
    assert doc["subject_id"] == store.subject("maria.garcia", create=False)
    assert doc["created"] <= doc["exported_at"]
    by_id = {r["record_id"]: r for r in doc["records"]}
    assert list(by_id) == ["bp-1", "bad-json", "photo", "ld"]
    assert by_id["bp-1"]["content"] == {"systolic": 121, "unit": "mmHg"}
    assert by_id["bp-1"]["kind"] == "reading" and by_id["bp-1"]["created"] > 0
    assert by_id["bad-json"]["content_base64"] == "e25vdCBqc29u"
    assert by_id["photo"] == {
        "record_id": "photo",
        "kind": "post",
        "content_type": "image/png",
        "created": by_id["photo"]["created"],
        "content_base64": "iVBORwA=",
    }
    assert by_id["ld"]["content"] == {"@id": "x"}
    with pytest.raises(UnknownSubject):
        store.export("nobody")


def test_erase_destroys_the_subject_and_logs_it(
    store: SqlCompanion, log: SqlLog, engine: Engine
) -> None:
    signer = NoteSigner.generate(ORIGIN)
    maria = store.put_many(
        [NewRecord("maria.garcia", f"m-{i}", b'{"bp": 120}', "reading") for i in range(3)],
        log=log,
    )
    juan = store.put("juan.perez", "j-1", b'{"post": "hola"}', kind="post", log=log)
    log.checkpoint(signer, ORIGIN)

    erasure = store.erase("maria.garcia", log=log, reason="request 2024-17")

    subject_id = maria[0].subject_id
    assert (erasure.subject_id, erasure.record_count, erasure.leaf_index) == (subject_id, 3, 4)
    assert erasure.scrubbed
    with pytest.raises(UnknownRecord, match=r"'m-0'.*erased"):
        store.get("m-0")
    with pytest.raises(UnknownSubject, match=r"'maria\.garcia' .*erased"):
        store.export("maria.garcia")
    with pytest.raises(UnknownSubject):
        store.erase("maria.garcia", log=log)
    assert store.get("j-1")[1] == b'{"post": "hola"}'
    assert store.live(["maria.garcia", "juan.perez", "nobody", "juan.perez"]) == {"juan.perez"}
    assert store.live([*(f"nobody-{i}" for i in range(2000)), "juan.perez"]) == {"juan.perez"}
    with engine.connect() as conn:
        tombstone = conn.execute(
            select(subjects_table).where(subjects_table.c.subject_id == subject_id)
        ).one()
        assert tombstone.name is None and tombstone.wrapped_key is None
        assert tombstone.erase_reason == "request 2024-17"
        assert erased_subjects(conn) == {subject_id: erasure.erased_at}
        assert count_records(conn) == 1
        assert list(iter_record_refs(conn)) == [f"{juan.subject_id}/j-1"]
        assert leaf_data_for(conn, ERASURE_LEAF_KIND, [subject_id, "nobody"]) == {
            subject_id: erasure_leaf_data(subject_id, erasure.erased_at, 3),
            "nobody": None,
        }
        assert leaf_data_for(conn, RECORD_LEAF_KIND, [f"{subject_id}/m-0", "junk"]) == {
            f"{subject_id}/m-0": None,
            "junk": None,
        }
    entries = log.entries(0, 10)
    assert [e.kind for e in entries] == ["record"] * 4 + ["erasure"]
    assert entries[4].ref == subject_id
    assert entries[4].leaf_hash == leaf_hash(erasure_leaf_data(subject_id, erasure.erased_at, 3))

    report = audit_ok(engine, log, signer)  # the checkpoint before erasure still verifies too
    assert report["erased"] == 3 and report["by_kind"] == {"record": 4, "erasure": 1}

    again = store.put("maria.garcia", "m-new", b"{}", kind="reading", log=log)
    assert again.subject_id != subject_id  # a new life: new pseudonym, new data key
    assert store.live(["maria.garcia"]) == {"maria.garcia"}
    audit_ok(engine, log, signer)


def test_audit_still_catches_a_record_deleted_without_erasure(
    store: SqlCompanion, log: SqlLog, engine: Engine
) -> None:
    maria = store.put("maria.garcia", "m-1", b"{}", kind="reading", log=log)
    juan = store.put("juan.perez", "j-1", b"{}", kind="reading", log=log)
    store.erase("maria.garcia")  # erased without logging it
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM companion_records WHERE record_id = 'j-1'"))
    signer = NoteSigner.generate(ORIGIN)
    log.checkpoint(signer, ORIGIN)
    report = audit(engine, leaf_sources(), signer.verifier(), ORIGIN)
    assert sorted((p.what, p.index or 0, p.ref) for p in report.problems) == [
        ("inserted", 0, maria.subject_id),  # an erasure with no leaf
        ("missing_record", 0, f"{maria.subject_id}/m-1"),  # no erasure leaf accounts for it
        ("missing_record", 1, f"{juan.subject_id}/j-1"),  # deleted behind the store's back
    ]


def test_concurrent_writers_of_one_new_subject_share_it(
    store: SqlCompanion, log: SqlLog, engine: Engine
) -> None:
    def put(i: int) -> str:
        return store.put("maria.garcia", f"r-{i}", b"{}", kind="reading", log=log).subject_id

    with ThreadPoolExecutor(8) as pool:
        subject_ids = set(pool.map(put, range(32)))
    assert subject_ids == {store.subject("maria.garcia", create=False)}
    assert len(list(store.records("maria.garcia"))) == 32
    audit_ok(engine, log, NoteSigner.generate(ORIGIN))
