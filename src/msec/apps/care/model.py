"""Connected Care's vocabulary (homes, devices, alarm kinds, settings): see
:mod:`msec.core.care`, where it lives so that the home simulator can share it."""

from msec.core.care import (
    DEVICE_ROLES,
    HEARTBEAT_S,
    AlarmKind,
    AlarmRequest,
    CareSettings,
    Incident,
    SensorEvent,
    device_name,
    split_device,
)

__all__ = [
    "DEVICE_ROLES",
    "HEARTBEAT_S",
    "AlarmKind",
    "AlarmRequest",
    "CareSettings",
    "Incident",
    "SensorEvent",
    "device_name",
    "split_device",
]
