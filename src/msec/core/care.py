"""Pilot 2, Connected Care: the vocabulary shared by the home simulator (``msec.sdk.sim``),
the alarm engine, the alarm store and the portal (``msec.apps.care``). It is here, in
``core``, so that the simulator does not depend on the app (apps depend on the platform, never
the reverse); ``msec.apps.care.model`` re-exports it.

A **home** is one elderly person living alone (the data subject); its devices are named
``<home>-<role>``: ``gw`` (the connectivity hub), ``motion``, ``door`` (the front door's
contact sensor), ``bed`` (bed occupancy) and ``plug`` (a smart plug on an appliance, e.g. the
TV or a heater). Every device reports its state on change and as a heartbeat at least every
:data:`HEARTBEAT_S`, with ``health/battery`` and ``health/rssi``.

Times are Unix seconds; "local time" (night hours, the morning window) is the home's time
zone, Europe/Madrid by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "DEVICE_ROLES",
    "HEARTBEAT_S",
    "AlarmKind",
    "AlarmRequest",
    "CareSettings",
    "Incident",
    "SensorEvent",
    "device_name",
    "split_device",
]

#: The longest a working device stays silent: every device reports at least this often.
HEARTBEAT_S: Final = 600.0

#: role -> (device kind, service, resource) of the value that matters for the alarms.
DEVICE_ROLES: Final[dict[str, tuple[str, str, str]]] = {
    "gw": ("care_gateway", "gateway", "uptime"),
    "motion": ("motion_sensor", "motion", "detected"),
    "door": ("contact_sensor", "contact", "open"),
    "bed": ("bed_sensor", "bed", "occupied"),
    "plug": ("smart_plug", "plug", "power"),
}


def device_name(home: str, role: str) -> str:
    return f"{home}-{role}"


def split_device(name: str) -> tuple[str, str] | None:
    """``(home, role)`` of a care device name, ``None`` for any other name."""
    home, sep, role = name.rpartition("-")
    if not sep or not home or role not in DEVICE_ROLES:
        return None
    return home, role


class AlarmKind(StrEnum):
    """What the operators are told; one active alarm per (home, kind)."""

    #: No motion for hours in daytime while the person is at home (a fall).
    INACTIVITY = "inactivity"
    #: The front door opened at night while the bed was empty (night wandering).
    NIGHT_DOOR = "night_door"
    #: Out of bed at night and not back within the limit.
    OUT_OF_BED = "out_of_bed"
    #: An appliance drawing power for hours.
    APPLIANCE_ON = "appliance_on"
    #: No motion in the morning window (did not get up).
    NO_MORNING_ACTIVITY = "no_morning_activity"
    #: A device sent nothing for too long.
    DEVICE_OFFLINE = "device_offline"
    #: A device's battery is low.
    LOW_BATTERY = "low_battery"


@dataclass(frozen=True, slots=True)
class CareSettings:
    """The generic alert settings; a person's own settings override any of them.

    Night hours and the morning window are local times as ``"HH:MM"``; durations are seconds.
    """

    night_start: str = "23:00"
    night_end: str = "07:00"
    #: Daytime (for inactivity): from the end of the morning window to the start of night.
    morning_start: str = "07:00"
    morning_end: str = "10:00"
    inactivity_s: float = 3 * 3600.0
    #: After the front door opened, no motion for this long means the person went out.
    away_after_s: float = 600.0
    out_of_bed_s: float = 30 * 60.0
    #: Door opened at night with the bed empty: both within this window.
    night_door_window_s: float = 600.0
    appliance_w: float = 30.0
    appliance_s: float = 4 * 3600.0
    offline_s: float = 3 * HEARTBEAT_S
    low_battery_pct: float = 15.0
    #: Unacknowledged this long: the alarm escalates one level (and again after as long).
    escalate_after_s: float = 15 * 60.0
    timezone: str = "Europe/Madrid"


@dataclass(frozen=True, slots=True)
class SensorEvent:
    """One reading of a care device as the engine sees it."""

    home: str
    role: str
    device: str
    service: str
    resource: str
    value: float | int | bool
    t: float
    seq: int


@dataclass(frozen=True, slots=True)
class AlarmRequest:
    """An alarm the engine asks its store to raise (see ``SqlAlarms.raise_alarms``): ``kind``
    for ``home`` for the incident ``episode``, at ``at``, with what the engine saw
    (``detail``) and the reading that triggered it, if one did."""

    home: str
    kind: AlarmKind | str
    episode: str
    at: float
    detail: dict[str, Any] = field(default_factory=dict)
    trigger: str | None = None


@dataclass(frozen=True, slots=True)
class Incident:
    """A scripted incident of the simulator, with its ground truth: the alarm kinds it must
    raise (``expects``) between ``start`` and ``start + detect_within_s``."""

    home: str
    name: str
    start: float
    end: float
    expects: frozenset[AlarmKind]
    detect_within_s: float
    detail: dict[str, object] = field(default_factory=dict)
