"""The alarm engine of Connected Care: sensor events in, alarms out, nothing missed.

The engine keeps a small state per home (when motion was last seen, whether the bed is
occupied and since when, when the front door last opened, since when the plug has drawn
power, when each device last reported, its battery) and evaluates the alarm conditions of
:class:`~msec.apps.care.model.AlarmKind`:

* on every event, the conditions an event can make true at once (night door, low battery,
  and any absence condition that became true because something else changed);
* at the moment an absence or duration condition comes due (a timer per home and rule: "3 h
  after the last motion", "30 min after the bed emptied at night", "10:00 in the morning",
  "30 min after the device last reported"): :meth:`CareEngine.tick` fires every timer due by
  the clock it is given, evaluating the condition *at the due time*.

Timers are derived from the state (never stored apart from it), so :meth:`snapshot` and
:meth:`restore` are all a restart needs: after a restart every condition that came due while
the engine was down fires at once, and one that fired before is not raised twice because
every alarm carries an **episode** (what started it: the last motion's time, the night, the
device's last report) and the alarm store keeps one alarm per (home, kind, episode) and one
active alarm per (home, kind).

The conditions, with the person's settings (:class:`CareSettings`, night 23:00-07:00 local):

``inactivity``
    in daytime, no motion for ``inactivity_s`` (3 h) while the person is at home (not
    *away*: the door opened after the last motion and there was no motion for
    ``away_after_s`` since), not in bed, and the motion sensor reporting. The 3 h count from
    the last sign of someone: motion, the door opening (someone coming home), getting out of
    bed, or the motion sensor coming back after a silence (what it did not see says nothing).
``no_morning_activity``
    at ``morning_end`` (10:00), no motion since ``morning_start`` (07:00) that day, not away,
    motion sensor reporting.
``out_of_bed``
    at night, the bed empty for ``out_of_bed_s`` (30 min) counted from the later of when it
    emptied and when the night began, bed sensor reporting.
``night_door``
    at night, the front door opens while the bed is empty (bed sensor reporting).
``appliance_on``
    the plug draws more than ``appliance_w`` for ``appliance_s`` (4 h), plug reporting.
``device_offline``
    a device sent nothing for ``offline_s`` (30 min).
``low_battery``
    a device reports a battery below ``low_battery_pct``.

Besides these, the **custom rules** of the alert definitions (:mod:`msec.apps.care.rules`:
single, combined AND/OR within a window, absence, duration, each with a schedule) are
evaluated on the same events and timers, their state kept in :attr:`HomeState.rules` so that
they restart like the built-in conditions. Each home has a **profile**: the generic settings,
the per device type limits, the person's own overrides, the alarm kinds switched off for
the person, and the person's rule parameters (:meth:`CareEngine.configure`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import heapq
import itertools
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from msec.apps.care.model import (
    DEVICE_ROLES,
    AlarmKind,
    AlarmRequest,
    CareSettings,
    SensorEvent,
)
from msec.apps.care.rules import Definitions, Rule, check_settings

__all__ = ["AlarmSink", "CareEngine", "HomeState", "PersonConfig", "Profile", "Raised"]

log = logging.getLogger(__name__)


class AlarmSink(Protocol):
    """Where the engine raises alarms (``SqlAlarms`` in production). Returns something true
    when a new alarm was stored, false when the (home, kind) already has an active one or
    this episode was raised before. A sink may also have ``raise_alarms(requests)`` (a list
    of :class:`AlarmRequest`, one result each, in one write): the engine then hands it the
    alarms of one :meth:`CareEngine.batch` together."""

    def raise_alarm(
        self, home: str, kind: AlarmKind, episode: str, *, at: float, detail: dict[str, Any],
        trigger: str | None = None,
    ) -> object: ...  # fmt: skip


@dataclass(frozen=True, slots=True)
class Raised:
    """One alarm the engine raised (what the sink accepted)."""

    home: str
    kind: AlarmKind | str
    episode: str
    at: float
    trigger: str | None


@dataclass(frozen=True, slots=True)
class PersonConfig:
    """A person's own configuration (what :meth:`CareEngine.configure` was given) and the
    settings in force for them (the generic ones with ``overrides`` applied)."""

    overrides: dict[str, Any]
    disabled: frozenset[str]
    rules: dict[str, dict[str, Any]]
    settings: CareSettings

    def as_dict(self) -> dict[str, Any]:
        return {
            "overrides": dict(self.overrides),
            "disabled": sorted(self.disabled),
            "rules": {k: dict(v) for k, v in self.rules.items()},
        }


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything the engine applies to one home, computed once per configuration."""

    settings: CareSettings
    offline_s: dict[str, float]  # per role
    low_battery_pct: dict[str, float]  # per role
    rules: tuple[Rule, ...]
    by_key: dict[str, tuple[Rule, ...]]  # role/service/resource -> rules reading it
    disabled: frozenset[str]


