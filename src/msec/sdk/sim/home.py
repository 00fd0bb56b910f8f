"""Pilot 2 (Connected Care): homes of elderly people living alone, with scripted incidents.

Each home has the five devices of :data:`msec.core.care.DEVICE_ROLES`, named
``<home>-<role>``: the gateway ``gw`` (``care_gateway``), ``motion`` (``motion_sensor``, in the
living area), the front door's ``door`` (``contact_sensor``), ``bed`` (``bed_sensor``) and
``plug`` (``smart_plug``, on the power strip of the TV corner: TV, kettle, a small heater). A
reading is ``(device, service, resource, value, t)`` with ``t`` in Unix seconds; every value
passes its kind's checks.

Everything is a pure function of ``(seed, home, local date)``: a day's plan (what the person
does and when, and the incident of the day) is drawn from a ``random.Random`` seeded with a
BLAKE2b hash of those three; heartbeats fall in global slots jittered from per-home tables. So
:meth:`HomeSimulator.readings_between` returns the same readings for any window however time is
cut, in any order, on any machine. Local time is Europe/Madrid by default; days are local
calendar days (23 or 25 hours at the clock changes). Every day starts and ends with the person
asleep in bed, the door closed, the plug off and no motion, so days join seamlessly.

The routine (every time and duration below is drawn per home and per day, uniformly in the
range given) and why none of the alarm conditions (CareSettings defaults, night 23:00-07:00)
holds during it:

* **Night.** Asleep since the evening before; 0, 1 or 2 bathroom trips (p 0.35/0.45/0.2)
  starting 00:15-06:15, 3-15 min each, 20 min apart at least: the bed empties, motion, back to
  bed, never the door. OUT_OF_BED needs 30 min out of bed, NIGHT_DOOR the door.
* **Getting up** 07:02-08:30. The PIR sees the person sit up 5-40 s *before* the bed reports
  empty, then 20-40 min of bustle (bathroom, dressing, breakfast: motion every 30 s-5 min).
  When the bed empties the last motion is seconds old, so INACTIVITY cannot hold (its 3 h
  count from the last motion, which at that moment was before the night); there is motion
  between 07:00 and 10:00, so no NO_MORNING_ACTIVITY; the bed never empties at night.
* **At home, awake**: motion every 30 s-6 min (65 %) or 6-40 min (35 %); watching TV every
  8-40 min; with a visitor every 30 s-4 min. With the last motion before lying down or going
  out, no two motions are more than 43 min apart while the person is home and out of bed: far
  below INACTIVITY's 3 h. Motions are 30 s apart at least; ``detected`` is true at each and
  back to false 60 s after the last (the PIR's hold); heartbeats repeat the current value.
* **Kettle** at breakfast (p 0.6, 2-4 min at 1800-2200 W, 10-40 min after getting up) and in
  the afternoon (p 0.35, 16:00-19:00); **lunch** at home, starting 13:30-14:30, 45-75 min.
* **Nap** (p 0.45) after lunch, 20-90 min, over by 17:30: bed occupied, no motion. That is
  "in bed", not inactivity (and the last motion is 10-90 s before lying down, so even without
  the bed it would stay under 3 h).
* **Outings** 0, 1 or 2 (p 0.3/0.5/0.2), 30 min-4 h, inside 10:00-20:30 (the morning one
  from 45 min after getting up to 13:30, the afternoon one 15:00-20:30; never over lunch or a
  nap): the last motion is 70-150 s before the door opens, so the PIR's hold is over and no
  heartbeat repeats ``detected`` after it; the door closes 4-20 s later; no motion while out;
  on return the door opens and motion follows 3-30 s later. While out the person is *away*
  (the door opened after the last motion, no motion for 10 min since): no INACTIVITY, however
  long the outing. The door never opens at night.
* **Visit** (p 0.3), 30 min-2 h inside 10:00-20:30: the door opens on arrival and departure,
  frequent motion in between.
* **TV**: an afternoon session (p 0.5, 30-150 min within 15:00-20:00) and an evening one
  (p 0.85, 45-175 min within 19:30 and 5 min before bed) at the home's 60-120 W (+-10 % per
  session, +-3 % per report); a **heater** for 15-45 min at 1000-2000 W (p 0.25, 10:00-21:00).
  Plug uses never overlap, are 5 min apart at least and last under 3 h: power > 30 W never
  lasts 4 h, so no APPLIANCE_ON. The plug is used only while the person is at home and awake.
* **Bedtime** 22:00-23:10: the TV is off, the last motion 10-90 s before the bed is
  occupied. From 23:00 the bed is empty for 10 min at most: no OUT_OF_BED.
* **Heartbeats.** Each sensor reports its state, ``health/battery`` and ``health/rssi`` every
  7 min, jittered by up to 90 s (gaps of 5.5-8.5 min); the plug its ``switch``, ``power`` and
  health, and every third time its ``voltage`` and ``frequency``; the gateway its ``uptime``
  every 5 min (jitter 4 s; it restarts every 20-60 days) and its health every 15 min. Changes
  are reported as they happen too (the plug: ``switch`` and ``power``). No device is silent
  10 min: no DEVICE_OFFLINE. Sensor batteries drain linearly from 100 % to a floor of 36-45 %
  over 300-500 days and are then replaced (one level per day): no LOW_BATTERY. The gateway and
  the plug are mains-powered and report 100. RSSI is -85..-40 dBm.

Incidents: with ``incidents=True`` a home-day has one with probability ``incident_rate``
(default 0.3), its kind drawn uniformly; :class:`IncidentSpec` forces one. Each is an
:class:`~msec.core.care.Incident` with the kinds it must raise (``expects``) within
``detect_within_s`` of ``start``: the rule's delay plus two heartbeats (1200 s). The routine
is planned around it so that nothing else fires:

* ``fall`` (10:00-18:00): the person is home, awake, alone, and no outing, visit, nap, TV or
  plug use is within 20 min before. The last motion is at ``start``; then no motion, bed empty,
  door closed, plug off until someone comes (``end``: door, motion) 10-30 min after the
  detection deadline and stays 20-45 min; bed by 23:00 at the latest. (Not "the rest of the
  day on the floor": the bed empty at 23:30 would raise OUT_OF_BED too.) INACTIVITY at
  start + 3 h.
* ``night_wandering`` (01:00-04:00): up (motion), the door opens 1-5 min later, out 5-15 min,
  back (door, motion), in bed within 25 min of getting up. NIGHT_DOOR at each opening; no
  OUT_OF_BED (under 30 min). No bathroom trip within 45 min.
* ``not_back_to_bed`` (01:00-04:00): up 60-120 min, motion, no door, then back to bed (by
  06:00). OUT_OF_BED at start + 30 min. No bathroom trip within 45 min.
* ``appliance_left_on`` (10:00-14:00, the person home when switching it on): a 1000-2000 W
  heater left on 5-7 h, no other plug use meanwhile. APPLIANCE_ON at start + 4 h.
* ``no_morning_activity``: in bed, no motion, until 11:00-12:00; ``start`` is 07:00. The
  day's routine begins when the person gets up. NO_MORNING_ACTIVITY at 10:00; the bed is
  occupied, so no INACTIVITY.
* ``sensor_silent`` (10:30-17:30): the motion, door, bed or plug device sends nothing for
  2-3 h, then resumes with a full report. From 15 min before to 15 min after, the person is
  home, awake, out of bed, and neither the door nor the plug is used: the state last reported
  stays true (and a silent motion sensor resumes on a motion, at the resume time). Plus
  DEVICE_OFFLINE 30 min after the last report.
* ``low_battery`` (09:00-20:00): the motion, door or bed sensor's battery drops to 8-14 % and
  stays there until the day ends (replaced overnight). LOW_BATTERY at its next heartbeat.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from operator import itemgetter
from typing import Final
from zoneinfo import ZoneInfo

from msec.core.care import (
    DEVICE_ROLES,
    HEARTBEAT_S,
    AlarmKind,
    CareSettings,
    Incident,
    device_name,
)
from msec.sdk.sim.base import SimDevice

__all__ = [
    "INCIDENT_NAMES",
    "HomeSimulator",
    "HomeTrace",
    "IncidentSpec",
    "Reading",
]

#: ``(device name, service, resource, value, t)``.
Reading = tuple[str, str, str, bool | int | float, float]

#: The incidents the simulator can script.
INCIDENT_NAMES: Final = (
    "fall",
    "night_wandering",
    "not_back_to_bed",
    "appliance_left_on",
    "no_morning_activity",
    "sensor_silent",
    "low_battery",
)

_MIN = 60.0
_HOUR = 3600.0
_DAY = 86400.0
_ROLES: Final = ("gw", "motion", "door", "bed", "plug")
_BATTERY_ROLES: Final = ("motion", "door", "bed")
_SILENT_ROLES: Final = ("motion", "door", "bed", "plug")
#: Local hours within which a forced incident may start (no_morning_activity: any time
#: before 10:00 of the day, its start is 07:00 whatever is given).
_WINDOWS: Final[dict[str, tuple[float, float]]] = {
    "fall": (10.0, 18.0),
    "night_wandering": (1.0, 4.0),
    "not_back_to_bed": (1.0, 4.0),
    "appliance_left_on": (10.0, 14.0),
    "no_morning_activity": (0.0, 10.0),
    "sensor_silent": (10.5, 17.5),
    "low_battery": (9.0, 20.0),
}
_MARGIN = 2 * HEARTBEAT_S
_SETTINGS = CareSettings()

# Heartbeat slots: a sensor reports every 420 s +- 45 s (gaps 330..510 s, under 9 min).
_SLOT = 420.0
_JITTER = 90.0
_GW_SLOT = 300.0
_GW_JITTER = 4.0
_PIR_HOLD = 60.0
# Table sizes of the per-home heartbeat jitter and noise (coprime: the pattern repeats after
# 37 * 31 slots, over 5 days).
_JIT_N = 37
_NOISE_N = 31
_INF = math.inf
_MIN_MOTION_GAP = 30.0

_T = itemgetter(4)

# Modes of the person: the motionless ones, and the gaps between motions in the others.
_SLEEP, _NAP, _OUT, _FALLEN = "sleep", "nap", "out", "fallen"
_ACTIVE, _TV, _VISIT, _UP = "active", "tv", "visit", "up"
_IN_BED = frozenset((_SLEEP, _NAP))
_MOTIONLESS = frozenset((_SLEEP, _NAP, _OUT, _FALLEN))


@dataclass(frozen=True, slots=True)
class IncidentSpec:
    """Force an incident of kind ``name`` (one of :data:`INCIDENT_NAMES`) at Unix time ``start``.

    ``start`` must fall in the incident's local window (fall 10:00-18:00, night_wandering and
    not_back_to_bed 01:00-04:00, appliance_left_on 10:00-14:00, sensor_silent 10:30-17:30,
    low_battery 09:00-20:00; no_morning_activity: only the local date counts, before 10:00).
    ``role`` picks the device of ``sensor_silent`` (motion, door, bed, plug) or
    ``low_battery`` (motion, door, bed); drawn when ``None``. At most one per local day.
    """

    name: str
    start: float
    role: str | None = None


@dataclass(frozen=True, slots=True)
class HomeTrace:
    """What :meth:`HomeSimulator.simulate` returns: the readings of ``home`` in
    ``[start, end)`` sorted by time, and the incidents that start in that window."""

    home: str
    start: float
    end: float
    readings: list[Reading]
    incidents: list[Incident]


@dataclass(frozen=True, slots=True)
class _Home:
    """What stays the same for a home from day to day. Heartbeat slot ``k`` of device ``i``
    is jittered by ``jitter[i][k % _JIT_N]`` and reports RSSI ``rssi[i][k % _NOISE_N]``: tables
    drawn once, so a heartbeat costs no hashing (the pattern repeats every ~5 days)."""

    name: str
    devices: tuple[str, ...]  # per role of _ROLES
    offsets: tuple[float, ...]  # heartbeat slot offsets (s)
    jitter: tuple[tuple[float, ...], ...]
    rssi: tuple[tuple[float, ...], ...]
    battery: tuple[tuple[float, float, float] | None, ...]  # (life s, phase s, floor %)
    load: tuple[float, ...]  # the plug's power noise factor, by k % _NOISE_N
    volts: tuple[float, ...]  # the plug's mains voltage, by k % _NOISE_N
    hertz: tuple[float, ...]  # the plug's mains frequency, by k % _NOISE_N
    tv_w: float
    boot_period: float
    boot_phase: float
    latitude: float
    longitude: float


@dataclass(slots=True)
class _Day:
    """One home's local day: state changes per device, silences, the incident."""

    home: _Home
    start: float
    end: float
    #: per role: sorted change times and the values (motion/door/bed bool, plug watts).
    times: dict[str, list[float]]
    values: dict[str, list[bool | float]]
    initial: dict[str, bool | float]
    #: per battery role: the level it reports that day.
    battery: dict[str, float] = field(default_factory=dict)
    silent: tuple[str, float, float] | None = None
    low_battery: tuple[str, float, float] | None = None
    incidents: list[Incident] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Clock:
    """A local day: its bounds and the Unix time of a local clock time."""

    start: float
    end: float
    shift: float  # how much the UTC offset grows during the day (s); 0 on most days
    switch: float  # when it changes

    def at(self, hours: float) -> float:
        """The first instant the local clock reads ``hours`` (or later) this day."""
        base = self.start + hours * _HOUR
        if not self.shift or base < self.switch:
            return base
        late = base - self.shift
        return late if late >= self.switch else self.switch


