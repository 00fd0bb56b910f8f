"""The engine on a real platform: readings through ingest, the log as the feed, restarts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from msec.apps.care.alarms import SqlAlarms
from msec.apps.care.model import AlarmKind, CareSettings
from msec.apps.care.service import SAVE_EVERY_S, SAVE_SHARE, CareService
from msec.ingest import Incoming
from msec.platform import Platform, Settings
from msec.sdk import Device

HOME = "home-0007"
ROLES = {"motion": "motion_sensor", "door": "contact_sensor", "bed": "bed_sensor",
         "plug": "smart_plug", "gw": "care_gateway"}  # fmt: skip


def daytime_settings() -> CareSettings:
    """Short delays, and a night far from now so that the test runs in 'daytime'."""
    zone = ZoneInfo("Europe/Madrid")
    far = datetime.now(zone) + timedelta(hours=12)
    return CareSettings(night_start=far.strftime("%H:%M"),
                        night_end=(far + timedelta(minutes=1)).strftime("%H:%M"),
                        inactivity_s=60.0, offline_s=600.0, away_after_s=30.0)  # fmt: skip


def open_platform(data_dir: Path, *, private: bool, url: str | None = None) -> Platform:
    overrides: dict[str, Any] = {"data_dir": data_dir}
    if private:
        overrides["sensitive"] = {"resources": ["home-*/*/*"]}
    if url:
        overrides["database"] = {"url": url}
    return Platform.open(Settings.load(None, **overrides))


@pytest.fixture(params=["private", "plain"])
def platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    p = open_platform(tmp_path / "data", private=request.param == "private")
    yield p
    p.close()


def devices(platform: Platform) -> dict[str, Device]:
    return {role: platform.add_device(f"{HOME}-{role}", kind, subject=HOME)
            for role, kind in ROLES.items()}  # fmt: skip


def send(platform: Platform, device: Device, readings: list[tuple[str, str, Any]],
         at: float) -> None:  # fmt: skip
    outcome = platform.ingestor.process([Incoming(device.seal(readings, at=at), None, "t")])[0]
    assert outcome.rejected is None, outcome.rejected


def heartbeat(platform: Platform, homes: dict[str, Device], at: float) -> None:
    send(platform, homes["motion"], [("motion", "detected", False)], at)
    send(platform, homes["door"], [("contact", "open", False)], at)
    send(platform, homes["bed"], [("bed", "occupied", False)], at)
    send(platform, homes["plug"], [("plug", "power", 0.5)], at)
    send(platform, homes["gw"], [("gateway", "uptime", 100)], at)


def service(platform: Platform, clock: list[float]) -> CareService:
    alarms = SqlAlarms(platform.engine)
    alarms.create_schema()
    care = CareService(platform, alarms, daytime_settings(), clock=lambda: clock[0],
                       escalate=False)  # fmt: skip
    care.create_schema()
    care.load()
    return care


def test_readings_reach_the_engine_and_raise_an_alarm(platform: Platform) -> None:
    homes = devices(platform)
    now = time.time()
    clock = [now]
    care = service(platform, clock)
    heartbeat(platform, homes, now - 5)
    send(platform, homes["motion"], [("motion", "detected", True)], now - 4)
    assert care.step() == 6
    assert care.alarms.active() == []
    private = platform.twin.count_readings(f"{HOME}-motion") == 0
    assert private == bool(platform.settings.sensitive.resources)
    clock[0] = now + 60  # 64 s after the last motion
    care.step()
    [alarm] = care.alarms.active()
    assert (alarm.home, alarm.kind) == (HOME, AlarmKind.INACTIVITY)
    assert care.step() == 0 and len(care.alarms.active()) == 1


def test_a_restart_replays_from_the_saved_cursor_without_duplicates(platform: Platform) -> None:
    homes = devices(platform)
    now = time.time()
    clock = [now]
    first = service(platform, clock)
    heartbeat(platform, homes, now - 5)
    send(platform, homes["motion"], [("motion", "detected", True)], now - 4)
    first.step()
    first.save()
    # More readings and the alarm after the save, then a crash (no save).
    send(platform, homes["plug"], [("plug", "power", 60.0)], now - 3)
    send(platform, homes["plug"], [("plug", "power", 0.4)], now - 2)
    clock[0] = now + 60
    first.step()
    assert [a.kind for a in first.alarms.active()] == [AlarmKind.INACTIVITY]
    raised = first.alarms.active()[0].id
    # The restarted engine starts from the snapshot and replays the two plug readings.
    second = service(platform, clock)
    assert second.feed.cursor < platform.trust.log.size()
    assert second.step() == 2
    assert [a.id for a in second.alarms.active()] == [raised]
    # Resolved meanwhile, and a third start from the same snapshot: still no second alarm.
    second.alarms.resolve(raised, by="user:op", at=now + 61)
    third = service(platform, clock)
    third.step()
    assert second.alarms.active() == []
    assert len(third.alarms.history(HOME)) == 1


def test_the_runtime_stores_home_readings_as_personal_data(tmp_path: Path) -> None:
    from msec.platform.runtime import with_app_patterns

    settings = with_app_patterns(Settings.load(None, data_dir=tmp_path / "d"))
    for role in ("gw", "motion", "door", "bed", "plug"):
        assert f"*-{role}/*/*" in settings.sensitive.resources
    again = with_app_patterns(settings)
    assert again.sensitive.resources == settings.sensitive.resources  # added once


def test_a_persons_own_escalation_delay_is_used_for_their_alarms(platform: Platform) -> None:
    alarms = SqlAlarms(platform.engine)
    alarms.create_schema()
    now = [1_800_000_000.0]
    service = CareService(platform, alarms, clock=lambda: now[0])
    service.create_schema()
    service.engine.configure("home-0001", escalate_after_s=60)
    service.engine.configure("home-0002", inactivity_s=7200)  # the generic 15 min for her
    for home in ("home-0001", "home-0002", "home-0003"):
        alarms.raise_alarm(home, AlarmKind.INACTIVITY, "e", at=now[0], detail={})
    now[0] += 61
    service.step()
    levels = {a.home: a.level for a in alarms.active()}
    assert levels == {"home-0001": 1, "home-0002": 0, "home-0003": 0}
    now[0] += 900
    service.step()
    levels = {a.home: a.level for a in alarms.active()}
    assert levels == {"home-0001": 2, "home-0002": 1, "home-0003": 1}


def test_a_slow_snapshot_is_saved_less_often(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [time.time()]
    care = service(platform, clock)
    care.save()
    assert care._save_every == SAVE_EVERY_S  # small: the minimum interval
    real = care.engine.snapshot_json

    def slow() -> str:
        time.sleep(0.3)  # what 10,000 homes cost on a slow machine
        return real()

    monkeypatch.setattr(care.engine, "snapshot_json", slow)
    care.save()
    assert care._save_every >= SAVE_SHARE * 0.3 > SAVE_EVERY_S
    assert json.loads(real()) == care.engine.snapshot()
