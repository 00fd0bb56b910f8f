"""Sending commands: sign, record, publish over MQTT (QoS 1), and learn what became of them.

The seam is ``publish(topic, payload) -> None``: :class:`MqttCommandPublisher` for a real
broker, :class:`msec.actuate.memory.MemoryPublisher` in process. A device's commands go to
``msec/<tenant>/<device>/_cmd``.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from msec.actuate.command import MAX_TTL_S, Command, CommandSigner, check_args, check_command
from msec.actuate.sql import SENT, CommandRecord, SqlCommands
from msec.core.errors import MsecError
from msec.core.models import ResourceValue
from msec.crypto.envelope import NAME_RE

__all__ = [
    "COMMAND_TOPIC_SUFFIX",
    "REPORT_GRACE_S",
    "Actuator",
    "CommandInfo",
    "CommandNotSent",
    "MqttCommandPublisher",
    "Publish",
    "command_topic",
]

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], None]
"""``publish(topic, payload)``: hand a message to the broker with QoS 1, returning once the
broker acknowledged it; raise :class:`MsecError` (or ``OSError``) when it did not."""

#: Last level of a command topic. Consumers of ``msec/#`` (ingest) must skip these.
COMMAND_TOPIC_SUFFIX: Final = "_cmd"
#: How long after a command expires the device may still report, before it counts as failed.
REPORT_GRACE_S: Final = 60.0


def command_topic(tenant: str, device: str) -> str:
    """Where ``device`` listens for commands: ``msec/<tenant>/<device>/_cmd``."""
    return f"msec/{tenant}/{device}/{COMMAND_TOPIC_SUFFIX}"


class CommandNotSent(MsecError):
    """The broker did not take the command (the API answers 503). It is recorded ``failed``."""


class LatestValues(Protocol):
    """What :meth:`Actuator.status` needs of the twin."""

    def latest(self, provider: str, service: str, resource: str) -> ResourceValue | None: ...


@dataclass(frozen=True, slots=True)
class CommandInfo:
    """What the caller of :meth:`Actuator.send` gets back."""

    id: str
    seq: int
    status: str
    expires_at: float


class Actuator:
    """Signs commands with the platform's command key, records them, publishes them.

    ``commands`` allocates the per-device sequence numbers and stores every command before it
    is published, so no command reaches a device without a record of who asked for it.
    Thread-safe if ``publish`` is.
    """

    def __init__(
        self,
        signer: CommandSigner,
        commands: SqlCommands,
        publish: Publish,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._signer = signer
        self.commands = commands
        self._publish = publish
        self._clock = clock

    @property
    def public_key(self) -> bytes:
        """The command key's public key: what devices' credentials files must carry."""
        return self._signer.public_key

    def send(
        self,
        device: str,
        tenant: str,
        service: str,
        resource: str,
        args: object,
        *,
        principal_id: str,
        ttl_s: float = 30,
    ) -> CommandInfo:
        """Sign, record and publish one command; returns once the broker has it.

        Raises ``ValueError`` for arguments a device would refuse (names, ``args`` not
        JSON-like or too big, ``ttl_s`` outside 1..300) before anything is stored, and
        :class:`CommandNotSent` when the broker did not acknowledge it (then it is recorded
        ``failed``; it may still reach the device if only the acknowledgement was lost).
        """
        if not NAME_RE.match(tenant):
            raise ValueError("tenant is not a name")
        if not 1 <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be within 1..{MAX_TTL_S}")
        clean = check_args(args)
        now = self._clock()
        command = Command(
            device=device,
            service=service,
            resource=resource,
            args=clean,
            seq=1,  # a stand-in: no number is spent on a command that fails its checks
            issued_at=now,
            expires_at=now + ttl_s,
            id=Command.new_id(),
            principal=principal_id,
        )
        check_command(command)
        command = replace(command, seq=self.commands.next_seq(device))
        data = self._signer.seal(command)
        self.commands.record(command)
        try:
            self._publish(command_topic(tenant, device), data)
        except (MsecError, OSError) as exc:
            self.commands.acknowledge(command.id, False, f"broker did not take it: {exc}")
            raise CommandNotSent(f"command for {device} not sent: {exc}") from None
        log.info(
            "command %s seq %d for %s/%s/%s by %s",
            command.id,
            command.seq,
            device,
            service,
            resource,
            principal_id,
        )
        return CommandInfo(command.id, command.seq, SENT, command.expires_at)

    def status(self, command_id: str, *, twin: LatestValues | None = None) -> CommandRecord | None:
        """The command as stored, settled first where the twin tells.

        With ``twin``: a ``sent`` command becomes ``acknowledged`` once the device reported
        the commanded resource at or after the command's issue time (device clock against
        platform clock: keep both synchronised), and ``failed`` when nothing was reported
        by :data:`REPORT_GRACE_S` after it expired. ``None`` if there is no such command.
        """
        record = self.commands.get(command_id)
        if record is None or record.status != SENT or twin is None:
            return record
        latest = twin.latest(record.device, record.service, record.resource)
        reported = latest.timestamp if latest is not None else None
        if reported is not None and reported >= record.issued_at:
            return self.commands.acknowledge(
                command_id,
                True,
                f"device reported {record.service}/{record.resource} at {reported}",
            )
        if self._clock() > record.expires_at + REPORT_GRACE_S:
            return self.commands.acknowledge(
                command_id, False, "no state report from the device after the command"
            )
        return record


class MqttCommandPublisher:
    """``publish(topic, payload)`` over one MQTT connection, QoS 1, waiting for PUBACK.

    Connects on first use (and again after a failure). Raises :class:`MsecError` when the
    broker cannot be reached, refuses the account or does not acknowledge within
    ``timeout`` seconds; the connection is then dropped together with anything paho still
    held for it, so a command reported as not sent is not sent later by a reconnect.
    Thread-safe: publications are serialised.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        tls_ca: str | None = None,
        *,
        timeout: float = 5.0,
        client_id: str | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._username, self._password = username, password
        self._tls_ca = tls_ca
        self._timeout = timeout
        self._client_id = client_id or f"msec-cmd-{secrets.token_hex(3)}"
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # no password
        return f"MqttCommandPublisher({self._host!r}, {self._port})"

    def __call__(self, topic: str, payload: bytes) -> None:
        with self._lock:
            try:
                client = self._connected()
                info = client.publish(topic, payload, qos=1)
                if info.rc != 0:  # paho's MQTT_ERR_SUCCESS; e.g. not connected right now
                    raise ConnectionError(f"publish refused locally (paho rc {info.rc})")
                info.wait_for_publish(self._timeout)
                if not info.is_published():
                    raise TimeoutError(f"no PUBACK within {self._timeout}s")
            except (OSError, RuntimeError, ValueError) as exc:
                self._drop()
                raise MsecError(f"MQTT broker {self._host}:{self._port}: {exc}") from None

    def _connected(self) -> Any:
        if self._client is None:
            from msec.transport.mqtt import connect

            self._client = connect(
                self._host,
                self._port,
                client_id=self._client_id,
                username=self._username,
                password=self._password,
                tls_ca=self._tls_ca,
                timeout=self._timeout,
            )
        return self._client

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def close(self) -> None:
        """Disconnect, if connected."""
        with self._lock:
            self._drop()
