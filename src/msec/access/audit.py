"""The access audit trail: every decision on a sensitive resource and every denial.

One table, ``access_audit``, SQLite and PostgreSQL alike. With a transparency log each row
is also a leaf (kind ``"audit"``, ref = the row id) appended in the same transaction, taking
the log's lock first like every other writer: deleting an audit row to hide an access is
then as visible to ``msec verify`` as changing a reading.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import cbor2
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Double,
    Engine,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    insert,
    select,
)

from msec.access.model import Decision, Principal, Verb
from msec.tlog import SqlLog, leaf_hash
from msec.tlog.sql import write_transaction

__all__ = ["AUDIT_LEAF", "AuditEntry", "SqlAudit", "audit_leaf_data"]

AUDIT_LEAF: Final = "audit"
_TAG: Final = "msec.access.audit/1"
_COLUMNS: Final = (
    "id", "at", "principal_id", "tenant", "verb", "target", "allowed", "reason", "policy",
    "sensitive", "source",
)  # fmt: skip

metadata = MetaData()

audit_table = Table(
    "access_audit",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("at", Double, nullable=False),
    Column("principal_id", Text, nullable=False),
    Column("tenant", Text),
    Column("verb", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("allowed", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Column("policy", Text),
    Column("sensitive", Boolean, nullable=False),
    Column("source", Text, nullable=False),
    Column("leaf", BigInteger),
    Index("ix_access_audit_allowed", "allowed", "id"),
    Index("ix_access_audit_principal", "principal_id", "id"),
)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: float
    principal_id: str
    tenant: str | None
    verb: str
    target: str
    allowed: bool
    reason: str
    policy: str | None
    sensitive: bool
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "principal": self.principal_id,
            "tenant": self.tenant,
            "verb": self.verb,
            "target": self.target,
            "decision": "allow" if self.allowed else "deny",
            "reason": self.reason,
            "policy": self.policy,
            "sensitive": self.sensitive,
            "source": self.source,
        }


def audit_leaf_data(row: Sequence[Any]) -> bytes:
    """Leaf data of one audit row: canonical CBOR of its columns (``_COLUMNS`` order)."""
    values = list(row[: len(_COLUMNS)])
    values[0], values[1] = int(values[0]), float(values[1])
    values[6], values[9] = bool(values[6]), bool(values[9])
    return cbor2.dumps([_TAG, *values], canonical=True)


class SqlAudit:
    """The audit trail on a SQLAlchemy engine. Call :meth:`create_schema` once."""

    def __init__(
        self, engine: Engine, *, log: SqlLog | None = None, clock: Any = time.time
    ) -> None:
        self._engine = engine
        self.log = log
        self._clock = clock
        self._insert = insert(audit_table).returning(audit_table.c.id)

    def create_schema(self) -> None:
        metadata.create_all(self._engine)

    def record(
        self, principal: Principal, verb: Verb, target: str, decision: Decision, *, source: str
    ) -> AuditEntry:
        """Store one decision (and its leaf) durably; return it as stored."""
        row = {
            "at": self._clock(),
            "principal_id": principal.id,
            "tenant": principal.tenant,
            "verb": str(verb),
            "target": target[:500],
            "allowed": decision.allowed,
            "reason": decision.reason[:500],
            "policy": decision.policy,
            "sensitive": decision.sensitive,
            "source": source[:200],
        }
        with write_transaction(self._engine, self.log) as (conn, first):
            id_ = int(conn.execute(self._insert, {**row, "leaf": first}).scalar_one())
            if self.log is not None:
                data = audit_leaf_data([id_, *row.values()])
                self.log.append([(leaf_hash(data), AUDIT_LEAF, str(id_))], conn=conn)
        return AuditEntry(id_, **row)

    def query(
        self,
        *,
        allowed: bool | None = None,
        principal: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Newest first, filtered by decision, principal id and time (epoch s, inclusive)."""
        c = audit_table.c
        stmt = select(*(c[name] for name in _COLUMNS)).order_by(c.id.desc()).limit(limit)
        if allowed is not None:
            stmt = stmt.where(c.allowed.is_(allowed))
        if principal is not None:
            stmt = stmt.where(c.principal_id == principal)
        if since is not None:
            stmt = stmt.where(c.at >= since)
        with self._engine.connect() as conn:
            return [AuditEntry(*row) for row in conn.execute(stmt)]

    def counters(self) -> dict[str, int]:
        """For the KPI board: decisions recorded, denials (attempts), sensitive reads."""
        c = audit_table.c
        stmt = select(
            func.count(),
            func.coalesce(func.sum(func.cast(~c.allowed, Integer)), 0),
            func.coalesce(func.sum(func.cast(c.sensitive & c.allowed, Integer)), 0),
        )
        with self._engine.connect() as conn:
            total, denied, sensitive = conn.execute(stmt).one()
        return {"decisions": int(total), "denied": int(denied), "sensitive_allowed": int(sensitive)}

    # -- verification support (msec verify) -----------------------------------------------------

    def leaf_data(self, conn: Connection, refs: Sequence[str]) -> dict[str, bytes]:
        ids = sorted({int(ref) for ref in refs if ref.isdigit() and len(ref) < 19})
        c = audit_table.c
        found: dict[str, bytes] = {}
        for start in range(0, len(ids), 500):
            stmt = select(*(c[name] for name in _COLUMNS)).where(c.id.in_(ids[start : start + 500]))
            for row in conn.execute(stmt):
                found[str(row[0])] = audit_leaf_data(row)
        return found

    def leaf_index(self, conn: Connection, ref: str) -> int | None:
        if not ref.isdigit() or len(ref) >= 19:
            return None
        found = conn.execute(select(audit_table.c.leaf).where(audit_table.c.id == int(ref)))
        value = found.scalar()
        return None if value is None else int(value)

    def count_in(self, conn: Connection) -> int:
        return int(conn.execute(select(func.count()).select_from(audit_table)).scalar_one())

    def refs_in(self, conn: Connection) -> Iterator[str]:
        for (id_,) in conn.execute(select(audit_table.c.id)):
            yield str(id_)
