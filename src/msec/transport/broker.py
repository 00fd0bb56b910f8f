"""The embedded MQTT broker: amqtt in a child process on 127.0.0.1, with passwords.

It is the default for ``msec demo`` so that no external service is needed. amqtt is
MQTT 3.1.1 only, keeps sessions in memory (a broker restart forgets queued messages that
no subscriber has yet received) and carries ~4k msg/s: production uses Mosquitto
(``deploy/mosquitto.conf``), selected in the settings.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher


def write_password_file(path: Path, users: dict[str, str]) -> None:
    """Write ``user:argon2-hash`` lines (mode 0600) for amqtt's FileAuthPlugin."""
    hasher = PasswordHash((Argon2Hasher(),))
    lines = [f"{user}:{hasher.hash(password)}" for user, password in sorted(users.items())]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


class EmbeddedBroker:
    """amqtt running in a child process; :meth:`start` returns once it accepts connections."""

    def __init__(
        self,
        password_file: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_file: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._password_file = password_file
        self._log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        config = {"host": self.host, "port": self.port, "password_file": str(self._password_file)}
        log = open(self._log_file, "ab") if self._log_file else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [sys.executable, "-m", "msec.transport._amqtt_main", json.dumps(config)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            wait_for_port(self.host, self.port, timeout)
        except TimeoutError:
            self.stop()
            raise

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def stop(self) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after 5 s)."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
