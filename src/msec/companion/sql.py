"""The companion store on SQLAlchemy 2 Core: SQLite (WAL) or PostgreSQL, same behaviour.

Two tables:

* ``companion_subjects(subject_id, name, wrapped_key, kek_id, created, erased_at,
  erased_records, erase_reason)``: one row per subject. ``subject_id`` is a random 128-bit
  pseudonym (32 hex digits), the only identifier that reaches the transparency log; ``name``
  is the real name, for lookups. Erasure sets ``name`` and ``wrapped_key`` to NULL and keeps
  the row as a tombstone, so the log's erasure leaf can be checked.
* ``companion_records(record_id, subject_id, kind, content_type, nonce, ciphertext,
  created)``: AES-256-GCM ciphertexts under the subject's data key.

See README.md for what is guaranteed, in particular what erasure does and does not remove.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Row,
    String,
    Table,
    Text,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError

from msec.companion.base import (
    ERASURE_LEAF_KIND,
    RECORD_LEAF_KIND,
    Erasure,
    NewRecord,
    StoredRecord,
    data_key_aad,
    erasure_leaf_data,
    record_aad,
    record_leaf_data,
    record_ref,
)
from msec.companion.errors import (
    CompanionError,
    DuplicateRecord,
    UnknownRecord,
    UnknownSubject,
)
from msec.companion.keys import KEY_SIZE, KeyRing, KeyWrapper
from msec.tlog.merkle import leaf_hash

if TYPE_CHECKING:
    from msec.tlog.sql import SqlLog

__all__ = [
    "EXPORT_FORMAT",
    "RECORD_COLUMNS",
    "SqlCompanion",
    "records_table",
    "subjects_table",
]

EXPORT_FORMAT: Final = "msec.companion.export/1"
"""The ``format`` field of :meth:`SqlCompanion.export`'s document."""

_NONCE_SIZE: Final = 12
_CHUNK: Final = 500  # bound parameters per IN (...) lookup
_log = logging.getLogger(__name__)

metadata = MetaData()

subjects_table = Table(
    "companion_subjects",
    metadata,
    Column("subject_id", String(32), primary_key=True),
    Column("name", Text, unique=True, nullable=True),
    Column("wrapped_key", LargeBinary, nullable=True),
    Column("kek_id", Text, nullable=False),
    Column("created", Double, nullable=False),
    Column("erased_at", Double, nullable=True),
    Column("erased_records", Integer, nullable=True),
    Column("erase_reason", Text, nullable=True),
    Column("erasure_leaf", BigInteger, nullable=True),
)

