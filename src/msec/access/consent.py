"""Consent and delegation: who may see a data subject's home, and what citizens agreed to.

Two records, both kept by :class:`SqlConsent` on SQLAlchemy Core (SQLite or PostgreSQL,
same behaviour):

**Grants (delegation).** A data subject (an elderly person, ``"maria.garcia"``) lets a
grantee (a principal id, ``"user:juan"``) use some verbs on the providers of a scope (a
provider name, or a prefix ending in ``*``: ``"home-17-*"``), optionally until an expiry
time. The subject grants it themself, or an operator grants it on their behalf, which
needs evidence (``"paper consent form #123, scanned 2026-11-30"``). The policy engine asks
:meth:`SqlConsent.allows` on every request that a ``consent`` policy covers: one indexed
query, no cache, so a revocation takes effect on the very next request. Revocation is
final: a revoked grant never passes again (grant anew instead). An expired grant simply
stops matching.

**Informed-consent notices and acceptances.** A notice is what a citizen is shown before
registering: controller, purpose, legal basis, recipients, rights, and the full text, in
one language. Its id is ``"<purpose>/v<version>/<language>"`` (``"care-sharing/v2/es"``)
and it is immutable once published: a new wording is a new version. An acceptance records
which notice (exact version and language) a principal accepted and when; withdrawing
consent marks every acceptance of the purpose withdrawn. :meth:`SqlConsent.has_consented`
is true while an acceptance of any version of the purpose stands;
:meth:`SqlConsent.needs_renewal` says when a newer version has been published since.

**Time.** Methods taking ``at`` answer for *now* when it is ``None`` (the clock passed to
the constructor): revocations and withdrawals then count whenever they happened, so a
clock that steps backwards cannot revive a grant. With an explicit ``at`` they answer as of
that time (what was in force then), for audits: a grant revoked later was in force before.

**Transparency log.** With ``log``, every grant, revocation, notice, acceptance and
withdrawal appends a leaf in the same transaction (the log's lock taken first), of kinds
:data:`GRANT_LEAF`, :data:`GRANT_REVOCATION_LEAF`, :data:`NOTICE_LEAF`,
:data:`ACCEPTANCE_LEAF` and :data:`WITHDRAWAL_LEAF`. Leaf data is canonical CBOR of the
row's identifying fields as stored, tag first (:mod:`msec.access.consent_leaves`). A
revocation or withdrawal is a leaf of its own, so the grant's or acceptance's leaf stays
valid when it is revoked, and an undone revocation (``revoked_at`` set back to ``NULL``) is
found by ``msec verify`` as a revocation leaf whose record is gone.
:meth:`SqlConsent.leaf_sources` gives the auditor's sources.

Authorisation (who may grant, revoke or publish) is the caller's business: this module
records who did it (``granted_by``, ``revoked_by``) and enforces the record's own rules.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

from msec.access import consent_leaves
from msec.access.consent_leaves import (
    ACCEPTANCE_LEAF,
    GRANT_LEAF,
    GRANT_REVOCATION_LEAF,
    MAX_NAME,
    NOTICE_LEAF,
    WITHDRAWAL_LEAF,
    acceptance_leaf_data,
    acceptances_table,
    grant_leaf_data,
    grant_revocation_leaf_data,
    grants_table,
    notice_leaf_data,
    notices_table,
    withdrawal_leaf_data,
)
from msec.access.model import Verb
from msec.core.errors import MsecError
from msec.tlog import SqlLog, leaf_hash
from msec.tlog.audit import LeafSource

__all__ = [
    "ACCEPTANCE_LEAF",
    "DEFAULT_VERBS",
    "GRANT_LEAF",
    "GRANT_REVOCATION_LEAF",
    "NOTICE_LEAF",
    "WITHDRAWAL_LEAF",
    "Acceptance",
    "ConsentError",
    "Grant",
    "Notice",
    "NoticeConflict",
    "SqlConsent",
    "UnknownGrant",
    "UnknownNotice",
    "notice_id",
    "scope_matches",
]

DEFAULT_VERBS: Final = frozenset({Verb.GET, Verb.DESCRIBE, Verb.SUBSCRIBE})
"""What a grant allows unless told otherwise: seeing and reading, not acting or writing."""

_SCOPE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\*?")
_PURPOSE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_LANGUAGE: Final = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8}){0,3}")


class ConsentError(MsecError):
    """A consent operation was refused; the message says why."""


class UnknownGrant(ConsentError):
    """No grant has that id."""


class UnknownNotice(ConsentError):
    """No notice has that id."""


class NoticeConflict(ConsentError):
    """A notice with that id is already published with other content (publish a new version)."""


# -- records --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    """A subject's delegation of access to a grantee, as stored.

    ``leaf`` and ``revocation_leaf`` are the log indexes of the grant and of its revocation
    (``None`` without a log).
    """

    id: str
    subject: str
    grantee: str
    scope: str
    verbs: frozenset[Verb]
    granted_by: str
    on_behalf: bool
    evidence: str | None
    created: float
    expires_at: float | None = None
    revoked_at: float | None = None
    revoked_by: str | None = None
    leaf: int | None = None
    revocation_leaf: int | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def in_force(self, at: float) -> bool:
        """True if the grant was neither revoked nor expired at ``at`` (and existed then)."""
        return (
            self.created <= at
            and (self.revoked_at is None or at < self.revoked_at)
            and (self.expires_at is None or at < self.expires_at)
        )

    def covers(self, provider: str, verb: Verb | str) -> bool:
        """True if ``provider`` is in the grant's scope and ``verb`` among its verbs."""
        return Verb(verb) in self.verbs and scope_matches(self.scope, provider)


