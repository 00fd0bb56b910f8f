"""Pilot 1's park simulator: seven devices whose readings are valid, realistic and repeatable."""

from __future__ import annotations

import itertools
import re
import statistics
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from msec.core.kinds import UnknownKind, get_kind
from msec.sdk.sim import PARK_DEVICES, WEATHERS, ParkSimulator, SimDevice, Weather

MADRID = ZoneInfo("Europe/Madrid")
# Monday 3 June 2024, 00:00 in Santander.
MONDAY = datetime(2024, 6, 3, tzinfo=MADRID).timestamp()
WEEK = 7 * 86400

ENVIRONMENT = [d for d in PARK_DEVICES if d.kind == "environment_station"]
COUNTERS = [d for d in PARK_DEVICES if d.kind == "crowd_counter"]


def ticks(start: float, seconds: float, step: float) -> Iterator[float]:
    t = start
    while t < start + seconds:
        yield t
        t += step


def series(
    sim: ParkSimulator, device: SimDevice, resource: str, times: Iterator[float]
) -> list[tuple[float, float]]:
    """``(t, value)`` of one resource of ``device`` over ``times``."""
    out = []
    for t in times:
        values = {r: v for _, r, v in sim.sample(device, t)}
        out.append((t, values[resource]))
    return out


def local_hour(t: float) -> int:
    return datetime.fromtimestamp(t, MADRID).hour


def test_seven_devices_inside_las_llamas_park() -> None:
    assert len(PARK_DEVICES) == 7
    assert len({d.name for d in PARK_DEVICES}) == 7
    assert ENVIRONMENT and COUNTERS
    for device in PARK_DEVICES:
        assert re.match(r"^llamas-\d\d$", device.name)
        get_kind(device.kind)  # registered
        # Between the Palacio de Deportes and Puente de Arenas.
        assert 43.472 < device.latitude < 43.477, device.name
        assert -3.807 < device.longitude < -3.795, device.name
        assert device.description


@pytest.mark.parametrize(
    ("weather", "start"),
    [
        (WEATHERS["typical"], MONDAY),
        (WEATHERS["typical"], datetime(2024, 1, 8, tzinfo=MADRID).timestamp()),
        (WEATHERS["heatwave"], MONDAY + 60 * 86400),
        (WEATHERS["rainy"], MONDAY + 150 * 86400),
        (WEATHERS["cold_snap"], datetime(2024, 2, 5, tzinfo=MADRID).timestamp()),
    ],
    ids=["june", "january", "heatwave", "rainy", "cold_snap"],
)
def test_a_week_of_readings_passes_every_check(weather: Weather, start: float) -> None:
    sim = ParkSimulator(seed=7, weather=weather)
    step = 300 if weather.name == "typical" else 900
    for device in PARK_DEVICES:
        kind = get_kind(device.kind)
        expected = {s.path for s in kind.all_resources()}
        for t in ticks(start, WEEK, step):
            readings = sim.sample(device, t)
            assert {f"{s}/{r}" for s, r, _ in readings} == expected
            for service, resource, value in readings:
                spec = kind.spec(service, resource)
                assert spec is not None
                assert spec.check(value) == value
                assert type(value) is (int if spec.type == "int" else float)


def test_nights_are_quieter_than_days() -> None:
    sim = ParkSimulator(seed=3)
    for device in ENVIRONMENT:
        noise = series(sim, device, "noise", ticks(MONDAY, WEEK, 300))
        night = [v for t, v in noise if local_hour(t) in (1, 2, 3, 4)]
        day = [v for t, v in noise if 11 <= local_hour(t) < 20]
        assert statistics.mean(night) + 6 < statistics.mean(day), device.name
        if device.area == "lake":  # away from the road, nights are park-quiet
            assert statistics.median(v for t, v in noise if local_hour(t) in (2, 3, 4)) < 42


def test_afternoons_are_busier_than_four_in_the_morning() -> None:
    sim = ParkSimulator(seed=3)
    for device in COUNTERS:
        counts = series(sim, device, "count", ticks(MONDAY, WEEK, 300))
        afternoon = [v for t, v in counts if 17 <= local_hour(t) < 20]
        four_am = [v for t, v in counts if local_hour(t) == 4]
        assert statistics.mean(four_am) < 1, device.name
        assert statistics.mean(afternoon) > 10 * (statistics.mean(four_am) + 1), device.name


def test_weekend_mornings_are_busier_than_weekday_mornings() -> None:
    sim = ParkSimulator(seed=3)
    playground = next(d for d in COUNTERS if d.area == "palacio")
    counts = series(sim, playground, "count", ticks(MONDAY, WEEK, 600))
    mornings = [(t, v) for t, v in counts if 11 <= local_hour(t) < 13]
    weekday = [v for t, v in mornings if datetime.fromtimestamp(t, MADRID).weekday() < 5]
    weekend = [v for t, v in mornings if datetime.fromtimestamp(t, MADRID).weekday() >= 5]
    assert statistics.mean(weekend) > 1.5 * statistics.mean(weekday)


