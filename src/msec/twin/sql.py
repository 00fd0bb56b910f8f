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
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any

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
    bindparam,
    case,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from msec.core.errors import MsecError
from msec.core.kinds import UnknownKind, get_kind
from msec.core.models import Reading, ResourceValue, Value
from msec.twin.base import ProviderInfo

metadata = MetaData()

# A value is stored as (value_type, value_num, value_text) so that its Python type
# round-trips and numbers stay aggregatable in SQL:
#   "f" float: value_num, or value_text = repr() for nan/inf/-0.0 (SQLite turns nan
#       into NULL and stores integral REALs as integers, which loses -0.0)
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
_Row = tuple[str, int, str, str, str, float | None, str | None, float]
_READING_COLUMNS = tuple(column.name for column in readings_table.c)


def _newest_per_resource(rows: list[_Row], kinds: dict[str, str]) -> list[dict[str, Any]]:
    """Per resource, the row newest by (timestamp, seq), as ``twin_resources`` parameters."""
    newest: dict[tuple[str, str, str], _Row] = {}
    for row in rows:
        key = (row[0], row[2], row[3])
        current = newest.get(key)
        if current is None or (row[7], row[1]) > (current[7], current[1]):
            newest[key] = row
    return [
        {
            "provider": provider,
            "service": service,
            "resource": resource,
            "unit": _unit(kinds[provider], service, resource),
            "value_type": row[4],
            "value_num": row[5],
            "value_text": row[6],
            "timestamp": row[7],
            "seq": row[1],
        }
        for (provider, service, resource), row in sorted(newest.items())
    ]


def _last_seen(rows: list[_Row]) -> list[dict[str, Any]]:
    """Per provider, the newest timestamp, as parameters of the provider update."""
    newest: dict[str, float] = {}
    for row in rows:
        if row[7] > newest.get(row[0], -math.inf):
            newest[row[0]] = row[7]
    return [{"b_name": name, "b_ts": newest[name]} for name in sorted(newest)]


class _DriverStatement:
    """A Core statement compiled once and run with the driver's ``executemany``.

    SQLAlchemy's per-row parameter processing costs ~9 us a row here, as much as
    SQLite's own work, so the SQLite hot path skips it (measured: 26k -> NN readings/s).
    """

    def __init__(self, statement: Any, engine: Engine) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.sql: str = compiled.string
        self._names: list[str] = list(compiled.positiontup or ())
        self._defaults: dict[str, Any] = dict(compiled.params)

    def executemany(self, conn: Connection, params: list[dict[str, Any]]) -> None:
        defaults, names = self._defaults, self._names
        rows = [tuple({**defaults, **p}[name] for name in names) for p in params]
        conn.exec_driver_sql(self.sql, rows)


class _SqliteWriter:
    """The SQLite side of :meth:`SqlTwin.write`: the same statements, through the driver."""

    def __init__(self, engine: Engine, upsert_latest: Any, update_providers: Any) -> None:
        r = readings_table.c
        insert = sqlite.insert(readings_table).on_conflict_do_nothing(
            index_elements=[r.provider, r.seq]
        )
        compiled = insert.compile(dialect=engine.dialect)
        if tuple(compiled.positiontup or ()) != _READING_COLUMNS:
            raise AssertionError(f"unexpected parameter order {compiled.positiontup}")
        self._insert_sql = compiled.string
        self.upsert_latest = _DriverStatement(upsert_latest, engine)
        self.touch_providers = _DriverStatement(update_providers, engine)

    def insert_history(self, conn: Connection, rows: list[_Row]) -> list[_Row]:
        """Insert ``rows``; return those that were not stored yet.

        One ``execute`` a row and its change count tell which were new: as fast as one
        ``executemany`` here, and faster than a multi-row ``RETURNING`` or a pre-select.
        The caller holds the write lock (``BEGIN IMMEDIATE``), so no other writer races.
        """
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            new = []
            for row in rows:
                cursor.execute(self._insert_sql, row)
                if cursor.rowcount == 1:
                    new.append(row)
            return new
        finally:
            cursor.close()