@dataclass(frozen=True, slots=True)
class Notice:
    """An informed-consent notice as shown to a citizen; immutable once published."""

    id: str
    purpose: str
    version: int
    controller: str
    purpose_text: str
    legal_basis: str
    recipients: str
    rights: str
    text: str
    language: str
    created: float
    leaf: int | None = None


@dataclass(frozen=True, slots=True)
class Acceptance:
    """A principal's acceptance of one notice (exact version and language), as stored."""

    id: str
    principal_id: str
    notice_id: str
    accepted_at: float
    withdrawn_at: float | None = None
    leaf: int | None = None
    withdrawal_leaf: int | None = None

    @property
    def withdrawn(self) -> bool:
        return self.withdrawn_at is not None


def scope_matches(scope: str, provider: str) -> bool:
    """True if ``provider`` is ``scope``, or starts with it when it ends in ``*``."""
    if scope.endswith("*"):
        return provider.startswith(scope[:-1])
    return provider == scope


def notice_id(purpose: str, version: int, language: str) -> str:
    """The id of a notice: ``"<purpose>/v<version>/<language>"``."""
    return f"{purpose}/v{version}/{language}"


# -- validation -----------------------------------------------------------------------------


def _name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise ValueError(f"{what} must be a non-empty string of at most {MAX_NAME} characters")
    if not value.isprintable():
        raise ValueError(f"{what} must be printable text")
    return value


