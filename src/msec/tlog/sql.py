"""A durable append-only RFC 9162 log on SQLAlchemy 2 Core: SQLite (WAL) or PostgreSQL.

Four tables, same behaviour on both databases:

* ``tlog_bundles(bundle, entries)``: what leaves ``256 * bundle ..`` refer to, as a CBOR
  sequence (RFC 8742) of ``[kind, ref, created]`` arrays, one per leaf, in the style of C2SP
  tlog-tiles' entry bundles: one row per 256 leaves, the right-most one rewritten as it grows.
  Leaf hashes themselves live only in the level-0 tiles.
* ``tlog_tiles(level, tile, hashes)``: perfect-subtree hashes in tiles of up to 256, in the
  style of C2SP tlog-tiles. A tile at ``level`` holds the hashes of consecutive perfect
  subtrees of height ``8 * level`` (level 0: leaf hashes; level 1: roots of 256-leaf
  subtrees, ...). Only the right-most tile of a level is partial; it is rewritten as it
  grows, every other tile is written once and never changes. There is no row per interior
  node: a tree of ``n`` leaves holds about ``n / 255`` tile rows.
* ``tlog_state(id, size)``: one row, the tree size; appends lock it to serialise.
* ``tlog_checkpoints(size, root, note, created)``: every signed checkpoint.

Any perfect aligned subtree is read from one tile: one stored hash when its height is a
multiple of 8, otherwise at most 128 hashes of the tile below, hashed up in memory. So a root
or a proof costs O(log n) tile reads; full tiles are also kept in an in-process LRU.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import cbor2
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from msec.core.errors import MsecError
from msec.tlog.checkpoint import Checkpoint, NoteSigner, sign_note
from msec.tlog.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    ProofError,
    consistency_proof,
    inclusion_proof,
    verify_consistency,
)

__all__ = [
    "MAX_ENTRIES_PER_READ",
    "LogEntry",
    "LogError",
    "SqlLog",
    "decode_bundle",
    "write_transaction",
]

TILE_WIDTH: Final = 256
"""Hashes per full tile; a tile level spans ``log2(TILE_WIDTH) == 8`` tree levels."""

MAX_ENTRIES_PER_READ: Final = 1000
"""Most entries one :meth:`SqlLog.entries` call returns."""

_TILE_HEIGHT: Final = 8
_FULL_TILE_BYTES: Final = TILE_WIDTH * HASH_SIZE
_NODE_PREFIX: Final = b"\x01"

metadata = MetaData()

bundles_table = Table(
    "tlog_bundles",
    metadata,
    Column(
        "bundle",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("entries", LargeBinary, nullable=False),
)

tiles_table = Table(
    "tlog_tiles",
    metadata,
    Column("level", Integer, nullable=False),
    Column("tile", BigInteger, nullable=False),
    Column("hashes", LargeBinary, nullable=False),
    PrimaryKeyConstraint("level", "tile"),
)

state_table = Table(
    "tlog_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
)

checkpoints_table = Table(
    "tlog_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary(HASH_SIZE), nullable=False),
    Column("note", Text, nullable=False),
    Column("created", Double, nullable=False),
)

_STATE_ID: Final = 1


class LogError(MsecError):
    """The log refused an operation or found its storage inconsistent; the message says why.

    Raised when a checkpoint would not be consistent with the last one signed (tampered or
    lost storage, or a shrunken tree), when a tile is missing or malformed, and when the
    schema was not created.
    """


@dataclass(frozen=True)
class LogEntry:
    """One leaf of the log: its position, RFC 9162 leaf hash, and what it refers to."""

    index: int
    leaf_hash: bytes
    kind: str
    ref: str
    created: float


def _cbor_sequence(items: list[tuple[str, str, float]]) -> bytes:
    """The items as a CBOR sequence: one CBOR array encoded, without its header.

    One encoder call per bundle instead of one per entry (a third of an append's time).
    """
    if not items:
        return b""
    count = len(items)
    header = 1 if count < 24 else 2 if count < 256 else 3 if count < 65536 else 5
    return cbor2.dumps(items)[header:]


def decode_bundle(data: bytes) -> list[tuple[str, str, float]]:
    """The ``(kind, ref, created)`` entries of one stored bundle; ``ValueError`` if malformed."""
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(stream)
    found: list[tuple[str, str, float]] = []
    try:
        while stream.tell() < len(data):
            item = decoder.decode()
            if (
                not isinstance(item, list)
                or len(item) != 3
                or not isinstance(item[0], str)
                or not isinstance(item[1], str)
                or not isinstance(item[2], float)
            ):
                raise ValueError("a bundle entry is not [kind, ref, created]")
            found.append((item[0], item[1], item[2]))
    except cbor2.CBORDecodeError as exc:
        raise ValueError(f"malformed bundle: {exc}") from exc
    return found


def read_bundles(
    conn: Connection, first: int, last: int
) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """The stored bundles and level-0 tiles numbered ``first``..``last``, by number."""
    b, t = bundles_table.c, tiles_table.c
    bundles = dict(
        conn.execute(select(b.bundle, b.entries).where(b.bundle >= first, b.bundle <= last)).all()
    )
    tiles = dict(
        conn.execute(
            select(t.tile, t.hashes).where(t.level == 0, t.tile >= first, t.tile <= last)
        ).all()
    )
    return bundles, tiles  # type: ignore[return-value]


def _entries(conn: Connection, start: int, end: int) -> Iterator[LogEntry]:
    """Entries ``[start, end)`` from bundles and level-0 tiles; ``LogError`` if either is
    missing or short."""
    first, last = start // TILE_WIDTH, (end - 1) // TILE_WIDTH
    bundles, tiles = read_bundles(conn, first, last)
    for number in range(first, last + 1):
        if number not in bundles or number not in tiles:
            raise LogError(f"bundle or tile 0/{number} is missing")
        try:
            items = decode_bundle(bytes(bundles[number]))
        except ValueError as exc:
            raise LogError(f"bundle {number}: {exc}") from exc
        hashes = bytes(tiles[number])
        base = number * TILE_WIDTH
        for slot in range(max(start - base, 0), min(end - base, TILE_WIDTH)):
            if slot >= len(items) or (slot + 1) * HASH_SIZE > len(hashes):
                raise LogError(f"bundle or tile 0/{number} is short")
            kind, ref, created = items[slot]
            value = hashes[slot * HASH_SIZE : (slot + 1) * HASH_SIZE]
            yield LogEntry(base + slot, value, kind, ref, created)


def _fold(blob: bytes, start: int, count: int) -> bytes:
    """Return the root of the perfect subtree over ``count`` (a power of two) hashes of ``blob``.

    The hashes are ``blob``'s 32-byte slots ``start .. start + count - 1``.
    """
    sha256 = hashlib.sha256
    # Siblings lie side by side, so each node hashes one 64-byte slice of the row below.
    row = blob[start * HASH_SIZE : (start + count) * HASH_SIZE]
    pair = 2 * HASH_SIZE
    while len(row) > HASH_SIZE:
        row = b"".join(
            [sha256(_NODE_PREFIX + row[i : i + pair]).digest() for i in range(0, len(row), pair)]
        )
    return row


class _TileCache:
    """A thread-safe LRU of full tiles, keyed by ``(level, tile)``; full tiles never change."""

    def __init__(self, max_tiles: int) -> None:
        self._max = max_tiles
        self._tiles: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> bytes | None:
        with self._lock:
            blob = self._tiles.get(key)
            if blob is not None:
                self._tiles.move_to_end(key)
            return blob

    def put(self, key: tuple[int, int], blob: bytes) -> None:
        if self._max <= 0:
            return
        with self._lock:
            self._tiles[key] = blob
            self._tiles.move_to_end(key)
            while len(self._tiles) > self._max:
                self._tiles.popitem(last=False)


class _TileReader:
    """A :class:`~msec.tlog.merkle.HashSource` over one connection, for a fixed tree size.

    With ``cache`` None every tile is read from the database (what checkpoint verification
    needs: it must check storage, not memory). Raises :class:`LogError` for a missing or
    short tile.
    """

    def __init__(self, conn: Connection, size: int, cache: _TileCache | None) -> None:
        self._conn = conn
        self._size = size
        self._cache = cache
        self._local: dict[tuple[int, int], bytes] = {}
        t = tiles_table.c
        self._query = select(t.hashes).where(
            t.level == bindparam("level"), t.tile == bindparam("tile")
        )

    @property
    def leaf_count(self) -> int:
        """The tree size this reader was made for."""
        return self._size

    def _tile(self, level: int, tile: int) -> bytes:
        key = (level, tile)
        blob = self._local.get(key)
        if blob is None and self._cache is not None:
            blob = self._cache.get(key)
        if blob is None:
            found = self._conn.execute(self._query, {"level": level, "tile": tile}).scalar()
            if found is None:
                raise LogError(f"tile {level}/{tile} is missing")
            blob = bytes(found)
            if self._cache is not None and len(blob) == _FULL_TILE_BYTES:
                self._cache.put(key, blob)
        self._local[key] = blob
        return blob

    def subtree_hash(self, start: int, end: int) -> bytes:
        """Return the hash of the perfect aligned subtree ``[start, end)`` from one tile."""
        width = end - start
        if width <= 0 or width & (width - 1) or start % width or end > self._size:
            raise ValueError(f"[{start}, {end}) is not a perfect aligned subtree of the log")
        height = width.bit_length() - 1
        level, below = divmod(height, _TILE_HEIGHT)
        first = start >> (_TILE_HEIGHT * level)  # index of the first hash at that level
        tile, slot = divmod(first, TILE_WIDTH)
        count = 1 << below
        blob = self._tile(level, tile)
        if len(blob) < (slot + count) * HASH_SIZE or len(blob) % HASH_SIZE:
            raise LogError(f"tile {level}/{tile} is too short or malformed")
        return _fold(blob, slot, count)

    def root(self) -> bytes:
        """Return MTH of the first ``leaf_count`` leaves: its perfect pieces, folded."""
        if self._size == 0:
            return EMPTY_ROOT
        pieces: list[bytes] = []
        position, remaining = 0, self._size
        while remaining:
            piece = 1 << (remaining.bit_length() - 1)
            pieces.append(self.subtree_hash(position, position + piece))
            position += piece
            remaining -= piece
        result = pieces[-1]
        for left in reversed(pieces[:-1]):
            result = hashlib.sha256(_NODE_PREFIX + left + result).digest()
        return result


class SqlLog:
    """A durable append-only RFC 9162 Merkle log; a :class:`~msec.tlog.merkle.HashSource`.

    Build the engine with :func:`msec.twin.engine.make_engine` and call :meth:`create_schema`
    once. Safe to share between threads and processes on the same database: appends and
    checkpoints serialise on the database (``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR
    UPDATE`` of ``tlog_state`` on PostgreSQL). Reads see committed data only. Database
    failures propagate as ``sqlalchemy.exc`` errors and leave nothing of the call stored.

    ``tile_cache`` is how many full tiles (8 KiB each) are kept in memory for reads.
    """

    def __init__(self, engine: Engine, *, tile_cache: int = 4096) -> None:
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise MsecError(f"SqlLog supports sqlite and postgresql, not {dialect!r}")
        self._engine = engine
        self._sqlite = dialect == "sqlite"
        self._cache = _TileCache(tile_cache)
        t = tiles_table.c
        self._tile_query = select(t.hashes).where(
            t.level == bindparam("level"), t.tile == bindparam("tile")
        )
        self._tile_update = (
            update(tiles_table)
            .where(t.level == bindparam("b_level"), t.tile == bindparam("b_tile"))
            .values(hashes=bindparam("b_hashes"))
        )

    # -- schema and transactions ------------------------------------------------------------

    def create_schema(self) -> None:
        """Create the ``tlog_`` tables and the state row where missing. Idempotent."""
        metadata.create_all(self._engine)
        dialect_insert = sqlite.insert if self._sqlite else postgresql.insert
        with self._engine.begin() as conn:
            conn.execute(
                dialect_insert(state_table)
                .values(id=_STATE_ID, size=0)
                .on_conflict_do_nothing(index_elements=["id"])
            )

    @contextmanager
    def _writing(self, conn: Connection | None) -> Iterator[Connection]:
        """Yield ``conn`` as is, or a new connection in a write transaction committed on exit."""
        if conn is not None:
            yield conn
            return
        with self._engine.begin() as own:
            if self._sqlite:
                # Take the write lock now rather than upgrading a read snapshot later, which
                # fails at once if another process committed in between.
                own.exec_driver_sql("BEGIN IMMEDIATE")
            yield own

    def _locked_size(self, conn: Connection) -> int:
        """Return the tree size, locking the state row (PostgreSQL) until the transaction ends."""
        query = select(state_table.c.size).where(state_table.c.id == _STATE_ID).with_for_update()
        size = conn.execute(query).scalar()
        if size is None:
            raise LogError("the log has no state row: call create_schema() first")
        return int(size)

    # -- writing ----------------------------------------------------------------------------

    def append(
        self, entries: Sequence[tuple[bytes, str, str]], *, conn: Connection | None = None
    ) -> int:
        """Append ``(leaf_hash, kind, ref)`` entries in order; return the index of the first.

        ``leaf_hash`` is the 32-byte RFC 9162 leaf hash (see :func:`~msec.tlog.leaf_hash`);
        ``kind`` and ``ref`` are text without NUL. Raises ``ValueError`` for a malformed entry
        (nothing is stored). An empty ``entries`` stores nothing and returns the current size.

        Without ``conn`` the append is its own transaction, committed before returning. With
        ``conn`` it runs inside the caller's open transaction, commits or rolls back with it,
        and the caller must serialise appends: on SQLite the caller must have started the
        transaction with ``BEGIN IMMEDIATE`` (or hold the write lock otherwise) before this
        call; on PostgreSQL this call locks ``tlog_state`` with ``FOR UPDATE`` until the
        caller's transaction ends. Deduplication is the caller's business: the same entry
        appended twice is two leaves.
        """
        rows = [(value, kind, ref) for value, kind, ref in entries]
        # One comprehension a check: a per-entry loop cost ~1 us a leaf, a fifth of an append.
        if not all([type(value) is bytes and len(value) == HASH_SIZE for value, _, _ in rows]):
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes")
        if not all([type(kind) is str and type(ref) is str for _, kind, ref in rows]):
            raise ValueError("kind and ref must be str")
        with self._writing(conn) as writer:
            first = self._locked_size(writer)
            if rows:
                self._extend_bundles(writer, first, rows)
                self._extend_tiles(writer, first, [value for value, _, _ in rows])
                writer.execute(
                    update(state_table)
                    .where(state_table.c.id == _STATE_ID)
                    .values(size=first + len(rows))
                )
        return first

    def lock(self, conn: Connection) -> int:
        """Take the append lock in the caller's transaction and return the tree size.

        On PostgreSQL this locks ``tlog_state`` until the transaction ends; callers that also
        lock other rows take this lock first, so that writers cannot deadlock. On SQLite the
        caller's ``BEGIN IMMEDIATE`` is the lock. The next :meth:`append` in the same
        transaction starts at the returned index.
        """
        return self._locked_size(conn)

    @contextmanager
    def writing(self) -> Iterator[tuple[Connection, int]]:
        """``with log.writing() as (conn, first)``: a write transaction on the log's engine
        that holds the append lock from its start (SQLite ``BEGIN IMMEDIATE``, PostgreSQL
        :meth:`lock`), committed on exit. ``first`` is the index the next :meth:`append` in
        it gets: what a store writing a record and its leaf together numbers the record with.
        """
        with self._writing(None) as conn:
            yield conn, self._locked_size(conn)

    def _extend_bundles(
        self, conn: Connection, first: int, rows: list[tuple[bytes, str, str]]
    ) -> None:
        created = time.time()
        bundle, slot = divmod(first, TILE_WIDTH)
        prefix = b""
        if slot:
            found = conn.execute(
                select(bundles_table.c.entries).where(bundles_table.c.bundle == bundle)
            ).scalar()
            prefix = bytes(found) if found is not None else b""
        items = [(kind, ref, created) for _, kind, ref in rows]
        head = TILE_WIDTH - slot
        groups = [prefix + _cbor_sequence(items[:head])]
        groups += [
            _cbor_sequence(items[i : i + TILE_WIDTH]) for i in range(head, len(items), TILE_WIDTH)
        ]
        new_rows = [{"bundle": bundle + i, "entries": data} for i, data in enumerate(groups)]
        if slot:
            conn.execute(
                update(bundles_table)
                .where(bundles_table.c.bundle == bindparam("b_bundle"))
                .values(entries=bindparam("b_entries")),
                {"b_bundle": bundle, "b_entries": new_rows.pop(0)["entries"]},
            )
        if new_rows:
            conn.execute(insert(bundles_table), new_rows)

    def _extend_tiles(self, conn: Connection, size: int, hashes: list[bytes]) -> None:
        """Add ``hashes`` (leaf hashes after ``size`` leaves) to level 0, carrying upwards."""
        level, count = 0, size  # count: hashes stored at this level before this append
        while hashes:
            tile, slot = divmod(count, TILE_WIDTH)
            prefix = b""
            if slot:
                # Not cached: inside a caller's transaction the row may yet be rolled back.
                found = conn.execute(self._tile_query, {"level": level, "tile": tile}).scalar()
                prefix = bytes(found) if found is not None else b""
                if len(prefix) != slot * HASH_SIZE:
                    raise LogError(f"tile {level}/{tile} does not hold {slot} hashes")
            data = prefix + b"".join(hashes)
            chunks = [data[i : i + _FULL_TILE_BYTES] for i in range(0, len(data), _FULL_TILE_BYTES)]
            new_rows = [
                {"level": level, "tile": tile + i, "hashes": chunk}
                for i, chunk in enumerate(chunks)
            ]
            if slot:
                first = new_rows.pop(0)
                conn.execute(
                    self._tile_update,
                    {"b_level": level, "b_tile": tile, "b_hashes": first["hashes"]},
                )
            if new_rows:
                conn.execute(insert(tiles_table), new_rows)
            # Every full chunk was partial or absent before: each completes one hash above.
            hashes = [
                _fold(chunk, 0, TILE_WIDTH) for chunk in chunks if len(chunk) == _FULL_TILE_BYTES
            ]
            level, count = level + 1, count // TILE_WIDTH

    # -- reading ----------------------------------------------------------------------------

    def size(self) -> int:
        """Return the number of leaves committed."""
        with self._engine.connect() as conn:
            size = conn.execute(
                select(state_table.c.size).where(state_table.c.id == _STATE_ID)
            ).scalar()
        if size is None:
            raise LogError("the log has no state row: call create_schema() first")
        return int(size)

    @property
    def leaf_count(self) -> int:
        """:class:`~msec.tlog.merkle.HashSource`: the number of leaves committed."""
        return self.size()

    def subtree_hash(self, start: int, end: int) -> bytes:
        """:class:`~msec.tlog.merkle.HashSource`: hash of the perfect aligned ``[start, end)``.

        ``ValueError`` unless ``[start, end)`` is perfect, aligned and within :meth:`size`.
        """
        with self._engine.connect() as conn:
            return _TileReader(conn, self._size_in(conn), self._cache).subtree_hash(start, end)

    def _size_in(self, conn: Connection) -> int:
        size = conn.execute(
            select(state_table.c.size).where(state_table.c.id == _STATE_ID)
        ).scalar()
        if size is None:
            raise LogError("the log has no state row: call create_schema() first")
        return int(size)

    @contextmanager
    def _reader(self, size: int | None) -> Iterator[_TileReader]:
        """Yield a cached reader for ``size`` (default: the current size); ``ValueError`` if
        ``size`` is negative or beyond the log."""
        with self._engine.connect() as conn:
            current = self._size_in(conn)
            if size is None:
                size = current
            if not 0 <= size <= current:
                raise ValueError(f"size {size} is not in 0..{current}")
            yield _TileReader(conn, size, self._cache)

    def root(self, size: int | None = None) -> bytes:
        """Return MTH of the first ``size`` leaves (all by default); :data:`EMPTY_ROOT` for 0.

        ``ValueError`` unless ``0 <= size <= size()``.
        """
        with self._reader(size) as reader:
            return reader.root()

    def leaf_hash(self, index: int) -> bytes:
        """Return the leaf hash at ``index``; ``ValueError`` unless ``0 <= index < size()``."""
        with self._engine.connect() as conn:
            size = self._size_in(conn)
            if not 0 <= index < size:
                raise ValueError(f"no leaf at index {index}")
            return _TileReader(conn, size, self._cache).subtree_hash(index, index + 1)

    def entries(self, start: int, end: int) -> list[LogEntry]:
        """Return the entries ``[start, end)`` in order, fewer if ``end`` is beyond the log.

        ``ValueError`` unless ``0 <= start <= end`` and ``end - start <=``
        :data:`MAX_ENTRIES_PER_READ`.
        """
        if not 0 <= start <= end or end - start > MAX_ENTRIES_PER_READ:
            raise ValueError(
                f"[{start}, {end}) is not a range of at most {MAX_ENTRIES_PER_READ} entries"
            )
        with self._engine.connect() as conn:
            end = min(end, self._size_in(conn))
            if start >= end:
                return []
            return list(_entries(conn, start, end))

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Return the RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

        ``ValueError`` unless ``0 <= index < size <= size()``. Reads O(log size) tiles.
        """
        with self._reader(size) as reader:
            return inclusion_proof(reader, index, size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """Return the RFC 9162 consistency proof from ``old_size`` to ``new_size`` leaves.

        ``ValueError`` unless ``0 <= old_size <= new_size <= size()``.
        """
        with self._reader(new_size) as reader:
            return consistency_proof(reader, old_size, new_size)

    # -- checkpoints ------------------------------------------------------------------------

    def checkpoint(self, signer: NoteSigner, origin: str) -> str:
        """Sign, store and return a C2SP checkpoint note of the current tree for ``origin``.

        Before signing, the last stored checkpoint is checked against the tiles as stored (not
        the in-memory cache): the new root, and a consistency proof from the last size, must
        verify against the last root. Raises :class:`LogError`, signing nothing, if the tree
        is smaller than the last checkpoint's or inconsistent with it (storage tampered or
        lost), so this log never signs two inconsistent checkpoints. The check covers the
        stored hashes the root and proof are built from, O(log n) tiles; a lower-level tile
        under an intact higher-level hash is not re-read (auditing every tile against
        ``tlog_leaves`` is a separate, O(n) job). A checkpoint at the
        same size as the last replaces its note (same root). ``NoteError`` for an invalid
        ``origin``. Serialised with appends.
        """
        c = checkpoints_table.c
        with self._writing(None) as conn:
            size = self._locked_size(conn)
            reader = _TileReader(conn, size, None)
            root = reader.root()
            last = conn.execute(select(c.size, c.root).order_by(c.size.desc()).limit(1)).first()
            if last is not None:
                last_size, last_root = int(last[0]), bytes(last[1])
                if size < last_size:
                    raise LogError(f"the log has {size} leaves, fewer than checkpoint {last_size}")
                try:
                    proof = consistency_proof(reader, last_size, size)
                    verify_consistency(last_size, size, last_root, root, proof)
                except ProofError as exc:
                    raise LogError(
                        f"the log at size {size} is not consistent with checkpoint {last_size}"
                    ) from exc
            note = sign_note(Checkpoint(origin, size, root).body(), signer)
            now = time.time()
            if last is not None and int(last[0]) == size:
                conn.execute(
                    update(checkpoints_table).where(c.size == size).values(note=note, created=now)
                )
            else:
                conn.execute(
                    insert(checkpoints_table).values(size=size, root=root, note=note, created=now)
                )
        return note

    def latest_checkpoint(self) -> str | None:
        """Return the note of the largest stored checkpoint, or ``None`` if there is none."""
        c = checkpoints_table.c
        with self._engine.connect() as conn:
            note = conn.execute(select(c.note).order_by(c.size.desc()).limit(1)).scalar()
        return None if note is None else str(note)


@contextmanager
def write_transaction(
    engine: Engine, log: SqlLog | None
) -> Iterator[tuple[Connection, int | None]]:
    """``with write_transaction(engine, log) as (conn, first)``: one write transaction,
    committed on exit. With a log it holds the log's append lock from the start
    (:meth:`SqlLog.writing`) and ``first`` is the index its next append gets; without one,
    ``first`` is ``None``. Every store that writes a record and its leaf together uses it, so
    they all take the same lock first."""
    if log is not None:
        with log.writing() as (conn, first):
            yield conn, first
        return
    with engine.begin() as conn:
        yield conn, None
