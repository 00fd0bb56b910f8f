"""RFC 9162 Merkle trees, checked against pymerkle as an independent oracle.

pymerkle's ``InmemoryTree("sha256")`` hashes leaves as ``sha256(b"\\x00" + data)`` and nodes as
``sha256(b"\\x01" + left + right)`` (security mode, its default), i.e. RFC 9162 hashing; its
inclusion path is ``[leaf] + RFC 9162 PATH``. Its consistency paths use another layout, so
consistency proofs are compared with a literal transcription of RFC 9162 SUBPROOF whose
subtree hashes come from pymerkle, and pymerkle's own consistency proofs are checked against
our roots.
"""

from __future__ import annotations

import hashlib
import random
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import InmemoryTree

from msec.tlog import (
    EMPTY_ROOT,
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

MAX_SIZE = 300


def _entry(i: int) -> bytes:
    """Distinct leaf data, so no two subtrees share a hash."""
    return f"entry-{i}".encode()


ENTRIES = [_entry(i) for i in range(MAX_SIZE)]
LEAVES = [leaf_hash(e) for e in ENTRIES]
TREE = MemoryTree(LEAVES)


@cache
def _oracle(size: int) -> InmemoryTree:
    tree = InmemoryTree("sha256")
    tree.append_entries(ENTRIES[:size])
    return tree


def _oracle_mth(start: int, end: int) -> bytes:
    return _oracle_range(start, end).get_root()


@cache
def _oracle_range(start: int, end: int) -> InmemoryTree:
    tree = InmemoryTree("sha256")
    tree.append_entries(ENTRIES[start:end])
    return tree


def _rfc_subproof(m: int, start: int, end: int, b: bool) -> list[bytes]:
    """RFC 9162 §2.1.4.1 SUBPROOF, transcribed literally, hashes from pymerkle."""
    n = end - start
    if m == n:
        return [] if b else [_oracle_mth(start, end)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*_rfc_subproof(m, start, start + k, b), _oracle_mth(start + k, end)]
    return [*_rfc_subproof(m - k, start + k, end, False), _oracle_mth(start, start + k)]


def _sides(index: int, size: int) -> list[bool]:
    """For each proof element, leaf to root: is the sibling on the left (RFC PATH recursion)?"""
    sides: list[bool] = []
    start, end = 0, size
    while end - start > 1:
        k = 1 << ((end - start - 1).bit_length() - 1)
        if index < start + k:
            sides.append(False)
            end = start + k
        else:
            sides.append(True)
            start += k
    return sides[::-1]


def _consistency_shape(m: int, n: int) -> tuple[bool, list[bool]]:
    """What a consistency check for (m, n) computes: m a power of two, sibling sides."""
    old_is_power_of_two = m & (m - 1) == 0
    sides: list[bool] = []
    start, end = 0, n
    while m != end - start:
        k = 1 << ((end - start - 1).bit_length() - 1)
        if m <= k:
            sides.append(False)
            end = start + k
        else:
            sides.append(True)
            start += k
            m -= k
    return old_is_power_of_two, sides[::-1]


def _flip(value: bytes, bit: int) -> bytes:
    data = bytearray(value)
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


# Known values


def test_hashing_is_rfc9162() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    assert MemoryTree().root() == EMPTY_ROOT
    assert leaf_hash(b"") == bytes.fromhex(
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    one = leaf_hash(b"x")
    assert root_from_leaf_hashes([one]) == one
    assert MemoryTree([one]).root() == one
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()


def test_oracle_uses_rfc9162_hashing() -> None:
    oracle = InmemoryTree("sha256")
    assert (oracle.algorithm, oracle.leaf_prefix, oracle.node_prefix) == ("sha256", b"\0", b"\1")
    assert oracle.hash_buff(b"x") == leaf_hash(b"x")
    assert oracle.hash_pair(b"l", b"r") == node_hash(b"l", b"r")


# Against the oracle


@pytest.mark.parametrize("size", range(MAX_SIZE + 1))
def test_roots_match_oracle(size: int) -> None:
    expected = _oracle(MAX_SIZE).get_root(size)
    assert TREE.root(size) == expected
    assert root_from_leaf_hashes(LEAVES[:size]) == expected


def test_inclusion_proofs_match_oracle() -> None:
    rng = random.Random(9162)
    oracle = _oracle(MAX_SIZE)
    sizes = [*range(1, 34), *rng.sample(range(34, MAX_SIZE + 1), 60)]
    for size in sizes:
        root = TREE.root(size)
        for index in {0, size - 1, *rng.sample(range(size), min(size, 8))}:
            proof = inclusion_proof(TREE, index, size)
            theirs = oracle.prove_inclusion(index + 1, size)
            assert theirs.path[0] == LEAVES[index]
            assert proof == theirs.path[1:], (index, size)
            verify_inclusion(LEAVES[index], index, size, proof, root)


def test_consistency_proofs_match_rfc_over_oracle() -> None:
    rng = random.Random(6962)
    oracle = _oracle(MAX_SIZE)
    pairs = [(m, n) for n in range(1, 20) for m in range(n + 1)]
    for _ in range(150):
        n = rng.randint(1, MAX_SIZE)
        pairs.append((rng.randint(0, n), n))
    for m, n in pairs:
        proof = consistency_proof(TREE, m, n)
        expected = [] if m in (0, n) else _rfc_subproof(m, 0, n, True)
        assert proof == expected, (m, n)
        verify_consistency(m, n, oracle.get_root(m), oracle.get_root(n), proof)
        if m > 0:
            theirs = oracle.prove_consistency(m, n)
            theirs.verify(TREE.root(m), TREE.root(n), prior_size=m, later_size=n)


# Properties


@st.composite
def _inclusion_case(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, MAX_SIZE))
    return draw(st.integers(0, size - 1)), size


@st.composite
def _consistency_case(draw: st.DrawFn) -> tuple[int, int]:
    new = draw(st.integers(1, MAX_SIZE))
    return draw(st.integers(0, new)), new


@settings(max_examples=300, deadline=None)
@given(_inclusion_case(), st.data())
def test_inclusion_proofs_verify_and_tampering_fails(
    case: tuple[int, int], data: st.DataObject
) -> None:
    index, size = case
    leaf, root = LEAVES[index], TREE.root(size)
    proof = inclusion_proof(TREE, index, size)
    verify_inclusion(leaf, index, size, proof, root)
    assert root_from_inclusion_proof(leaf, index, size, proof) == root

    bit = data.draw(st.integers(0, 255), label="bit")
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1), label="element")
        bad = [*proof[:at], _flip(proof[at], bit), *proof[at + 1 :]]
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, size, bad, root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, size, proof, _flip(root, bit))
    with pytest.raises(ProofError):
        verify_inclusion(_flip(leaf, bit), index, size, proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, size, [*proof, proof[0] if proof else leaf], root)
    if proof:
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, size, proof[:-1], root)

    other_index = data.draw(st.integers(0, MAX_SIZE).filter(lambda i: i != index), label="i")
    with pytest.raises(ProofError):
        verify_inclusion(leaf, other_index, size, proof, root)
    # RFC 9162 binds the size only through the root: another size passes exactly when it
    # makes the verifier combine the same hashes in the same order.
    other_size = data.draw(st.integers(0, MAX_SIZE + 5).filter(lambda s: s != size), label="s")
    same_shape = index < other_size and _sides(index, other_size) == _sides(index, size)
    if same_shape:
        verify_inclusion(leaf, index, other_size, proof, root)
    else:
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, other_size, proof, root)


