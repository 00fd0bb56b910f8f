"""Device registry: identities and the keys needed to verify them."""

from msec.registry.base import Algorithm, DeviceRecord, DeviceRegistry, DuplicateDevice
from msec.registry.sql import SqlRegistry

__all__ = ["Algorithm", "DeviceRecord", "DeviceRegistry", "DuplicateDevice", "SqlRegistry"]
