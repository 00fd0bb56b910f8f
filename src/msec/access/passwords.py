"""Password hashing for user accounts: argon2id through pwdlib, and the rules a password obeys.

Only :mod:`msec.access.principals` uses this module; it is separate so that the choice of
hash and its cost sit in one place.
"""

from __future__ import annotations

import secrets
import threading
from typing import Final

from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher

__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "PasswordChecker",
    "check_password_rules",
    "default_password_hash",
]

MIN_PASSWORD_LENGTH: Final = 8
"""Shortest password accepted when one is set (NIST SP 800-63B's minimum)."""
MAX_PASSWORD_LENGTH: Final = 1024
"""Longest password accepted, when set or tried: caps what one login attempt may cost us."""


def default_password_hash() -> PasswordHash:
    """argon2id with argon2-cffi's defaults (RFC 9106's low-memory profile: t=3, m=64 MiB,
    p=4); about a quarter of a second a hash on a small server core."""
    return PasswordHash((Argon2Hasher(),))


def check_password_rules(password: str) -> None:
    """Raise ``ValueError`` unless ``password`` may be set: a str of
    :data:`MIN_PASSWORD_LENGTH` to :data:`MAX_PASSWORD_LENGTH` characters. The message never
    quotes the password."""
    if not isinstance(password, str):
        raise ValueError("a password is text")
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise ValueError(
            f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
        )


class PasswordChecker:
    """Hashes and checks passwords with one :class:`~pwdlib.PasswordHash` (its first hasher
    makes new hashes; the others are still recognised when checking).

    Thread-safe. Holds no password; its ``repr`` shows nothing secret.
    """

    def __init__(self, password_hash: PasswordHash | None = None) -> None:
        self._hash = password_hash or default_password_hash()
        self._dummy: str | None = None
        self._dummy_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PasswordChecker({type(self._hash.current_hasher).__name__})"

    def hash(self, password: str) -> str:
        """A new salted hash of ``password`` (already checked against the rules)."""
        return self._hash.hash(password)

    def verify(self, password: str, stored: str) -> tuple[bool, str | None]:
        """Whether ``password`` matches ``stored``, and a new hash to store in its place when
        it matches but was made by an older hasher or with other costs (else ``None``).

        A stored hash no configured hasher recognises never matches (fails closed: such a
        row can only come from another configuration or from tampering).
        """
        if len(password) > MAX_PASSWORD_LENGTH:
            self.verify_absent(password[:MAX_PASSWORD_LENGTH])
            return False, None
        try:
            return self._hash.verify_and_update(password, stored)
        except UnknownHashError:
            self.verify_absent(password)
            return False, None

    def verify_absent(self, password: str) -> None:
        """Spend the time of one :meth:`verify` on nothing: for an unknown account, so that
        "no such user" and "wrong password" cannot be told apart by how long they take."""
        self._hash.verify(password[:MAX_PASSWORD_LENGTH], self._dummy_hash())

    def _dummy_hash(self) -> str:
        # Made on first use, not at construction: commands that never check a password
        # (listing users) should not pay for a hash.
        with self._dummy_lock:
            if self._dummy is None:
                self._dummy = self._hash.hash(secrets.token_urlsafe(24))
            return self._dummy
