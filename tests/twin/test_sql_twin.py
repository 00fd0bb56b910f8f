"""SqlTwin on SQLite (a temporary file) and on PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from msec.core.errors import MsecError
from msec.core.kinds import DeviceKind, ResourceSpec, register_kind
from msec.core.models import Reading, Value
from msec.twin import SqlTwin, Twin, UnknownProvider, make_engine

KIND = register_kind(
    DeviceKind(
        name="twin_test_meter",
        description="a meter that only the twin tests use",
        resources=(
            ResourceSpec("meter", "power", "W", "float"),
            ResourceSpec("meter", "count", "pulses", "int"),
            ResourceSpec("meter", "on", None, "bool"),
            ResourceSpec("meter", "label", None, "str"),
        ),
    )
)


@pytest.fixture
def twin(engine: Engine) -> SqlTwin:
    twin = SqlTwin(engine)
    twin.create_schema()
    twin.ensure_provider("meter-1", kind=KIND.name, description="first meter")
    return twin


def power(
    seq: int, value: float, timestamp: float | None = None, provider: str = "meter-1"
) -> Reading:
    ts = 1_700_000_000.0 + seq if timestamp is None else timestamp
    return Reading(provider, "meter", "power", value, ts, seq)


def test_sql_twin_is_a_twin(twin: SqlTwin) -> None:
    checked: Twin = twin
    assert checked.providers()[0].name == "meter-1"


def test_create_schema_is_idempotent(twin: SqlTwin) -> None:
    twin.write([power(1, 1.0)])
    twin.create_schema()
    assert twin.count_readings() == 1


def test_write_returns_new_readings_and_is_idempotent(twin: SqlTwin) -> None:
    batch = [power(seq, float(seq)) for seq in (3, 1, 2)]

    assert twin.write(batch) == batch  # input order, not seq order
    assert twin.write(batch) == []
    assert twin.write([power(2, 2.0), power(4, 4.0), power(1, 1.0)]) == [power(4, 4.0)]
    assert twin.count_readings() == 4
    assert twin.count_readings("meter-1") == 4
    assert twin.max_seq("meter-1") == 4


def test_duplicates_inside_one_batch_count_once(twin: SqlTwin) -> None:
    first, again = power(7, 1.5), power(7, 99.0)

    assert twin.write([first, again, first]) == [first]
    assert [v.value for v in twin.history("meter-1", "meter", "power")] == [1.5]


def test_empty_write(twin: SqlTwin) -> None:
    assert twin.write([]) == []
    assert twin.max_seq("meter-1") is None
    assert twin.count_readings() == 0


def test_latest_only_moves_forward(twin: SqlTwin) -> None:
    twin.write([power(2, 20.0, timestamp=200.0)])
    twin.write([power(1, 10.0, timestamp=100.0)])  # older, delivered late

    latest = twin.latest("meter-1", "meter", "power")
    assert latest is not None
    assert (latest.value, latest.timestamp, latest.seq, latest.unit) == (20.0, 200.0, 2, "W")
    assert [v.seq for v in twin.history("meter-1", "meter", "power")] == [1, 2]

    # Same timestamp: the higher seq is newer. Within one batch the newest wins too.
    twin.write([power(3, 30.0, timestamp=200.0), power(5, 50.0, timestamp=150.0)])
    latest = twin.latest("meter-1", "meter", "power")
    assert latest is not None and latest.seq == 3
    assert twin.latest("meter-1", "meter", "nothing") is None


VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.booleans(),
    st.text(),
)


def same(a: Value | None, b: Value) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return a == b


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=VALUES)
@example(value=True)
@example(value=False)
@example(value=1)
@example(value=0)
@example(value=1.0)
@example(value=-0.0)
@example(value=math.inf)
@example(value=math.nan)
@example(value=2**53 + 1)
@example(value=-(2**63))
@example(value=10**400)
@example(value="")
@example(value="a\x00b")
@example(value="lone \ud800 surrogate")
@example(value="naïve ☃ 日本")
def test_values_round_trip_with_their_type(twin: SqlTwin, value: Value) -> None:
    seq = (twin.max_seq("meter-1") or 0) + 1
    assert twin.write([Reading("meter-1", "meter", "label", value, 1000.0 + seq, seq)])

    latest = twin.latest("meter-1", "meter", "label")
    assert latest is not None and same(latest.value, value)
    stored = twin.history("meter-1", "meter", "label", since=1000.0 + seq)
    assert len(stored) == 1 and same(stored[0].value, value)


def test_unsupported_value_type_is_refused(twin: SqlTwin) -> None:
    with pytest.raises(TypeError):
        twin.write([power(1, 1.0), Reading("meter-1", "meter", "power", b"raw", 1.0, 2)])  # type: ignore[arg-type]
    assert twin.count_readings() == 0


def test_history_filters_limit_and_order(twin: SqlTwin) -> None:
    # Written out of order and in two batches; history is by (timestamp, seq).
    readings = [power(seq, float(seq), timestamp=float(seq)) for seq in range(1, 11)]
    twin.write(readings[5:])
    twin.write(readings[:5])
    twin.write([power(11, 11.0, timestamp=3.0)])  # a second reading at t=3

    def seqs(**kwargs: float | int) -> list[int]:
        return [v.seq for v in twin.history("meter-1", "meter", "power", **kwargs)]  # type: ignore[misc]

    assert seqs() == [1, 2, 3, 11, 4, 5, 6, 7, 8, 9, 10]
    assert seqs(since=3.0, until=6.0) == [3, 11, 4, 5]
    assert seqs(since=9.0) == [9, 10]
    assert seqs(until=2.0) == [1]
    assert seqs(limit=3) == [1, 2, 3]
    assert seqs(since=4.0, limit=2) == [4, 5]
    assert seqs(limit=0) == []
    assert seqs(since=20.0) == []

    stored = twin.history("meter-1", "meter", "power", since=5.0, limit=1)
    assert [(v.provider, v.service, v.resource, v.value, v.timestamp, v.unit) for v in stored] == [
        ("meter-1", "meter", "power", 5.0, 5.0, "W")
    ]
    assert twin.history("meter-1", "meter", "missing") == []
    assert twin.history("nobody", "meter", "power") == []


def test_provider_health_comes_from_health_readings(twin: SqlTwin) -> None:
    assert twin.provider("meter-1") is not None
    info = twin.provider("meter-1")
    assert info is not None
    assert (info.last_seen, info.battery, info.rssi, info.resources) == (None, None, None, ())

    twin.write(
        [
            Reading("meter-1", "health", "battery", 80.0, 100.0, 1),
            Reading("meter-1", "health", "rssi", -70.0, 100.0, 2),
            power(3, 5.0, timestamp=120.0),
        ]
    )
    twin.write([Reading("meter-1", "health", "battery", 90.0, 50.0, 4)])  # older: ignored

    info = twin.provider("meter-1")
    assert info is not None
    assert (info.battery, info.rssi, info.last_seen) == (80.0, -70.0, 120.0)
    assert [(r.service, r.resource, r.value, r.unit) for r in info.resources] == [
        ("health", "battery", 80.0, "%"),
        ("health", "rssi", -70.0, "dBm"),
        ("meter", "power", 5.0, "W"),
    ]

    twin.write([Reading("meter-1", "health", "battery", 75.0, 130.0, 5)])
    info = twin.provider("meter-1")
    assert info is not None and (info.battery, info.last_seen) == (75.0, 130.0)


def test_providers_metadata(twin: SqlTwin) -> None:
    twin.ensure_provider(
        "meter-0", kind=KIND.name, tenant="santander", latitude=43.47, longitude=-3.8
    )
    twin.write([power(1, 1.0, timestamp=10.0)])
    twin.ensure_provider("meter-1", kind=KIND.name, description="renamed")  # keeps health

    listed = twin.providers()
    assert [p.name for p in listed] == ["meter-0", "meter-1"]
    assert all(p.resources == () for p in listed)
    zero, one = listed
    assert (zero.kind, zero.tenant, zero.latitude, zero.longitude) == (
        KIND.name,
        "santander",
        43.47,
        -3.8,
    )
    assert (one.description, one.tenant, one.last_seen) == ("renamed", "default", 10.0)
    assert twin.provider("nobody") is None


def test_unknown_kind_gives_no_unit(twin: SqlTwin) -> None:
    twin.ensure_provider("odd-1", kind="no_such_kind_anywhere")
    twin.write([Reading("odd-1", "meter", "power", 1.0, 1.0, 1)])
    latest = twin.latest("odd-1", "meter", "power")
    assert latest is not None and latest.unit is None


def test_unknown_provider_writes_nothing(twin: SqlTwin) -> None:
    batch = [power(1, 1.0), power(1, 1.0, provider="ghost"), power(2, 2.0)]

    with pytest.raises(UnknownProvider, match="ghost") as caught:
        twin.write(batch)

    assert isinstance(caught.value, KeyError) and isinstance(caught.value, MsecError)
    assert twin.count_readings() == 0
    assert twin.latest("meter-1", "meter", "power") is None
    info = twin.provider("meter-1")
    assert info is not None and info.last_seen is None
    assert twin.write(batch[:1]) == batch[:1]  # the known part can be written afterwards


def test_concurrent_writers_store_each_reading_once(twin: SqlTwin) -> None:
    """Overlapping batches from several threads: no deadlock, each reading new exactly once."""
    providers = [f"meter-{i}" for i in range(2, 8)]
    for name in providers:
        twin.ensure_provider(name, kind=KIND.name)
    readings = [
        Reading(name, "meter", resource, float(seq), 1000.0 + seq, seq)
        for seq in range(200)
        for name in providers
        for resource in ("power",)
    ] + [Reading(name, "health", "battery", 50.0, 2000.0, 1000) for name in providers]

    def write_all(shift: int) -> list[Reading]:
        ordered = readings[shift:] + readings[:shift]  # same readings, other order
        new: list[Reading] = []
        for start in range(0, len(ordered), 150):
            new += twin.write(ordered[start : start + 150])
        return new

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(write_all, [0, 301, 602, 903]))

    stored = [r for result in results for r in result]
    assert sorted(stored, key=lambda r: (r.provider, r.seq)) == sorted(
        readings, key=lambda r: (r.provider, r.seq)
    )
    for name in providers:
        info = twin.provider(name)
        assert info is not None and (info.battery, info.last_seen) == (50.0, 2000.0)
        latest = twin.latest(name, "meter", "power")
        assert latest is not None and latest.seq == 199


# --- several writer processes on one SQLite file ---------------------------------------------

SHARED_SEQS = range(1_000_000, 1_000_200)


def _writer(url: str, name: str) -> tuple[int, int]:
    """Write 20 batches of own readings and all shared readings; return (own, shared) new."""
    engine = make_engine(url)
    twin = SqlTwin(engine)
    own = shared = 0
    for batch in range(20):
        seqs = range(batch * 100, batch * 100 + 100)
        own += len(twin.write([power(seq, float(seq), provider=name) for seq in seqs]))
        # Both processes write the same shared readings; each must be new to exactly one.
        part = SHARED_SEQS[batch * 10 : batch * 10 + 10]
        shared += len(twin.write([power(seq, 0.0, provider="shared") for seq in part]))
    engine.dispose()
    return own, shared


def test_two_writer_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    engine = make_engine(url)
    twin = SqlTwin(engine)
    twin.create_schema()
    for name in ("shared", "worker-a", "worker-b"):
        twin.ensure_provider(name, kind=KIND.name)

    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        results = pool.starmap(_writer, [(url, "worker-a"), (url, "worker-b")])

    assert [own for own, _ in results] == [2000, 2000]
    assert sum(shared for _, shared in results) == len(SHARED_SEQS)
    assert twin.count_readings("worker-a") == twin.count_readings("worker-b") == 2000
    assert twin.count_readings("shared") == len(SHARED_SEQS)
    assert twin.max_seq("worker-a") == 1999
    engine.dispose()


def test_make_engine_refuses_other_databases() -> None:
    with pytest.raises(MsecError):
        make_engine("mysql://localhost/db")


def test_tenants_of_many_providers_in_batches(twin: SqlTwin) -> None:
    twin.ensure_provider("zz-last", kind=KIND.name, tenant="fujisawa")
    asked = [f"absent-{i:04d}" for i in range(1200)] + ["meter-1", "zz-last", "meter-1"]
    assert twin.tenants(asked) == {"meter-1": "default", "zz-last": "fujisawa"}
    assert twin.tenants([]) == {}
