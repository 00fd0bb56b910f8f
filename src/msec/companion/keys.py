"""Key-encryption keys (KEKs) that wrap the per-subject data keys: the pluggable KMS seam.

A :class:`KeyWrapper` wraps and unwraps 32-byte data keys; :class:`FileKeyWrapper` is the
default, AES-256-GCM under a key file. A KMS-backed wrapper implements the same three members
(``key_id``, ``wrap``, ``unwrap``) and is passed in through :class:`KeyRing`. Key material is
never logged and never appears in a ``repr``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from msec.companion.errors import CompanionError

__all__ = ["KEY_SIZE", "FileKeyWrapper", "KeyRing", "KeyWrapper"]

KEY_SIZE: Final = 32
"""Bytes of a KEK and of a data key (AES-256)."""

_NONCE_SIZE: Final = 12


class KeyWrapper(Protocol):
    """Wraps data keys under one key-encryption key (a key file, a KMS key, an HSM key).

    ``key_id`` names the KEK; it is stored beside every wrapped key so that the right KEK is
    picked to unwrap it. It must be stable for the life of the KEK and reveal nothing of it.

    ``wrap(key, aad)`` returns an opaque blob that only ``unwrap(blob, aad)`` with the same
    KEK and the same ``aad`` turns back into ``key``. ``unwrap`` must raise
    :class:`~msec.companion.CompanionError` when the blob was not wrapped by this KEK with
    this ``aad`` or was altered; it must never return a wrong key.
    """

    @property
    def key_id(self) -> str: ...

    def wrap(self, key: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, blob: bytes, aad: bytes) -> bytes: ...


def _create_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file readable by its owner only; ``FileExistsError`` if taken."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class FileKeyWrapper:
    """A :class:`KeyWrapper`: AES-256-GCM under the 32-byte key in the file ``path``.

    With ``create`` (the default) a missing file is created with a fresh random key, mode
    0600 in a 0700 folder; without it, or when the file is not exactly 32 bytes,
    :class:`~msec.companion.CompanionError` is raised. ``key_id`` is the first 16 hex digits
    of SHA-256 of the key: it identifies the key without revealing it. A wrapped blob is
    ``nonce (12 bytes) || ciphertext || tag (16 bytes)``.

    Deleting the file (and every copy of it) destroys the KEK: data keys wrapped only under
    it can no longer be unwrapped.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self._path = Path(path)
        if create and not self._path.exists():
            # FileExistsError: another process created it first; use theirs.
            with contextlib.suppress(FileExistsError):
                _create_private(self._path, AESGCM.generate_key(bit_length=8 * KEY_SIZE))
        try:
            key = self._path.read_bytes()
        except FileNotFoundError:
            raise CompanionError(
                f"key-encryption key file {str(self._path)!r} does not exist"
            ) from None
        if len(key) != KEY_SIZE:
            raise CompanionError(
                f"key-encryption key file {str(self._path)!r} is not a {KEY_SIZE}-byte key"
            )
        self._key_id = hashlib.sha256(key).hexdigest()[:16]
        self._aead = AESGCM(key)

    @property
    def key_id(self) -> str:
        """First 16 hex digits of SHA-256 of the key; not secret."""
        return self._key_id

    @property
    def path(self) -> Path:
        """The key file."""
        return self._path

    def wrap(self, key: bytes, aad: bytes) -> bytes:
        """Return ``key`` encrypted under the KEK with a fresh nonce, bound to ``aad``."""
        nonce = os.urandom(_NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, key, aad)

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        """Return the key in ``blob``; :class:`CompanionError` if it fails authentication."""
        try:
            return self._aead.decrypt(blob[:_NONCE_SIZE], blob[_NONCE_SIZE:], aad)
        except (InvalidTag, ValueError):
            raise CompanionError(
                f"cannot unwrap a data key with the key file {str(self._path)!r} "
                f"(key id {self._key_id}): the wrapped key was altered or moved"
            ) from None

    def __repr__(self) -> str:
        return f"FileKeyWrapper(path={str(self._path)!r}, key_id={self._key_id!r})"


class KeyRing:
    """The current :class:`KeyWrapper`, which wraps new data keys, and older ones by key id.

    Each wrapped data key is stored with the id of the KEK that wrapped it; :meth:`unwrap`
    picks that KEK. After :meth:`SqlCompanion.rotate <msec.companion.SqlCompanion.rotate>`
    every live data key is wrapped under the current KEK and the older ones may be dropped.
    """

    def __init__(self, current: KeyWrapper, *older: KeyWrapper) -> None:
        self._current = current
        self._by_id: dict[str, KeyWrapper] = {w.key_id: w for w in older}
        self._by_id[current.key_id] = current

    @property
    def current(self) -> KeyWrapper:
        """The KEK that wraps new data keys."""
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of every KEK held, the current one first."""
        others = [key_id for key_id in self._by_id if key_id != self._current.key_id]
        return (self._current.key_id, *others)

    def use(self, wrapper: KeyWrapper) -> None:
        """Make ``wrapper`` the current KEK, keeping the previous ones for unwrapping."""
        self._by_id[wrapper.key_id] = wrapper
        self._current = wrapper

    def wrap(self, key: bytes, aad: bytes) -> tuple[str, bytes]:
        """Wrap ``key`` under the current KEK; return ``(key_id, blob)``."""
        return self._current.key_id, self._current.wrap(key, aad)

    def unwrap(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        """Unwrap ``blob`` with the KEK named ``key_id``.

        :class:`CompanionError` if this ring does not hold that KEK (load its key file, or
        restore it from backup) or if the blob fails authentication.
        """
        wrapper = self._by_id.get(key_id)
        if wrapper is None:
            held = ", ".join(self.key_ids)
            raise CompanionError(
                f"a data key is wrapped under key-encryption key {key_id}, which is not loaded "
                f"(loaded: {held}): use the key file it was stored with"
            )
        key = wrapper.unwrap(blob, aad)
        if len(key) != KEY_SIZE:
            raise CompanionError(f"key-encryption key {key_id} returned a malformed data key")
        return key

    def __repr__(self) -> str:
        return f"KeyRing(key_ids={self.key_ids!r})"
