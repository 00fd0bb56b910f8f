"""Errors of the companion store; every one is a :class:`~msec.core.errors.MsecError`."""

from __future__ import annotations

from msec.core.errors import MsecError

__all__ = ["CompanionError", "DuplicateRecord", "UnknownRecord", "UnknownSubject"]


class CompanionError(MsecError):
    """The companion store refused an operation; the message says why.

    Raised as such for a key-encryption key that is missing, malformed or not the one a data
    key was wrapped with, and for a ciphertext or its metadata that fails authentication
    (tampering, or a ciphertext moved to another record or subject). Messages never contain
    key material or plaintext.
    """


class UnknownSubject(CompanionError):
    """No live subject has this name: it was never stored, or it was erased.

    Erasure forgets the name, so the store cannot tell the two apart.
    """


class UnknownRecord(CompanionError):
    """No record has this id: it was never stored, or its subject was erased."""


class DuplicateRecord(CompanionError):
    """A record with this id is already stored (record ids are unique across subjects)."""
