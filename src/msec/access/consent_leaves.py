"""How consent records are stored and logged: the ``access_`` tables, their leaves, and the
auditor's sources.

What ``msec verify`` needs to recompute every leaf :class:`~msec.access.consent.SqlConsent`
appends. Leaf data is canonical CBOR of a row's identifying fields as stored, tag first.
Mutable columns are covered by leaves of their own: ``revoked_at``/``revoked_by`` by a
:data:`GRANT_REVOCATION_LEAF`, ``withdrawn_at`` by a :data:`WITHDRAWAL_LEAF`, so a grant's
or acceptance's leaf still matches once it is revoked or withdrawn, while a revocation or
withdrawal set back to ``NULL`` leaves a leaf without a record (``missing_record``) and any
other edit a leaf that no longer matches (``modified``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import cbor2
import sqlalchemy as sa

from msec.tlog.audit import LeafSource

__all__ = [
    "ACCEPTANCE_LEAF",
    "GRANT_LEAF",
    "GRANT_REVOCATION_LEAF",
    "MAX_NAME",
    "NOTICE_LEAF",
    "WITHDRAWAL_LEAF",
    "AcceptanceLeaves",
    "GrantLeaves",
    "GrantRevocationLeaves",
    "NoticeLeaves",
    "WithdrawalLeaves",
    "acceptance_leaf_data",
    "acceptances_table",
    "grant_leaf_data",
    "grant_revocation_leaf_data",
    "grants_table",
    "leaf_sources",
    "notice_leaf_data",
    "notices_table",
    "withdrawal_leaf_data",
]

GRANT_LEAF: Final = "grant"
"""Log leaf kind of a grant; its ref is the grant id."""
GRANT_REVOCATION_LEAF: Final = "grant_revocation"
"""Log leaf kind of a grant's revocation; its ref is the grant id."""
NOTICE_LEAF: Final = "notice"
"""Log leaf kind of a published notice; its ref is the notice id."""
ACCEPTANCE_LEAF: Final = "acceptance"
"""Log leaf kind of an acceptance of a notice; its ref is the acceptance id."""
WITHDRAWAL_LEAF: Final = "withdrawal"
"""Log leaf kind of a withdrawal of consent; its ref is the acceptance id withdrawn."""

_GRANT_TAG: Final = "msec.access.grant/1"
_GRANT_REVOCATION_TAG: Final = "msec.access.grant_revocation/1"
_NOTICE_TAG: Final = "msec.access.notice/1"
_ACCEPTANCE_TAG: Final = "msec.access.acceptance/1"
_WITHDRAWAL_TAG: Final = "msec.access.withdrawal/1"

MAX_NAME: Final = 200
"""Longest subject, grantee, scope or principal id the columns hold."""
_CHUNK: Final = 500  # bound parameters per IN (...) lookup


# -- schema ---------------------------------------------------------------------------------

metadata = sa.MetaData()

