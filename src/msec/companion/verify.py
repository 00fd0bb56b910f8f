"""What ``msec verify`` needs from the companion store: leaf data recomputed without keys.

Everything here reads the stored rows on the caller's connection (one snapshot) and needs no
key-encryption key: record leaves commit to ciphertexts, erasure leaves to tombstones.
:func:`leaf_sources` gives the two :class:`~msec.tlog.audit.LeafSource` objects the
auditor takes; the plain functions beside them are the same queries.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import Connection, Row, func, select

from msec.companion.base import (
    ERASURE_LEAF_KIND,
    RECORD_LEAF_KIND,
    erasure_leaf_data,
    record_leaf_data,
    record_ref,
    split_record_ref,
)
from msec.companion.sql import RECORD_COLUMNS, records_table, subjects_table
from msec.tlog.audit import Erased, LeafSource

__all__ = [
    "ErasureLeaves",
    "RecordLeaves",
    "count_records",
    "erased_subjects",
    "iter_record_refs",
    "leaf_data_for",
    "leaf_sources",
]

_CHUNK: Final = 500  # bound parameters per IN (...) lookup


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _record_leaf_data(row: Row[Any]) -> bytes:
    return record_leaf_data(
        row.record_id,
        row.subject_id,
        row.kind,
        row.content_type,
        bytes(row.nonce),
        bytes(row.ciphertext),
        row.created,
    )


def leaf_data_for(conn: Connection, kind: str, refs: Sequence[str]) -> dict[str, bytes | None]:
    """Recompute the leaf data of the log leaves of ``kind`` named by ``refs``.

    ``"record"`` refs (``"<subject_id>/<record_id>"``): :func:`~msec.companion.record_leaf_data`
    of the stored row; None when no such record is stored or the ref is malformed. The row is
    found by record id alone, so a record moved to another subject yields data that no longer
    matches its leaf. ``"erasure"`` refs (subject ids): :func:`~msec.companion.erasure_leaf_data`
    of the subject's tombstone; None when that subject is not erased. ``ValueError`` for any
    other kind.
    """
    refs = list(dict.fromkeys(refs))
    result: dict[str, bytes | None] = dict.fromkeys(refs)
    if kind == RECORD_LEAF_KIND:
        record_ids = {parts[1] for ref in refs if (parts := split_record_ref(ref))}
        found: dict[str, bytes] = {}
        r = records_table.c
        columns = [r[name] for name in RECORD_COLUMNS]
        for chunk in _chunks(sorted(record_ids)):
            for row in conn.execute(select(*columns).where(r.record_id.in_(chunk))):
                found[row.record_id] = _record_leaf_data(row)
        for ref in refs:
            parts = split_record_ref(ref)
            if parts is not None:
                result[ref] = found.get(parts[1])
        return result
    if kind == ERASURE_LEAF_KIND:
        s = subjects_table.c
        for chunk in _chunks(refs):
            query = select(s.subject_id, s.erased_at, s.erased_records).where(
                s.subject_id.in_(chunk), s.erased_at.is_not(None)
            )
            for row in conn.execute(query):
                result[row.subject_id] = erasure_leaf_data(
                    row.subject_id, row.erased_at, row.erased_records or 0
                )
        return result
    raise ValueError(f"the companion store has no leaves of kind {kind!r}")


def erased_subjects(conn: Connection) -> dict[str, float]:
    """Return ``{subject_id: erased_at}`` of every erased subject."""
    s = subjects_table.c
    query = select(s.subject_id, s.erased_at).where(s.erased_at.is_not(None))
    return {row.subject_id: float(row.erased_at) for row in conn.execute(query)}


def count_records(conn: Connection) -> int:
    """Return how many records are stored (erased ones are gone)."""
    return int(conn.execute(select(func.count()).select_from(records_table)).scalar_one())


def iter_record_refs(conn: Connection) -> Iterator[str]:
    """Yield the log ref ``"<subject_id>/<record_id>"`` of every stored record."""
    r = records_table.c
    for subject_id, record_id in conn.execute(select(r.subject_id, r.record_id)):
        yield record_ref(subject_id, record_id)


class RecordLeaves:
    """The :class:`~msec.tlog.audit.LeafSource` of ``"record"`` leaves.

    A record that is gone because its subject was erased is reported as
    ``Erased("erasure", subject_id)``: the auditor accepts it only if the log holds that
    subject's erasure leaf after the record's leaf. A record gone otherwise is left out
    (the auditor reports it missing).
    """

    def leaf_data(self, conn: Connection, refs: Sequence[str]) -> Mapping[str, bytes | Erased]:
        """Leaf data of the stored records, :class:`Erased` for records of erased subjects."""
        data = leaf_data_for(conn, RECORD_LEAF_KIND, refs)
        gone = {
            ref: parts[0]
            for ref, value in data.items()
            if value is None and (parts := split_record_ref(ref))
        }
        erased = {
            subject_id
            for subject_id, value in leaf_data_for(
                conn, ERASURE_LEAF_KIND, sorted(set(gone.values()))
            ).items()
            if value is not None
        }
        result: dict[str, bytes | Erased] = {
            ref: value for ref, value in data.items() if value is not None
        }
        for ref, subject_id in gone.items():
            if subject_id in erased:
                result[ref] = Erased(ERASURE_LEAF_KIND, subject_id)
        return result

    def leaf_index(self, conn: Connection, ref: str) -> int | None:
        """The leaf index stored with the record ``ref`` (``<subject id>/<record id>``)."""
        parts = split_record_ref(ref)
        if not parts:
            return None
        c = records_table.c
        query = select(c.leaf).where(c.record_id == parts[1], c.subject_id == parts[0])
        found = conn.execute(query).scalar()
        return None if found is None else int(found)

    def count_in(self, conn: Connection) -> int:
        """How many records are stored."""
        return count_records(conn)

    def refs_in(self, conn: Connection) -> Iterator[str]:
        """The ref of every stored record."""
        return iter_record_refs(conn)


class ErasureLeaves:
    """The :class:`~msec.tlog.audit.LeafSource` of ``"erasure"`` leaves: one per tombstone."""

    def leaf_data(self, conn: Connection, refs: Sequence[str]) -> Mapping[str, bytes | Erased]:
        """Leaf data of the erased subjects named by ``refs``; others are left out."""
        data = leaf_data_for(conn, ERASURE_LEAF_KIND, refs)
        return {ref: value for ref, value in data.items() if value is not None}

    def leaf_index(self, conn: Connection, ref: str) -> int | None:
        """The leaf index of the erasure of the subject whose id is ``ref``."""
        s = subjects_table.c
        found = conn.execute(select(s.erasure_leaf).where(s.subject_id == ref)).scalar()
        return None if found is None else int(found)

    def count_in(self, conn: Connection) -> int:
        """How many subjects are erased."""
        s = subjects_table.c
        query = select(func.count()).select_from(subjects_table).where(s.erased_at.is_not(None))
        return int(conn.execute(query).scalar_one())

    def refs_in(self, conn: Connection) -> Iterator[str]:
        """The subject id of every erased subject."""
        yield from erased_subjects(conn)


def leaf_sources() -> dict[str, LeafSource]:
    """Return ``{"record": RecordLeaves(), "erasure": ErasureLeaves()}`` for the auditor."""
    return {RECORD_LEAF_KIND: RecordLeaves(), ERASURE_LEAF_KIND: ErasureLeaves()}
