"""The Actuator in process: sign, record, publish; broker failures; settling by state reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from msec.actuate import (
    Actuator,
    CommandNotSent,
    CommandSigner,
    MemoryPublisher,
    MqttCommandPublisher,
    SqlCommands,
    command_topic,
    open_command,
)
from msec.actuate.actuator import REPORT_GRACE_S
from msec.core.errors import MsecError
from msec.core.models import ResourceValue
from msec.twin import make_engine

NOW = 1_767_225_600.0


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Twin:
    """Only ``latest``: what :meth:`Actuator.status` reads."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str, str], ResourceValue] = {}

    def report(self, provider: str, path: str, value: object, at: float) -> None:
        service, resource = path.split("/")
        self.values[(provider, service, resource)] = ResourceValue(
            provider, service, resource, value, at  # type: ignore[arg-type]
        )

    def latest(self, provider: str, service: str, resource: str) -> ResourceValue | None:
        return self.values.get((provider, service, resource))


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def parts(tmp_path: Path, clock: Clock) -> tuple[Actuator, MemoryPublisher, CommandSigner]:
    engine = make_engine(f"sqlite:///{tmp_path / 'msec.db'}")
    commands = SqlCommands(engine, clock=clock)
    commands.create_schema()
    signer = CommandSigner.load_or_create(tmp_path / "keys" / "command.key")
    publisher = MemoryPublisher()
    return Actuator(signer, commands, publisher, clock=clock), publisher, signer


def test_send_signs_records_and_publishes(parts: tuple[Actuator, MemoryPublisher, CommandSigner]):
    actuator, publisher, signer = parts
    assert actuator.public_key == signer.public_key
    info = actuator.send(
        "plug-01", "default", "plug", "switch", {"on": True}, principal_id="user:alice", ttl_s=10
    )
    assert info.status == "sent" and info.expires_at == NOW + 10
    [(topic, data)] = publisher.sent
    assert topic == command_topic("default", "plug-01") == "msec/default/plug-01/_cmd"
    command = open_command(data, signer.public_key, device="plug-01", now=NOW + 1)
    assert (command.id, command.seq, command.args) == (info.id, info.seq, {"on": True})
    assert command.principal == "user:alice"
    stored = actuator.commands.get(info.id)
    assert stored is not None and stored.status == "sent" and stored.seq == info.seq
    second = actuator.send(
        "plug-01", "default", "plug", "switch", {"on": False}, principal_id="user:alice"
    )
    assert second.seq > info.seq


@pytest.mark.parametrize(
    ("args", "ttl_s", "names"),
    [
        ({"on": float("nan")}, 30, ("plug-01", "default")),
        ({"on": True}, 0, ("plug-01", "default")),
        ({"on": True}, 301, ("plug-01", "default")),
        ({"on": True}, 30, ("Plug 01", "default")),
        ({"on": True}, 30, ("plug-01", "not/a/tenant")),
    ],
)
def test_refused_before_anything_is_spent(
    parts: tuple[Actuator, MemoryPublisher, CommandSigner],
    args: object,
    ttl_s: float,
    names: tuple[str, str],
) -> None:
    actuator, publisher, _ = parts
    with pytest.raises(ValueError):
        actuator.send(*names, "plug", "switch", args, principal_id="user:a", ttl_s=ttl_s)
    assert publisher.sent == []
    assert actuator.commands.recent(names[0]) == []


def test_a_broker_failure_is_recorded_and_raised(
    parts: tuple[Actuator, MemoryPublisher, CommandSigner],
) -> None:
    actuator, publisher, _ = parts
    publisher.down = True
    with pytest.raises(CommandNotSent):
        actuator.send("plug-01", "default", "plug", "switch", {"on": True}, principal_id="u:a")
    [failed] = actuator.commands.recent("plug-01")
    assert failed.status == "failed" and "broker" in (failed.detail or "")


def test_status_follows_the_device_reports(
    parts: tuple[Actuator, MemoryPublisher, CommandSigner], clock: Clock
) -> None:
    actuator, _, _ = parts
    twin = Twin()
    twin.report("plug-01", "plug/switch", False, NOW - 60)  # before the command: no answer
    info = actuator.send("plug-01", "default", "plug", "switch", {"on": True}, principal_id="u")
    record = actuator.status(info.id, twin=twin)
    assert record is not None and record.status == "sent"
    assert actuator.status(info.id) == record  # without a twin: as stored
    clock.t = NOW + 1
    twin.report("plug-01", "plug/switch", True, NOW + 0.5)
    record = actuator.status(info.id, twin=twin)
    assert record is not None and record.status == "acknowledged"
    assert record.acked_at == NOW + 1 and "plug/switch" in (record.detail or "")
    assert actuator.status("0" * 32, twin=twin) is None


def test_no_report_after_expiry_is_a_failure(
    parts: tuple[Actuator, MemoryPublisher, CommandSigner], clock: Clock
) -> None:
    actuator, _, _ = parts
    info = actuator.send(
        "plug-01", "default", "plug", "switch", {"on": True}, principal_id="u", ttl_s=5
    )
    clock.t = NOW + 5 + REPORT_GRACE_S - 1
    record = actuator.status(info.id, twin=Twin())
    assert record is not None and record.status == "sent"
    clock.t = NOW + 5 + REPORT_GRACE_S + 1
    record = actuator.status(info.id, twin=Twin())
    assert record is not None and record.status == "failed"


def test_mqtt_publisher_without_a_broker_raises_msec_error() -> None:
    publisher = MqttCommandPublisher("127.0.0.1", 1, "ingest", "secret", timeout=2.0)
    with pytest.raises(MsecError):
        publisher("msec/default/plug-01/_cmd", b"x")
    assert "secret" not in repr(publisher)
    publisher.close()
