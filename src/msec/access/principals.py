"""The principal store: tenants, users, service accounts and their API tokens, on SQL.

:class:`SqlPrincipals` keeps them in the platform database (SQLAlchemy Core, SQLite or
PostgreSQL, same behaviour) in the ``access_`` tables. What it guarantees:

* **Passwords** are stored only as argon2id hashes (pwdlib); they are never logged, returned
  or shown in a ``repr``. An unknown user and a wrong password fail alike
  (:class:`InvalidCredentials`, same message, about the same time: a dummy hash is checked).
* **Lockout**: after ``max_failures`` consecutive failed passwords the account is locked for
  ``lockout_s``, doubling with each further lockout (at most a day) until a login succeeds;
  while locked even the right password fails with :class:`LockedOut`, without being checked.
  Each attempt is counted *before* its password is checked, so a burst of parallel guesses
  gets no more than ``max_failures`` checks. A lockout stops passwords only: tokens issued
  before keep working (disable the user to stop those too).
* **Tokens** (``msec_<id>_<secret>``, 256-bit secret) are shown once, when issued; only the
  SHA-256 of the secret is stored. Every :meth:`SqlPrincipals.authenticate_token` reads the
  token and its owner from the database (one primary-key lookup each, nothing cached), so an
  expiry, a revocation or a disabled owner takes effect on the very next request.
* **Transparency**: with a ``log``, every change of an account or token (user or service
  added, disabled, enabled, roles changed, password changed, token issued or revoked,
  tenant added) is a row of ``access_events`` and a leaf of kind ``"access"`` of the log,
  appended in the same transaction (the log's lock taken first). Events hold facts, never
  secrets or hashes ("password changed at T"). Failed logins and lockouts are not account
  changes: they are security events, which the caller records from the exceptions raised.

Errors: :class:`AuthError` subclasses for failed authentication (their ``str`` is safe to
show to a client; ``reason`` is for the security event only), :class:`PrincipalError`
subclasses for management calls on missing or duplicate accounts, ``ValueError`` for
malformed names, roles, tenants, passwords and durations. Database failures propagate as
``sqlalchemy.exc`` errors and leave nothing of the call stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Literal

import cbor2
import sqlalchemy as sa
from pwdlib import PasswordHash
from sqlalchemy.dialects import postgresql, sqlite

from msec.access.model import ROLES, TENANTS, Principal, PrincipalKind
from msec.access.passwords import PasswordChecker, check_password_rules
from msec.core.errors import MsecError
from msec.tlog import LogError, SqlLog, leaf_hash
from msec.tlog.audit import LeafSource

__all__ = [
    "ACCESS_LEAF",
    "DEFAULT_TENANT",
    "TOKEN_PREFIX",
    "AccessEvent",
    "AccessEventLeaves",
    "AuthError",
    "AuthReason",
    "DuplicatePrincipal",
    "InvalidCredentials",
    "InvalidToken",
    "LockedOut",
    "PrincipalError",
    "ServiceInfo",
    "SqlPrincipals",
    "TokenInfo",
    "UnknownPrincipal",
    "UnknownToken",
    "UserInfo",
    "access_event_leaf_data",
    "parse_principal_id",
]

ACCESS_LEAF: Final = "access"
"""Log leaf kind of an account or token change; its ref is the ``access_events`` id."""
DEFAULT_TENANT: Final = "default"
"""The tenant every installation has besides :data:`~msec.access.model.TENANTS`."""
TOKEN_PREFIX: Final = "msec_"

_EVENT_TAG: Final = "msec.access.event/1"
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_TOKEN: Final = re.compile(r"msec_([0-9a-f]{24})_([A-Za-z0-9_-]{43})")
_TOKEN_ID: Final = re.compile(r"[0-9a-f]{24}")
_MAX_LABEL: Final = 200
_MAX_SUBJECT: Final = 200
_MAX_LOCKOUT_S: Final = 86_400.0
_LAST_USED_STEP_S: Final = 60.0
"""``last_used`` is written at most once a minute a token: a write per request would
serialise every API call on SQLite's write lock for a figure nobody needs to the second."""

metadata = sa.MetaData()

tenants_table = sa.Table(
    "access_tenants",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("created", sa.Double, nullable=False),
)

users_table = sa.Table(
    "access_users",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(64), sa.ForeignKey("access_tenants.name"), nullable=False),
    sa.Column("roles", sa.Text, nullable=False),  # sorted, comma-separated
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=True),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("failed_logins", sa.Integer, nullable=False, default=0),
    sa.Column("locked_until", sa.Double, nullable=True),
    # Lockouts since the last successful login: each one lasts twice as long as the last.
    sa.Column("lockouts", sa.Integer, nullable=False, default=0),
    sa.Column("created", sa.Double, nullable=False),
    # The leaf of the event that created the account (NULL without a log).
    sa.Column("leaf", sa.BigInteger, nullable=True),
)

