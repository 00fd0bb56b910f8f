"""Full audit of a :class:`~msec.tlog.sql.SqlLog` against what the platform stores.

What ``msec verify`` and the running platform's periodic tamper check run. It

1. streams every leaf in index order and checks that indexes are dense and end at the
   stored tree size;
2. asks the leaf's *source* (the twin for readings, the guard for security events, the
   companion store for encrypted records and erasures) for the leaf data recomputed from
   the stored row, hashes it (RFC 9162) and compares it with the stored leaf hash;
3. rebuilds the tree from the recomputed hashes, compares every stored tile with it, and
   computes the root at the size of every stored checkpoint, every anchor read from a
   chain and the witness checkpoint, comparing roots and checking signatures;
4. counts each source's rows and names every row that has no leaf (inserted).

It reads in short transactions (see :func:`audit`), so it can run beside a platform that
keeps appending: it checks the log up to where it ends when the audit reaches it.

Every problem found is reported with the leaf index and ref it concerns; nothing stops at
the first one. Pure logic over SQLAlchemy Core: SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from sqlalchemy import Connection, Engine, bindparam, func, select

from msec.tlog.checkpoint import Checkpoint, NoteError, NoteVerifier, open_checkpoint
from msec.tlog.merkle import EMPTY_ROOT, HASH_SIZE, leaf_hash
from msec.tlog.sql import (
    TILE_WIDTH,
    bundles_table,
    checkpoints_table,
    decode_bundle,
    read_bundles,
    state_table,
    tiles_table,
)

__all__ = [
    "AuditReport",
    "Erased",
    "ExternalCheckpoint",
    "LeafSource",
    "Pace",
    "Problem",
    "audit",
]

_NODE: Final = b"\x01"
_CHUNK: Final = 10_000
_ABSENT: Final = b"\x00" * HASH_SIZE
"""Stands in for a leaf missing from storage, so the rest can still be checked."""
_MAX_NAMED: Final = 1000
"""Problems of one kind named individually; past that they are counted."""
_BUNDLES_PER_READ: Final = 40
"""Bundles (of 256 leaves) read and checked in one read transaction: about a second."""
_STALLS: Final = 3
"""Reads in a row after which, still no closer to the log's end, the audit reads the rest
in one transaction (the log grows faster than it is read: it must end)."""


@dataclass(frozen=True)
class Erased:
    """Returned by a source for a record it deleted on purpose (crypto-shredding).

    Accepted only if the log holds the leaf ``(kind, ref)`` (the erasure entry) at a
    higher index than the erased record's leaf.
    """

    kind: str
    ref: str


class LeafSource(Protocol):
    """Where the leaves of one kind come from, as the auditor needs it."""

    def leaf_data(self, conn: Connection, refs: Sequence[str]) -> Mapping[str, bytes | Erased]:
        """The leaf data recomputed from the stored rows; refs without a row are left out."""
        ...

    def leaf_index(self, conn: Connection, ref: str) -> int | None:
        """The leaf index stored with the row ``ref`` (where its proof starts), if any."""
        ...

    def count_in(self, conn: Connection) -> int:
        """How many rows of this kind are stored (each should have exactly one leaf)."""
        ...

    def refs_in(self, conn: Connection) -> Iterator[str]:
        """The ref of every stored row of this kind."""
        ...


@dataclass(frozen=True)
class ExternalCheckpoint:
    """A checkpoint kept outside the database: a witness file's note or a chain anchor.

    ``note`` (a signed checkpoint) is opened with the log's key; without it ``size`` and
    ``root`` are taken as given (an anchor read from a contract only the log can write).
    """

    source: str
    size: int = 0
    root: bytes = b""
    note: str | None = None


@dataclass(frozen=True)
class Pace:
    """How an audit shares the database with a platform that keeps writing to it.

    Short read transactions alone are not enough for SQLite: its WAL only starts over when
    a checkpoint has copied every frame and no reader still uses one, so a reader that is
    always there (one transaction after the other) keeps the WAL growing, by gigabytes at
    10,000 homes. So while the log grows the audit leaves the database alone for ``gap_s``
    between two read transactions, and sizes its reads to about ``read_s`` each (from one
    bundle of 256 leaves up to ``most_bundles``). ``share`` caps the share of wall time the
    audit spends reading and hashing (1: as fast as it can).
    """

    read_s: float = 0.25
    gap_s: float = 0.5
    share: float = 1.0
    most_bundles: int = _BUNDLES_PER_READ

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError("share is above 0 and at most 1")
        if self.read_s <= 0 or self.gap_s < 0 or self.most_bundles < 1:
            raise ValueError("read_s above 0, gap_s at least 0, most_bundles at least 1")

    def next_bundles(self, bundles: int, took_s: float) -> int:
        """How many bundles to read next, after ``bundles`` took ``took_s``."""
        if took_s > self.read_s and bundles > 1:
            return max(1, bundles // 2)
        if took_s < self.read_s / 2:
            return min(self.most_bundles, bundles * 2)
        return bundles

    def pause_s(self, took_s: float, growing: bool) -> float:
        """How long to leave the database alone after a read that took ``took_s``."""
        pause = took_s * (1 / self.share - 1)
        return max(pause, self.gap_s) if growing else pause


@dataclass(frozen=True)
class Problem:
    """One thing wrong, with where it is. ``what`` is a stable machine name."""

    what: str
    detail: str
    index: int | None = None
    ref: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"what": self.what, "index": self.index, "ref": self.ref, "detail": self.detail}


@dataclass
class AuditReport:
    """What an audit checked and found; ``ok`` when nothing is wrong."""

    size: int = 0
    leaves: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    erased: int = 0
    tiles: int = 0
    checkpoints: int = 0
    external: int = 0
    root: bytes = EMPTY_ROOT
    problems: list[Problem] = field(default_factory=list)
    elapsed_s: float = 0.0
    _named: dict[str, int] = field(default_factory=dict, repr=False)
    suppressed: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.suppressed

    def add(self, problem: Problem) -> None:
        named = self._named.get(problem.what, 0)
        if named >= _MAX_NAMED:
            self.suppressed[problem.what] = self.suppressed.get(problem.what, 0) + 1
            return
        self._named[problem.what] = named + 1
        self.problems.append(problem)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "size": self.size,
            "leaves": self.leaves,
            "by_kind": dict(sorted(self.by_kind.items())),
            "erased": self.erased,
            "tiles": self.tiles,
            "checkpoints": self.checkpoints,
            "external": self.external,
            "root": self.root.hex(),
            "problems": [p.as_dict() for p in self.problems],
            "suppressed": dict(self.suppressed),
            "elapsed_s": round(self.elapsed_s, 3),
        }


class _TreeBuilder:
    """Rebuilds the tree leaf by leaf: roots at any size, and the tiles as stored."""

    def __init__(self, on_tile: Callable[[int, int, bytes], None]) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []  # compact range: (height, hash)
        self._levels: list[list[bytes]] = [[]]  # the pending (partial) tile of each level
        self._tile_numbers: list[int] = [0]
        self._on_tile = on_tile

    def push(self, value: bytes) -> None:
        sha256 = hashlib.sha256
        stack = self._stack
        height, node = 0, value
        while stack and stack[-1][0] == height:
            node = sha256(_NODE + stack.pop()[1] + node).digest()
            height += 1
        stack.append((height, node))
        self.size += 1
        self._add(0, value)

    def _add(self, level: int, value: bytes) -> None:
        pending = self._levels[level]
        pending.append(value)
        if len(pending) == TILE_WIDTH:
            blob = b"".join(pending)
            self._on_tile(level, self._tile_numbers[level], blob)
            self._tile_numbers[level] += 1
            pending.clear()
            if len(self._levels) == level + 1:
                self._levels.append([])
                self._tile_numbers.append(0)
            self._add(level + 1, _fold_full(blob))

    def partial_tiles(self) -> Iterator[tuple[int, int, bytes]]:
        for level, pending in enumerate(self._levels):
            if pending:
                yield level, self._tile_numbers[level], b"".join(pending)

    def tile_count(self) -> int:
        full = sum(self._tile_numbers)
        return full + sum(1 for pending in self._levels if pending)

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        result = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            result = hashlib.sha256(_NODE + left + result).digest()
        return result


def _fold_full(blob: bytes) -> bytes:
    sha256 = hashlib.sha256
    row = blob
    pair = 2 * HASH_SIZE
    while len(row) > HASH_SIZE:
        row = b"".join(
            [sha256(_NODE + row[i : i + pair]).digest() for i in range(0, len(row), pair)]
        )
    return row


def _snapshot(engine: Engine) -> Connection:
    """A connection reading one consistent snapshot until closed."""
    if engine.dialect.name == "sqlite":
        conn = engine.connect()
        # pysqlite opens no transaction for reads; an explicit one pins the WAL snapshot.
        conn.exec_driver_sql("BEGIN")
        return conn
    return engine.connect().execution_options(isolation_level="REPEATABLE READ")


@contextlib.contextmanager
def _reading(engine: Engine) -> Iterator[Connection]:
    """One short read transaction (closing the connection ends it)."""
    conn = _snapshot(engine)
    try:
        yield conn
    finally:
        conn.close()


def audit(
    engine: Engine,
    sources: Mapping[str, LeafSource],
    verifier: NoteVerifier,
    origin: str,
    *,
    external: Sequence[ExternalCheckpoint] = (),
    progress: Callable[[int, int], None] | None = None,
    derived: Sequence[Callable[[Connection], Iterable[tuple[str, str]]]] = (),
    pace: Pace | None = None,
) -> AuditReport:
    """Check the whole log on ``engine`` against ``sources`` (leaf kind → source).

    ``verifier`` is the log's key and ``origin`` its origin: every stored checkpoint, and
    every ``external`` one with a note, must carry a valid signature for that origin.
    ``derived`` are checks of state derived from logged rows (the twin's latest values):
    each yields ``(where, what)`` for what disagrees, reported as ``derived`` problems.
    ``progress(done, total)`` is called as leaves are checked. Raises only for database
    errors (the caller reports them as I/O errors); everything found wrong is in the report.

    The log may grow while it is audited (a running platform): leaves are read in short
    read transactions, each checked against the rows as that transaction sees them, until
    one reaches the log's end; that last transaction also checks what needs the whole log
    at once (the partial tiles, the rows no leaf logs, the derived state). No snapshot is
    held for the whole audit, and while the log grows the audit pauses between its reads
    (``pace``, see :class:`Pace`), so that SQLite can start its WAL over and PostgreSQL
    can vacuum meanwhile.
    """
    started = time.perf_counter()
    report = AuditReport()
    _Audit(engine, report, sources, pace or Pace(), progress).run(
        verifier, origin, external, derived
    )
    report.elapsed_s = time.perf_counter() - started
    return report


class _Audit:
    """The state of one audit as it reads the log chunk by chunk."""

    def __init__(
        self,
        engine: Engine,
        report: AuditReport,
        sources: Mapping[str, LeafSource],
        pace: Pace,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.engine = engine
        self.report = report
        self.sources = sources
        self.pace = pace
        self.progress = progress
        self.tiles = _TileChecker(report)
        self.builder = _TreeBuilder(self.tiles.check)
        self.wanted: set[int] = set()
        self.roots: dict[int, bytes] = {}
        self.logged: dict[str, int] = {}  # leaves per kind
        self.found: dict[str, int] = {}  # leaves per kind whose row is stored
        # Erased records waiting for their erasure entry: (kind, ref) -> [(index, ref)].
        self.awaiting: dict[tuple[str, str], list[tuple[int, str]]] = {}

    def run(
        self,
        verifier: NoteVerifier,
        origin: str,
        external: Sequence[ExternalCheckpoint],
        derived: Sequence[Callable[[Connection], Iterable[tuple[str, str]]]],
    ) -> None:
        report = self.report
        with _reading(self.engine) as conn:
            seen_size = start_size = _size(conn)
            targets = _targets(conn, report, verifier, origin, external)
        self.wanted = {target_size for target_size, _ in targets}
        if 0 in self.wanted:
            self.roots[0] = EMPTY_ROOT
        pace = self.pace
        first = 0  # the next bundle to read
        bundles = pace.most_bundles
        behind, stalls = -1, 0  # catching up with what was appended since the start
        while True:
            began = time.perf_counter()
            with _reading(self.engine) as conn:
                size = _size(conn)
                count = -(-size // TILE_WIDTH)
                if stalls >= _STALLS:  # appended faster than read: take the rest at once
                    bundles = max(bundles, count - first)
                last = min(first + bundles, count) - 1
                if size < self.builder.size:
                    report.add(
                        Problem(
                            "rollback",
                            f"the log shrank from {self.builder.size} to {size} leaves while "
                            "it was audited",
                            size,
                        )
                    )
                    report.size = size
                    return
                self.tiles.conn = conn
                if last >= first:
                    self._check(conn, _stored_leaves(conn, first, last, size, report))
                if last >= count - 1:  # this transaction sees the end of the log
                    report.size = size
                    self._finish(conn, targets)
                    for check in derived:
                        for where, what in check(conn):
                            report.add(Problem("derived", what, None, where))
                    return
            took = time.perf_counter() - began
            first = last + 1
            if first * TILE_WIDTH >= start_size:
                stalls = stalls + 1 if count - first >= behind >= 0 else 0
                behind = count - first
            if self.progress is not None:
                self.progress(self.builder.size, size)
            bundles = pace.next_bundles(bundles, took)
            pause = pace.pause_s(took, growing=size > seen_size)
            seen_size = size
            if pause > 0:
                time.sleep(pause)

    def _push(self, value: bytes) -> None:
        builder = self.builder
        builder.push(value)
        if builder.size in self.wanted:
            self.roots[builder.size] = builder.root()

    def _check(
        self, conn: Connection, chunk: list[tuple[int, bytes | None, str | None, str | None]]
    ) -> None:
        """Check one chunk of leaves against the rows, on the chunk's own transaction."""
        report, sources = self.report, self.sources
        refs_by_kind: dict[str, list[str]] = {}
        for _, _, kind, ref in chunk:
            if kind is not None and ref is not None:
                refs_by_kind.setdefault(kind, []).append(ref)
        data = {
            kind: sources[kind].leaf_data(conn, refs)
            for kind, refs in refs_by_kind.items()
            if kind in sources
        }
        for idx, stored, kind, ref in chunk:
            value = stored or _ABSENT
            if kind is None or ref is None:
                self._push(value)
                continue
            self.logged[kind] = self.logged.get(kind, 0) + 1
            if self.awaiting:  # an erasure entry after the records it erased
                for _ in self.awaiting.pop((kind, ref), ()):
                    report.erased += 1
            recomputed = data[kind].get(ref) if kind in data else None
            if kind not in sources:
                report.add(Problem("unknown_kind", f"a leaf of unknown kind {kind!r}", idx, ref))
            elif recomputed is None:
                report.add(
                    Problem("missing_record", f"the {kind} this leaf logs is gone", idx, ref)
                )
            elif isinstance(recomputed, Erased):
                self.awaiting.setdefault((recomputed.kind, recomputed.ref), []).append((idx, ref))
            else:
                self.found[kind] = self.found.get(kind, 0) + 1
                value = leaf_hash(recomputed)
                if value != stored:
                    report.add(
                        Problem(
                            "modified",
                            f"the stored {kind} and its leaf hash no longer match",
                            idx,
                            ref,
                        )
                    )
            self._push(value)
            report.leaves += 1

    def _finish(self, conn: Connection, targets: list[tuple[int, ExternalCheckpoint]]) -> None:
        """What needs the whole log, on the transaction that read its last leaves."""
        report, builder = self.report, self.builder
        size = report.size
        bundles = -(-size // TILE_WIDTH)
        extra = conn.execute(
            select(func.count()).select_from(bundles_table).where(bundles_table.c.bundle >= bundles)
        )
        if extra.scalar_one():
            report.add(Problem("extra_leaf", "bundles beyond the tree size", bundles * TILE_WIDTH))
        report.by_kind = self.logged
        report.root = builder.root()

        for level, tile, blob in builder.partial_tiles():
            self.tiles.check(level, tile, blob)
        report.tiles = builder.tile_count()
        self.tiles.finish(report.tiles)

        for waiting in self.awaiting.values():
            for index, ref in waiting:
                report.add(
                    Problem(
                        "missing_record", "a record deleted without an erasure entry", index, ref
                    )
                )

        for target_size, target in targets:
            if target_size > size:
                report.add(
                    Problem(
                        "rollback",
                        f"{target.source} has {target_size} leaves but the log only {size}: "
                        "leaves were truncated or the database was rolled back",
                    )
                )
            elif self.roots.get(target_size) != target.root:
                report.add(
                    Problem(
                        "root_mismatch",
                        f"{target.source}: the stored leaves give another root at size "
                        f"{target_size}: a leaf before index {target_size} was changed, "
                        "reordered, inserted or removed",
                    )
                )

        for kind, source in self.sources.items():
            # Rows can leave a kind while the log is read (an erasure shreds records that
            # were already counted), so a different count only means: look row by row.
            if source.count_in(conn) == self.found.get(kind, 0):
                continue
            logged_refs = {ref for kind_, ref in _all_refs(conn, size) if kind_ == kind}
            for ref in source.refs_in(conn):
                if ref not in logged_refs:
                    report.add(Problem("inserted", f"a stored {kind} that no leaf logs", None, ref))


def _size(conn: Connection) -> int:
    return int(conn.execute(select(state_table.c.size)).scalar() or 0)


def _targets(
    conn: Connection,
    report: AuditReport,
    verifier: NoteVerifier,
    origin: str,
    external: Sequence[ExternalCheckpoint],
) -> list[tuple[int, ExternalCheckpoint]]:
    """Every (size, root) the rebuilt tree must match: stored checkpoints and external ones."""
    targets: list[tuple[int, ExternalCheckpoint]] = []
    cp = checkpoints_table.c
    for size, root, note in conn.execute(select(cp.size, cp.root, cp.note).order_by(cp.size)):
        size, root = int(size), bytes(root)
        report.checkpoints += 1
        where = f"checkpoint {size}"
        checked = _open(note, verifier, origin, report, where)
        if checked is not None and (checked.size != size or checked.root != root):
            report.add(Problem("checkpoint", f"{where}: its note says size {checked.size}"))
        targets.append((size, ExternalCheckpoint(where, size, root)))
    for item in external:
        report.external += 1
        if item.note is not None:
            checked = _open(item.note, verifier, origin, report, item.source)
            if checked is None:
                continue
            targets.append(
                (checked.size, ExternalCheckpoint(item.source, checked.size, checked.root))
            )
        else:
            targets.append((item.size, item))
    return targets


def _open(
    note: str, verifier: NoteVerifier, origin: str, report: AuditReport, where: str
) -> Checkpoint | None:
    try:
        checkpoint = open_checkpoint(note, [verifier])
    except NoteError as exc:
        report.add(Problem("checkpoint", f"{where}: {exc}"))
        return None
    if checkpoint.origin != origin:
        report.add(Problem("checkpoint", f"{where}: origin {checkpoint.origin!r}, not {origin!r}"))
        return None
    return checkpoint


def _stored_leaves(
    conn: Connection, first: int, last: int, size: int, report: AuditReport
) -> list[tuple[int, bytes | None, str | None, str | None]]:
    """``(index, stored leaf hash, kind, ref)`` of the leaves of bundles ``first``..``last``
    of a log of ``size`` leaves.

    What is missing or malformed (a bundle, a level-0 tile, an entry) is reported and given
    as ``None``.
    """
    bundles, tiles = read_bundles(conn, first, last)
    chunk: list[tuple[int, bytes | None, str | None, str | None]] = []
    for number in range(first, last + 1):
        base = number * TILE_WIDTH
        width = min(TILE_WIDTH, size - base)
        items: list[tuple[str, str, float]] = []
        raw = bundles.get(number)
        if raw is None:
            report.add(Problem("missing_leaf", f"bundle {number} is missing", base))
        else:
            try:
                items = decode_bundle(bytes(raw))
            except ValueError as exc:
                report.add(Problem("missing_leaf", f"bundle {number}: {exc}", base))
            if len(items) != width:
                report.add(
                    Problem(
                        "missing_leaf" if len(items) < width else "extra_leaf",
                        f"bundle {number} holds {len(items)} entries where the tree size "
                        f"says {width}",
                        base + min(len(items), width),
                    )
                )
        hashes = bytes(tiles.get(number) or b"")
        if len(hashes) != width * HASH_SIZE:
            report.add(
                Problem(
                    "tile",
                    f"tile 0/{number} holds {len(hashes) // HASH_SIZE} leaf hashes where "
                    f"the tree size says {width}",
                    base,
                )
            )
        for slot in range(width):
            stored = hashes[slot * HASH_SIZE : (slot + 1) * HASH_SIZE] or None
            if stored is not None and len(stored) != HASH_SIZE:
                stored = None
            kind, ref = (items[slot][0], items[slot][1]) if slot < len(items) else (None, None)
            chunk.append((base + slot, stored, kind, ref))
    return chunk


def _all_refs(conn: Connection, size: int) -> Iterator[tuple[str, str]]:
    """``(kind, ref)`` of every logged entry (well-formed bundles only)."""
    b = bundles_table.c
    count = -(-size // TILE_WIDTH)
    for first in range(0, count, _BUNDLES_PER_READ):
        query = select(b.entries).where(b.bundle >= first, b.bundle < first + _BUNDLES_PER_READ)
        for (raw,) in conn.execute(query.order_by(b.bundle)).all():
            try:
                for kind, ref, _ in decode_bundle(bytes(raw)):
                    yield kind, ref
            except ValueError:
                continue


class _TileChecker:
    """Compares rebuilt tiles with the stored ones, reading stored tiles in order."""

    def __init__(self, report: AuditReport) -> None:
        #: The read transaction of the chunk being checked (full tiles never change).
        self.conn: Connection | None = None
        self._report = report
        t = tiles_table.c
        self._query = select(t.hashes).where(
            t.level == bindparam("level"), t.tile == bindparam("tile")
        )

    def check(self, level: int, tile: int, blob: bytes) -> None:
        if level == 0:
            return  # level-0 tiles are the stored leaf hashes, compared leaf by leaf
        assert self.conn is not None
        stored = self.conn.execute(self._query, {"level": level, "tile": tile}).scalar()
        if stored is None:
            self._report.add(Problem("tile", f"tile {level}/{tile} is missing"))
            return
        stored = bytes(stored)
        if stored == blob:
            return
        if len(stored) != len(blob):
            self._report.add(
                Problem(
                    "tile",
                    f"tile {level}/{tile} holds {len(stored) // HASH_SIZE} hashes where the "
                    f"leaves make {len(blob) // HASH_SIZE}",
                )
            )
        if level == 0:
            # Level-0 tiles hold the leaf hashes themselves: name the leaves that differ.
            base = tile * TILE_WIDTH
            for slot in range(min(len(stored), len(blob)) // HASH_SIZE):
                span = slice(slot * HASH_SIZE, (slot + 1) * HASH_SIZE)
                if stored[span] != blob[span]:
                    self._report.add(
                        Problem(
                            "tile", f"tile 0/{tile} holds another hash for this leaf", base + slot
                        )
                    )
        elif stored[: len(blob)] != blob[: len(stored)]:
            self._report.add(Problem("tile", f"tile {level}/{tile} differs from the leaves"))

    def finish(self, expected: int) -> None:
        assert self.conn is not None
        count = self.conn.execute(select(func.count()).select_from(tiles_table)).scalar_one()
        if int(count) != expected:
            self._report.add(
                Problem("tile", f"{count} tiles stored where the leaves make {expected}")
            )
