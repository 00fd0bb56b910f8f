"""The park's layout (stops, the devices in each, where they stand) and plain verdicts.

A :class:`Park` is a numbered list of :class:`Stop` entries, one per area of the park: the
number is what the stop's QR code shows, the area is the slug the devices' readings are
grouped under. :func:`default_park` is Las Llamas park (Santander) with Pilot 1's simulated
devices; :func:`load_park` reads another park from a TOML file. Both give a park that has
passed every check in :class:`Stop` and :class:`Park`, so code that holds a ``Park`` never
checks it again.

:func:`verdict` turns a measurement into the word a citizen sees ("good", "moderate",
"poor"); :data:`MEASUREMENTS` says which readings those are.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from msec.core.errors import MsecError
from msec.sdk.sim.park import PARK_DEVICES

__all__ = [
    "LANGUAGES",
    "MEASUREMENTS",
    "Park",
    "ParkConfigError",
    "Stop",
    "Verdict",
    "default_park",
    "load_park",
    "measurement_of",
    "verdict",
]

#: The languages the guide speaks; English is the one every text must have.
LANGUAGES: Final = ("en", "es", "ja")

#: What citizens are shown: measurement name -> (service, resource, unit) of the reading.
MEASUREMENTS: Final[Mapping[str, tuple[str, str, str]]] = {
    "co2": ("environment", "co2", "ppm"),
    "noise": ("environment", "noise", "dB(A)"),
    "crowd": ("crowd", "count", "people"),
}

Verdict = Literal["good", "moderate", "poor"]

_SLUG: Final = re.compile(r"[a-z0-9_]+")
_MAX_SLUG: Final = 64
_EARTH_RADIUS_M: Final = 6_371_008.8
#: Radius of the area drawn around a stop with fewer than three located devices.
_AREA_RADIUS_M: Final = 60.0
#: Distance the area keeps from each device when drawn around three or more of them.
_DEVICE_BUFFER_M: Final = 30.0
#: Margin :meth:`Park.bounds` adds around the areas, so that no area touches the map's edge.
_BOUNDS_MARGIN_M: Final = 50.0

# Upper bounds of "good" and "moderate" for each measurement; at or above the second, "poor".
_BANDS: Final[Mapping[str, tuple[float, float]]] = {
    # CO2 is harmless at these levels; in open air (~420 ppm) a high reading means exhaust or
    # stagnant air. The bands are the indoor ones everyone knows: 800 ppm is about the
    # "high indoor air quality" class of EN 16798-1 (category I, outdoor + 400 ppm), and
    # 1000 ppm is Pettenkofer's limit, kept by ASHRAE 62 and the EU's EN 13779 (IDA 2).
    "co2": (800.0, 1000.0),
    # WHO Guidelines for Community Noise (1999), outdoor living areas by day: 55 dB LAeq
    # "serious annoyance"; also the reporting threshold (Lden 55 dB) of the EU Environmental
    # Noise Directive 2002/49/EC. 65 dB LAeq is the level the WHO and the OECD name as
    # harmful to health over time (the "black area" of the EU's 1996 Green Paper on noise).
    "noise": (55.0, 65.0),
    # Share of the area's capacity: half full is still pleasant, 85 % is crowded.
    "crowd": (0.5, 0.85),
}


class ParkConfigError(MsecError, ValueError):
    """A park's layout breaks a rule; the message names the stop (or the file) at fault."""