services_table = sa.Table(
    "access_services",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(64), sa.ForeignKey("access_tenants.name"), nullable=False),
    sa.Column("roles", sa.Text, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("leaf", sa.BigInteger, nullable=True),
)

tokens_table = sa.Table(
    "access_tokens",
    metadata,
    sa.Column("id", sa.String(24), primary_key=True),
    sa.Column("principal_id", sa.String(80), nullable=False, index=True),
    # SHA-256 of the secret. The secret is 256 random bits, so no guessing or dictionary
    # attack can find it from the hash: a slow password hash would only make every API call
    # slow. The hash keeps a database dump from being a list of working tokens.
    sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("label", sa.Text, nullable=False, default=""),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=True),
    sa.Column("revoked_at", sa.Double, nullable=True),
    sa.Column("last_used", sa.Double, nullable=True),
    sa.Column("leaf", sa.BigInteger, nullable=True),
)

events_table = sa.Table(
    "access_events",
    metadata,
    # BIGINT on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the autoincrementing rowid.
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("principal_id", sa.String(80), nullable=False, index=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # canonical JSON
    sa.Column("leaf", sa.BigInteger, nullable=True),
)

_EVENT_COLUMNS: Final = ("id", "at", "principal_id", "action", "detail")


# -- errors -----------------------------------------------------------------------------------


class AuthReason(StrEnum):
    """Why an authentication failed; each becomes a security event. Never shown to clients."""

    MALFORMED = "malformed"  #: not a token at all
    UNKNOWN = "unknown"  #: no such user or token (or a token id with the wrong secret)
    BAD_PASSWORD = "bad_password"  #: the user exists, the password is wrong
    EXPIRED = "expired"
    REVOKED = "revoked"
    DISABLED = "disabled"  #: the account (or the token's owner) is disabled
    LOCKED = "locked"  #: too many failed passwords


class AuthError(MsecError):
    """Authentication failed. ``str(exc)`` is safe to show to the client; ``reason``,
    ``principal_id`` (the account concerned, when known) and ``token_id`` are for the security
    event and must not be shown: they would tell an attacker which part was wrong."""

    public_message = "authentication failed"

    def __init__(
        self,
        reason: AuthReason,
        *,
        principal_id: str | None = None,
        token_id: str | None = None,
    ) -> None:
        super().__init__(self.public_message)
        self.reason = reason
        self.principal_id = principal_id
        self.token_id = token_id


class InvalidCredentials(AuthError):
    """A user name and password did not authenticate (reasons ``unknown``, ``bad_password``,
    ``disabled``): the message is the same for all."""

    public_message = "invalid user name or password"


class LockedOut(AuthError):
    """The account is locked after repeated failures until ``until`` (Unix time); the
    password was not checked. Showing this to the client tells it that the account exists:
    an API that must not may answer it like :class:`InvalidCredentials`."""

    public_message = "too many failed logins: try again later"

    def __init__(self, *, principal_id: str, until: float) -> None:
        super().__init__(AuthReason.LOCKED, principal_id=principal_id)
        self.until = until


class InvalidToken(AuthError):
    """A bearer token did not authenticate (reasons ``malformed``, ``unknown``, ``expired``,
    ``revoked``, ``disabled``): the message is the same for all."""

    public_message = "invalid token"


class PrincipalError(MsecError):
    """A management call cannot be done as asked (the message says why)."""


class UnknownPrincipal(PrincipalError):
    """No such user or service account."""


class DuplicatePrincipal(PrincipalError):
    """The name is taken (users and services have separate name spaces)."""


class UnknownToken(PrincipalError):
    """No token with that id."""


# -- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user account as stored, without its password hash."""

    name: str
    tenant: str
    roles: frozenset[str]
    subject: str | None
    disabled: bool
    failed_logins: int
    locked_until: float | None
    created: float
    leaf: int | None = None

    @property
    def principal_id(self) -> str:
        return f"{PrincipalKind.USER.value}:{self.name}"

    def locked(self, at: float) -> bool:
        """Whether the account is locked out at time ``at``."""
        return self.locked_until is not None and self.locked_until > at


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """A service account as stored (it has no password: it uses tokens)."""

    name: str
    tenant: str
    roles: frozenset[str]
    disabled: bool
    created: float
    leaf: int | None = None

    @property
    def principal_id(self) -> str:
        return f"{PrincipalKind.SERVICE.value}:{self.name}"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """An API token as stored, without its secret or the secret's hash."""

    id: str
    principal_id: str
    label: str
    created: float
    expires_at: float | None
    revoked_at: float | None
    last_used: float | None
    leaf: int | None = None

    def state(self, at: float) -> Literal["active", "expired", "revoked"]:
        """What the token is at time ``at`` (revoked wins over expired)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= at:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class AccessEvent:
    """One change of an account or token, as logged."""

    id: int
    at: float
    principal_id: str
    action: str
    detail: dict[str, Any]
    leaf: int | None = None


def parse_principal_id(principal_id: str) -> tuple[PrincipalKind, str]:
    """``"user:maria"`` → ``(PrincipalKind.USER, "maria")``; ``ValueError`` for anything but
    ``user:<name>`` or ``service:<name>`` with a valid name."""
    kind, sep, name = principal_id.partition(":") if isinstance(principal_id, str) else ("", "", "")
    users_or_services = (PrincipalKind.USER.value, PrincipalKind.SERVICE.value)
    if sep and kind in users_or_services and _NAME.fullmatch(name):
        return PrincipalKind(kind), name
    raise ValueError(f"not a principal id (user:<name> or service:<name>): {principal_id!r}")


def access_event_leaf_data(row: Sequence[Any]) -> bytes:
    """Leaf data of an ``access_events`` row ``(id, at, principal_id, action, detail)`` as
    stored: canonical CBOR ``["msec.access.event/1", id, at, principal_id, action, detail]``
    (``detail`` is the stored JSON text)."""
    id_, at, principal_id, action, detail = row
    return cbor2.dumps(
        [_EVENT_TAG, int(id_), float(at), principal_id, action, detail], canonical=True
    )


# -- the store --------------------------------------------------------------------------------


class SqlPrincipals:
    """Tenants, users, service accounts and API tokens in the platform database.

    Build the engine with :func:`msec.twin.make_engine` and call :meth:`create_schema` once
    (with a ``log``, after the log's own ``create_schema``). Safe to share between threads
    and processes. ``clock`` gives the current Unix time (injectable for tests);
    ``password_hash`` the pwdlib hasher (default: argon2id with argon2-cffi's default
    costs); ``extra_roles`` roles accepted besides :data:`~msec.access.model.ROLES`.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        log: SqlLog | None = None,
        clock: Callable[[], float] = time.time,
        password_hash: PasswordHash | None = None,
        max_failures: int = 5,
        lockout_s: float = 900.0,
        extra_roles: Iterable[str] = (),
    ) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise MsecError(
                f"SqlPrincipals supports sqlite and postgresql, not {engine.dialect.name!r}"
            )
        if max_failures < 1:
            raise ValueError("max_failures is at least 1")
        if not lockout_s > 0:
            raise ValueError("lockout_s must be positive")
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        #: With a log, every account or token change is a leaf of it (same transaction).
        self.log = log
        self._clock = clock
        self._passwords = PasswordChecker(password_hash)
        self.max_failures = max_failures
        self.lockout_s = float(lockout_s)
        extra = frozenset(extra_roles)
        for role in extra:
            _check_name(role, "role")
        self.roles: frozenset[str] = ROLES | extra
        """The roles this store accepts."""

    def __repr__(self) -> str:
        return f"SqlPrincipals({self._engine.url.render_as_string(hide_password=True)!r})"

    def create_schema(self) -> None:
        """Create the ``access_`` tables where missing, and the tenants ``default``,
        ``santander`` and ``fujisawa`` (not logged: every installation has them). Idempotent."""
        metadata.create_all(self._engine)
        dialect_insert = sqlite.insert if self._sqlite else postgresql.insert
        now = self._clock()
        with self._engine.begin() as conn:
            for name in (DEFAULT_TENANT, *TENANTS):
                conn.execute(
                    dialect_insert(tenants_table)
                    .values(name=name, created=now)
                    .on_conflict_do_nothing(index_elements=["name"])
                )

    # -- tenants ------------------------------------------------------------------------------

    def add_tenant(self, name: str) -> None:
        """Add tenant ``name``. ``DuplicatePrincipal`` if it exists; ``ValueError`` for a bad
        name."""
        _check_name(name, "tenant")
        with self._writing() as change:
            if self._tenant_exists(change.conn, name):
                raise DuplicatePrincipal(f"tenant {name!r} exists")
            change.conn.execute(tenants_table.insert().values(name=name, created=change.now))
            change.record(f"tenant:{name}", "tenant.added", {})

    def tenants(self) -> list[str]:
        """Every tenant's name, sorted."""
        with self._engine.connect() as conn:
            query = sa.select(tenants_table.c.name).order_by(tenants_table.c.name)
            return list(conn.execute(query).scalars())

    # -- users --------------------------------------------------------------------------------

    def add_user(
        self,
        name: str,
        *,
        tenant: str,
        roles: Iterable[str],
        password: str,
        subject: str | None = None,
    ) -> UserInfo:
        """Create user ``name`` with an argon2id hash of ``password`` and return it.

        ``subject`` is the data subject the user is (a citizen's own account), if any.
        ``ValueError`` for a bad name, an unknown role or tenant, or a password breaking
        :func:`~msec.access.passwords.check_password_rules`; ``DuplicatePrincipal`` if the
        name is taken.
        """
        _check_name(name, "user name")
        role_set = self._check_roles(roles)
        subject = _check_subject(subject)
        check_password_rules(password)
        password_hash = self._passwords.hash(password)  # slow: before taking any lock
        try:
            with self._writing() as change:
                self._require_tenant(change.conn, tenant)
                if self._get_user(change.conn, name) is not None:
                    raise DuplicatePrincipal(f"user {name!r} exists")
                leaf = change.record(
                    _user_id(name),
                    "user.added",
                    {"tenant": tenant, "roles": sorted(role_set), "subject": subject},
                )
                change.conn.execute(
                    users_table.insert().values(
                        name=name,
                        tenant=tenant,
                        roles=_join_roles(role_set),
                        password_hash=password_hash,
                        subject=subject,
                        disabled=False,
                        failed_logins=0,
                        locked_until=None,
                        lockouts=0,
                        created=change.now,
                        leaf=leaf,
                    )
                )
        except sa.exc.IntegrityError:  # a concurrent add of the same name
            raise DuplicatePrincipal(f"user {name!r} exists") from None
        return self.get_user(name)  # type: ignore[return-value]

    def get_user(self, name: str) -> UserInfo | None:
        """User ``name`` as stored, or ``None``."""
        with self._engine.connect() as conn:
            row = self._get_user(conn, name)
        return None if row is None else _user(row)

    def list_users(self, *, tenant: str | None = None) -> list[UserInfo]:
        """Every user (of ``tenant``, if given), by name."""
        query = users_table.select().order_by(users_table.c.name)
        if tenant is not None:
            query = query.where(users_table.c.tenant == tenant)
        with self._engine.connect() as conn:
            return [_user(row) for row in conn.execute(query)]

    def disable_user(self, name: str) -> bool:
        """Disable user ``name``: its password and tokens fail from the next request on.
        True if this call disabled it (False: it already was). ``UnknownPrincipal`` if none."""
        return self._set_disabled(users_table, _user_id(name), name, True)

    def enable_user(self, name: str) -> bool:
        """Enable user ``name`` again, and lift any lockout. True if this call changed
        something. ``UnknownPrincipal`` if none."""
        return self._set_disabled(users_table, _user_id(name), name, False)

    def set_roles(self, name: str, roles: Iterable[str]) -> None:
        """Replace user ``name``'s roles (in effect on its next request, tokens included).
        ``UnknownPrincipal`` if none; ``ValueError`` for an unknown role."""
        role_set = self._check_roles(roles)
        with self._writing() as change:
            row = self._get_user(change.conn, name, for_update=True)
            if row is None:
                raise UnknownPrincipal(f"no user {name!r}")
            if _split_roles(row.roles) == role_set:
                return
            change.conn.execute(
                users_table.update()
                .where(users_table.c.name == name)
                .values(roles=_join_roles(role_set))
            )
            change.record(_user_id(name), "user.roles", {"roles": sorted(role_set)})

    def set_password(self, name: str, password: str) -> None:
        """Replace user ``name``'s password and lift any lockout; logged as the fact that it
        changed (never the hash). Tokens already issued stay valid: revoke them with
        :meth:`revoke_all` if the password was compromised. ``UnknownPrincipal`` if none;
        ``ValueError`` if the password breaks the rules."""
        check_password_rules(password)
        password_hash = self._passwords.hash(password)
        with self._writing() as change:
            if self._get_user(change.conn, name, for_update=True) is None:
                raise UnknownPrincipal(f"no user {name!r}")
            change.conn.execute(
                users_table.update()
                .where(users_table.c.name == name)
                .values(password_hash=password_hash, failed_logins=0, locked_until=None,
                        lockouts=0)
            )  # fmt: skip
            change.record(_user_id(name), "user.password", {})

    def authenticate_password(self, name: str, password: str) -> Principal:
        """The principal of user ``name`` if ``password`` is right, else an :class:`AuthError`.

        :class:`InvalidCredentials` for an unknown user, a wrong password (both take one
        argon2 check) or a disabled account (checked after the password, so that a guess
        does not learn it); :class:`LockedOut` while the account is locked. A wrong password
        counts towards the lockout; a right one resets the count. A right password whose
        hash has older costs is rehashed. User names are matched in lower case.
        """
        key = name.lower() if isinstance(name, str) and name.isascii() else ""
        if not isinstance(password, str):
            password = ""
        row = None
        if _NAME.fullmatch(key):
            row = self._reserve_attempt(key)
        if row is None:
            self._passwords.verify_absent(password)
            principal_id = _user_id(key) if _NAME.fullmatch(key) else None
            raise InvalidCredentials(AuthReason.UNKNOWN, principal_id=principal_id)
        matches, new_hash = self._passwords.verify(password, row.password_hash)
        if not matches:
            self._after_failure(key)
            raise InvalidCredentials(AuthReason.BAD_PASSWORD, principal_id=_user_id(key))
        self._after_success(key, new_hash)
        if row.disabled:
            raise InvalidCredentials(AuthReason.DISABLED, principal_id=_user_id(key))
        return _user_principal(row)

    def _reserve_attempt(self, name: str) -> sa.Row | None:
        """Count one failure in advance (undone by a success) and return the user's row;
        ``None`` if there is no such user; :class:`LockedOut` if it is locked, or if earlier
        attempts still being checked have used up its failures (then it is locked now)."""
        with self._writing(log=False) as change:
            row = self._get_user(change.conn, name, for_update=True)
            if row is None:
                return None
            locked_until = row.locked_until
            if locked_until is None or locked_until <= change.now:
                if row.failed_logins < self.max_failures:
                    change.conn.execute(
                        users_table.update()
                        .where(users_table.c.name == name)
                        .values(failed_logins=row.failed_logins + 1)
                    )
                    return row
                locked_until = self._lock(change, row)
        raise LockedOut(principal_id=_user_id(name), until=locked_until)

    def _after_failure(self, name: str) -> None:
        with self._writing(log=False) as change:
            row = self._get_user(change.conn, name, for_update=True)
            if row is None or (row.locked_until is not None and row.locked_until > change.now):
                return
            if row.failed_logins >= self.max_failures:
                self._lock(change, row)

    def _lock(self, change: _Change, row: sa.Row) -> float:
        duration = min(self.lockout_s * 2.0 ** min(row.lockouts, 32), _MAX_LOCKOUT_S)
        until = change.now + max(duration, self.lockout_s)
        change.conn.execute(
            users_table.update()
            .where(users_table.c.name == row.name)
            .values(locked_until=until, lockouts=row.lockouts + 1, failed_logins=0)
        )
        return until

    def _after_success(self, name: str, new_hash: str | None) -> None:
        values: dict[str, Any] = {"failed_logins": 0, "lockouts": 0, "locked_until": None}
        if new_hash is not None:
            values["password_hash"] = new_hash  # same password, current costs: not a change
        with self._writing(log=False) as change:
            change.conn.execute(
                users_table.update().where(users_table.c.name == name).values(**values)
            )

    # -- service accounts ---------------------------------------------------------------------

    def add_service(self, name: str, *, tenant: str, roles: Iterable[str]) -> ServiceInfo:
        """Create service account ``name`` (no password: it authenticates with tokens).
        ``ValueError`` for a bad name, role or tenant; ``DuplicatePrincipal`` if taken."""
        _check_name(name, "service name")
        role_set = self._check_roles(roles)
        try:
            with self._writing() as change:
                self._require_tenant(change.conn, tenant)
                if self._get_service(change.conn, name) is not None:
                    raise DuplicatePrincipal(f"service {name!r} exists")
                leaf = change.record(
                    _service_id(name),
                    "service.added",
                    {"tenant": tenant, "roles": sorted(role_set)},
                )
                change.conn.execute(
                    services_table.insert().values(
                        name=name,
                        tenant=tenant,
                        roles=_join_roles(role_set),
                        disabled=False,
                        created=change.now,
                        leaf=leaf,
                    )
                )
        except sa.exc.IntegrityError:
            raise DuplicatePrincipal(f"service {name!r} exists") from None
        return self.get_service(name)  # type: ignore[return-value]

    def get_service(self, name: str) -> ServiceInfo | None:
        """Service account ``name`` as stored, or ``None``."""
        with self._engine.connect() as conn:
            row = self._get_service(conn, name)
        return None if row is None else _service(row)

    def list_services(self, *, tenant: str | None = None) -> list[ServiceInfo]:
        """Every service account (of ``tenant``, if given), by name."""
        query = services_table.select().order_by(services_table.c.name)
        if tenant is not None:
            query = query.where(services_table.c.tenant == tenant)
        with self._engine.connect() as conn:
            return [_service(row) for row in conn.execute(query)]

    def disable_service(self, name: str) -> bool:
        """Disable service account ``name``: its tokens fail from the next request on. True
        if this call disabled it. ``UnknownPrincipal`` if none."""
        return self._set_disabled(services_table, _service_id(name), name, True)

    def enable_service(self, name: str) -> bool:
        """Enable service account ``name`` again. True if this call enabled it.
        ``UnknownPrincipal`` if none."""
        return self._set_disabled(services_table, _service_id(name), name, False)

    # -- principals ---------------------------------------------------------------------------

    def principal(self, principal_id: str) -> Principal | None:
        """The :class:`~msec.access.model.Principal` of an enabled ``user:<name>`` or
        ``service:<name>``; ``None`` for an unknown, disabled or malformed id (devices live in
        the device registry, not here)."""
        try:
            kind, name = parse_principal_id(principal_id)
        except ValueError:
            return None
        with self._engine.connect() as conn:
            return self._enabled_principal(conn, kind, name)

    # -- tokens -------------------------------------------------------------------------------

    def issue_token(
        self, principal_id: str, *, ttl_s: float | None = 3600.0, label: str = ""
    ) -> tuple[str, TokenInfo]:
        """Issue a bearer token for an enabled principal; return ``(token, info)``.

        ``token`` (``msec_<24 hex id>_<43 url-safe chars>``) is the only copy of the secret:
        hand it over once and never store or log it. ``ttl_s`` seconds of validity (``None``:
        until revoked). ``ValueError`` for a malformed id, a ttl that is not a positive
        finite number or a label over 200 characters; ``UnknownPrincipal`` if there is no
        such principal; ``PrincipalError`` if it is disabled.
        """
        kind, name = parse_principal_id(principal_id)
        if ttl_s is not None and not (isinstance(ttl_s, int | float) and 0 < ttl_s < math.inf):
            raise ValueError("ttl_s is a positive number of seconds, or None")
        if not isinstance(label, str) or len(label) > _MAX_LABEL or "\x00" in label:
            raise ValueError(f"a label is text of at most {_MAX_LABEL} characters, without NUL")
        token_id = secrets.token_hex(12)
        secret = secrets.token_urlsafe(32)
        with self._writing() as change:
            owner = self._principal_row(change.conn, kind, name, for_update=True)
            if owner is None:
                raise UnknownPrincipal(f"no principal {principal_id!r}")
            if owner.disabled:
                raise PrincipalError(f"{principal_id} is disabled: no token issued")
            expires_at = None if ttl_s is None else change.now + float(ttl_s)
            leaf = change.record(
                principal_id,
                "token.issued",
                {"token": token_id, "label": label, "expires_at": expires_at},
            )
            change.conn.execute(
                tokens_table.insert().values(
                    id=token_id,
                    principal_id=principal_id,
                    secret_hash=_secret_hash(secret),
                    label=label,
                    created=change.now,
                    expires_at=expires_at,
                    revoked_at=None,
                    last_used=None,
                    leaf=leaf,
                )
            )
            info = TokenInfo(token_id, principal_id, label, change.now, expires_at, None, None,
                             leaf)  # fmt: skip
        return f"{TOKEN_PREFIX}{token_id}_{secret}", info

    def authenticate_token(self, token: str) -> Principal:
        """The principal a bearer token stands for, as it is now (current roles and tenant).

        Raises :class:`InvalidToken` with reason ``malformed`` (not a token), ``unknown`` (no
        such id, or the secret does not match: compared in constant time), ``revoked``,
        ``expired``, or ``disabled`` (the owner is disabled or gone). Nothing is cached:
        each call reads the token and its owner.
        """
        match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
        if match is None:
            raise InvalidToken(AuthReason.MALFORMED)
        token_id, secret = match.groups()
        now = self._clock()
        with self._engine.connect() as conn:
            row = conn.execute(tokens_table.select().where(tokens_table.c.id == token_id)).first()
            if row is None or not hmac.compare_digest(bytes(row.secret_hash), _secret_hash(secret)):
                raise InvalidToken(AuthReason.UNKNOWN, token_id=token_id)
            owner = row.principal_id
            if row.revoked_at is not None:
                raise InvalidToken(AuthReason.REVOKED, principal_id=owner, token_id=token_id)
            if row.expires_at is not None and row.expires_at <= now:
                raise InvalidToken(AuthReason.EXPIRED, principal_id=owner, token_id=token_id)
            try:
                kind, name = parse_principal_id(owner)
            except ValueError:  # an owner id this store never writes: a tampered row
                raise InvalidToken(
                    AuthReason.DISABLED, principal_id=owner, token_id=token_id
                ) from None
            principal = self._enabled_principal(conn, kind, name)
        if principal is None:
            raise InvalidToken(AuthReason.DISABLED, principal_id=owner, token_id=token_id)
        if row.last_used is None or row.last_used < now - _LAST_USED_STEP_S:
            with self._engine.begin() as conn:
                conn.execute(
                    tokens_table.update().where(tokens_table.c.id == token_id).values(last_used=now)
                )
        return principal

    def revoke_token(self, token_id: str) -> bool:
        """Revoke token ``token_id`` (for good: it fails from the next request on). True if
        this call revoked it, False if it already was. ``UnknownToken`` if there is none."""
        if not isinstance(token_id, str) or not _TOKEN_ID.fullmatch(token_id):
            raise UnknownToken(f"no token {token_id!r}")
        with self._writing() as change:
            row = change.conn.execute(
                tokens_table.select().where(tokens_table.c.id == token_id).with_for_update()
            ).first()
            if row is None:
                raise UnknownToken(f"no token {token_id!r}")
            if row.revoked_at is not None:
                return False
            self._revoke(change, row.id, row.principal_id)
            return True

    def revoke_all(self, principal_id: str) -> int:
        """Revoke every token of ``principal_id`` not yet revoked; return how many (0 for an
        unknown principal)."""
        with self._writing() as change:
            c = tokens_table.c
            rows = change.conn.execute(
                sa.select(c.id)
                .where(c.principal_id == principal_id, c.revoked_at.is_(None))
                .order_by(c.created, c.id)
                .with_for_update()
            ).all()
            for (token_id,) in rows:
                self._revoke(change, token_id, principal_id)
        return len(rows)

    def _revoke(self, change: _Change, token_id: str, principal_id: str) -> None:
        change.conn.execute(
            tokens_table.update().where(tokens_table.c.id == token_id).values(revoked_at=change.now)
        )
        change.record(principal_id, "token.revoked", {"token": token_id})

    def list_tokens(self, principal_id: str) -> list[TokenInfo]:
        """Every token of ``principal_id`` (revoked and expired ones included), oldest first."""
        c = tokens_table.c
        query = tokens_table.select().where(c.principal_id == principal_id)
        with self._engine.connect() as conn:
            return [_token(row) for row in conn.execute(query.order_by(c.created, c.id))]

    def token_info(self, token_id: str) -> TokenInfo | None:
        """Token ``token_id`` as stored (no secret), or ``None``."""
        with self._engine.connect() as conn:
            row = conn.execute(tokens_table.select().where(tokens_table.c.id == token_id)).first()
        return None if row is None else _token(row)

    # -- the account audit trail --------------------------------------------------------------

    def events(self, *, principal_id: str | None = None, limit: int = 100) -> list[AccessEvent]:
        """Logged account and token changes (of ``principal_id``, if given), newest first."""
        if limit <= 0:
            return []
        c = events_table.c
        query = events_table.select().order_by(c.id.desc()).limit(limit)
        if principal_id is not None:
            query = query.where(c.principal_id == principal_id)
        with self._engine.connect() as conn:
            return [
                AccessEvent(int(r.id), r.at, r.principal_id, r.action, json.loads(r.detail),
                            None if r.leaf is None else int(r.leaf))
                for r in conn.execute(query)
            ]  # fmt: skip

    def leaf_sources(self) -> dict[str, LeafSource]:
        """The auditor's source of ``access`` leaves (``msec verify``)."""
        return {ACCESS_LEAF: AccessEventLeaves()}

    # -- helpers ------------------------------------------------------------------------------

    @contextmanager
    def _writing(self, *, log: bool = True) -> Iterator[_Change]:
        """A write transaction: on SQLite it holds the database's write lock from the start
        (``BEGIN IMMEDIATE``), so read-modify-write cannot interleave; with ``log`` and a
        log it holds the log's lock, taken first, so that writers cannot deadlock."""
        with self._engine.begin() as conn:
            if self._sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            the_log = self.log if log else None
            first = the_log.lock(conn) if the_log is not None else None
            yield _Change(conn, the_log, first, self._clock())

    def _check_roles(self, roles: Iterable[str]) -> frozenset[str]:
        if isinstance(roles, str):
            raise ValueError("roles is a collection of role names, not one string")
        role_set = frozenset(roles)
        unknown = sorted(repr(r) for r in role_set if r not in self.roles)
        if unknown:
            raise ValueError(f"unknown roles {unknown}; known: {sorted(self.roles)}")
        return role_set

    @staticmethod
    def _tenant_exists(conn: sa.Connection, name: str) -> bool:
        query = sa.select(tenants_table.c.name).where(tenants_table.c.name == name)
        return conn.execute(query).first() is not None

    def _require_tenant(self, conn: sa.Connection, tenant: str) -> None:
        if not isinstance(tenant, str) or not self._tenant_exists(conn, tenant):
            raise ValueError(f"no tenant {tenant!r}")

    @staticmethod
    def _get_user(conn: sa.Connection, name: str, *, for_update: bool = False) -> sa.Row | None:
        query = users_table.select().where(users_table.c.name == name)
        return conn.execute(query.with_for_update() if for_update else query).first()

    @staticmethod
    def _get_service(conn: sa.Connection, name: str, *, for_update: bool = False) -> sa.Row | None:
        query = services_table.select().where(services_table.c.name == name)
        return conn.execute(query.with_for_update() if for_update else query).first()

    def _principal_row(
        self, conn: sa.Connection, kind: PrincipalKind, name: str, *, for_update: bool = False
    ) -> sa.Row | None:
        if kind is PrincipalKind.USER:
            return self._get_user(conn, name, for_update=for_update)
        return self._get_service(conn, name, for_update=for_update)

    def _enabled_principal(
        self, conn: sa.Connection, kind: PrincipalKind, name: str
    ) -> Principal | None:
        row = self._principal_row(conn, kind, name)
        if row is None or row.disabled:
            return None
        if kind is PrincipalKind.USER:
            return _user_principal(row)
        return Principal(_service_id(name), PrincipalKind.SERVICE, row.tenant,
                         _split_roles(row.roles))  # fmt: skip

    def _set_disabled(self, table: sa.Table, principal_id: str, name: str, value: bool) -> bool:
        kind = "user" if table is users_table else "service"
        with self._writing() as change:
            query = table.select().where(table.c.name == name).with_for_update()
            row = change.conn.execute(query).first()
            if row is None:
                raise UnknownPrincipal(f"no {kind} {name!r}")
            values: dict[str, Any] = {"disabled": value}
            locked = (
                table is users_table
                and not value
                and row.locked_until is not None
                and row.locked_until > change.now
            )
            if locked:
                values.update(failed_logins=0, locked_until=None, lockouts=0)
            if bool(row.disabled) == value and not locked:
                return False
            change.conn.execute(table.update().where(table.c.name == name).values(**values))
            change.record(principal_id, f"{kind}.{'disabled' if value else 'enabled'}", {})
            return True


class _Change:
    """One write transaction: its connection, its time, and the events it logs."""

    def __init__(
        self, conn: sa.Connection, log: SqlLog | None, next_leaf: int | None, now: float
    ) -> None:
        self.conn = conn
        self.now = now
        self._log = log
        self._next_leaf = next_leaf

    def record(self, principal_id: str, action: str, detail: Mapping[str, Any]) -> int | None:
        """Store one event (and, with a log, append its leaf); return the leaf index."""
        text = json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        leaf = self._next_leaf
        values = {
            "at": self.now, "principal_id": principal_id, "action": action, "detail": text,
            "leaf": leaf,
        }  # fmt: skip
        event_id = self.conn.execute(
            events_table.insert().values(**values).returning(events_table.c.id)
        ).scalar_one()
        if self._log is None or leaf is None:
            return None
        data = access_event_leaf_data((event_id, self.now, principal_id, action, text))
        index = self._log.append([(leaf_hash(data), ACCESS_LEAF, str(event_id))], conn=self.conn)
        if index != leaf:  # the lock held since the transaction began makes this impossible
            raise LogError(f"access event {event_id} went to leaf {index}, not {leaf}")
        self._next_leaf = leaf + 1
        return leaf


class AccessEventLeaves:
    """:class:`~msec.tlog.audit.LeafSource` of ``access`` leaves (ref: ``access_events`` id)."""

    def leaf_data(self, conn: sa.Connection, refs: Sequence[str]) -> dict[str, bytes]:
        """The leaf data recomputed from the stored events; refs without a row are left out."""
        ids = sorted({int(ref) for ref in refs if ref.isdigit() and len(ref) <= 18})
        c = events_table.c
        columns = [c[name] for name in _EVENT_COLUMNS]
        found: dict[str, bytes] = {}
        for start in range(0, len(ids), 500):
            query = sa.select(*columns).where(c.id.in_(ids[start : start + 500]))
            for row in conn.execute(query):
                found[str(row[0])] = access_event_leaf_data(tuple(row))
        return found

    def leaf_index(self, conn: sa.Connection, ref: str) -> int | None:
        """The leaf index stored with event ``ref``, if any."""
        if not ref.isdigit() or len(ref) > 18:
            return None
        query = sa.select(events_table.c.leaf).where(events_table.c.id == int(ref))
        found = conn.execute(query).scalar()
        return None if found is None else int(found)

    def count_in(self, conn: sa.Connection) -> int:
        """How many events are stored."""
        return int(conn.execute(sa.select(sa.func.count()).select_from(events_table)).scalar_one())

    def refs_in(self, conn: sa.Connection) -> Iterator[str]:
        """The ref (id) of every stored event."""
        for (id_,) in conn.execute(sa.select(events_table.c.id)):
            yield str(id_)


# -- row conversions --------------------------------------------------------------------------


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"{what} {name!r} is not 1-64 of a-z 0-9 . _ - (lower case, starting with a-z 0-9)"
        )