class HomeSimulator:
    """Deterministic Connected Care homes for a ``seed``.

    ``incident_rate`` is the chance that a home-day (with ``incidents=True``) has an incident;
    ``plan_cache`` how many home-days :meth:`readings_between` keeps planned (a plan is small:
    the day's state changes, no heartbeats). Not thread-safe (the caches); one per thread.
    """

    def __init__(
        self,
        seed: int,
        *,
        incident_rate: float = 0.3,
        timezone: str = _SETTINGS.timezone,
        plan_cache: int = 4096,
    ) -> None:
        if not 0.0 <= incident_rate <= 1.0:
            raise ValueError("incident_rate must be within 0..1")
        self.seed = seed
        self.incident_rate = incident_rate
        self.zone = ZoneInfo(timezone)
        self._homes: dict[str, _Home] = {}
        self._clocks: dict[int, _Clock] = {}
        self._plans: OrderedDict[tuple[object, ...], _Day] = OrderedDict()
        self._plan_cache = plan_cache

    # --- public surface ----------------------------------------------------------------------

    def devices(self, home: str) -> tuple[SimDevice, ...]:
        """The five devices of ``home`` (name, kind, a spot in Santander)."""
        h = self._home(home)
        labels = {
            "gw": "Connectivity hub",
            "motion": "Motion sensor in the living room",
            "door": "Contact sensor on the front door",
            "bed": "Bed occupancy sensor",
            "plug": "Smart plug of the TV corner",
        }
        return tuple(
            SimDevice(
                name, DEVICE_ROLES[role][0], "home", h.latitude, h.longitude,
                f"{labels[role]} of {home}",
            )
            for role, name in zip(_ROLES, h.devices, strict=True)
        )

    def simulate(
        self,
        home: str,
        start: float,
        end: float,
        *,
        incidents: bool | Iterable[IncidentSpec] = True,
    ) -> HomeTrace:
        """The readings of ``home`` in ``[start, end)`` and the incidents starting there.

        ``incidents``: ``True`` draws them (see ``incident_rate``), ``False`` gives the plain
        routine, an iterable of :class:`IncidentSpec` scripts exactly those (and no others).
        Raises :class:`ValueError` for a spec outside its window, or two on one local day.
        """
        specs = _specs(incidents, self.zone)
        readings: list[Reading] = []
        found: list[Incident] = []
        for day in self._days(home, start, end, specs, cached=False):
            readings += self._window(day, max(start, day.start), min(end, day.end))
            found += [i for i in day.incidents if start <= i.start < end]
        readings.sort(key=_T)
        return HomeTrace(home, start, end, readings, found)

    def readings_between(
        self,
        home: str,
        t0: float,
        t1: float,
        *,
        incidents: bool | Iterable[IncidentSpec] = True,
    ) -> list[Reading]:
        """The readings of ``home`` with ``t0 <= t < t1``, sorted by time: the same as the
        matching slice of :meth:`simulate`, however the time is cut into windows."""
        specs = _specs(incidents, self.zone)
        out: list[Reading] = []
        for day in self._days(home, t0, t1, specs, cached=True):
            out += self._window(day, max(t0, day.start), min(t1, day.end))
        out.sort(key=_T)
        return out

    def incidents_between(
        self,
        home: str,
        t0: float,
        t1: float,
        *,
        incidents: bool | Iterable[IncidentSpec] = True,
    ) -> list[Incident]:
        """The incidents of ``home`` that start in ``[t0, t1)``."""
        specs = _specs(incidents, self.zone)
        return [
            i
            for day in self._days(home, t0, t1, specs, cached=True)
            for i in day.incidents
            if t0 <= i.start < t1
        ]

    def stream(
        self,
        home: str,
        start: float,
        end: float,
        *,
        incidents: bool | Iterable[IncidentSpec] = True,
        chunk_s: float = _HOUR,
    ) -> Iterator[Reading]:
        """The readings of ``home`` in ``[start, end)`` in time order, made ``chunk_s`` at a
        time: memory stays at one day's plan per home, so many homes can be advanced together
        (see :meth:`stream_many`)."""
        specs = _specs(incidents, self.zone)
        for day in self._days(home, start, end, specs, cached=False):
            a = max(start, day.start)
            b = min(end, day.end)
            while a < b:
                c = min(b, a + chunk_s)
                chunk = self._window(day, a, c)
                chunk.sort(key=_T)
                yield from chunk
                a = c

    def stream_many(
        self,
        homes: Iterable[str],
        start: float,
        end: float,
        *,
        incidents: bool | Iterable[IncidentSpec] = True,
        chunk_s: float = 900.0,
    ) -> Iterator[Reading]:
        """The readings of all ``homes`` in ``[start, end)`` merged in time order (ties keep
        the homes' order), for a benchmark that advances every home together.

        Made ``chunk_s`` at a time for all homes at once and sorted (measured for 2000 homes
        on one core: 0.55 M readings/s, against 0.32 M for ``heapq.merge`` over
        :meth:`stream`); memory is one day's plan per home plus one chunk of readings (about
        50 readings per home per 15 min, ~100 bytes each). Longer chunks: a little faster,
        more memory.
        """
        specs = _specs(incidents, self.zone)
        days = [self._days(home, start, end, specs, cached=False) for home in homes]
        current: list[_Day | None] = [next(d, None) for d in days]
        a = start
        while a < end:
            b = min(end, a + chunk_s)
            batch: list[Reading] = []
            for n, day in enumerate(current):
                while day is not None:
                    batch += self._window(day, max(a, day.start), min(b, day.end))
                    if day.end > b:
                        break
                    day = current[n] = next(days[n], None)
            batch.sort(key=_T)
            yield from batch
            a = b

    # --- days ----------------------------------------------------------------------------------

    def _days(
        self,
        home: str,
        t0: float,
        t1: float,
        specs: bool | dict[int, IncidentSpec],
        *,
        cached: bool,
    ) -> Iterator[_Day]:
        if t1 <= t0:
            return
        ordinal = datetime.fromtimestamp(t0, self.zone).toordinal()
        while True:
            clock = self._clock(ordinal)
            if clock.start >= t1:
                return
            if isinstance(specs, bool):
                spec: IncidentSpec | bool | None = specs
            else:
                spec = specs.get(ordinal)
            if cached:
                key = (home, ordinal, spec)
                day = self._plans.get(key)
                if day is None:
                    day = self._plan(home, ordinal, clock, spec)
                    self._plans[key] = day
                    if len(self._plans) > self._plan_cache:
                        self._plans.popitem(last=False)
                else:
                    self._plans.move_to_end(key)
            else:
                day = self._plan(home, ordinal, clock, spec)
            yield day
            ordinal += 1

    def _clock(self, ordinal: int) -> _Clock:
        clock = self._clocks.get(ordinal)
        if clock is None:
            zone = self.zone
            d, n = date.fromordinal(ordinal), date.fromordinal(ordinal + 1)
            start = datetime(d.year, d.month, d.day, tzinfo=zone).timestamp()
            end = datetime(n.year, n.month, n.day, tzinfo=zone).timestamp()
            shift = _DAY - (end - start)
            switch = end
            if shift:
                # The one offset change of the day, to the second.
                first = datetime.fromtimestamp(start, zone).utcoffset()
                lo, hi = start, end
                while hi - lo > 1.0:
                    mid = math.floor((lo + hi) / 2)
                    if datetime.fromtimestamp(mid, zone).utcoffset() == first:
                        lo = mid
                    else:
                        hi = mid
                switch = hi
            clock = self._clocks[ordinal] = _Clock(start, end, shift, switch)
        return clock

    def _home(self, home: str) -> _Home:
        h = self._homes.get(home)
        if h is None:
            rng = random.Random(_seed(self.seed, "home", home))
            u = rng.uniform
            battery: list[tuple[float, float, float] | None] = []
            rssi: list[tuple[float, ...]] = []
            jitter: list[tuple[float, ...]] = []
            for role in _ROLES:
                if role in _BATTERY_ROLES:
                    life = u(300, 500) * _DAY
                    battery.append((life, rng.random() * life, u(36.0, 45.0)))
                else:
                    battery.append(None)
                mean = u(-60, -45) if role == "gw" else u(-75, -52)
                # int(x + 200.5) - 200 rounds x to the nearest whole dBm (x > -200).
                rssi.append(tuple(
                    float(int(mean + 10.0 * r + 195.5) - 200)
                    for r in [rng.random() for _ in range(_NOISE_N)]
                ))  # fmt: skip
                spread = _GW_JITTER if role == "gw" else _JITTER
                jitter.append(tuple([spread * rng.random() for _ in range(_JIT_N)]))
            volts = u(227.0, 233.0)
            h = _Home(
                name=home,
                devices=tuple(device_name(home, r) for r in _ROLES),
                offsets=tuple(
                    rng.random() * (_GW_SLOT if r == "gw" else _SLOT) for r in _ROLES
                ),
                jitter=tuple(jitter),
                rssi=tuple(rssi),
                battery=tuple(battery),
                load=tuple([0.97 + 0.06 * rng.random() for _ in range(_NOISE_N)]),
                volts=tuple([round(volts - 2 + 4 * rng.random(), 1) for _ in range(_NOISE_N)]),
                hertz=tuple([round(49.95 + 0.1 * rng.random(), 2) for _ in range(_NOISE_N)]),
                tv_w=u(60.0, 120.0),
                boot_period=u(20, 60) * _DAY,
                boot_phase=rng.random() * 60 * _DAY,
                latitude=u(43.445, 43.478),
                longitude=u(-3.870, -3.780),
            )
            self._homes[home] = h
        return h

    # --- a day's plan -------------------------------------------------------------------------

    def _plan(
        self, home: str, ordinal: int, clock: _Clock, spec: IncidentSpec | bool | None
    ) -> _Day:
        rng = random.Random(_seed(self.seed, "day", home, ordinal))
        at = clock.at
        u = rng.uniform

        # The incident of the day (its own stream: the routine draws stay the same).
        name: str | None = None
        start = 0.0
        role: str | None = None
        if isinstance(spec, IncidentSpec):
            name, start, role = spec.name, spec.start, spec.role
        elif spec is True:
            pick = random.Random(_seed(self.seed, "incident", home, ordinal))
            if pick.random() < self.incident_rate:
                name = INCIDENT_NAMES[int(pick.random() * len(INCIDENT_NAMES))]
                lo, hi = _WINDOWS[name]
                start = at(lo) + pick.random() * (at(hi) - at(lo))
                if name == "sensor_silent":
                    role = _SILENT_ROLES[int(pick.random() * len(_SILENT_ROLES))]
                elif name == "low_battery":
                    role = _BATTERY_ROLES[int(pick.random() * len(_BATTERY_ROLES))]
        if name == "sensor_silent" and role is None:
            role = _SILENT_ROLES[int(rng.random() * len(_SILENT_ROLES))]
        if name == "low_battery" and role is None:
            role = _BATTERY_ROLES[int(rng.random() * len(_BATTERY_ROLES))]

        wake = at(7.0) + 120.0 + rng.random() * (at(8.5) - at(7.0) - 120.0)
        bedtime = u(at(22.0), at(23.0 + 10 / 60))
        if name == "no_morning_activity":
            wake = u(at(11.0), at(12.0))
        incidents: list[Incident] = []
        day = _Day(self._home(home), clock.start, clock.end, {}, {}, {})

        # --- the night: asleep, bathroom trips, a night incident --------------------------
        night: list[tuple[float, float, str]] = []
        keep_clear: tuple[float, float] | None = None
        if name in ("night_wandering", "not_back_to_bed"):
            g = start
            if name == "night_wandering":
                door1 = g + u(60.0, 300.0)
                door2 = door1 + u(300.0, 900.0)
                back = min(door2 + u(60.0, 300.0), g + 25 * _MIN - 10.0)
                night += [(g, door1, _UP), (door1, door2, _OUT), (door2, back, _UP)]
                incidents.append(Incident(
                    home, name, g, back, frozenset({AlarmKind.NIGHT_DOOR}),
                    door1 - g + _MARGIN, {"door_opened": [door1, door2]},
                ))  # fmt: skip
            else:
                back = g + u(60 * _MIN, 120 * _MIN)
                night.append((g, back, _UP))
                incidents.append(Incident(
                    home, name, g, back, frozenset({AlarmKind.OUT_OF_BED}),
                    _SETTINGS.out_of_bed_s + _MARGIN, {"back_in_bed": back},
                ))  # fmt: skip
            keep_clear = (g - 45 * _MIN, back + 45 * _MIN)
        trips = _pick(rng, (0.35, 0.45, 0.2))
        last_end = -math.inf
        for t in sorted(u(at(0.25), at(6.25)) for _ in range(trips)):
            length = u(180.0, 900.0)
            if t < last_end + 20 * _MIN:
                continue
            if keep_clear and keep_clear[0] < t + length and t < keep_clear[1]:
                continue
            night.append((t, t + length, _UP))
            last_end = t + length
        night.sort()

        # --- the day: reserve the incident, then place the routine around it ---------------
        person: list[tuple[float, float]] = []  # when the person must stay home and awake
        plug_busy: list[tuple[float, float]] = []
        overlays: list[tuple[float, float, str]] = []
        plug: list[tuple[float, float, float]] = []  # (on, off, watts)
        lunch = u(at(13.5), at(14.5))
        if name == "no_morning_activity":
            lunch = max(lunch, wake + 90 * _MIN)
        lunch_end = lunch + u(45 * _MIN, 75 * _MIN)
        bustle = wake + u(20 * _MIN, 40 * _MIN)  # bathroom, dressing, breakfast
        person += [(clock.start, wake + 45 * _MIN), (lunch, lunch_end)]
        fall_at = found = 0.0
        if name == "fall":
            fall_at = start
            person.append((fall_at - 20 * _MIN, clock.end))
            plug_busy.append((fall_at - 20 * _MIN, clock.end))
        elif name == "appliance_left_on":
            off = start + u(5 * _HOUR, 7 * _HOUR)
            watts = u(1000.0, 2000.0)
            person.append((start - 10 * _MIN, start + 10 * _MIN))
            plug_busy.append((start, off))
            plug.append((start, off, watts))
            incidents.append(Incident(
                home, name, start, off, frozenset({AlarmKind.APPLIANCE_ON}),
                _SETTINGS.appliance_s + _MARGIN, {"watts": round(watts), "off_at": off},
            ))  # fmt: skip
        elif name == "sensor_silent":
            assert role is not None
            until = start + u(2 * _HOUR, 3 * _HOUR)
            person.append((start - 15 * _MIN, until + 15 * _MIN))
            plug_busy.append((start - 15 * _MIN, until + 15 * _MIN))
            day.silent = (role, start, until)
            incidents.append(Incident(
                home, name, start, until, frozenset({AlarmKind.DEVICE_OFFLINE}),
                _SETTINGS.offline_s + _MARGIN,
                {"device": device_name(home, role), "role": role, "silent_until": until},
            ))  # fmt: skip
        elif name == "low_battery":
            assert role is not None
            level = round(u(8.0, 14.0), 1)
            day.low_battery = (role, start, level)
            incidents.append(Incident(
                home, name, start, clock.end, frozenset({AlarmKind.LOW_BATTERY}), _MARGIN,
                {"device": device_name(home, role), "role": role, "battery": round(level, 1)},
            ))  # fmt: skip
        elif name == "no_morning_activity":
            incidents.append(Incident(
                home, name, at(7.0), wake, frozenset({AlarmKind.NO_MORNING_ACTIVITY}),
                at(10.0) - at(7.0) + _MARGIN, {"got_up": wake},
            ))  # fmt: skip

        def place(
            lo: float, hi: float, shortest: float, longest: float, pad: float,
            busy: list[tuple[float, float]],
        ) -> tuple[float, float] | None:  # fmt: skip
            return _place(rng, busy, lo, hi, shortest, longest, pad)

        if rng.random() < 0.45:  # nap
            span = place(lunch_end + 5 * _MIN, at(17.5), 20 * _MIN, 90 * _MIN, 5 * _MIN, person)
            if span:
                person.append(span)
                overlays.append((*span, _NAP))
        outings = _pick(rng, (0.3, 0.5, 0.2))
        morning = (max(at(10.0), wake + 45 * _MIN), at(13.5))
        afternoon = (at(15.0), at(20.5))
        windows = [morning, afternoon] if outings == 2 else []
        if outings == 1:
            windows = [morning if rng.random() < 0.4 else afternoon]
        for lo, hi in windows:
            span = place(lo, hi, 30 * _MIN, 240 * _MIN, 10 * _MIN, person)
            if span:
                person.append(span)
                overlays.append((*span, _OUT))
        if rng.random() < 0.3:  # a visit
            span = place(at(10.0), at(20.5), 30 * _MIN, 120 * _MIN, 10 * _MIN, person)
            if span:
                person.append(span)
                overlays.append((*span, _VISIT))
        tv = day.home.tv_w
        for chance, lo, hi, shortest, longest in (
            (0.5, at(15.0), at(20.0), 30 * _MIN, 150 * _MIN),
            (0.85, at(19.5), bedtime - 5 * _MIN, 45 * _MIN, 175 * _MIN),
        ):
            if rng.random() < chance:
                span = place(lo, hi, shortest, longest, 5 * _MIN, person + plug_busy)
                if span:
                    person.append(span)
                    plug_busy.append(span)
                    overlays.append((*span, _TV))
                    plug.append((*span, tv * u(0.9, 1.1)))
        for chance, lo, hi, shortest, longest, w_lo, w_hi in (
            (0.6, wake + 10 * _MIN, wake + 40 * _MIN, 2 * _MIN, 4 * _MIN, 1800.0, 2200.0),
            (0.35, at(16.0), at(19.0), 2 * _MIN, 4 * _MIN, 1800.0, 2200.0),
            (0.25, at(10.0), at(21.0), 15 * _MIN, 45 * _MIN, 1000.0, 2000.0),
        ):
            if rng.random() < chance:
                # Breakfast is the morning's own: only the plug's other uses stand in its way.
                busy = plug_busy if hi <= bustle else person + plug_busy
                span = place(lo, hi, shortest, longest, 5 * _MIN, busy)
                if span:
                    plug_busy.append(span)
                    plug.append((*span, u(w_lo, w_hi)))

        # --- the person's day as contiguous segments ---------------------------------------
        segments: list[tuple[float, float, str]] = []
        t = clock.start
        for a, b, mode in night:
            if a > t:  # the pieces of a night incident follow each other
                segments.append((t, a, _SLEEP))
            segments.append((a, b, mode))
            t = b
        segments += [(t, wake, _SLEEP), (wake, bustle, _UP)]
        t = bustle
        overlays.sort()
        if name == "fall":
            found = fall_at + _SETTINGS.inactivity_s + _MARGIN + u(10 * _MIN, 30 * _MIN)
            leaves = found + u(20 * _MIN, 45 * _MIN)
            bedtime = max(bedtime, leaves + u(10 * _MIN, 20 * _MIN))
            for a, b, mode in overlays:
                segments += [(t, a, _ACTIVE), (a, b, mode)]
                t = b
            segments += [
                (t, fall_at, _ACTIVE),
                (fall_at, found, _FALLEN),
                (found, leaves, _VISIT),
                (leaves, bedtime, _ACTIVE),
            ]
            incidents.append(Incident(
                home, name, fall_at, found, frozenset({AlarmKind.INACTIVITY}),
                _SETTINGS.inactivity_s + _MARGIN, {"found_at": found},
            ))  # fmt: skip
        else:
            for a, b, mode in overlays:
                segments += [(t, a, _ACTIVE), (a, b, mode)]
                t = b
            segments.append((t, bedtime, _ACTIVE))
        segments.append((bedtime, clock.end, _SLEEP))
        assert all(a < b for a, b, _ in segments), "overlapping segments"
        assert all(x[1] == y[0] for x, y in itertools.pairwise(segments)), "gaps in the day"

        # --- segments -> device state changes ----------------------------------------------
        motions = _motions(rng, segments)
        if day.silent is not None and day.silent[0] == "motion":
            # A silent motion sensor comes back on a motion (the person walks past it).
            back = day.silent[2]
            motions = [m for m in motions if abs(m - back) >= _MIN_MOTION_GAP]
            motions.insert(bisect_left(motions, back), back)
        m_times: list[float] = []
        m_values: list[bool | float] = []
        for i, m in enumerate(motions):
            m_times.append(m)
            m_values.append(True)
            if i + 1 == len(motions) or motions[i + 1] - m > _PIR_HOLD:
                m_times.append(m + _PIR_HOLD)
                m_values.append(False)
        door: list[tuple[float, bool]] = []
        for a, b, mode in segments:
            if mode in (_OUT, _VISIT):  # leaving and coming back; arrival, departure
                door += [(a, True), (a + u(4.0, 20.0), False)]
                door += [(b, True), (b + u(4.0, 20.0), False)]
        door.sort()
        bed: list[tuple[float, bool]] = []
        occupied = True
        for a, _b, mode in segments:
            now = mode in _IN_BED
            if now != occupied:
                bed.append((a, now))
                occupied = now
        plug.sort()
        p_times: list[float] = []
        p_values: list[bool | float] = []
        for a, b, w in plug:
            p_times += [a, b]
            p_values += [round(w, 1), 0.0]
        day.times = {
            "motion": m_times,
            "door": [t for t, _ in door],
            "bed": [t for t, _ in bed],
            "plug": p_times,
        }
        day.values = {
            "motion": m_values,
            "door": [v for _, v in door],
            "bed": [v for _, v in bed],
            "plug": p_values,
        }
        day.initial = {"motion": False, "door": False, "bed": True, "plug": 0.0}
        h = day.home
        for role in _BATTERY_ROLES:
            life, phase, bottom = h.battery[_ROLES.index(role)]  # type: ignore[misc]
            # Drains linearly to ``bottom`` over ``life``, then a fresh battery; 0.1-0.2 % a
            # day, so one level (at noon) stands for the whole day.
            used = (clock.start + 12 * _HOUR + phase) % life / life
            day.battery[role] = round(100.0 - (100.0 - bottom) * used, 1)
        incidents.sort(key=lambda i: i.start)
        day.incidents = incidents
        return day

    # --- readings of a window of a day ---------------------------------------------------------

    def _window(self, day: _Day, t0: float, t1: float) -> list[Reading]:
        """The readings of ``day`` in ``[t0, t1)`` (within the day), device by device."""
        out: list[Reading] = []
        if t1 <= t0:
            return out
        silent = day.silent
        for i, role in enumerate(_ROLES):
            part = self._device(day, i, role, t0, t1)
            if silent is not None and silent[0] == role:
                _, s, e = silent
                part = [r for r in part if not s <= r[4] < e]
                if t0 <= e < t1:  # back with a full report
                    part += self._device(day, i, role, e, e, resume=True)
            out += part
        return out

    def _device(
        self, day: _Day, i: int, role: str, t0: float, t1: float, *, resume: bool = False
    ) -> list[Reading]:
        """Device ``i``'s changes in ``[t0, t1)``, then its heartbeats there (the state at
        that time, then the health); with ``resume``, one heartbeat at ``t0`` only."""
        h = day.home
        name = h.devices[i]
        rssi = h.rssi[i]
        period, spread = (_GW_SLOT, _GW_JITTER) if role == "gw" else (_SLOT, _JITTER)
        off = h.offsets[i]
        jitter = h.jitter[i]
        if resume:
            slots = [(t0, 0)]
        else:
            slots = [
                (t, k)
                for k in range(
                    math.floor((t0 - off - spread) / period), math.floor((t1 - off) / period) + 1
                )
                if t0 <= (t := k * period + off + jitter[k % _JIT_N]) < t1
            ]
        out: list[Reading] = []
        noise_n = _NOISE_N
        if role == "gw":
            boot, phase = h.boot_period, h.boot_phase
            for t, k in slots:
                out.append((name, "gateway", "uptime", 30 + int((t + phase) % boot), t))
                if not k % 3:  # its health every third report (15 min)
                    out += (
                        (name, "health", "battery", 100.0, t),
                        (name, "health", "rssi", rssi[k % noise_n], t),
                    )
            return out
        times = day.times[role]
        values = day.values[role]
        _, service, resource = DEVICE_ROLES[role]
        if not resume:
            lo, hi = bisect_left(times, t0), bisect_left(times, t1)
            if role == "plug":
                for j in range(lo, hi):
                    out += (
                        (name, "plug", "switch", values[j] > 0.0, times[j]),
                        (name, "plug", "power", values[j], times[j]),
                    )
            else:
                out += [(name, service, resource, values[j], times[j]) for j in range(lo, hi)]
        if not slots:
            return out
        j = bisect_right(times, slots[0][0])
        state = values[j - 1] if j else day.initial[role]
        n = len(times)
        nxt = times[j] if j < n else _INF
        if role == "plug":
            load, volts, hertz = h.load, h.volts, h.hertz
            for t, k in slots:
                while nxt <= t:
                    state = values[j]
                    j += 1
                    nxt = times[j] if j < n else _INF
                x = k % noise_n
                out += (
                    (name, "plug", "switch", state > 0.0, t),
                    (name, "plug", "power", round(state * load[x], 1) if state else 0.0, t),
                    (name, "health", "battery", 100.0, t),
                    (name, "health", "rssi", rssi[x], t),
                )
                if not k % 3 or resume:  # the mains every third report (21 min)
                    out += (
                        (name, "plug", "voltage", volts[x], t),
                        (name, "plug", "frequency", hertz[x], t),
                    )
            return out
        level = day.battery[role]
        low = day.low_battery
        low_at, low_level = (low[1], low[2]) if low is not None and low[0] == role else (_INF, 0.0)
        for t, k in slots:
            while nxt <= t:
                state = values[j]
                j += 1
                nxt = times[j] if j < n else _INF
            out += (
                (name, service, resource, state, t),
                (name, "health", "battery", level if t < low_at else low_level, t),
                (name, "health", "rssi", rssi[k % noise_n], t),
            )
        return out