records_table = Table(
    "companion_records",
    metadata,
    Column("record_id", Text, primary_key=True),
    Column("subject_id", String(32), ForeignKey("companion_subjects.subject_id"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("content_type", Text, nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created", Double, nullable=False),
    # The record's log leaf index (what a proof of it starts from); NULL without a log.
    Column("leaf", BigInteger, nullable=True),
    Index("ix_companion_records_subject", "subject_id", "created"),
)

RECORD_COLUMNS: Final = (
    "record_id",
    "subject_id",
    "kind",
    "content_type",
    "nonce",
    "ciphertext",
    "created",
)


def _check_text(what: str, value: object) -> None:
    if type(value) is not str or not value or "\x00" in value:
        raise ValueError(f"{what} must be a non-empty str without NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} must be valid Unicode (no lone surrogates)") from None


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _leaf_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != "leaf"}


class SqlCompanion:
    """Records of sensitive subjects, encrypted under per-subject data keys, and erasable.

    Build the engine with :func:`msec.twin.engine.make_engine` and call :meth:`create_schema`
    once. ``keyring`` (or a single :class:`~msec.companion.keys.KeyWrapper`) holds the
    key-encryption keys; it is needed to store and read records, not to verify the log
    (:mod:`msec.companion.verify` takes a connection and no key).

    Every write runs in one transaction: its own (on SQLite begun with ``BEGIN IMMEDIATE``),
    or, where a method takes ``conn=``, the caller's, so that a record, the caller's own rows
    and its log leaf commit or roll back together. A caller's SQLite transaction must hold
    the write lock already (``BEGIN IMMEDIATE``), as :meth:`SqlLog.append
    <msec.tlog.SqlLog.append>` requires. A ``log`` must live in the same database.

    On SQLite every write turns ``PRAGMA secure_delete`` on for its connection: without it,
    B-tree page splits during ordinary inserts leave stale copies of wrapped keys in free
    space, where erasure cannot find them. Database failures propagate as ``sqlalchemy.exc``
    errors and leave nothing of the call stored.
    """

    def __init__(self, engine: Engine, keyring: KeyRing | KeyWrapper) -> None:
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise CompanionError(f"SqlCompanion supports sqlite and postgresql, not {dialect!r}")
        self._engine = engine
        self._sqlite = dialect == "sqlite"
        self._keyring = keyring if isinstance(keyring, KeyRing) else KeyRing(keyring)

    @property
    def keyring(self) -> KeyRing:
        """The key-encryption keys in use."""
        return self._keyring

    # -- schema and transactions ------------------------------------------------------------

    def create_schema(self) -> None:
        """Create the ``companion_`` tables and index where missing. Idempotent."""
        metadata.create_all(self._engine)

    @contextmanager
    def _writing(self, conn: Connection | None) -> Iterator[Connection]:
        """Yield ``conn`` as is, or a new connection in a write transaction committed on exit."""
        if conn is not None:
            if self._sqlite:
                # A connection flag, allowed inside a transaction; see the class docstring.
                conn.exec_driver_sql("PRAGMA secure_delete=ON")
            yield conn
            return
        with self._engine.begin() as own:
            if self._sqlite:
                own.exec_driver_sql("PRAGMA secure_delete=ON")
                # Take the write lock now rather than upgrading a read snapshot later, which
                # fails at once if another process committed in between.
                own.exec_driver_sql("BEGIN IMMEDIATE")
            yield own

    def _scrub(self, tables: str) -> bool:
        """After a commit that removed secrets, push them out of the database files.

        SQLite: checkpoint the WAL into the main file and truncate it, so neither file holds
        the old pages (the committed pages were zeroed by ``secure_delete``). PostgreSQL:
        ``VACUUM`` ``tables`` so the dead tuples are pruned (PostgreSQL does not promise to
        overwrite their bytes, and the WAL keeps them: see README.md). Returns False, logging
        why, if it could not complete.
        """
        try:
            if self._sqlite:
                with self._engine.connect() as conn:
                    busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0]
                if busy:
                    _log.warning(
                        "companion: WAL checkpoint blocked by another connection; erased "
                        "bytes stay in the -wal file until the next full checkpoint"
                    )
                return not busy
            with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql(f"VACUUM {tables}")
            return True
        except DBAPIError as exc:
            _log.warning("companion: post-commit clean-up failed: %s", type(exc).__name__)
            return False

    # -- subjects and data keys -------------------------------------------------------------

    def subject(self, name: str, *, create: bool = True, conn: Connection | None = None) -> str:
        """Return the subject id of ``name``, creating the subject and its data key if new.

        :class:`UnknownSubject` when ``create`` is False and no live subject has that name.
        A name that was erased is unknown; with ``create`` it becomes a new subject with a
        new id and a new data key.
        """
        _check_text("a subject name", name)
        if not create:
            with self._engine.connect() as reader:
                subject_id = reader.execute(
                    select(subjects_table.c.subject_id).where(subjects_table.c.name == name)
                ).scalar()
            if subject_id is None:
                raise UnknownSubject(f"no subject named {name!r} (never stored, or erased)")
            return str(subject_id)
        with self._writing(conn) as writer:
            subject_id, _ = self._data_keys(writer, [name])[name]
        return subject_id

    def live(self, names: Iterable[str]) -> set[str]:
        """Those of ``names`` that have a live subject (never erased, or stored again since):
        one query per chunk of names, however many."""
        s = subjects_table.c
        wanted = sorted(set(names))
        found: set[str] = set()
        with self._engine.connect() as reader:
            for chunk in _chunks(wanted):
                found.update(reader.execute(select(s.name).where(s.name.in_(chunk))).scalars())
        return found

    def _data_keys(self, conn: Connection, names: Sequence[str]) -> dict[str, tuple[str, AESGCM]]:
        """Return ``{name: (subject_id, cipher under its data key)}``, creating missing subjects.

        Reads the subject rows ``FOR SHARE`` on PostgreSQL, so a concurrent :meth:`erase`
        waits for this transaction, or this one sees the erasure and makes a new subject.
        """
        wanted = sorted(set(names))
        found = self._subject_rows(conn, wanted)
        missing = [name for name in wanted if name not in found]
        if missing:
            dialect_insert = sqlite.insert if self._sqlite else postgresql.insert
            created = time.time()
            rows = []
            for name in missing:
                subject_id = os.urandom(16).hex()
                kek_id, wrapped = self._keyring.wrap(
                    AESGCM.generate_key(bit_length=8 * KEY_SIZE), data_key_aad(subject_id)
                )
                rows.append(
                    {
                        "subject_id": subject_id,
                        "name": name,
                        "wrapped_key": wrapped,
                        "kek_id": kek_id,
                        "created": created,
                    }
                )
            # A concurrent transaction may create the same name first: then use its key.
            conn.execute(
                dialect_insert(subjects_table).on_conflict_do_nothing(index_elements=["name"]),
                rows,
            )
            found.update(self._subject_rows(conn, missing))
        return {name: (row.subject_id, AESGCM(self._unwrap(row))) for name, row in found.items()}

    def _subject_rows(self, conn: Connection, names: Sequence[str]) -> dict[str, Row[Any]]:
        s = subjects_table.c
        rows: dict[str, Row[Any]] = {}
        for chunk in _chunks(names):
            query = (
                select(s.subject_id, s.name, s.wrapped_key, s.kek_id)
                .where(s.name.in_(chunk))
                .with_for_update(read=True)
            )
            rows.update((row.name, row) for row in conn.execute(query))
        return rows

    def _unwrap(self, row: Row[Any]) -> bytes:
        """Return the data key of the subject ``row`` (``subject_id``, ``wrapped_key``,
        ``kek_id``)."""
        if row.wrapped_key is None:
            raise CompanionError(f"subject {row.subject_id} is erased: its data key is gone")
        try:
            return self._keyring.unwrap(
                row.kek_id, bytes(row.wrapped_key), data_key_aad(row.subject_id)
            )
        except CompanionError as exc:
            raise CompanionError(f"subject {row.subject_id}: {exc}") from None

    # -- writing ----------------------------------------------------------------------------

    def put(
        self,
        name: str,
        record_id: str,
        plaintext: bytes,
        *,
        kind: str,
        content_type: str = "application/json",
        log: SqlLog | None = None,
        conn: Connection | None = None,
    ) -> StoredRecord:
        """Encrypt and store one record of subject ``name``; see :meth:`put_many`.

        :class:`DuplicateRecord` if ``record_id`` is already stored.
        """
        record = NewRecord(name, record_id, plaintext, kind, content_type)
        return self.put_many([record], log=log, conn=conn)[0]

    def put_many(
        self,
        records: Iterable[NewRecord],
        *,
        log: SqlLog | None = None,
        skip_existing: bool = False,
        conn: Connection | None = None,
    ) -> list[StoredRecord]:
        """Encrypt and store ``records`` in one transaction; return them in input order.

        Each record gets a fresh 96-bit nonce under its subject's data key (created with the
        subject on first use) and is bound to its id, subject, kind and content type. With
        ``log``, a ``"record"`` leaf per record (ref ``"<subject_id>/<record_id>"``, hash of
        :func:`~msec.companion.record_leaf_data` of the stored row) is appended in the same
        transaction, in input order.

        A record id already stored, or repeated in ``records``, raises
        :class:`DuplicateRecord` and stores nothing; with ``skip_existing`` it is skipped
        (the first occurrence wins) and left out of the result. If a concurrent writer
        stores the same id first, :class:`DuplicateRecord` is raised even with
        ``skip_existing``; on PostgreSQL that leaves a caller's transaction aborted.
        ``ValueError`` for empty or non-text ids, names, kinds or content types, or
        non-bytes plaintext.
        """
        items = list(records)
        for item in items:
            _check_text("a subject name", item.name)
            _check_text("a record id", item.record_id)
            _check_text("a record kind", item.kind)
            _check_text("a content type", item.content_type)
            if not isinstance(item.plaintext, bytes | bytearray | memoryview):
                raise ValueError("a record's plaintext must be bytes")
        if not items:
            return []
        with self._writing(conn) as writer:
            # The log's lock first, before any subject row: one lock order for every writer.
            first = None if log is None else log.lock(writer)
            seen = self._stored_ids(writer, [item.record_id for item in items])
            kept: list[NewRecord] = []
            for item in items:
                if item.record_id in seen:
                    if not skip_existing:
                        raise DuplicateRecord(f"record {item.record_id!r} is already stored")
                    continue
                seen.add(item.record_id)
                kept.append(item)
            if not kept:
                return []
            keys = self._data_keys(writer, [item.name for item in kept])
            created = time.time()
            rows = []
            for item in kept:
                subject_id, aead = keys[item.name]
                nonce = os.urandom(_NONCE_SIZE)
                aad = record_aad(item.record_id, subject_id, item.kind, item.content_type)
                rows.append(
                    {
                        "record_id": item.record_id,
                        "subject_id": subject_id,
                        "kind": item.kind,
                        "content_type": item.content_type,
                        "nonce": nonce,
                        "ciphertext": aead.encrypt(nonce, bytes(item.plaintext), aad),
                        "created": created,
                        "leaf": None if first is None else first + len(rows),
                    }
                )
            try:
                writer.execute(insert(records_table), rows)
            except IntegrityError:
                raise DuplicateRecord("a record id of this batch was stored concurrently") from None
            if log is not None:
                appended = log.append(
                    [
                        (
                            leaf_hash(record_leaf_data(**_leaf_fields(row))),
                            RECORD_LEAF_KIND,
                            record_ref(row["subject_id"], row["record_id"]),
                        )
                        for row in rows
                    ],
                    conn=writer,
                )
                if appended != first:
                    raise CompanionError("the log grew during this transaction")
        return [
            StoredRecord(
                row["record_id"],
                row["subject_id"],
                row["kind"],
                row["content_type"],
                created,
                None if first is None else first + i,
            )
            for i, row in enumerate(rows)
        ]

    def created_at(self, record_ids: Sequence[str]) -> dict[str, float]:
        """When each stored record of ``record_ids`` was stored (epoch s); others left out."""
        c = records_table.c
        found: dict[str, float] = {}
        with self._engine.connect() as conn:
            for chunk in _chunks(sorted(set(record_ids))):
                query = select(c.record_id, c.created).where(c.record_id.in_(chunk))
                found.update((record_id, float(at)) for record_id, at in conn.execute(query))
        return found

    def _stored_ids(self, conn: Connection, record_ids: Sequence[str]) -> set[str]:
        c = records_table.c
        found: set[str] = set()
        for chunk in _chunks(sorted(set(record_ids))):
            found.update(conn.execute(select(c.record_id).where(c.record_id.in_(chunk))).scalars())
        return found

    # -- reading ----------------------------------------------------------------------------

    def get(self, record_id: str) -> tuple[StoredRecord, bytes]:
        """Return the metadata and plaintext of record ``record_id``.

        :class:`UnknownRecord` if there is no such record (never stored, or its subject was
        erased); :class:`CompanionError` if the ciphertext or its metadata was altered, or
        the data key cannot be unwrapped (wrong or missing key-encryption key).
        """
        r, s = records_table.c, subjects_table.c
        query = (
            select(*[r[name] for name in RECORD_COLUMNS], s.wrapped_key, s.kek_id)
            .join_from(records_table, subjects_table, r.subject_id == s.subject_id)
            .where(r.record_id == record_id)
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise UnknownRecord(
                f"no record {record_id!r} (never stored, or its subject was erased)"
            )
        return self._meta(row), self._open(row, AESGCM(self._unwrap(row)))

    def get_many(self, record_ids: Sequence[str]) -> dict[str, tuple[StoredRecord, bytes]]:
        """:meth:`get` of many records in one query per :data:`_CHUNK` of them (each
        subject's key unwrapped once); records that do not exist (or whose subject was
        erased) are absent from the answer. :class:`CompanionError` as :meth:`get`."""
        if not record_ids:
            return {}
        r, s = records_table.c, subjects_table.c
        query = select(*[r[name] for name in RECORD_COLUMNS], s.wrapped_key, s.kek_id).join_from(
            records_table, subjects_table, r.subject_id == s.subject_id
        )
        rows: list[Row[Any]] = []
        with self._engine.connect() as conn:
            for chunk in _chunks(sorted(set(record_ids))):
                rows.extend(conn.execute(query.where(r.record_id.in_(chunk))).all())
        keys: dict[str, AESGCM] = {}
        out: dict[str, tuple[StoredRecord, bytes]] = {}
        for row in rows:
            aead = keys.get(row.subject_id)
            if aead is None:
                aead = keys[row.subject_id] = AESGCM(self._unwrap(row))
            out[row.record_id] = (self._meta(row), self._open(row, aead))
        return out

    def records(self, name: str) -> Iterator[tuple[StoredRecord, bytes]]:
        """Yield the metadata and plaintext of every record of ``name``, oldest first.

        The rows are read when the iteration starts, then decrypted one by one.
        :class:`UnknownSubject` if no live subject has that name; errors of :meth:`get`.
        """
        subject, rows = self._read_subject(name)
        aead = AESGCM(self._unwrap(subject))
        for row in rows:
            yield self._meta(row), self._open(row, aead)

    def export(self, name: str) -> dict[str, Any]:
        """Return everything stored about ``name`` as a JSON-serialisable dict (portability).

        ``{"format": "msec.companion.export/1", "subject": name, "subject_id", "created",
        "exported_at", "records": [{"record_id", "kind", "content_type", "created",
        "content" | "content_base64"}]}``: ``content`` is the decoded JSON value for JSON
        content types (``application/json``, ``*+json``) that parse, ``content_base64`` the
        bytes otherwise. Errors of :meth:`records`.
        """
        subject, rows = self._read_subject(name)
        aead = AESGCM(self._unwrap(subject))
        records: list[dict[str, Any]] = []
        for row in rows:
            plaintext = self._open(row, aead)
            entry: dict[str, Any] = {
                "record_id": row.record_id,
                "kind": row.kind,
                "content_type": row.content_type,
                "created": float(row.created),
            }
            try:
                if not _is_json(row.content_type):
                    raise ValueError(row.content_type)
                entry["content"] = json.loads(plaintext)
            except ValueError:  # not JSON, or not valid JSON (UnicodeDecodeError included)
                entry["content_base64"] = base64.b64encode(plaintext).decode("ascii")
            records.append(entry)
        return {
            "format": EXPORT_FORMAT,
            "subject": name,
            "subject_id": subject.subject_id,
            "created": float(subject.created),
            "exported_at": time.time(),
            "records": records,
        }

    def _read_subject(self, name: str) -> tuple[Row[Any], list[Row[Any]]]:
        """Return the subject row of ``name`` and its record rows, oldest first, as of one
        snapshot; :class:`UnknownSubject` if there is no live subject of that name."""
        _check_text("a subject name", name)
        r, s = records_table.c, subjects_table.c
        with self._engine.connect() as conn, conn.begin():
            subject = conn.execute(
                select(s.subject_id, s.wrapped_key, s.kek_id, s.created).where(s.name == name)
            ).first()
            if subject is None:
                raise UnknownSubject(f"no subject named {name!r} (never stored, or erased)")
            rows = conn.execute(
                select(*[r[column] for column in RECORD_COLUMNS])
                .where(r.subject_id == subject.subject_id)
                .order_by(r.created, r.record_id)
            ).all()
        return subject, rows

    @staticmethod
    def _meta(row: Row[Any]) -> StoredRecord:
        return StoredRecord(
            row.record_id, row.subject_id, row.kind, row.content_type, float(row.created)
        )

    @staticmethod
    def _open(row: Row[Any], aead: AESGCM) -> bytes:
        aad = record_aad(row.record_id, row.subject_id, row.kind, row.content_type)
        try:
            return aead.decrypt(bytes(row.nonce), bytes(row.ciphertext), aad)
        except (InvalidTag, ValueError):
            raise CompanionError(
                f"record {row.record_id!r} fails authentication: its ciphertext, nonce or "
                "metadata was altered, or it was moved from another record or subject"
            ) from None

    # -- erasure and rotation ---------------------------------------------------------------

    def erase(self, name: str, *, log: SqlLog | None = None, reason: str = "") -> Erasure:
        """Crypto-shred subject ``name``: its data key, records and name go, a tombstone stays.

        In one transaction: every record of the subject is deleted, its wrapped data key and
        name are set to NULL, ``erased_at``, the record count and ``reason`` are stored, and
        with ``log`` an ``"erasure"`` leaf (ref: the subject id, hash of
        :func:`~msec.companion.erasure_leaf_data`) is appended. The leaves of the erased
        records stay in the log; they commit to ciphertexts only. After the commit the
        database files are scrubbed (see :class:`~msec.companion.Erasure` ``.scrubbed`` and
        README.md for what that does and does not remove).

        ``reason`` is stored in clear and not logged: it must not carry personal data.
        :class:`UnknownSubject` if no live subject has that name. Takes no ``conn``: the
        scrub must follow the commit.
        """
        _check_text("a subject name", name)
        if type(reason) is not str or "\x00" in reason:
            raise ValueError("an erasure reason must be a str without NUL")
        s = subjects_table.c
        with self._writing(None) as conn:
            leaf_index = None if log is None else log.lock(conn)  # the log's lock first
            subject_id = conn.execute(
                select(s.subject_id).where(s.name == name).with_for_update()
            ).scalar()
            if subject_id is None:
                raise UnknownSubject(f"no subject named {name!r} (never stored, or erased)")
            deleted = conn.execute(
                delete(records_table).where(records_table.c.subject_id == subject_id)
            ).rowcount
            erased_at = time.time()
            conn.execute(
                update(subjects_table)
                .where(s.subject_id == subject_id)
                .values(
                    name=None,
                    wrapped_key=None,
                    erased_at=erased_at,
                    erased_records=deleted,
                    erase_reason=reason,
                    erasure_leaf=leaf_index,
                )
            )
            if log is not None:
                data = erasure_leaf_data(subject_id, erased_at, deleted)
                leaf_index = log.append(
                    [(leaf_hash(data), ERASURE_LEAF_KIND, subject_id)], conn=conn
                )
        scrubbed = self._scrub("companion_records, companion_subjects")
        return Erasure(subject_id, erased_at, deleted, leaf_index, scrubbed)

    def rotate(self, new_wrapper: KeyWrapper) -> int:
        """Re-wrap every live data key under ``new_wrapper`` and make it the current KEK.

        The records are not touched: their ciphertexts stay as they are. Returns how many
        data keys were re-wrapped (those already under ``new_wrapper`` are left alone). One
        transaction; afterwards the old wrapped keys are scrubbed like erased ones, and once
        every copy of the old key file (backups included) is destroyed, nothing wrapped
        under it can be read again. :class:`CompanionError` if a data key cannot be
        unwrapped with the keys loaded; nothing is changed then.
        """
        s = subjects_table.c
        with self._writing(None) as conn:
            rows = conn.execute(
                select(s.subject_id, s.wrapped_key, s.kek_id)
                .where(s.wrapped_key.is_not(None), s.kek_id != new_wrapper.key_id)
                .order_by(s.subject_id)
                .with_for_update()
            ).all()
            rewrapped = [
                {
                    "b_subject_id": row.subject_id,
                    "b_wrapped_key": new_wrapper.wrap(
                        self._unwrap(row), data_key_aad(row.subject_id)
                    ),
                }
                for row in rows
            ]
            if rewrapped:
                conn.execute(
                    update(subjects_table)
                    .where(s.subject_id == bindparam("b_subject_id"))
                    .values(wrapped_key=bindparam("b_wrapped_key"), kek_id=new_wrapper.key_id),
                    rewrapped,
                )
        count = len(rewrapped)
        self._keyring.use(new_wrapper)
        if count:
            self._scrub("companion_subjects")
        return count
