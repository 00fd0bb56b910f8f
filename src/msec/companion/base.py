"""What the companion store hands out, and the canonical bytes it binds and logs. Pure: no I/O.

The encodings here are a format: the transparency log commits to :func:`record_leaf_data` and
:func:`erasure_leaf_data`, and every stored ciphertext is bound to :func:`record_aad`. Change
them only with a new version tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import cbor2

__all__ = [
    "ERASURE_LEAF_KIND",
    "RECORD_LEAF_KIND",
    "Erasure",
    "NewRecord",
    "StoredRecord",
    "data_key_aad",
    "erasure_leaf_data",
    "record_aad",
    "record_leaf_data",
    "record_ref",
    "split_record_ref",
]

RECORD_LEAF_KIND: Final = "record"
"""Log leaf kind of a stored record; its ref is :func:`record_ref`."""

ERASURE_LEAF_KIND: Final = "erasure"
"""Log leaf kind of an erasure; its ref is the subject id."""

_RECORD_LEAF_TAG: Final = "msec.companion.record/1"
_ERASURE_LEAF_TAG: Final = "msec.companion.erasure/1"
_RECORD_AAD_TAG: Final = "msec.companion.record-aad/1"
_DATA_KEY_AAD_TAG: Final = "msec.companion.data-key/1"


def record_leaf_data(
    record_id: str,
    subject_id: str,
    kind: str,
    content_type: str,
    nonce: bytes,
    ciphertext: bytes,
    created: float,
) -> bytes:
    """Return the log leaf data of a stored record: canonical CBOR of its stored bytes.

    ``["msec.companion.record/1", record_id, subject_id, kind, content_type, nonce,
    ciphertext, created]``. The leaf commits to the ciphertext, not the plaintext, so it can
    be recomputed without any key and reveals nothing once the data key is destroyed.
    """
    return cbor2.dumps(
        [
            _RECORD_LEAF_TAG,
            record_id,
            subject_id,
            kind,
            content_type,
            bytes(nonce),
            bytes(ciphertext),
            float(created),
        ],
        canonical=True,
    )


def erasure_leaf_data(subject_id: str, erased_at: float, record_count: int) -> bytes:
    """Return the log leaf data of an erasure.

    Canonical CBOR of ``["msec.companion.erasure/1", subject_id, erased_at, record_count]``.
    """
    return cbor2.dumps(
        [_ERASURE_LEAF_TAG, subject_id, float(erased_at), int(record_count)], canonical=True
    )


def record_aad(record_id: str, subject_id: str, kind: str, content_type: str) -> bytes:
    """Associated data of a record's ciphertext: moved to another record or subject, or
    relabelled, it no longer decrypts."""
    return cbor2.dumps([_RECORD_AAD_TAG, record_id, subject_id, kind, content_type], canonical=True)


def data_key_aad(subject_id: str) -> bytes:
    """Associated data of a wrapped data key: it unwraps only for its own subject."""
    return cbor2.dumps([_DATA_KEY_AAD_TAG, subject_id], canonical=True)


def record_ref(subject_id: str, record_id: str) -> str:
    """The log ref of a record leaf: ``"<subject_id>/<record_id>"``."""
    return f"{subject_id}/{record_id}"


def split_record_ref(ref: str) -> tuple[str, str] | None:
    """Return ``(subject_id, record_id)`` of a record leaf's ref, or None if malformed.

    Subject ids never contain ``/``; record ids may.
    """
    subject_id, slash, record_id = ref.partition("/")
    if not slash or not subject_id or not record_id:
        return None
    return subject_id, record_id


@dataclass(frozen=True)
class NewRecord:
    """A record to store with :meth:`SqlCompanion.put_many <msec.companion.SqlCompanion>`.

    ``name`` is the subject's real name (its data key is created on first use).
    ``record_id``, ``kind`` and ``content_type`` are stored and logged in clear: they must not
    carry personal data. ``plaintext`` is left out of the ``repr``.
    """

    name: str
    record_id: str
    plaintext: bytes = field(repr=False)
    kind: str
    content_type: str = "application/json"


@dataclass(frozen=True)
class StoredRecord:
    """A stored record's clear metadata.

    ``leaf_index`` is the index of its leaf in the transparency log when it was stored with
    ``log=``; otherwise, and when read back, None.
    """

    record_id: str
    subject_id: str
    kind: str
    content_type: str
    created: float
    leaf_index: int | None = None


@dataclass(frozen=True)
class Erasure:
    """What :meth:`SqlCompanion.erase <msec.companion.SqlCompanion.erase>` did.

    ``leaf_index`` is the erasure leaf's index when a log was given, else None.
    ``scrubbed`` is True when the post-commit clean-up completed (SQLite: the WAL checkpointed
    and truncated; PostgreSQL: ``VACUUM`` ran); False means another connection held the WAL
    (the erased bytes leave the files at the next full checkpoint) or ``VACUUM`` failed.
    """

    subject_id: str
    erased_at: float
    record_count: int
    leaf_index: int | None
    scrubbed: bool
