"""The digital twin on SQLAlchemy 2 Core: SQLite (WAL) or PostgreSQL, same behaviour.

Three tables: ``twin_providers`` (one row per device, with its health),
``twin_resources`` (one row per provider/service/resource: unit and latest value)
and ``twin_readings`` (the history, keyed by ``(provider, seq)``). See README.md
for what this backend guarantees.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any, Final, Protocol

import cbor2
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Engine,
    ForeignKey,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    case,
    func,
    inspect,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError

from msec.core.errors import MsecError
from msec.core.kinds import UnknownKind, get_kind
from msec.core.models import Reading, ResourceValue, Value
from msec.tlog import SqlLog, leaf_hash
from msec.twin.base import ProviderInfo
from msec.twin.engine import rows_in

metadata = MetaData()

# A value is stored as (value_type, value_num, value_text) so that its Python type
# round-trips and numbers stay aggregatable in SQL:
#   "f" float: value_num, or value_text = repr() for nan/inf/-0.0 (SQLite stores nan as
#       NULL and -0.0 as 0.0; inf is kept out of value_num so that aggregates stay finite)
#   "i" int:   value_num when |v| <= 2**53 (exact in a double), else value_text = str()
#       (value_num then still holds the nearest double, or NULL beyond the double range)
#   "b" bool:  value_num 0.0 / 1.0
#   "s" str:   value_text
#   "j" str that a database cannot store as text (NUL, lone surrogates): JSON in value_text
providers_table = Table(
    "twin_providers",
    metadata,
    Column("name", String, primary_key=True),
    Column("kind", String, nullable=False),
    Column("tenant", String, nullable=False),
    Column("description", Text, nullable=False),
    Column("lat", Double),
    Column("lon", Double),
    Column("last_seen", Double),
    Column("battery", Double),
    Column("rssi", Double),
    Column("created", Double, nullable=False),
)

resources_table = Table(
    "twin_resources",
    metadata,
    Column("provider", String, ForeignKey("twin_providers.name"), nullable=False),
    Column("service", String, nullable=False),
    Column("resource", String, nullable=False),
    Column("unit", String),
    Column("value_type", String(1), nullable=False),
    Column("value_num", Double),
    Column("value_text", Text),
    Column("timestamp", Double, nullable=False),
    Column("seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("provider", "service", "resource"),
)

readings_table = Table(
    "twin_readings",
    metadata,
    Column("provider", String, ForeignKey("twin_providers.name"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("service", String, nullable=False),
    Column("resource", String, nullable=False),
    Column("value_type", String(1), nullable=False),
    Column("value_num", Double),
    Column("value_text", Text),
    Column("timestamp", Double, nullable=False),
    # When the platform stored it (epoch s, taken in the writing transaction): the
    # receive side of the audit trail, and what the ingest benchmark's latency reads.
    Column("stored_at", Double),
    # The reading's leaf in the transparency log (NULL without a log): where its proof starts.
    Column("leaf", BigInteger),
    PrimaryKeyConstraint("provider", "seq"),
    # seq as the last column lets history() read in (timestamp, seq) order without a sort.
    Index("ix_twin_readings_resource_time", "provider", "service", "resource", "timestamp", "seq"),
)

_EXACT_INT = 2**53


class UnknownProvider(MsecError, KeyError):
    """A reading names a provider that was never created with ``ensure_provider``."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _encode(value: Value) -> tuple[str, float | None, str | None]:
    """(value_type, value_num, value_text) for one value; see the table above."""
    if isinstance(value, bool):
        return "b", 1.0 if value else 0.0, None
    if isinstance(value, float):
        if math.isfinite(value) and (value != 0.0 or math.copysign(1.0, value) > 0):
            return "f", float(value), None
        return "f", None, repr(float(value))
    if isinstance(value, int):
        if -_EXACT_INT <= value <= _EXACT_INT:
            return "i", float(value), None
        try:
            approx: float | None = float(value)
        except OverflowError:
            approx = None
        return "i", approx, str(int(value))
    if isinstance(value, str):
        if "\x00" not in value and (value.isascii() or _utf8_encodable(value)):
            return "s", None, str(value)
        return "j", None, json.dumps(value)
    raise TypeError(
        f"unsupported value type {type(value).__name__}: expected float, int, bool or str"
    )


