"""Anonymised datasets of Connected Care's sensors, one per sensor type and period, for the
data marketplace.

Every ``[care] dataset_every_s`` (24 h by default) a :class:`DatasetPublisher` turns the
previous period's readings of every home into one dataset per sensor type
(:data:`SENSOR_TYPES`: ``care_gateway``, ``motion_sensor``, ``contact_sensor``,
``bed_sensor``, ``smart_plug``), stored as a **dataset artifact**: a CSV file
``<data_dir>/datasets/<sensor type>/<YYYY-MM-DD>.csv``, a JSON sidecar beside it with its
metadata, and a row in the ``care_datasets`` table (state ``ready``, for the marketplace).

**Where the readings come from.** As the alarm engine reads them
(:class:`~msec.apps.care.service.CareFeed`): the transparency log in commit order, private
readings decrypted from the companion store (the platform itself may; nobody downstream sees
a reading). A reading belongs to the period its own timestamp falls in.

**Anonymisation: aggregation across homes with a minimum group size** (method
:data:`METHOD`). A dataset holds no reading, only per time bucket (:data:`DEFAULT_BUCKET_S`,
one hour, in UTC) and metric statistics *across homes*: each home's mean of the metric in the
bucket counts once, and a row gives how many homes and readings went into it, the mean of the
homes' means and their standard deviation. What it guarantees:

* no sensor id, device name, home, person or subject id, location, description, sequence
  number or exact timestamp appears: rows carry the bucket's start, the metric's name and
  unit, counts and two statistics;
* a row is published only if at least ``min_homes`` homes (:data:`DEFAULT_MIN_HOMES`, 5)
  contributed to it (k-anonymity of the aggregate: no row describes fewer than k homes); the
  others are suppressed, so an installation with fewer homes publishes empty datasets;
* no minimum, maximum or other single home's value is published (an extreme value would
  single a home out); statistics are rounded to 3 decimals;
* ``health/rssi`` (radio signal: placement within a home, a per-device fingerprint) is not
  published; every other resource of the kind is (``health/battery`` included);
* nothing links a dataset to another: there is no per-home pseudonym, stable or not.

Rows of individual readings with a random per-dataset pseudonym were considered and
rejected: one home's day of motion, door and bed events is a fingerprint of its person's
routine, linkable across days and datasets whatever the pseudonym. Residual risks (not
differential privacy): an attacker who knows every other home's values in a bucket can infer
the last one; successive datasets can be differenced when homes join or leave.

**Erasure.** Readings are decrypted when a dataset is produced: a person erased before that
(``msec erase``) is in no dataset produced after the erasure, as their records are gone.
Datasets produced before hold only aggregates over at least k homes, which are not personal
data; they are kept. This relies on the runtime storing home readings as personal data
(``SENSITIVE_RESOURCES`` of the app): readings stored in clear in the twin are not erased.

**Crash safety and idempotence.** Each period is produced once per sensor type: the
``care_datasets`` row (unique per sensor type and period) is the commit point, written in
the same locked transaction in which the files are written to a temporary name, synced and
renamed into place; a crash leaves no half file under the final name, and producing again
replaces files that have no row and skips periods that have one. The publisher keeps its
place (the next period, the log position to read from) in ``care_dataset_state``; after
downtime it catches up every missed period in order. Readings that arrive after their
period's dataset was produced (``grace_s`` after its end, 30 min by default) are not in it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from msec.apps.care.model import DEVICE_ROLES
from msec.apps.care.service import CareFeed
from msec.core.kinds import ResourceSpec, get_kind
from msec.tlog.sql import MAX_ENTRIES_PER_READ
from msec.twin.engine import locked_transaction

if TYPE_CHECKING:
    from fastapi import FastAPI

    from msec.platform.platform import Platform

__all__ = [
    "COLUMNS",
    "DEFAULT_BUCKET_S",
    "DEFAULT_MIN_HOMES",
    "METHOD",
    "SENSOR_TYPES",
    "Dataset",
    "DatasetPublisher",
    "DatasetRunner",
    "DatasetStore",
    "install_datasets",
    "metrics_of",
]

_log = logging.getLogger(__name__)

#: The sensor types, one dataset each per period (the device kinds of a home).
SENSOR_TYPES: Final = tuple(kind for kind, _service, _resource in DEVICE_ROLES.values())
_TYPE_OF_ROLE: Final = {role: kind for role, (kind, _s, _r) in DEVICE_ROLES.items()}

#: The anonymisation method (see the module docstring); a new one gets a new version.
METHOD: Final = "aggregate-across-homes-k/1"
#: The smallest number of homes a published row may describe.
DEFAULT_MIN_HOMES: Final = 5
#: Timestamps are coarsened to buckets of this many seconds (UTC).
DEFAULT_BUCKET_S: Final = 3600
#: A period is produced this long after it ended, so that late readings make it in.
DEFAULT_GRACE_S: Final = 1800.0
#: Placeholder until the marketplace sets one per offer.
LICENCE: Final = "to be decided when offered on the marketplace"
FORMAT: Final = "msec.care.dataset/1"
#: Resources never published: the radio signal strength places a device within a home.
EXCLUDED: Final = frozenset({"health/rssi"})

#: The CSV columns, in order, with their types and meanings.
COLUMNS: Final[tuple[dict[str, str], ...]] = (
    {"name": "time_bucket", "type": "datetime",
     "description": "start of the time bucket, UTC (ISO 8601)"},
    {"name": "metric", "type": "string", "description": "service/resource measured"},
    {"name": "unit", "type": "string", "description": "unit of mean and stddev (empty: none; "
     "booleans are the share of readings that were true, 0 to 1)"},
    {"name": "homes", "type": "integer", "description": "homes that reported the metric in "
     "the bucket (at least the dataset's min_homes)"},
    {"name": "readings", "type": "integer", "description": "readings of those homes"},
    {"name": "mean", "type": "number", "description": "mean over the homes of each home's "
     "mean value in the bucket"},
    {"name": "stddev", "type": "number", "description": "population standard deviation of "
     "the homes' means"},
)  # fmt: skip
_HEADER: Final = tuple(c["name"] for c in COLUMNS)
_MAX_PERIODS_PER_SCAN: Final = 31
# The publisher's pg_advisory_xact_lock key: "MSECDSET" in ASCII.
_PG_LOCK_KEY: Final = 0x4D53454344534554

metadata = sa.MetaData()

datasets_table = sa.Table(
    "care_datasets",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("sensor_type", sa.String(32), nullable=False),
    sa.Column("period_start", sa.Double, nullable=False),
    sa.Column("period_end", sa.Double, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("path", sa.String(300), nullable=False),  # relative to <data_dir>/datasets
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("method", sa.String(64), nullable=False),
    sa.Column("min_homes", sa.Integer, nullable=False),
    sa.Column("bucket_s", sa.Integer, nullable=False),
    sa.Column("licence", sa.String(200), nullable=False),
    sa.Column("columns", sa.Text, nullable=False),  # JSON list of {name, type, description}
    sa.Column("state", sa.String(16), nullable=False),
    sa.UniqueConstraint("sensor_type", "period_start", name="uq_care_datasets_period"),
    sa.Index("ix_care_datasets_period", "period_start"),
)

state_table = sa.Table(
    "care_dataset_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("next_start", sa.Double, nullable=False),  # the next period to produce
    sa.Column("cursor", sa.BigInteger, nullable=False),  # the log position to read from
)


def metrics_of(sensor_type: str) -> dict[str, ResourceSpec]:
    """The published metrics of a sensor type: its kind's resources but :data:`EXCLUDED`."""
    kind = get_kind(sensor_type)
    return {spec.path: spec for spec in kind.all_resources() if spec.path not in EXCLUDED}


