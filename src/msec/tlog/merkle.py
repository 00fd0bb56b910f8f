"""RFC 9162 (Certificate Transparency v2) Merkle trees: hashing, proofs and their verification.

Pure functions over SHA-256, no I/O. Leaves are hashed as ``SHA-256(0x00 || data)``, interior
nodes as ``SHA-256(0x01 || left || right)``, the empty tree is ``SHA-256(b"")`` (RFC 9162
§2.1.1), so roots and proofs interoperate with other RFC 9162 / RFC 6962 logs.

Proof generation reads hashes through :class:`HashSource`, which only ever has to serve
*perfect, aligned* subtrees: ``[j * 2**h, (j + 1) * 2**h)``. Such a subtree never changes once
its last leaf is appended, so a storage layer can cache it (or a whole tile of them) forever;
the ragged right edge of a tree is folded here from at most ``log2(n)`` perfect pieces.

Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step and raises
:class:`ProofError` on any failure. Note that, as in the RFC, a tree size is bound to a proof
only through the root it is checked against: a signed checkpoint must bind size and root.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Final, Protocol

from msec.core.errors import MsecError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "HashSource",
    "MemoryTree",
    "ProofError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
"""Length in bytes of every hash in this module (SHA-256)."""

_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"

EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
"""Root of the tree with no leaves: ``SHA-256(b"")`` (e3b0c442...)."""


class ProofError(MsecError):
    """A Merkle proof, root or hash failed verification; the message says which check failed."""


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 hash of a leaf holding ``data``: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 hash of an interior node: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(width: int) -> int:
    """Return the largest power of two strictly smaller than ``width`` (``width`` >= 2)."""
    return 1 << ((width - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """Return MTH of a list of leaf hashes (RFC 9162 §2.1.1); :data:`EMPTY_ROOT` when empty.

    The hashes are used as given (already ``leaf_hash``-ed). This is the direct O(n) recursion
    of the RFC; use :class:`MemoryTree` to compute many roots of one growing list.
    """

    def mth(start: int, end: int) -> bytes:
        if end - start == 1:
            return hashes[start]
        k = _split(end - start)
        return node_hash(mth(start, start + k), mth(start + k, end))

    if not hashes:
        return EMPTY_ROOT
    return mth(0, len(hashes))


class HashSource(Protocol):
    """Where proof generation reads node hashes from: an in-memory tree, a tile store, ...

    Implement ``leaf_count`` and ``subtree_hash``. Callers in this module only ask for perfect,
    aligned subtrees of leaves already appended, so their hashes are immutable and cacheable.
    """

    @property
    def leaf_count(self) -> int:
        """Number of leaves currently available; proofs can be made for any size up to it."""
        ...

    def subtree_hash(self, start: int, end: int) -> bytes:
        """Return the root hash of the perfect subtree over leaves ``[start, end)``.

        Guaranteed by the caller: ``end - start == 2**h`` for some ``h >= 0``, ``start`` is a
        multiple of ``2**h`` and ``end <= leaf_count``. For ``h == 0`` this is the leaf hash.
        Errors of the underlying storage propagate unchanged.
        """
        ...


def _range_hash(source: HashSource, start: int, end: int) -> bytes:
    """Return MTH of leaves ``[start, end)``, a node of the tree (perfect or right edge).

    ``start`` must be a multiple of the smallest power of two >= ``end - start``, which holds
    for every node the RFC recursion visits. The range is read as its perfect pieces (one per
    set bit of the width, largest first) and folded right to left, as MTH splits it.
    """
    pieces: list[bytes] = []
    position = start
    width = end - start
    while width:
        piece = 1 << (width.bit_length() - 1)
        pieces.append(source.subtree_hash(position, position + piece))
        position += piece
        width -= piece
    result = pieces[-1]
    for left in reversed(pieces[:-1]):
        result = node_hash(left, result)
    return result


def _check_source_size(source: HashSource, size: int) -> None:
    """Raise ``ValueError`` unless ``size`` leaves are available from ``source``."""
    if size > source.leaf_count:
        raise ValueError(f"size {size} exceeds the {source.leaf_count} leaves available")


def inclusion_proof(source: HashSource, index: int, size: int) -> list[bytes]:
    """Return PATH(index, D[0:size]) (RFC 9162 §2.1.3.1): sibling hashes from leaf to root.

    The caller must pass ``0 <= index < size <= source.leaf_count``; otherwise ``ValueError``.
    Reads at most ``2 * log2(size)`` perfect subtrees from ``source``. A proof for a tree of one
    leaf is empty.
    """
    if not 0 <= index < size:
        raise ValueError(f"index {index} is not in a tree of size {size}")
    _check_source_size(source, size)
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(_range_hash(source, start + k, end))
            end = start + k
        else:
            path.append(_range_hash(source, start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(source: HashSource, old_size: int, new_size: int) -> list[bytes]:
    """Return PROOF(old_size, D[0:new_size]) (RFC 9162 §2.1.4.1) as SUBPROOF(m, D[n], true).

    The caller must pass ``0 <= old_size <= new_size <= source.leaf_count``; otherwise
    ``ValueError``. The proof is empty when ``old_size`` is 0 or equal to ``new_size``.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"old size {old_size} must be between 0 and new size {new_size}")
    _check_source_size(source, new_size)
    if old_size in (0, new_size):
        return []
    path: list[bytes] = []
    start, end, m = 0, new_size, old_size  # m counts old leaves inside [start, end)
    whole_old_tree = True  # the RFC's b: [start, end) may still be the old tree itself
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            path.append(_range_hash(source, start + k, end))
            end = start + k
        else:
            path.append(_range_hash(source, start, start + k))
            start += k
            m -= k
            whole_old_tree = False
    if not whole_old_tree:
        path.append(_range_hash(source, start, end))
    path.reverse()
    return path


