"""``msec bench log``: durable appends and proofs of the transparency log, beside pymerkle.

One run appends the same N entries to :class:`msec.tlog.SqlLog` (SQLite, WAL,
``synchronous=FULL``, batches of ``batch``) and to pymerkle's ``SqliteTree``
(``append_entries``, its own SQLite file and settings), then times random inclusion proofs on
both at size N. pymerkle stores only leaves, so its proofs recompute subtrees; ours read
O(log n) stored tiles. pymerkle is a test dependency (``pip install -e '.[test]'``).
"""

from __future__ import annotations

import hashlib
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from msec.tlog import SqlLog, leaf_hash, verify_inclusion
from msec.twin.engine import make_engine


def _p99_ms(samples: list[float]) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 3)


def run_log_bench(
    *, leaves: int, batch: int, proofs: int = 200, peer_proofs: int = 20
) -> dict[str, Any]:
    """Run the benchmark in a temporary directory; returns the figures."""
    entries = [hashlib.sha256(i.to_bytes(8, "big")).digest() * 2 for i in range(leaves)]
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="msec-bench-log-") as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'log.db'}")
        log = SqlLog(engine)
        log.create_schema()
        start = time.perf_counter()
        for offset in range(0, leaves, batch):
            chunk = entries[offset : offset + batch]
            log.append([(leaf_hash(e), "bench", "") for e in chunk])
        append_s = time.perf_counter() - start
        root = log.root(leaves)
        times = []
        for _ in range(proofs):
            index = rng.randrange(leaves)
            t = time.perf_counter()
            proof = log.inclusion_proof(index, leaves)
            times.append(time.perf_counter() - t)
            verify_inclusion(leaf_hash(entries[index]), index, leaves, proof, root)
        result: dict[str, Any] = {
            "leaves": leaves,
            "batch": batch,
            "leaves_per_s": round(leaves / append_s, 1),
            "inclusion_proof_ms": _p99_ms(times),
            "verify_s": None,  # `msec verify` is not built yet (issue 3)
        }
        engine.dispose()

        try:
            from pymerkle import SqliteTree
        except ImportError:
            result["pymerkle"] = "not installed"
            return result
        tree = SqliteTree(str(Path(tmp) / "pymerkle.db"))
        start = time.perf_counter()
        tree.append_entries(entries)
        peer_s = time.perf_counter() - start
        peer_times = []
        for _ in range(peer_proofs):
            index = rng.randrange(leaves) + 1  # pymerkle counts leaves from 1
            t = time.perf_counter()
            tree.prove_inclusion(index, leaves)
            peer_times.append(time.perf_counter() - t)
        same_root = tree.get_state(leaves) == root  # the two logs really hold the same tree
        tree.close()
        result.update(
            {
                "pymerkle_leaves_per_s": round(leaves / peer_s, 1),
                "pymerkle_proof_ms": _p99_ms(peer_times),
                "pymerkle_same_root": same_root,
                "append_ratio_vs_pymerkle": round(peer_s / append_s, 3),
                "proof_speedup_vs_pymerkle": round(
                    _p99_ms(peer_times) / max(_p99_ms(times), 1e-3), 1
                ),
            }
        )
        return result
