"""The security event log on SQLAlchemy 2 Core: SQLite (WAL) or PostgreSQL, same behaviour.

One table, ``guard_events``. See README.md for what this backend guarantees.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
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
    select,
)

from msec.core.errors import MsecError
from msec.core.models import SecurityEvent

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
    Index("ix_guard_events_reason", "reason", "id"),
    Index("ix_guard_events_device", "device", "id"),
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

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise MsecError(
                f"SqlEventLog supports sqlite and postgresql, not {engine.dialect.name!r}"
            )
        self._engine = engine
        self._insert = insert(events_table).returning(
            events_table.c.id, sort_by_parameter_order=True
        )

    def create_schema(self) -> None:
        """Create ``guard_events`` and its indexes if missing. Idempotent."""
        metadata.create_all(self._engine)

    def record(self, events: Sequence[SecurityEvent]) -> list[SecurityEvent]:
        """Store ``events`` in one transaction (committed on return).

        Returns them as stored, in the same order: ``id`` set (increasing in that
        order), ``timestamp`` set to now where it was 0, ``detail`` cut to
        :data:`MAX_DETAIL` characters, and NUL or unencodable characters in text
        fields escaped as ``\\x00`` / ``\\udc80``. An ``id`` given by the caller is ignored.
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
        with self._engine.begin() as conn:
            ids = conn.execute(self._insert, params).scalars().all()
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