class MemoryTree:
    """An append-only in-memory Merkle tree of leaf hashes; a :class:`HashSource`.

    Keeps every perfect subtree hash (about ``2 * n`` hashes), so ``subtree_hash`` is one
    lookup, ``root`` folds at most ``log2(n)`` of them and proofs cost O(log n) lookups.
    Not thread-safe: callers serialize appends with reads.
    """

    def __init__(self, leaf_hashes: Sequence[bytes] = ()) -> None:
        """Start a tree holding ``leaf_hashes`` (already ``leaf_hash``-ed), in order."""
        # _levels[h][j] is the hash of the perfect subtree [j * 2**h, (j + 1) * 2**h).
        self._levels: list[list[bytes]] = [[]]
        for value in leaf_hashes:
            self.append(value)

    @property
    def leaf_count(self) -> int:
        """Number of leaves appended so far."""
        return len(self._levels[0])

    def append(self, leaf: bytes) -> int:
        """Append a leaf hash and return its index (0-based).

        ``leaf`` must be ``HASH_SIZE`` bytes (e.g. from :func:`leaf_hash`), else ``ValueError``.
        """
        if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes")
        index = len(self._levels[0])
        self._levels[0].append(leaf)
        # Each completed pair of level h subtrees completes one subtree at level h + 1.
        level, position = 0, index
        while position & 1:
            row = self._levels[level]
            parent = node_hash(row[position - 1], row[position])
            if level + 1 == len(self._levels):
                self._levels.append([])
            self._levels[level + 1].append(parent)
            level += 1
            position >>= 1
        return index

    def subtree_hash(self, start: int, end: int) -> bytes:
        """Return the hash of the perfect, aligned subtree ``[start, end)`` (see HashSource).

        ``ValueError`` if the range is not perfect and aligned or not yet complete.
        """
        width = end - start
        if width <= 0 or width & (width - 1) or start % width:
            raise ValueError(f"[{start}, {end}) is not a perfect aligned subtree")
        level = width.bit_length() - 1
        if start < 0 or end > self.leaf_count:
            raise ValueError(f"[{start}, {end}) is beyond the {self.leaf_count} leaves")
        return self._levels[level][start >> level]

    def root(self, size: int | None = None) -> bytes:
        """Return MTH of the first ``size`` leaves (all of them by default).

        ``0 <= size <= leaf_count`` or ``ValueError``; size 0 gives :data:`EMPTY_ROOT`.
        """
        if size is None:
            size = self.leaf_count
        if not 0 <= size <= self.leaf_count:
            raise ValueError(f"size {size} is not in 0..{self.leaf_count}")
        if size == 0:
            return EMPTY_ROOT
        return _range_hash(self, 0, size)


