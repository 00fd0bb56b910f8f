"""The device side of commands: verify what the platform sent, refuse replays across restarts.

A device that takes commands holds the platform's command public key (``command_key`` in
its credentials file) and keeps the highest command sequence number it accepted in a small
file next to the credentials (``FILE.cmdseq``), written before the command is acted on.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from msec.actuate.command import Command, CommandRejected, RejectedBecause, open_command
from msec.sdk.device import Device
from msec.sdk.state import read_int, write_int

__all__ = ["Command", "CommandReceiver", "CommandRejected", "RejectedBecause"]


class CommandReceiver:
    """Opens commands for one device and remembers the highest sequence number accepted.

    Guarantees: :meth:`open` returns only a command signed with ``platform_command_key``,
    for ``device_name``, not expired by this device's clock, and numbered above every
    command it returned before, also before a restart (the number is on disk, fsynced,
    before :meth:`open` returns). So a command is returned at most once, and one overtaken by
    a newer command for the same device is refused. Thread-safe.
    """

    def __init__(self, device_name: str, platform_command_key: bytes, state_path: Path) -> None:
        if len(platform_command_key) != 32:
            raise ValueError("the platform command key is a 32-byte Ed25519 public key")
        self.device_name = device_name
        self._key = platform_command_key
        self.state_path = Path(state_path)
        self._lock = threading.Lock()
        self._highest = read_int(self.state_path)

    @classmethod
    def for_device(cls, device: Device) -> CommandReceiver:
        """The receiver of a device loaded from (or saved to) a credentials file that holds
        the platform's ``command_key``; its state is ``FILE.cmdseq``.

        Raises ``ValueError`` when the device has no command key or no file.
        """
        if device.command_key is None:
            raise ValueError(f"{device.name}: the credentials hold no platform command key")
        if device.path is None:
            raise ValueError(f"{device.name}: save or load the credentials file first")
        state = device.path.with_name(device.path.name + ".cmdseq")
        return cls(device.name, device.command_key, state)

    @property
    def highest_seq(self) -> int:
        """The highest sequence number accepted so far (0: none)."""
        return self._highest

    def open(self, data: bytes, now: float | None = None) -> Command:
        """Verify a sealed command and return it; act on it only after this returns.

        Raises :class:`CommandRejected` with ``malformed``, ``bad_signature``,
        ``wrong_device``, ``expired`` or ``replay`` (see
        :func:`msec.actuate.command.open_command`). A refused command changes nothing.
        ``OSError`` if the state file cannot be written: then the command is not returned.
        """
        at = time.time() if now is None else now
        with self._lock:
            command = open_command(
                data, self._key, device=self.device_name, now=at, after_seq=self._highest
            )
            # On disk before anyone acts on it: after a crash the same command is a replay.
            write_int(self.state_path, command.seq)
            self._highest = command.seq
        return command
