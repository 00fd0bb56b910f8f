"""Anonymised datasets per sensor type: from simulated homes' readings stored as personal data,
through the log and the companion store, to CSV files with metadata and their API."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from care_site import CareSite
from fastapi.testclient import TestClient

from msec.apps.care import datasets as datasets_module
from msec.apps.care.datasets import (
    COLUMNS,
    SENSOR_TYPES,
    Dataset,
    DatasetPublisher,
    DatasetStore,
    datasets_table,
)
from msec.apps.care.model import DEVICE_ROLES
from msec.ingest import Incoming
from msec.platform import Platform, Settings
from msec.platform.runtime import with_app_patterns
from msec.sdk import Device
from msec.sdk.sim.home import HomeSimulator

T0 = 1_750_003_200.0  # 2025-06-15 16:00 UTC (18:00 in Madrid), on the hour
HOUR = 3600.0
HOMES = tuple(f"home-00{n:02d}" for n in range(1, 7))
World = tuple[Platform, dict[str, Device], "DatasetStore"]


def open_platform(data_dir: Path, url: str | None = None) -> Platform:
    """A platform that stores the homes' readings as personal data, as the runtime does."""
    database = {"url": url} if url else None
    return Platform.open(with_app_patterns(Settings.load(None, data_dir=data_dir,
                                                         database=database)))  # fmt: skip


def register(platform: Platform) -> dict[str, Device]:
    devices = {}
    for home in HOMES:
        for role, (kind, _service, _resource) in DEVICE_ROLES.items():
            name = f"{home}-{role}"
            devices[name] = platform.add_device(
                name, kind, subject=home, description=f"{role} of {home}",
                latitude=43.4623, longitude=-3.8099,
            )  # fmt: skip
    return devices


def ingest(platform: Platform, devices: dict[str, Device], homes: tuple[str, ...], t0: float,
           t1: float) -> int:  # fmt: skip
    """The simulated homes' readings of [t0, t1), through the ingest pipeline."""
    sim = HomeSimulator(7)
    count = 0
    for home in homes:
        rows: dict[str, list[tuple[str, str, Any, float]]] = {}
        for device, service, resource, value, t in sim.readings_between(home, t0, t1,
                                                                         incidents=False):
            rows.setdefault(device, []).append((service, resource, value, t))
        for device, readings in rows.items():
            for start in range(0, len(readings), 40):
                chunk = readings[start : start + 40]
                sealed = devices[device].seal(chunk, at=chunk[-1][3])
                [outcome] = platform.ingestor.process([Incoming(sealed, None, "test")])
                assert outcome.rejected is None, outcome.rejected
                count += len(chunk)
    return count


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    platform = open_platform(tmp_path / "data", url)
    devices = register(platform)
    store = DatasetStore(platform.engine, tmp_path / "data" / "datasets")
    store.create_schema()
    yield platform, devices, store
    platform.close()


def publisher(platform: Platform, store: DatasetStore) -> DatasetPublisher:
    return DatasetPublisher(platform, store, HOUR, bucket_s=900, min_homes=5, grace_s=60)


def rows_of(store: DatasetStore, dataset: Dataset) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(store.read(dataset).decode())))


