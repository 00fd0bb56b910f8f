"""The device side: replays refused, also after a restart; credentials carry the command key."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path

import pytest

from msec.actuate.command import Command, CommandRejected, CommandSigner, RejectedBecause
from msec.sdk import Device
from msec.sdk.command import CommandReceiver

NOW = 1_767_225_600.0
SIGNER = CommandSigner(b"\x07" * 32)


def sealed(seq: int, *, device: str = "plug-01", on: bool = True) -> bytes:
    return SIGNER.seal(
        Command(device, "plug", "switch", {"on": on}, seq, NOW, NOW + 30, Command.new_id(), "u:a")
    )


def receiver(tmp_path: Path) -> CommandReceiver:
    return CommandReceiver("plug-01", SIGNER.public_key, tmp_path / "plug-01.json.cmdseq")


def reason(rx: CommandReceiver, data: bytes) -> RejectedBecause:
    with pytest.raises(CommandRejected) as caught:
        rx.open(data, now=NOW + 1)
    return caught.value.reason


def test_the_same_command_twice_is_a_replay(tmp_path: Path) -> None:
    rx = receiver(tmp_path)
    data = sealed(5)
    assert rx.open(data, now=NOW + 1).seq == 5
    assert reason(rx, data) is RejectedBecause.REPLAY
    assert rx.highest_seq == 5


def test_an_older_command_is_a_replay(tmp_path: Path) -> None:
    rx = receiver(tmp_path)
    older, newer = sealed(7), sealed(8)
    rx.open(newer, now=NOW + 1)
    assert reason(rx, older) is RejectedBecause.REPLAY
    assert rx.open(sealed(100), now=NOW + 1).seq == 100  # gaps are fine


def test_a_restart_does_not_reopen_the_window(tmp_path: Path) -> None:
    data = sealed(9)
    receiver(tmp_path).open(data, now=NOW + 1)
    restarted = receiver(tmp_path)  # same state file, a new process
    assert restarted.highest_seq == 9
    assert reason(restarted, data) is RejectedBecause.REPLAY
    assert (tmp_path / "plug-01.json.cmdseq").read_text() == "9"


def test_a_refused_command_moves_nothing(tmp_path: Path) -> None:
    rx = receiver(tmp_path)
    forger = CommandSigner(b"\x09" * 32)
    forged = forger.seal(
        Command("plug-01", "plug", "switch", {"on": True}, 50, NOW, NOW + 30, "a" * 32, "u:x")
    )
    assert reason(rx, forged) is RejectedBecause.BAD_SIGNATURE
    assert reason(rx, sealed(60, device="plug-02")) is RejectedBecause.WRONG_DEVICE
    with pytest.raises(CommandRejected) as caught:
        rx.open(sealed(70), now=NOW + 31)
    assert caught.value.reason is RejectedBecause.EXPIRED
    assert rx.highest_seq == 0
    assert not (tmp_path / "plug-01.json.cmdseq").exists()
    assert rx.open(sealed(1), now=NOW + 1).seq == 1


def test_concurrent_deliveries_open_once(tmp_path: Path) -> None:
    rx = receiver(tmp_path)
    data = sealed(3)
    opened: list[Command] = []

    def deliver() -> None:
        with contextlib.suppress(CommandRejected):
            opened.append(rx.open(data, now=NOW + 1))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(opened) == 1


def test_credentials_file_carries_the_command_key(tmp_path: Path) -> None:
    device, _ = Device.create("plug-01", "smart_plug", command_key=SIGNER.public_key)
    path = device.save(tmp_path / "plug-01.json")
    assert json.loads(path.read_text())["command_key"]
    loaded = Device.load(path)
    assert loaded.command_key == SIGNER.public_key
    rx = CommandReceiver.for_device(loaded)
    assert rx.state_path == tmp_path / "plug-01.json.cmdseq"
    assert rx.open(sealed(4), now=NOW + 1).seq == 4
    assert CommandReceiver.for_device(Device.load(path)).highest_seq == 4


def test_old_credentials_files_still_load(tmp_path: Path) -> None:
    device, _ = Device.create("env-01", "environment_station")
    path = device.save(tmp_path / "env-01.json")
    assert "command_key" not in json.loads(path.read_text())
    loaded = Device.load(path)
    assert loaded.command_key is None
    with pytest.raises(ValueError):
        CommandReceiver.for_device(loaded)


def test_a_wrong_command_key_is_refused() -> None:
    with pytest.raises(ValueError):
        Device.create("plug-01", "smart_plug", command_key=b"short")
    with pytest.raises(ValueError):
        CommandReceiver("plug-01", b"short", Path("x"))
