"""The engine against the home simulator's ground truth: every scripted incident raises its
alarm in time, and the daily routine raises none."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from msec.apps.care.engine import CareEngine
from msec.apps.care.model import AlarmKind, SensorEvent, split_device
from msec.apps.care.truth import score
from msec.sdk.sim.home import INCIDENT_NAMES, HomeSimulator, IncidentSpec


class Sink:
    """The alarm store's rules, with operators resolving each alarm within the hour (so a
    later incident of the same kind in the same home can raise it again)."""

    def __init__(self) -> None:
        self.episodes: set[tuple[str, AlarmKind, str]] = set()
        self.raised: list[tuple[str, AlarmKind, float]] = []

    def raise_alarm(self, home: str, kind: AlarmKind, episode: str, *, at: float,
                    detail: dict[str, Any], trigger: str | None = None) -> bool:  # fmt: skip
        recent = [a for h, k, a in self.raised if (h, k) == (home, kind) and at - a < 3600]
        if (home, kind, episode) in self.episodes or recent:
            return False
        self.episodes.add((home, kind, episode))
        self.raised.append((home, kind, at))
        return True


def run(sim: HomeSimulator, homes: list[str], start: float, end: float,
        incidents: Any = True) -> tuple[Sink, list[Any]]:  # fmt: skip
    sink = Sink()
    engine = CareEngine(sink)
    seq: dict[str, int] = {}
    for device, service, resource, value, t in sim.stream_many(homes, start, end,
                                                               incidents=incidents):
        home, role = split_device(device)  # type: ignore[misc]
        seq[device] = seq.get(device, 0) + 1
        engine.observe(SensorEvent(home, role, device, service, resource, value, t, seq[device]))
    engine.tick(end)
    truth = [i for h in homes for i in sim.incidents_between(h, start, end, incidents=incidents)]
    return sink, truth


def day(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("Europe/Madrid")).timestamp()


@pytest.mark.slow
def test_three_days_of_200_homes_nothing_missed_nothing_false() -> None:
    sim = HomeSimulator(seed=7, incident_rate=0.5)
    homes = [f"home-{n:04d}" for n in range(200)]
    sink, truth = run(sim, homes, day("2026-03-02T00:00"), day("2026-03-05T00:00"))
    result = score(truth, sink.raised)
    assert result.incidents > 200
    assert result.missed == []
    assert result.false_positives == []


@pytest.mark.parametrize("name", INCIDENT_NAMES)
def test_each_incident_raises_its_alarm(name: str) -> None:
    sim = HomeSimulator(seed=11)
    windows = {"fall": "12:00", "night_wandering": "02:30", "not_back_to_bed": "02:30",
               "appliance_left_on": "11:00", "no_morning_activity": "07:00",
               "sensor_silent": "12:00", "low_battery": "12:00"}  # fmt: skip
    at = day(f"2026-03-03T{windows[name]}")
    sink, truth = run(sim, ["home-0001"], day("2026-03-02T00:00"), day("2026-03-04T00:00"),
                      incidents=[IncidentSpec(name, at)])  # fmt: skip
    assert [i.name for i in truth] == [name]
    result = score(truth, sink.raised)
    assert result.missed == [] and result.false_positives == [], (name, sink.raised)
