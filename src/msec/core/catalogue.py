"""The built-in device kinds, registered when this module is imported.

Data only. Ranges are physical plausibility bounds (what a working sensor can report), not
comfort or alarm thresholds: a value outside them is refused as ``out_of_range``. Kind,
service and resource names are lowercase snake_case because they become MQTT topic levels
and URL path segments. Every kind also reports ``health/battery`` and ``health/rssi``
(added by :class:`msec.core.kinds.DeviceKind`).

Pilot 1 (Park Guide, Las Llamas park, Santander) and Pilot 2 (Connected Care, homes of
elderly people living alone in Santander) are here; later pilots add their kinds to this
module. ``smart_plug`` is the first kind that also takes commands (``msec.actuate``).
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

# --- Pilot 2: Connected Care (homes of elderly people living alone, Santander) ---------------
# The report's home kit: a connectivity hub (ZigBee gateway), a motion sensor, a door/window
# contact on the front door, a bed occupancy sensor and a smart plug (``smart_plug`` below).
# Every device reports its state on change and as a heartbeat (msec.core.care); the
# sensors run on batteries, the hub is mains-powered.

CARE_GATEWAY = DeviceKind(
    name="care_gateway",
    description="Connectivity hub of a Connected Care home: forwards its ZigBee sensors' readings",
    resources=(
        # 10^9 s is nearly 32 years: any real uptime fits, a garbage counter does not.
        ResourceSpec(
            "gateway", "uptime", "s", "int", 0, 1_000_000_000, "seconds since the hub started"
        ),
    ),
)

MOTION_SENSOR = DeviceKind(
    name="motion_sensor",
    description="Passive infrared motion sensor in the living area of a home",
    resources=(
        ResourceSpec(
            "motion", "detected", None, "bool",
            description=(
                "true when motion is detected; false when the PIR's hold time (60 s) ends "
                "without more motion; heartbeats repeat the current state"
            ),
        ),
    ),
)

CONTACT_SENSOR = DeviceKind(
    name="contact_sensor",
    description="Magnetic door/window contact (on the front door in Connected Care homes)",
    resources=(
        ResourceSpec(
            "contact", "open", None, "bool", description="true while the door or window is open"
        ),
    ),
)

BED_SENSOR = DeviceKind(
    name="bed_sensor",
    description="Pressure mat under the mattress: whether someone is lying in the bed",
    resources=(
        ResourceSpec(
            "bed", "occupied", None, "bool", description="true while someone is in the bed"
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

register_kinds((
    ENVIRONMENT_STATION, CROWD_COUNTER, CARE_GATEWAY, MOTION_SENSOR, CONTACT_SENSOR, BED_SENSOR,
    SMART_PLUG,
))