def _utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _decode(value_type: str, num: float | None, text: str | None) -> Value:
    """The Python value that :func:`_encode` turned into these three columns."""
    if value_type == "f":
        return float(text) if text is not None else float(num)  # type: ignore[arg-type]
    if value_type == "i":
        return int(text) if text is not None else int(num)  # type: ignore[arg-type]
    if value_type == "b":
        return bool(num)
    if value_type == "s":
        return text  # type: ignore[return-value]
    if value_type == "j":
        return json.loads(text)  # type: ignore[arg-type, no-any-return]
    raise MsecError(f"corrupt twin value: unknown value_type {value_type!r}")


@lru_cache(maxsize=4096)
def _unit(kind: str, service: str, resource: str) -> str | None:
    try:
        spec = get_kind(kind).spec(service, resource)
    except UnknownKind:
        return None
    return spec.unit if spec is not None else None


#: One history row, in the column order of ``twin_readings``.
_Row = tuple[str, int, str, str, str, float | None, str | None, float, float, int | None]
#: One latest value, in the column order of ``twin_resources``.
_Latest = tuple[str, str, str, str | None, str, float | None, str | None, float, int]
_READING_COLUMNS = tuple(column.name for column in readings_table.c)

READING_LEAF: Final = "reading"
"""Log leaf kind of a stored reading; its ref is ``"<provider>/<seq>"``."""
_READING_LEAF_TAG: Final = "msec.twin.reading/1"


def reading_leaf_data(row: Sequence[Any]) -> bytes:
    """The log leaf data of one stored ``twin_readings`` row: canonical CBOR of its columns.

    ``row`` is (provider, seq, service, resource, value_type, value_num, value_text,
    timestamp, stored_at[, leaf]), exactly as stored (the leaf index itself is not hashed),
    so that ``msec verify`` can recompute the leaf from the database. The first element
    names the format.
    """
    provider, seq, service, resource, value_type, num, text, timestamp, stored_at = row[:9]
    return cbor2.dumps(
        [
            _READING_LEAF_TAG,
            provider,
            int(seq),
            service,
            resource,
            value_type,
            None if num is None else float(num),
            text,
            float(timestamp),
            None if stored_at is None else float(stored_at),
        ],
        canonical=True,
    )


def reading_ref(provider: str, seq: int) -> str:
    """The log ref of a reading (device names never contain ``/``)."""
    return f"{provider}/{seq}"


def _log_entries(rows: Sequence[_Row]) -> list[tuple[bytes, str, str]]:
    # Rows built by write() already hold exact types: encode them without reading_leaf_data's
    # conversions (the same bytes; about a third of the cost of a leaf).
    dumps = cbor2.dumps
    return [
        (
            leaf_hash(dumps([_READING_LEAF_TAG, *row[:9]], canonical=True)),
            READING_LEAF,
            f"{row[0]}/{row[1]}",
        )
        for row in rows
    ]


_LATEST_COLUMNS = tuple(column.name for column in resources_table.c)


def _newest_per_resource(rows: list[_Row], kinds: dict[str, str]) -> list[_Latest]:
    """Per resource, the row newest by (timestamp, seq), sorted by resource key."""
    newest: dict[tuple[str, str, str], _Row] = {}
    for row in rows:
        key = (row[0], row[2], row[3])
        current = newest.get(key)
        if current is None or (row[7], row[1]) > (current[7], current[1]):
            newest[key] = row
    return [
        (provider, service, resource, _unit(kinds[provider], service, resource), *row[4:8], row[1])
        for (provider, service, resource), row in sorted(newest.items())
    ]


def _last_seen(rows: list[_Row]) -> list[tuple[str, float]]:
    """Per provider, the newest timestamp, sorted by provider."""
    newest: dict[str, float] = {}
    for row in rows:
        if row[7] > newest.get(row[0], -math.inf):
            newest[row[0]] = row[7]
    return sorted(newest.items())