@dataclass(frozen=True, slots=True)
class Dataset:
    """One dataset artifact's metadata (a ``care_datasets`` row). ``path`` is the file's
    place under the store's folder; ``state`` is ``ready`` once produced."""

    id: int
    sensor_type: str
    period_start: float
    period_end: float
    rows: int
    bytes: int
    sha256: str
    path: str
    created_at: float
    method: str
    min_homes: int
    bucket_s: int
    licence: str
    columns: tuple[dict[str, str], ...]
    state: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready metadata (times also as ISO 8601 UTC); the file's place is left out."""
        return {
            "id": self.id,
            "format": FORMAT,
            "sensor_type": self.sensor_type,
            "period_start": _iso(self.period_start),
            "period_end": _iso(self.period_end),
            "period_start_epoch": self.period_start,
            "period_end_epoch": self.period_end,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "media_type": "text/csv",
            "created_at": _iso(self.created_at),
            "anonymisation": {
                "method": self.method,
                "min_homes": self.min_homes,
                "bucket_s": self.bucket_s,
            },
            "licence": self.licence,
            "columns": list(self.columns),
            "state": self.state,
        }


class DatasetStore:
    """The dataset artifacts: files under ``root`` (``<data_dir>/datasets``) and their rows
    in ``care_datasets``. Safe to share between threads."""

    def __init__(self, engine: sa.Engine, root: Path) -> None:
        self.engine = engine
        self.root = root

    def create_schema(self) -> None:
        """Create the ``care_datasets`` and ``care_dataset_state`` tables if missing."""
        metadata.create_all(self.engine)

    def list(self, sensor_type: str | None = None, *, limit: int = 100) -> list[Dataset]:
        """The latest ``limit`` datasets (of ``sensor_type``), newest period first."""
        d = datasets_table.c
        stmt = sa.select(datasets_table).order_by(d.period_start.desc(), d.sensor_type)
        if sensor_type is not None:
            stmt = stmt.where(d.sensor_type == sensor_type)
        with self.engine.connect() as conn:
            return [_dataset(row) for row in conn.execute(stmt.limit(limit))]

    def get(self, dataset_id: int) -> Dataset | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(datasets_table).where(datasets_table.c.id == dataset_id)
            ).first()
        return None if row is None else _dataset(row)

    def file(self, dataset: Dataset) -> Path:
        return self.root / dataset.path

    def read(self, dataset: Dataset) -> bytes:
        """The dataset's file; ``OSError`` if it is missing, ``ValueError`` if it no longer
        matches its recorded SHA-256 (altered or damaged)."""
        data = self.file(dataset).read_bytes()
        if hashlib.sha256(data).hexdigest() != dataset.sha256:
            raise ValueError(f"dataset {dataset.id}: the file does not match its SHA-256")
        return data

    def clean(self) -> int:
        """Remove temporary files a crash left behind; return how many."""
        removed = 0
        if self.root.is_dir():
            for tmp in self.root.glob("*/.*.tmp"):
                tmp.unlink(missing_ok=True)
                removed += 1
        return removed


