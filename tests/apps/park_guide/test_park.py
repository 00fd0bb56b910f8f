"""The Park Guide's layout (default park, TOML parks, area polygons) and its verdicts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from msec.apps.park_guide import (
    MEASUREMENTS,
    Park,
    ParkConfigError,
    Stop,
    default_park,
    load_park,
    measurement_of,
    verdict,
)
from msec.sdk.sim.park import _AREAS, PARK_DEVICES

POSITIONS = {d.name: (d.latitude, d.longitude) for d in PARK_DEVICES}


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine distance in metres."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


def inside(point: tuple[float, float], polygon: list[tuple[float, float]]) -> bool:
    """Whether ``point`` is strictly inside the counter-clockwise convex ``polygon``
    (lat, lon pairs: x = lon, y = lat)."""
    y, x = point
    for (y1, x1), (y2, x2) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) <= 0:
            return False
    return True


def stop(number: int = 1, area: str = "a", devices: tuple[str, ...] = ("d1",), **kw) -> Stop:
    fields = {
        "name": {"en": f"Stop {number}"},
        "description": {},
        "latitude": 43.47,
        "longitude": -3.80,
        "capacity": 10,
        **kw,
    }
    return Stop(number, area, devices=devices, **fields)


# -- the default park --------------------------------------------------------------------------


def test_default_park_has_one_stop_per_area_in_order() -> None:
    park = default_park()
    assert [(s.number, s.area) for s in park.stops] == [
        (1, "palacio"),
        (2, "lake"),
        (3, "amphitheatre"),
        (4, "los_castros"),
    ]
    assert "Las Llamas" in park.name


def test_default_park_places_every_simulated_device_in_its_area() -> None:
    park = default_park()
    assert sorted(park.devices()) == sorted(d.name for d in PARK_DEVICES)
    for device in PARK_DEVICES:
        assert park.stop_of_device(device.name).area == device.area
    assert park.stop(2).devices == ("llamas-03", "llamas-04")
    assert park.stop(4).devices == ("llamas-07",)


def test_default_park_stops_sit_at_their_devices_centroid() -> None:
    park = default_park()
    palacio = park.stop(1)
    assert palacio.latitude == pytest.approx((43.4751 + 43.4749) / 2)
    assert palacio.longitude == pytest.approx((-3.7968 + -3.7972) / 2)
    castros = park.stop(4)
    assert (castros.latitude, castros.longitude) == POSITIONS["llamas-07"]


def test_default_capacities_are_the_simulators_peak_crowds() -> None:
    park = default_park()
    assert {s.area: s.capacity for s in park.stops} == {
        area: int(spec.peak_people) for area, spec in _AREAS.items()
    }
    assert park.stop(1).capacity == 150


def test_default_park_speaks_three_languages() -> None:
    for s in default_park().stops:
        for field in ("name", "description"):
            en, es, ja = (s.text(field, lang) for lang in ("en", "es", "ja"))
            assert en and es and ja
            assert es != en
            # Japanese text has kana or kanji in it.
            assert any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in ja)


def test_text_falls_back_to_english() -> None:
    s = stop(name={"en": "Lagoon", "es": "Laguna"}, description={"en": "Birds."})
    assert s.text("name", "es") == "Laguna"
    assert s.text("name", "ja") == "Lagoon"
    assert s.text("name", "fr") == "Lagoon"
    assert s.text("description", "es") == "Birds."
    assert stop(description={}).text("description", "ja") == ""
    with pytest.raises(ValueError, match="no text field"):
        s.text("capacity", "en")  # type: ignore[arg-type]


def test_lookups_miss_with_none() -> None:
    park = default_park()
    assert park.stop(0) is None
    assert park.stop(5) is None
    assert park.stop_of_device("llamas-99") is None


# -- polygons, bounds, JSON --------------------------------------------------------------------


def test_area_with_few_devices_is_an_octagon_of_60_m_around_the_centroid() -> None:
    park = default_park()
    lake = park.stop(2)
    polygon = park.area_polygon(lake)
    assert len(polygon) == 8
    centre = (lake.latitude, lake.longitude)
    for corner in polygon:
        assert metres(centre, corner) == pytest.approx(60, abs=0.5)
    assert inside(centre, polygon)
    for device in lake.devices:
        assert inside(POSITIONS[device], polygon)


def test_area_with_three_devices_is_their_hull_grown_by_30_m() -> None:
    positions = {"n": (43.4760, -3.8000), "sw": (43.4740, -3.8020), "se": (43.4740, -3.7980)}
    s = stop(devices=("n", "sw", "se"), latitude=43.4747, longitude=-3.8)
    park = Park("P", (s,), positions)
    polygon = park.area_polygon(s)
    assert len(polygon) > 8
    for position in positions.values():
        assert inside(position, polygon)
        # No corner closer than the 30 m buffer, and some corner about that far.
        nearest = min(metres(position, corner) for corner in polygon)
        assert nearest == pytest.approx(30, abs=0.5)
    # Convex and counter-clockwise: every turn is to the left.
    ring = polygon + polygon[:2]
    for (y0, x0), (y1, x1), (y2, x2) in zip(ring, ring[1:], ring[2:], strict=False):
        assert (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0) > 0
    # The hull reaches 30 m beyond the northern device (its octagon's flat top: 30 sin 67.5°).
    north = 30 * math.sin(math.radians(67.5)) / 111_195
    assert max(p[0] for p in polygon) == pytest.approx(43.4760 + north, abs=2e-6)


def test_area_ignores_devices_without_a_position() -> None:
    s = stop(devices=("a", "b", "c"), latitude=43.47, longitude=-3.8)
    park = Park("P", (s,), {"a": (43.47, -3.8)})
    assert len(park.area_polygon(s)) == 8


def test_bounds_hold_every_area_with_a_margin() -> None:
    park = default_park()
    (min_lat, min_lon), (max_lat, max_lon) = park.bounds()
    corners = [p for s in park.stops for p in park.area_polygon(s)]
    assert min_lat < min(p[0] for p in corners) < max(p[0] for p in corners) < max_lat
    assert min_lon < min(p[1] for p in corners) < max(p[1] for p in corners) < max_lon
    margin = metres((min_lat, min_lon), (min(p[0] for p in corners), min_lon))
    assert margin == pytest.approx(50, abs=1)


def test_to_dict_is_json_with_polygons() -> None:
    park = default_park()
    data = json.loads(json.dumps(park.to_dict()))
    assert data["name"] == park.name
    assert [s["number"] for s in data["stops"]] == [1, 2, 3, 4]
    first = data["stops"][0]
    assert first["devices"] == ["llamas-01", "llamas-02"]
    assert first["capacity"] == 150
    assert first["name"]["es"] == park.stop(1).name["es"]
    assert [tuple(p) for p in first["polygon"]] == park.area_polygon(park.stop(1))
    assert [tuple(b) for b in data["bounds"]] == list(park.bounds())


# -- checks on stops and parks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"number": 0}, "number must be an integer >= 1"),
        ({"number": True}, "number must be an integer >= 1"),
        ({"area": "Lake"}, "area must be a slug"),
        ({"area": "the-lake"}, "area must be a slug"),
        ({"area": ""}, "area must be a slug"),
        ({"devices": ()}, "at least one device"),
        ({"devices": ("d1", "d1")}, "listed twice"),
        ({"devices": ("",)}, "non-empty"),
        ({"capacity": 0}, "capacity must be an integer > 0"),
        ({"capacity": 2.5}, "capacity must be an integer > 0"),
        ({"name": {"es": "Laguna"}}, "English name"),
        ({"name": {"en": "Lagoon", "fr": "Lagune"}}, "unknown language 'fr'"),
        ({"name": {"en": "  "}}, "name.en must be non-empty"),
        ({"latitude": math.nan}, "latitude/longitude"),
        ({"longitude": 200.0}, "latitude/longitude"),
    ],
)
def test_a_bad_stop_is_refused_naming_it(kwargs: dict, message: str) -> None:
    args = {"number": 3, "area": "lake", **kwargs}
    with pytest.raises(ParkConfigError, match=message) as caught:
        stop(**args)
    assert f"stop {args['number']!r}" in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("stops", "message"),
    [
        ((), "has no stop"),
        ((stop(1, "a", ("d1",)), stop(1, "b", ("d2",))), "stop 1 .* number 1 is used"),
        ((stop(1, "a", ("d1",)), stop(2, "a", ("d2",))), "stop 2 .* area 'a' is used"),
        ((stop(1, "a", ("d1",)), stop(2, "b", ("d1",))), "stop 2 .* already belongs to stop 1"),
    ],
)
def test_a_bad_park_is_refused(stops: tuple[Stop, ...], message: str) -> None:
    with pytest.raises(ParkConfigError, match=message):
        Park("P", stops)


# -- parks from TOML ---------------------------------------------------------------------------

GOOD_TOML = """
[park]
name = "Test park"