@dataclass
class HomeState:
    """What the engine knows of one home (JSON-serialisable through :meth:`to_dict`)."""

    last_motion: float | None = None
    motion_online_since: float | None = None
    last_door_open: float | None = None
    bed_occupied: bool | None = None
    bed_changed: float | None = None
    power_high_since: float | None = None
    battery_low_since: dict[str, float] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)
    last_seq: dict[str, int] = field(default_factory=dict)
    #: The local date (ISO) whose morning check is scheduled or done.
    morning_for: str | None = None
    #: Per role: the last battery level (%) and signal strength (dBm) reported.
    battery: dict[str, float] = field(default_factory=dict)
    rssi: dict[str, float] = field(default_factory=dict)
    #: Per role: since when it reports without a gap longer than its offline limit.
    online_since: dict[str, float] = field(default_factory=dict)
    #: Custom rules' state, per rule kind: ``m`` last match time per condition, ``h`` since
    #: when the condition holds (single, duration), ``b`` the absence's baseline.
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HomeState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: copy.deepcopy(v) for k, v in data.items() if k in names})


# Timer rules (what a due timer evaluates).
_INACTIVITY, _MORNING, _OUT_OF_BED, _APPLIANCE, _OFFLINE, _RULE = range(6)
#: How long (engine time) after the alarm store failed the same alarms are offered again.
RETRY_S = 5.0


