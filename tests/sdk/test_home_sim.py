"""Pilot 2's home simulator: valid, repeatable readings whose routine never satisfies an alarm
condition, and incidents that satisfy exactly the ones they expect.

The reference checker below is written from the rule text alone (not from the simulator, nor
from the engine): it evaluates the seven conditions after every reading and on every minute.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import time as clock
from collections import defaultdict
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from msec.apps.care.model import (
    DEVICE_ROLES,
    AlarmKind,
    CareSettings,
    Incident,
    split_device,
)
from msec.core.kinds import get_kind
from msec.sdk.sim.home import (
    INCIDENT_NAMES,
    HomeSimulator,
    HomeTrace,
    IncidentSpec,
)

MADRID = ZoneInfo("Europe/Madrid")
S = CareSettings()
DAY = 86400.0


def midnight(year: int, month: int, day: int) -> float:
    return datetime(year, month, day, tzinfo=MADRID).timestamp()


# Monday 3 June 2024, 00:00 in Santander.
MONDAY = midnight(2024, 6, 3)


def local(t: float) -> str:
    return datetime.fromtimestamp(t, MADRID).strftime("%Y-%m-%d %H:%M:%S")


def _time(reading: tuple) -> float:
    return reading[4]


def at(day: float, hhmm: str) -> float:
    """Local ``hhmm`` on the local date of ``day``."""
    hours, minutes = map(int, hhmm.split(":"))
    d = datetime.fromtimestamp(day, MADRID).date()
    return datetime.combine(d, time(hours, minutes), MADRID).timestamp()


# --- the reference checker -----------------------------------------------------------------


@functools.cache
def _local_minute(minute: int) -> tuple[int, int]:
    """(local date ordinal, minutes since local midnight) of a Unix minute."""
    d = datetime.fromtimestamp(minute * 60, MADRID)
    return d.toordinal(), d.hour * 60 + d.minute


@functools.cache
def _local_time(ordinal: int, hours: int, minutes: int) -> float:
    return datetime.combine(date.fromordinal(ordinal), time(hours, minutes), MADRID).timestamp()


class Checker:
    """The alarm conditions of one home, from the rule text (CareSettings defaults).

    State conditions (inactivity, out of bed, appliance on, device offline, low battery)
    are *raised* when they become true; event conditions (night door, no morning activity)
    every time they hold. ``away``: a door opening after the last motion=true, at least
    ``away_after_s`` ago (the return's opening does not end it; the next motion does).
    """

    STATE = (
        AlarmKind.INACTIVITY,
        AlarmKind.OUT_OF_BED,
        AlarmKind.APPLIANCE_ON,
        AlarmKind.DEVICE_OFFLINE,
        AlarmKind.LOW_BATTERY,
    )

    def __init__(self, start: float) -> None:
        self.seen = dict.fromkeys(DEVICE_ROLES, start)
        self.last_motion = -math.inf
        self.door_open = False
        self.door_since_motion: float | None = None  # first opening after the last motion
        self.bed: bool | None = None
        self.bed_emptied = -math.inf
        self.power_since: float | None = None
        self.battery: dict[str, float] = {}
        self.holding = dict.fromkeys(self.STATE, False)
        self.raised: list[tuple[AlarmKind, float]] = []

    def reading(self, role: str, service: str, resource: str, value: object, t: float) -> None:
        self.seen[role] = t
        opened = False
        key = (service, resource)
        if key == ("motion", "detected"):
            if value is True:
                self.last_motion = t
                self.door_since_motion = None
        elif key == ("contact", "open"):
            if value is True and not self.door_open:
                opened = True
                if self.door_since_motion is None:
                    self.door_since_motion = t
            self.door_open = value is True
        elif key == ("bed", "occupied"):
            if value is False and self.bed is not False:
                self.bed_emptied = t
            self.bed = bool(value)
        elif key == ("plug", "power"):
            assert isinstance(value, int | float)
            if value > S.appliance_w:
                if self.power_since is None:
                    self.power_since = t
            else:
                self.power_since = None
        elif key == ("health", "battery"):
            assert isinstance(value, int | float)
            self.battery[role] = value
        self.evaluate(t, door_opened=opened)

    def evaluate(self, t: float, *, door_opened: bool = False, tick: bool = False) -> None:
        ordinal, minute = _local_minute(math.floor(t / 60))
        night = minute >= 23 * 60 or minute < 7 * 60
        motion_online = t - self.seen["motion"] < S.offline_s
        bed_online = t - self.seen["bed"] < S.offline_s
        away = self.door_since_motion is not None and t - self.door_since_motion >= S.away_after_s
        if night:
            night_from = _local_time(ordinal if minute >= 23 * 60 else ordinal - 1, 23, 0)
        state = {
            AlarmKind.INACTIVITY: (
                not night
                and t - self.last_motion >= S.inactivity_s
                and not away
                and self.bed is not True
                and motion_online
            ),
            AlarmKind.OUT_OF_BED: (
                night
                and self.bed is False
                and t - max(self.bed_emptied, night_from) >= S.out_of_bed_s
                and bed_online
            ),
            AlarmKind.APPLIANCE_ON: (
                self.power_since is not None
                and t - self.power_since >= S.appliance_s
                and t - self.seen["plug"] < S.offline_s
            ),
            AlarmKind.DEVICE_OFFLINE: any(t - seen >= S.offline_s for seen in self.seen.values()),
            AlarmKind.LOW_BATTERY: any(v < S.low_battery_pct for v in self.battery.values()),
        }
        for kind, holds in state.items():
            if holds and not self.holding[kind]:
                self.raised.append((kind, t))
            self.holding[kind] = holds
        if door_opened and night and (
            self.bed is False or t - self.bed_emptied <= S.night_door_window_s
        ):
            self.raised.append((AlarmKind.NIGHT_DOOR, t))
        if tick and minute == 10 * 60:
            since = _local_time(ordinal, 7, 0)
            if self.last_motion < since and not away and motion_online:
                self.raised.append((AlarmKind.NO_MORNING_ACTIVITY, t))


def alarms(trace: HomeTrace) -> list[tuple[AlarmKind, float]]:
    """Every alarm the rules raise over ``trace`` (readings in order, plus a minute tick)."""
    checker = Checker(trace.start)
    tick = math.ceil(trace.start / 60) * 60
    for name, service, resource, value, t in trace.readings:
        while tick < t:
            checker.evaluate(tick, tick=True)
            tick += 60
        split = split_device(name)
        assert split is not None and split[0] == trace.home, name
        checker.reading(split[1], service, resource, value, t)
    while tick < trace.end:
        checker.evaluate(tick, tick=True)
        tick += 60
    return checker.raised


def verdict(raised: list[tuple[AlarmKind, float]], incidents: list[Incident]) -> list[str]:
    """What is wrong: an alarm no incident explains, or an incident's alarm not raised in time."""

    def explains(i: Incident, kind: AlarmKind, t: float) -> bool:
        return kind in i.expects and i.start <= t <= i.start + i.detect_within_s

    problems = [
        f"unexpected {kind} at {local(t)}"
        for kind, t in raised
        if not any(explains(i, kind, t) for i in incidents)
    ]
    for i in incidents:
        for kind in i.expects:
            if not any(k == kind and explains(i, k, t) for k, t in raised):
                problems.append(f"{i.name} at {local(i.start)}: {kind} not raised in time")
    return problems


def check(trace: HomeTrace) -> list[str]:
    return [f"{trace.home}: {p}" for p in verdict(alarms(trace), trace.incidents)]


# --- the kinds ---------------------------------------------------------------------------------


def test_care_kinds_are_registered() -> None:
    expected = {
        "care_gateway": ("gateway", "uptime", "int"),
        "motion_sensor": ("motion", "detected", "bool"),
        "contact_sensor": ("contact", "open", "bool"),
        "bed_sensor": ("bed", "occupied", "bool"),
    }
    for name, (service, resource, kind_type) in expected.items():
        kind = get_kind(name)
        assert [(r.service, r.resource, r.type) for r in kind.resources] == [
            (service, resource, kind_type)
        ]
        assert kind.spec("health", "battery") is not None
        assert kind.spec("health", "rssi") is not None
    uptime = get_kind("care_gateway").spec("gateway", "uptime")
    assert uptime is not None and (uptime.minimum, uptime.maximum) == (0, 10**9)
    # The model's roles name registered kinds with the resource that matters.
    for kind, service, resource in DEVICE_ROLES.values():
        assert get_kind(kind).spec(service, resource) is not None


# --- the readings ------------------------------------------------------------------------------


def test_same_seed_same_readings_other_home_other_readings() -> None:
    a = HomeSimulator(7).simulate("home-0001", MONDAY, MONDAY + DAY)
    b = HomeSimulator(7).simulate("home-0001", MONDAY, MONDAY + DAY)
    assert a == b
    other_home = HomeSimulator(7).simulate("home-0002", MONDAY, MONDAY + DAY)
    other_seed = HomeSimulator(8).simulate("home-0001", MONDAY, MONDAY + DAY)
    assert a.readings != other_home.readings
    assert a.readings != other_seed.readings
    assert {r[0] for r in a.readings} == {f"home-0001-{role}" for role in DEVICE_ROLES}


def test_windows_streams_and_single_calls_agree() -> None:
    sim = HomeSimulator(3)
    start, end = MONDAY + 5 * 3600, MONDAY + 2 * DAY + 7 * 3600
    whole = sim.simulate("home-0042", start, end)
    cuts = [start, start + 1234.5, MONDAY + DAY, MONDAY + DAY + 60, end - 3600, end]
    pieces: list = []
    for a, b in itertools.pairwise(cuts):
        pieces += HomeSimulator(3).readings_between("home-0042", a, b)
    assert pieces == whole.readings
    assert list(sim.stream("home-0042", start, end, chunk_s=977.0)) == whole.readings
    assert sim.incidents_between("home-0042", start, end) == whole.incidents
    homes = ["home-0042", "home-0043", "home-0044"]
    merged = list(sim.stream_many(homes, start, end, chunk_s=1800.0))
    assert merged == list(heapq.merge(*(sim.stream(h, start, end) for h in homes), key=_time))


def test_readings_are_sorted_and_inside_their_kinds() -> None:
    sim = HomeSimulator(11)
    devices = {d.name: d for d in sim.devices("home-0007")}
    kinds = sorted(d.kind for d in devices.values())
    assert kinds == sorted(kind for kind, _, _ in DEVICE_ROLES.values())
    trace = sim.simulate("home-0007", MONDAY, MONDAY + 7 * DAY)
    times = [r[4] for r in trace.readings]
    assert times == sorted(times)
    assert all(MONDAY <= t < MONDAY + 7 * DAY for t in times)
    seen = set()
    for name, service, resource, value, _ in trace.readings:
        spec = get_kind(devices[name].kind).spec(service, resource)
        assert spec is not None, (name, service, resource)
        assert spec.check(value) == value
        seen.add((devices[name].kind, service, resource))
        if resource == "rssi":
            assert -85 <= value <= -40
    # Every device reports its role's resource and its health.
    for kind, service, resource in DEVICE_ROLES.values():
        assert {(kind, service, resource), (kind, "health", "battery"),
                (kind, "health", "rssi")} <= seen  # fmt: skip
    assert ("smart_plug", "plug", "switch") in seen


def test_no_device_is_silent_ten_minutes_except_a_silent_sensor() -> None:
    sim = HomeSimulator(5)
    for n in range(30):
        trace = sim.simulate(f"home-{n:04d}", MONDAY, MONDAY + 3 * DAY)
        silences = {
            str(i.detail["device"]): (i.start, i.end)
            for i in trace.incidents
            if i.name == "sensor_silent"
        }
        last: dict[str, float] = {}
        for name, *_, t in trace.readings:
            gap = t - last.get(name, trace.start)
            if gap > 600:
                s, e = silences.get(name, (math.inf, math.inf))
                assert last[name] < s and t >= e, f"{name} silent {gap:.0f} s at {local(t)}"
            last[name] = t
        for name, t in last.items():
            assert trace.end - t < 600, name


def test_batteries_stay_healthy_in_the_routine() -> None:
    sim = HomeSimulator(9)
    for n in range(40):
        trace = sim.simulate(f"home-{n:04d}", MONDAY, MONDAY + 2 * DAY, incidents=False)
        for name, _, resource, value, _ in trace.readings:
            if resource == "battery":
                assert isinstance(value, float)
                if name.endswith(("-gw", "-plug")):
                    assert value == 100.0
                else:
                    assert 35.0 <= value <= 100.0


# --- the routine ------------------------------------------------------------------------------


def _changes(trace: HomeTrace, role: str, resource: str) -> list[tuple[float, object]]:
    """(t, value) of the readings of ``role``'s ``resource`` where the value changed."""
    out: list[tuple[float, object]] = []
    for name, _, res, value, t in trace.readings:
        if name.endswith(f"-{role}") and res == resource and (not out or out[-1][1] != value):
            out.append((t, value))
    return out


def _hm(t: float) -> float:
    d = datetime.fromtimestamp(t, MADRID)
    return d.hour + d.minute / 60 + d.second / 3600


def test_the_routine_keeps_its_hours() -> None:
    sim = HomeSimulator(21)
    wakes, beds, outings, tv_w, naps = [], [], 0, [], 0
    for n in range(60):
        trace = sim.simulate(f"home-{n:04d}", MONDAY, MONDAY + 3 * DAY, incidents=False)
        bed = _changes(trace, "bed", "occupied")
        for (t0, v0), (t1, _) in itertools.pairwise(bed):
            if v0 is False and 0 <= _hm(t0) < 7:  # a bathroom trip
                assert 170 <= t1 - t0 <= 910
            if v0 is True and 12 <= _hm(t0) < 18:  # a nap
                naps += 1
                assert t1 - t0 <= 90 * 60 + 1
        wakes += [_hm(t) for t, v in bed if v is False and 6.5 < _hm(t) < 12]
        beds += [_hm(t) for t, v in bed if v is True and _hm(t) >= 21]
        door = [t for t, v in _changes(trace, "door", "open") if v is True]
        assert all(10 <= _hm(t) <= 20.5 for t in door), [local(t) for t in door]
        outings += len(door) // 2
        power = _changes(trace, "plug", "power")
        for (t0, w0), (t1, _) in itertools.pairwise(power):
            assert isinstance(w0, float)
            if w0 > 30:
                assert t1 - t0 < 3 * 3600
                if w0 < 200:
                    tv_w.append(w0)
    assert min(wakes) >= 7.0 and max(wakes) <= 8.5
    assert min(beds) >= 22.0 and max(beds) <= 23 + 10 / 60
    assert min(wakes) < 7.3 and max(wakes) > 8.2  # the whole window is used
    assert outings > 60 and naps > 20
    assert min(tv_w) >= 50 and max(tv_w) <= 140


def test_the_house_is_consistent() -> None:
    """No door opening from bed, no appliance in use in bed (bar a heater left on)."""
    sim = HomeSimulator(17, incident_rate=0.8)
    for n in range(80):
        trace = sim.simulate(f"home-{n:04d}", MONDAY, MONDAY + 2 * DAY)
        heater = [(i.start, i.end) for i in trace.incidents if i.name == "appliance_left_on"]
        in_bed = None
        for name, _, resource, value, t in trace.readings:
            if resource == "occupied":
                in_bed = value
            elif resource == "open" and value is True:
                assert in_bed is False, f"{name} opened from bed at {local(t)}"
            elif resource == "power" and isinstance(value, float) and value > 30 and in_bed:
                assert any(a <= t <= b for a, b in heater), f"{name} on in bed at {local(t)}"


def test_no_alarm_without_incidents() -> None:
    sim = HomeSimulator(13)
    problems = []
    for n in range(60):
        trace = sim.simulate(f"home-{n:04d}", MONDAY, MONDAY + 3 * DAY, incidents=False)
        assert trace.incidents == []
        problems += check(trace)
    assert problems == []


# --- incidents ------------------------------------------------------------------------------


@pytest.mark.slow
def test_homes_with_drawn_incidents_raise_exactly_what_they_expect() -> None:
    """The main property: 200 homes x 3 days, about 30 % of the home-days with an incident."""
    sim = HomeSimulator(2024)
    problems: list[str] = []
    names: dict[str, int] = defaultdict(int)
    for n in range(200):
        trace = sim.simulate(f"home-{n:04d}", MONDAY, MONDAY + 3 * DAY)
        for i in trace.incidents:
            names[i.name] += 1
        problems += check(trace)
    assert problems == []
    assert 120 <= sum(names.values()) <= 240
    assert set(names) == set(INCIDENT_NAMES)


WINDOW_EDGES = {
    "fall": ("10:00", "18:00"),
    "night_wandering": ("01:00", "04:00"),
    "not_back_to_bed": ("01:00", "04:00"),
    "appliance_left_on": ("10:00", "14:00"),
    "no_morning_activity": ("06:00", "09:59"),
    "sensor_silent": ("10:30", "17:30"),
    "low_battery": ("09:00", "20:00"),
}


@pytest.mark.parametrize("name", INCIDENT_NAMES)
def test_forced_incidents_raise_exactly_what_they_expect(name: str) -> None:
    sim = HomeSimulator(99)
    roles: list[str | None] = [None]
    if name == "sensor_silent":
        roles = ["motion", "door", "bed", "plug"]
    elif name == "low_battery":
        roles = ["motion", "door", "bed"]
    lo, hi = (at(MONDAY + DAY, hhmm) for hhmm in WINDOW_EDGES[name])
    problems: list[str] = []
    for n in range(24):
        role = roles[n % len(roles)]
        # The window's edges, then times across it.
        start = (lo, hi)[n] if n < 2 else lo + (hi - lo) * ((n * 0.618) % 1)
        spec = IncidentSpec(name, start, role)
        trace = sim.simulate(f"home-{n:04d}", MONDAY, MONDAY + 3 * DAY, incidents=[spec])
        assert [i.name for i in trace.incidents] == [name]
        incident = trace.incidents[0]
        if name != "no_morning_activity":
            assert incident.start == start
        if role is not None:
            assert incident.detail["role"] == role
        problems += check(trace)
    assert problems == []


def test_incidents_follow_their_script() -> None:
    sim = HomeSimulator(4)
    day = MONDAY + DAY

    def trace_of(spec: IncidentSpec) -> tuple[HomeTrace, Incident]:
        trace = sim.simulate("home-0100", MONDAY, MONDAY + 3 * DAY, incidents=[spec])
        return trace, trace.incidents[0]

    trace, fall = trace_of(IncidentSpec("fall", at(day, "15:30")))
    motion = [t for t, v in _changes(trace, "motion", "detected") if v is True]
    on_floor = [t for t in motion if fall.start < t < fall.end]
    assert on_floor == []
    assert fall.start + fall.detect_within_s < fall.end < at(day, "23:00")
    assert fall.expects == {AlarmKind.INACTIVITY}

    trace, wander = trace_of(IncidentSpec("night_wandering", at(day, "02:10")))
    opened = [t for t, v in _changes(trace, "door", "open") if v is True and _hm(t) < 7]
    assert len(opened) == 2 and wander.start < opened[0] <= wander.start + 300
    assert wander.end - wander.start < 25 * 60

    trace, silent = trace_of(IncidentSpec("sensor_silent", at(day, "11:00"), "bed"))
    quiet = [r for r in trace.readings
             if r[0].endswith("-bed") and silent.start <= r[4] < silent.end]  # fmt: skip
    assert quiet == [] and 2 * 3600 <= silent.end - silent.start <= 3 * 3600

    trace, low = trace_of(IncidentSpec("low_battery", at(day, "12:00"), "door"))
    levels = [(t, v) for name, _, res, v, t in trace.readings
              if name.endswith("-door") and res == "battery"]  # fmt: skip
    assert all(v < 15 for t, v in levels if low.start <= t < low.end)
    assert all(v > 35 for t, v in levels if not low.start <= t < low.end)


def test_incidents_are_drawn_per_home_day_and_can_be_switched_off() -> None:
    sim = HomeSimulator(1, incident_rate=1.0)
    trace = sim.simulate("home-0001", MONDAY, MONDAY + 5 * DAY)
    assert len(trace.incidents) == 5
    assert HomeSimulator(1, incident_rate=0.0).simulate(
        "home-0001", MONDAY, MONDAY + 5 * DAY
    ).incidents == []
    plain = sim.simulate("home-0001", MONDAY, MONDAY + DAY, incidents=False)
    assert plain.incidents == [] and plain.readings


def test_clock_change_days() -> None:
    sim = HomeSimulator(31, incident_rate=0.6)
    problems = []
    for start in (midnight(2024, 3, 30), midnight(2024, 10, 26)):
        for n in range(25):
            problems += check(sim.simulate(f"home-{n:04d}", start, start + 3 * DAY))
    assert problems == []


def test_specs_are_validated() -> None:
    sim = HomeSimulator(1)
    day = MONDAY + DAY
    with pytest.raises(ValueError, match="unknown incident"):
        sim.simulate("h", MONDAY, day, incidents=[IncidentSpec("flood", day)])
    with pytest.raises(ValueError, match="must start between"):
        sim.simulate("h", MONDAY, day, incidents=[IncidentSpec("fall", at(day, "21:00"))])
    with pytest.raises(ValueError, match="cannot take role"):
        sim.simulate("h", MONDAY, day,
                     incidents=[IncidentSpec("low_battery", at(day, "12:00"), "gw")])  # fmt: skip
    with pytest.raises(ValueError, match="at most one per day"):
        sim.simulate("h", MONDAY, day, incidents=[
            IncidentSpec("fall", at(day, "12:00")),
            IncidentSpec("low_battery", at(day, "13:00")),
        ])  # fmt: skip
    with pytest.raises(ValueError, match="incident_rate"):
        HomeSimulator(1, incident_rate=1.5)


def test_checker_sees_what_it_should() -> None:
    """The checker itself: a stream with alarms in it raises them."""
    trace = HomeSimulator(1).simulate("home-0001", MONDAY, MONDAY + DAY, incidents=False)
    noon = at(MONDAY, "12:00")
    # No motion and no door after noon (as if the person fell): inactivity 3 h after the
    # last motion, or once out of a nap.
    cut = [r for r in trace.readings
           if not (r[4] > noon and r[2] in ("detected", "open") and r[3] is True)]  # fmt: skip
    last = max(r[4] for r in cut if r[2] == "detected" and r[3] is True)
    raised = alarms(HomeTrace(trace.home, trace.start, trace.end, cut, []))
    assert {k for k, _ in raised} == {AlarmKind.INACTIVITY}  # again after a nap, if any
    assert last + S.inactivity_s <= raised[0][1] < at(MONDAY, "23:00")
    # The door sensor gone: a device-offline alarm 30 min after the start.
    gone = [r for r in trace.readings if not r[0].endswith("-door")]
    raised = alarms(HomeTrace(trace.home, trace.start, trace.end, gone, []))
    assert raised == [(AlarmKind.DEVICE_OFFLINE, trace.start + S.offline_s)]
    # A door opened at 02:00 with the bed empty since 01:55.
    night = [
        ("home-0001-bed", "bed", "occupied", False, at(MONDAY, "01:55")),
        ("home-0001-door", "contact", "open", True, at(MONDAY, "02:00")),
        ("home-0001-bed", "bed", "occupied", True, at(MONDAY, "02:10")),
    ]
    merged = sorted(trace.readings + night, key=lambda r: r[4])
    raised = alarms(HomeTrace(trace.home, trace.start, trace.end, merged, []))
    assert (AlarmKind.NIGHT_DOOR, at(MONDAY, "02:00")) in raised


# --- speed (reported, not asserted) ---------------------------------------------------------


def test_generation_speed_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    sim = HomeSimulator(77)
    homes = 300
    began = clock.perf_counter()
    readings = sum(len(sim.simulate(f"home-{n:05d}", MONDAY, MONDAY + DAY).readings)
                   for n in range(homes))  # fmt: skip
    took = clock.perf_counter() - began
    with capsys.disabled():
        print(f"\nhome simulator: {homes / took:.0f} home-days/s, "
              f"{readings / took / 1e6:.2f} M readings/s, "
              f"10,000 home-days in {10000 * took / homes:.1f} s")  # fmt: skip
    assert readings > homes * 3000
