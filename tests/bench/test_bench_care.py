"""`msec bench care`: the scenario it plans, and one short run through the whole platform
(every incident kind detected, nothing false, nothing lost; no speed asserted)."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from msec.bench.care import COHORTS, LEAD_S, SLACK_S, SimClock, plan_scenario
from msec.cli.main import app
from msec.sdk.sim.home import INCIDENT_NAMES
from msec.testing.services import ServiceUnavailable

FIGURES = (
    "homes", "speed", "hours", "readings", "acked", "stored", "lost", "readings_per_s",
    "incidents", "alarms_raised", "missed", "false_positives", "duplicates", "unseen",
    "p50_ms", "p99_ms", "restarts", "ingest_p99_ms", "security_events",
)  # fmt: skip


def test_every_kind_fits_in_five_hours_with_its_whole_detection_window() -> None:
    scenario = plan_scenario(14, 5.0, 0.5, seed=3)
    truth = scenario.truth()
    assert scenario.left_out == ()
    assert sorted(i.name for i in truth) == sorted(INCIDENT_NAMES)
    for incident in truth:
        assert scenario.t0 + LEAD_S <= incident.start
        assert incident.start + incident.detect_within_s <= scenario.t1 - SLACK_S
    assert {h.timezone for h in scenario.homes} == {c.timezone for c in COHORTS}
    assert sum(1 for h in scenario.homes if h.incidents) == 7


def test_the_cohorts_start_asleep_or_up_at_home() -> None:
    scenario = plan_scenario(3, 5.0, 0.0, seed=1)
    local = {
        c.timezone: datetime.fromtimestamp(scenario.t0, ZoneInfo(c.timezone)).strftime("%H:%M")
        for c in COHORTS
    }
    assert local == {"Europe/Madrid": "00:45", "Asia/Bangkok": "06:45",
                     "Australia/Brisbane": "09:45"}  # fmt: skip
    assert scenario.truth() == []


def test_a_short_span_leaves_out_the_long_incidents() -> None:
    scenario = plan_scenario(20, 2.0, 1.0, seed=1)
    assert set(scenario.left_out) == {"fall", "appliance_left_on", "no_morning_activity"}
    assert {i.name for i in scenario.truth()} == {
        "night_wandering", "not_back_to_bed", "sensor_silent", "low_battery",
    }  # fmt: skip


def test_the_simulated_clock_waits_runs_and_stops() -> None:
    clock = SimClock(1000.0, 2000.0, 60.0)
    assert clock() == 1000.0
    clock.start(100.0)
    assert clock.real_at(1600.0) == 110.0
    assert clock() == 2000.0  # long past its end


@pytest.mark.integration
@pytest.mark.slow
def test_seven_homes_through_the_platform_miss_nothing_and_lose_nothing() -> None:
    args = "bench care --homes 7 --speed 600 --hours 5 --incident-share 1 --json"
    # The runtime's tamper check every 5 s instead of hourly: it runs beside the homes.
    result = CliRunner().invoke(app, args.split(), env={"MSEC_LOG__VERIFY_EVERY_S": "5"})
    if isinstance(result.exception, ServiceUnavailable):
        raise result.exception
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    for key in FIGURES:
        assert key in figures, key
    assert figures["incidents"] == 7
    assert sorted(figures["incidents_by_kind"]) == sorted(INCIDENT_NAMES)
    assert figures["missed"] == 0, figures["missed_detail"]
    assert figures["false_positives"] == 0, figures["false_positive_detail"]
    assert figures["duplicates"] == 0 and figures["unseen"] == 0
    assert figures["alarms_raised"] == 7
    assert figures["lost"] == 0 and figures["unacked"] == 0
    assert figures["readings"] == figures["acked"] == figures["stored"] > 0
    assert figures["security_events"] == 0
    checks = figures["tamper_checks"]
    assert checks and all(c["ok"] and c["size"] > 0 for c in checks), checks
    assert figures["wal_max_mb"] > 0
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]
