"""The smart_plug kind and the simulated plug without a broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from msec.actuate.command import Command, CommandSigner
from msec.core.errors import Rejected, RejectReason
from msec.core.kinds import get_kind
from msec.sdk import Device
from msec.sdk.command import CommandReceiver
from msec.sdk.sim.plug import SmartPlug

NOW = 1_767_225_600.0
SIGNER = CommandSigner(b"\x05" * 32)


def test_smart_plug_kind() -> None:
    kind = get_kind("smart_plug")
    assert [(r.path, r.unit, r.type, r.minimum, r.maximum) for r in kind.resources] == [
        ("plug/switch", None, "bool", None, None),
        ("plug/power", "W", "float", 0, 3680),
        ("plug/voltage", "V", "float", 0, 260),
        ("plug/frequency", "Hz", "float", 45, 65),
    ]
    assert kind.spec("health", "battery") is not None and kind.spec("health", "rssi") is not None
    switch = kind.spec("plug", "switch")
    assert switch is not None and switch.check(True) is True
    for path, value, reason in [
        ("plug/switch", 1, RejectReason.SCHEMA),
        ("plug/power", 3680.5, RejectReason.OUT_OF_RANGE),
        ("plug/power", -1.0, RejectReason.OUT_OF_RANGE),
        ("plug/voltage", 261.0, RejectReason.OUT_OF_RANGE),
        ("plug/frequency", 44.9, RejectReason.OUT_OF_RANGE),
        ("plug/frequency", True, RejectReason.SCHEMA),
    ]:
        spec = kind.spec(*path.split("/"))
        assert spec is not None
        with pytest.raises(Rejected) as caught:
            spec.check(value)
        assert caught.value.reason is reason, path


def test_existing_kinds_are_untouched() -> None:
    assert [r.path for r in get_kind("crowd_counter").resources] == ["crowd/count"]
    assert len(get_kind("environment_station").resources) == 5


def make_plug(tmp_path: Path, **kw: Any) -> tuple[SmartPlug, list[list[Any]]]:
    device, _ = Device.create("plug-01", "smart_plug", command_key=SIGNER.public_key)
    device.save(tmp_path / "plug-01.json")
    reports: list[list[Any]] = []
    plug = SmartPlug(
        device, CommandReceiver.for_device(device), report=reports.append, clock=lambda: NOW, **kw
    )
    return plug, reports


def sealed(seq: int, args: object, *, service: str = "plug", resource: str = "switch") -> bytes:
    return SIGNER.seal(
        Command("plug-01", service, resource, args, seq, NOW, NOW + 30, Command.new_id(), "u:a")
    )


def test_switching_reports_switch_and_power(tmp_path: Path) -> None:
    plug, reports = make_plug(tmp_path, load_w=1500.0)
    assert plug.handle(sealed(1, {"on": True})) is not None
    assert plug.on is True
    [rows] = reports
    assert [(s, r) for s, r, _ in rows] == [("plug", "switch"), ("plug", "power")]
    assert rows[0][2] is True and 1400 < rows[1][2] < 1600
    plug.handle(sealed(2, {"on": False}))
    assert reports[-1][0][2] is False and reports[-1][1][2] == 0.0
    assert plug.applied == 2 and plug.handled == 2


def test_unsupported_commands_are_not_applied(tmp_path: Path) -> None:
    plug, reports = make_plug(tmp_path)
    for seq, data in enumerate(
        [
            sealed(1, {"on": "yes"}),
            sealed(2, {"off": True}),
            sealed(3, True),
            sealed(4, {"on": True}, resource="power"),
        ],
        start=1,
    ):
        assert plug.handle(data) is None, seq
    assert plug.on is False and reports == []
    assert plug.refused == {"unsupported": 4}


def test_samples_pass_the_kind_checks(tmp_path: Path) -> None:
    plug, _ = make_plug(tmp_path, load_w=5000.0)  # more than a socket can carry: capped
    kind = get_kind("smart_plug")
    for on in (False, True):
        plug.on = on
        for t in range(0, 86400, 600):
            for service, resource, value in plug.sample(NOW + t):
                spec = kind.spec(service, resource)
                assert spec is not None
                spec.check(value)


def test_a_receiver_of_another_device_is_refused(tmp_path: Path) -> None:
    device, _ = Device.create("plug-01", "smart_plug", command_key=SIGNER.public_key)
    other = CommandReceiver("plug-02", SIGNER.public_key, tmp_path / "x.cmdseq")
    with pytest.raises(ValueError):
        SmartPlug(device, other)
