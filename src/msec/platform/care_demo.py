"""The demo's Connected Care homes: a gateway and four sensors per home, publishing the home
simulator's readings over MQTT through the SDK, in real time.

:class:`CareFleet` registers :data:`HOMES` (``home-0001`` to ``home-0005``), five devices
each named ``<home>-<role>`` with the home as their data subject (so their readings are
stored encrypted under the person, as for a real home) and no location (a home's place is
personal data too). Every few seconds it publishes what
:class:`~msec.sdk.sim.home.HomeSimulator` says each device reported since the last round,
with the readings' own times. The homes follow their daily routine, with the simulator's
random incidents (about one home-day in three), plus **scripted incidents** soon after
start, so that the demo shows alarms within minutes (:func:`scripted_incidents`):

* 09:00-20:00 local time: a door sensor's battery drops (``low_battery`` in ``home-0002``,
  a LOW_BATTERY alarm at its next heartbeat, within 10 minutes);
* 01:00-04:00: night wandering in ``home-0003`` (NIGHT_DOOR within minutes);
* 10:30-17:30, also: ``home-0004``'s motion sensor goes silent (DEVICE_OFFLINE after 30 min);
* at other hours, where the simulator has no incident to script, the demo itself makes
  ``home-0002``'s door sensor report a 9 % battery from two minutes after start.

The first run backfills the last :data:`BACKFILL_S` (15 min, under the 30 min after which a
silent device is an alarm, so that the engine never sees a half-published history as
silence); a later run continues from where the previous one stopped, at most that far back.
After a pause of more than 30 min, the engine rightly raises DEVICE_OFFLINE for the homes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from msec.platform.platform import Platform
from msec.platform.secrets import write_private_json
from msec.platform.settings import Settings
from msec.sdk.device import Device, Endpoint
from msec.sdk.sim.home import HomeSimulator, IncidentSpec, Reading

__all__ = [
    "BACKFILL_S",
    "HOMES",
    "INCIDENT_AFTER_S",
    "CareFleet",
    "Override",
    "scripted_incidents",
]

log = logging.getLogger(__name__)

HOMES: Final = tuple(f"home-{n:04d}" for n in range(1, 6))
#: History published on the first run (and the longest gap a later run fills).
BACKFILL_S: Final = 15 * 60.0
#: The scripted incidents start this long after the demo.
INCIDENT_AFTER_S: Final = 120.0
INTERVAL_S: Final = 5.0
SEED: Final = 2025
#: Rows per envelope (an envelope stays far below the 64 KiB limit).
_ROWS: Final = 50


@dataclass(frozen=True, slots=True)
class Override:
    """From ``start`` on, ``device`` reports ``value`` for ``service/resource`` (the demo's
    own incident when the simulator has none for the hour)."""

    device: str
    service: str
    resource: str
    start: float
    value: float


def scripted_incidents(
    start: float, sim: HomeSimulator, homes: tuple[str, ...] = HOMES
) -> tuple[dict[str, list[IncidentSpec]], list[Override]]:
    """The demo's incidents starting :data:`INCIDENT_AFTER_S` after ``start``: simulator
    incidents for the homes whose local hour allows one (see the module docstring), else an
    override of one battery."""
    at = start + INCIDENT_AFTER_S
    wanted = [
        (homes[1], IncidentSpec("low_battery", at, role="door")),
        (homes[2], IncidentSpec("night_wandering", at)),
        (homes[3], IncidentSpec("sensor_silent", at, role="motion")),
    ]
    specs: dict[str, list[IncidentSpec]] = {}
    for home, spec in wanted:
        try:
            sim.incidents_between(home, at, at + 1, incidents=[spec])  # checks its window
        except ValueError:
            continue
        specs[home] = [spec]
    overrides: list[Override] = []
    if not specs:
        overrides.append(Override(f"{homes[1]}-door", "health", "battery", at, 9.0))
    return specs, overrides


class CareFleet:
    """Registers and runs the demo homes until ``stop`` is set (see the module docstring)."""

    def __init__(
        self,
        platform: Platform,
        settings: Settings,
        host: str,
        port: int,
        username: str,
        password: str,
        stop: threading.Event,
        *,
        homes: tuple[str, ...] = HOMES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.platform = platform
        self.endpoint = Endpoint(host, port, username, password)
        self.dir = settings.data_dir / "devices"
        self.stop = stop
        self.homes = homes
        self.clock = clock
        self.sim = HomeSimulator(SEED)
        self.devices: dict[str, Device] = {}
        self.interval_s = INTERVAL_S
        self.started = clock()
        self.incidents, self.overrides = scripted_incidents(self.started, self.sim, homes)

    @property
    def state_file(self) -> Path:
        return self.dir / "care-homes.json"

    def prepare(self) -> None:
        """Register the homes' devices on the first run; load their credentials."""
        for home in self.homes:
            for sim_device in self.sim.devices(home):
                path = self.dir / f"{sim_device.name}.json"
                if not path.exists():
                    self.platform.add_device(
                        sim_device.name, sim_device.kind, endpoint=self.endpoint, out=path,
                        description=sim_device.description, subject=home,
                    )  # fmt: skip
                device = Device.load(path)
                device.endpoint = self.endpoint  # the embedded broker's port changes per run
                self.devices[device.name] = device
        for home, specs in self.incidents.items():
            for spec in specs:
                log.info("care demo: %s in %s at %s", spec.name, home, time.ctime(spec.start))

    def readings(self, home: str, t0: float, t1: float) -> list[Reading]:
        """What ``home``'s devices report in ``[t0, t1)``, scripted incidents included."""
        found = self.sim.readings_between(home, t0, t1,
                                          incidents=self.incidents.get(home, True))  # fmt: skip
        for o in self.overrides:
            found = [
                (d, s, r, o.value, t)
                if (d, s, r) == (o.device, o.service, o.resource) and t >= o.start
                else (d, s, r, v, t)
                for d, s, r, v, t in found
            ]
        return found

    def run(self) -> None:
        try:
            since = max(self._published_until(), self.clock() - BACKFILL_S)
            while not self.stop.is_set():
                now = self.clock()
                if now > since:
                    self.publish(since, now)
                    since = now
                    self._save(since)
                self.stop.wait(self.interval_s)
        finally:
            for device in self.devices.values():
                device.close()

    def publish(self, t0: float, t1: float) -> int:
        """Publish every home's readings of ``[t0, t1)``, device by device; return how many.
        A device that cannot publish (the broker away) loses this round's readings."""
        count = 0
        for home in self.homes:
            rows: dict[str, list[tuple[str, str, bool | int | float, float]]] = {}
            for device, service, resource, value, t in self.readings(home, t0, t1):
                rows.setdefault(device, []).append((service, resource, value, t))
            for name, readings in rows.items():
                for chunk in _chunks(readings, _ROWS):
                    count += self._publish(self.devices[name], chunk)
        return count

    def _publish(self, device: Device, rows: list[tuple[str, str, bool | int | float, float]]
                 ) -> int:  # fmt: skip
        try:
            device.publish(rows)
        except (OSError, TimeoutError, ConnectionError) as exc:
            log.warning("simulated device %s could not publish: %s", device.name, exc)
            return 0
        return len(rows)

    def _published_until(self) -> float:
        try:
            return float(json.loads(self.state_file.read_text())["published_until"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0

    def _save(self, until: float) -> None:
        write_private_json(self.state_file, {"published_until": until})


def _chunks(items: list[tuple[str, str, bool | int | float, float]],
            size: int) -> Iterable[list[tuple[str, str, bool | int | float, float]]]:  # fmt: skip
    for start in range(0, len(items), size):
        yield items[start : start + size]
