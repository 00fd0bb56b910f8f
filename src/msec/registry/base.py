"""The device registry: which devices exist and what the platform needs to verify them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Algorithm = Literal["EdDSA", "HMAC256"]


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """What the platform keeps about a device.

    For ``EdDSA`` devices ``verify_key`` is the 32-byte public key (the private key never
    leaves the device's credentials file); for ``HMAC256`` devices it is the shared MAC key,
    which is why the SQL registry stores secrets wrapped under the platform's key file.
    ``enc_key`` is the AES-256-GCM key for end-to-end payload encryption, if any.
    ``subject`` is the person whose data the device records (a care patient's home sensor),
    if any: their readings of sensitive resources are stored encrypted under that subject.
    """

    name: str
    kind: str
    tenant: str
    alg: Algorithm
    verify_key: bytes
    enc_key: bytes | None = None
    revoked: bool = False
    description: str = ""
    latitude: float | None = None
    longitude: float | None = None
    created: float = 0.0
    subject: str | None = None


class DuplicateDevice(KeyError):
    """A device of that name is already registered."""

    def __str__(self) -> str:
        return f"device {self.args[0]!r} is already registered"


class DeviceRegistry(Protocol):
    """Known devices. Implementations: :class:`msec.registry.sql.SqlRegistry`."""

    def add(self, record: DeviceRecord) -> DeviceRecord:
        """Register a new device; raises :class:`DuplicateDevice` if the name is taken."""
        ...

    def get(self, name: str) -> DeviceRecord | None:
        """The device called ``name`` (revoked ones included), or ``None``."""
        ...

    def all(self) -> list[DeviceRecord]:
        """Every registered device, by name."""
        ...

    def revoke(self, name: str) -> bool:
        """Refuse the device's messages from now on; ``False`` if it does not exist."""
        ...
