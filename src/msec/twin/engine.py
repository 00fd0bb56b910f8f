"""Database engines for the SQL backends: SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Connection, Engine, Row, create_engine, event, select, text
from sqlalchemy.engine import make_url

from msec.core.errors import MsecError

#: How long a SQLite connection waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 10_000


def make_engine(url: str) -> Engine:
    """Create an engine for ``url``, tuned for the twin, companion and guard stores.

    ``sqlite:///path/to/file.db`` (the embedded default): the parent folder is created,
    and every connection runs in WAL mode with ``synchronous=FULL`` (a committed
    transaction survives power loss), ``foreign_keys=ON`` and a 10 s busy timeout,
    so that several processes (ingest workers) can write the same file: a writer
    waits for another's lock instead of failing. ``sqlite://`` is an in-memory
    database that each thread sees on its own: for throwaway use only.

    ``postgresql://`` or ``postgresql+psycopg://`` (psycopg 3): connections are
    checked before use (``pool_pre_ping``), so a restarted server costs no failed
    request.

    Raises :class:`MsecError` for any other database.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.drivername != "postgresql+psycopg":
            raise MsecError(f"unsupported PostgreSQL driver {parsed.drivername!r}; use psycopg")
        return create_engine(parsed, pool_pre_ping=True)
    raise MsecError(f"unsupported database {backend!r}: use sqlite:/// or postgresql+psycopg://")


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _configure_sqlite)
    return engine


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL: readers never block the writer and the writer never blocks readers.
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL syncs the WAL on every commit, so an acknowledged batch survives power
        # loss; NORMAL may lose the last commits. Measured here (ext4 in a VM, 2 cores,
        # SqlTwin.write of 1,000 readings from 100 devices): ~39k readings/s either way,
        # the difference lost in the noise; one fsync (~0.4 ms) serves the whole batch
        # (~25 ms). Writing one reading per commit would make FULL cost far more.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


@contextmanager
def locked_transaction(engine: Engine, pg_lock_key: int) -> Iterator[Connection]:
    """One write transaction that holds a store-wide write lock from its start.

    SQLite: ``BEGIN IMMEDIATE`` (take the database's write lock now rather than upgrade a read
    snapshot later, which fails at once if another process committed in between).
    PostgreSQL: ``pg_advisory_xact_lock(pg_lock_key)``, released at commit or rollback. So
    read-then-write steps of a store happen one at a time across threads and processes.
    """
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": pg_lock_key})
        yield conn


#: Values per ``IN (...)`` list of :func:`rows_in` (well under SQLite's variable limit).
IN_CHUNK = 500


def rows_in(
    conn: Connection, key: Column[Any], values: Iterable[Any], *columns: Any, distinct: bool = False
) -> Iterator[Row[Any]]:
    """The rows of ``columns`` whose ``key`` is one of ``values``: one query per
    :data:`IN_CHUNK` distinct values, however many are asked for."""
    wanted = sorted(set(values))
    for start in range(0, len(wanted), IN_CHUNK):
        stmt = select(*columns).where(key.in_(wanted[start : start + IN_CHUNK]))
        yield from conn.execute(stmt.distinct() if distinct else stmt)