def _check_subject(subject: str | None) -> str | None:
    if subject is None:
        return None
    if not isinstance(subject, str) or not subject or len(subject) > _MAX_SUBJECT:
        raise ValueError(f"a subject is non-empty text of at most {_MAX_SUBJECT} characters")
    if "\x00" in subject:
        raise ValueError("a subject holds no NUL character")
    return subject


def _secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def _user_id(name: str) -> str:
    return f"{PrincipalKind.USER.value}:{name}"


def _service_id(name: str) -> str:
    return f"{PrincipalKind.SERVICE.value}:{name}"


def _join_roles(roles: Iterable[str]) -> str:
    return ",".join(sorted(roles))


def _split_roles(text: str) -> frozenset[str]:
    return frozenset(r for r in text.split(",") if r)


def _user_principal(row: sa.Row) -> Principal:
    return Principal(
        _user_id(row.name), PrincipalKind.USER, row.tenant, _split_roles(row.roles), row.subject
    )


def _user(row: sa.Row) -> UserInfo:
    return UserInfo(
        name=row.name,
        tenant=row.tenant,
        roles=_split_roles(row.roles),
        subject=row.subject,
        disabled=bool(row.disabled),
        failed_logins=int(row.failed_logins),
        locked_until=row.locked_until,
        created=row.created,
        leaf=None if row.leaf is None else int(row.leaf),
    )


def _service(row: sa.Row) -> ServiceInfo:
    return ServiceInfo(
        name=row.name,
        tenant=row.tenant,
        roles=_split_roles(row.roles),
        disabled=bool(row.disabled),
        created=row.created,
        leaf=None if row.leaf is None else int(row.leaf),
    )


def _token(row: sa.Row) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        principal_id=row.principal_id,
        label=row.label,
        created=row.created,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used=row.last_used,
        leaf=None if row.leaf is None else int(row.leaf),
    )
