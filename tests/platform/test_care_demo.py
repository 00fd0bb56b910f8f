"""`msec demo`'s Connected Care homes: registered as personal data, publishing over MQTT into
the care engine, with a scripted incident that raises an alarm within minutes."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from msec.apps.care.alarms import SqlAlarms
from msec.apps.care.engine import CareEngine
from msec.apps.care.model import AlarmKind, SensorEvent, split_device
from msec.platform import Platform, Settings
from msec.platform.care_demo import (
    BACKFILL_S,
    HOMES,
    INCIDENT_AFTER_S,
    CareFleet,
    scripted_incidents,
)
from msec.platform.runtime import Runtime
from msec.sdk.sim.home import HomeSimulator

MADRID = ZoneInfo("Europe/Madrid")


def local(hour: int, minute: int = 0) -> float:
    return datetime(2025, 6, 16, hour, minute, tzinfo=MADRID).timestamp()


@pytest.mark.parametrize(
    ("hour", "minute", "scripted", "override"),
    [
        (12, 0, {"home-0002": "low_battery", "home-0004": "sensor_silent"}, False),
        (2, 0, {"home-0003": "night_wandering"}, False),
        (19, 59, {}, True),  # low_battery would start after 20:00, outside its window
        (21, 30, {}, True),
        (6, 0, {}, True),
    ],
)
def test_the_scripted_incidents_fit_the_local_hour(hour: int, minute: int,
                                                   scripted: dict[str, str],
                                                   override: bool) -> None:  # fmt: skip
    specs, overrides = scripted_incidents(local(hour, minute), HomeSimulator(1))
    assert {home: [s.name for s in found] for home, found in specs.items()} == {
        home: [name] for home, name in scripted.items()
    }
    assert all(s.start == local(hour, minute) + INCIDENT_AFTER_S
               for found in specs.values() for s in found)  # fmt: skip
    assert bool(overrides) is override
    if override:
        assert overrides[0].device == "home-0002-door" and overrides[0].value < 15


@pytest.mark.parametrize(
    ("hour", "minute", "home", "kind"),
    [
        (12, 0, "home-0002", AlarmKind.LOW_BATTERY),
        (21, 30, "home-0002", AlarmKind.LOW_BATTERY),
        (2, 0, "home-0003", AlarmKind.NIGHT_DOOR),
    ],
)
def test_the_scripted_incident_raises_its_alarm_within_minutes(
    tmp_path: Path, hour: int, minute: int, home: str, kind: AlarmKind
) -> None:
    """The fleet's readings as it publishes them (home by home, device by device, the
    engine stepping in between): first the backfill, then 5 s rounds."""
    start = local(hour, minute)
    platform = Platform.open(Settings.load(None, data_dir=tmp_path / "data"))
    try:
        fleet = CareFleet(platform, platform.settings, "127.0.0.1", 1, "device", "x",
                          stop=None, clock=lambda: start)  # type: ignore[arg-type]  # fmt: skip
        alarms = SqlAlarms(platform.engine)
        alarms.create_schema()
        engine = CareEngine(alarms)
        seqs: dict[str, int] = {}

        def publish(t0: float, t1: float) -> None:
            for h in fleet.homes:
                by_device: dict[str, list[SensorEvent]] = {}
                for device, service, resource, value, t in fleet.readings(h, t0, t1):
                    home_, role = split_device(device) or ("", "")
                    seqs[device] = seqs.get(device, 0) + 1
                    event = SensorEvent(home_, role, device, service, resource, value, t,
                                        seqs[device])  # fmt: skip
                    by_device.setdefault(device, []).append(event)
                for events in by_device.values():
                    for event in events:
                        engine.observe(event)
                    engine.tick(t1)  # the engine may step while the rest is on its way

        publish(start - BACKFILL_S, start)
        assert alarms.active() == []  # the backfill never looks like a silence
        t = start
        deadline = start + INCIDENT_AFTER_S + 12 * 60
        while t < deadline and not alarms.active(home, kind):
            publish(t, t + 5)
            t += 5
        assert alarms.active(home, kind), f"no {kind} in {home}"
        assert t - start <= INCIDENT_AFTER_S + 12 * 60
        assert not [a for a in alarms.active() if a.kind == AlarmKind.DEVICE_OFFLINE]
    finally:
        platform.close()


def test_the_demo_homes_reach_the_care_engine(tmp_path: Path) -> None:
    settings = Settings.load(None, data_dir=tmp_path / "demo", http={"port": 0})
    runtime = Runtime(settings, simulate=True, sim_interval_s=1.0)
    try:
        runtime.start()
        engine = runtime.apps["care"].service.engine
        deadline = time.monotonic() + 60
        while not set(HOMES) <= set(engine.homes) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert set(HOMES) <= set(engine.homes)
        platform = runtime.platform
        for home in HOMES:
            for role in ("gw", "motion", "door", "bed", "plug"):
                record = platform.registry.get(f"{home}-{role}")
                assert record is not None and record.subject == home
                assert record.latitude is None and record.longitude is None  # no address
            # Stored as the person's data: encrypted in the companion store, not in the twin.
            assert platform.twin.count_readings(f"{home}-motion") == 0
            assert platform.export_subject(home)["records"]
        state = settings.data_dir / "devices" / "care-homes.json"  # where the next run goes on
        deadline = time.monotonic() + 10
        while not state.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert state.exists()
    finally:
        runtime.stop()
