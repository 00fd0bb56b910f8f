"""The security event log on SQLAlchemy 2 Core: SQLite (WAL) or PostgreSQL, same behaviour.

One table, ``guard_events``. See README.md for what this backend guarantees.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any, Final

import cbor2
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy.exc import DBAPIError

from msec.core.errors import MsecError
from msec.core.models import SecurityEvent
from msec.tlog import SqlLog, leaf_hash
from msec.tlog.sql import write_transaction

#: Longest ``detail`` stored; longer ones are cut (an attacker controls what it quotes).
MAX_DETAIL = 500

metadata = MetaData()

events_table = Table(
    "guard_events",
    metadata,
    # BIGINT on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the autoincrementing rowid.
    Column(
        "id",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("timestamp", Double, nullable=False),
    Column("reason", String, nullable=False),
    Column("device", String),
    Column("source", String, nullable=False),
    Column("detail", Text, nullable=False),
    Column("extra", Text, nullable=False),
    # The event's leaf in the transparency log (NULL without a log).
    Column("leaf", BigInteger),
    Index("ix_guard_events_reason", "reason", "id"),
    Index("ix_guard_events_device", "device", "id"),
)


EVENT_LEAF: Final = "event"
"""Log leaf kind of a security event (a warning entry); its ref is the event id."""
_EVENT_LEAF_TAG: Final = "msec.guard.event/1"
_EVENT_COLUMNS: Final = ("id", "timestamp", "reason", "device", "source", "detail", "extra")


def event_leaf_data(row: Sequence[Any]) -> bytes:
    """The log leaf data of one stored ``guard_events`` row: canonical CBOR of its columns.

    ``row`` is (id, timestamp, reason, device, source, detail, extra) as stored.
    """
    id_, timestamp, reason, device, source, detail, extra = row
    return cbor2.dumps(
        [_EVENT_LEAF_TAG, int(id_), float(timestamp), reason, device, source, detail, extra],
        canonical=True,
    )


def _storable(text: str) -> str:
    """``text`` with what a database refuses as text (NUL, lone surrogates) escaped.

    Event fields quote what devices and attackers sent; recording them must never fail.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class SqlEventLog:
    """The :class:`~msec.guard.base.EventLog` on a SQLAlchemy engine (SQLite or PostgreSQL).

    Build the engine with :func:`msec.twin.engine.make_engine` and call
    :meth:`create_schema` once before use. Safe to share between threads and
    processes. Database failures propagate as ``sqlalchemy.exc`` errors; nothing of
    that call is then stored.
    """

    def __init__(self, engine: Engine, *, log: SqlLog | None = None) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise MsecError(
                f"SqlEventLog supports sqlite and postgresql, not {engine.dialect.name!r}"
            )
        self._engine = engine
        #: With a log, every event is also a leaf of it, appended in the same transaction:
        #: a warning entry as tamper-evident as the data.
        self.log = log
        self._insert = insert(events_table).returning(
            events_table.c.id, sort_by_parameter_order=True
        )

    def create_schema(self) -> None:
        """Create ``guard_events`` and its indexes if missing (and the ``leaf`` column of
        databases made before it existed). Idempotent."""
        metadata.create_all(self._engine)
        if "leaf" not in {c["name"] for c in inspect(self._engine).get_columns("guard_events")}:
            try:
                with self._engine.begin() as conn:
                    conn.exec_driver_sql("ALTER TABLE guard_events ADD COLUMN leaf BIGINT")
            except DBAPIError:
                columns = inspect(self._engine).get_columns("guard_events")
                if "leaf" not in {c["name"] for c in columns}:
                    raise

    def record(self, events: Sequence[SecurityEvent]) -> list[SecurityEvent]:
        """Store ``events`` in one transaction (committed on return).

        Returns them as stored, in the same order: ``id`` set (increasing in that
        order), ``timestamp`` set to now where it was 0, ``detail`` cut to
        :data:`MAX_DETAIL` characters, and NUL or unencodable characters in text
        fields escaped as ``\\x00`` / ``\\udc80``. An ``id`` given by the caller is ignored.
        With a log, each event is appended to it (:func:`event_leaf_data`, ref = id) in the
        same transaction.
        """
        if not events:
            return []
        now = time.time()
        stored = [
            replace(
                event,
                id=None,
                timestamp=event.timestamp or now,
                reason=_storable(event.reason),
                detail=_storable(event.detail)[:MAX_DETAIL],
                source=_storable(event.source),
                device=None if event.device is None else _storable(event.device),
                extra={_storable(k): _storable(v) for k, v in event.extra.items()},
            )
            for event in events
        ]
        params = [
            {
                "timestamp": event.timestamp,
                "reason": event.reason,
                "device": event.device,
                "source": event.source,
                "detail": event.detail,
                "extra": json.dumps(event.extra, sort_keys=True),
            }
            for event in stored
        ]
        with write_transaction(self._engine, self.log) as (conn, first):
            if first is not None:
                for i, p in enumerate(params):
                    p["leaf"] = first + i
            ids = conn.execute(self._insert, params).scalars().all()
            if self.log is not None:
                entries = [
                    (
                        leaf_hash(event_leaf_data((int(id_), *list(p.values())[:6]))),
                        EVENT_LEAF,
                        str(int(id_)),
                    )
                    for id_, p in zip(ids, params, strict=True)
                ]
                self.log.append(entries, conn=conn)
        return [replace(event, id=int(id_)) for event, id_ in zip(stored, ids, strict=True)]

    def query(
        self, *, reason: str | None = None, device: str | None = None, limit: int = 100
    ) -> list[SecurityEvent]:
        """Newest first (by ``id``, the order of recording), filtered by ``reason`` and ``device``.

        ``limit <= 0`` gives an empty list.
        """
        if limit <= 0:
            return []
        c = events_table.c
        stmt = select(events_table).order_by(c.id.desc()).limit(limit)
        if reason is not None:
            stmt = stmt.where(c.reason == reason)
        if device is not None:
            stmt = stmt.where(c.device == device)
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [_event(row._mapping) for row in rows]

    def counts(self) -> dict[str, int]:
        """Number of stored events per reason (reasons without events are absent)."""
        c = events_table.c
        stmt = select(c.reason, func.count()).group_by(c.reason).order_by(c.reason)
        with self._engine.connect() as conn:
            return {reason: int(n) for reason, n in conn.execute(stmt)}

    def warn(
        self,
        reason: str,
        detail: str,
        *,
        source: str = "",
        device: str | None = None,
        **extra: str,
    ) -> SecurityEvent:
        """Record one warning entry (e.g. a denied access) and return it as stored.

        The API for other layers: with a log, the entry is a leaf of it like any event.
        """
        event = SecurityEvent(reason, detail, source=source, device=device, extra=extra)
        return self.record([event])[0]

    # -- verification support (msec verify) ------------------------------------------------

    def leaf_data(self, conn: Connection, refs: Sequence[str]) -> dict[str, bytes]:
        """Recompute the leaf data of the events named by ``refs``; missing ones left out."""
        ids = sorted({int(ref) for ref in refs if ref.isdigit()})
        c = events_table.c
        columns = [c[name] for name in _EVENT_COLUMNS]
        found: dict[str, bytes] = {}
        for start in range(0, len(ids), 500):
            stmt = select(*columns).where(c.id.in_(ids[start : start + 500]))
            for row in conn.execute(stmt):
                found[str(row[0])] = event_leaf_data(row)
        return found

    def leaf_index(self, conn: Connection, ref: str) -> int | None:
        """The log leaf index stored with the event whose id is ``ref``."""
        if not ref.isdigit() or len(ref) > 18:
            return None
        found = conn.execute(select(events_table.c.leaf).where(events_table.c.id == int(ref)))
        value = found.scalar()
        return None if value is None else int(value)

    def count_in(self, conn: Connection) -> int:
        """How many events are stored, on the caller's connection."""
        return int(conn.execute(select(func.count()).select_from(events_table)).scalar_one())

    def refs_in(self, conn: Connection) -> Iterator[str]:
        """The ref (id) of every stored event, on the caller's connection."""
        for (id_,) in conn.execute(select(events_table.c.id)):
            yield str(id_)


def _event(row: Any) -> SecurityEvent:
    return SecurityEvent(
        reason=row["reason"],
        detail=row["detail"],
        source=row["source"],
        device=row["device"],
        timestamp=row["timestamp"],
        id=int(row["id"]),
        extra=json.loads(row["extra"]),
    )
