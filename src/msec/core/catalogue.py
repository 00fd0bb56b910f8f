"""The built-in device kinds, registered when this module is imported.

Data only. Ranges are physical plausibility bounds (what a working sensor can report), not
comfort or alarm thresholds: a value outside them is refused as ``out_of_range``. Kind,
service and resource names are lowercase snake_case because they become MQTT topic levels
and URL path segments. Every kind also reports ``health/battery`` and ``health/rssi``
(added by :class:`msec.core.kinds.DeviceKind`).

Pilot 1 (Park Guide, Las Llamas park, Santander) is here; later pilots add their kinds to
this module. ``smart_plug`` is the first kind that also takes commands (``msec.actuate``).
"""

from __future__ import annotations

from msec.core.kinds import DeviceKind, ResourceSpec, register_kinds

# --- Pilot 1: Park Guide (Las Llamas park, Santander) ---------------------------------------
# The report's "IoT Environmental Monitoring devices" (temperature, humidity, CO2, VOC, noise)
# and "Crowd counting IoT device" (number of people in a spot) are separate devices.

ENVIRONMENT_STATION = DeviceKind(
    name="environment_station",
    description=(
        "Outdoor environmental monitoring device: air temperature, relative humidity, "
        "CO2, total VOC and A-weighted sound level"
    ),
    resources=(
        ResourceSpec("environment", "temperature", "°C", "float", -40, 60, "air temperature"),
        ResourceSpec("environment", "humidity", "%", "float", 0, 100, "relative humidity"),
        # NDIR sensors read 0..10000 ppm; below 250 ppm is not found in open air on Earth.
        ResourceSpec("environment", "co2", "ppm", "float", 250, 10000, "carbon dioxide"),
        # Metal-oxide TVOC sensors (e.g. SGP30) report 0..60000 ppb; open air is ~50-300 ppb.
        ResourceSpec(
            "environment", "voc", "ppb", "float", 0, 60000, "total volatile organic compounds"
        ),
        ResourceSpec(
            "environment", "noise", "dB(A)", "float", 20, 140,
            "A-weighted equivalent sound level over the last minute (LAeq,1min)",
        ),
    ),
)

CROWD_COUNTER = DeviceKind(
    name="crowd_counter",
    description="Portable crowd counting device: estimated number of people in the spot it covers",
    resources=(
        ResourceSpec(
            "crowd", "count", "people", "int", 0, 10000,
            "people estimated in the covered spot right now",
        ),
    ),
)

# --- Actuators ------------------------------------------------------------------------------
# Devices the platform can command (POST .../resources/{resource}/act); they confirm a command
# by reporting the resource's new state like any other reading.

SMART_PLUG = DeviceKind(
    name="smart_plug",
    description=(
        "Switchable mains socket with energy metering: relay state, active power, "
        "RMS voltage and mains frequency"
    ),
    resources=(
        ResourceSpec(
            "plug", "switch", None, "bool", description="relay state: true when the socket is on"
        ),
        # A Schuko socket is rated 16 A: 16 A x 230 V = 3680 W.
        ResourceSpec("plug", "power", "W", "float", 0, 3680, "active power drawn by the load"),
        # EN 50160 allows 230 V +-10 %; 260 V leaves room for a faulty supply to be seen.
        ResourceSpec("plug", "voltage", "V", "float", 0, 260, "RMS mains voltage"),
        # Grids run at 50 or 60 Hz and trip well within +-5 Hz.
        ResourceSpec("plug", "frequency", "Hz", "float", 45, 65, "mains frequency"),
    ),
)

register_kinds((ENVIRONMENT_STATION, CROWD_COUNTER, SMART_PLUG))
