"""The built-in kinds: what Pilot 1's devices may report, and what is refused."""

from __future__ import annotations

import math
import re

import pytest

from msec.core.errors import Rejected, RejectReason
from msec.core.kinds import get_kind, kinds

SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def test_pilot1_kinds_are_registered_with_their_resources() -> None:
    environment = get_kind("environment_station")
    crowd = get_kind("crowd_counter")
    assert {(r.service, r.resource, r.unit) for r in environment.resources} == {
        ("environment", "temperature", "°C"),
        ("environment", "humidity", "%"),
        ("environment", "co2", "ppm"),
        ("environment", "voc", "ppb"),
        ("environment", "noise", "dB(A)"),
    }
    assert [(r.service, r.resource, r.type) for r in crowd.resources] == [("crowd", "count", "int")]


def test_every_builtin_kind_reports_health() -> None:
    for kind in kinds().values():
        assert kind.spec("health", "battery") is not None, kind.name
        assert kind.spec("health", "rssi") is not None, kind.name


def test_names_are_lowercase_snake_case() -> None:
    # They become MQTT topic levels and URL path segments.
    for kind in kinds().values():
        assert SNAKE.match(kind.name), kind.name
        for spec in kind.all_resources():
            assert SNAKE.match(spec.service), spec.path
            assert SNAKE.match(spec.resource), spec.path


@pytest.mark.parametrize(
    ("kind", "path", "lowest", "highest"),
    [
        ("environment_station", "environment/temperature", -40, 60),
        ("environment_station", "environment/humidity", 0, 100),
        ("environment_station", "environment/co2", 250, 10000),
        ("environment_station", "environment/voc", 0, 60000),
        ("environment_station", "environment/noise", 20, 140),
        ("crowd_counter", "crowd/count", 0, 10000),
    ],
)
def test_ranges_are_physical_bounds(kind: str, path: str, lowest: float, highest: float) -> None:
    spec = get_kind(kind).spec(*path.split("/"))
    assert spec is not None
    assert (spec.minimum, spec.maximum) == (lowest, highest)
    assert spec.check(lowest) == lowest
    assert spec.check(highest) == highest


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("environment_station", "environment/temperature", 60.01),
        ("environment_station", "environment/temperature", -41.0),
        ("environment_station", "environment/humidity", 100.5),
        ("environment_station", "environment/humidity", -0.1),
        ("environment_station", "environment/co2", 120.0),
        ("environment_station", "environment/co2", 10001),
        ("environment_station", "environment/voc", -1.0),
        ("environment_station", "environment/noise", 150.0),
        ("environment_station", "environment/noise", 5.0),
        ("environment_station", "environment/temperature", math.nan),
        ("environment_station", "environment/co2", math.inf),
        ("crowd_counter", "crowd/count", -1),
        ("crowd_counter", "crowd/count", 10001),
        ("crowd_counter", "health/battery", 101.0),
        ("crowd_counter", "health/rssi", 3.0),
    ],
)
def test_out_of_range_is_rejected(kind: str, path: str, value: float) -> None:
    spec = get_kind(kind).spec(*path.split("/"))
    assert spec is not None
    with pytest.raises(Rejected) as caught:
        spec.check(value)
    assert caught.value.reason is RejectReason.OUT_OF_RANGE


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("environment_station", "environment/temperature", True),
        ("environment_station", "environment/noise", False),
        ("environment_station", "environment/co2", "420"),
        ("environment_station", "environment/humidity", None),
        ("crowd_counter", "crowd/count", 12.0),
        ("crowd_counter", "crowd/count", True),
    ],
)
def test_wrong_type_is_a_schema_rejection(kind: str, path: str, value: object) -> None:
    spec = get_kind(kind).spec(*path.split("/"))
    assert spec is not None
    with pytest.raises(Rejected) as caught:
        spec.check(value)
    assert caught.value.reason is RejectReason.SCHEMA
