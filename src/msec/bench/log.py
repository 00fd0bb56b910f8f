"""``msec bench log``: durable appends and proofs of the transparency log, beside pymerkle.

One run appends the same N entries to :class:`msec.tlog.SqlLog` (SQLite, WAL,
``synchronous=FULL``, batches of ``batch``) and to pymerkle's ``SqliteTree``
(``append_entries``, its own SQLite file and settings), then times random inclusion proofs on
both at size N. pymerkle stores only leaves, so its proofs recompute subtrees; ours read
O(log n) stored tiles. Then it stores readings as ingest does (twin row and leaf in one
transaction) and times the full audit of ``msec verify`` over them (``verify_s``).
pymerkle is a test dependency (``pip install -e '.[test]'``).
"""

from __future__ import annotations

import hashlib
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from msec.core.models import Reading
from msec.guard.sql import SqlEventLog
from msec.platform.trust import leaf_sources
from msec.tlog import NoteSigner, SqlLog, leaf_hash, verify_inclusion
from msec.tlog.audit import audit
from msec.twin.engine import make_engine
from msec.twin.sql import SqlTwin


def _p99_ms(samples: list[float]) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 3)


def _verify_bench(directory: Path, records: int, batch: int) -> dict[str, Any]:
    """Store ``records`` readings the way ingest does (twin row and leaf in one transaction),
    sign a checkpoint, then time the full audit behind ``msec verify``."""
    engine = make_engine(f"sqlite:///{directory / 'verify.db'}")
    log = SqlLog(engine)
    twin = SqlTwin(engine, log=log)
    events = SqlEventLog(engine, log=log)
    for part in (log, twin, events):
        part.create_schema()
    devices = [f"bench-{n:03d}" for n in range(100)]
    for name in devices:
        twin.ensure_provider(name, kind="environment_station")
    start = time.time() - records
    seqs = dict.fromkeys(devices, 0)
    written = 0
    while written < records:
        chunk = []
        for n in range(written, min(records, written + batch)):
            device = devices[n % len(devices)]
            seqs[device] += 1
            value = 15.0 + (n % 97) / 10
            chunk.append(
                Reading(device, "environment", "temperature", value, start + n, seqs[device])
            )
        twin.write(chunk)
        written += len(chunk)
    signer = NoteSigner.generate("bench.msec.local/log")
    log.checkpoint(signer, signer.name)
    began = time.perf_counter()
    report = audit(engine, leaf_sources(twin, events), signer.verifier(), signer.name)
    verify_s = time.perf_counter() - began
    engine.dispose()
    if not report.ok:
        raise AssertionError(f"the benchmark's own log does not verify: {report.problems[:3]}")
    return {"verify_records": report.leaves, "verify_s": round(verify_s, 3)}


def run_log_bench(
    *,
    leaves: int,
    batch: int,
    proofs: int = 200,
    peer_proofs: int = 20,
    verify_records: int | None = None,
    peer: bool = True,
) -> dict[str, Any]:
    """Run the benchmark in a temporary directory; returns the figures.

    ``verify_records`` (default ``leaves``) readings are stored for the ``verify_s`` figure;
    ``peer=False`` skips pymerkle (its proofs take seconds on large trees).
    """
    entries = [hashlib.sha256(i.to_bytes(8, "big")).digest() * 2 for i in range(leaves)]
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="msec-bench-log-") as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'log.db'}")
        log = SqlLog(engine)
        log.create_schema()
        start = time.perf_counter()
        for offset in range(0, leaves, batch):
            chunk = entries[offset : offset + batch]
            # Refs like a reading's (device/seq): the ref index costs what it costs in use.
            log.append(
                [
                    (leaf_hash(e), "bench", f"bench-{n % 100}/{n}")
                    for n, e in enumerate(chunk, offset)
                ]
            )
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
        }
        engine.dispose()
        result.update(_verify_bench(Path(tmp), verify_records or leaves, batch))
        if not peer:
            return result

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
        same_root = tree.get_root(leaves) == root  # the two logs really hold the same tree
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