def _check_hash(value: object, what: str) -> bytes:
    """Return ``value`` if it is a ``HASH_SIZE``-byte string, else raise ``ProofError``."""
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ProofError(f"{what} is not a {HASH_SIZE}-byte hash")
    return value


def _check_proof(proof: Sequence[bytes]) -> list[bytes]:
    """Return the proof as a list after checking every element is a hash."""
    return [_check_hash(p, f"proof element {i}") for i, p in enumerate(proof)]


def _lsb(value: int) -> int:
    """Return the least significant bit of ``value``."""
    return value & 1


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Return the root that ``proof`` leads to from ``leaf`` at ``index`` in a tree of ``size``.

    Steps 1-4 of RFC 9162 §2.1.3.2 plus the ``sn == 0`` check of step 5; the caller compares
    the result with a trusted root (or uses :func:`verify_inclusion`). Raises ``ProofError`` if
    ``index >= size``, a hash is malformed, or the proof is too long or too short for
    ``(index, size)``.
    """
    _check_hash(leaf, "leaf hash")
    path = _check_proof(proof)
    if index < 0 or size < 0:
        raise ProofError(f"index {index} and size {size} must not be negative")
    if index >= size:
        raise ProofError(f"index {index} is not in a tree of size {size}")
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            raise ProofError(f"inclusion proof is too long for index {index}, size {size}")
        if _lsb(fn) or fn == sn:
            r = node_hash(p, r)
            if not _lsb(fn):
                while not (_lsb(fn) or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof is too short for index {index}, size {size}")
    return r


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` is at ``index`` in the tree of ``size`` leaves whose root is ``root``.

    RFC 9162 §2.1.3.2. Returns ``None`` on success; raises ``ProofError`` saying why otherwise
    (index out of range, malformed hash, wrong proof length, root mismatch).
    """
    _check_hash(root, "root")
    computed = root_from_inclusion_proof(leaf, index, size, proof)
    if not hmac.compare_digest(computed, root):
        raise ProofError(f"inclusion proof for index {index}, size {size} does not match root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``new_size`` with ``new_root`` extends the one of ``old_size``.

    RFC 9162 §2.1.4.2 for ``0 < old_size < new_size``. Edge cases the RFC leaves to the caller:
    ``old_size == new_size`` needs an empty proof and equal roots; ``old_size == 0`` needs an
    empty proof and ``old_root == EMPTY_ROOT`` (any tree extends the empty one). Raises
    ``ProofError`` saying why on any failure (``old_size > new_size``, malformed hash, wrong
    proof length, old or new root mismatch).
    """
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    path = _check_proof(proof)
    if old_size < 0 or new_size < 0:
        raise ProofError(f"sizes {old_size} and {new_size} must not be negative")
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == new_size or old_size == 0:
        if path:
            raise ProofError(f"consistency proof from {old_size} to {new_size} must be empty")
        expected_old = new_root if old_size == new_size else EMPTY_ROOT
        if not hmac.compare_digest(old_root, expected_old):
            raise ProofError(f"old root does not match for sizes {old_size} to {new_size}")
        return
    # 1. An empty path cannot prove anything for 0 < old_size < new_size.
    if not path:
        raise ProofError(f"consistency proof from {old_size} to {new_size} is empty")
    # 2. A power-of-two old tree is a node of the new tree; the proof omits its hash.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3., 4.
    fn, sn = old_size - 1, new_size - 1
    while _lsb(fn):
        fn >>= 1
        sn >>= 1
    # 5., 6.
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof from {old_size} to {new_size} is too long")
        if _lsb(fn) or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not _lsb(fn):
                while not (_lsb(fn) or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # 7.
    if sn != 0:
        raise ProofError(f"consistency proof from {old_size} to {new_size} is too short")
    if not hmac.compare_digest(fr, old_root):
        raise ProofError(f"consistency proof does not match the old root of size {old_size}")
    if not hmac.compare_digest(sr, new_root):
        raise ProofError(f"consistency proof does not match the new root of size {new_size}")
