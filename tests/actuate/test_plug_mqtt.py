"""ACT through a real Mosquitto: the platform publishes a signed command, a simulated smart plug
applies it and publishes its new state, which an ingest subscriber stores in the twin. Forged
and replayed commands published by hand are refused by the plug.

Ingest subscribes to ``msec/#`` and so also receives the ``_cmd`` messages; here they are
skipped by topic, as the platform's ingest worker must.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from msec.actuate import (
    Actuator,
    Command,
    CommandNotSent,
    CommandSigner,
    MqttCommandPublisher,
    SqlCommands,
)
from msec.ingest import Incoming
from msec.platform import Platform, Settings
from msec.sdk import Endpoint
from msec.sdk.command import CommandReceiver
from msec.sdk.sim.plug import SmartPlug
from msec.testing.services import MosquittoHandle
from msec.transport.mqtt import MqttSubscriber, connect

pytestmark = pytest.mark.integration


class Ingest:
    """A plain ``msec/#`` subscriber feeding the ingest pipeline; keeps ``_cmd`` messages."""

    def __init__(self, platform: Platform, broker: MosquittoHandle) -> None:
        self.platform = platform
        self.commands: list[tuple[str, bytes]] = []
        self.stored = 0
        self.subscriber = MqttSubscriber(
            broker.host, broker.port, ["msec/#"], client_id="test-ingest",
            username="ingest", password=broker.users["ingest"], persistent=False,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.subscriber.start()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            messages = self.subscriber.take(100, 0.1)
            for m in messages:
                if m.topic.endswith("/_cmd"):
                    self.commands.append((m.topic, m.payload))
                    continue
                [outcome] = self.platform.ingestor.process(
                    [Incoming(m.payload, m.topic, m.topic, m.dup, m.received)]
                )
                assert outcome.ok, outcome.rejected
                self.stored += outcome.stored
            self.subscriber.ack(messages)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.subscriber.stop()


def wait_until(condition, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = Platform.open(Settings.load(None, data_dir=tmp_path / "data"))
    yield p
    p.close()


@pytest.fixture
def signer(platform: Platform) -> CommandSigner:
    return CommandSigner.load_or_create(platform.settings.data_dir / "keys" / "command.key")


@pytest.fixture
def actuator(platform: Platform, signer: CommandSigner, mosquitto: MosquittoHandle):
    commands = SqlCommands(platform.engine)
    commands.create_schema()
    publisher = MqttCommandPublisher(
        mosquitto.host, mosquitto.port, "ingest", mosquitto.users["ingest"], timeout=3.0
    )
    yield Actuator(signer, commands, publisher)
    publisher.close()


@pytest.fixture
def plug(
    platform: Platform, signer: CommandSigner, mosquitto: MosquittoHandle, tmp_path: Path
) -> Iterator[SmartPlug]:
    endpoint = Endpoint(mosquitto.host, mosquitto.port, "device", mosquitto.users["device"])
    device = platform.add_device("plug-01", "smart_plug", endpoint=endpoint)
    device.command_key = signer.public_key
    device.save(tmp_path / "plug-01.json")
    plug = SmartPlug(device, CommandReceiver.for_device(device))
    plug.start()
    yield plug
    plug.stop()


@pytest.fixture
def ingest(platform: Platform, mosquitto: MosquittoHandle) -> Iterator[Ingest]:
    consumer = Ingest(platform, mosquitto)
    consumer.start()
    yield consumer
    consumer.stop()


def test_act_through_mosquitto_and_a_smart_plug(
    platform: Platform,
    actuator: Actuator,
    plug: SmartPlug,
    ingest: Ingest,
    mosquitto: MosquittoHandle,
) -> None:
    info = actuator.send(
        "plug-01", "default", "plug", "switch", {"on": True}, principal_id="user:alice"
    )
    assert plug.wait_handled(1), "the plug never got the command"
    assert plug.applied == 1 and plug.on is True and not plug.refused

    def switched_on() -> bool:
        latest = platform.twin.latest("plug-01", "plug", "switch")
        return latest is not None and latest.value is True

    assert wait_until(switched_on), "the plug's new state never reached the twin"
    power = platform.twin.latest("plug-01", "plug", "power")
    assert power is not None and 0 < float(power.value or 0) <= 3680
    record = actuator.status(info.id, twin=platform.twin)
    assert record is not None and record.status == "acknowledged"
    assert wait_until(lambda: len(ingest.commands) == 1)
    [(topic, genuine)] = ingest.commands
    assert topic == "msec/default/plug-01/_cmd"

    # By hand, with a broker account that may publish there: a command signed with another
    # key, and the genuine command again. Neither moves the relay.
    forger = CommandSigner.generate()
    forged = forger.seal(
        Command("plug-01", "plug", "switch", {"on": False}, info.seq + 1, time.time(),
                time.time() + 30, Command.new_id(), "user:mallory")
    )
    client = connect(
        mosquitto.host, mosquitto.port, client_id="mallory", username="device",
        password=mosquitto.users["device"],
    )
    try:
        for data in (forged, genuine, b"\x00garbage"):
            client.publish(topic, data, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
    assert plug.wait_handled(4), "the plug did not see the hand-made messages"
    assert plug.on is True and plug.applied == 1
    assert plug.refused == {"bad_signature": 1, "replay": 1, "malformed": 1}

    # A genuine later command still works after all that.
    actuator.send("plug-01", "default", "plug", "switch", {"on": False}, principal_id="user:a")
    assert plug.wait_handled(5)
    assert plug.on is False and plug.applied == 2
    assert wait_until(
        lambda: getattr(platform.twin.latest("plug-01", "plug", "switch"), "value", None) is False
    )


def test_broker_down_then_back(
    actuator: Actuator, plug: SmartPlug, mosquitto: MosquittoHandle
) -> None:
    actuator.send("plug-01", "default", "plug", "switch", {"on": True}, principal_id="user:a")
    assert plug.wait_handled(1)
    mosquitto.stop()
    with pytest.raises(CommandNotSent):
        actuator.send("plug-01", "default", "plug", "switch", {"on": False}, principal_id="u:a")
    [failed, sent] = actuator.commands.recent("plug-01")
    assert (failed.status, sent.status) == ("failed", "sent")
    mosquitto.start()
    # The plug's paho client reconnects by itself and subscribes again (a clean session:
    # what was published while it was away is gone); the publisher reconnects on next use.
    assert plug.wait_subscribed(15), "the plug did not come back"
    actuator.send("plug-01", "default", "plug", "switch", {"on": False}, principal_id="u:a")
    assert plug.wait_handled(2)
    assert plug.on is False