@dataclass(frozen=True)
class Stop:
    """One stop of the guide: an area of the park, its devices and its texts.

    ``number`` (1-based) is what the stop's QR code shows; ``area`` is a slug
    (``[a-z0-9_]+``); ``name`` and ``description`` map a language of :data:`LANGUAGES` to the
    text (``name["en"]`` is required, the rest optional); ``devices`` are the providers
    in the area (at least one); ``latitude``/``longitude`` the centroid of their positions;
    ``capacity`` the number of people at which the area counts as crowded.

    Raises :class:`ParkConfigError` (naming the stop) when any of these rules is broken.
    """

    number: int
    area: str
    name: dict[str, str]
    description: dict[str, str]
    devices: tuple[str, ...]
    latitude: float
    longitude: float
    capacity: int

    def __post_init__(self) -> None:
        where = f"stop {self.number!r} ({self.area!r})"
        if type(self.number) is not int or self.number < 1:
            raise ParkConfigError(f"{where}: number must be an integer >= 1")
        if (
            not isinstance(self.area, str)
            or len(self.area) > _MAX_SLUG
            or not _SLUG.fullmatch(self.area)
        ):
            raise ParkConfigError(
                f"{where}: area must be a slug of a-z, 0-9 and _ (at most {_MAX_SLUG})"
            )
        for label, texts in (("name", self.name), ("description", self.description)):
            if not isinstance(texts, dict):
                raise ParkConfigError(f"{where}: {label} must map languages to texts")
            for lang, text in texts.items():
                if lang not in LANGUAGES:
                    raise ParkConfigError(
                        f"{where}: {label} in unknown language {lang!r}; use {', '.join(LANGUAGES)}"
                    )
                if not isinstance(text, str) or not text.strip():
                    raise ParkConfigError(f"{where}: {label}.{lang} must be non-empty text")
        if "en" not in self.name:
            raise ParkConfigError(f"{where}: an English name (name.en) is required")
        object.__setattr__(self, "devices", tuple(self.devices))
        if not self.devices:
            raise ParkConfigError(f"{where}: at least one device is required")
        for device in self.devices:
            if not isinstance(device, str) or not device:
                raise ParkConfigError(f"{where}: device names must be non-empty text")
        if len(set(self.devices)) != len(self.devices):
            raise ParkConfigError(f"{where}: a device is listed twice")
        if type(self.capacity) is not int or self.capacity <= 0:
            raise ParkConfigError(f"{where}: capacity must be an integer > 0")
        if not (
            _finite(self.latitude)
            and _finite(self.longitude)
            and -90 <= self.latitude <= 90
            and -180 <= self.longitude <= 180
        ):
            raise ParkConfigError(f"{where}: latitude/longitude out of range")

    def text(self, field: Literal["name", "description"], lang: str) -> str:
        """``field`` in ``lang``, else in English, else ``""``. ``ValueError`` for another field."""
        if field not in ("name", "description"):
            raise ValueError(f"no text field {field!r}: use 'name' or 'description'")
        texts: dict[str, str] = getattr(self, field)
        return texts.get(lang) or texts.get("en", "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "area": self.area,
            "name": dict(self.name),
            "description": dict(self.description),
            "devices": list(self.devices),
            "latitude": self.latitude,
            "longitude": self.longitude,
            "capacity": self.capacity,
        }