class _Cells:
    """Per (period, sensor type, bucket, metric), each home's running sum and count."""

    def __init__(self, bucket_s: int) -> None:
        self.bucket_s = bucket_s
        self.cells: dict[tuple[float, str, float, str], dict[str, list[float]]] = {}

    def add(self, period: float, sensor_type: str, metric: str, home: str, t: float,
            value: float) -> None:  # fmt: skip
        bucket = math.floor(t / self.bucket_s) * self.bucket_s
        homes = self.cells.setdefault((period, sensor_type, float(bucket), metric), {})
        acc = homes.get(home)
        if acc is None:
            homes[home] = [value, 1.0]
        else:
            acc[0] += value
            acc[1] += 1.0

    def csv(self, period: float, sensor_type: str, min_homes: int) -> tuple[bytes, int]:
        """The CSV of one dataset and its row count: one row per bucket and metric with at
        least ``min_homes`` homes, sorted; deterministic for the same readings."""
        units = {path: spec.unit or "" for path, spec in metrics_of(sensor_type).items()}
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(_HEADER)
        rows = 0
        keys = sorted(k for k in self.cells if k[0] == period and k[1] == sensor_type)
        for key in keys:
            homes = self.cells[key]
            if len(homes) < min_homes:
                continue  # suppressed: too few homes to hide each one
            means = [total / count for total, count in homes.values()]
            mean = sum(means) / len(means)
            stddev = math.sqrt(sum((m - mean) ** 2 for m in means) / len(means))
            readings = int(sum(count for _total, count in homes.values()))
            _p, _t, bucket, metric = key
            writer.writerow([_iso(bucket), metric, units[metric], len(homes), readings,
                             f"{mean:.3f}", f"{stddev:.3f}"])  # fmt: skip
            rows += 1
        return out.getvalue().encode(), rows


