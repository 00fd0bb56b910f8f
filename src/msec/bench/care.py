"""``msec bench care``: Connected Care homes through the whole platform, alarms out of the API.

**What runs.** The platform as ``msec serve`` runs it (:class:`Runtime`, no park simulators,
the care app installed by its entry point) in a temporary data directory: a broker (a private
Mosquitto by default, or the embedded one), ``workers`` ingest processes, SQLite (or
PostgreSQL), the HTTP API in this process and the care engine (:class:`CareService`) in a
thread of it. Every home has the five devices of the home simulator
(:class:`~msec.sdk.sim.home.HomeSimulator`), registered for real with the home as their
subject, so their readings are private (the care app's ``SENSITIVE_RESOURCES``): each
reading goes device -> MQTT -> ingest worker (signature, checks) -> the companion store,
encrypted under the person's key, with a transparency log leaf -> the care service tails the
log and decrypts -> :class:`CareEngine` -> :class:`SqlAlarms` -> ``GET /api/v1/care/alarms``.

**Time.** The homes live on a simulated clock (:class:`SimClock`): ``sim = T0 + (real - R0) *
speed``, held at ``T1 = T0 + hours`` once the span is over. Devices send each reading when the
simulated clock passes its time, and the care service gets the same clock (the runtime hands
``app.state.clock`` to the apps before they start), so its timers ("3 h without motion") come
due in simulated time. Readings carry simulated times in the past (February 2026): ingest
refuses readings from the future, not old ones.

**Who lives where.** A span of a few hours holds incidents of every kind because the homes are
spread over three time zones, each starting at a moment of the day when the engine, which
starts knowing nothing, cannot be misled by what happened before ``T0`` (see :data:`COHORTS`):
at ``T0`` it is 00:45 in Madrid (everyone asleep: night wandering, not back to bed), 06:45 in
Bangkok (still asleep: no morning activity, low battery) and 09:45 in Brisbane (everyone up,
at home, before any outing: a fall, an appliance left on, a sensor gone silent, low
battery). Each home is installed before the platform starts as the portal installs one: the
person in the people store (:mod:`msec.apps.care.people`, a name as personal data and their
time zone as their own setting, which the care app hands the engine at every start) and the
five devices registered with the home as their subject. A share of the homes
(``incident_share``) gets one scripted incident (:class:`~msec.sdk.sim.home.IncidentSpec`),
the kinds in turn, each placed so that its whole detection window lies inside the span; the
others live their plain routine. An incident kind whose window does not fit in ``hours`` is
left out and named in ``kinds_left_out``; from 4.7 h on all seven fit (the appliance, 4 h,
decides).

**Devices and connections.** Devices seal with the SDK (:meth:`msec.sdk.device.Device.seal`
and :meth:`~msec.sdk.device.Device.topic`: their own key, their own sequence numbers, one
envelope per report, a batch topic when a report has several readings) from credential files
written by the registration. ``publishers`` processes (``spawn``: they do not share the
server's GIL) each publish the envelopes of their share of the homes over ONE MQTT connection
(the SDK's paho client, QoS 1), as a gateway forwarding for many devices would: the platform
accepts this because devices are authenticated by their signature, not by their broker
connection (every device uses the shared ``device`` broker account; ingest checks that the
topic names the signer). One connection per device (50,000 for 10,000 homes) is what the SDK's
``Device.publish`` would do; the broker's per-connection cost is left out, nothing else.

**Operators.** A watcher process polls ``GET /api/v1/care/alarms`` (the active alarms, as the
board shows them) every ``poll_ms`` with the runtime's operator token and notes when it first
sees each alarm id; a handler thread of it acknowledges and resolves each one (a bench
operator account of its own, so that the API's per-principal rate limit of the watcher is not
shared). Resolving matters: one active alarm per (home, kind) would otherwise hide a second
alarm for the same incident; resolved, a second one would be stored and counted in
``duplicates``.

**Figures.** ``readings`` sent, ``acked`` by the broker, ``stored`` (companion records) and
``lost`` = acked - stored; ``readings_per_s`` stored per real second of the run;
``incidents``, ``alarms_raised``; ``missed`` and ``false_positives`` from
:func:`msec.apps.care.truth.score` (an alarm counts when its ``raised_at``, in simulated time,
is within the incident's detection window); ``duplicates``: alarms beyond the first for one
incident and kind. ``p50_ms`` / ``p99_ms`` / ``max_ms``: from the alarm's cause to the watcher
first seeing it: for an alarm raised by a reading (``trigger``: night door, low battery), that
reading's storage time (its companion record's ``created``, set in the storing transaction);
for a timer (inactivity, out of bed, appliance, no morning activity, device offline), the real
time at which the simulated clock passed the alarm's ``raised_at`` (its due time).
``raise_p99_ms`` is the part up to the alarm's commit (the engine and the alarm store),
``show_p99_ms`` the rest (the API, the polling); ``latency_by_kind`` splits them by alarm
kind; ``unseen`` counts alarms the watcher never saw.
``ingest_p50_ms`` / ``ingest_p99_ms`` / ``ingest_max_ms``: publish -> stored for a sample of
messages (about 20,000); ``publish_late_max_ms``: how far the publishers fell behind the
simulated clock; ``lag_max_sim_s``: the two together in simulated seconds, outside a restart,
and ``kept_up`` whether that stayed under :data:`KEPT_UP_SIM_S` (see "Limits" below).
``drain_s``: real seconds from the end of the span until everything was stored, seen by the
engine and handled.

**Restart** (``restart``, external broker only): in the middle of the run the runtime is
stopped (API, engine, which saves its snapshot, workers) and started again on the same data
directory and ports while the devices keep publishing; Mosquitto keeps their messages for the
workers' persistent sessions. The embedded broker (amqtt) restarts with the platform and
forgets what it had queued (see :mod:`msec.transport.broker`), so it is refused there. Alarms
whose cause fell in the restart window wait for the platform to be back: they are in
``p99_ms`` and reported apart (``restart.alarms_during``, ``p99_ms_outside_restart``).
While the platform is down the simulated clock runs on: ``restart.down_sim_s`` is that gap.
The engine fires timers that came due meanwhile as soon as it has replayed the log, before the
broker's backlog is stored, so that gap plus a device's heartbeat gap (up to 8.5 min) must stay
under the offline limit (30 min) or every device looks offline: keep ``speed`` x downtime
well below 20 simulated minutes.

**Stalls.** A small process of the bench sleeps 0.1 s at a time and notes every wake-up
that came :data:`STALL_GAP_S` (2 s) or more late: the whole machine stood still (a virtual
machine paused or snapshotted by its host, hard swapping) or the wall clock jumped. No load
the bench makes delays a sleeping process that long on a working machine. ``stalls`` lists
them (``at_s`` from the run's start, ``s`` long); alarms whose wait overlaps a stall or the
two minutes after it (:data:`STALL_CATCH_UP_S`) stay in ``p99_ms`` and are also reported
apart: ``alarms_during_stalls``, ``max_ms_during_stalls``, ``p99_ms_outside_stalls``.
``kept_up_outside_stalls`` / ``lag_max_sim_s_outside_stalls`` are ``kept_up`` over the
sampled messages that no stall delayed. ``cpu_steal_s`` is the CPU time the hypervisor gave
to other guests during the run (``/proc/stat``), a sign of a shared host.

**Limits on one machine.** Everything shares the cores: the publishers (Ed25519 signing),
the broker, the workers (verification, encryption, durable writes), the API and the engine
(decryption). ``speed`` x readings per home per second (0.040) x ``homes`` is the offered
load. When the platform stores readings later than ``speed`` x that delay allows (``kept_up``
false), the engine, which fires its timers on the simulated clock, takes the platform's own
backlog for silent devices: at speed 60 a backlog of 30 s is 30 simulated minutes, and every
device looks offline. Such a run measures an overloaded machine, not the alarms. The runtime's
periodic tamper check (``[log] verify_every_s``, the first one a minute after start) verifies
the whole log in a child process (:mod:`msec.platform.tamper`, niced): it takes CPU, not the
engine's interpreter lock, and is left on, as deployed.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import queue
import random
import secrets
import socket
import tempfile
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as clock_time
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import httpx

from msec.core.care import DEVICE_ROLES, HEARTBEAT_S, CareSettings, Incident, device_name
from msec.sdk.sim.home import INCIDENT_NAMES, HomeSimulator, IncidentSpec

# The publisher and watcher processes import this module too: the platform's modules are
# imported inside run_care_bench only, so that they start light.

__all__ = [
    "COHORTS",
    "T0",
    "Cohort",
    "HomePlan",
    "Scenario",
    "SimClock",
    "plan_scenario",
    "run_care_bench",
]

#: The start of the simulated span: 2026-02-11 00:45 in Madrid (winter: none of the three
#: zones changes its clock in the days around it).
T0: Final = datetime(2026, 2, 10, 23, 45, tzinfo=UTC).timestamp()
TARGET_P99_MS: Final = 1000.0
#: ``kept_up`` is false when the platform's view of the homes fell this far (simulated s)
#: behind the simulated clock outside a restart: the engine, which fires timers on that clock,
#: then judges silences that are only the platform's own backlog.
KEPT_UP_SIM_S: Final = 300.0
#: The stall watcher, which only sleeps ``STALL_TICK_S`` at a time, reports a stall when it
#: wakes up this much later than asked: every process of the machine stood still that long.
STALL_GAP_S: Final = 2.0
STALL_TICK_S: Final = 0.1
#: An alarm is counted apart when its wait overlaps a stall or this long after it (while the
#: backlog the stall left is stored and the engine catches up).
STALL_CATCH_UP_S: Final = 120.0
#: An incident starts this long after T0 at the earliest: every device has reported by then
#: (a heartbeat gap is 8.5 min at most), so the engine knows each home's state.
LEAD_S: Final = 600.0
#: And its detection window ends this long before the end of the span at the latest.
SLACK_S: Final = 300.0
_HOUR = 3600.0
_ROLES: Final = ("gw", "motion", "door", "bed", "plug")
_MARGIN = 2 * HEARTBEAT_S  # the simulator's detection margin: two heartbeats
_DEFAULTS = CareSettings()


@dataclass(frozen=True, slots=True)
class Cohort:
    """Homes in one time zone, and the incidents they take (all local windows of that day)."""

    timezone: str
    incidents: tuple[str, ...]


#: At T0 it is 00:45 in Madrid (asleep since 23:10 at the latest: the engine learns "in bed"
#: from the first heartbeat), 06:45 in Bangkok (asleep; the motion sensor has reported before
#: 07:00, which the morning check needs) and 09:45 in Brisbane (up since 08:30 at the latest,
#: at home: outings and visits start at 10:00 at the earliest, so no door opened before T0
#: is hidden from the engine).
COHORTS: Final = (
    Cohort("Europe/Madrid", ("night_wandering", "not_back_to_bed")),
    Cohort("Asia/Bangkok", ("no_morning_activity", "low_battery")),
    Cohort("Australia/Brisbane", ("fall", "appliance_left_on", "sensor_silent", "low_battery")),
)

#: Local hours an incident may start in (the simulator's windows, IncidentSpec).
_WINDOWS: Final[dict[str, tuple[float, float]]] = {
    "fall": (10.0, 18.0),
    "night_wandering": (1.0, 4.0),
    "not_back_to_bed": (1.0, 4.0),
    "appliance_left_on": (10.0, 14.0),
    "no_morning_activity": (7.0, 7.0),  # its start is 07:00 whatever is given
    "sensor_silent": (10.5, 17.5),
    "low_battery": (9.0, 20.0),
}
#: The longest detection window of each incident from its start (the simulator's rule delay
#: plus two heartbeats).
_DETECT_S: Final[dict[str, float]] = {
    "fall": _DEFAULTS.inactivity_s + _MARGIN,
    "night_wandering": 300.0 + _MARGIN,  # the door opens 1-5 min after getting up
    "not_back_to_bed": _DEFAULTS.out_of_bed_s + _MARGIN,
    "appliance_left_on": _DEFAULTS.appliance_s + _MARGIN,
    "no_morning_activity": 3 * _HOUR + _MARGIN,  # 07:00 -> 10:00
    "sensor_silent": _DEFAULTS.offline_s + _MARGIN,
    "low_battery": _MARGIN,
}


# -- the scenario ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HomePlan:
    """One home: its name, time zone and scripted incidents (none for most)."""

    name: str
    timezone: str
    incidents: tuple[IncidentSpec, ...] = ()


@dataclass(frozen=True)
class Scenario:
    """The homes of a run over ``[t0, t1)`` and the incidents they will have."""

    t0: float
    t1: float
    seed: int
    homes: tuple[HomePlan, ...]
    #: Incident kinds whose detection window does not fit in the span.
    left_out: tuple[str, ...]

    @property
    def span_s(self) -> float:
        return self.t1 - self.t0

    def truth(self) -> list[Incident]:
        """The scripted incidents with their ground truth, from the simulator."""
        sims: dict[str, HomeSimulator] = {}
        found: list[Incident] = []
        for home in self.homes:
            if home.incidents:
                sim = sims.get(home.timezone)
                if sim is None:
                    sim = sims[home.timezone] = HomeSimulator(self.seed, timezone=home.timezone)
                found += sim.incidents_between(
                    home.name, self.t0, self.t1, incidents=home.incidents
                )
        return found


def _local(t: float, zone: ZoneInfo, hours: float) -> float:
    """The Unix time of local ``hours`` on the local date of ``t``."""
    day: date = datetime.fromtimestamp(t, zone).date()
    whole = int(hours)
    minutes = round((hours - whole) * 60)
    return datetime.combine(day, clock_time(whole, minutes), zone).timestamp()


def _start_window(kind: str, zone: ZoneInfo, t0: float, t1: float) -> tuple[float, float] | None:
    """When an incident of ``kind`` may start in ``zone`` so that its whole detection window
    lies in ``[t0 + LEAD_S, t1 - SLACK_S]``; ``None`` if it cannot."""
    lo_h, hi_h = _WINDOWS[kind]
    lo = max(_local(t0, zone, lo_h), t0 + LEAD_S)
    hi = min(_local(t0, zone, hi_h), t1 - SLACK_S - _DETECT_S[kind])
    return (lo, hi) if lo <= hi else None


def plan_scenario(homes: int, hours: float, incident_share: float, seed: int) -> Scenario:
    """Place ``homes`` homes in the :data:`COHORTS` and script incidents in a share of them.

    Guaranteed: ``round(homes * incident_share)`` incidents (when that is not 0: at least one
    per kind that fits, at most one per home), the kinds in turn; each starts in its local
    window, at least :data:`LEAD_S` after ``T0``, and its detection window ends
    :data:`SLACK_S` before the span does. ``ValueError`` for no home, a span outside 1..24 h
    or a share outside 0..1.
    """
    if homes < 1:
        raise ValueError("at least one home")
    if not 1.0 <= hours <= 24.0:
        raise ValueError("hours must be within 1..24")
    if not 0.0 <= incident_share <= 1.0:
        raise ValueError("incident_share must be within 0..1")
    t0, t1 = T0, T0 + hours * _HOUR
    zones = [ZoneInfo(c.timezone) for c in COHORTS]
    fits: dict[str, list[tuple[int, tuple[float, float]]]] = {}
    for n, cohort in enumerate(COHORTS):
        for kind in cohort.incidents:
            window = _start_window(kind, zones[n], t0, t1)
            if window is not None:
                fits.setdefault(kind, []).append((n, window))
    kinds = [k for k in INCIDENT_NAMES if k in fits]
    wanted = round(homes * incident_share) if incident_share > 0 else 0
    count = min(homes, max(wanted, len(kinds))) if wanted and kinds else 0
    rng = random.Random(seed)
    scripted: dict[int, tuple[int, IncidentSpec]] = {}
    for k in range(count):
        kind = kinds[k % len(kinds)]
        options = fits[kind]
        cohort, (lo, hi) = options[(k // len(kinds)) % len(options)]
        scripted[k * homes // count] = (cohort, IncidentSpec(kind, rng.uniform(lo, hi)))
    plans = []
    for i in range(homes):
        cohort, spec = scripted.get(i, (i % len(COHORTS), None))
        plans.append(HomePlan(f"home-{i:05d}", COHORTS[cohort].timezone, (spec,) if spec else ()))
    left_out = tuple(k for k in INCIDENT_NAMES if k not in fits)
    return Scenario(t0, t1, seed, tuple(plans), left_out)


# -- the simulated clock --------------------------------------------------------------------------


@dataclass
class SimClock:
    """``t0 + (real - r0) * speed``: held at ``t0`` until :meth:`start`, at ``t1`` after.

    The publishers build their own from ``t0``, ``speed`` and the ``r0`` they are given;
    every process reads the same host clock, so they agree on simulated time.
    """

    t0: float
    t1: float
    speed: float
    r0: float | None = None

    def start(self, r0: float) -> None:
        self.r0 = r0

    def __call__(self) -> float:
        if self.r0 is None:
            return self.t0
        return min(self.t1, self.t0 + (time.time() - self.r0) * self.speed)

    def real_at(self, sim: float) -> float:
        """The real (epoch) time at which the clock passes ``sim``."""
        assert self.r0 is not None, "the clock has not started"
        return self.r0 + (sim - self.t0) / self.speed


# -- the publishers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Broker:
    host: str
    port: int
    username: str
    password: str


@dataclass(frozen=True)
class _PubPlan:
    index: int
    homes: tuple[HomePlan, ...]
    credentials: str  # directory of <device>.json
    seed: int
    t0: float
    t1: float
    speed: float
    broker: _Broker
    chunk_s: float
    sample_every: int


@dataclass
class _PubResult:
    messages: int = 0
    readings: int = 0
    acked_messages: int = 0
    acked_readings: int = 0
    #: (device, first seq, epoch s after the publish call) of every sample_every-th message
    samples: list[tuple[str, int, float]] = field(default_factory=list)
    #: The longest a message went out after the simulated clock passed its time (real s).
    late_max_s: float = 0.0
    late: list[float] = field(default_factory=list)
    cpu_s: float = 0.0


Message = tuple[float, str, list[tuple[str, str, Any, float]]]  # (t, device, rows)


def _messages(
    sims: dict[str, HomeSimulator], homes: Sequence[HomePlan], a: float, b: float
) -> list[Message]:
    """The reports of ``homes`` in ``[a, b)``: one message per device and time, by time."""
    grouped: dict[tuple[str, float], list[tuple[str, str, Any, float]]] = {}
    for home in homes:
        for device, service, resource, value, t in sims[home.timezone].readings_between(
            home.name, a, b, incidents=home.incidents
        ):
            grouped.setdefault((device, t), []).append((service, resource, value, t))
    out = [(t, device, rows) for (device, t), rows in grouped.items()]
    out.sort(key=lambda m: m[0])
    return out


class _Acks:
    """QoS 1 messages in flight: how many (and how many readings) the broker acknowledged."""

    def __init__(self) -> None:
        self.pending: deque[tuple[Any, int]] = deque()
        self.messages = 0
        self.readings = 0

    def add(self, info: Any, readings: int) -> None:
        self.pending.append((info, readings))

    def collect(self) -> None:
        pending = self.pending
        while pending and pending[0][0].is_published():
            _, n = pending.popleft()
            self.messages += 1
            self.readings += n

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.collect()
            if not self.pending or time.monotonic() > deadline:
                return
            time.sleep(0.05)


def _publish_run(plan: _PubPlan, go: Any, r0_box: Any, ready: Any) -> _PubResult:
    """A publisher process: load the devices, connect, wait for ``go``, then send each report
    when the simulated clock passes it; wait for the broker's acknowledgements at the end."""
    from msec.sdk.device import Device
    from msec.transport.mqtt import connect

    result = _PubResult()
    devices: dict[str, Device] = {}
    for home in plan.homes:
        for role in _ROLES:
            name = device_name(home.name, role)
            devices[name] = Device.load(Path(plan.credentials) / f"{name}.json")
    sims = {
        zone: HomeSimulator(plan.seed, timezone=zone, plan_cache=4 * len(plan.homes) + 16)
        for zone in {h.timezone for h in plan.homes}
    }
    b = plan.broker
    client = connect(
        b.host,
        b.port,
        client_id=f"bench-care-gw-{plan.index}-{secrets.token_hex(3)}",
        username=b.username,
        password=b.password,
    )
    ready.put(plan.index)
    go.wait()
    clock = SimClock(plan.t0, plan.t1, plan.speed, r0_box.value)
    cpu0 = time.process_time()
    acks = _Acks()
    pending: deque[Message] = deque()
    made = plan.t0
    try:
        while True:
            now = clock()
            while pending and pending[0][0] <= now:
                _send(client, devices, pending.popleft(), clock, acks, result, plan.sample_every)
            if made >= plan.t1 and not pending:
                break
            if made < plan.t1 and made < now + 2 * plan.chunk_s:
                end = min(plan.t1, made + plan.chunk_s)
                pending.extend(_messages(sims, plan.homes, made, end))
                made = end
                continue
            acks.collect()
            due = pending[0][0] if pending else made
            time.sleep(min(0.05, max(0.001, clock.real_at(due) - time.time())))
        acks.wait(120.0)
    finally:
        client.disconnect()
        client.loop_stop()
    result.acked_messages, result.acked_readings = acks.messages, acks.readings
    result.cpu_s = time.process_time() - cpu0
    return result