def _upsert_latest(statement: sqlite.Insert | postgresql.Insert) -> Any:
    """``statement`` (an insert into ``twin_resources``) made to keep only the newest value."""
    c = resources_table.c
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[c.provider, c.service, c.resource],
        set_={
            "value_type": excluded.value_type,
            "value_num": excluded.value_num,
            "value_text": excluded.value_text,
            "timestamp": excluded.timestamp,
            "seq": excluded.seq,
        },
        # Latest only moves forward: an older reading delivered late stays history.
        where=tuple_(excluded.timestamp, excluded.seq) > tuple_(c.timestamp, c.seq),
    )


def _touch_provider(name: Any, timestamp: Any) -> Any:
    """UPDATE of one provider: ``last_seen`` up to ``timestamp``, health from its resources."""
    p = providers_table.c

    def health(resource: str) -> Any:
        c = resources_table.c
        return (
            select(c.value_num)
            .where(c.provider == p.name, c.service == "health", c.resource == resource)
            .scalar_subquery()
        )

    return (
        update(providers_table)
        .where(p.name == name)
        .values(
            last_seen=case(
                (or_(p.last_seen.is_(None), p.last_seen < timestamp), timestamp),
                else_=p.last_seen,
            ),
            battery=health("battery"),
            rssi=health("rssi"),
        )
    )


class _Writer(Protocol):
    """How :meth:`SqlTwin.write` stores rows on one kind of database."""

    def begin(self, conn: Connection) -> None:
        """Called first in the write transaction."""

    def store(self, conn: Connection, rows: list[_Row], kinds: dict[str, str]) -> list[_Row]:
        """Insert history, update latest values and providers; return the rows that were new.

        ``rows`` are unique and sorted by (provider, seq); ``kinds`` maps every provider
        of ``rows`` to its device kind.
        """
        ...