def _text(what: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be non-empty text")
    return value


def _scope(scope: object) -> str:
    if not isinstance(scope, str) or not _SCOPE.fullmatch(scope):
        raise ValueError(
            f"scope {scope!r} is not a provider name or a prefix ending in '*' "
            "(letters, digits, '.', '_', ':', '-'; a bare '*' is not allowed)"
        )
    return scope


def _verbs(verbs: Iterable[Verb | str]) -> str:
    if isinstance(verbs, str):
        raise ValueError("verbs is a collection of verbs, not one string")
    chosen = sorted({Verb(verb).value for verb in verbs})
    if not chosen:
        raise ValueError("a grant needs at least one verb")
    return ",".join(chosen)


def _time(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a POSIX time in seconds")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{what} must be finite")
    return float(value)


# -- the store ------------------------------------------------------------------------------


class SqlConsent:
    """Grants, notices and acceptances in the platform database.

    Call :meth:`create_schema` once. ``clock`` gives the current POSIX time (injected for
    tests). With ``log`` (a :class:`~msec.tlog.SqlLog` on the same engine) every change is a
    leaf appended in the same transaction: either both are stored or neither is. Invalid
    arguments raise ``ValueError`` and store nothing; database failures propagate as
    ``sqlalchemy.exc`` errors and leave nothing of the call stored.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        log: SqlLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        #: With a log, every change is a leaf of it (same transaction).
        self.log = log
        self._clock = clock

    def create_schema(self) -> None:
        """Create the ``access_`` consent tables where missing. Idempotent."""
        consent_leaves.metadata.create_all(self._engine)

    @contextmanager
    def _writing(self) -> Iterator[tuple[sa.Connection, int | None]]:
        """A write transaction holding the log's lock first (when there is a log); yields the
        connection and the index the next leaf will get (``None`` without a log)."""
        with self._engine.begin() as conn:
            if self._sqlite:
                # Take the write lock now rather than upgrading a read snapshot later.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn, None if self.log is None else self.log.lock(conn)

    def _append(self, conn: sa.Connection, entries: list[tuple[bytes, str, str]]) -> None:
        if self.log is not None and entries:
            self.log.append(entries, conn=conn)

    # -- grants -----------------------------------------------------------------------------

    def grant(
        self,
        subject: str,
        grantee: str,
        *,
        scope: str,
        verbs: Iterable[Verb | str] = DEFAULT_VERBS,
        granted_by: str,
        on_behalf: bool = False,
        evidence: str | None = None,
        expires_at: float | None = None,
    ) -> Grant:
        """Let ``grantee`` use ``verbs`` on the providers of ``scope`` of ``subject``'s data.

        ``granted_by`` is the principal who granted it: the subject themself, or (with
        ``on_behalf=True``) an operator acting for them, which requires ``evidence`` of the
        subject's consent. ``expires_at`` (POSIX time, after now) ends it on its own.
        ``ValueError`` for an invalid scope (a provider name or a prefix ending in ``*``; a
        bare ``*`` is refused), unknown verb, missing evidence or past expiry.
        """
        row: dict[str, Any] = {
            "id": secrets.token_hex(16),
            "subject": _name("subject", subject),
            "grantee": _name("grantee", grantee),
            "scope": _scope(scope),
            "verbs": _verbs(verbs),
            "granted_by": _name("granted_by", granted_by),
            "on_behalf": bool(on_behalf),
            "evidence": None if evidence is None else _text("evidence", evidence),
        }
        if on_behalf and row["evidence"] is None:
            raise ValueError(
                "a grant made on the subject's behalf needs evidence of their consent "
                "(e.g. 'paper consent form #123, scanned 2026-11-30')"
            )
        now = float(self._clock())
        if expires_at is not None:
            expires_at = _time("expires_at", expires_at)
            if expires_at <= now:
                raise ValueError("expires_at is not in the future")
        row.update(created=now, expires_at=expires_at, revoked_at=None, revoked_by=None)
        with self._writing() as (conn, first):
            row["leaf"] = first
            conn.execute(grants_table.insert().values(**row))
            self._append(conn, [(leaf_hash(grant_leaf_data(row)), GRANT_LEAF, row["id"])])
        return _grant(row)

    def revoke(self, grant_id: str, *, by: str) -> Grant:
        """Revoke the grant ``grant_id`` for good, recording ``by`` (a principal id).

        From the moment this returns no request passes through this grant. Revoking a
        revoked grant changes nothing and returns it as it is; :class:`UnknownGrant` if
        there is no such grant.
        """
        by = _name("by", by)
        with self._writing() as (conn, first):
            found = self._revoke(conn, [grant_id], by, first)
            row = conn.execute(grants_table.select().where(grants_table.c.id == grant_id)).first()
        if row is None:
            raise UnknownGrant(f"no grant {grant_id!r}")
        return found[0] if found else _grant(row._mapping)

    def revoke_all(self, subject: str, grantee: str | None = None, *, by: str) -> list[Grant]:
        """Revoke every unrevoked grant of ``subject`` (to ``grantee`` only, if given),
        expired ones included, in one transaction; return those it revoked, oldest first."""
        by = _name("by", by)
        c = grants_table.c
        query = sa.select(c.id).where(c.subject == subject, c.revoked_at.is_(None))
        if grantee is not None:
            query = query.where(c.grantee == grantee)
        with self._writing() as (conn, first):
            ids = list(conn.execute(query.order_by(c.created, c.id)).scalars())
            return self._revoke(conn, ids, by, first)

    def _revoke(
        self, conn: sa.Connection, ids: Sequence[str], by: str, first: int | None
    ) -> list[Grant]:
        """Revoke the unrevoked grants among ``ids`` in the caller's transaction."""
        c = grants_table.c
        now = float(self._clock())
        entries: list[tuple[bytes, str, str]] = []
        for grant_id in ids:
            index = None if first is None else first + len(entries)
            result = conn.execute(
                grants_table.update()
                .where(c.id == grant_id, c.revoked_at.is_(None))
                .values(revoked_at=now, revoked_by=by, revocation_leaf=index)
            )
            if result.rowcount:
                data = grant_revocation_leaf_data(grant_id, now, by)
                entries.append((leaf_hash(data), GRANT_REVOCATION_LEAF, grant_id))
        self._append(conn, entries)
        if not entries:
            return []
        done = [ref for _, _, ref in entries]
        rows = conn.execute(
            grants_table.select().where(c.id.in_(done)).order_by(c.created, c.id)
        ).all()
        return [_grant(row._mapping) for row in rows]

    def get_grant(self, grant_id: str) -> Grant | None:
        """The grant ``grant_id`` (revoked or expired ones included), or ``None``."""
        with self._engine.connect() as conn:
            row = conn.execute(grants_table.select().where(grants_table.c.id == grant_id)).first()
        return None if row is None else _grant(row._mapping)

    def grants_of(self, subject: str) -> list[Grant]:
        """Every grant ``subject`` ever made (revoked and expired ones included), oldest
        first: what a subject is shown when reviewing who can see their data."""
        c = grants_table.c
        query = grants_table.select().where(c.subject == subject).order_by(c.created, c.id)
        with self._engine.connect() as conn:
            return [_grant(row._mapping) for row in conn.execute(query)]

    def active(
        self, grantee: str, subject: str | None = None, *, at: float | None = None
    ) -> list[Grant]:
        """The grants to ``grantee`` (from ``subject`` only, if given) in force, oldest first.

        ``at=None``: now, and a revoked grant is never in force whenever it was revoked.
        An explicit ``at``: the grants in force at that time (made by then, not yet revoked
        nor expired then).
        """
        c = grants_table.c
        query = grants_table.select().where(c.grantee == grantee)
        if subject is not None:
            query = query.where(c.subject == subject)
        if at is None:
            now = float(self._clock())
            query = query.where(c.revoked_at.is_(None))
        else:
            now = _time("at", at)
            query = query.where(
                c.created <= now, sa.or_(c.revoked_at.is_(None), c.revoked_at > now)
            )
        query = query.where(sa.or_(c.expires_at.is_(None), c.expires_at > now))
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(c.created, c.id)).all()
        return [_grant(row._mapping) for row in rows]

    def allows(
        self,
        grantee: str,
        provider: str,
        verb: Verb | str,
        *,
        subject: str | None = None,
        at: float | None = None,
    ) -> Grant | None:
        """The oldest grant in force that lets ``grantee`` use ``verb`` on ``provider``
        (given by ``subject``, if named), or ``None``.

        The per-request check: one query on the grantee's index, nothing cached, so a grant
        revoked or expired before this call never passes. ``at`` as in :meth:`active`
        (requests pass ``None``). ``ValueError`` for an unknown verb.
        """
        wanted = Verb(verb)
        for found in self.active(grantee, subject, at=at):
            if found.covers(provider, wanted):
                return found
        return None

    # -- notices and acceptances ------------------------------------------------------------

    def publish_notice(
        self,
        purpose: str,
        version: int,
        *,
        controller: str,
        purpose_text: str,
        legal_basis: str,
        recipients: str,
        rights: str,
        text: str,
        language: str = "en",
    ) -> Notice:
        """Publish version ``version`` of the notice for ``purpose`` in ``language``.

        Its id is ``"<purpose>/v<version>/<language>"``. Publishing the same id again with
        the same content returns the stored notice (nothing new is logged); with other
        content it raises :class:`NoticeConflict`: a published notice never changes, a new
        wording is a new version. ``ValueError`` for an invalid purpose (lowercase letters,
        digits, ``.``, ``_``, ``-``), version (an int >= 1), language tag or empty field.
        """
        if not isinstance(purpose, str) or not _PURPOSE.fullmatch(purpose):
            raise ValueError(
                f"purpose {purpose!r} must be lowercase letters, digits, '.', '_', '-'"
            )
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError("version must be an int >= 1")
        if not isinstance(language, str) or not _LANGUAGE.fullmatch(language):
            raise ValueError(f"language {language!r} is not a language tag such as 'en' or 'es'")
        content = {
            "controller": _text("controller", controller),
            "purpose_text": _text("purpose_text", purpose_text),
            "legal_basis": _text("legal_basis", legal_basis),
            "recipients": _text("recipients", recipients),
            "rights": _text("rights", rights),
            "text": _text("text", text),
        }
        row: dict[str, Any] = {
            "id": notice_id(purpose, version, language),
            "purpose": purpose,
            "version": version,
            **content,
            "language": language,
            "created": float(self._clock()),
        }
        try:
            with self._writing() as (conn, first):
                stored = conn.execute(
                    notices_table.select().where(notices_table.c.id == row["id"])
                ).first()
                if stored is None:
                    row["leaf"] = first
                    conn.execute(notices_table.insert().values(**row))
                    entry = (leaf_hash(notice_leaf_data(row)), NOTICE_LEAF, row["id"])
                    self._append(conn, [entry])
                    return _notice(row)
        except sa.exc.IntegrityError:
            # Published concurrently (possible without a log, whose lock serialises writers).
            with self._engine.connect() as conn:
                stored = conn.execute(
                    notices_table.select().where(notices_table.c.id == row["id"])
                ).first()
            if stored is None:
                raise
        if any(stored._mapping[name] != value for name, value in content.items()):
            raise NoticeConflict(
                f"notice {row['id']!r} is already published with other content: "
                "publish a new version instead"
            )
        return _notice(stored._mapping)

    def get_notice(self, notice_id: str) -> Notice | None:
        """The notice ``notice_id``, or ``None``."""
        with self._engine.connect() as conn:
            row = conn.execute(notices_table.select().where(notices_table.c.id == notice_id))
            found = row.first()
        return None if found is None else _notice(found._mapping)

    def latest_notice(self, purpose: str, language: str = "en") -> Notice | None:
        """The highest version of ``purpose``'s notice published in ``language``, or ``None``
        (then the caller may fall back to another language)."""
        c = notices_table.c
        query = (
            notices_table.select()
            .where(c.purpose == purpose, c.language == language)
            .order_by(c.version.desc())
            .limit(1)
        )
        with self._engine.connect() as conn:
            found = conn.execute(query).first()
        return None if found is None else _notice(found._mapping)

    def accept(self, principal_id: str, notice_id: str) -> Acceptance:
        """Record that ``principal_id`` was shown ``notice_id`` and accepted it.

        The acceptance names the exact notice (version and language) and the time. If the
        principal's acceptance of this very notice stands (not withdrawn) it is returned
        and nothing new is stored. :class:`UnknownNotice` if no notice has that id.
        """
        principal_id = _name("principal_id", principal_id)
        a = acceptances_table.c
        with self._writing() as (conn, first):
            exists = conn.execute(
                sa.select(notices_table.c.id).where(notices_table.c.id == notice_id)
            )
            if exists.first() is None:
                raise UnknownNotice(f"no notice {notice_id!r}")
            standing = conn.execute(
                acceptances_table.select().where(
                    a.principal_id == principal_id,
                    a.notice_id == notice_id,
                    a.withdrawn_at.is_(None),
                )
            ).first()
            if standing is not None:
                return _acceptance(standing._mapping)
            row: dict[str, Any] = {
                "id": secrets.token_hex(16),
                "principal_id": principal_id,
                "notice_id": notice_id,
                "accepted_at": float(self._clock()),
                "withdrawn_at": None,
                "leaf": first,
            }
            conn.execute(acceptances_table.insert().values(**row))
            entry = (leaf_hash(acceptance_leaf_data(row)), ACCEPTANCE_LEAF, row["id"])
            self._append(conn, [entry])
        return _acceptance(row)

    def withdraw(self, principal_id: str, purpose: str) -> Acceptance | None:
        """Withdraw ``principal_id``'s consent to ``purpose``: every standing acceptance of
        any version or language of it is marked withdrawn (each a withdrawal leaf).

        Returns the most recent acceptance withdrawn, or ``None`` if none stood. Takes
        effect for every later :meth:`has_consented`; what was accepted before stays on
        record (withdrawal does not erase the history of consent).
        """
        a, n = acceptances_table.c, notices_table.c
        query = (
            sa.select(a.id)
            .join(notices_table, n.id == a.notice_id)
            .where(a.principal_id == principal_id, n.purpose == purpose, a.withdrawn_at.is_(None))
            .order_by(a.accepted_at, a.id)
        )
        with self._writing() as (conn, first):
            ids = list(conn.execute(query).scalars())
            now = float(self._clock())
            entries: list[tuple[bytes, str, str]] = []
            for acceptance_id in ids:
                index = None if first is None else first + len(entries)
                result = conn.execute(
                    acceptances_table.update()
                    .where(a.id == acceptance_id, a.withdrawn_at.is_(None))
                    .values(withdrawn_at=now, withdrawal_leaf=index)
                )
                if result.rowcount:
                    data = withdrawal_leaf_data(acceptance_id, now)
                    entries.append((leaf_hash(data), WITHDRAWAL_LEAF, acceptance_id))
            self._append(conn, entries)
            if not entries:
                return None
            last = conn.execute(acceptances_table.select().where(a.id == entries[-1][2])).one()
        return _acceptance(last._mapping)

    def acceptances_of(self, principal_id: str) -> list[Acceptance]:
        """Every acceptance ``principal_id`` made (withdrawn ones included), oldest first."""
        a = acceptances_table.c
        query = (
            acceptances_table.select()
            .where(a.principal_id == principal_id)
            .order_by(a.accepted_at, a.id)
        )
        with self._engine.connect() as conn:
            return [_acceptance(row._mapping) for row in conn.execute(query)]

    def has_consented(self, principal_id: str, purpose: str, *, at: float | None = None) -> bool:
        """True if an acceptance by ``principal_id`` of any version (any language) of
        ``purpose``'s notice stands.

        ``at=None``: now, and a withdrawn acceptance never counts. An explicit ``at``:
        whether consent stood at that time (accepted by then and not yet withdrawn), which is
        what the lawfulness of processing done then depends on. Whether the version accepted
        is still the latest is :meth:`needs_renewal`'s question.
        """
        a, n = acceptances_table.c, notices_table.c
        query = (
            sa.select(a.id)
            .join(notices_table, n.id == a.notice_id)
            .where(a.principal_id == principal_id, n.purpose == purpose)
        )
        if at is None:
            query = query.where(a.withdrawn_at.is_(None))
        else:
            when = _time("at", at)
            query = query.where(
                a.accepted_at <= when, sa.or_(a.withdrawn_at.is_(None), a.withdrawn_at > when)
            )
        with self._engine.connect() as conn:
            return conn.execute(query.limit(1)).first() is not None

    def needs_renewal(self, principal_id: str, purpose: str) -> bool:
        """True if ``principal_id`` has consented to ``purpose`` (a standing acceptance) but a
        notice of a higher version than the highest they accepted has been published since,
        in any language. False without standing consent: there is nothing to renew (ask for
        consent with :meth:`latest_notice` instead)."""
        a, n = acceptances_table.c, notices_table.c
        accepted = (
            sa.select(sa.func.max(n.version))
            .join(acceptances_table, n.id == a.notice_id)
            .where(a.principal_id == principal_id, n.purpose == purpose, a.withdrawn_at.is_(None))
        )
        latest = sa.select(sa.func.max(n.version)).where(n.purpose == purpose)
        with self._engine.connect() as conn:
            mine = conn.execute(accepted).scalar()
            newest = conn.execute(latest).scalar()
        return mine is not None and newest is not None and int(newest) > int(mine)

    # -- verification support (msec verify) -------------------------------------------------

    def leaf_sources(self) -> dict[str, LeafSource]:
        """The auditor's sources of the five leaf kinds this store writes, by kind
        (:func:`msec.access.consent_leaves.leaf_sources`)."""
        return consent_leaves.leaf_sources()


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _grant(row: Mapping[str, Any]) -> Grant:
    return Grant(
        id=row["id"],
        subject=row["subject"],
        grantee=row["grantee"],
        scope=row["scope"],
        verbs=frozenset(Verb(v) for v in str(row["verbs"]).split(",")),
        granted_by=row["granted_by"],
        on_behalf=bool(row["on_behalf"]),
        evidence=row["evidence"],
        created=float(row["created"]),
        expires_at=_float_or_none(row["expires_at"]),
        revoked_at=_float_or_none(row["revoked_at"]),
        revoked_by=row["revoked_by"],
        leaf=row.get("leaf"),
        revocation_leaf=row.get("revocation_leaf"),
    )


def _notice(row: Mapping[str, Any]) -> Notice:
    return Notice(
        id=row["id"],
        purpose=row["purpose"],
        version=int(row["version"]),
        controller=row["controller"],
        purpose_text=row["purpose_text"],
        legal_basis=row["legal_basis"],
        recipients=row["recipients"],
        rights=row["rights"],
        text=row["text"],
        language=row["language"],
        created=float(row["created"]),
        leaf=row.get("leaf"),
    )


def _acceptance(row: Mapping[str, Any]) -> Acceptance:
    return Acceptance(
        id=row["id"],
        principal_id=row["principal_id"],
        notice_id=row["notice_id"],
        accepted_at=float(row["accepted_at"]),
        withdrawn_at=_float_or_none(row["withdrawn_at"]),
        leaf=row.get("leaf"),
        withdrawal_leaf=row.get("withdrawal_leaf"),
    )