class DatasetPublisher:
    """Produces every period that is due (see the module docstring), from where it stopped.

    ``every_s`` is the period (aligned on the Unix epoch: days start at 00:00 UTC);
    ``bucket_s`` must divide it. ``ValueError`` for a period or bucket that is not a positive
    whole number of seconds, or a ``min_homes`` below 2.
    """

    def __init__(
        self,
        platform: Platform,
        store: DatasetStore,
        every_s: float,
        *,
        bucket_s: int = DEFAULT_BUCKET_S,
        min_homes: int = DEFAULT_MIN_HOMES,
        grace_s: float = DEFAULT_GRACE_S,
        licence: str = LICENCE,
    ) -> None:
        if every_s <= 0 or every_s != int(every_s):
            raise ValueError(f"the dataset period is a whole number of seconds, not {every_s!r}")
        if bucket_s <= 0 or int(every_s) % bucket_s:
            raise ValueError(f"the time bucket ({bucket_s} s) must divide the period ({every_s} s)")
        if min_homes < 2:
            raise ValueError("min_homes is at least 2: one home's values are personal data")
        self.platform = platform
        self.store = store
        self.every_s = int(every_s)
        self.bucket_s = int(bucket_s)
        self.min_homes = int(min_homes)
        self.grace_s = float(grace_s)
        self.licence = licence

    def period_of(self, t: float) -> float:
        """The start of the period ``t`` falls in."""
        return float(math.floor(t / self.every_s) * self.every_s)

    def state(self) -> tuple[float, int] | None:
        """``(next period to produce, log position)``, or ``None`` before the first run."""
        with self.store.engine.connect() as conn:
            row = conn.execute(sa.select(state_table).where(state_table.c.id == 1)).first()
        return None if row is None else (float(row.next_start), int(row.cursor))

    def run_once(self, now: float | None = None) -> list[Dataset]:
        """Produce every period whose end is at least ``grace_s`` before ``now``; return the
        datasets made (periods produced before are skipped). The first run only records
        where to start: the period ``now`` falls in, read from the start of the log."""
        now = time.time() if now is None else float(now)
        state = self.state()
        if state is None:
            self._save(self.period_of(now), 0)
            return []
        made: list[Dataset] = []
        next_start, cursor = state
        while next_start + self.every_s + self.grace_s <= now:
            periods: list[float] = []
            start = next_start
            while start + self.every_s + self.grace_s <= now and len(periods) < (
                _MAX_PERIODS_PER_SCAN
            ):
                periods.append(start)
                start += self.every_s
            cells, cursor = self._scan(cursor, periods[0], start)
            for period in periods:
                for sensor_type in SENSOR_TYPES:
                    dataset = self._produce(cells, period, sensor_type)
                    if dataset is not None:
                        made.append(dataset)
            next_start = start
            self._save(next_start, cursor)
        return made

    def _scan(self, cursor: int, t0: float, t1: float) -> tuple[_Cells, int]:
        """The readings with ``t0 <= t < t1`` from log position ``cursor`` to the log's size
        now, and where the next scan must start: the first chunk holding a reading of
        ``t1`` or later (nothing of a later period is before it)."""
        cells = _Cells(self.bucket_s)
        metrics = {sensor_type: metrics_of(sensor_type) for sensor_type in SENSOR_TYPES}
        feed = CareFeed(self.platform, cursor)
        size = self.platform.trust.log.size()
        resume: int | None = None
        while feed.cursor < size:
            before = feed.cursor
            events = feed.poll(min(MAX_ENTRIES_PER_READ, size - feed.cursor))
            if feed.cursor == before:
                break
            for event in events:
                if event.t >= t1:
                    if resume is None:
                        resume = before
                    continue
                if event.t < t0:
                    continue  # late for a period already produced
                sensor_type = _TYPE_OF_ROLE.get(event.role, "")
                metric = f"{event.service}/{event.resource}"
                if metric not in metrics.get(sensor_type, ()):
                    continue
                value = float(event.value)
                if math.isfinite(value):
                    cells.add(self.period_of(event.t), sensor_type, metric, event.home,
                              event.t, value)  # fmt: skip
        return cells, feed.cursor if resume is None else resume

    def _produce(self, cells: _Cells, period: float, sensor_type: str) -> Dataset | None:
        """Write one dataset unless it exists; the row commits it (see the module docstring)."""
        d = datasets_table.c
        name = _period_name(period, self.every_s)
        relative = f"{sensor_type}/{name}.csv"
        with locked_transaction(self.store.engine, _PG_LOCK_KEY) as conn:
            exists = conn.execute(
                sa.select(d.id).where(d.sensor_type == sensor_type, d.period_start == period)
            ).first()
            if exists is not None:
                return None
            data, rows = cells.csv(period, sensor_type, self.min_homes)
            digest = hashlib.sha256(data).hexdigest()
            created = time.time()
            values = {
                "sensor_type": sensor_type,
                "period_start": period,
                "period_end": period + self.every_s,
                "rows": rows,
                "bytes": len(data),
                "sha256": digest,
                "path": relative,
                "created_at": created,
                "method": METHOD,
                "min_homes": self.min_homes,
                "bucket_s": self.bucket_s,
                "licence": self.licence,
                "columns": json.dumps(list(COLUMNS), separators=(",", ":")),
                "state": "ready",
            }
            path = self.store.root / relative
            _write_atomic(path, data)
            sidecar = {k: v for k, v in _dataset({"id": 0, **values}).as_dict().items()
                       if k != "id"}  # fmt: skip
            sidecar["file"] = path.name
            _write_atomic(
                path.with_suffix(".json"),
                json.dumps(sidecar, indent=2, sort_keys=True).encode() + b"\n",
            )
            dialect = sqlite if self.store.engine.dialect.name == "sqlite" else postgresql
            stmt = dialect.insert(datasets_table).values(**values).on_conflict_do_nothing()
            id_ = conn.execute(stmt.returning(d.id)).scalar()
        if id_ is None:
            return None
        _log.info("care dataset %s %s: %d rows", sensor_type, name, rows)
        return _dataset({"id": id_, **values})

    def _save(self, next_start: float, cursor: int) -> None:
        values = {"next_start": next_start, "cursor": cursor}
        with locked_transaction(self.store.engine, _PG_LOCK_KEY) as conn:
            updated = conn.execute(
                state_table.update().where(state_table.c.id == 1).values(**values)
            ).rowcount
            if not updated:
                conn.execute(state_table.insert().values(id=1, **values))