class CareEngine:
    """Evaluates the alarm conditions of many homes. Thread-safe (one lock)."""

    def __init__(
        self,
        sink: AlarmSink,
        settings: CareSettings | None = None,
        definitions: Definitions | None = None,
    ) -> None:
        self.sink = sink
        self.definitions = definitions or Definitions()
        self.settings = dataclasses.replace(settings or CareSettings(), **self.definitions.generic)
        check_settings(self.settings)
        self.homes: dict[str, HomeState] = {}
        self._own: dict[str, PersonConfig] = {}
        self._profiles: dict[str, Profile] = {}
        self._generic = self._profile(None)
        self._zones: dict[str, ZoneInfo] = {}
        self._timers: list[tuple[float, int, str, int, str]] = []
        self._order = itertools.count()
        self._lock = threading.RLock()
        self.raised: list[Raised] = []  # what this engine raised (tests, benchmark)
        self.keep_raised = False
        self.listeners: list[Callable[[Raised], None]] = []
        self.now = 0.0
        self._pending: list[AlarmRequest] | None = None  # raised inside batch()
        self._retry: list[AlarmRequest] = []  # the store failed them: again at _retry_due
        self._retry_due = 0.0

    # -- settings --------------------------------------------------------------------------------

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The custom rules of the alert definitions."""
        return self.definitions.rules

    def kinds(self) -> list[str]:
        """Every alarm kind this engine can raise: the built-in ones, then the rules'."""
        return [k.value for k in AlarmKind] + [r.kind for r in self.definitions.rules]

    def configure(
        self,
        home: str,
        *,
        disabled: Iterable[str] = (),
        rules: Mapping[str, Mapping[str, Any]] | None = None,
        **overrides: Any,
    ) -> PersonConfig:
        """Replace the person's own configuration: ``overrides`` of any :class:`CareSettings`
        field over the generic settings, the alarm kinds ``disabled`` for them, and their
        ``rules`` parameters (``{kind: {"for_s": ..., "schedule": ...}}``). ``ValueError``
        naming the setting, kind or rule for anything that cannot be used; nothing changes
        then. Timers are re-armed with the new configuration."""
        with self._lock:
            unknown = set(overrides) - {f.name for f in dataclasses.fields(CareSettings)}
            if unknown:
                raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
            settings = dataclasses.replace(self.settings, **overrides)
            check_settings(settings)
            off = frozenset(disabled)
            bad = off - set(self.kinds())
            if bad:
                raise ValueError(f"unknown alarm kind(s): {', '.join(sorted(bad))}")
            params = {str(k): dict(v) for k, v in (rules or {}).items()}
            for kind, values in params.items():
                rule = self.definitions.rule(kind)
                if rule is None:
                    raise ValueError(f"no rule raises the kind {kind!r}")
                rule.with_params(values)  # checks them
            config = PersonConfig(dict(overrides), off, params, settings)
            self._own[home] = config
            self._profiles[home] = self._profile(config)
            self._rearm_home(home)
            return config

    def forget(self, home: str) -> None:
        """The person goes back to the generic configuration."""
        with self._lock:
            if self._own.pop(home, None) is not None:
                self._profiles.pop(home, None)
                self._rearm_home(home)

    def remove(self, home: str) -> None:
        """Stop watching ``home`` (the person left the service): what the engine knows of
        it, its own configuration and its alarms waiting for a retry go; its timers still
        queued find nothing when they come due. A later reading starts it afresh."""
        with self._lock:
            self.homes.pop(home, None)
            self._own.pop(home, None)
            self._profiles.pop(home, None)
            self._retry = [r for r in self._retry if r.home != home]

    def person(self, home: str) -> PersonConfig:
        """The person's own configuration (empty when they have none)."""
        with self._lock:
            own = self._own.get(home)
            return own if own is not None else PersonConfig({}, frozenset(), {}, self.settings)

    def set_generic(self, settings: CareSettings) -> None:
        """New generic settings for everyone (people's own overrides still apply)."""
        with self._lock:
            check_settings(settings)
            self.settings = settings
            self._generic = self._profile(None)
            for home, own in list(self._own.items()):
                merged = dataclasses.replace(settings, **own.overrides)
                check_settings(merged)
                self._own[home] = dataclasses.replace(own, settings=merged)
                self._profiles[home] = self._profile(self._own[home])
            self._rearm()

    def escalation_delays(self) -> dict[str, float]:
        """``escalate_after_s`` of every person with their own configuration."""
        with self._lock:
            return {home: own.settings.escalate_after_s for home, own in self._own.items()}

    def settings_of(self, home: str) -> CareSettings:
        return self.profile(home).settings

    def profile(self, home: str) -> Profile:
        return self._profiles.get(home, self._generic)

    def _profile(self, own: PersonConfig | None) -> Profile:
        settings = own.settings if own is not None else self.settings
        mine = own.overrides if own is not None else {}
        offline: dict[str, float] = {}
        battery: dict[str, float] = {}
        types = self.definitions.device_types
        for role in DEVICE_ROLES:  # the person's own value, else the type's, else generic
            limits = {} if "offline_s" in mine else types.get(role, {})
            offline[role] = limits.get("offline_s", settings.offline_s)
            limits = {} if "low_battery_pct" in mine else types.get(role, {})
            battery[role] = limits.get("low_battery_pct", settings.low_battery_pct)
        rules = tuple(
            r.with_params(own.rules[r.kind]) if own is not None and r.kind in own.rules else r
            for r in self.definitions.rules
        )
        by_key: dict[str, list[Rule]] = {}
        for rule in rules:
            for key in {c.key for c in rule.conditions}:
                by_key.setdefault(key, []).append(rule)
        return Profile(settings, offline, battery, rules, {k: tuple(v) for k, v in by_key.items()},
                        own.disabled if own is not None else frozenset())  # fmt: skip

    def _rearm_home(self, home: str) -> None:
        """Arm ``home``'s timers with its new profile. Timers armed before stay in the queue:
        each check re-evaluates the condition from the state, so a stale one finds nothing
        (re-arming every home for each person would make a start with many people slow)."""
        state = self.homes.get(home)
        if state is not None:
            self._arm_all(home, state)

    def _rearm(self) -> None:
        self._timers = []
        for home, state in self.homes.items():
            self._arm_all(home, state)

    # -- events ----------------------------------------------------------------------------------

    def observe(self, event: SensorEvent) -> None:
        """Take one reading into account (after :meth:`tick` up to its time, for determinism
        the caller ticks first; the engine also ticks itself up to the event's time)."""
        with self._lock:
            self._tick(event.t)
            home, role, t = event.home, event.role, event.t
            state = self.homes.get(home)
            if state is None:
                state = self.homes[home] = HomeState()
            p = self.profile(home)
            s = p.settings
            if event.seq <= state.last_seq.get(f"{role}/{event.service}/{event.resource}", -1):
                # A duplicate delivery (QoS 1), or a reading stored after a later one (ingest
                # workers commit in parallel): the state it would set is older than the one
                # known, but a sign of life (motion, the door opening) still counts.
                self._late(home, state, event)
                return
            state.last_seq[f"{role}/{event.service}/{event.resource}"] = event.seq
            was_seen = state.last_seen.get(role)
            offline_s = p.offline_s.get(role, s.offline_s)
            if was_seen is None or t > was_seen:
                # A device back after a silence: its earlier absence of events meant nothing.
                if was_seen is None or t - was_seen >= offline_s:
                    state.online_since[role] = t
                    if role == "motion":
                        state.motion_online_since = t
                    self._rules_back(home, state, p, role, t)
                state.last_seen[role] = t
                self._push(t + offline_s, home, _OFFLINE, role)
            trigger = f"{event.device}/{event.seq}"
            key = (event.service, event.resource)
            if key == ("health", "battery"):
                state.battery[role] = float(event.value)
                self._battery(home, state, p, role, float(event.value), t, trigger)
            elif key == ("health", "rssi"):
                state.rssi[role] = float(event.value)
            elif key == ("motion", "detected"):
                if bool(event.value) and (state.last_motion is None or t >= state.last_motion):
                    state.last_motion = t
                    self._push(t + s.inactivity_s, home, _INACTIVITY, "")
            elif key == ("contact", "open"):
                if bool(event.value):
                    state.last_door_open = max(t, state.last_door_open or t)
                    # Someone opened it: the inactivity clock starts again from here.
                    self._push(t + s.inactivity_s, home, _INACTIVITY, "")
                    self._night_door(home, state, s, t, trigger)
            elif key == ("bed", "occupied"):
                occupied = bool(event.value)
                if occupied != state.bed_occupied:
                    state.bed_occupied = occupied
                    state.bed_changed = t
                    if not occupied:
                        self._arm_out_of_bed(home, state, s, t)
                        self._push(t + s.inactivity_s, home, _INACTIVITY, "")
            elif key == ("plug", "power"):
                if float(event.value) > s.appliance_w:
                    if state.power_high_since is None:
                        state.power_high_since = t
                        self._push(t + s.appliance_s, home, _APPLIANCE, "")
                else:
                    state.power_high_since = None
            rules = p.by_key.get(f"{role}/{event.service}/{event.resource}")
            if rules:
                self._rules_event(home, state, p, rules, event, trigger)
            self._arm_morning(home, state, s, t)
            # Something that suppressed a condition may have changed (bed emptied, sensor
            # back): look at the absence conditions again now.
            self._check(home, _INACTIVITY, "", t)
            self._check(home, _OUT_OF_BED, "", t)
            self._check(home, _APPLIANCE, "", t)

    def _late(self, home: str, state: HomeState, event: SensorEvent) -> None:
        if (event.service, event.resource) not in (("motion", "detected"), ("contact", "open")):
            return
        if not bool(event.value):
            return
        t = event.t
        s = self.settings_of(home)
        if event.service == "motion":
            if state.last_motion is None or t > state.last_motion:
                state.last_motion = t
                self._push(t + s.inactivity_s, home, _INACTIVITY, "")
            return
        if state.last_door_open is None or t > state.last_door_open:
            state.last_door_open = t
            self._push(t + s.inactivity_s, home, _INACTIVITY, "")
        # Night door: only if the bed was already empty when the door opened.
        if state.bed_changed is not None and state.bed_changed <= t:
            self._night_door(home, state, s, t, f"{event.device}/{event.seq}")

    def tick(self, now: float) -> None:
        """Fire every timer due by ``now``, each evaluated at its own due time."""
        with self.batch():
            self._tick(now)

    def _tick(self, now: float) -> None:
        if self._retry and now >= self._retry_due:
            retry, self._retry = self._retry, []
            self._submit(retry)
        timers = self._timers
        while timers and timers[0][0] <= now:
            due, _, home, rule, arg = heapq.heappop(timers)
            self.now = max(self.now, due)
            self._check(home, rule, arg, due)
        self.now = max(self.now, now)

    def _push(self, due: float, home: str, rule: int, arg: str) -> None:
        heapq.heappush(self._timers, (due, next(self._order), home, rule, arg))

    # -- conditions ------------------------------------------------------------------------------

    def _check(self, home: str, rule: int, arg: str, at: float) -> None:
        state = self.homes.get(home)
        if state is None:
            return
        p = self.profile(home)
        s = p.settings
        if rule == _INACTIVITY:
            self._inactivity(home, state, s, at)
        elif rule == _MORNING:
            self._morning(home, state, s, at, arg)
        elif rule == _OUT_OF_BED:
            self._out_of_bed(home, state, s, at)
        elif rule == _APPLIANCE:
            since = state.power_high_since
            due = since is not None and at - since >= s.appliance_s
            if due and self._online(state, p, "plug", at):
                self._raise(home, AlarmKind.APPLIANCE_ON, f"{since:.3f}", at,
                            {"since": since, "watts_above": s.appliance_w})  # fmt: skip
        elif rule == _OFFLINE:
            seen = state.last_seen.get(arg)
            if seen is not None and at - seen >= p.offline_s.get(arg, s.offline_s):
                self._raise(home, AlarmKind.DEVICE_OFFLINE, f"{arg}:{seen:.3f}", at,
                            {"device": arg, "last_seen": seen})  # fmt: skip
        elif rule == _RULE:
            self._rule_due(home, state, p, arg, at)

    def _online(self, state: HomeState, p: Profile, role: str, at: float) -> bool:
        seen = state.last_seen.get(role)
        return seen is not None and at - seen < p.offline_s.get(role, p.settings.offline_s)

    def _away(self, state: HomeState, s: CareSettings, at: float) -> bool:
        door = state.last_door_open
        if door is None or (state.last_motion is not None and state.last_motion >= door):
            return False
        return at - door >= s.away_after_s

    def _inactivity(self, home: str, state: HomeState, s: CareSettings, at: float) -> None:
        # Counted from the last sign of someone: motion, the door, getting out of bed (its
        # message may arrive before the motion's), or the motion sensor's return.
        baseline = _latest(state.last_motion, state.motion_online_since, state.last_door_open,
                           state.bed_changed)  # fmt: skip
        if baseline is None or at - baseline < s.inactivity_s:
            return
        if (
            self._night(s, at)
            or state.bed_occupied is not False
            or self._away(state, s, at)
            or not self._online(state, self.profile(home), "motion", at)
        ):
            return
        self._raise(home, AlarmKind.INACTIVITY, f"{baseline:.3f}", at,
                    {"last_motion": state.last_motion, "hours": s.inactivity_s / 3600})  # fmt: skip

    def _arm_morning(self, home: str, state: HomeState, s: CareSettings, t: float) -> None:
        """Schedule the next morning check (today's if not past, else tomorrow's)."""
        zone = self._zone(s)
        local = datetime.fromtimestamp(t, zone)
        day = local.date()
        end = _at(day, s.morning_end, zone)
        if t >= end:
            day = day + timedelta(days=1)
            end = _at(day, s.morning_end, zone)
        if state.morning_for != day.isoformat():
            state.morning_for = day.isoformat()
            self._push(end, home, _MORNING, day.isoformat())

    def _morning(self, home: str, state: HomeState, s: CareSettings, at: float, day: str) -> None:
        zone = self._zone(s)
        start = _at(datetime.fromisoformat(day).date(), s.morning_start, zone)
        moved = state.last_motion is not None and state.last_motion >= start
        watched = (  # the motion sensor reported the whole morning
            self._online(state, self.profile(home), "motion", at)
            and (state.motion_online_since or 0) <= start
        )
        if not moved and watched and not self._away(state, s, at):
            self._raise(home, AlarmKind.NO_MORNING_ACTIVITY, day, at,
                        {"since": start, "last_motion": state.last_motion})  # fmt: skip
        self._arm_morning(home, state, s, at + 1)

    def _arm_out_of_bed(self, home: str, state: HomeState, s: CareSettings, t: float) -> None:
        start = self._night_start(s, t)
        if start is None:  # daytime: the coming night's start
            start = self._next_night_start(s, t)
        self._push(max(t, start) + s.out_of_bed_s, home, _OUT_OF_BED, "")

    def _out_of_bed(self, home: str, state: HomeState, s: CareSettings, at: float) -> None:
        if state.bed_occupied is not False or state.bed_changed is None:
            return
        night = self._night_start(s, at)
        if night is None:
            if state.bed_changed is not None:  # still empty: look again next night
                self._push(self._next_night_start(s, at) + s.out_of_bed_s, home,
                           _OUT_OF_BED, "")  # fmt: skip
            return
        since = max(state.bed_changed, night)
        if at - since >= s.out_of_bed_s and self._online(state, self.profile(home), "bed", at):
            self._raise(home, AlarmKind.OUT_OF_BED, f"{since:.3f}", at,
                        {"empty_since": state.bed_changed, "night_from": night})  # fmt: skip

    def _night_door(self, home: str, state: HomeState, s: CareSettings, t: float,
                    trigger: str) -> None:  # fmt: skip
        if self._night_start(s, t) is None or state.bed_occupied is not False:
            return
        if not self._online(state, self.profile(home), "bed", t):
            return
        episode = f"{state.bed_changed:.3f}" if state.bed_changed is not None else f"{t:.3f}"
        self._raise(home, AlarmKind.NIGHT_DOOR, episode, t,
                    {"door_opened": t, "bed_empty_since": state.bed_changed}, trigger)  # fmt: skip

    def _battery(self, home: str, state: HomeState, p: Profile, role: str, level: float,
                 t: float, trigger: str) -> None:  # fmt: skip
        if level >= p.low_battery_pct.get(role, p.settings.low_battery_pct):
            state.battery_low_since.pop(role, None)
            return
        since = state.battery_low_since.setdefault(role, t)
        self._raise(home, AlarmKind.LOW_BATTERY, f"{role}:{since:.3f}", t,
                    {"device": role, "battery": level}, trigger)  # fmt: skip

    # -- custom rules ------------------------------------------------------------------------------

    def _rules_event(self, home: str, state: HomeState, p: Profile, rules: tuple[Rule, ...],
                     event: SensorEvent, trigger: str) -> None:  # fmt: skip
        key = f"{event.role}/{event.service}/{event.resource}"
        t = event.t
        for rule in rules:
            st = state.rules.setdefault(rule.kind, {"m": [None] * len(rule.conditions)})
            matched = False
            for i, cond in enumerate(rule.conditions):
                if cond.key != key:
                    continue
                if cond.matches(event.value):
                    st["m"][i] = t
                    matched = True
            if rule.type in ("single", "duration"):
                if not matched:
                    st["h"] = None  # the condition stopped holding
                    continue
                if st.get("h") is None:
                    st["h"] = t
                    if rule.type == "duration":
                        self._push(t + (rule.for_s or 0), home, _RULE, rule.kind)
                if rule.type == "single" and self._scheduled(p.settings, rule.schedule, t):
                    self._raise_rule(home, rule, st["h"], t, trigger, value=event.value)
            elif rule.type == "absence":
                if matched:
                    st["b"] = t
                    self._push(t + (rule.for_s or 0), home, _RULE, rule.kind)
            elif matched and self._scheduled(p.settings, rule.schedule, t):
                marks: list[float | None] = st["m"]
                window = rule.window_s or 0
                if rule.join == "any":
                    self._raise_rule(home, rule, t, t, trigger, value=event.value)
                elif all(m is not None and t - m <= window for m in marks):
                    first = min(m for m in marks if m is not None)
                    self._raise_rule(home, rule, first, t, trigger, value=event.value)

    def _rules_back(self, home: str, state: HomeState, p: Profile, role: str, t: float) -> None:
        """``role`` starts reporting (again): absences on it are counted from now."""
        for rule in p.rules:
            if rule.type == "absence" and role in rule.roles:
                st = state.rules.setdefault(rule.kind, {"m": [None] * len(rule.conditions)})
                st["b"] = max(t, st.get("b") or t)
                self._push(st["b"] + (rule.for_s or 0), home, _RULE, rule.kind)

    def _rule_due(self, home: str, state: HomeState, p: Profile, kind: str, at: float) -> None:
        rule = next((r for r in p.rules if r.kind == kind), None)
        st = state.rules.get(kind)
        if rule is None or st is None or rule.for_s is None:
            return
        since = st.get("b") if rule.type == "absence" else st.get("h")
        if since is None or at - since < rule.for_s:
            return
        if not all(self._online(state, p, role, at) for role in rule.roles):
            return  # absence of data is not absence of events
        if not self._scheduled(p.settings, rule.schedule, at):
            self._push(self._next_scheduled(p.settings, rule.schedule, at), home, _RULE, kind)
            return
        self._raise_rule(home, rule, since, at, None)

    def _raise_rule(self, home: str, rule: Rule, since: float, at: float, trigger: str | None,
                    **extra: Any) -> None:  # fmt: skip
        detail = {"rule": rule.label, "type": rule.type, "since": since, **extra}
        self._raise(home, rule.kind, f"{since:.3f}", at, detail, trigger)

    def _scheduled(self, s: CareSettings, schedule: str, t: float) -> bool:
        if schedule == "always":
            return True
        if schedule in ("night", "day"):
            return self._night(s, t) == (schedule == "night")
        start, _, end = schedule.partition("-")
        now = datetime.fromtimestamp(t, self._zone(s)).time()
        a, b = _hm(start), _hm(end)
        return a <= now < b if a < b else (now >= a or now < b)

    def _next_scheduled(self, s: CareSettings, schedule: str, t: float) -> float:
        """When ``schedule`` next begins after ``t``."""
        if schedule == "night":
            return self._next_night_start(s, t)
        start = s.night_end if schedule == "day" else schedule.partition("-")[0]
        zone = self._zone(s)
        day = datetime.fromtimestamp(t, zone).date()
        for offset in range(3):
            at = _at(day + timedelta(days=offset), start, zone)
            if at > t:
                return at
        raise AssertionError("no schedule start within three days")

    def _raise(self, home: str, kind: AlarmKind | str, episode: str, at: float,
               detail: dict[str, Any], trigger: str | None = None) -> None:  # fmt: skip
        if kind in self.profile(home).disabled:
            return  # switched off for this person
        self._submit([AlarmRequest(home, kind, episode, at, detail, trigger)])

    def _submit(self, requests: list[AlarmRequest]) -> None:
        if self._pending is not None:
            self._pending.extend(requests)
        else:
            self._flush(requests)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Hold back the alarms raised inside, and hand them to the sink together at the end
        (one write when the sink has ``raise_alarms``). Nests; the engine's lock is held."""
        with self._lock:
            if self._pending is not None:
                yield
                return
            self._pending = []
            try:
                yield
            finally:
                pending, self._pending = self._pending, None
                if pending:
                    self._flush(pending)

    def _flush(self, requests: list[AlarmRequest]) -> None:
        many = getattr(self.sink, "raise_alarms", None)
        one = self.sink.raise_alarm
        if many is None:  # a sink that takes one at a time
            for r in requests:
                self._store(r, store=lambda r=r: [
                    one(r.home, r.kind, r.episode, at=r.at, detail=r.detail, trigger=r.trigger)
                ])  # fmt: skip
        else:
            self._store(*requests, store=lambda: list(many(requests)))

    def _store(self, *requests: AlarmRequest, store: Callable[[], list[object]]) -> None:
        try:
            results = store()
        except Exception:  # the store may be away for a moment: the same alarms, later
            log.exception("raising %d care alarm(s) failed; retrying", len(requests))
            if not self._retry:
                self._retry_due = self.now + RETRY_S
            self._retry.extend(requests)
            return
        for r, stored in zip(requests, results, strict=True):
            if not stored:
                continue
            raised = Raised(r.home, r.kind, r.episode, r.at, r.trigger)
            if self.keep_raised:
                self.raised.append(raised)
            for listener in self.listeners:
                listener(raised)

    # -- time ------------------------------------------------------------------------------------

    def _zone(self, s: CareSettings) -> ZoneInfo:
        zone = self._zones.get(s.timezone)
        if zone is None:
            zone = self._zones[s.timezone] = ZoneInfo(s.timezone)
        return zone

    def _night(self, s: CareSettings, t: float) -> bool:
        return self._night_start(s, t) is not None

    def _night_start(self, s: CareSettings, t: float) -> float | None:
        """When the night containing ``t`` began; ``None`` in daytime."""
        zone = self._zone(s)
        local = datetime.fromtimestamp(t, zone)
        start, end = _hm(s.night_start), _hm(s.night_end)
        now = local.time()
        day = local.date()
        if start > end:  # across midnight (23:00-07:00)
            if now >= start:
                return _at(day, s.night_start, zone)
            if now < end:
                return _at(day - timedelta(days=1), s.night_start, zone)
            return None
        if start <= now < end:
            return _at(day, s.night_start, zone)
        return None

    def _next_night_start(self, s: CareSettings, t: float) -> float:
        zone = self._zone(s)
        day = datetime.fromtimestamp(t, zone).date()
        for offset in range(3):
            start = _at(day + timedelta(days=offset), s.night_start, zone)
            if start > t:
                return start
        raise AssertionError("no night start within three days")

    # -- restart -----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything a restart needs (timers follow from it): a copy, as JSON values."""
        return json.loads(self.snapshot_json())  # type: ignore[no-any-return]

    def snapshot_json(self) -> str:
        """:meth:`snapshot` as compact JSON text, written straight from the live state under
        the lock (no copy: at 10,000 homes this takes a tenth of the time a copy would, and
        the engine waits for it)."""
        with self._lock:
            homes = _json_object((h, vars(st)) for h, st in self.homes.items())
            people = _json_object((h, own.as_dict()) for h, own in self._own.items())
            retry = _compact([dataclasses.asdict(r) for r in self._retry])
            now = _compact(self.now)
            return f'{{"now":{now},"homes":{homes},"people":{people},"retry":{retry}}}'

    def restore(self, data: dict[str, Any]) -> None:
        """Load a :meth:`snapshot` and re-arm every timer from the state."""
        with self._lock:
            self.now = float(data.get("now", 0.0))
            self.homes = {h: HomeState.from_dict(st) for h, st in data.get("homes", {}).items()}
            self._retry = [
                AlarmRequest(**{**r, "kind": _kind_of(r["kind"])}) for r in data.get("retry", ())
            ]
            self._retry_due = self.now
            self._own = {}
            self._profiles = {}
            for home, own in data.get("people", {}).items():
                try:
                    self.configure(home, disabled=own.get("disabled", ()),
                                   rules=own.get("rules"), **own.get("overrides", {}))  # fmt: skip
                except ValueError as exc:  # e.g. a rule since removed from the definitions
                    log.warning("care: %s's saved settings not applied: %s", home, exc)
            self._rearm()

    def _arm_all(self, home: str, state: HomeState) -> None:
        s = self.settings_of(home)
        baseline = _latest(state.last_motion, state.motion_online_since, state.last_door_open,
                           state.bed_changed)  # fmt: skip
        if baseline is not None:
            self._push(baseline + s.inactivity_s, home, _INACTIVITY, "")
        if state.bed_occupied is False and state.bed_changed is not None:
            self._arm_out_of_bed(home, state, s, max(state.bed_changed, self.now - s.out_of_bed_s))
        if state.power_high_since is not None:
            self._push(state.power_high_since + s.appliance_s, home, _APPLIANCE, "")
        p = self.profile(home)
        for role, seen in state.last_seen.items():
            self._push(seen + p.offline_s.get(role, s.offline_s), home, _OFFLINE, role)
        for rule in p.rules:
            st = state.rules.get(rule.kind)
            since = None if st is None else st.get("b" if rule.type == "absence" else "h")
            if since is not None and rule.for_s is not None:
                self._push(since + rule.for_s, home, _RULE, rule.kind)
        if state.morning_for is not None:
            day = datetime.fromisoformat(state.morning_for).date()
            self._push(_at(day, s.morning_end, self._zone(s)), home, _MORNING, state.morning_for)

    def pending_timers(self) -> int:
        return len(self._timers)

    def homes_seen(self) -> Iterable[str]:
        return self.homes.keys()

    def configured_homes(self) -> list[str]:
        """The homes with a configuration of their own (:meth:`configure`)."""
        with self._lock:
            return list(self._own)


def _kind_of(kind: str) -> AlarmKind | str:
    return AlarmKind(kind) if kind in AlarmKind._value2member_map_ else kind


def _latest(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _hm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _at(day: Any, hm: str, zone: ZoneInfo) -> float:
    """The Unix time of local ``hm`` on ``day`` in ``zone``."""
    return datetime.combine(day, _hm(hm), zone).timestamp()


#: Entries per ``json.dumps`` call in a snapshot: one call holds the interpreter lock until it
#: returns, and all 10,000 homes at once stalled the API's threads for a second.
_JSON_CHUNK = 256


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _json_object(items: Iterable[tuple[str, Any]]) -> str:
    """A JSON object of ``items``, the same text as one ``json.dumps``, written
    :data:`_JSON_CHUNK` entries at a time so that other threads run in between."""
    parts: list[str] = []
    chunk: dict[str, Any] = {}
    for key, value in items:
        chunk[key] = value
        if len(chunk) == _JSON_CHUNK:
            parts.append(_compact(chunk)[1:-1])
            chunk = {}
    if chunk:
        parts.append(_compact(chunk)[1:-1])
    return "{" + ",".join(parts) + "}"