class _DriverStatement:
    """A Core statement compiled once and run with the driver's ``executemany``."""

    def __init__(self, statement: Any, engine: Engine, names: Sequence[str]) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.sql: str = compiled.string
        # Per placeholder: the index of its value in a row of ``names``, or a constant of
        # the statement itself (such as 'health'), which is a parameter too.
        self._slots: list[tuple[int | None, Any]] = [
            (names.index(name), None) if name in names else (None, compiled.params[name])
            for name in compiled.positiontup or ()
        ]

    def executemany(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        slots = self._slots
        params = [
            tuple(row[index] if index is not None else constant for index, constant in slots)
            for row in rows
        ]
        conn.exec_driver_sql(self.sql, params)


class _SqliteWriter:
    """SQLite: Core statements compiled once and run through the driver.

    SQLAlchemy's per-row parameter processing costs ~9 us a row here, as much as SQLite's
    own work; skipping it took batches of 1,000 from ~26k to ~39k readings/s (100 devices).
    """

    def __init__(self, engine: Engine) -> None:
        r = readings_table.c
        insert = sqlite.insert(readings_table).on_conflict_do_nothing(
            index_elements=[r.provider, r.seq]
        )
        compiled = insert.compile(dialect=engine.dialect)
        if tuple(compiled.positiontup or ()) != _READING_COLUMNS:
            raise AssertionError(f"unexpected parameter order {compiled.positiontup}")
        self._insert_sql = compiled.string
        self._upsert_latest = _DriverStatement(
            _upsert_latest(sqlite.insert(resources_table)), engine, _LATEST_COLUMNS
        )
        self._touch_providers = _DriverStatement(
            _touch_provider(bindparam("b_name", type_=String), bindparam("b_ts", type_=Double)),
            engine,
            ("b_name", "b_ts"),
        )

    def begin(self, conn: Connection) -> None:
        # Take the write lock now (waiting up to the busy timeout) rather than upgrading
        # a read snapshot later, which fails at once if another process committed in
        # between. Holding it also makes insert_history's "new" exact across processes.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    def store(self, conn: Connection, rows: list[_Row], kinds: dict[str, str]) -> list[_Row]:
        new_rows = self._insert_history(conn, rows)
        if new_rows:
            self._upsert_latest.executemany(conn, _newest_per_resource(new_rows, kinds))
            self._touch_providers.executemany(conn, _last_seen(new_rows))
        return new_rows

    def _insert_history(self, conn: Connection, rows: list[_Row]) -> list[_Row]:
        driver = conn.connection.driver_connection
        # Fast path, the usual case of nothing already stored: one executemany (C loop,
        # ~155k rows/s here against ~120k for one execute a row) and the change count.
        # If some rows were there already, undo it and find which, one execute a row.
        driver.execute("SAVEPOINT msec_history")  # type: ignore[union-attr]
        before = driver.total_changes  # type: ignore[union-attr]
        driver.executemany(self._insert_sql, rows)  # type: ignore[union-attr]
        if driver.total_changes - before == len(rows):  # type: ignore[union-attr]
            driver.execute("RELEASE msec_history")  # type: ignore[union-attr]
            return rows
        driver.execute("ROLLBACK TO msec_history")  # type: ignore[union-attr]
        driver.execute("RELEASE msec_history")  # type: ignore[union-attr]
        cursor = driver.cursor()  # type: ignore[union-attr]
        try:
            new: list[_Row] = []
            leaf = rows[0][9]
            for row in rows:
                # Leaf indexes stay dense: a row already stored takes none.
                row = (*row[:9], None if leaf is None else leaf + len(new))
                cursor.execute(self._insert_sql, row)
                if cursor.rowcount == 1:
                    new.append(row)
            return new
        finally:
            cursor.close()


def _unnest(table: Table, names: Sequence[str]) -> Any:
    """``unnest(:a_<name>::type[], ...) AS t(<name>, ...)``: one array parameter a column."""
    arrays = [bindparam(f"a_{name}", type_=ARRAY(table.c[name].type)) for name in names]
    return func.unnest(*arrays).table_valued(*names).render_derived()


def _arrays(names: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> dict[str, list[Any]]:
    return {
        f"a_{name}": list(column)
        for name, column in zip(names, zip(*rows, strict=True), strict=True)
    }


class _PostgresWriter:
    """PostgreSQL: each step is one statement over arrays (``unnest``).

    A multi-row VALUES of 1,000 rows (SQLAlchemy's insertmanyvalues) is too long for
    psycopg's query cache, and re-parsing its 8,000 placeholders took ~75 ms a batch.
    """

    def __init__(self) -> None:
        r = readings_table.c
        history = _unnest(readings_table, _READING_COLUMNS)
        self._insert_history = (
            postgresql.insert(readings_table)
            .from_select(_READING_COLUMNS, select(*history.c))
            .on_conflict_do_nothing(index_elements=[r.provider, r.seq])
            .returning(r.provider, r.seq)
        )
        keys = (
            func.unnest(
                bindparam("a_provider", type_=ARRAY(String)),
                bindparam("a_seq", type_=ARRAY(BigInteger)),
            )
            .table_valued("provider", "seq")
            .render_derived()
        )
        self._existing = select(r.provider, r.seq).where(
            tuple_(r.provider, r.seq).in_(select(keys.c.provider, keys.c.seq))
        )
        latest = _unnest(resources_table, _LATEST_COLUMNS)
        self._upsert_latest = _upsert_latest(
            postgresql.insert(resources_table).from_select(_LATEST_COLUMNS, select(*latest.c))
        )
        p = providers_table.c
        names = bindparam("a_name", type_=ARRAY(String))
        # UPDATE ... FROM locks rows in plan order; lock them in name order first, so
        # that concurrent writers touching the same providers cannot deadlock. NO KEY
        # UPDATE (what the UPDATE itself takes) does not wait for the KEY SHARE locks
        # that other writers' history inserts hold on the provider (foreign key); FOR
        # UPDATE would, and deadlocked in the concurrency test.
        self._lock_providers = (
            select(p.name)
            .where(p.name == any_(names))
            .order_by(p.name)
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE
        )
        touched = func.unnest(names, bindparam("a_ts", type_=ARRAY(Double)))
        touched = touched.table_valued("name", "ts").render_derived()
        self._touch_providers = _touch_provider(touched.c.name, touched.c.ts)

    def begin(self, conn: Connection) -> None:
        pass

    def store(self, conn: Connection, rows: list[_Row], kinds: dict[str, str]) -> list[_Row]:
        if rows[0][9] is not None:
            # Logged: this transaction holds the log's lock, so no other logged writer can
            # insert meanwhile; leave out what is stored already and number the rest densely.
            stored = {
                (provider, seq)
                for provider, seq in conn.execute(
                    self._existing,
                    {"a_provider": [r[0] for r in rows], "a_seq": [r[1] for r in rows]},
                )
            }
            first = rows[0][9]
            rows = [row for row in rows if (row[0], row[1]) not in stored]
            rows = [(*row[:9], first + i) for i, row in enumerate(rows)]
            if not rows:
                return []
        # RETURNING names exactly the rows this transaction inserted, even while another
        # transaction inserts the same keys (it waits on their unique index entries).
        result = conn.execute(self._insert_history, _arrays(_READING_COLUMNS, rows))
        new_keys = {(provider, seq) for provider, seq in result}
        new_rows = [row for row in rows if (row[0], row[1]) in new_keys]
        if rows[0][9] is not None and len(new_rows) != len(rows):
            raise MsecError("a reading was stored concurrently without the log's lock")
        if new_rows:
            latest = _newest_per_resource(new_rows, kinds)
            conn.execute(self._upsert_latest, _arrays(_LATEST_COLUMNS, latest))
            touched = _last_seen(new_rows)
            conn.execute(self._lock_providers, {"a_name": [name for name, _ in touched]})
            conn.execute(self._touch_providers, _arrays(("name", "ts"), touched))
        return new_rows


class SqlTwin:
    """The :class:`~msec.twin.base.Twin` on a SQLAlchemy engine (SQLite or PostgreSQL).

    Build the engine with :func:`msec.twin.engine.make_engine` (it sets SQLite up for
    durability and for several writer processes) and call :meth:`create_schema` once
    before use. Safe to share between threads and to use from several processes on
    the same database. Database failures propagate as ``sqlalchemy.exc`` errors; the
    transaction is then rolled back and nothing of the call is stored.
    """

    def __init__(self, engine: Engine, *, log: SqlLog | None = None) -> None:
        dialect = engine.dialect.name
        self._insert: Callable[[Table], sqlite.Insert | postgresql.Insert]
        self._writer: _Writer
        if dialect == "sqlite":
            self._insert, self._writer = sqlite.insert, _SqliteWriter(engine)
        elif dialect == "postgresql":
            self._insert, self._writer = postgresql.insert, _PostgresWriter()
        else:
            raise MsecError(f"SqlTwin supports sqlite and postgresql, not {dialect!r}")
        self._engine = engine
        #: Where every new reading becomes a leaf, in the same transaction (None: no log).
        self.log = log
        # Providers are never deleted, so a provider seen once stays known.
        self._kinds: dict[str, str] = {}

    def create_schema(self) -> None:
        """Create the ``twin_`` tables and indexes that are missing. Idempotent.

        Also adds ``twin_readings.stored_at`` and ``leaf`` to databases made before they
        existed.
        """
        metadata.create_all(self._engine)
        for name, sql_type in (("stored_at", "DOUBLE PRECISION"), ("leaf", "BIGINT")):
            columns = {c["name"] for c in inspect(self._engine).get_columns("twin_readings")}
            if name in columns:
                continue
            try:
                with self._engine.begin() as conn:
                    conn.exec_driver_sql(f"ALTER TABLE twin_readings ADD COLUMN {name} {sql_type}")
            except DBAPIError:
                # Another process (a second worker starting) added it first.
                columns = {c["name"] for c in inspect(self._engine).get_columns("twin_readings")}
                if name not in columns:
                    raise

    def ensure_provider(
        self,
        name: str,
        *,
        kind: str,
        tenant: str = "default",
        description: str = "",
        latitude: float | None = None,
        longitude: float | None = None,
    ) -> None:
        """Create the provider if missing, else update its metadata. Idempotent.

        Health (``battery``, ``rssi``, ``last_seen``) is kept; it only comes from readings.
        """
        values = {
            "kind": kind,
            "tenant": tenant,
            "description": description,
            "lat": latitude,
            "lon": longitude,
        }
        stmt = self._insert(providers_table).values(name=name, created=time.time(), **values)
        stmt = stmt.on_conflict_do_update(index_elements=[providers_table.c.name], set_=values)
        with self._engine.begin() as conn:
            conn.execute(stmt)
        self._kinds[name] = kind

    def write(
        self, readings: Sequence[Reading], *, also: Callable[[Connection], None] | None = None
    ) -> list[Reading]:
        """Store ``readings`` in one transaction and return those that were new, in input order.

        A reading whose ``(provider, seq)`` is already stored, or repeats an earlier one
        of the same batch, is skipped. With a log, every new reading is appended to it as a
        leaf (:func:`reading_leaf_data`) in the same transaction, in (provider, seq) order:
        a reading is never stored without its leaf. ``also(conn)``, if given, runs last in
        the same transaction (the companion store's records of the same batch). For each
        resource the latest value moves to the newest reading by ``(timestamp, seq)``, never
        backwards; each provider's ``last_seen`` becomes its newest reading's timestamp and
        ``battery`` / ``rssi`` its latest ``health`` values. When this returns, all of it is
        committed.

        Raises :class:`UnknownProvider` (nothing written) if a provider does not exist,
        ``TypeError`` (nothing written) for a value that is not float/int/bool/str.
        """
        unique: dict[tuple[str, int], Reading] = {}
        for reading in readings:
            unique.setdefault((reading.provider, reading.seq), reading)
        if not unique and also is None:
            return []
        now = time.time()
        # One order for every writer, so that concurrent PostgreSQL transactions lock
        # rows in the same order and cannot deadlock.
        ordered = [unique[key] for key in sorted(unique)]
        with self._engine.begin() as conn:
            self._writer.begin(conn)
            # With a log, its lock first (one lock order for every writer); new rows get the
            # leaf indexes that follow, in order.
            first = self.log.lock(conn) if self.log is not None else None
            rows: list[_Row] = [
                (
                    r.provider,
                    r.seq,
                    r.service,
                    r.resource,
                    *_encode(r.value),
                    float(r.timestamp),
                    now,
                    None if first is None else first + i,
                )
                for i, r in enumerate(ordered)
            ]
            kinds = self._provider_kinds(conn, {provider for provider, _ in unique})
            new_rows = self._writer.store(conn, rows, kinds) if rows else []
            if (
                new_rows
                and self.log is not None
                and self.log.append(_log_entries(new_rows), conn=conn) != first
            ):
                raise MsecError("the log grew inside this transaction")
            if also is not None:
                also(conn)
        new_keys = {(row[0], row[1]) for row in new_rows}
        return [reading for key, reading in unique.items() if key in new_keys]

    def _provider_kinds(self, conn: Connection, names: Iterable[str]) -> dict[str, str]:
        missing = [name for name in names if name not in self._kinds]
        if missing:
            p = providers_table.c
            found = conn.execute(select(p.name, p.kind).where(p.name.in_(missing)))
            self._kinds.update((name, kind) for name, kind in found)
            unknown = sorted(name for name in missing if name not in self._kinds)
            if unknown:
                names = ", ".join(map(repr, unknown))
                raise UnknownProvider(f"unknown provider(s) {names}: call ensure_provider first")
        return self._kinds

    def providers(self) -> list[ProviderInfo]:
        """All providers, by name, without their resources."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(providers_table).order_by(providers_table.c.name))
            return [_provider_info(row._mapping) for row in rows]

    def tenants(self, names: Iterable[str]) -> dict[str, str]:
        """``{provider: tenant}`` for those of ``names`` that exist: a few queries for any
        number of names (the access layer's lookup of a page of homes)."""
        p = providers_table.c
        with self._engine.connect() as conn:
            return dict(tuple(row) for row in rows_in(conn, p.name, names, p.name, p.tenant))

    def provider(self, name: str) -> ProviderInfo | None:
        """One provider with its resources' latest values (by service, resource), or ``None``."""
        c = resources_table.c
        with self._engine.connect() as conn:
            row = conn.execute(
                select(providers_table).where(providers_table.c.name == name)
            ).first()
            if row is None:
                return None
            resources = conn.execute(
                select(resources_table).where(c.provider == name).order_by(c.service, c.resource)
            )
            values = tuple(_resource_value(r._mapping) for r in resources)
        return _provider_info(row._mapping, values)

    def latest_all(self, providers: Sequence[str] | None = None) -> list[ResourceValue]:
        """The latest value of every resource (of ``providers``, if given), in one query:
        what live pages poll."""
        c = resources_table.c
        stmt = select(resources_table).order_by(c.provider, c.service, c.resource)
        if providers is not None:
            stmt = stmt.where(c.provider.in_(list(providers)))
        with self._engine.connect() as conn:
            return [_resource_value(r._mapping) for r in conn.execute(stmt)]

    def latest(self, provider: str, service: str, resource: str) -> ResourceValue | None:
        """The newest value (by timestamp, then seq) of one resource; ``None`` if never reported."""
        c = resources_table.c
        stmt = select(resources_table).where(
            c.provider == provider, c.service == service, c.resource == resource
        )
        with self._engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _resource_value(row._mapping)

    def history(
        self,
        provider: str,
        service: str,
        resource: str,
        *,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[ResourceValue]:
        """Stored values with ``since <= timestamp < until``, oldest first, at most ``limit``.

        Readings with the same timestamp come in ``seq`` order; each value has the
        Python type it was written with. ``limit <= 0`` gives an empty list.
        """
        if limit <= 0:
            return []
        r = readings_table.c
        conditions = [r.provider == provider, r.service == service, r.resource == resource]
        if since is not None:
            conditions.append(r.timestamp >= since)
        if until is not None:
            conditions.append(r.timestamp < until)
        stmt = (
            select(r.seq, r.value_type, r.value_num, r.value_text, r.timestamp)
            .where(and_(*conditions))
            .order_by(r.timestamp, r.seq)
            .limit(limit)
        )
        c = resources_table.c
        unit_stmt = select(c.unit).where(
            c.provider == provider, c.service == service, c.resource == resource
        )
        with self._engine.connect() as conn:
            unit = conn.execute(unit_stmt).scalar()
            rows = conn.execute(stmt).all()
        return [
            ResourceValue(
                provider,
                service,
                resource,
                _decode(value_type, num, text),
                timestamp,
                unit,
                seq,
            )
            for seq, value_type, num, text, timestamp in rows
        ]

    def max_seq(self, provider: str) -> int | None:
        """The highest stored sequence number of ``provider``, or ``None``."""
        r = readings_table.c
        with self._engine.connect() as conn:
            result = conn.execute(select(func.max(r.seq)).where(r.provider == provider)).scalar()
        return None if result is None else int(result)

    def count_readings(self, provider: str | None = None) -> int:
        """How many readings are stored (for one provider, or all)."""
        stmt = select(func.count()).select_from(readings_table)
        if provider is not None:
            stmt = stmt.where(readings_table.c.provider == provider)
        with self._engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def stored_at(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], float]:
        """When each ``(provider, seq)`` was stored (epoch s); missing keys are left out.

        Primary-key lookups, 500 keys a statement.
        """
        by_provider: dict[str, list[int]] = {}
        for provider, seq in keys:
            by_provider.setdefault(provider, []).append(seq)
        r = readings_table.c
        found: dict[tuple[str, int], float] = {}
        with self._engine.connect() as conn:
            for provider, seqs in by_provider.items():
                for start in range(0, len(seqs), 500):
                    chunk = seqs[start : start + 500]
                    stmt = select(r.seq, r.stored_at).where(
                        r.provider == provider, r.seq.in_(chunk)
                    )
                    for seq, at in conn.execute(stmt):
                        if at is not None:
                            found[(provider, int(seq))] = at
        return found

    # -- verification support (msec verify) ------------------------------------------------

    def leaf_data(self, conn: Connection, refs: Sequence[str]) -> dict[str, bytes]:
        """Recompute the leaf data of the readings named by ``refs`` from what is stored.

        Refs that name no stored reading (or are malformed) are left out of the result.
        Primary-key lookups, 500 a statement, on the caller's connection (one snapshot).
        """
        by_provider: dict[str, list[int]] = {}
        for ref in refs:
            provider, _, seq = ref.rpartition("/")
            if provider and seq.isdigit():
                by_provider.setdefault(provider, []).append(int(seq))
        r = readings_table.c
        columns = [r[name] for name in _READING_COLUMNS[:9]]
        found: dict[str, bytes] = {}
        for provider, seqs in by_provider.items():
            for start in range(0, len(seqs), 500):
                stmt = select(*columns).where(
                    r.provider == provider, r.seq.in_(seqs[start : start + 500])
                )
                for row in conn.execute(stmt):
                    found[f"{row[0]}/{row[1]}"] = reading_leaf_data(row)
        return found

    def leaf_index(self, conn: Connection, ref: str) -> int | None:
        """The log leaf index stored with the reading ``ref`` (``<provider>/<seq>``)."""
        provider, _, seq = ref.rpartition("/")
        if not provider or not seq.isdigit() or len(seq) > 19:
            return None
        r = readings_table.c
        query = select(r.leaf).where(r.provider == provider, r.seq == int(seq))
        found = conn.execute(query).scalar()
        return None if found is None else int(found)

    def derived_problems(self, conn: Connection) -> Iterator[tuple[str, str]]:
        """``(where, what)`` for every latest value or provider health that is not what the
        history says (the history is what the log covers; these tables are derived from it).

        A resource's latest value must be its newest history row by ``(timestamp, seq)``; a
        provider's ``last_seen`` the newest timestamp of its history, and ``battery`` /
        ``rssi`` its latest ``health`` values.
        """
        r, h = resources_table.c, readings_table.c
        n = readings_table.alias("newer").c
        newer = (
            select(n.seq)
            .where(
                n.provider == r.provider,
                n.service == r.service,
                n.resource == r.resource,
                tuple_(n.timestamp, n.seq) > tuple_(r.timestamp, r.seq),
            )
            .correlate(resources_table)
            .exists()
        )
        query = select(
            r.provider, r.service, r.resource, r.value_type, r.value_num, r.value_text,
            r.timestamp, r.seq, h.service, h.resource, h.value_type, h.value_num, h.value_text,
            h.timestamp, newer,
        ).select_from(
            resources_table.outerjoin(
                readings_table, and_(h.provider == r.provider, h.seq == r.seq)
            )
        )  # fmt: skip
        latest: dict[tuple[str, str], float | None] = {}
        for row in conn.execute(query):
            where = f"{row[0]}/{row[1]}/{row[2]}"
            if row[8] is None:
                yield where, f"its latest value (seq {row[7]}) is no stored reading"
            elif tuple(row[1:3]) != tuple(row[8:10]) or tuple(row[3:7]) != tuple(row[10:14]):
                yield where, f"its latest value differs from the stored reading seq {row[7]}"
            elif row[14]:
                yield where, "a newer stored reading is not its latest value"
            if row[1] == "health":
                latest[(row[0], row[2])] = row[4]
        p = providers_table.c
        newest = dict(
            conn.execute(select(h.provider, func.max(h.timestamp)).group_by(h.provider)).all()
        )
        for name, last_seen, battery, rssi in conn.execute(
            select(p.name, p.last_seen, p.battery, p.rssi)
        ):
            if last_seen != newest.get(name):
                yield name, "its last_seen is not its newest stored reading's time"
            if battery != latest.get((name, "battery")) or rssi != latest.get((name, "rssi")):
                yield name, "its battery or rssi is not its latest stored health value"

    def count_in(self, conn: Connection) -> int:
        """How many readings are stored, on the caller's connection."""
        return int(conn.execute(select(func.count()).select_from(readings_table)).scalar_one())

    def refs_in(self, conn: Connection) -> Iterator[str]:
        """The ref of every stored reading, on the caller's connection."""
        r = readings_table.c
        for provider, seq in conn.execute(select(r.provider, r.seq)):
            yield f"{provider}/{seq}"


def _provider_info(row: Any, resources: tuple[ResourceValue, ...] = ()) -> ProviderInfo:
    return ProviderInfo(
        name=row["name"],
        kind=row["kind"],
        tenant=row["tenant"],
        description=row["description"],
        latitude=row["lat"],
        longitude=row["lon"],
        last_seen=row["last_seen"],
        battery=row["battery"],
        rssi=row["rssi"],
        resources=resources,
    )


def _resource_value(row: Any) -> ResourceValue:
    return ResourceValue(
        provider=row["provider"],
        service=row["service"],
        resource=row["resource"],
        value=_decode(row["value_type"], row["value_num"], row["value_text"]),
        timestamp=row["timestamp"],
        unit=row["unit"],
        seq=int(row["seq"]),
    )
