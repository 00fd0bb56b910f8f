"""SqlLog on SQLite (a temporary file) and on PostgreSQL (a fresh database per test).

MemoryTree is the oracle: every root and proof must equal its, for sizes on both sides of the
tile boundaries (256 leaves, and 65,536 on SQLite).
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text

from msec.tlog import (
    EMPTY_ROOT,
    LogError,
    MemoryTree,
    NoteSigner,
    SqlLog,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    open_checkpoint,
    verify_consistency,
    verify_inclusion,
)
from msec.tlog.sql import bundles_table, decode_bundle, tiles_table
from msec.twin import make_engine

ORIGIN = "example.com/log"


@pytest.fixture
def log(engine: Engine) -> SqlLog:
    log = SqlLog(engine)
    log.create_schema()
    return log


def entries(start: int, count: int) -> list[tuple[bytes, str, str]]:
    return [
        (leaf_hash(i.to_bytes(8, "big")), "reading", f"ref-{i}")
        for i in range(start, start + count)
    ]


def tree(size: int) -> MemoryTree:
    return MemoryTree([value for value, _, _ in entries(0, size)])


def check_against(log: SqlLog, oracle: MemoryTree, sizes: list[int], rng: random.Random) -> None:
    for size in sizes:
        assert log.root(size) == oracle.root(size), size
        if size == 0:
            continue
        for index in {0, size - 1, rng.randrange(size)}:
            proof = log.inclusion_proof(index, size)
            assert proof == inclusion_proof(oracle, index, size)
            verify_inclusion(
                oracle.subtree_hash(index, index + 1), index, size, proof, log.root(size)
            )
        for old in {0, 1, size // 2, rng.randint(0, size), size}:
            proof = log.consistency_proof(old, size)
            assert proof == consistency_proof(oracle, old, size)
            verify_consistency(old, size, log.root(old), log.root(size), proof)


def test_empty_log(log: SqlLog) -> None:
    assert log.size() == 0
    assert log.root() == EMPTY_ROOT
    assert log.entries(0, 10) == []
    assert log.latest_checkpoint() is None
    assert log.append([]) == 0


def test_roots_and_proofs_match_memory_tree(log: SqlLog) -> None:
    rng = random.Random(9162)
    total = 3_000
    oracle = tree(total)
    position = 0
    # Small and large batches, landing on, just before and just after tile boundaries.
    for count in (1, 2, 253, 1, 1, 255, 256, 257, 511, 1, 1_000, 462):
        assert log.append(entries(position, count)) == position
        position += count
        assert log.size() == position
        check_against(log, oracle, [position, rng.randint(0, position)], rng)
    assert position == total
    check_against(log, oracle, [0, 1, 255, 256, 257, 511, 512, 513, 1024, 2047, 2048, total], rng)


def test_small_batches_equal_one_big_batch(engine: Engine, tmp_path: Path) -> None:
    small = SqlLog(engine)
    small.create_schema()
    rng = random.Random(1)
    position = 0
    while position < 2_000:
        count = min(rng.randint(1, 40), 2_000 - position)
        small.append(entries(position, count))
        position += count
    big_engine = make_engine(f"sqlite:///{tmp_path / 'big.db'}")
    try:
        big = SqlLog(big_engine)
        big.create_schema()
        big.append(entries(0, 2_000))
        assert small.root() == big.root() == tree(2_000).root()
        with engine.connect() as a, big_engine.connect() as b:
            query = select(tiles_table).order_by(tiles_table.c.level, tiles_table.c.tile)
            assert [tuple(r) for r in a.execute(query)] == [tuple(r) for r in b.execute(query)]
    finally:
        big_engine.dispose()


def test_entries_and_leaf_hash(log: SqlLog) -> None:
    log.append(entries(0, 1_200))
    got = log.entries(5, 1_005)
    assert [e.index for e in got] == list(range(5, 1_005))
    assert [(e.leaf_hash, e.kind, e.ref) for e in got] == entries(5, 1_000)
    assert [e.index for e in log.entries(1_100, 1_300)] == list(range(1_100, 1_200))
    assert log.leaf_hash(7) == entries(7, 1)[0][0]
    with pytest.raises(ValueError):
        log.entries(0, 1_001)
    with pytest.raises(ValueError):
        log.leaf_hash(1_200)
    with pytest.raises(ValueError):
        log.root(1_201)
    with pytest.raises(ValueError):
        log.inclusion_proof(0, 1_201)


def test_rejects_malformed_entries(log: SqlLog) -> None:
    with pytest.raises(ValueError):
        log.append([(b"short", "k", "r")])
    assert log.size() == 0


def test_append_in_rolled_back_transaction_leaves_no_trace(log: SqlLog, engine: Engine) -> None:
    log.append(entries(0, 300))
    before = log.root()
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        assert log.append(entries(300, 500), conn=conn) == 300
        conn.rollback()
    assert log.size() == 300
    assert log.root() == before
    with engine.connect() as conn:
        # Bundle 1 (leaves 256..511) holds exactly the 44 committed entries, nothing after.
        [data] = conn.execute(select(bundles_table.c.entries).where(bundles_table.c.bundle == 1))
        assert len(decode_bundle(bytes(data[0]))) == 300 - 256
    # The log carries on from where the committed state left it.
    assert log.append(entries(300, 500)) == 300
    assert log.root() == tree(800).root()


def test_append_in_committed_external_transaction(log: SqlLog, engine: Engine) -> None:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        assert log.append(entries(0, 10), conn=conn) == 0
        assert log.append(entries(10, 10), conn=conn) == 10
        conn.commit()
    assert log.root() == tree(20).root()


def test_checkpoints(log: SqlLog) -> None:
    signer = NoteSigner.generate("example.com/log")
    log.append(entries(0, 700))
    note = log.checkpoint(signer, ORIGIN)
    assert log.latest_checkpoint() == note
    cp = open_checkpoint(note, [signer.verifier()])
    assert (cp.origin, cp.size, cp.root) == (ORIGIN, 700, tree(700).root())
    assert log.checkpoint(signer, ORIGIN) == note  # same size: same root, Ed25519 deterministic
    log.append(entries(700, 600))
    later = open_checkpoint(log.checkpoint(signer, ORIGIN), [signer.verifier()])
    assert later.size == 1_300
    verify_consistency(700, 1_300, cp.root, later.root, log.consistency_proof(700, 1_300))


def tamper(engine: Engine, level: int, tile: int) -> None:
    with engine.begin() as conn:
        t = tiles_table.c
        blob = conn.execute(select(t.hashes).where(t.level == level, t.tile == tile)).scalar_one()
        flipped = bytes([blob[0] ^ 1]) + bytes(blob[1:])
        conn.execute(
            tiles_table.update().where(t.level == level, t.tile == tile).values(hashes=flipped)
        )


def test_checkpoint_refuses_tampered_tiles_at_same_size(log: SqlLog, engine: Engine) -> None:
    signer = NoteSigner.generate("example.com/log")
    log.append(entries(0, 600))
    note = log.checkpoint(signer, ORIGIN)
    log.root()  # warm the tile cache: the check must read storage, not the cache
    tamper(engine, 1, 0)  # the level-1 tile whose hashes make the root of 512 leaves
    with pytest.raises(LogError):
        log.checkpoint(signer, ORIGIN)
    assert log.latest_checkpoint() == note


def test_checkpoint_refuses_tampered_tiles_after_growth(log: SqlLog, engine: Engine) -> None:
    signer = NoteSigner.generate("example.com/log")
    log.append(entries(0, 1_000))
    note = log.checkpoint(signer, ORIGIN)
    tamper(engine, 0, 3)  # partial tile 768..999, inside the signed tree
    log.append(entries(1_000, 500))
    with pytest.raises(LogError):
        log.checkpoint(signer, ORIGIN)
    assert log.latest_checkpoint() == note


def test_checkpoint_refuses_tampered_partial_leaf_tile(log: SqlLog, engine: Engine) -> None:
    signer = NoteSigner.generate("example.com/log")
    log.append(entries(0, 600))
    log.checkpoint(signer, ORIGIN)
    tamper(engine, 0, 2)  # leaves 512..599, read directly while the tile is partial
    with pytest.raises(LogError):
        log.checkpoint(signer, ORIGIN)


def test_checkpoint_refuses_a_shrunken_log(log: SqlLog, engine: Engine) -> None:
    signer = NoteSigner.generate("example.com/log")
    log.append(entries(0, 10))
    log.checkpoint(signer, ORIGIN)
    with engine.begin() as conn:
        conn.execute(text("UPDATE tlog_state SET size = 5"))
    with pytest.raises(LogError):
        log.checkpoint(signer, ORIGIN)


def test_reopen_continues(log: SqlLog, engine: Engine) -> None:
    signer = NoteSigner.generate("example.com/log")
    log.append(entries(0, 400))
    log.checkpoint(signer, ORIGIN)
    reopened = SqlLog(engine)
    reopened.create_schema()
    assert reopened.size() == 400
    assert reopened.append(entries(400, 300)) == 400
    assert reopened.root() == tree(700).root()
    assert open_checkpoint(reopened.checkpoint(signer, ORIGIN), [signer.verifier()]).size == 700


def test_is_a_hash_source(log: SqlLog) -> None:
    log.append(entries(0, 300))
    oracle = tree(300)
    assert log.leaf_count == 300
    assert inclusion_proof(log, 299, 300) == inclusion_proof(oracle, 299, 300)
    assert log.subtree_hash(256, 288) == oracle.subtree_hash(256, 288)
    with pytest.raises(ValueError):
        log.subtree_hash(256, 512)


def test_crossing_second_tile_level(tmp_path: Path) -> None:
    """About 70,000 leaves: level-2 tiles (65,536-leaf subtrees) come into play."""
    engine = make_engine(f"sqlite:///{tmp_path / 'big.db'}")
    try:
        log = SqlLog(engine)
        log.create_schema()
        total = 70_000
        oracle = tree(total)
        for start in range(0, 65_000, 5_000):
            log.append(entries(start, 5_000))
        log.append(entries(65_000, 535))
        log.append(entries(65_535, 1))  # exactly 2**16
        log.append(entries(65_536, 1))
        log.append(entries(65_537, total - 65_537))
        rng = random.Random(16)
        check_against(log, oracle, [65_535, 65_536, 65_537, 65_792, total], rng)
    finally:
        engine.dispose()


def test_concurrent_appends_serialise(log: SqlLog) -> None:
    def worker(n: int) -> None:
        for b in range(10):
            log.append(entries(1_000 * n + 30 * b, 30))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(worker, range(4)))
    assert log.size() == 1_200
    stored = [e.leaf_hash for start in (0, 1_000) for e in log.entries(start, start + 1_000)]
    assert sorted(stored) == sorted(
        value for n in range(4) for value, _, _ in entries(1_000 * n, 300)
    )
    assert log.root() == MemoryTree(stored).root()
