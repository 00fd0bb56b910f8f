"""Pilot 1 (Park Guide): the seven simulated devices of Las Llamas park, Santander.

Four environment stations (temperature, humidity, CO2, VOC, noise) and three portable crowd
counters over four areas of the park: the main entrance by the Palacio de Deportes, the
central lagoon, the amphitheatre and the northern edge along Avenida de los Castros, so that
spots near the road and near the lake can be compared, as the pilot intends.

Every value is a pure function of ``(seed, weather, device, t)`` built from one shared
picture of the park at time ``t``: Santander's seasonal climate with multi-day weather drift
and showers, road traffic and visitors following the clock in Europe/Madrid (weekdays differ
from weekends, concerts at the amphitheatre now and then), and each device's own sensor noise
on top. So the devices agree with each other (rain lowers every crowd and raises every
humidity reading), and a sample can be taken again at any time and comes out the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from msec.core.kinds import ResourceSpec, get_kind
from msec.sdk.sim.base import SimDevice, SmoothNoise

__all__ = [
    "COLD_SNAP",
    "GATEWAY_HUB",
    "HEATWAVE",
    "PARK_DEVICES",
    "RAINY",
    "TIMEZONE",
    "TYPICAL",
    "WEATHERS",
    "ParkSimulator",
    "Sample",
    "Weather",
]

Sample = tuple[str, str, float | int]

TIMEZONE = ZoneInfo("Europe/Madrid")

_MINUTE = 60.0
_HOUR = 3600.0
_DAY = 86400.0
_YEAR_DAYS = 365.2422
# Where the park is: its sky and its mean solar time.
_LATITUDE = 43.474
_LONGITUDE = -3.801

#: The gateway hub the devices forward their readings through, at the Palacio de Deportes.
GATEWAY_HUB = (43.4757, -3.7959)


@dataclass(frozen=True, slots=True)
class Weather:
    """A weather scenario laid over Santander's seasonal climate.

    ``temperature_offset`` (°C) shifts every station; ``swing`` scales the day-night range;
    ``dew_spread`` (°C) widens (drier air) or narrows (moister air) the gap between air
    temperature and dew point; ``rain`` shifts the chance of showers (-1: never, 0: Santander's
    usual, +1: nearly always); ``visitors`` scales how many people come to the park.
    """

    name: str
    temperature_offset: float = 0.0
    swing: float = 1.0
    dew_spread: float = 0.0
    rain: float = 0.0
    visitors: float = 1.0


TYPICAL = Weather("typical")
#: A "surada": the hot, dry south wind that brings Santander its record highs.
HEATWAVE = Weather(
    "heatwave", temperature_offset=9.0, swing=1.3, dew_spread=12.0, rain=-1.0, visitors=0.9
)
RAINY = Weather(
    "rainy", temperature_offset=-1.5, swing=0.5, dew_spread=-3.0, rain=1.0, visitors=0.5
)
COLD_SNAP = Weather(
    "cold_snap", temperature_offset=-7.0, swing=0.8, dew_spread=1.0, rain=-0.3, visitors=0.6
)
WEATHERS: dict[str, Weather] = {w.name: w for w in (TYPICAL, HEATWAVE, RAINY, COLD_SNAP)}


@dataclass(frozen=True, slots=True)
class _Area:
    """What a spot of the park is like: how busy, how close to traffic, how it sounds."""

    peak_people: float  # people in the spot at a fine weekend's busiest hour
    traffic: float  # 0..1 exposure to road traffic exhaust (CO2, VOC)
    road_noise: float  # dB(A) of rush-hour traffic heard here
    chatter: float  # dB(A) of one person talking at the usual distance from the device
    birds: float  # dB(A) of the dawn chorus in spring
    event_share: float  # fraction of an amphitheatre event's audience that is here
    event_noise: float  # dB(A) of the event's music heard here
    microclimate: float  # °C in full sun: paving warms, water cools


_AREAS: dict[str, _Area] = {
    # Main entrance by the Palacio de Deportes ("the whale"): playground, café, busy street.
    "palacio": _Area(150, 0.7, 56, 40, 40, 0.25, 62, 0.6),
    # The central lagoon with its footbridges and water birds.
    "lake": _Area(70, 0.2, 46, 36, 47, 0.05, 60, -0.5),
    # The open-air amphitheatre: quiet most days, concerts on some (summer) weekend evenings.
    "amphitheatre": _Area(45, 0.35, 50, 37, 42, 1.0, 86, 0.0),
    # Northern edge along Avenida de los Castros, the road side of the park.
    "los_castros": _Area(35, 1.0, 64, 34, 38, 0.1, 58, 0.3),
}

PARK_DEVICES: tuple[SimDevice, ...] = (
    SimDevice(
        "llamas-01", "environment_station", "palacio", 43.4751, -3.7968,
        "Environment station at the main entrance, beside the Palacio de Deportes playground",
    ),
    SimDevice(
        "llamas-02", "crowd_counter", "palacio", 43.4749, -3.7972,
        "Crowd counter covering the main entrance playground and café terrace",
    ),
    SimDevice(
        "llamas-03", "environment_station", "lake", 43.4740, -3.8004,
        "Environment station on the lagoon footbridges",
    ),
    SimDevice(
        "llamas-04", "crowd_counter", "lake", 43.4738, -3.8009,
        "Crowd counter at the lagoon footbridges",
    ),
    SimDevice(
        "llamas-05", "environment_station", "amphitheatre", 43.4733, -3.8031,
        "Environment station at the open-air amphitheatre",
    ),
    SimDevice(
        "llamas-06", "crowd_counter", "amphitheatre", 43.4734, -3.8036,
        "Crowd counter covering the amphitheatre seating",
    ),
    SimDevice(
        "llamas-07", "environment_station", "los_castros", 43.4747, -3.8052,
        "Environment station on the northern edge, along Avenida de los Castros",
    ),
)

# Share of rush-hour traffic on the roads around the park, by local hour (0..23).
_TRAFFIC_WEEKDAY = (
    0.12, 0.06, 0.03, 0.02, 0.03, 0.08, 0.30, 0.70, 1.00, 0.80, 0.60, 0.60,
    0.65, 0.75, 0.80, 0.65, 0.60, 0.70, 0.90, 0.95, 0.70, 0.45, 0.30, 0.20,
)
_TRAFFIC_WEEKEND = (
    0.20, 0.15, 0.08, 0.04, 0.03, 0.04, 0.08, 0.15, 0.30, 0.40, 0.50, 0.55,
    0.60, 0.65, 0.60, 0.50, 0.50, 0.55, 0.60, 0.60, 0.50, 0.40, 0.30, 0.25,
)
# Share of an area's peak visitors, by local hour: joggers and dog walkers early, parents and
# toddlers mid-morning, a lull over the Spanish lunch, the busiest hours after school.
_VISITORS_WEEKDAY = (
    0.03, 0.01, 0.005, 0.0, 0.0, 0.01, 0.04, 0.12, 0.18, 0.20, 0.25, 0.30,
    0.32, 0.25, 0.18, 0.22, 0.40, 0.70, 0.90, 0.85, 0.60, 0.35, 0.15, 0.07,
)
_VISITORS_WEEKEND = (
    0.06, 0.03, 0.01, 0.005, 0.0, 0.005, 0.02, 0.05, 0.12, 0.25, 0.50, 0.75,
    0.85, 0.70, 0.45, 0.50, 0.70, 0.90, 1.00, 0.90, 0.65, 0.40, 0.20, 0.10,
)


@dataclass(frozen=True, slots=True)
class _Scene:
    """The park at one instant: clock, sky, weather, traffic and events, shared by all devices."""

    t: float
    hour: float  # local civil hour 0..24 (people and traffic follow the clock)
    weekday: int  # local, Monday = 0
    solar_hour: float  # local mean solar time 0..24 (temperature follows the sun)
    summer: float  # 0 in early February .. 1 in early August
    spring: float  # 0 .. 1 at the height of the birds' breeding season (early May)
    sun: float  # sine of the sun's elevation
    rain: float  # 0 dry .. 1 heavy rain
    wind: float  # 0 calm .. 1 a gale
    air: float  # park-wide air temperature, °C
    dew_point: float  # °C
    traffic: float  # share of rush-hour traffic on the surrounding roads
    event_crowd: float  # 0..1: how much of an event's audience is in the park
    music: float  # 0..1: how loud the event's music is playing
    audience: float  # people the event draws


class ParkSimulator:
    """Readings of Pilot 1's park devices, deterministic for a seed.

    ``sample(device, t)`` may be called for any device and any time, in any order, as often as
    wanted: the result depends only on ``seed``, ``weather``, the device and ``t``. Safe to
    share between threads.
    """

    def __init__(self, seed: int, weather: Weather = TYPICAL) -> None:
        self.seed = seed
        self.weather = weather
        self._noise = SmoothNoise(seed)
        self._last: _Scene | None = None  # the devices of one tick share one scene

    def sample(self, device: SimDevice, t: float) -> list[Sample]:
        """Every resource ``device`` reports at Unix time ``t``, health included.

        Returns ``(service, resource, value)`` triples, each value inside its kind's range.
        Raises :class:`msec.core.kinds.UnknownKind` if ``device.kind`` is not registered and
        :class:`ValueError` if it is not a park kind or ``device.area`` is not a park area.
        """
        kind = get_kind(device.kind)
        area = _AREAS.get(device.area)
        if area is None:
            known = ", ".join(sorted(_AREAS))
            raise ValueError(f"{device.name}: unknown park area {device.area!r}; known: {known}")
        scene = self._scene(t)
        people = self._people(device.area, area, scene)
        values: list[Sample]
        if device.kind == "environment_station":
            values = self._environment(device, area, scene, people)
        elif device.kind == "crowd_counter":
            values = [("crowd", "count", self._count(device, scene, people))]
        else:
            raise ValueError(f"{device.name}: ParkSimulator cannot simulate kind {device.kind!r}")
        values += self._health(device, scene, people)
        out: list[Sample] = []
        for service, resource, value in values:
            spec = kind.spec(service, resource)
            if spec is None:
                raise ValueError(f"kind {kind.name!r} has no resource {service}/{resource}")
            out.append((service, resource, _clip(spec, value)))
        return out

    # --- the shared picture of the park --------------------------------------------------

    def _scene(self, t: float) -> _Scene:
        last = self._last
        if last is not None and last.t == t:
            return last
        n = self._noise
        w = self.weather
        local = datetime.fromtimestamp(t, TIMEZONE)
        hour = local.hour + local.minute / 60 + (local.second + local.microsecond / 1e6) / 3600
        solar_hour = (t / _HOUR + _LONGITUDE / 15) % 24
        days = t / _DAY  # the Unix epoch is 1 January: days from it give the time of year
        summer = 0.5 + 0.5 * math.cos(2 * math.pi * (days - 221) / _YEAR_DAYS)
        spring = 0.5 + 0.5 * math.cos(2 * math.pi * (days - 125) / _YEAR_DAYS)
        declination = math.radians(23.44) * math.sin(2 * math.pi * (days - 80) / _YEAR_DAYS)
        hour_angle = math.radians((solar_hour - 12) * 15)
        lat = math.radians(_LATITUDE)
        sun = math.sin(lat) * math.sin(declination) + math.cos(lat) * math.cos(
            declination
        ) * math.cos(hour_angle)

        # Showers come and go over hours; the scenario makes them likelier or rarer.
        rain = (n.smooth("wx/rain", t, 8 * _HOUR, octaves=2) + 1.5 * w.rain - 0.35) / 0.4
        rain = _between(rain, 0, 1)
        wind = 0.5 + 0.5 * n.smooth("wx/wind", t, 12 * _HOUR, octaves=2)

        # Santander: monthly means from about 9.6 °C (February) to 20.3 °C (August), a mild
        # oceanic day-night swing that clouds and rain flatten, and weather fronts over days.
        mean = 9.6 + 10.7 * summer + w.temperature_offset
        mean += 3.5 * n.smooth("wx/temperature", t, 4 * _DAY, octaves=2)
        swing = (2.6 + 1.0 * summer) * w.swing * (1 - 0.6 * rain)
        air = mean + swing * math.cos(2 * math.pi * (solar_hour - 15) / 24)
        # The dew point follows the day's mean, not the hour: humidity falls as the air warms.
        spread = 4.5 + w.dew_spread + 1.5 * n.smooth("wx/dew", t, 2 * _DAY)
        dew_point = mean - max(0.3, spread - 3.5 * rain)

        weekend = local.weekday() >= 5
        tomorrow_weekend = local.weekday() in (4, 5)
        traffic = _by_hour(_TRAFFIC_WEEKEND if weekend else _TRAFFIC_WEEKDAY,
                           _TRAFFIC_WEEKEND if tomorrow_weekend else _TRAFFIC_WEEKDAY, hour)
        event_crowd, music, audience = self._event(local.toordinal(), local.weekday(), hour, summer)
        scene = _Scene(
            t, hour, local.weekday(), solar_hour, summer, spring, sun, rain, wind,
            air, dew_point, traffic, event_crowd, music, audience,
        )
        self._last = scene
        return scene

    def _event(
        self, day: int, weekday: int, hour: float, summer: float
    ) -> tuple[float, float, float]:
        """(crowd level 0..1, music level 0..1, audience) of an amphitheatre event, if any.

        Concerts and fairs happen mostly on Friday and Saturday evenings, more in summer.
        """
        n = self._noise
        best = (0.0, 0.0, 0.0)
        for back in (0, 1):  # an evening concert may run past midnight
            d = day - back
            chance = {4: 0.25, 5: 0.25, 6: 0.1}.get((weekday - back) % 7, 0.04) * (0.5 + summer)
            if n.uniform("event", d) >= chance:
                continue
            start = (12.0, 18.0, 19.5, 20.5, 21.0)[int(5 * n.uniform("event/start", d))]
            end = start + 2 + 1.5 * n.uniform("event/length", d)
            audience = 300 + 1200 * n.uniform("event/size", d) ** 2
            h = hour + 24 * back
            # People arrive over the hour before and leave within 45 minutes of the end.
            crowd = min(_between(h - (start - 1), 0, 1), _between((end + 0.75 - h) / 0.75, 0, 1))
            music = min(_between((h - start) * 6, 0, 1), _between((end - h) * 6, 0, 1))
            if crowd > best[0]:
                best = (crowd, music, audience)
        return best

    def _people(self, name: str, area: _Area, s: _Scene) -> float:
        """Expected number of people in area ``name`` (the same for all its devices)."""
        weekend = s.weekday >= 5
        tomorrow_weekend = s.weekday in (4, 5)
        share = _by_hour(_VISITORS_WEEKEND if weekend else _VISITORS_WEEKDAY,
                         _VISITORS_WEEKEND if tomorrow_weekend else _VISITORS_WEEKDAY, s.hour)
        comfort = 0.45 + 0.65 * math.exp(-(((s.air - 21) / 8) ** 2))
        long_evening = 1 + 0.8 * s.summer * math.exp(-(((s.hour - 21.5) / 1.5) ** 2))
        people = area.peak_people * share * comfort * long_evening
        people *= self.weather.visitors * (1 - 0.8 * s.rain)
        people *= 1 + 0.2 * self._noise.smooth(f"area/{name}/people", s.t, 20 * _MINUTE, 2)
        return max(0.0, people + s.event_crowd * s.audience * area.event_share)

    # --- what each kind of device measures -----------------------------------------------

    def _environment(
        self, device: SimDevice, area: _Area, s: _Scene, people: float
    ) -> list[Sample]:
        n = self._noise
        key = f"dev/{device.name}"
        daylight = min(1.0, 2 * max(0.0, s.sun))

        temperature = s.air + area.microclimate * daylight
        temperature += 0.15 * n.smooth(f"{key}/temperature", s.t, 20 * _MINUTE)
        temperature += 0.3 * _signed(n.uniform(f"{key}/temperature/calibration", 0))
        humidity = _relative_humidity(temperature, s.dew_point)
        humidity += 1.5 * n.smooth(f"{key}/humidity", s.t, 30 * _MINUTE)
        humidity += 2.0 * _signed(n.uniform(f"{key}/humidity/calibration", 0))

        # Open air is ~420 ppm; it builds up under the calm, shallow night-time air layer
        # (and plants breathe out), and exhaust adds to it near the roads.
        dark = _between(0.5 - 3 * s.sun, 0, 1)
        co2 = 417 + 6 * (1 - s.summer)
        co2 += 30 * dark * (1 - 0.7 * s.wind) * (1 - 0.5 * s.rain)
        co2 += 45 * area.traffic * s.traffic * (1 - 0.5 * s.wind)
        co2 += 0.04 * people
        co2 += 4 * n.smooth(f"{key}/co2", s.t, 15 * _MINUTE, octaves=2)
        co2 += 8 * _signed(n.uniform(f"{key}/co2/calibration", 0))

        # Exhaust, and trees' isoprene on warm sunny days; rain washes both out.
        voc = 70 + 20 * n.smooth("wx/voc", s.t, _DAY)
        voc += 150 * area.traffic * s.traffic
        voc += 6 * max(0.0, temperature - 15) * daylight
        voc *= (1 - 0.4 * s.rain) * (1 + 0.05 * n.smooth(f"{key}/voc", s.t, 10 * _MINUTE))
        slot = math.floor(s.t / (10 * _MINUTE))
        if n.uniform(f"{key}/voc/spike", slot) < 0.01:  # a mower, a barbecue, a cigarette
            u = s.t / (10 * _MINUTE) - slot
            voc += (200 + 1300 * n.uniform(f"{key}/voc/spike/size", slot)) * math.sin(math.pi * u)

        noise = self._noise_level(key, area, s, people)
        return [
            ("environment", "temperature", round(temperature, 2)),
            ("environment", "humidity", round(humidity, 1)),
            ("environment", "co2", float(round(co2))),
            ("environment", "voc", float(round(voc))),
            ("environment", "noise", round(noise, 1)),
        ]

    def _noise_level(self, key: str, area: _Area, s: _Scene, people: float) -> float:
        """LAeq over one minute, in dB(A): the energetic sum of what is heard at the device."""
        n = self._noise
        sources = [33 + 4 * s.wind, area.road_noise + 10 * math.log10(max(s.traffic, 0.005))]
        if people >= 1:
            sources.append(area.chatter + 10 * math.log10(people))
        if s.solar_hour < 12:  # the dawn chorus, loudest around sunrise in spring
            chorus = math.exp(-(((s.sun - 0.05) / 0.12) ** 2)) * (0.3 + 0.7 * s.spring)
            if chorus > 1e-3:
                sources.append(area.birds + 10 * math.log10(chorus))
        if s.rain > 0.01:
            sources.append(40 + 12 * s.rain)
        if s.music > 0:
            sources.append(area.event_noise + 10 * math.log10(s.music))
        minute = math.floor(s.t / _MINUTE)
        busy = _between(people / 20, 0, 1) + s.traffic
        if n.uniform(f"{key}/noise/spike", minute) < 0.004 + 0.01 * busy:
            # A siren, a motorbike, a barking dog: loud for the minute.
            sources.append(62 + 20 * n.uniform(f"{key}/noise/spike/size", minute))
        level = 10 * math.log10(sum(10 ** (x / 10) for x in sources))
        return level + 0.8 * n.smooth(f"{key}/noise", s.t, 3 * _MINUTE, octaves=2)

    def _count(self, device: SimDevice, s: _Scene, people: float) -> int:
        n = self._noise
        key = f"dev/{device.name}"
        # Counters that detect phones miss some people and count others twice.
        bias = 1 + 0.1 * _signed(n.uniform(f"{key}/count/calibration", 0))
        seen = people * bias * (1 + 0.05 * n.smooth(f"{key}/count", s.t, 5 * _MINUTE))
        return max(0, round(seen))

    def _health(self, device: SimDevice, s: _Scene, people: float) -> list[Sample]:
        n = self._noise
        key = f"dev/{device.name}"
        if device.kind == "environment_station":
            # Solar-buffered: charged by day, drained by night, lower through dark, wet spells.
            spell = n.smooth("wx/spell", s.t, 3 * _DAY)
            wet = _between(0.5 + 0.5 * spell + 0.3 * self.weather.rain, 0, 1)
            level = 80 + 14 * s.summer - 20 * wet
            swing = (3 + 4 * s.summer) * (1 - 0.6 * s.rain)
            level += swing * math.cos(2 * math.pi * (s.solar_hour - 18) / 24)
        else:
            # Portable, on batteries: drains steadily until someone swaps it every 6-10 days.
            period = (6 + 4 * n.uniform(f"{key}/battery/period", 0)) * _DAY
            phase = n.uniform(f"{key}/battery/phase", 0) * period
            used = ((s.t + phase) % period) / period
            empty = 12 + 18 * n.uniform(f"{key}/battery/reserve", 0)
            level = 100 - (100 - empty) * (used + 0.3 * used**4) / 1.3
        level += 0.3 * n.smooth(f"{key}/battery", s.t, _HOUR)

        hub_lat, hub_lon = GATEWAY_HUB
        north = (device.latitude - hub_lat) * 111_320
        east = (device.longitude - hub_lon) * 111_320 * math.cos(math.radians(hub_lat))
        rssi = -30 - 30 * math.log10(max(20.0, math.hypot(north, east)))
        rssi += 4 * n.smooth(f"{key}/rssi/fading", s.t, 2 * _HOUR)
        rssi += 2.5 * n.smooth(f"{key}/rssi", s.t, 5 * _MINUTE, octaves=2)
        rssi -= 1.5 * s.rain + 2 * min(1.0, people / 200)  # wet leaves and bodies absorb
        return [("health", "battery", round(level, 1)), ("health", "rssi", float(round(rssi)))]


def _by_hour(today: tuple[float, ...], tomorrow: tuple[float, ...], hour: float) -> float:
    """``today``'s hourly table at ``hour``, interpolated; the last hour leans on ``tomorrow``."""
    i = min(int(hour), 23)
    after = today[i + 1] if i < 23 else tomorrow[0]
    return today[i] + (after - today[i]) * (hour - i)


def _relative_humidity(temperature: float, dew_point: float) -> float:
    """Relative humidity in % from the Magnus formula (over water)."""
    a, b = 17.62, 243.12
    gamma = a * dew_point / (b + dew_point) - a * temperature / (b + temperature)
    return 100 * math.exp(gamma)


def _clip(spec: ResourceSpec, value: float | int) -> float | int:
    """``value`` moved inside ``spec``'s range, keeping ints ints."""
    if spec.minimum is not None and value < spec.minimum:
        value = spec.minimum
    if spec.maximum is not None and value > spec.maximum:
        value = spec.maximum
    return int(value) if spec.type == "int" else float(value)


def _between(x: float, low: float, high: float) -> float:
    return min(high, max(low, x))


def _signed(u: float) -> float:
    """A draw in ``[0, 1)`` mapped onto ``[-1, 1)``."""
    return 2 * u - 1