class DatasetRunner:
    """Runs :meth:`DatasetPublisher.run_once` at start (catching up missed periods) and then
    every ``poll_s`` seconds, in a daemon thread, until :meth:`stop`. A failed run (the
    database away, a full disk) is logged and tried again at the next poll."""

    def __init__(
        self,
        publisher: DatasetPublisher,
        *,
        poll_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.publisher = publisher
        self.poll_s = poll_s
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.publisher.store.create_schema()
        self.publisher.store.clean()
        self._thread = threading.Thread(target=self._run, name="care-datasets", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.publisher.run_once(self.clock())
            except Exception:
                _log.exception("care datasets: producing failed; retrying later")
            if self._stop.wait(self.poll_s):
                return

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


class _Idle:
    """What :func:`install_datasets` returns when datasets are off: nothing to stop."""

    def stop(self) -> None:
        pass


def install_datasets(
    app: FastAPI, platform: Platform, *, clock: Callable[[], float] = time.time
) -> DatasetRunner | _Idle:
    """The datasets' tables, their API and, unless ``[care] dataset_every_s`` is 0, a
    started :class:`DatasetRunner` on ``clock`` (stop it at stop)."""
    from msec.apps.care.datasets_api import add_datasets_api

    store = DatasetStore(platform.engine, platform.settings.data_dir / "datasets")
    store.create_schema()
    add_datasets_api(app, store)
    every_s = platform.settings.care.dataset_every_s
    if not every_s:
        return _Idle()
    # Hourly buckets, or finer if the period is not a whole number of hours.
    bucket_s = math.gcd(int(every_s), DEFAULT_BUCKET_S)
    publisher = DatasetPublisher(platform, store, every_s, bucket_s=bucket_s)
    runner = DatasetRunner(publisher, clock=clock)
    runner.start()
    return runner


# -- helpers ----------------------------------------------------------------------------------


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _period_name(start: float, every_s: int) -> str:
    moment = datetime.fromtimestamp(start, UTC)
    return moment.strftime("%Y-%m-%d" if every_s % 86400 == 0 else "%Y-%m-%dT%H%M%SZ")


def _write_atomic(path: Path, data: bytes) -> None:
    """``data`` at ``path`` whole or not at all: a synced temporary file renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _dataset(row: Any) -> Dataset:
    get = row.__getitem__ if isinstance(row, dict) else lambda k: getattr(row, k)
    return Dataset(
        id=int(get("id")),
        sensor_type=get("sensor_type"),
        period_start=float(get("period_start")),
        period_end=float(get("period_end")),
        rows=int(get("rows")),
        bytes=int(get("bytes")),
        sha256=get("sha256"),
        path=get("path"),
        created_at=float(get("created_at")),
        method=get("method"),
        min_homes=int(get("min_homes")),
        bucket_s=int(get("bucket_s")),
        licence=get("licence"),
        columns=tuple(json.loads(get("columns"))),
        state=get("state"),
    )