def _send(
    client: Any,
    devices: dict[str, Any],
    message: Message,
    clock: SimClock,
    acks: _Acks,
    result: _PubResult,
    sample_every: int,
) -> None:
    t, name, rows = message
    device = devices[name]
    seq = device.next_seq
    info = client.publish(device.topic(rows), device.seal(rows, at=t), qos=1)
    sent = time.time()
    acks.add(info, len(rows))
    late = sent - clock.real_at(t)
    result.late_max_s = max(result.late_max_s, late)
    if result.messages % sample_every == 0:
        result.samples.append((name, seq, sent))
        result.late.append(late)
    result.messages += 1
    result.readings += len(rows)


# -- the operators: watching the API, handling alarms ---------------------------------------------


@dataclass(frozen=True)
class _WatchPlan:
    url: str
    watch_token: str
    handle_token: str
    poll_s: float


@dataclass
class _WatchResult:
    #: alarm id -> (first seen epoch s, the alarm as the API gave it)
    seen: dict[int, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    polls: int = 0
    #: each answered poll's round trip, s (a slow API shows here, not only in ``show_ms``)
    poll_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    handled: int = 0
    handle_errors: Counter[str] = field(default_factory=Counter)


def _watch_run(plan: _WatchPlan, stop: Any) -> _WatchResult:
    """The watcher process: poll the active alarms, hand each new one to the handler."""
    result = _WatchResult()
    todo: queue.Queue[int | None] = queue.Queue()
    handler = threading.Thread(target=_handle, args=(plan, todo, result), daemon=True)
    handler.start()
    headers = {"Authorization": f"Bearer {plan.watch_token}"}
    with httpx.Client(base_url=plan.url, timeout=5.0, headers=headers) as client:
        while not stop.is_set():
            began = time.monotonic()
            try:
                answer = client.get("/api/v1/care/alarms", params={"limit": 1000})
            except httpx.HTTPError as exc:  # the platform restarting
                result.errors[type(exc).__name__] += 1
                stop.wait(0.1)
                continue
            now = time.time()
            result.polls += 1
            result.poll_s.append(time.monotonic() - began)
            if answer.status_code != 200:
                result.errors[str(answer.status_code)] += 1
            else:
                for alarm in answer.json():
                    if alarm["id"] not in result.seen:
                        result.seen[alarm["id"]] = (now, alarm)
                        todo.put(alarm["id"])
            stop.wait(max(0.0, plan.poll_s - (time.monotonic() - began)))
    todo.put(None)
    handler.join(30)
    return result


def _handle(plan: _WatchPlan, todo: queue.Queue[int | None], result: _WatchResult) -> None:
    """Acknowledge then resolve each alarm, as an operator would (retrying through 429s and
    a restart)."""
    headers = {"Authorization": f"Bearer {plan.handle_token}"}
    with httpx.Client(base_url=plan.url, timeout=5.0, headers=headers) as client:
        while (alarm_id := todo.get()) is not None:
            for step in ("acknowledge", "resolve"):
                _post(client, f"/api/v1/care/alarms/{alarm_id}/{step}", result)
            result.handled += 1


def _post(client: httpx.Client, path: str, result: _WatchResult) -> None:
    for _ in range(300):
        try:
            answer = client.post(path, json={"note": "msec bench care"})
        except httpx.HTTPError as exc:
            result.handle_errors[type(exc).__name__] += 1
            time.sleep(0.2)
            continue
        if answer.status_code == 429:
            result.handle_errors["429"] += 1
            time.sleep(float(answer.headers.get("Retry-After", "1")))
            continue
        if answer.status_code != 200:
            result.handle_errors[str(answer.status_code)] += 1
        return


# -- the stall watcher ---------------------------------------------------------------------------


def _stall_run(stop: Any, tick_s: float = STALL_TICK_S, gap_s: float = STALL_GAP_S) -> list[
    tuple[float, float]
]:
    """The stall watcher process: sleep ``tick_s`` at a time and note each wake-up that came
    ``gap_s`` or more late, on the monotonic or the wall clock: every process of the machine
    was stopped that long (a virtual machine paused or snapshotted by its host, a machine
    swapping hard), or the wall clock, by which the latencies are measured, jumped. Returns
    those windows as (began, ended) epoch seconds."""
    stalls: list[tuple[float, float]] = []
    wall, mono = time.time(), time.monotonic()
    while not stop.wait(tick_s):
        now_wall, now_mono = time.time(), time.monotonic()
        if max(now_wall - wall, now_mono - mono) - tick_s >= gap_s:
            stalls.append((wall, now_wall))
        wall, mono = now_wall, now_mono
    return stalls


def _overlaps_stall(cause: float, seen: float, stalls: Sequence[tuple[float, float]]) -> bool:
    """Whether an alarm's wait, from its cause to its first sight, overlaps a stall or the
    catch-up after it (:data:`STALL_CATCH_UP_S`)."""
    return any(cause <= ended + STALL_CATCH_UP_S and seen >= began for began, ended in stalls)


def _cpu_steal_s() -> float | None:
    """CPU time the hypervisor gave to others, over all cores (``None``: not Linux)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# -- child processes ------------------------------------------------------------------------------


def _child(target: Callable[..., Any], args: tuple[Any, ...], out: Any) -> None:
    """Run ``target`` in a child process; its result (or its traceback) goes to ``out``."""
    try:
        out.put(("ok", target(*args)))
    except BaseException:
        out.put(("error", traceback.format_exc()))


class _Children:
    """Spawned processes whose results come back through one queue each."""

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: list[tuple[Any, Any]] = []
        self.results: dict[int, tuple[str, Any]] = {}

    def start(self, target: Callable[..., Any], *args: Any) -> int:
        out = self.ctx.Queue()
        proc = self.ctx.Process(target=_child, args=(target, args, out), daemon=True)
        proc.start()
        self.procs.append((proc, out))
        return len(self.procs) - 1

    def done(self, index: int) -> bool:
        """Whether process ``index`` has sent its result (read it from the queue now: a
        child cannot exit before the parent has read what it sent)."""
        if index in self.results:
            return True
        proc, out = self.procs[index]
        try:
            self.results[index] = out.get(timeout=0.01)
        except queue.Empty:
            if not proc.is_alive():
                self.results[index] = ("error", f"exited with {proc.exitcode}, no result")
            return index in self.results
        return True

    def result(self, index: int, timeout: float) -> Any:
        """The result of process ``index`` (``RuntimeError`` with its traceback if it
        failed, ``TimeoutError`` if none came within ``timeout`` s)."""
        if not _wait(lambda: self.done(index), timeout, 0.0):
            raise TimeoutError(f"bench process {index} sent no result in {timeout} s")
        proc, _ = self.procs[index]
        proc.join(10)
        status, value = self.results[index]
        if status != "ok":
            raise RuntimeError(f"a bench process failed:\n{value}")
        return value

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


# -- the run --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port_free(host: str, port: int, timeout: float = 15.0) -> None:
    """Until nothing accepts connections on ``host:port`` (the old server has gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                pass
        except OSError:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} still in use after {timeout} s")


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


@dataclass
class _Restart:
    at_real: float
    began: float = 0.0
    stopped: float = 0.0
    back: float = 0.0
    timers_open: int = 0
    done: bool = False


def _install_homes(
    platform: Any, scenario: Scenario, out: Path, endpoint: Any, say: Callable[[str], None]
) -> None:
    """Install every home as the portal does: the person (a name as personal data, their
    time zone as their own setting) in the people store, and their five devices with the
    home as subject (credentials in ``out``). Done before the runtime starts: the care app
    gives the engine every stored person's settings when it starts (and again after a
    restart)."""
    from msec.apps.care.people import Profile, SqlPeople

    people = SqlPeople(platform.engine, platform.companion, platform.trust.log)
    people.create_schema()
    started = time.monotonic()
    for n, home in enumerate(scenario.homes):
        people.add(home.name, Profile(f"Bench person {n}"), by="bench")
        people.set_config(home.name, settings={"timezone": home.timezone}, disabled=(),
                          rules={}, by="bench")  # fmt: skip
        for role in _ROLES:
            name = device_name(home.name, role)
            platform.add_device(
                name,
                DEVICE_ROLES[role][0],
                subject=home.name,
                endpoint=endpoint,
                out=out / f"{name}.json",
                description=f"bench {role} of {home.name}",
            )
        if n and n % 500 == 0:
            rate = n / (time.monotonic() - started)
            say(f"  {n}/{len(scenario.homes)} homes ({rate:.0f}/s)…")


def _stored(platform: Any) -> int:
    import sqlalchemy as sa

    from msec.companion.sql import records_table

    # Readings only: the people's personal data are companion records too.
    query = sa.select(sa.func.count()).where(records_table.c.kind == "reading")
    with platform.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _wait(condition: Callable[[], bool], timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def _drain(progress: Callable[[], int], target: int, stall_s: float = 60.0) -> bool:
    """Wait until ``progress()`` reaches ``target``, as long as it keeps moving (an overloaded
    run drains a backlog for minutes); ``False`` if it stood still for ``stall_s``."""
    last, moved = progress(), time.monotonic()
    while last < target:
        time.sleep(0.5)
        now = progress()
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            return False
    return True


def run_care_bench(
    *,
    homes: int,
    speed: float,
    hours: float = 5.0,
    restart: bool = False,
    incident_share: float = 0.2,
    publishers: int = 2,
    broker: str = "mosquitto",
    workers: int = 2,
    database: str = "sqlite",
    database_url: str | None = None,
    poll_ms: float = 50.0,
    seed: int = 1,
    keep: Path | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Run the benchmark in a temporary directory (``keep``: in that new directory, left
    there); returns the figures as a dict.

        ``ValueError`` for impossible parameters (``restart`` with the embedded broker, a span
        too short for any incident); ``ServiceUnavailable`` when Mosquitto (or PostgreSQL) is
        missing; ``RuntimeError`` when a bench process fails.
    """
    from msec.platform.runtime import Runtime
    from msec.platform.settings import Settings
    from msec.sdk.device import Endpoint
    from msec.testing.services import mosquitto_server, postgres_server

    def say(text: str) -> None:
        if progress is not None:
            progress.print(text)

    if speed <= 0 or not math.isfinite(speed):
        raise ValueError("speed must be a positive number")
    if broker not in ("mosquitto", "embedded"):
        raise ValueError("broker is mosquitto or embedded")
    if restart and broker != "mosquitto":
        raise ValueError(
            "--restart needs --broker mosquitto: the embedded broker restarts with "
            "the platform and forgets the messages it had queued"
        )
    scenario = plan_scenario(homes, hours, incident_share, seed)
    truth = scenario.truth()
    late = [i for i in truth if i.start + i.detect_within_s > scenario.t1]
    assert not late, f"incidents whose detection window leaves the span: {late[:3]}"
    clock = SimClock(scenario.t0, scenario.t1, speed)
    children = _Children()
    saved_env = os.environ.get("MSEC_BENCH_CARE_MQTT_PASSWORD")
    with contextlib.ExitStack() as stack:
        stack.callback(children.stop_all)
        if keep is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="msec-bench-care-")))
        else:  # kept for a look afterwards (msec verify, the database)
            tmp = keep
            tmp.mkdir(parents=True)
        device_pw = secrets.token_urlsafe(18)
        mqtt: dict[str, Any]
        if broker == "mosquitto":
            ingest_pw = secrets.token_urlsafe(18)
            handle = stack.enter_context(
                mosquitto_server(
                    tmp / "mosquitto", users={"ingest": ingest_pw, "device": device_pw}
                )
            )
            os.environ["MSEC_BENCH_CARE_MQTT_PASSWORD"] = ingest_pw
            stack.callback(_restore_env, saved_env)
            mqtt = {
                "broker": "external",
                "host": handle.host,
                "port": handle.port,
                "username": "ingest",
                "password_env": "MSEC_BENCH_CARE_MQTT_PASSWORD",
                "workers": workers,
            }
        else:
            mqtt = {"broker": "embedded", "port": _free_port(), "workers": 1}
        url = database_url or ""
        if not url and database == "postgresql":
            url = stack.enter_context(postgres_server(tmp / "pg")).url
        http_port = _free_port()
        settings = Settings.load(
            None, data_dir=tmp / "data", http={"port": http_port}, mqtt=mqtt, database={"url": url}
        )
        runtime = Runtime(settings, clock=clock)
        if broker == "embedded":
            device_pw = runtime.platform.secrets["mqtt_device"]
        host, port = settings.mqtt.host, settings.mqtt.port
        endpoint = Endpoint(host, port, "device", device_pw)
        credentials = tmp / "devices"
        say(f"installing {homes} homes ({homes * len(_ROLES)} devices)…")
        setup_began = time.monotonic()
        _install_homes(runtime.platform, scenario, credentials, endpoint, say)
        install_s = time.monotonic() - setup_began
        say("starting the platform…")
        runtime.start()
        stopped = False

        def stop_runtime() -> None:
            if not stopped:
                runtime.stop()

        stack.callback(stop_runtime)
        committed: dict[int, float] = {}  # alarm id -> when its "raised" was committed
        _note_commits(runtime, committed)
        handle_token = _handler_token(runtime.platform, settings.tenant)
        watch = _WatchPlan(
            runtime.url, runtime.platform.secrets["operator_token"], handle_token, poll_ms / 1000.0
        )
        stop_watch = children.ctx.Event()
        watcher = children.start(_watch_run, watch, stop_watch)

        count = max(1, min(publishers, homes))
        go, ready = children.ctx.Event(), children.ctx.Queue()
        r0_box = children.ctx.Value("d", 0.0)
        chunk_s = max(60.0, speed)  # about one real second of readings at a time
        expected = homes * 0.04 * scenario.span_s
        sample_every = max(1, int(expected / 2.7 / 20000))
        pubs = []
        for k in range(count):
            plan = _PubPlan(
                k,
                scenario.homes[k::count],
                str(credentials),
                seed,
                scenario.t0,
                scenario.t1,
                speed,
                _Broker(host, port, "device", device_pw),
                chunk_s,
                sample_every,
            )
            pubs.append(children.start(_publish_run, plan, go, r0_box, ready))
        for _ in range(count):
            ready.get(timeout=300)
        setup_s = time.monotonic() - setup_began
        stop_stalls = children.ctx.Event()
        stall_watcher = children.start(_stall_run, stop_stalls)
        steal_before = _cpu_steal_s()
        r0 = time.time() + 0.5
        r0_box.value = r0
        clock.start(r0)
        go.set()
        run_s = scenario.span_s / speed
        say(
            f"{homes} homes, {len(truth)} incidents, {hours:g} simulated hours at {speed:g}x: "
            f"{run_s:.0f} s…"
        )
        load_before = os.getloadavg()[0]
        plan_restart = _Restart(r0 + run_s / 2) if restart else None
        wal = _WalWatch(None if url else settings.data_dir / "msec.db-wal")
        while not all(children.done(p) for p in pubs):
            wal.sample()
            if (
                plan_restart is not None
                and not plan_restart.done
                and time.time() >= plan_restart.at_real
            ):
                runtime = _restart(runtime, settings, clock, plan_restart, say)
                _note_commits(runtime, committed)
            time.sleep(0.2)
        results: list[_PubResult] = [children.result(p, 60) for p in pubs]
        ended = time.time()
        load_after = os.getloadavg()[0]
        acked = sum(r.acked_readings for r in results)
        platform = runtime.platform
        say("draining: storage, engine, operators…")
        _drain(lambda: _stored(platform), acked)
        service = runtime.apps["care"].service
        _drain(lambda: service.feed.cursor, platform.trust.log.size())
        alarms = runtime.apps["care"].alarms
        time.sleep(max(0.5, 3 * poll_ms / 1000.0))  # the engine's last step, then a poll
        _drain(lambda: -len(alarms.active()), 0)
        drained = time.time()
        stop_watch.set()
        stop_stalls.set()
        watched: _WatchResult = children.result(watcher, 60)
        stalls: list[tuple[float, float]] = children.result(stall_watcher, 60)
        steal_after = _cpu_steal_s()
        stored = _stored(platform)
        raised = alarms.history(limit=10**9)
        created = platform.companion.created_at([a.trigger for a in raised if a.trigger])
        samples = [s for r in results for s in r.samples]
        stored_at = platform.companion.created_at([f"{d}/{seq}" for d, seq, _ in samples])
        security_events = sum(platform.events.counts().values())
        checks = _tamper_checks(settings.data_dir / "verify" / "history.jsonl", r0)
        stopped = True
        runtime.stop()
    figures = _score(truth, raised, watched, created, committed, clock, plan_restart, stalls)
    # Publish -> stored per sampled message; and how far behind simulated time the platform's
    # view of the homes fell at worst outside a restart (whose backlog is expected).
    # The sampled lateness and ingest delays outside stalls tell whether the platform kept
    # up when the machine ran.
    ingest: list[float] = []
    normal: list[float] = []
    calm: list[float] = []
    for device, seq, sent in samples:
        at = stored_at.get(f"{device}/{seq}")
        if at is not None:
            ingest.append((at - sent) * 1000)
            if not _in_restart(sent, plan_restart):
                normal.append(at - sent)
                if not _overlaps_stall(sent, at, stalls):
                    calm.append(at - sent)
    late_max_s = max(r.late_max_s for r in results)
    lag_max_sim_s = (late_max_s + max(normal, default=0.0)) * speed
    sent_at = [s[2] for r in results for s in r.samples]
    late_calm = [
        late
        for sent, late in zip(sent_at, (x for r in results for x in r.late), strict=True)
        if not _overlaps_stall(sent - late, sent, stalls)
    ]
    lag_calm_sim_s = (max(late_calm, default=0.0) + max(calm, default=0.0)) * speed
    readings = sum(r.readings for r in results)
    return {
        "homes": homes,
        "speed": speed,
        "hours": hours,
        "t0": datetime.fromtimestamp(scenario.t0, UTC).isoformat(),
        "kinds_left_out": list(scenario.left_out),
        "cohorts": {
            c.timezone: sum(1 for h in scenario.homes if h.timezone == c.timezone) for c in COHORTS
        },
        "readings": readings,
        "messages": sum(r.messages for r in results),
        "acked": acked,
        "stored": stored,
        "lost": acked - stored,
        "unacked": readings - acked,
        "run_s": round(ended - r0, 1),
        "readings_per_s": round(stored / (ended - r0), 1),
        **figures,
        "ingest_p50_ms": _percentile(ingest, 0.5),
        "ingest_p99_ms": _percentile(ingest, 0.99),
        "ingest_max_ms": round(max(ingest), 1) if ingest else None,
        "ingest_samples": len(ingest),
        "publish_late_p99_ms": _percentile([x * 1000 for r in results for x in r.late], 0.99),
        "publish_late_max_ms": round(late_max_s * 1000, 1),
        "lag_max_sim_s": round(lag_max_sim_s, 1),
        "kept_up": lag_max_sim_s < KEPT_UP_SIM_S,
        "lag_max_sim_s_outside_stalls": round(lag_calm_sim_s, 1),
        "kept_up_outside_stalls": lag_calm_sim_s < KEPT_UP_SIM_S,
        "cpu_steal_s": (
            None if steal_before is None or steal_after is None
            else round(steal_after - steal_before, 1)
        ),
        "drain_s": round(drained - ended, 1),
        "publishers": count,
        "publisher_cpu_cores": round(sum(r.cpu_s for r in results) / max(ended - r0, 1e-9), 2),
        "polls": watched.polls,
        "poll_ms": poll_ms,
        "poll_p99_ms": _percentile([x * 1000 for x in watched.poll_s], 0.99),
        "poll_max_ms": round(max(watched.poll_s) * 1000, 1) if watched.poll_s else None,
        "api_errors": dict(watched.errors),
        "handled": watched.handled,
        "handle_errors": dict(watched.handle_errors),
        "security_events": security_events,
        "tamper_checks": checks,
        "wal_max_mb": wal.max_mb(),
        "broker": broker,
        "workers": settings.mqtt.workers if broker == "mosquitto" else 1,
        "database": "postgresql" if url else "sqlite",
        "setup_s": round(setup_s, 1),
        "install_s": round(install_s, 1),
        "cpu_count": os.cpu_count(),
        "load_avg_1m_before": round(load_before, 2),
        "load_avg_1m_after": round(load_after, 2),
        "target_p99_ms": TARGET_P99_MS,
    }


class _WalWatch:
    """The largest size SQLite's WAL file reached during the run (``None``: PostgreSQL)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.largest = 0

    def sample(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.largest = max(self.largest, self.path.stat().st_size)

    def max_mb(self) -> float | None:
        return None if self.path is None else round(self.largest / 1e6, 1)


def _tamper_checks(history: Path, r0: float) -> list[dict[str, Any]]:
    """The runtime's tamper checks that ended during the run: when each began (seconds
    from the run's start), how long it took, over how many leaves, and whether it passed."""
    checks = []
    with contextlib.suppress(OSError):
        for line in history.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                at, took = float(entry["at"]), float(entry.get("elapsed_s") or 0.0)
            except (ValueError, KeyError, TypeError):
                continue
            if entry.get("by") == "runtime" and at >= r0:
                checks.append({"began_s": round(at - took - r0, 1), "elapsed_s": round(took, 1),
                               "size": entry.get("size"), "ok": entry.get("ok")})  # fmt: skip
    return checks


def _restore_env(saved: str | None) -> None:
    if saved is None:
        os.environ.pop("MSEC_BENCH_CARE_MQTT_PASSWORD", None)
    else:
        os.environ["MSEC_BENCH_CARE_MQTT_PASSWORD"] = saved


def _handler_token(platform: Any, tenant: str) -> str:
    """A token of the bench's own operator account, which acknowledges and resolves."""
    name = "bench-care-operator"
    platform.principals.add_service(name, tenant=tenant, roles=["operator"])
    token, _ = platform.principals.issue_token(
        f"service:{name}", ttl_s=None, label="msec bench care"
    )
    return str(token)


def _restart(
    runtime: Any, settings: Any, clock: SimClock, plan: _Restart, say: Callable[[str], None]
) -> Any:
    """Stop the runtime and start a new one on the same data directory and ports."""
    from msec.platform.runtime import Runtime

    plan.timers_open = runtime.apps["care"].service.engine.pending_timers()
    say(f"restarting the platform ({plan.timers_open} timers open)…")
    plan.began = time.time()
    runtime.stop()
    plan.stopped = time.time()
    _wait_port_free(settings.http.host, settings.http.port)
    fresh = Runtime(settings, clock=clock)
    fresh.start()
    plan.back = time.time()
    plan.done = True
    say(f"back after {plan.back - plan.began:.1f} s")
    return fresh


def _in_restart(t: float, restart: _Restart | None) -> bool:
    """Whether real time ``t`` falls between the restart's beginning and a minute after the
    platform was back (while its backlog is stored)."""
    return restart is not None and restart.began <= t <= restart.back + 60.0


def _note_commits(runtime: Any, committed: dict[int, float]) -> None:
    """Note when each alarm's "raised" is committed (the store calls back after the commit,
    in the engine's thread)."""

    def heard(event: str, alarm: Any) -> None:
        if event == "raised":
            committed.setdefault(alarm.id, time.time())

    runtime.apps["care"].alarms.on_change.append(heard)


def _score(
    truth: list[Incident],
    raised: Iterable[Any],
    watched: _WatchResult,
    created: dict[str, float],
    committed: dict[int, float],
    clock: SimClock,
    restart: _Restart | None,
    stalls: Sequence[tuple[float, float]] = (),
) -> dict[str, Any]:
    """missed, false positives, duplicates and latencies of the alarms in the store."""
    from msec.apps.care.truth import score

    alarms = list(raised)
    result = score(truth, [(a.home, a.kind, a.raised_at) for a in alarms])
    duplicates = 0
    for incident in truth:
        for kind in incident.expects:
            hits = [
                a
                for a in alarms
                if a.home == incident.home
                and a.kind == kind
                and incident.start <= a.raised_at <= incident.start + incident.detect_within_s
            ]
            duplicates += max(0, len(hits) - 1)
    latencies: list[float] = []
    outside: list[float] = []
    during: list[float] = []
    stalled: list[float] = []
    calm: list[float] = []
    by_kind: dict[str, list[float]] = {}
    stored_ms: list[float] = []  # cause -> the alarm committed (the engine and the store)
    shown_ms: list[float] = []  # committed -> first seen through the API
    for alarm in alarms:
        seen = watched.seen.get(alarm.id)
        if seen is None:
            continue
        cause = created.get(alarm.trigger) if alarm.trigger else clock.real_at(alarm.raised_at)
        if cause is None:
            continue
        ms = (seen[0] - cause) * 1000
        latencies.append(ms)
        by_kind.setdefault(str(alarm.kind), []).append(ms)
        if alarm.id in committed:
            stored_ms.append((committed[alarm.id] - cause) * 1000)
            shown_ms.append((seen[0] - committed[alarm.id]) * 1000)
        if restart is not None and restart.began <= cause <= restart.back:
            during.append(ms)
        else:
            outside.append(ms)
        (stalled if _overlaps_stall(cause, seen[0], stalls) else calm).append(ms)
    figures: dict[str, Any] = {
        "incidents": result.incidents,
        "incidents_by_kind": dict(Counter(i.name for i in truth)),
        "alarms_raised": len(alarms),
        "alarms_by_kind": dict(Counter(str(a.kind) for a in alarms)),
        "missed": len(result.missed),
        "false_positives": len(result.false_positives),
        "duplicates": duplicates,
        "unseen": sum(1 for a in alarms if a.id not in watched.seen),
        "p50_ms": _percentile(latencies, 0.5),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": round(max(latencies), 1) if latencies else None,
        "latencies": len(latencies),
        "raise_p50_ms": _percentile(stored_ms, 0.5),
        "raise_p99_ms": _percentile(stored_ms, 0.99),
        "show_p50_ms": _percentile(shown_ms, 0.5),
        "show_p99_ms": _percentile(shown_ms, 0.99),
        "latency_by_kind": {
            kind: {"n": len(v), "p50_ms": _percentile(v, 0.5), "max_ms": round(max(v), 1)}
            for kind, v in sorted(by_kind.items())
        },
        "detection_delay_s_max": round(max(result.delays), 1) if result.delays else None,
        "restarts": 1 if restart is not None and restart.done else 0,
        "missed_detail": [
            {"home": i.home, "incident": i.name, "start": i.start, "kind": str(k)}
            for i, k in result.missed[:20]
        ],
        "false_positive_detail": [
            {"home": h, "kind": str(k), "at": at} for h, k, at in result.false_positives[:20]
        ],
    }
    r0 = clock.r0 or 0.0
    figures["stalls"] = [
        {"at_s": round(began - r0, 1), "s": round(ended - began, 1)}
        for began, ended in stalls
        if ended >= r0
    ]
    figures["alarms_during_stalls"] = len(stalled)
    figures["max_ms_during_stalls"] = round(max(stalled), 1) if stalled else None
    figures["p99_ms_outside_stalls"] = _percentile(calm, 0.99)
    if restart is not None:
        down = restart.back - restart.began
        figures["restart"] = {
            "down_s": round(down, 2),
            "stop_s": round(restart.stopped - restart.began, 2),
            "start_s": round(restart.back - restart.stopped, 2),
            "down_sim_s": round(down * clock.speed, 1),
            "timers_pending": restart.timers_open,
            "at_sim": datetime.fromtimestamp(
                clock.t0 + (restart.began - (clock.r0 or 0.0)) * clock.speed, UTC
            ).isoformat(),
            "alarms_during": len(during),
            "max_ms_during": round(max(during), 1) if during else None,
        }
        figures["p99_ms_outside_restart"] = _percentile(outside, 0.99)
    figures["p99_ok"] = figures["p99_ms"] is not None and figures["p99_ms"] < TARGET_P99_MS
    return figures
