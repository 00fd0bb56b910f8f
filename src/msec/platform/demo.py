"""The demo's simulated devices: Pilot 1's seven park devices publishing over MQTT.

On the first run each device is registered (credentials in ``<data_dir>/devices``) and
backfills the last two hours at 5-minute steps, so charts have history at once; later
runs reuse the credentials and continue the sequence numbers where they stopped.
"""

from __future__ import annotations

import logging
import threading
import time

from msec.platform.platform import Platform
from msec.platform.settings import Settings
from msec.sdk.device import Device, Endpoint
from msec.sdk.sim.park import PARK_DEVICES, ParkSimulator

log = logging.getLogger(__name__)

BACKFILL_S = 2 * 3600
BACKFILL_STEP_S = 300
INTERVAL_S = 10.0


class ParkFleet:
    """Registers and runs the seven Las Llamas devices until ``stop`` is set."""

    def __init__(
        self,
        platform: Platform,
        settings: Settings,
        host: str,
        port: int,
        username: str,
        password: str,
        stop: threading.Event,
    ) -> None:
        self.platform = platform
        self.endpoint = Endpoint(host, port, username, password)
        self.dir = settings.data_dir / "devices"
        self.stop = stop
        self.sim = ParkSimulator(seed=2024)
        self.devices: list[tuple[Device, object]] = []
        self.interval_s = INTERVAL_S

    def prepare(self) -> None:
        for sim_device in PARK_DEVICES:
            path = self.dir / f"{sim_device.name}.json"
            if not path.exists():
                self.platform.add_device(
                    sim_device.name,
                    sim_device.kind,
                    endpoint=self.endpoint,
                    out=path,
                    description=sim_device.description,
                    latitude=sim_device.latitude,
                    longitude=sim_device.longitude,
                )
            device = Device.load(path)
            device.endpoint = self.endpoint  # the embedded broker's port changes per run
            self.devices.append((device, sim_device))

    def run(self) -> None:
        try:
            self._backfill()
            while not self.stop.is_set():
                now = time.time()
                for device, sim_device in self.devices:
                    self._publish(
                        device, [(s, r, v) for s, r, v in self.sim.sample(sim_device, now)]
                    )
                self.stop.wait(self.interval_s)
        finally:
            for device, _ in self.devices:
                device.close()

    def _backfill(self) -> None:
        now = time.time()
        for device, sim_device in self.devices:
            if self.platform.twin.count_readings(device.name):
                continue
            for t in range(int(now - BACKFILL_S), int(now), BACKFILL_STEP_S):
                rows = [(s, r, v, float(t)) for s, r, v in self.sim.sample(sim_device, t)]
                self._publish(device, rows)

    def _publish(self, device: Device, rows: list) -> None:
        try:
            device.publish(rows)
        except (OSError, TimeoutError, ConnectionError) as exc:
            log.warning("simulated device %s could not publish: %s", device.name, exc)