@settings(max_examples=300, deadline=None)
@given(_consistency_case(), st.data())
def test_consistency_proofs_verify_and_tampering_fails(
    case: tuple[int, int], data: st.DataObject
) -> None:
    old, new = case
    old_root, new_root = TREE.root(old), TREE.root(new)
    proof = consistency_proof(TREE, old, new)
    verify_consistency(old, new, old_root, new_root, proof)

    bit = data.draw(st.integers(0, 255), label="bit")
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1), label="element")
        bad = [*proof[:at], _flip(proof[at], bit), *proof[at + 1 :]]
        with pytest.raises(ProofError):
            verify_consistency(old, new, old_root, new_root, bad)
        with pytest.raises(ProofError):
            verify_consistency(old, new, old_root, new_root, proof[:-1])
    with pytest.raises(ProofError):
        verify_consistency(old, new, _flip(old_root, bit), new_root, proof)
    if old > 0:  # every tree extends the empty one, whatever its root
        with pytest.raises(ProofError):
            verify_consistency(old, new, old_root, _flip(new_root, bit), proof)
    with pytest.raises(ProofError):
        verify_consistency(old, new, old_root, new_root, [*proof, new_root])

    # As for inclusion, sizes are bound only through the roots.
    other_old = data.draw(st.integers(0, MAX_SIZE).filter(lambda m: m != old), label="m")
    other_new = data.draw(st.integers(1, MAX_SIZE + 5).filter(lambda n: n != new), label="n")
    for m, n in ((other_old, new), (old, other_new)):
        ok = (m == 0 == old) or (
            0 < m < n and 0 < old < new and _consistency_shape(m, n) == _consistency_shape(old, new)
        )
        if ok:
            verify_consistency(m, n, old_root, new_root, proof)
        else:
            with pytest.raises(ProofError):
                verify_consistency(m, n, old_root, new_root, proof)


