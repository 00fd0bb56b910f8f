"""Nothing acknowledged is lost: real Mosquitto, real worker processes, kill -9 and restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from msec.bench.loadgen import RawPublisher
from msec.ingest.worker import BrokerAddress, ready_file, spawn_worker, wait_until_subscribed
from msec.platform import Platform, Settings
from msec.sdk import Device, Endpoint
from msec.testing.services import MosquittoHandle

KIND = "environment_station"


def make_platform(tmp_path: Path, url: str = "") -> Platform:
    return Platform.open(Settings.load(None, data_dir=tmp_path / "data", database={"url": url}))


def start_worker(
    platform: Platform,
    broker: MosquittoHandle,
    client_id: str = "w0",
    shared_group: str | None = None,
) -> subprocess.Popen[bytes]:
    settings = platform.settings
    ready_file(settings.data_dir, client_id).unlink(missing_ok=True)
    process = spawn_worker(
        data_dir=settings.data_dir,
        database_url=settings.database_url,
        broker=BrokerAddress(broker.host, broker.port, "ingest", broker.users["ingest"]),
        client_id=client_id,
        shared_group=shared_group,
        batch_max=500,
        batch_wait_ms=5,
        log_path=settings.data_dir / f"{client_id}.log",
    )
    wait_until_subscribed(settings.data_dir, [(client_id, process)], timeout=30)
    return process


def wait_for_count(platform: Platform, expected: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    count = platform.twin.count_readings()
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        count = platform.twin.count_readings()
    return count


def sealed_stream(
    platform: Platform, devices: int, envelopes: int, batch: int
) -> tuple[list[bytes], set[tuple[str, int]]]:
    fleet = [platform.add_device(f"dev-{i:02d}", KIND) for i in range(devices)]
    messages, keys = [], set()
    for n in range(envelopes):
        device = fleet[n % devices]
        rows = [("environment", "temperature", 10.0 + (n + j) % 20) for j in range(batch)]
        keys.update((device.name, device.next_seq + j) for j in range(batch))
        messages.append((device.topic(rows), device.seal(rows)))
    return RawPublisher.encode(messages), keys


def stored_keys(platform: Platform) -> list[tuple[str, int]]:
    with platform.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql("select provider, seq from twin_readings")]


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(15)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_devices_publish_through_mosquitto_into_the_twin(
    tmp_path: Path, mosquitto: MosquittoHandle, backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else ""
    platform = make_platform(tmp_path, url)
    workers = [start_worker(platform, mosquitto, f"w{k}", shared_group="msec") for k in range(2)]
    try:
        endpoint = Endpoint(mosquitto.host, mosquitto.port, "device", mosquitto.users["device"])
        devices = [platform.add_device(f"park-{i}", KIND, endpoint=endpoint) for i in range(3)]
        for step in range(20):
            for device in devices:
                device.publish(
                    {"environment/temperature": 15.0 + step / 10, "health/battery": 90.0}
                )
        forged, _ = Device.create("park-0", KIND, endpoint=endpoint)  # right name, wrong key
        forged.publish({"environment/temperature": 99.0})
        assert wait_for_count(platform, 3 * 20 * 2) == 120
        deadline = time.monotonic() + 10
        while not platform.events.query(reason="bad_signature") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [e.device for e in platform.events.query(reason="bad_signature")] == ["park-0"]
        latest = platform.twin.latest("park-1", "environment", "temperature")
        assert latest is not None and latest.value == pytest.approx(16.9)
        assert platform.twin.provider("park-2").battery == 90.0
        for device in devices:
            device.close()
        forged.close()
    finally:
        for w in workers:
            stop(w)
        platform.close()


def test_kill_9_mid_stream_loses_nothing_and_stores_once(
    tmp_path: Path, mosquitto: MosquittoHandle
) -> None:
    platform = make_platform(tmp_path)
    packets, keys = sealed_stream(platform, devices=10, envelopes=3000, batch=10)
    worker = start_worker(platform, mosquitto)
    publisher = RawPublisher(
        mosquitto.host,
        mosquitto.port,
        client_id="gen",
        username="device",
        password=mosquitto.users["device"],
    )
    try:
        publisher.publish_all(packets[:1500], rate=3000)
        killed_at = platform.twin.count_readings()
        os.kill(worker.pid, signal.SIGKILL)  # mid-batch, no chance to clean up
        worker.wait()
        publisher.publish_all(packets[1500:], rate=3000)  # broker queues for the session
        assert publisher.wait_acked(len(packets), 30), "broker did not acknowledge everything"
        worker = start_worker(platform, mosquitto)  # same client id: same session
        assert wait_for_count(platform, len(keys)) == len(keys)
        stored = stored_keys(platform)
        assert len(stored) == len(set(stored)) == len(keys)
        assert set(stored) == keys
        assert 0 < killed_at < len(keys), "the kill did not happen mid-stream"
        # Redeliveries after the crash carry MQTT's DUP flag: not mistaken for attacks.
        assert platform.events.query(reason="replay") == []
    finally:
        publisher.close()
        stop(worker)
        platform.close()


def test_broker_restart_loses_no_acknowledged_reading(
    tmp_path: Path, mosquitto: MosquittoHandle
) -> None:
    platform = make_platform(tmp_path)
    packets, keys = sealed_stream(platform, devices=5, envelopes=1000, batch=5)
    worker = start_worker(platform, mosquitto)
    stop(worker)  # the worker's persistent session stays on the broker
    publisher = RawPublisher(
        mosquitto.host,
        mosquitto.port,
        client_id="gen",
        username="device",
        password=mosquitto.users["device"],
    )
    publisher.publish_all(packets[:600])
    assert publisher.wait_acked(600, 30)
    publisher.close()
    mosquitto.stop(graceful=True)  # acknowledged to the devices, not yet delivered
    mosquitto.start()
    worker = start_worker(platform, mosquitto)
    try:
        assert wait_for_count(platform, 600 * 5) == 600 * 5
        # And a restart while the worker is connected: it reconnects and resubscribes.
        mosquitto.stop(graceful=True)
        mosquitto.start()
        publisher = RawPublisher(
            mosquitto.host,
            mosquitto.port,
            client_id="gen2",
            username="device",
            password=mosquitto.users["device"],
        )
        publisher.publish_all(packets[600:])
        assert publisher.wait_acked(400, 30)
        publisher.close()
        assert wait_for_count(platform, len(keys)) == len(keys)
        assert set(stored_keys(platform)) == keys
    finally:
        stop(worker)
        platform.close()