# --- helpers -----------------------------------------------------------------------------------


def _seed(*parts: object) -> int:
    text = "\x00".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _pick(rng: random.Random, weights: tuple[float, ...]) -> int:
    """An index drawn with the given probabilities (they sum to 1)."""
    x = rng.random()
    for i, p in enumerate(weights):
        if x < p:
            return i
        x -= p
    return len(weights) - 1


def _place(
    rng: random.Random,
    busy: list[tuple[float, float]],
    lo: float,
    hi: float,
    shortest: float,
    longest: float,
    pad: float,
) -> tuple[float, float] | None:
    """A span of ``shortest``..``longest`` inside ``[lo, hi]`` at least ``pad`` away from every
    ``busy`` span (shorter than drawn if the free gap is), or ``None`` if none fits."""
    gaps: list[tuple[float, float]] = []
    cur = lo
    for a, b in sorted(busy):
        a -= pad
        b += pad
        if b <= cur:
            continue
        if a >= hi:
            break
        if a - cur >= shortest:
            gaps.append((cur, a))
        cur = max(cur, b)
    if hi - cur >= shortest:
        gaps.append((cur, hi))
    if not gaps:
        return None
    x = rng.random() * sum(b - a for a, b in gaps)
    for a, b in gaps:
        if x < b - a:
            break
        x -= b - a
    length = min(rng.uniform(shortest, longest), b - a)
    t = a + rng.random() * (b - a - length)
    return t, t + length