def test_every_bit_flip_fails_for_a_small_tree() -> None:
    size = 13
    root = TREE.root(size)
    for index in range(size):
        proof = inclusion_proof(TREE, index, size)
        for at in range(len(proof)):
            for bit in range(256):
                bad = [*proof[:at], _flip(proof[at], bit), *proof[at + 1 :]]
                with pytest.raises(ProofError):
                    verify_inclusion(LEAVES[index], index, size, bad, root)
    for old in range(1, size):
        proof = consistency_proof(TREE, old, size)
        for at in range(len(proof)):
            for bit in range(0, 256, 7):
                bad = [*proof[:at], _flip(proof[at], bit), *proof[at + 1 :]]
                with pytest.raises(ProofError):
                    verify_consistency(old, size, TREE.root(old), root, bad)


# Edge cases and errors


def test_verification_rejects_bad_arguments() -> None:
    root = TREE.root(5)
    proof = inclusion_proof(TREE, 2, 5)
    with pytest.raises(ProofError, match="not in a tree of size"):
        verify_inclusion(LEAVES[2], 5, 5, proof, root)
    with pytest.raises(ProofError, match="not in a tree of size"):
        verify_inclusion(LEAVES[0], 0, 0, [], EMPTY_ROOT)
    with pytest.raises(ProofError, match="32-byte"):
        verify_inclusion(LEAVES[2][:31], 2, 5, proof, root)
    with pytest.raises(ProofError, match="32-byte"):
        verify_inclusion(LEAVES[2], 2, 5, [*proof[:-1], b"short"], root)
    with pytest.raises(ProofError, match="too long"):
        verify_inclusion(LEAVES[2], 2, 5, [*proof, proof[0]], root)
    with pytest.raises(ProofError, match="too short"):
        verify_inclusion(LEAVES[2], 2, 5, proof[:-1], root)
    with pytest.raises(ProofError, match="does not match root"):
        verify_inclusion(LEAVES[3], 2, 5, proof, root)

    old, new = TREE.root(3), TREE.root(7)
    cproof = consistency_proof(TREE, 3, 7)
    with pytest.raises(ProofError, match="larger than"):
        verify_consistency(7, 3, new, old, cproof)
    with pytest.raises(ProofError, match="is empty"):
        verify_consistency(3, 7, old, new, [])
    with pytest.raises(ProofError, match="old root"):
        verify_consistency(3, 7, TREE.root(4), new, cproof)
    with pytest.raises(ProofError, match="new root"):
        verify_consistency(3, 7, old, TREE.root(8), cproof)
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency(7, 7, new, new, cproof)
    with pytest.raises(ProofError, match="old root"):
        verify_consistency(7, 7, old, new, [])
    with pytest.raises(ProofError, match="old root"):
        verify_consistency(0, 7, old, new, [])
    verify_consistency(0, 7, EMPTY_ROOT, new, [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(7, 7, new, new, [])


def test_generation_rejects_bad_arguments() -> None:
    small = MemoryTree(LEAVES[:4])
    with pytest.raises(ValueError):
        inclusion_proof(small, 4, 4)
    with pytest.raises(ValueError):
        inclusion_proof(small, 0, 5)
    with pytest.raises(ValueError):
        consistency_proof(small, 3, 2)
    with pytest.raises(ValueError):
        consistency_proof(small, 2, 5)
    with pytest.raises(ValueError):
        small.root(5)
    with pytest.raises(ValueError):
        small.subtree_hash(1, 3)
    with pytest.raises(ValueError):
        small.subtree_hash(4, 8)
    with pytest.raises(ValueError):
        small.append(b"not a hash")
    assert inclusion_proof(small, 0, 1) == []
    assert consistency_proof(small, 0, 4) == consistency_proof(small, 4, 4) == []


def test_memory_tree_grows_consistently() -> None:
    tree = MemoryTree()
    roots = []
    for i, leaf in enumerate(LEAVES[:70]):
        assert tree.append(leaf) == i
        roots.append(tree.root())
    for size, root in enumerate(roots, start=1):
        assert tree.root(size) == root
        assert tree.subtree_hash(size - 1, size) == LEAVES[size - 1]


class _CountingSource:
    """A HashSource that records what it was asked for, to pin the storage contract."""

    def __init__(self, tree: MemoryTree) -> None:
        self.tree = tree
        self.calls: list[tuple[int, int]] = []

    @property
    def leaf_count(self) -> int:
        return self.tree.leaf_count

    def subtree_hash(self, start: int, end: int) -> bytes:
        self.calls.append((start, end))
        return self.tree.subtree_hash(start, end)


def test_sources_are_asked_only_for_few_perfect_aligned_subtrees() -> None:
    source = _CountingSource(TREE)
    for size in range(1, MAX_SIZE + 1, 7):
        for index in range(0, size, 5):
            source.calls.clear()
            inclusion_proof(source, index, size)
            assert len(source.calls) <= 2 * size.bit_length()
        for old in range(0, size + 1, 5):
            source.calls.clear()
            consistency_proof(source, old, size)
            assert len(source.calls) <= 2 * size.bit_length() + 1
    # MemoryTree.subtree_hash raises on any other range, so reaching here pins alignment.
