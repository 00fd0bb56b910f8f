"""One installation's log as a service: checkpoints, witness file, audit, record lookup.

:class:`TrustLog` signs checkpoints of a :class:`~msec.tlog.SqlLog` with the installation's
key, refuses to sign over a database that is behind its witness file, keeps the newest
checkpoint in that file (outside the database), finds a record's leaf through its source,
and runs the full audit behind ``msec verify``. The platform builds it with its leaf sources
(``msec.platform.trust.leaf_sources``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine

from msec.tlog.audit import AuditReport, ExternalCheckpoint, LeafSource, Pace, audit
from msec.tlog.checkpoint import Checkpoint, NoteError, NoteSigner, NoteVerifier, open_checkpoint
from msec.tlog.merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion
from msec.tlog.sql import LogError, SqlLog

if TYPE_CHECKING:
    from msec.anchor.base import AnchorChain

log = logging.getLogger(__name__)

__all__ = ["RecordProof", "RollbackDetected", "TrustLog"]


@dataclass(frozen=True, slots=True)
class RecordProof:
    """A record's leaf, its inclusion proof and the signed checkpoint the proof leads to.

    ``leaf_data`` is recomputed from storage (``None`` for an erased record); the leaf hash
    is ``SHA-256(0x00 || leaf_data)``.
    """

    kind: str
    ref: str
    index: int
    size: int
    leaf_data: bytes | None
    leaf_hash: bytes
    hashes: list[bytes]
    note: str
    checkpoint: Checkpoint

    def check(self, verifier: NoteVerifier) -> dict[str, bool]:
        """Each step checked again from the proof's own bytes: the leaf hash, the inclusion
        proof up to the checkpoint's root, and the checkpoint's signature."""
        leaf_ok = self.leaf_data is not None and leaf_hash(self.leaf_data) == self.leaf_hash
        try:
            verify_inclusion(self.leaf_hash, self.index, self.size, self.hashes,
                             self.checkpoint.root)  # fmt: skip
            inclusion_ok = True
        except ProofError:
            inclusion_ok = False
        try:
            signed = open_checkpoint(self.note, [verifier])
            signature_ok = (signed.size, signed.root) == (self.size, self.checkpoint.root)
        except NoteError:
            signature_ok = False
        return {"leaf": leaf_ok, "inclusion": inclusion_ok, "signature": signature_ok}


class RollbackDetected(LogError):
    """The database holds fewer or other leaves than a checkpoint kept outside it."""


class TrustLog:
    """Checkpoints, witness and audit of one installation's log.

    ``signer`` is the log's note key; its name is the log's origin.
    """

    def __init__(
        self,
        engine: Engine,
        log: SqlLog,
        signer: NoteSigner,
        witness_file: Path,
        sources: Mapping[str, LeafSource],
        derived: Sequence[Callable[[Connection], Iterable[tuple[str, str]]]] = (),
    ) -> None:
        self.engine = engine
        self.log = log
        self.signer = signer
        self.origin = signer.name
        self.witness_file = witness_file
        self.sources = dict(sources)
        #: Checks of state derived from logged rows (see :func:`~msec.tlog.audit.audit`).
        self.derived = list(derived)
        self._signing = threading.Lock()

    @property
    def verifier(self) -> NoteVerifier:
        return self.signer.verifier()

    def verifier_key(self) -> str:
        """The log's public key in the C2SP note format ``<name>+<hex id>+<base64>``."""
        return self.verifier.to_string()

    # -- checkpoints -------------------------------------------------------------------------

    def latest(self) -> str:
        """The newest signed checkpoint, signing one first if the log grew since."""
        note = self.log.latest_checkpoint()
        if note is not None and open_checkpoint(note, [self.verifier]).size == self.log.size():
            return note
        return self.checkpoint()

    def checkpoint(self) -> str:
        """Sign a checkpoint of the current tree, after checking it against the witness.

        Raises :class:`RollbackDetected` (signing nothing) when the database is behind or
        inconsistent with the witness checkpoint, :class:`LogError` when it is inconsistent
        with its own last checkpoint. On success the witness file holds the new checkpoint.
        """
        with self._signing:
            witnessed = self.read_witness()
            if witnessed is not None:
                self._check_against(witnessed, "the witness checkpoint")
            note = self.log.checkpoint(self.signer, self.origin)
            if witnessed is None or open_checkpoint(note, [self.verifier]).size > witnessed.size:
                self.write_witness(note)
            return note

    def _check_against(self, checkpoint: Checkpoint, what: str) -> None:
        size = self.log.size()
        if checkpoint.size > size:
            raise RollbackDetected(
                f"{what} has {checkpoint.size} leaves but the database only {size}: "
                "the database was rolled back or truncated"
            )
        try:
            proof = self.log.consistency_proof(checkpoint.size, size)
            verify_consistency(checkpoint.size, size, checkpoint.root, self.log.root(size), proof)
        except (ProofError, LogError) as exc:
            raise RollbackDetected(
                f"the database is not consistent with {what} ({checkpoint.size} leaves)"
            ) from exc

    # -- the witness file --------------------------------------------------------------------

    def read_witness(self, path: Path | None = None) -> Checkpoint | None:
        """The checkpoint in the witness file, or ``None`` if there is no file yet.

        Raises :class:`NoteError` if the file holds anything but a checkpoint of this log.
        """
        path = path or self.witness_file
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        checkpoint = open_checkpoint(text, [self.verifier])
        if checkpoint.origin != self.origin:
            raise NoteError(f"{path} holds a checkpoint of {checkpoint.origin!r}")
        return checkpoint

    def write_witness(self, note: str, path: Path | None = None) -> None:
        """Replace the witness file with ``note`` atomically (fsynced, then renamed)."""
        path = path or self.witness_file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(note)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def find(self, kind: str, ref: str) -> int | None:
        """The leaf index of the record ``ref`` of leaf ``kind``, checked against the log.

        ``None`` if there is no such record, or if the leaf at the index its row names is
        not that record's (a tampered row: ``msec verify`` names it).
        """
        source = self.sources.get(kind)
        if source is None:
            return None
        with self.engine.connect() as conn:
            index = source.leaf_index(conn, ref)
        if index is None or index >= self.log.size():
            return None
        [entry] = self.log.entries(index, index + 1) or [None]
        if entry is None or (entry.kind, entry.ref) != (kind, ref):
            return None
        return index

    def record_proof(self, kind: str, ref: str) -> RecordProof | None:
        """Everything needed to check record ``ref`` against the newest signed checkpoint
        (signed first if the record came after it); ``None`` if the log holds no such record.

        Raises :class:`LogError` (e.g. :class:`RollbackDetected`) when the log refuses to sign.
        """
        source = self.sources.get(kind)
        index = self.find(kind, ref) if source is not None else None
        if source is None or index is None:
            return None
        # The newest stored checkpoint usually covers the record (one is signed every second
        # while the log grows); sign only for a record newer than it, not on every request.
        note = self.log.latest_checkpoint() or self.checkpoint()
        checkpoint = open_checkpoint(note, [self.verifier])
        if index >= checkpoint.size:  # appended after the newest checkpoint was signed
            note = self.checkpoint()
            checkpoint = open_checkpoint(note, [self.verifier])
        with self.engine.connect() as conn:
            data = source.leaf_data(conn, [ref]).get(ref)
        return RecordProof(
            kind,
            ref,
            index,
            checkpoint.size,
            data if isinstance(data, bytes) else None,
            self.log.leaf_hash(index),
            self.log.inclusion_proof(index, checkpoint.size),
            note,
            checkpoint,
        )

    # -- anchoring ---------------------------------------------------------------------------

    def signed_checkpoint(self) -> tuple[str, NoteVerifier] | None:
        """The newest stored checkpoint and the key it verifies with (what an anchorer reads)."""
        note = self.log.latest_checkpoint()
        return None if note is None else (note, self.verifier)

    def anchored(self, chain: AnchorChain) -> list[ExternalCheckpoint]:
        """Every checkpoint of this log anchored on ``chain``, for :meth:`verify`."""
        return [
            ExternalCheckpoint(f"anchor {a.index} on chain", a.size, a.root)
            for a in chain.anchors(self.origin)
        ]

    # -- audit -------------------------------------------------------------------------------

    def verify(
        self,
        *,
        external: Sequence[ExternalCheckpoint] = (),
        progress: Callable[[int, int], None] | None = None,
        pace: Pace | None = None,
    ) -> AuditReport:
        """Audit the whole log (see :func:`msec.tlog.audit.audit`)."""
        return audit(
            self.engine,
            self.sources,
            self.verifier,
            self.origin,
            external=external,
            progress=progress,
            derived=self.derived,
            pace=pace,
        )