class SqlTwin:
    """The :class:`~msec.twin.base.Twin` on a SQLAlchemy engine (SQLite or PostgreSQL).

    Build the engine with :func:`msec.twin.engine.make_engine` (it sets SQLite up for
    durability and for several writer processes) and call :meth:`create_schema` once
    before use. Safe to share between threads and to use from several processes on
    the same database. Database failures propagate as ``sqlalchemy.exc`` errors; the
    transaction is then rolled back and nothing of the call is stored.
    """

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect.name
        insert: Callable[[Table], sqlite.Insert | postgresql.Insert]
        if dialect == "sqlite":
            insert = sqlite.insert
        elif dialect == "postgresql":
            insert = postgresql.insert
        else:
            raise MsecError(f"SqlTwin supports sqlite and postgresql, not {dialect!r}")
        self._engine = engine
        self._insert = insert
        # Providers are never deleted, so a provider seen once stays known.
        self._kinds: dict[str, str] = {}

        r = readings_table.c
        self._insert_readings = (
            insert(readings_table)
            .on_conflict_do_nothing(index_elements=[r.provider, r.seq])
            .returning(r.provider, r.seq)
        )
        upsert = insert(resources_table)
        c = resources_table.c
        self._upsert_latest = upsert.on_conflict_do_update(
            index_elements=[c.provider, c.service, c.resource],
            set_={
                "value_type": upsert.excluded.value_type,
                "value_num": upsert.excluded.value_num,
                "value_text": upsert.excluded.value_text,
                "timestamp": upsert.excluded.timestamp,
                "seq": upsert.excluded.seq,
            },
            # Latest only moves forward: an older reading delivered late stays history.
            where=tuple_(upsert.excluded.timestamp, upsert.excluded.seq)
            > tuple_(c.timestamp, c.seq),
        )
        p = providers_table.c
        ts = bindparam("b_ts", type_=Double)
        self._update_providers = (
            update(providers_table)
            .where(p.name == bindparam("b_name", type_=String))
            .values(
                last_seen=case(
                    (or_(p.last_seen.is_(None), p.last_seen < ts), ts), else_=p.last_seen
                ),
                battery=self._health_subquery("battery"),
                rssi=self._health_subquery("rssi"),
            )
        )
        self._sqlite = (
            _SqliteWriter(engine, self._upsert_latest, self._update_providers)
            if dialect == "sqlite"
            else None
        )

    @staticmethod
    def _health_subquery(resource: str) -> Any:
        c = resources_table.c
        return (
            select(c.value_num)
            .where(
                c.provider == providers_table.c.name,
                c.service == "health",
                c.resource == resource,
            )
            .scalar_subquery()
        )

    def create_schema(self) -> None:
        """Create the ``twin_`` tables and indexes that are missing. Idempotent."""
        metadata.create_all(self._engine)

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

    def write(self, readings: Sequence[Reading]) -> list[Reading]:
        """Store ``readings`` in one transaction and return those that were new, in input order.

        A reading whose ``(provider, seq)`` is already stored, or repeats an earlier one
        of the same batch, is skipped. For each resource the latest value moves to the
        newest reading by ``(timestamp, seq)``, never backwards; each provider's
        ``last_seen`` becomes its newest reading's timestamp and ``battery`` / ``rssi``
        its latest ``health`` values. When this returns, all of it is committed.

        Raises :class:`UnknownProvider` (nothing written) if a provider does not exist,
        ``TypeError`` (nothing written) for a value that is not float/int/bool/str.
        """
        unique: dict[tuple[str, int], Reading] = {}
        for reading in readings:
            unique.setdefault((reading.provider, reading.seq), reading)
        if not unique:
            return []
        rows: list[_Row] = [
            (r.provider, r.seq, r.service, r.resource, *_encode(r.value), r.timestamp)
            for r in unique.values()
        ]
        # One order for every writer, so that concurrent PostgreSQL transactions lock
        # rows in the same order and cannot deadlock.
        rows.sort(key=lambda row: (row[0], row[1]))
        with self._engine.begin() as conn:
            if self._sqlite is not None:
                # Take the write lock now (waiting up to the busy timeout) rather than
                # upgrading a read snapshot later, which fails at once if another
                # process committed in between.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            kinds = self._provider_kinds(conn, {provider for provider, _ in unique})
            if self._sqlite is not None:
                new_rows = self._sqlite.insert_history(conn, rows)
            else:
                new_rows = self._insert_history(conn, rows)
            if not new_rows:
                return []
            self._store_latest(conn, _newest_per_resource(new_rows, kinds))
            self._touch_providers(conn, _last_seen(new_rows))
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

    def _insert_history(self, conn: Connection, rows: list[_Row]) -> list[_Row]:
        # RETURNING names exactly the rows this transaction inserted, even while another
        # transaction inserts the same keys (it waits on their unique index entries).
        params = [dict(zip(_READING_COLUMNS, row, strict=True)) for row in rows]
        result = conn.execute(self._insert_readings, params)
        new_keys = {(provider, seq) for provider, seq in result}
        return [row for row in rows if (row[0], row[1]) in new_keys]

    def _store_latest(self, conn: Connection, latest: list[dict[str, Any]]) -> None:
        if self._sqlite is not None:
            self._sqlite.upsert_latest.executemany(conn, latest)
        else:
            conn.execute(self._upsert_latest, latest)

    def _touch_providers(self, conn: Connection, params: list[dict[str, Any]]) -> None:
        if self._sqlite is not None:
            self._sqlite.touch_providers.executemany(conn, params)
        else:
            conn.execute(self._update_providers, params)

    def providers(self) -> list[ProviderInfo]:
        """All providers, by name, without their resources."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(providers_table).order_by(providers_table.c.name))
            return [_provider_info(row._mapping) for row in rows]

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
