"""`msec bench care`: the scenario it plans, and one short run through the whole platform
(every incident kind detected, nothing false, nothing lost; no speed asserted)."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from msec.bench.care import (
    COHORTS,
    LEAD_S,
    SLACK_S,
    STALL_CATCH_UP_S,
    SimClock,
    _Children,
    _overlaps_stall,
    _stall_run,
    plan_scenario,
)
from msec.cli.main import app
from msec.sdk.sim.home import INCIDENT_NAMES
from msec.testing.services import ServiceUnavailable

FIGURES = (
    "homes", "speed", "hours", "readings", "acked", "stored", "lost", "readings_per_s",
    "incidents", "alarms_raised", "missed", "false_positives", "duplicates", "unseen",
    "p50_ms", "p99_ms", "restarts", "ingest_p99_ms", "security_events", "stalls",
    "alarms_during_stalls", "p99_ms_outside_stalls", "kept_up_outside_stalls",
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


def test_a_machine_that_stood_still_shows_as_a_stall() -> None:
    # SIGSTOP is what a paused virtual machine looks like from inside: the watcher sleeps
    # through it and wakes up late.
    children = _Children()
    stop = children.ctx.Event()
    try:
        watcher = children.start(_stall_run, stop)
        time.sleep(1.5)  # spawned and ticking
        pid = children.procs[watcher][0].pid
        stopped = time.time()
        os.kill(pid, signal.SIGSTOP)
        time.sleep(3.0)
        resumed = time.time()
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.5)
        stop.set()
        stalls = children.result(watcher, 30)
    finally:
        children.stop_all()
    covering = [(a, b) for a, b in stalls if a <= stopped + 0.3 and b >= resumed - 0.3]
    assert len(covering) == 1, stalls
    began, ended = covering[0]
    assert 2.5 <= ended - began <= 4.5


def test_an_alarm_is_counted_apart_when_its_wait_overlaps_a_stall_or_its_catch_up() -> None:
    stalls = [(1000.0, 1040.0)]
    assert not _overlaps_stall(990.0, 999.0, stalls)  # seen before the stall
    assert _overlaps_stall(990.0, 1041.0, stalls)  # waited through it
    assert _overlaps_stall(1010.0, 1045.0, stalls)  # caused during it
    assert _overlaps_stall(1040.0 + STALL_CATCH_UP_S - 1, 1040.0 + STALL_CATCH_UP_S, stalls)
    assert not _overlaps_stall(1041.0 + STALL_CATCH_UP_S, 1042.0 + STALL_CATCH_UP_S, stalls)
    assert not _overlaps_stall(1010.0, 1045.0, [])


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
    if not figures["stalls"]:  # a working machine: the two p99 are the same
        assert figures["alarms_during_stalls"] == 0
        assert figures["p99_ms_outside_stalls"] == figures["p99_ms"]
