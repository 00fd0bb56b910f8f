"""Simulators of the pilots' devices: realistic, seeded, a pure function of time.

Each pilot's simulator lives in its own module and takes :class:`SimDevice` entries; a
simulator's ``sample(device, t)`` returns ``(service, resource, value)`` triples that pass
the device kind's checks.
"""

from msec.sdk.sim.base import SimDevice, SmoothNoise
from msec.sdk.sim.park import PARK_DEVICES, WEATHERS, ParkSimulator, Weather

__all__ = ["PARK_DEVICES", "WEATHERS", "ParkSimulator", "SimDevice", "SmoothNoise", "Weather"]