def test_one_anonymised_dataset_per_sensor_type_and_period(world: Any) -> None:
    platform, devices, store = world
    assert ingest(platform, devices, HOMES, T0, T0 + 2 * HOUR) > 1500
    assert platform.twin.count_readings("home-0001-motion") == 0  # stored as personal data
    pub = publisher(platform, store)
    assert pub.run_once(T0 + 10) == []  # the first run: from the period it started in
    # Down for a while: both periods are caught up at once, in order.
    made = pub.run_once(T0 + 2 * HOUR + 60)
    assert [(d.period_start, d.sensor_type) for d in made] == [
        (T0 + n * HOUR, t) for n in range(2) for t in SENSOR_TYPES
    ]
    assert set(SENSOR_TYPES) == {"care_gateway", "motion_sensor", "contact_sensor",
                                 "bed_sensor", "smart_plug"}  # fmt: skip

    everything = b""
    for dataset in made:
        hour = 16 + int((dataset.period_start - T0) // HOUR)
        path = store.root / dataset.sensor_type / f"2025-06-15T{hour:02d}0000Z.csv"
        assert store.file(dataset) == path
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == dataset.sha256
        assert len(data) == dataset.bytes
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert sidecar["sha256"] == dataset.sha256 and sidecar["rows"] == dataset.rows
        assert sidecar["anonymisation"] == {"method": "aggregate-across-homes-k/1",
                                            "min_homes": 5, "bucket_s": 900}  # fmt: skip
        assert sidecar["state"] == "ready" and sidecar["licence"]
        assert [c["name"] for c in sidecar["columns"]] == [c["name"] for c in COLUMNS]
        everything += data + path.with_suffix(".json").read_bytes()

        rows = rows_of(store, dataset)
        assert len(rows) == dataset.rows > 0
        assert list(rows[0]) == [c["name"] for c in COLUMNS]
        kind_metrics = {r["metric"] for r in rows}
        assert "health/rssi" not in kind_metrics
        own = DEVICE_ROLES[next(r for r, v in DEVICE_ROLES.items() if v[0] == dataset.sensor_type)]
        assert f"{own[1]}/{own[2]}" in kind_metrics
        for row in rows:
            bucket = datetime.strptime(row["time_bucket"], "%Y-%m-%dT%H:%M:%SZ")
            epoch = bucket.replace(tzinfo=UTC).timestamp()
            assert epoch % 900 == 0  # coarsened to 15 min
            assert dataset.period_start <= epoch < dataset.period_end
            assert 5 <= int(row["homes"]) <= 6  # never fewer than k homes
            assert int(row["readings"]) >= int(row["homes"])
    # Nothing in the files names a home, a device, a person's pseudonym or a place.
    for home in HOMES:
        assert home.encode() not in everything
        subject_id = platform.companion.subject(home, create=False)
        assert subject_id.encode() not in everything
        for role in DEVICE_ROLES:
            assert f"{home}-{role}".encode() not in everything
    for word in (b"home-", b"43.46", b"-3.80", b"rssi", b"seq"):
        assert word not in everything
    # The bed's occupancy is a share of readings: between 0 and 1.
    bed = next(d for d in made if d.sensor_type == "bed_sensor")
    shares = [float(r["mean"]) for r in rows_of(store, bed) if r["metric"] == "bed/occupied"]
    assert shares and all(0.0 <= s <= 1.0 for s in shares)

    # Idempotent: again, or from an older saved position, nothing new and nothing rewritten.
    assert pub.run_once(T0 + 2 * HOUR + 60) == []
    pub._save(T0, 0)
    assert pub.run_once(T0 + 2 * HOUR + 60) == []
    with platform.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(datasets_table)).scalar() == 10
    assert {d.id for d in store.list()} == {d.id for d in made}
    assert all(store.read(d) for d in made)  # every file still matches its SHA-256


