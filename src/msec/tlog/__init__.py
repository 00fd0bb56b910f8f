"""Transparency log building blocks: RFC 9162 Merkle trees, their proofs, C2SP checkpoints.

The pure parts (hashing, proofs, signed notes) and :class:`SqlLog`, a durable tiled log on
SQLite or PostgreSQL; the API and anchoring build on them (issue 3, in progress).
"""

from __future__ import annotations

from msec.tlog.checkpoint import (
    MAX_SIGNATURES,
    Checkpoint,
    NoteError,
    NoteSigner,
    NoteVerifier,
    note_key_id,
    open_checkpoint,
    open_note,
    sign_note,
)
from msec.tlog.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    HashSource,
    MemoryTree,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from msec.tlog.sql import LogEntry, LogError, SqlLog

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_SIGNATURES",
    "Checkpoint",
    "HashSource",
    "LogEntry",
    "LogError",
    "MemoryTree",
    "NoteError",
    "NoteSigner",
    "NoteVerifier",
    "ProofError",
    "SqlLog",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "note_key_id",
    "open_checkpoint",
    "open_note",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "sign_note",
    "verify_consistency",
    "verify_inclusion",
]