[[stops]]
number = 1
area = "gate"
capacity = 40
devices = ["llamas-01", "llamas-02"]
name.en = "Gate"
name.ja = "門"
description.en = "Where you come in."

[[stops]]
number = 7
area = "pond"
capacity = 12
devices = ["llamas-03", "unplaced"]
name = { en = "Pond", es = "Estanque" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "park.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_park_reads_stops_and_places_them(tmp_path: Path) -> None:
    park = load_park(write(tmp_path, GOOD_TOML), POSITIONS.get)
    assert park.name == "Test park"
    assert [(s.number, s.area, s.capacity) for s in park.stops] == [
        (1, "gate", 40),
        (7, "pond", 12),
    ]
    gate, pond = park.stops
    assert gate.text("name", "ja") == "門"
    assert gate.text("description", "es") == "Where you come in."
    assert pond.text("name", "es") == "Estanque"
    assert gate.latitude == pytest.approx(43.475)
    # A device without a position still belongs to its stop; the stop sits at the others.
    assert pond.devices == ("llamas-03", "unplaced")
    assert (pond.latitude, pond.longitude) == POSITIONS["llamas-03"]
    assert park.stop_of_device("unplaced") is pond
    assert "unplaced" not in park.positions


def stops_toml(*tables: str) -> str:
    return '[park]\nname = "P"\n' + "".join(f"\n[[stops]]\n{t}\n" for t in tables)


GATE = 'number = 1\narea = "gate"\ncapacity = 5\ndevices = ["llamas-01"]\nname.en = "Gate"'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[park\n", "cannot read the park"),
        ('[[stops]]\nnumber = 1\narea = "a"', r"a \[park\] table"),
        ('[park]\nname = "P"', "at least one"),
        (
            stops_toml(GATE, GATE.replace('"gate"', '"pond"').replace("llamas-01", "llamas-03")),
            "stop 1 .* number 1 is used",
        ),
        (stops_toml(GATE.replace("number = 1", "number = 0")), "stop 0 .* number must be"),
        (stops_toml(GATE.replace("number = 1", 'number = "1"')), "stop '1' .* number must be int"),
        (stops_toml(GATE.replace("number = 1\n", "")), "stop None .* number is missing"),
        (stops_toml(GATE.replace('"gate"', '"Gate!"')), "stop 1 .* area must be a slug"),
        (
            stops_toml(
                GATE, GATE.replace("number = 1", "number = 2").replace("llamas-01", "llamas-03")
            ),
            "stop 2 .* area 'gate' is used",
        ),
        (stops_toml(GATE.replace('["llamas-01"]', "[]")), "stop 1 .* at least one device"),
        (
            stops_toml(GATE, GATE.replace("number = 1", "number = 2").replace("gate", "pond")),
            "stop 2 .* 'llamas-01' already belongs to stop 1",
        ),
        (stops_toml(GATE.replace("capacity = 5", "capacity = 0")), "stop 1 .* capacity must be"),
        (stops_toml(GATE.replace("capacity = 5", "capacity = true")), "stop 1 .* capacity must"),
        (stops_toml(GATE.replace("capacity = 5\n", "")), "stop 1 .* capacity is missing"),
        (stops_toml(GATE.replace("name.en", "name.es")), "stop 1 .* English name"),
        (stops_toml(GATE.replace("name.en", "name.de")), "stop 1 .* unknown language 'de'"),
        (stops_toml(GATE + '\ncolour = "red"'), "stop 1 .* unknown keys colour"),
        (stops_toml(GATE.replace("llamas-01", "nowhere")), "stop 1 .* no.* known position"),
        (stops_toml(GATE.replace('["llamas-01"]', "[1, 2]")), "stop 1 .* list of names"),
    ],
)
def test_load_park_refuses_a_bad_file_naming_the_stop(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ParkConfigError, match=message):
        load_park(write(tmp_path, text), POSITIONS.get)