def _gap(rng: random.Random, mode: str) -> float:
    """Seconds to the next motion in an awake mode."""
    x = rng.random()
    if mode == _ACTIVE:
        return 30.0 + 330.0 * x / 0.65 if x < 0.65 else 360.0 + 2040.0 * (x - 0.65) / 0.35
    if mode == _TV:
        return 480.0 + 1920.0 * x
    if mode == _VISIT:
        return 30.0 + 210.0 * x
    return 30.0 + 270.0 * x  # up at night


def _motions(rng: random.Random, segments: list[tuple[float, float, str]]) -> list[float]:
    """Times of the motions the PIR sees over contiguous ``segments``."""
    out: list[float] = []
    last = -math.inf
    before = _SLEEP
    for i, (a, b, mode) in enumerate(segments):
        if mode in _MOTIONLESS:
            before = mode
            continue
        after = segments[i + 1][2] if i + 1 < len(segments) else _SLEEP
        if before in _IN_BED:
            t = a - rng.uniform(5.0, 40.0)  # sitting up before the bed reports empty
            out.append(t)
            last = t
        elif before in (_OUT, _FALLEN):
            t = a + rng.uniform(3.0, 30.0)  # in through the door
            out.append(t)
            last = t
        t = last + _gap(rng, mode)
        # The last motion before leaving is 70-150 s before the door opens: the PIR's hold
        # is over by then, so no heartbeat repeats "detected" once the door has opened.
        stop = b - (240.0 if after == _OUT else 90.0)
        while t < stop:
            out.append(t)
            last = t
            t = last + _gap(rng, mode)
        end: float | None = None
        if after in _IN_BED:
            end = b - rng.uniform(10.0, 90.0)
        elif after == _OUT:
            end = b - rng.uniform(70.0, 150.0)
        elif after == _FALLEN:
            end = b
        if end is not None and end > last:
            if end - last < _MIN_MOTION_GAP:
                out[-1] = end
            else:
                out.append(end)
            last = end
        before = mode
    return out


