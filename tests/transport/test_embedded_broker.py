"""The embedded broker (amqtt in a child process) behaves like Mosquitto for the platform."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from msec.ingest.worker import BrokerAddress, spawn_worker, wait_until_subscribed
from msec.platform import Platform, Settings
from msec.sdk import Endpoint
from msec.transport.broker import EmbeddedBroker, write_password_file
from msec.transport.mqtt import connect


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    write_password_file(tmp_path / "passwd", {"ingest": "in-pw", "device": "dev-pw"})
    embedded = EmbeddedBroker(tmp_path / "passwd")
    embedded.start()
    yield embedded
    embedded.stop()


def test_password_file_is_private_and_wrong_passwords_are_refused(
    tmp_path: Path, broker: EmbeddedBroker
) -> None:
    assert (tmp_path / "passwd").stat().st_mode & 0o777 == 0o600
    assert "dev-pw" not in (tmp_path / "passwd").read_text()  # hashes only
    with pytest.raises(ConnectionError):
        connect(broker.host, broker.port, username="device", password="wrong")
    with pytest.raises(ConnectionError):
        connect(broker.host, broker.port)  # anonymous
    client = connect(broker.host, broker.port, username="device", password="dev-pw")
    client.disconnect()
    client.loop_stop()


def test_readings_flow_through_the_embedded_broker(tmp_path: Path,
                                                   broker: EmbeddedBroker) -> None:
    platform = Platform.open(Settings.load(None, data_dir=tmp_path / "data"))
    worker = spawn_worker(
        data_dir=platform.settings.data_dir, database_url=platform.settings.database_url,
        broker=BrokerAddress(broker.host, broker.port, "ingest", "in-pw"), client_id="w",
        batch_wait_ms=5, log_path=tmp_path / "w.log",
    )
    try:
        wait_until_subscribed(platform.settings.data_dir, [("w", worker)], timeout=30)
        device = platform.add_device(
            "emb-1", "environment_station",
            endpoint=Endpoint(broker.host, broker.port, "device", "dev-pw"), encrypt=True,
        )
        for i in range(30):
            device.publish([("environment", "co2", 400.0 + i), ("health", "rssi", -70.0)])
        device.publish({"environment/co2": 99999.0})  # impossible: refused, logged
        device.close()
        deadline = time.monotonic() + 30
        while platform.twin.count_readings("emb-1") < 60 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert platform.twin.count_readings("emb-1") == 60
        assert platform.twin.latest("emb-1", "environment", "co2").value == 429.0
        while not platform.events.query() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [e.reason for e in platform.events.query()] == ["out_of_range"]
    finally:
        worker.terminate()
        worker.wait(15)
        platform.close()


def test_stop_is_clean(tmp_path: Path) -> None:
    write_password_file(tmp_path / "p", {"a": "b"})
    embedded = EmbeddedBroker(tmp_path / "p")
    embedded.start()
    pid = embedded.pid
    embedded.stop()
    assert embedded.pid is None
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0