grants_table = sa.Table(
    "access_grants",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("subject", sa.String(MAX_NAME), nullable=False),
    sa.Column("grantee", sa.String(MAX_NAME), nullable=False),
    sa.Column("scope", sa.String(MAX_NAME), nullable=False),
    sa.Column("verbs", sa.String(64), nullable=False),
    sa.Column("granted_by", sa.String(MAX_NAME), nullable=False),
    sa.Column("on_behalf", sa.Boolean, nullable=False),
    sa.Column("evidence", sa.Text, nullable=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("revoked_by", sa.String(MAX_NAME), nullable=True),
    sa.Column("leaf", sa.BigInteger, nullable=True),
    sa.Column("revocation_leaf", sa.BigInteger, nullable=True),
    sa.Index("access_grants_grantee", "grantee"),
    sa.Index("access_grants_subject", "subject"),
)

notices_table = sa.Table(
    "access_notices",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("purpose", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("controller", sa.Text, nullable=False),
    sa.Column("purpose_text", sa.Text, nullable=False),
    sa.Column("legal_basis", sa.Text, nullable=False),
    sa.Column("recipients", sa.Text, nullable=False),
    sa.Column("rights", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("language", sa.String(40), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("leaf", sa.BigInteger, nullable=True),
    sa.Index("access_notices_purpose", "purpose", "version"),
)

acceptances_table = sa.Table(
    "access_acceptances",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("principal_id", sa.String(MAX_NAME), nullable=False),
    sa.Column("notice_id", sa.String(128), sa.ForeignKey(notices_table.c.id), nullable=False),
    sa.Column("accepted_at", sa.Float, nullable=False),
    sa.Column("withdrawn_at", sa.Float, nullable=True),
    sa.Column("leaf", sa.BigInteger, nullable=True),
    sa.Column("withdrawal_leaf", sa.BigInteger, nullable=True),
    sa.Index("access_acceptances_principal", "principal_id"),
)


# -- leaf data ------------------------------------------------------------------------------

_NOTICE_FIELDS: Final = (
    "id", "purpose", "version", "controller", "purpose_text", "legal_basis", "recipients",
    "rights", "text", "language", "created",
)  # fmt: skip


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def grant_leaf_data(row: Mapping[str, Any]) -> bytes:
    """Leaf data of a grant: canonical CBOR of ``["msec.access.grant/1", id, subject,
    grantee, scope, verbs, granted_by, on_behalf, evidence, created, expires_at]`` as
    stored. Revocation is not in it: it is a leaf of its own."""
    values = [
        str(row["id"]),
        str(row["subject"]),
        str(row["grantee"]),
        str(row["scope"]),
        str(row["verbs"]),
        str(row["granted_by"]),
        bool(row["on_behalf"]),
        row["evidence"],
        float(row["created"]),
        _float_or_none(row["expires_at"]),
    ]
    return cbor2.dumps([_GRANT_TAG, *values], canonical=True)


def grant_revocation_leaf_data(grant_id: str, revoked_at: float, revoked_by: str) -> bytes:
    """Leaf data of a revocation: canonical CBOR of
    ``["msec.access.grant_revocation/1", grant_id, revoked_at, revoked_by]``."""
    return cbor2.dumps(
        [_GRANT_REVOCATION_TAG, grant_id, float(revoked_at), revoked_by], canonical=True
    )


def notice_leaf_data(row: Mapping[str, Any]) -> bytes:
    """Leaf data of a notice: canonical CBOR of ``["msec.access.notice/1", id, purpose,
    version, controller, purpose_text, legal_basis, recipients, rights, text, language,
    created]`` as stored (the full text shown, so any later edit is found)."""
    values: list[Any] = [str(row[name]) for name in _NOTICE_FIELDS]
    values[2] = int(row["version"])
    values[-1] = float(row["created"])
    return cbor2.dumps([_NOTICE_TAG, *values], canonical=True)


def acceptance_leaf_data(row: Mapping[str, Any]) -> bytes:
    """Leaf data of an acceptance: canonical CBOR of ``["msec.access.acceptance/1", id,
    principal_id, notice_id, accepted_at]`` as stored. Withdrawal is a leaf of its own."""
    values = [
        str(row["id"]),
        str(row["principal_id"]),
        str(row["notice_id"]),
        float(row["accepted_at"]),
    ]
    return cbor2.dumps([_ACCEPTANCE_TAG, *values], canonical=True)


def withdrawal_leaf_data(acceptance_id: str, withdrawn_at: float) -> bytes:
    """Leaf data of a withdrawal: canonical CBOR of
    ``["msec.access.withdrawal/1", acceptance_id, withdrawn_at]``."""
    return cbor2.dumps([_WITHDRAWAL_TAG, acceptance_id, float(withdrawn_at)], canonical=True)


# -- leaf sources (msec verify) -------------------------------------------------------------


def _chunks(values: Sequence[str]) -> Iterator[list[str]]:
    ordered = sorted(set(values))
    for start in range(0, len(ordered), _CHUNK):
        yield ordered[start : start + _CHUNK]


class _RowLeaves:
    """A source whose rows are the rows of ``table`` matching ``present``, ref its ``id``."""

    table: sa.Table
    index_column: str = "leaf"

    def present(self) -> sa.ColumnElement[bool]:
        return sa.true()

    def data(self, row: Mapping[str, Any]) -> bytes:
        raise NotImplementedError

    def leaf_data(self, conn: sa.Connection, refs: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for chunk in _chunks(refs):
            query = self.table.select().where(self.table.c.id.in_(chunk), self.present())
            for row in conn.execute(query):
                found[row.id] = self.data(row._mapping)
        return found

    def leaf_index(self, conn: sa.Connection, ref: str) -> int | None:
        column = self.table.c[self.index_column]
        found = conn.execute(sa.select(column).where(self.table.c.id == ref)).scalar()
        return None if found is None else int(found)

    def count_in(self, conn: sa.Connection) -> int:
        query = sa.select(sa.func.count()).select_from(self.table).where(self.present())
        return int(conn.execute(query).scalar_one())

    def refs_in(self, conn: sa.Connection) -> Iterator[str]:
        for (ref,) in conn.execute(sa.select(self.table.c.id).where(self.present())):
            yield ref


class GrantLeaves(_RowLeaves):
    """Grants as the auditor sees them (ref: grant id); any edit but revocation is found."""

    table = grants_table

    def data(self, row: Mapping[str, Any]) -> bytes:
        return grant_leaf_data(row)


class GrantRevocationLeaves(_RowLeaves):
    """Revocations as the auditor sees them (ref: grant id). A revocation undone
    (``revoked_at`` set back to ``NULL``) no longer has a record: its leaf is reported."""

    table = grants_table
    index_column = "revocation_leaf"

    def present(self) -> sa.ColumnElement[bool]:
        return grants_table.c.revoked_at.is_not(None)

    def data(self, row: Mapping[str, Any]) -> bytes:
        return grant_revocation_leaf_data(row["id"], row["revoked_at"], row["revoked_by"])


class NoticeLeaves(_RowLeaves):
    """Published notices as the auditor sees them (ref: notice id); any edit is found."""

    table = notices_table

    def data(self, row: Mapping[str, Any]) -> bytes:
        return notice_leaf_data(row)


class AcceptanceLeaves(_RowLeaves):
    """Acceptances as the auditor sees them (ref: acceptance id)."""

    table = acceptances_table

    def data(self, row: Mapping[str, Any]) -> bytes:
        return acceptance_leaf_data(row)


class WithdrawalLeaves(_RowLeaves):
    """Withdrawals as the auditor sees them (ref: acceptance id). A withdrawal undone
    (``withdrawn_at`` set back to ``NULL``) no longer has a record: its leaf is reported."""

    table = acceptances_table
    index_column = "withdrawal_leaf"

    def present(self) -> sa.ColumnElement[bool]:
        return acceptances_table.c.withdrawn_at.is_not(None)

    def data(self, row: Mapping[str, Any]) -> bytes:
        return withdrawal_leaf_data(row["id"], row["withdrawn_at"])


def leaf_sources() -> dict[str, LeafSource]:
    """The auditor's sources of the five leaf kinds :class:`~msec.access.consent.SqlConsent`
    writes, by kind."""
    return {
        GRANT_LEAF: GrantLeaves(),
        GRANT_REVOCATION_LEAF: GrantRevocationLeaves(),
        NOTICE_LEAF: NoticeLeaves(),
        ACCEPTANCE_LEAF: AcceptanceLeaves(),
        WITHDRAWAL_LEAF: WithdrawalLeaves(),
    }