def test_load_park_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ParkConfigError, match="cannot read"):
        load_park(tmp_path / "nope.toml", POSITIONS.get)


# -- measurements and verdicts -----------------------------------------------------------------


def test_measurements_name_the_readings_shown() -> None:
    assert MEASUREMENTS["co2"] == ("environment", "co2", "ppm")
    assert measurement_of("environment", "co2") == "co2"
    assert measurement_of("environment", "noise") == "noise"
    assert measurement_of("crowd", "count") == "crowd"
    assert measurement_of("environment", "temperature") is None
    assert measurement_of("count", "crowd") is None


@pytest.mark.parametrize(
    ("measurement", "value", "expected"),
    [
        ("co2", 420, "good"),
        ("co2", 799.9, "good"),
        ("co2", 800, "moderate"),
        ("co2", 999.9, "moderate"),
        ("co2", 1000, "poor"),
        ("co2", math.inf, "poor"),
        ("noise", 54.9, "good"),
        ("noise", 55, "moderate"),
        ("noise", 64.9, "moderate"),
        ("noise", 65, "poor"),
    ],
)
def test_verdict_bands(measurement: str, value: float, expected: str) -> None:
    assert verdict(measurement, value) == expected


@pytest.mark.parametrize(
    ("people", "capacity", "expected"),
    [(0, 100, "good"), (49, 100, "good"), (50, 100, "moderate"), (84, 100, "moderate"),
     (85, 100, "poor"), (200, 100, "poor"), (17, 35, "good"), (18, 35, "moderate")],
)  # fmt: skip
def test_crowd_verdict_is_a_share_of_capacity(people: int, capacity: int, expected: str) -> None:
    assert verdict("crowd", people, capacity=capacity) == expected


@pytest.mark.parametrize(
    ("measurement", "value", "capacity", "message"),
    [
        ("temperature", 20.0, None, "unknown measurement"),
        ("co2", math.nan, None, "NaN"),
        ("crowd", 10, None, "capacity"),
        ("crowd", 10, 0, "capacity"),
        ("crowd", math.nan, 10, "NaN"),
    ],
)
def test_verdict_refuses(
    measurement: str, value: float, capacity: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        verdict(measurement, value, capacity=capacity)