def test_same_seed_same_values_different_seed_different_values() -> None:
    times = list(ticks(MONDAY, 86400, 1800))

    def run(seed: int) -> list[list[tuple[str, str, float | int]]]:
        sim = ParkSimulator(seed=seed)
        return [sim.sample(d, t) for d in PARK_DEVICES for t in times]

    first = run(42)
    assert run(42) == first
    other = run(43)
    assert other != first
    # Not just one resource: the sensor noise differs almost everywhere.
    temperatures = [
        (a[0][2], b[0][2]) for a, b in zip(first, other, strict=True) if a[0][1] == "temperature"
    ]
    assert sum(x != y for x, y in temperatures) > 0.9 * len(temperatures)


def test_samples_do_not_depend_on_the_order_they_are_taken_in() -> None:
    times = list(ticks(MONDAY, 86400, 3600))
    forward = ParkSimulator(seed=5)
    backward = ParkSimulator(seed=5)
    ahead = {(d.name, t): forward.sample(d, t) for t in times for d in PARK_DEVICES}
    behind = {(d.name, t): backward.sample(d, t) for t in reversed(times) for d in PARK_DEVICES}
    assert ahead == behind


@pytest.mark.parametrize(
    "day",
    [datetime(2024, 6, 3, tzinfo=MADRID), datetime(2024, 10, 27, tzinfo=MADRID)],
    ids=["june", "dst_ends"],
)
def test_temperature_moves_smoothly(day: datetime) -> None:
    sim = ParkSimulator(seed=11)
    for device in ENVIRONMENT:
        temperature = [
            v for _, v in series(sim, device, "temperature", ticks(day.timestamp(), 86400, 60))
        ]
        steps = [abs(b - a) for a, b in itertools.pairwise(temperature)]
        assert max(steps) < 1.0, device.name
        assert statistics.mean(steps) < 0.05, device.name


def test_humidity_falls_as_temperature_rises() -> None:
    sim = ParkSimulator(seed=2)
    device = ENVIRONMENT[0]
    rows = [{r: v for _, r, v in sim.sample(device, t)} for t in ticks(MONDAY, WEEK, 900)]
    correlation = statistics.correlation(
        [r["temperature"] for r in rows], [r["humidity"] for r in rows]
    )
    assert correlation < -0.5


def test_values_look_like_santander_outdoors() -> None:
    sim = ParkSimulator(seed=9)
    for device in ENVIRONMENT:
        rows = [{r: v for _, r, v in sim.sample(device, t)} for t in ticks(MONDAY, WEEK, 900)]
        assert 14 < statistics.mean(r["temperature"] for r in rows) < 24  # June
        assert 60 < statistics.mean(r["humidity"] for r in rows) < 90
        assert 400 < statistics.median(r["co2"] for r in rows) < 470
        assert 30 < statistics.median(r["voc"] for r in rows) < 400


def test_the_road_side_is_louder_than_the_lake() -> None:
    sim = ParkSimulator(seed=4)
    road = next(d for d in ENVIRONMENT if d.area == "los_castros")
    lake = next(d for d in ENVIRONMENT if d.area == "lake")
    loud = statistics.median(v for _, v in series(sim, road, "noise", ticks(MONDAY, WEEK, 900)))
    calm = statistics.median(v for _, v in series(sim, lake, "noise", ticks(MONDAY, WEEK, 900)))
    assert loud > calm + 5


def test_weather_scenarios_change_the_park() -> None:
    typical = ParkSimulator(seed=1)
    heatwave = ParkSimulator(seed=1, weather=WEATHERS["heatwave"])
    rainy = ParkSimulator(seed=1, weather=WEATHERS["rainy"])
    station, counter = ENVIRONMENT[0], COUNTERS[0]
    times = list(ticks(MONDAY, WEEK, 1800))

    def mean(sim: ParkSimulator, device: SimDevice, resource: str) -> float:
        return statistics.mean(v for _, v in series(sim, device, resource, iter(times)))

    assert mean(heatwave, station, "temperature") > mean(typical, station, "temperature") + 5
    assert mean(heatwave, station, "humidity") < mean(typical, station, "humidity") - 15
    assert mean(rainy, station, "humidity") > mean(typical, station, "humidity")
    assert mean(rainy, counter, "count") < 0.6 * mean(typical, counter, "count")


def test_battery_drains_and_rssi_jitters() -> None:
    sim = ParkSimulator(seed=8)
    for device in PARK_DEVICES:
        battery = [v for _, v in series(sim, device, "battery", ticks(MONDAY, 3 * WEEK, 3600))]
        rssi = [v for _, v in series(sim, device, "rssi", ticks(MONDAY, 86400, 300))]
        assert max(battery) - min(battery) > 5, device.name
        assert len(set(rssi)) > 3, device.name
    # A portable counter drains between swaps: over 12 hours it only loses charge, or is swapped.
    counter = COUNTERS[0]
    battery = [v for _, v in series(sim, counter, "battery", ticks(MONDAY, 3 * WEEK, 3600))]
    drops = [b - a for a, b in itertools.pairwise(battery)]
    assert all(d < 1.5 or d > 40 for d in drops)
    assert sum(d < 0 for d in drops) > 0.8 * len(drops)


def test_refuses_what_it_cannot_simulate() -> None:
    sim = ParkSimulator(seed=0)
    with pytest.raises(ValueError, match="area"):
        sim.sample(SimDevice("x-1", "environment_station", "beach", 43.47, -3.80, ""), MONDAY)
    with pytest.raises(UnknownKind):
        sim.sample(SimDevice("x-2", "no_such_kind", "lake", 43.47, -3.80, ""), MONDAY)