def _specs(
    incidents: bool | Iterable[IncidentSpec], zone: ZoneInfo
) -> bool | dict[int, IncidentSpec]:
    """``True``/``False``, or the forced incidents by local date (validated)."""
    if isinstance(incidents, bool):
        return incidents
    out: dict[int, IncidentSpec] = {}
    for spec in incidents:
        if spec.name not in _WINDOWS:
            raise ValueError(f"unknown incident {spec.name!r}; known: {', '.join(INCIDENT_NAMES)}")
        local = datetime.fromtimestamp(spec.start, zone)
        hours = local.hour + local.minute / 60 + local.second / 3600
        lo, hi = _WINDOWS[spec.name]
        if not lo <= hours <= hi:
            raise ValueError(
                f"{spec.name} must start between {lo:05.2f} and {hi:05.2f} h local time, "
                f"not at {local:%H:%M}"
            )
        roles = {"sensor_silent": _SILENT_ROLES, "low_battery": _BATTERY_ROLES}.get(spec.name)
        if spec.role is not None and (roles is None or spec.role not in roles):
            raise ValueError(f"{spec.name} cannot take role {spec.role!r}")
        ordinal = local.toordinal()
        if ordinal in out:
            raise ValueError(f"two incidents on {local.date()}: at most one per day")
        out[ordinal] = spec
    return out
