"""Web sessions for people, CSRF tokens for their forms, and login e-mails kept as keyed hashes.

A person logs in once (``/login``) and gets a session cookie: 32 random bytes, of which only
the SHA-256 is stored (``web_sessions``), so a copy of the database opens no session. A
session ends at logout, after ``max_s`` from login, after ``idle_s`` without a request, and
when the account is disabled or deleted (every lookup asks the principal store).

Every form carries a CSRF token: an HMAC, under the installation's web key, of the session
(or, before login, of a random per-browser nonce cookie). A cross-site page can make the
browser send the cookies but cannot read the token, so its forged POST fails.

E-mail addresses used to log in are personal data: the address itself lives in the companion
store (encrypted, erasable); ``web_login_emails`` holds only ``HMAC(web key, address)`` to
find the account at login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa

__all__ = ["CsrfTokens", "LoginEmails", "Session", "SqlSessions", "normalise_email"]

metadata = sa.MetaData()

sessions_table = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("principal_id", sa.String, nullable=False, index=True),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("expires", sa.Double, nullable=False),
    sa.Column("last_seen", sa.Double, nullable=False),
)

emails_table = sa.Table(
    "web_login_emails",
    metadata,
    sa.Column("email_hash", sa.String(64), primary_key=True),
    sa.Column("user_name", sa.String, nullable=False, unique=True),
)

#: How often a session's ``last_seen`` is written (not on every request).
_TOUCH_EVERY_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class Session:
    """One live session. ``key`` is the stored hash: it binds the CSRF token."""

    key: str
    principal_id: str
    created: float
    expires: float
    last_seen: float


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SqlSessions:
    """Server-side sessions on a SQLAlchemy engine. Thread-safe."""

    def __init__(self, engine: sa.Engine, *, max_s: float, idle_s: float) -> None:
        self._engine = engine
        self.max_s = max_s
        self.idle_s = idle_s

    def create_schema(self) -> None:
        metadata.create_all(self._engine)

    def create(self, principal_id: str, *, at: float | None = None) -> tuple[str, Session]:
        """A new session for ``principal_id``: (cookie value, session)."""
        now = time.time() if at is None else at
        token = secrets.token_urlsafe(32)
        session = Session(_hash(token), principal_id, now, now + self.max_s, now)
        with self._engine.begin() as conn:
            # Expired sessions go as new ones come: the table never grows without bound.
            conn.execute(
                sessions_table.delete().where(
                    sa.or_(
                        sessions_table.c.expires < now,
                        sessions_table.c.last_seen < now - self.idle_s,
                    )
                )
            )
            conn.execute(
                sessions_table.insert().values(
                    token_hash=session.key,
                    principal_id=principal_id,
                    created=now,
                    expires=session.expires,
                    last_seen=now,
                )
            )
        return token, session

    def get(self, token: str | None, *, at: float | None = None) -> Session | None:
        """The live session of cookie value ``token``; ``None`` if unknown or ended."""
        if not token or len(token) > 100:
            return None
        now = time.time() if at is None else at
        key = _hash(token)
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(sessions_table).where(sessions_table.c.token_hash == key)
            ).first()
        if row is None:
            return None
        if row.expires <= now or row.last_seen + self.idle_s <= now:
            self.delete(token)
            return None
        if now - row.last_seen > _TOUCH_EVERY_S:
            with self._engine.begin() as conn:
                conn.execute(
                    sessions_table.update()
                    .where(sessions_table.c.token_hash == key)
                    .values(last_seen=now)
                )
        return Session(key, row.principal_id, row.created, row.expires, max(now, row.last_seen))

    def delete(self, token: str) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(
                sessions_table.delete().where(sessions_table.c.token_hash == _hash(token))
            )
        return result.rowcount > 0

    def delete_for(self, principal_id: str) -> int:
        """End every session of ``principal_id`` (logout everywhere, account deleted)."""
        with self._engine.begin() as conn:
            result = conn.execute(
                sessions_table.delete().where(sessions_table.c.principal_id == principal_id)
            )
        return result.rowcount

    def count(self, *, since: float | None = None) -> int:
        """Sessions alive (with a request since ``since``, if given)."""
        query = sa.select(sa.func.count()).select_from(sessions_table)
        if since is not None:
            query = query.where(sessions_table.c.last_seen >= since)
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())


class CsrfTokens:
    """Form tokens: ``HMAC(key, "csrf" || binding)``; binding is a session key or nonce."""

    def __init__(self, key: bytes) -> None:
        self._key = hmac.new(key, b"msec.web/csrf", hashlib.sha256).digest()

    def token(self, binding: str) -> str:
        mac = hmac.new(self._key, binding.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def check(self, binding: str, token: object) -> bool:
        if not binding or not isinstance(token, str) or len(token) > 100:
            return False
        return hmac.compare_digest(self.token(binding).encode(), token.encode())


def normalise_email(address: str) -> str | None:
    """``address`` trimmed and lower-cased if it looks like an e-mail address, else ``None``.

    Deliberately simple (one ``@``, a dot in the domain, no spaces or control characters,
    at most 254 characters): the address is checked by using it, not by a regular
    expression.
    """
    if not isinstance(address, str):
        return None
    address = address.strip().lower()
    local, at, domain = address.partition("@")
    if (
        not at
        or not local
        or "." not in domain.strip(".")
        or "@" in domain
        or len(address) > 254
        or any(c.isspace() or ord(c) < 32 or c in "<>\"'`" for c in address)
    ):
        return None
    return address


class LoginEmails:
    """Which user logs in with which e-mail, by keyed hash only."""

    def __init__(self, engine: sa.Engine, key: bytes) -> None:
        self._engine = engine
        self._key = hmac.new(key, b"msec.web/login-email", hashlib.sha256).digest()

    def create_schema(self) -> None:
        metadata.create_all(self._engine)

    def _digest(self, address: str) -> str:
        return hmac.new(self._key, address.encode(), hashlib.sha256).hexdigest()

    def add(self, address: str, user_name: str) -> bool:
        """Link ``address`` (normalised) to ``user_name``; ``False`` if it is taken."""
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    emails_table.insert().values(
                        email_hash=self._digest(address), user_name=user_name
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True

    def taken(self, address: str) -> bool:
        return self.user_of(address) is not None

    def user_of(self, address: str) -> str | None:
        with self._engine.connect() as conn:
            return conn.execute(
                sa.select(emails_table.c.user_name).where(
                    emails_table.c.email_hash == self._digest(address)
                )
            ).scalar_one_or_none()

    def remove_user(self, user_name: str) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(
                emails_table.delete().where(emails_table.c.user_name == user_name)
            )
        return result.rowcount > 0
