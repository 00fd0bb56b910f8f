"""The device side: an identity from a credentials file, sealing, publishing.

A credentials file is JSON written with mode 0600 by ``msec device add``; it holds the
device's private key (or MAC key), its optional encryption key, where to send readings and,
for devices that take commands, the platform's command public key (``command_key``). The
platform keeps only the public key (or the wrapped shared key).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msec.core.kinds import get_kind
from msec.core.models import Value
from msec.crypto import envelope
from msec.crypto.envelope import NAME_RE, RawReading
from msec.crypto.keys import new_ed25519, new_symmetric_key
from msec.registry.base import Algorithm, DeviceRecord
from msec.sdk.state import read_int, write_int

#: Sequence numbers are reserved in blocks so that a crash never reuses one
#: (a reused number would be refused as a replay) without a disk write per seal.
SEQ_BLOCK = 1000

Readings = Sequence[RawReading] | Mapping[str, Value]


@dataclass
class Endpoint:
    """Where a device sends readings: MQTT broker and/or HTTP ingest URL."""

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    #: CA certificate file: use TLS to the broker and verify it against this CA.
    mqtt_tls_ca: str | None = None
    http_url: str | None = None


@dataclass
class Device:
    """A device identity able to seal readings; see :meth:`load` and :meth:`create`."""

    name: str
    kind: str
    tenant: str
    alg: Algorithm
    secret: bytes
    enc_key: bytes | None = None
    endpoint: Endpoint = field(default_factory=Endpoint)
    path: Path | None = None
    #: The platform's Ed25519 command public key (32 bytes): commands are verified with it
    #: (:class:`msec.sdk.command.CommandReceiver`). ``None``: the device takes no commands.
    command_key: bytes | None = None
    _next_seq: int = 1
    _reserved: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _client: Any = field(default=None, repr=False)

    # ---- identity -----------------------------------------------------------------
    @classmethod
    def create(
        cls,
        name: str,
        kind: str,
        *,
        tenant: str = "default",
        alg: Algorithm = "EdDSA",
        encrypt: bool = False,
        endpoint: Endpoint | None = None,
        command_key: bytes | None = None,
    ) -> tuple[Device, DeviceRecord]:
        """A new identity and the record the platform must register for it.

        ``command_key`` is the platform's command public key, for devices that take commands.
        """
        if not NAME_RE.match(name):
            raise ValueError(f"device name {name!r}: use 1-64 of a-z 0-9 _ - (starting alnum)")
        if not NAME_RE.match(tenant):
            raise ValueError(f"tenant {tenant!r}: use 1-64 of a-z 0-9 _ -")
        get_kind(kind)  # raises UnknownKind early
        if command_key is not None and len(command_key) != 32:
            raise ValueError("command_key must be a 32-byte Ed25519 public key")
        if alg == "EdDSA":
            public, secret = new_ed25519()
        elif alg == "HMAC256":
            secret = new_symmetric_key()
            public = secret
        else:
            raise ValueError(f"unknown algorithm {alg!r}")
        enc_key = new_symmetric_key() if encrypt else None
        device = cls(name, kind, tenant, alg, secret, enc_key, endpoint or Endpoint())
        device.command_key = command_key
        record = DeviceRecord(name, kind, tenant, alg, public, enc_key)
        return device, record

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Device:
        """Read a credentials file; the sequence continues after what it reserved before."""
        path = Path(path)
        data = json.loads(path.read_text())
        secret_field = "secret_key" if data["alg"] == "EdDSA" else "mac_key"
        device = cls(
            name=data["name"],
            kind=data["kind"],
            tenant=data.get("tenant", "default"),
            alg=data["alg"],
            secret=base64.b64decode(data[secret_field]),
            enc_key=base64.b64decode(data["enc_key"]) if data.get("enc_key") else None,
            endpoint=Endpoint(**data.get("endpoint", {})),
            path=path,
            # Absent from files written before devices took commands.
            command_key=(
                base64.b64decode(data["command_key"]) if data.get("command_key") else None
            ),
        )
        # Numbers up to the last reservation may have been used before a crash: skip them.
        device._reserved = read_int(_seq_path(path))
        device._next_seq = device._reserved + 1
        return device

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the credentials file with mode 0600 (it holds the private key)."""
        path = Path(path)
        secret_field = "secret_key" if self.alg == "EdDSA" else "mac_key"
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "tenant": self.tenant,
            "alg": self.alg,
            secret_field: base64.b64encode(self.secret).decode(),
            "endpoint": self.endpoint.__dict__,
        }
        if self.enc_key:
            data["enc_key"] = base64.b64encode(self.enc_key).decode()
        if self.command_key:
            data["command_key"] = base64.b64encode(self.command_key).decode()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
        os.chmod(path, 0o600)
        self.path = path
        return path

    # ---- sealing ------------------------------------------------------------------
    def seal(self, readings: Readings, *, at: float | None = None) -> bytes:
        """Seal readings into one envelope with fresh sequence numbers.

        ``readings`` is a list of ``(service, resource, value[, time])`` or a mapping
        ``{"service/resource": value}``. Each call consumes ``len(readings)`` numbers.
        """
        rows = _rows(readings)
        if not rows:
            raise ValueError("nothing to seal")
        seq = self._take(len(rows))
        payload = envelope.encode_payload(
            self.name, seq, at if at is not None else time.time(), rows
        )
        if self.alg == "EdDSA":
            return envelope.seal(
                payload, kid=self.name, signing_key=self.secret, enc_key=self.enc_key
            )
        return envelope.seal(payload, kid=self.name, mac_key=self.secret, enc_key=self.enc_key)

    def topic(self, readings: Readings) -> str:
        """The MQTT topic for an envelope of these readings.

        One reading: ``msec/<tenant>/<device>/<service>/<resource>``; several:
        ``msec/<tenant>/<device>/_batch``.
        """
        rows = _rows(readings)
        if len(rows) == 1:
            return f"msec/{self.tenant}/{self.name}/{rows[0][0]}/{rows[0][1]}"
        return f"msec/{self.tenant}/{self.name}/_batch"

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def _take(self, count: int) -> int:
        with self._lock:
            seq = self._next_seq
            self._next_seq += count
            if self.path is not None and self._next_seq - 1 > self._reserved:
                self._reserved = self._next_seq - 1 + SEQ_BLOCK
                write_int(_seq_path(self.path), self._reserved)
            return seq

    # ---- sending ------------------------------------------------------------------
    def publish(self, readings: Readings, *, timeout: float = 10.0) -> int:
        """Seal and publish over MQTT (QoS 1); returns the first sequence number used.

        Returns once the broker acknowledged (PUBACK). Raises ``TimeoutError`` if it did
        not within ``timeout`` seconds, ``ConnectionError`` if the broker refused us.
        """
        from msec.transport.mqtt import connect

        data = self.seal(readings)
        seq = self._next_seq - len(_rows(readings))
        if self._client is None:
            ep = self.endpoint
            self._client = connect(
                # A random suffix: two processes holding one identity must not keep
                # kicking each other off the broker (MQTT client ids are exclusive).
                ep.mqtt_host,
                ep.mqtt_port,
                client_id=f"dev-{self.name}-{secrets.token_hex(3)}",
                username=ep.mqtt_username,
                password=ep.mqtt_password,
                tls_ca=ep.mqtt_tls_ca,
            )
        info = self._client.publish(self.topic(readings), data, qos=1)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError(f"broker did not acknowledge within {timeout}s")
        return seq

    def post(self, readings: Readings, *, url: str | None = None, timeout: float = 10.0) -> dict:
        """Seal and send to ``POST /api/v1/ingest``; returns the JSON answer.

        Raises ``RuntimeError`` with the platform's reason when it refuses the envelope.
        """
        import urllib.error
        import urllib.request

        target = url or self.endpoint.http_url
        if not target:
            raise ValueError("no HTTP ingest URL configured for this device")
        request = urllib.request.Request(
            target.rstrip("/") + ("" if target.endswith("/ingest") else "/api/v1/ingest"),
            data=self.seal(readings),
            headers={"Content-Type": "application/cose"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(
                f"ingest refused ({exc.code}): {exc.read().decode()[:300]}"
            ) from None

    def close(self) -> None:
        """Disconnect from the broker, if connected."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None


def _rows(readings: Readings) -> list[RawReading]:
    if isinstance(readings, Mapping):
        rows: list[RawReading] = []
        for key, value in readings.items():
            service, _, resource = key.partition("/")
            rows.append((service, resource, value))
        return rows
    return list(readings)


def _seq_path(path: Path) -> Path:
    return path.with_name(path.name + ".seq")