@dataclass(frozen=True)
class Park:
    """A park: its name, its stops and where each device stands.

    ``positions`` maps a device to its ``(latitude, longitude)``; devices missing from it
    still belong to their stop, they are only left out of :meth:`area_polygon`.

    Raises :class:`ParkConfigError` if there is no stop, or two stops share a number, an
    area or a device.
    """

    name: str
    stops: tuple[Stop, ...]
    positions: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stops", tuple(self.stops))
        if not isinstance(self.name, str) or not self.name.strip():
            raise ParkConfigError("the park needs a name")
        if not self.stops:
            raise ParkConfigError(f"park {self.name!r} has no stop")
        numbers: set[int] = set()
        areas: set[str] = set()
        owner: dict[str, int] = {}
        for stop in self.stops:
            where = f"stop {stop.number} ({stop.area!r})"
            if stop.number in numbers:
                raise ParkConfigError(f"{where}: number {stop.number} is used by another stop")
            if stop.area in areas:
                raise ParkConfigError(f"{where}: area {stop.area!r} is used by another stop")
            for device in stop.devices:
                if device in owner:
                    raise ParkConfigError(
                        f"{where}: device {device!r} already belongs to stop {owner[device]}"
                    )
                owner[device] = stop.number
            numbers.add(stop.number)
            areas.add(stop.area)

    def stop(self, number: int) -> Stop | None:
        """The stop numbered ``number``, or ``None``."""
        return next((s for s in self.stops if s.number == number), None)

    def stop_of_device(self, device: str) -> Stop | None:
        """The stop whose area ``device`` is in, or ``None``."""
        return next((s for s in self.stops if device in s.devices), None)

    def devices(self) -> tuple[str, ...]:
        """Every device of the park, stop by stop."""
        return tuple(device for stop in self.stops for device in stop.devices)

    def area_polygon(self, stop: Stop) -> list[tuple[float, float]]:
        """A convex polygon ``[(lat, lon), ...]`` (counter-clockwise, not closed) for ``stop``.

        Drawn from device positions, since the guide has no surveyed plan: with three or more
        located devices, their convex hull grown by 30 m; otherwise an octagon of radius 60 m
        around the stop's centroid.
        """
        origin = (stop.latitude, stop.longitude)
        located = [self.positions[d] for d in stop.devices if d in self.positions]
        if len(located) < 3:
            points = _octagon((0.0, 0.0), _AREA_RADIUS_M)
        else:
            points = [
                corner
                for position in located
                for corner in _octagon(_to_metres(origin, position), _DEVICE_BUFFER_M)
            ]
        return [_from_metres(origin, p) for p in _convex_hull(points)]

    def bounds(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """``((min_lat, min_lon), (max_lat, max_lon))`` around every area, with a 50 m margin."""
        corners = [p for stop in self.stops for p in self.area_polygon(stop)]
        low = (min(p[0] for p in corners), min(p[1] for p in corners))
        high = (max(p[0] for p in corners), max(p[1] for p in corners))
        d_lat = math.degrees(_BOUNDS_MARGIN_M / _EARTH_RADIUS_M)
        d_lon = d_lat / math.cos(math.radians((low[0] + high[0]) / 2))
        return (
            (round(low[0] - d_lat, 6), round(low[1] - d_lon, 6)),
            (round(high[0] + d_lat, 6), round(high[1] + d_lon, 6)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The park as JSON-ready data: stops with their area polygons, and the map bounds."""
        low, high = self.bounds()
        return {
            "name": self.name,
            "bounds": [list(low), list(high)],
            "stops": [
                {**stop.to_dict(), "polygon": [list(p) for p in self.area_polygon(stop)]}
                for stop in self.stops
            ],
        }


# -- Las Llamas park --------------------------------------------------------------------------

# area -> (capacity, name, description). Capacities are the simulator's ``peak_people`` (people
# in the spot at a fine weekend's busiest hour, msec.sdk.sim.park): at that peak, "crowded".
_LLAMAS: Final[dict[str, tuple[int, dict[str, str], dict[str, str]]]] = {
    "palacio": (
        150,
        {
            "en": "Main entrance (Palacio de Deportes)",
            "es": "Entrada principal (Palacio de Deportes)",
            "ja": "パラシオ・デ・デポルテス前の正面入口",
        },
        {
            "en": "The park's busiest corner, beside the whale-shaped sports arena, with a "
            "playground and a café terrace. Traffic on the nearby street shows in the air "
            "and in the noise.",
            "es": "El rincón más concurrido del parque, junto al pabellón con forma de "
            "ballena, con un parque infantil y la terraza de una cafetería. El tráfico de la "
            "calle cercana se nota en el aire y en el ruido.",
            "ja": "クジラの形をした屋内競技場のそばにある、公園でいちばんにぎやかな場所です。"
            "遊び場とカフェのテラスがあり、近くの通りを走る車の影響が空気と騒音に表れます。",
        },
    ),
    "lake": (
        70,
        {"en": "Lagoon footbridges", "es": "Pasarelas de la laguna", "ja": "池の木道"},
        {
            "en": "Wooden footbridges across the central lagoon, home to ducks, herons and "
            "other water birds. One of the quietest and freshest spots in the park.",
            "es": "Pasarelas de madera sobre la laguna central, hogar de patos, garzas y "
            "otras aves acuáticas. Uno de los rincones más tranquilos y frescos del parque.",
            "ja": "中央の池を渡る木道で、カモやサギなどの水鳥が暮らしています。"
            "公園の中でも特に静かで、空気のさわやかな場所です。",
        },
    ),
    "amphitheatre": (
        45,
        {
            "en": "Open-air amphitheatre",
            "es": "Anfiteatro al aire libre",
            "ja": "野外円形劇場",
        },
        {
            "en": "Stepped seating around an open-air stage. Quiet most days; on some summer "
            "weekend evenings it hosts concerts and fills with people and music.",
            "es": "Gradas alrededor de un escenario al aire libre. Tranquilo casi todos los "
            "días; algunas tardes de fin de semana en verano acoge conciertos y se llena de "
            "gente y de música.",
            "ja": "屋外ステージを囲む階段状の客席です。ふだんは静かですが、夏の週末の夕方には"
            "コンサートが開かれ、人と音楽でにぎわうことがあります。",
        },
    ),
    "los_castros": (
        35,
        {
            "en": "Avenida de los Castros side",
            "es": "Lado de la Avenida de los Castros",
            "ja": "ロス・カストロス通り側",
        },
        {
            "en": "The northern edge of the park, along Avenida de los Castros. Compare its "
            "air and noise with the lagoon's to see what the road brings.",
            "es": "El borde norte del parque, a lo largo de la Avenida de los Castros. Compara "
            "su aire y su ruido con los de la laguna para ver lo que trae la carretera.",
            "ja": "ロス・カストロス通りに面した公園の北側です。池のそばと空気や騒音を比べると、"
            "道路の影響がよくわかります。",
        },
    ),
}


def default_park() -> Park:
    """Las Llamas park, Santander: one stop per area of Pilot 1's simulated devices."""
    positions = {d.name: (d.latitude, d.longitude) for d in PARK_DEVICES}
    stops = []
    for number, (area, (capacity, name, description)) in enumerate(_LLAMAS.items(), start=1):
        devices = tuple(d.name for d in PARK_DEVICES if d.area == area)
        latitude, longitude = _centroid(positions[d] for d in devices)
        stops.append(Stop(number, area, name, description, devices, latitude, longitude, capacity))
    return Park("Parque de Las Llamas, Santander", tuple(stops), positions)


# -- a park from a file -----------------------------------------------------------------------


def load_park(path: str | Path, locate: Callable[[str], tuple[float, float] | None]) -> Park:
    """Read a park from the TOML file at ``path``.

    The file holds ``[park] name = "..."`` and one ``[[stops]]`` table per stop with
    ``number``, ``area``, ``capacity``, ``devices = [...]``, ``name.en`` (``name.es``,
    ``name.ja`` and ``description.*`` optional). ``locate(device)`` gives a device's
    ``(latitude, longitude)`` or ``None`` (e.g. from the device registry); a stop's
    position is the centroid of its located devices.

    Raises :class:`ParkConfigError`, naming the stop, for a file that cannot be read or
    parsed, a missing or mistyped key, a stop none of whose devices can be located, or any
    rule of :class:`Stop` and :class:`Park` broken. ``locate``'s own errors propagate.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ParkConfigError(f"{path}: cannot read the park: {exc}") from exc
    park = data.get("park")
    if not isinstance(park, dict) or not isinstance(park.get("name"), str):
        raise ParkConfigError(f'{path}: a [park] table with name = "..." is required')
    tables = data.get("stops")
    if not isinstance(tables, list) or not tables:
        raise ParkConfigError(f"{path}: at least one [[stops]] table is required")
    positions: dict[str, tuple[float, float]] = {}
    stops = []
    for index, table in enumerate(tables, start=1):
        stop, located = _stop_from_table(table, index, locate)
        stops.append(stop)
        positions.update(located)
    return Park(park["name"], tuple(stops), positions)


def _stop_from_table(
    table: Any, index: int, locate: Callable[[str], tuple[float, float] | None]
) -> tuple[Stop, dict[str, tuple[float, float]]]:
    if not isinstance(table, dict):
        raise ParkConfigError(f"stop #{index} in the file: not a table")
    number = table.get("number")
    where = f"stop {number!r} ({table.get('area')!r})"
    for key, kind in (("number", int), ("area", str), ("capacity", int), ("devices", list)):
        value = table.get(key)
        if value is None:
            raise ParkConfigError(f"{where}: {key} is missing")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ParkConfigError(f"{where}: {key} must be {kind.__name__}")
    unknown = set(table) - {"number", "area", "capacity", "devices", "name", "description"}
    if unknown:
        raise ParkConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    name = table.get("name", {})
    description = table.get("description", {})
    devices = table["devices"]
    if not all(isinstance(d, str) for d in devices):
        raise ParkConfigError(f"{where}: devices must be a list of names")
    located: dict[str, tuple[float, float]] = {}
    for device in devices:
        position = locate(device)
        if position is not None:
            located[device] = (float(position[0]), float(position[1]))
    if devices and not located:
        raise ParkConfigError(
            f"{where}: none of its devices ({', '.join(devices)}) has a known position"
        )
    latitude, longitude = _centroid(located.values()) if located else (0.0, 0.0)
    stop = Stop(
        number,
        table["area"],
        name,
        description,
        tuple(devices),
        latitude,
        longitude,
        table["capacity"],
    )
    return stop, located


# -- measurements and verdicts ----------------------------------------------------------------


def measurement_of(service: str, resource: str) -> str | None:
    """The name in :data:`MEASUREMENTS` of the reading ``service/resource``, or ``None``."""
    for name, (svc, res, _unit) in MEASUREMENTS.items():
        if (svc, res) == (service, resource):
            return name
    return None


def verdict(measurement: str, value: float, *, capacity: int | None = None) -> Verdict:
    """The verdict on ``value`` of ``measurement`` (a key of MEASUREMENTS): good, moderate, poor.

    CO2 (ppm): good below 800, moderate below 1000, else poor. Noise (dB(A)): good below 55,
    moderate below 65, else poor. Crowd (people): judged as a share of ``capacity``, good
    below 50 %, moderate below 85 %, else poor.

    ``ValueError`` for an unknown measurement, a NaN value, or a crowd without a positive
    ``capacity``.
    """
    bands = _BANDS.get(measurement)
    if bands is None:
        raise ValueError(f"unknown measurement {measurement!r}: use {', '.join(_BANDS)}")
    if math.isnan(value):
        raise ValueError(f"{measurement} value is NaN")
    if measurement == "crowd":
        if capacity is None or not capacity > 0:
            raise ValueError("a crowd verdict needs the area's capacity (> 0)")
        value = value / capacity
    good, moderate = bands
    if value < good:
        return "good"
    if value < moderate:
        return "moderate"
    return "poor"


# -- geometry ---------------------------------------------------------------------------------


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _centroid(points: Iterable[tuple[float, float]]) -> tuple[float, float]:
    points = list(points)
    return (
        round(sum(p[0] for p in points) / len(points), 6),
        round(sum(p[1] for p in points) / len(points), 6),
    )


# Local east/north metres around an origin (equirectangular): exact enough over a park.
def _to_metres(origin: tuple[float, float], p: tuple[float, float]) -> tuple[float, float]:
    east = math.radians(p[1] - origin[1]) * _EARTH_RADIUS_M * math.cos(math.radians(origin[0]))
    north = math.radians(p[0] - origin[0]) * _EARTH_RADIUS_M
    return east, north


def _from_metres(origin: tuple[float, float], p: tuple[float, float]) -> tuple[float, float]:
    lat = origin[0] + math.degrees(p[1] / _EARTH_RADIUS_M)
    lon = origin[1] + math.degrees(p[0] / (_EARTH_RADIUS_M * math.cos(math.radians(origin[0]))))
    return round(lat, 6), round(lon, 6)


def _octagon(centre: tuple[float, float], radius: float) -> list[tuple[float, float]]:
    return [
        (
            centre[0] + radius * math.cos(math.radians(22.5 + 45 * k)),
            centre[1] + radius * math.sin(math.radians(22.5 + 45 * k)),
        )
        for k in range(8)
    ]


def _convex_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Andrew's monotone chain: the hull's corners counter-clockwise.

    Corners less than half a metre off the line of their neighbours are dropped too, so that
    rounding to 6 decimals of a degree (~0.1 m) cannot make the polygon concave."""
    pts = sorted(set(points))

    def cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, float]] = []
    upper: list[tuple[float, float]] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0.5 * math.dist(lower[-2], p):
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0.5 * math.dist(upper[-2], p):
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]