def test_a_crash_while_writing_leaves_no_half_file(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform, devices, store = world
    ingest(platform, devices, HOMES, T0, T0 + HOUR)
    pub = publisher(platform, store)
    pub.run_once(T0)
    real_replace = datasets_module.os.replace
    calls = []

    def crash(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == 3:  # the second dataset's CSV
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(datasets_module.os, "replace", crash)
    with pytest.raises(OSError):
        pub.run_once(T0 + HOUR + 60)
    second = store.root / SENSOR_TYPES[1] / "2025-06-15T160000Z.csv"
    assert not second.exists()
    assert not list(store.root.glob("*/.*.tmp"))  # the temporary file went too
    assert pub.state() == (T0, 0)  # not moved on
    # A harder crash (power loss) could leave a temporary file: cleaned at start.
    (store.root / SENSOR_TYPES[1] / ".2025-06-15T160000Z.csv.x.tmp").write_bytes(b"half")
    assert store.clean() == 1
    monkeypatch.setattr(datasets_module.os, "replace", real_replace)
    made = pub.run_once(T0 + HOUR + 60)
    # The first dataset was committed before the crash: produced once, not again.
    assert [d.sensor_type for d in made] == list(SENSOR_TYPES[1:])
    assert len(store.list()) == 5 and second.exists()


def test_an_erased_person_is_in_no_later_dataset(world: Any) -> None:
    platform, devices, store = world
    ingest(platform, devices, HOMES, T0, T0 + 3 * HOUR)
    pub = publisher(platform, store)
    pub.run_once(T0)
    first = {d.sensor_type: d for d in pub.run_once(T0 + HOUR + 60)}
    assert {int(r["homes"]) for r in rows_of(store, first["motion_sensor"])} == {6}
    erased = platform.erase_subject("home-0006", reason="left the service")
    assert erased is not None

    second = {d.sensor_type: d for d in pub.run_once(T0 + 2 * HOUR + 60)}
    for dataset in second.values():
        assert {int(r["homes"]) for r in rows_of(store, dataset)} <= {5}
    motion = rows_of(store, second["motion_sensor"])
    assert {int(r["homes"]) for r in motion} == {5}
    # With two more people gone, four homes are left: too few to publish anything.
    platform.erase_subject("home-0005")
    platform.erase_subject("home-0004")
    third = pub.run_once(T0 + 3 * HOUR + 60)
    assert len(third) == 5 and all(d.rows == 0 for d in third)
    assert all(rows_of(store, d) == [] for d in third)
    # What was published before the erasures stays: aggregates over at least five homes.
    assert store.get(first["motion_sensor"].id) == first["motion_sensor"]


def test_the_publisher_refuses_settings_that_cannot_anonymise(world: Any) -> None:
    platform, _devices, store = world
    with pytest.raises(ValueError, match="min_homes"):
        DatasetPublisher(platform, store, HOUR, min_homes=1)
    with pytest.raises(ValueError, match="divide"):
        DatasetPublisher(platform, store, HOUR, bucket_s=7 * 60)
    with pytest.raises(ValueError, match="whole number"):
        DatasetPublisher(platform, store, 0)
    daily = DatasetPublisher(platform, store, 86400)
    assert datasets_module._period_name(daily.period_of(T0), 86400) == "2025-06-15"


# -- the API -----------------------------------------------------------------------------------


def bearer(platform: Platform, name: str, role: str) -> dict[str, str]:
    platform.principals.add_user(name, tenant="default", roles=[role],
                                 password="correct horse battery")  # fmt: skip
    token, _ = platform.principals.issue_token(f"user:{name}", ttl_s=600)
    return {"Authorization": f"Bearer {token}"}


def test_the_datasets_api_is_for_operators_and_admins(care_site: CareSite) -> None:
    platform = care_site.platform
    store = DatasetStore(platform.engine, platform.settings.data_dir / "datasets")
    pub = DatasetPublisher(platform, store, HOUR)
    now = time.time()
    pub.run_once(now)
    made = pub.run_once(now + 2 * HOUR)
    assert len(made) >= 5
    with TestClient(care_site.app) as client:
        olga = bearer(platform, "olga", "operator")
        ada = bearer(platform, "ada", "admin")
        carmen = bearer(platform, "carmen", "caregiver")
        pablo = bearer(platform, "pablo", "citizen")
        listed = client.get("/api/v1/care/datasets?limit=1000", headers=olga).json()
        assert {d["id"] for d in listed} >= {d.id for d in made}
        assert len(client.get("/api/v1/care/datasets?limit=3", headers=olga).json()) == 3
        assert client.get("/api/v1/care/datasets", headers=ada).status_code == 200
        beds = client.get("/api/v1/care/datasets?sensor_type=bed_sensor", headers=olga).json()
        assert beds and {d["sensor_type"] for d in beds} == {"bed_sensor"}
        assert client.get("/api/v1/care/datasets?sensor_type=Bad!", headers=olga).status_code \
            == 422
        one = made[0]
        meta = client.get(f"/api/v1/care/datasets/{one.id}", headers=olga).json()
        assert meta["sha256"] == one.sha256 and meta["state"] == "ready"
        assert meta["anonymisation"]["min_homes"] == 5 and "path" not in meta
        data = client.get(f"/api/v1/care/datasets/{one.id}/data", headers=olga)
        assert data.status_code == 200 and data.headers["content-type"].startswith("text/csv")
        assert data.headers["x-content-sha256"] == one.sha256
        assert data.content.decode().splitlines()[0] == ",".join(c["name"] for c in COLUMNS)
        for who in (carmen, pablo):
            assert client.get("/api/v1/care/datasets", headers=who).status_code == 403
            assert client.get(f"/api/v1/care/datasets/{one.id}/data",
                              headers=who).status_code == 403  # fmt: skip
        assert client.get("/api/v1/care/datasets").status_code == 401
        for bad in ("999999", "abc", "-1", "1" * 30):
            assert client.get(f"/api/v1/care/datasets/{bad}", headers=olga).status_code == 404
        # An altered file is not served; a missing one is gone.
        store.file(one).write_bytes(b"time_bucket\nforged\n")
        assert client.get(f"/api/v1/care/datasets/{one.id}/data",
                          headers=olga).status_code == 500  # fmt: skip
        store.file(one).unlink()
        assert client.get(f"/api/v1/care/datasets/{one.id}/data",
                          headers=olga).status_code == 410  # fmt: skip
