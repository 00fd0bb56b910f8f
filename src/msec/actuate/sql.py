"""The commands store on SQLAlchemy 2 Core: SQLite (WAL) or PostgreSQL, same behaviour.

Two tables: ``actuate_commands`` (every command sent, its status) and ``actuate_seq`` (the
last sequence number allocated per device). See README.md for what is guaranteed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Double,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    case,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from msec.actuate.command import Command, JsonValue
from msec.core.errors import MsecError

__all__ = ["ACKNOWLEDGED", "FAILED", "SENT", "CommandRecord", "SqlCommands"]

SENT: Final = "sent"
ACKNOWLEDGED: Final = "acknowledged"
FAILED: Final = "failed"
_MAX_DETAIL = 500

metadata = MetaData()

commands_table = Table(
    "actuate_commands",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("device", String, nullable=False),
    Column("service", String, nullable=False),
    Column("resource", String, nullable=False),
    Column("args", JSON, nullable=True),
    Column("seq", BigInteger, nullable=False),
    Column("principal_id", String, nullable=False),
    Column("issued_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("status", String(16), nullable=False),
    Column("acked_at", Double, nullable=True),
    Column("detail", Text, nullable=True),
    UniqueConstraint("device", "seq", name="uq_actuate_commands_device_seq"),
    Index("ix_actuate_commands_device", "device", "issued_at"),
)

seq_table = Table(
    "actuate_seq",
    metadata,
    Column("device", String, primary_key=True),
    Column("seq", BigInteger, nullable=False),
)


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A command as stored: what was asked, by whom, and what became of it.

    ``status`` is ``sent`` (recorded and handed to the broker, or being handed),
    ``acknowledged`` (the device reported the resource's state afterwards) or ``failed``
    (the broker did not take it, or no report came); ``detail`` says why.
    """

    id: str
    device: str
    service: str
    resource: str
    args: JsonValue
    seq: int
    principal_id: str
    issued_at: float
    expires_at: float
    status: str
    acked_at: float | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SqlCommands:
    """Commands and per-device sequence numbers on a SQLAlchemy engine.

    Build the engine with :func:`msec.twin.make_engine` and call :meth:`create_schema` once.
    Safe to share between threads and processes. Database failures propagate as
    ``sqlalchemy.exc`` errors; nothing of that call is then stored.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise MsecError(
                f"SqlCommands supports sqlite and postgresql, not {engine.dialect.name!r}"
            )
        self._engine = engine
        self._clock = clock
        dialect = sqlite if engine.dialect.name == "sqlite" else postgresql
        self._insert_seq = dialect.insert(seq_table).on_conflict_do_nothing()

    def create_schema(self) -> None:
        """Create both tables and their indexes if missing. Idempotent."""
        metadata.create_all(self._engine)

    def next_seq(self, device: str) -> int:
        """Allocate ``device``'s next command sequence number, committed before it returns.

        Strictly increasing per device, across threads and processes (one transaction, the
        device's row locked). Never below the current time in milliseconds either, so that
        numbers keep increasing after a database is restored from an older backup (devices
        refuse any number not above the highest they accepted), as long as the clock does
        not go back.
        """
        floor = int(self._clock() * 1000)
        bumped = case((seq_table.c.seq + 1 > floor, seq_table.c.seq + 1), else_=floor)
        with self._engine.begin() as conn:
            conn.execute(self._insert_seq, {"device": device, "seq": 0})
            row = conn.execute(
                update(seq_table)
                .where(seq_table.c.device == device)
                .values(seq=bumped)
                .returning(seq_table.c.seq)
            ).one()
        return int(row[0])

    def record(self, command: Command, *, status: str = SENT, detail: str | None = None) -> None:
        """Store a command (committed on return). Raises ``sqlalchemy.exc.IntegrityError``
        if its id, or its device and sequence number, were stored before."""
        with self._engine.begin() as conn:
            conn.execute(
                insert(commands_table),
                {
                    "id": command.id,
                    "device": command.device,
                    "service": command.service,
                    "resource": command.resource,
                    "args": command.args,
                    "seq": command.seq,
                    "principal_id": command.principal,
                    "issued_at": command.issued_at,
                    "expires_at": command.expires_at,
                    "status": status,
                    "detail": detail[:_MAX_DETAIL] if detail else None,
                },
            )

    def acknowledge(self, command_id: str, ok: bool, detail: str = "") -> CommandRecord | None:
        """Settle a ``sent`` command: ``acknowledged`` (``ok``) or ``failed``, now.

        Only a command still ``sent`` changes; returns the command as stored afterwards
        (unchanged if it was already settled), or ``None`` if there is no such command.
        """
        with self._engine.begin() as conn:
            conn.execute(
                update(commands_table)
                .where(commands_table.c.id == command_id, commands_table.c.status == SENT)
                .values(
                    status=ACKNOWLEDGED if ok else FAILED,
                    acked_at=self._clock(),
                    detail=detail[:_MAX_DETAIL] or None,
                )
            )
            row = conn.execute(
                select(commands_table).where(commands_table.c.id == command_id)
            ).one_or_none()
        return _record(row) if row is not None else None

    def get(self, command_id: str) -> CommandRecord | None:
        """The command with this id, or ``None``."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(commands_table).where(commands_table.c.id == command_id)
            ).one_or_none()
        return _record(row) if row is not None else None

    def recent(self, device: str, *, limit: int = 50) -> list[CommandRecord]:
        """``device``'s latest commands, newest first, at most ``limit``."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(commands_table)
                .where(commands_table.c.device == device)
                .order_by(commands_table.c.issued_at.desc(), commands_table.c.seq.desc())
                .limit(limit)
            ).all()
        return [_record(row) for row in rows]


def _record(row: Any) -> CommandRecord:
    m = row._mapping
    return CommandRecord(
        id=m["id"],
        device=m["device"],
        service=m["service"],
        resource=m["resource"],
        args=m["args"],
        seq=int(m["seq"]),
        principal_id=m["principal_id"],
        issued_at=float(m["issued_at"]),
        expires_at=float(m["expires_at"]),
        status=m["status"],
        acked_at=None if m["acked_at"] is None else float(m["acked_at"]),
        detail=m["detail"],
    )
