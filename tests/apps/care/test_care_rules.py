"""Declarative alert definitions: the file format, and each rule type in the engine (single,
combined AND and OR, absence, duration, schedules, per-person overrides, per-type limits,
kinds switched off, restarts during an open absence timer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from care_home import HOME, Home, Sink, at, start_day

from msec.apps.care.engine import CareEngine
from msec.apps.care.model import AlarmKind, CareSettings, SensorEvent
from msec.apps.care.rules import DefinitionError, load_definitions, parse_definitions

EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "pilots" / "care-alerts.example.toml"
PLUG = {"device_type": "smart_plug", "value": "plug/power"}
DOOR = {"device_type": "contact_sensor", "value": "contact/open", "equals": True}
BED_EMPTY = {"device_type": "bed_sensor", "value": "bed/occupied", "equals": False}
MOTION = {"role": "motion", "value": "motion/detected", "equals": True}


def rules(*items: dict[str, Any], **extra: Any) -> CareEngine | Any:
    return parse_definitions({"rule": list(items), **extra})


def engine_with(sink: Sink, *items: dict[str, Any], **extra: Any) -> CareEngine:
    return CareEngine(sink, definitions=rules(*items, **extra))


def kinds(sink: Sink) -> list[str]:
    return [str(k) for k in sink.kinds()]


# -- the format ---------------------------------------------------------------------------------


def test_the_documented_example_file_is_valid() -> None:
    defs = load_definitions(EXAMPLE)
    assert [r.kind for r in defs.rules] == [
        "low_voltage", "heater_on_long", "no_door_for_a_day", "door_bed_empty",
        "plug_or_gateway_restart",
    ]  # fmt: skip
    assert {r.type for r in defs.rules} == {"single", "duration", "absence", "combined"}
    assert defs.device_types["gw"] == {"offline_s": 900.0}
    engine = CareEngine(Sink(), definitions=defs)
    assert engine.settings_of(HOME).inactivity_s == 10800
    assert engine.kinds()[:7] == [k.value for k in AlarmKind]
    assert "heater_on_long" in engine.kinds()
    assert engine.rules[1].describe().startswith("duration plug plug/power above 1500")


def test_no_file_means_the_built_in_definitions() -> None:
    defs = load_definitions(None)
    assert defs.rules == () and dict(defs.generic) == {}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rules": []}, "unknown section"),
        ({"generic": {"inactivity_hours": 3}}, "inactivity_hours"),
        ({"generic": {"night_start": "25:99"}}, "night_start"),
        ({"generic": {"inactivity_s": -1}}, "inactivity_s"),
        ({"generic": {"timezone": "Mars/Olympus"}}, "timezone"),
        ({"device_types": {"toaster": {"offline_s": 60}}}, "device_type must be"),
        ({"device_types": {"smart_plug": {"offline": 60}}}, "unknown key"),
        ({"device_types": {"smart_plug": {"offline_s": "soon"}}}, "offline_s"),
        ({"rule": {"kind": "x"}}, "must be a list"),
        ({"rule": [{"kind": "Bad Kind", "type": "single", "when": DOOR}]}, "kind must be"),
        ({"rule": [{"kind": "inactivity", "type": "single", "when": DOOR}]}, "built-in"),
        ({"rule": [{"kind": "k1", "type": "sometimes", "when": DOOR}]}, "type must be"),
        ({"rule": [{"kind": "k1", "type": "single", "when": DOOR, "colour": 1}]}, "colour"),
        ({"rule": [{"kind": "k1", "type": "single"}]}, "when"),
        ({"rule": [{"kind": "k1", "type": "single", "when": DOOR, "for_s": 5}]}, "no for_s"),
        ({"rule": [{"kind": "k1", "type": "absence", "when": DOOR}]}, "for_s"),
        ({"rule": [{"kind": "k1", "type": "duration", "when": DOOR, "for_s": 0}]}, "for_s"),
        ({"rule": [{"kind": "k1", "type": "combined", "all": [DOOR]}]}, "2 to 10"),
        ({"rule": [{"kind": "k1", "type": "combined", "all": [DOOR, MOTION]}]}, "window_s"),
        (
            {"rule": [{"kind": "k1", "type": "combined", "any": [DOOR, MOTION], "window_s": 5}]},
            "no window_s",
        ),
        (
            {"rule": [{"kind": "k1", "type": "combined", "all": [DOOR], "any": [DOOR]}]},
            "either all",
        ),
        (
            {"rule": [{"kind": "k1", "type": "single", "when": {**DOOR, "value": "open"}}]},
            "service/resource",
        ),
        (
            {"rule": [{"kind": "k1", "type": "single", "when": {**PLUG, "above": 1, "below": 2}}]},
            "exactly one",
        ),
        ({"rule": [{"kind": "k1", "type": "single", "when": {**PLUG, "above": "hot"}}]}, "number"),
        (
            {"rule": [{"kind": "k1", "type": "single", "when": {**PLUG, "above": float("nan")}}]},
            "finite",
        ),
        (
            {
                "rule": [
                    {"kind": "k1", "type": "single", "when": {**PLUG, "role": "plug", "above": 1}}
                ]
            },
            "device_type or",
        ),
        (
            {
                "rule": [
                    {
                        "kind": "k1",
                        "type": "single",
                        "when": {"role": "oven", "value": "a/b", "above": 1},
                    }
                ]
            },
            "role must be",
        ),
        (
            {"rule": [{"kind": "k1", "type": "single", "when": DOOR, "schedule": "evenings"}]},
            "schedule",
        ),
        ({"rule": [{"kind": "k1", "type": "single", "when": DOOR, "label": ""}]}, "label"),
        ({"rule": [{"kind": "k1", "type": "single", "when": DOOR}] * 2}, "two rules"),
    ],
)
def test_every_mistake_is_refused_with_a_message_naming_it(data: Any, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        parse_definitions(data)


def test_an_unreadable_or_malformed_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="cannot read"):
        load_definitions(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]\nkind = ", encoding="utf-8")
    with pytest.raises(DefinitionError, match="not valid TOML"):
        load_definitions(bad)


# -- the rule types -----------------------------------------------------------------------------

SINGLE = {"kind": "low_voltage", "type": "single", "label": "Mains voltage low",
          "when": {"device_type": "smart_plug", "value": "plug/voltage", "below": 207}}  # fmt: skip
VOLTAGE = ("plug", "voltage")


def test_single_raises_on_the_matching_reading_once_per_episode() -> None:
    sink = Sink()
    home = Home(engine_with(sink, SINGLE))
    start_day(home)
    home.report("plug", VOLTAGE, 230.0, at("2026-03-02 09:00"))
    assert kinds(sink) == []
    home.report("plug", VOLTAGE, 190.0, at("2026-03-02 09:10"))
    assert kinds(sink) == ["low_voltage"]
    assert sink.alarms[0]["detail"]["rule"] == "Mains voltage low"
    assert sink.alarms[0]["trigger"] == f"{HOME}-plug/{home.seq}"
    sink.resolve_all()
    home.report("plug", VOLTAGE, 185.0, at("2026-03-02 09:20"))  # the same drop goes on
    assert kinds(sink) == ["low_voltage"]
    home.report("plug", VOLTAGE, 231.0, at("2026-03-02 09:30"))
    home.report("plug", VOLTAGE, 200.0, at("2026-03-02 09:40"))  # a new drop
    assert kinds(sink) == ["low_voltage", "low_voltage"]


def test_combined_and_needs_every_condition_within_the_window() -> None:
    rule = {"kind": "door_bed_empty", "type": "combined", "all": [DOOR, BED_EMPTY],
            "window_s": 300}  # fmt: skip
    sink = Sink()
    home = Home(engine_with(sink, rule))
    start_day(home)  # the bed emptied at 07:30, reported empty by every heartbeat
    home.state["bed"] = True  # back in bed: heartbeats say occupied
    home.set("bed", True, at("2026-03-02 09:00"))
    home.set("door", True, at("2026-03-02 09:30"))  # door, bed occupied: no
    home.set("door", False, at("2026-03-02 09:31"))
    assert kinds(sink) == []
    home.set("bed", False, at("2026-03-02 09:40"))  # bed empty 10 min after the door: no
    assert kinds(sink) == []
    home.set("door", True, at("2026-03-02 09:42"))  # door 2 min after: yes
    assert kinds(sink) == ["door_bed_empty"]
    assert sink.alarms[0]["episode"] == f"{at('2026-03-02 09:40'):.3f}"


def test_combined_or_raises_on_either_condition() -> None:
    rule = {"kind": "door_or_heater", "type": "combined",
            "any": [DOOR, {**PLUG, "above": 1500}]}  # fmt: skip
    sink = Sink()
    home = Home(engine_with(sink, rule))
    start_day(home)
    home.set("plug", 100.0, at("2026-03-02 09:00"))
    assert kinds(sink) == []
    home.set("plug", 2000.0, at("2026-03-02 09:10"))
    assert kinds(sink) == ["door_or_heater"]
    sink.resolve_all()
    home.set("door", True, at("2026-03-02 09:20"))
    assert kinds(sink) == ["door_or_heater", "door_or_heater"]


ABSENCE = {"kind": "no_door", "type": "absence", "when": DOOR, "for_s": 4 * 3600}


def test_absence_raises_when_nothing_matched_for_the_time() -> None:
    sink = Sink()
    home = Home(engine_with(sink, ABSENCE))
    start_day(home)  # the door sensor reports (closed) from 06:00
    home.set("door", True, at("2026-03-02 08:00"))
    home.set("door", False, at("2026-03-02 08:01"))
    home.advance(at("2026-03-02 11:59"))
    assert kinds(sink) == []
    home.advance(at("2026-03-02 12:10"))
    assert kinds(sink) == ["no_door"]
    assert sink.alarms[0]["at"] == pytest.approx(at("2026-03-02 12:00"))


def test_absence_is_suspended_while_the_sensor_is_silent() -> None:
    sink = Sink()
    home = Home(engine_with(sink, ABSENCE))
    start_day(home)
    home.set("door", True, at("2026-03-02 08:00"))
    home.set("door", False, at("2026-03-02 08:01"))
    home.silent.add("door")  # the sensor dies: its silence says nothing about the door
    home.advance(at("2026-03-02 12:30"))
    assert kinds(sink) == [AlarmKind.DEVICE_OFFLINE]
    home.silent.discard("door")  # back at 12:33: counted again from its return
    home.advance(at("2026-03-02 16:00"))
    assert kinds(sink) == [AlarmKind.DEVICE_OFFLINE]
    home.advance(at("2026-03-02 16:45"))
    assert kinds(sink) == [AlarmKind.DEVICE_OFFLINE, "no_door"]


def test_a_restart_during_an_open_absence_timer_loses_and_duplicates_nothing() -> None:
    sink = Sink()
    home = Home(engine_with(sink, ABSENCE))
    start_day(home)
    home.set("door", True, at("2026-03-02 08:00"))
    home.set("door", False, at("2026-03-02 08:01"))
    home.advance(at("2026-03-02 10:00"))
    saved = json.loads(json.dumps(home.engine.snapshot()))  # as the service stores it
    # The platform goes down at 10:00 and comes back at 13:00: the due time passed meanwhile.
    restarted = engine_with(sink, ABSENCE)
    restarted.restore(saved)
    replayed: list[SensorEvent] = []
    home.engine = restarted
    observe = restarted.observe
    restarted.observe = lambda e: (replayed.append(e), observe(e))  # type: ignore[method-assign]
    home.advance(at("2026-03-02 13:00"))
    assert kinds(sink) == ["no_door"]
    assert sink.alarms[0]["at"] == pytest.approx(at("2026-03-02 12:00"))
    # A crash before the next save: the same snapshot, the log replayed from its cursor.
    again = engine_with(sink, ABSENCE)
    again.restore(saved)
    for event in replayed:
        again.observe(event)
    again.tick(at("2026-03-02 13:00"))
    assert kinds(sink) == ["no_door"]


DURATION = {"kind": "heater_on_long", "type": "duration", "when": {**PLUG, "above": 1500},
            "for_s": 7200}  # fmt: skip


def test_duration_needs_the_condition_to_hold_without_interruption() -> None:
    sink = Sink()
    home = Home(engine_with(sink, DURATION))
    start_day(home)
    home.set("plug", 2000.0, at("2026-03-02 09:00"))
    home.set("plug", 20.0, at("2026-03-02 10:30"))  # switched off after 1.5 h
    home.set("plug", 2000.0, at("2026-03-02 10:40"))
    home.advance(at("2026-03-02 12:30"))
    assert kinds(sink) == []
    home.advance(at("2026-03-02 12:45"))
    assert kinds(sink) == ["heater_on_long"]
    assert sink.alarms[0]["at"] == pytest.approx(at("2026-03-02 12:40"))


def test_a_schedule_limits_when_a_rule_raises() -> None:
    night_only = {**SINGLE, "schedule": "night"}
    sink = Sink()
    home = Home(engine_with(sink, night_only))
    start_day(home)
    home.report("plug", VOLTAGE, 190.0, at("2026-03-02 15:00"))
    home.report("plug", VOLTAGE, 230.0, at("2026-03-02 15:10"))
    assert kinds(sink) == []
    home.state["bed"] = True
    home.set("bed", True, at("2026-03-02 22:30"))
    home.report("plug", VOLTAGE, 190.0, at("2026-03-02 23:30"))
    assert kinds(sink) == ["low_voltage"]


def test_an_absence_due_outside_its_hours_is_reported_when_they_begin() -> None:
    rule = {**ABSENCE, "schedule": "14:00-20:00"}
    sink = Sink()
    home = Home(engine_with(sink, rule))
    start_day(home)
    home.set("door", True, at("2026-03-02 08:00"))  # due at 12:00, reported from 14:00
    home.set("door", False, at("2026-03-02 08:01"))
    home.advance(at("2026-03-02 13:55"))
    assert kinds(sink) == []
    home.advance(at("2026-03-02 14:05"))
    assert kinds(sink) == ["no_door"]
    assert sink.alarms[0]["at"] == pytest.approx(at("2026-03-02 14:00"))


# -- per person, per type, switched off ---------------------------------------------------------


def test_a_persons_own_rule_parameters_override_the_generic_ones() -> None:
    sink = Sink()
    engine = engine_with(sink, DURATION)
    engine.configure(HOME, rules={"heater_on_long": {"for_s": 1800, "above": 1000}})
    assert engine.person(HOME).rules == {"heater_on_long": {"for_s": 1800, "above": 1000}}
    raised = {}
    for name in (HOME, "home-0002"):
        home = Home(engine, name)
        start_day(home)
        home.set("plug", 1200.0, at("2026-03-02 09:00"))
        home.advance(at("2026-03-02 12:00"))
        raised[name] = [a["at"] for a in sink.alarms
                        if a["home"] == name and a["kind"] == "heater_on_long"]  # fmt: skip
    # 1,200 W for 30 min is her alarm; for the others it takes 1,500 W for 2 h.
    assert raised == {HOME: [at("2026-03-02 09:30")], "home-0002": []}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"rules": {"heater_on_long": {"for_s": -5}}}, "for_s"),
        ({"rules": {"heater_on_long": {"colour": 1}}}, "cannot override"),
        ({"rules": {"heater_on_long": {"below": 5}}}, "above"),
        ({"rules": {"heater_on_long": {"window_s": 5}}}, "no window_s"),
        ({"rules": {"nobody": {"for_s": 5}}}, "no rule"),
        ({"disabled": ["earthquake"]}, "unknown alarm kind"),
        ({"bedtime": "22:00"}, "unknown setting"),
        ({"night_start": "7pm"}, "night_start"),
    ],
)
def test_a_persons_bad_configuration_is_refused_and_changes_nothing(
    config: dict[str, Any], message: str
) -> None:
    engine = engine_with(Sink(), DURATION)
    engine.configure(HOME, inactivity_s=3600)
    with pytest.raises(ValueError, match=message):
        engine.configure(HOME, **config)
    assert engine.person(HOME).overrides == {"inactivity_s": 3600}


def test_alarm_kinds_switched_off_for_a_person_are_not_raised() -> None:
    sink = Sink()
    engine = engine_with(sink, SINGLE)
    engine.configure(HOME, disabled=["low_voltage", "low_battery"])
    home = Home(engine)
    start_day(home)
    home.report("plug", VOLTAGE, 190.0, at("2026-03-02 09:00"))
    home.report("motion", ("health", "battery"), 5.0, at("2026-03-02 09:05"))
    assert kinds(sink) == []
    engine.forget(HOME)
    home.report("plug", VOLTAGE, 230.0, at("2026-03-02 09:10"))
    home.report("plug", VOLTAGE, 190.0, at("2026-03-02 09:20"))
    home.report("motion", ("health", "battery"), 4.0, at("2026-03-02 09:25"))
    assert sorted(kinds(sink)) == ["low_battery", "low_voltage"]


def test_per_device_type_limits_apply_unless_the_person_overrides_them() -> None:
    defs = {"device_types": {"care_gateway": {"offline_s": 900},
                             "motion_sensor": {"low_battery_pct": 40}}}  # fmt: skip
    sink = Sink()
    engine = engine_with(sink, **defs)
    home = Home(engine)
    start_day(home)
    home.report("motion", ("health", "battery"), 30.0, at("2026-03-02 09:00"))
    assert kinds(sink) == [AlarmKind.LOW_BATTERY]
    home.silent.add("gw")
    home.advance(at("2026-03-02 09:30"))  # the hub's last report at ~09:09
    assert kinds(sink) == [AlarmKind.LOW_BATTERY, AlarmKind.DEVICE_OFFLINE]
    assert sink.alarms[1]["detail"]["device"] == "gw"
    # The person's own offline limit wins over the type's.
    sink2 = Sink()
    engine2 = engine_with(sink2, **defs)
    engine2.configure(HOME, offline_s=7200)
    home2 = Home(engine2)
    start_day(home2)
    home2.silent.add("gw")
    home2.advance(at("2026-03-02 09:00"))  # 1.5 h of silence: offline for the type, not her
    assert kinds(sink2) == []


def test_new_generic_settings_apply_to_everyone_but_own_overrides() -> None:
    sink = Sink()
    engine = CareEngine(sink)
    engine.configure(HOME, inactivity_s=7200)
    engine.set_generic(CareSettings(inactivity_s=3600, night_start="22:00"))
    assert engine.settings_of("home-0002").inactivity_s == 3600
    mine = engine.settings_of(HOME)
    assert (mine.inactivity_s, mine.night_start) == (7200, "22:00")
    with pytest.raises(ValueError, match="night_end"):
        engine.set_generic(CareSettings(night_end="99:00"))
    assert engine.settings.night_start == "22:00"


def test_person_configuration_survives_a_restart() -> None:
    sink = Sink()
    engine = engine_with(sink, DURATION)
    engine.configure(HOME, disabled=["appliance_on"], rules={"heater_on_long": {"for_s": 600}},
                     night_start="21:30")  # fmt: skip
    restored = engine_with(sink, DURATION)
    restored.restore(json.loads(json.dumps(engine.snapshot())))
    assert restored.person(HOME) == engine.person(HOME)
    assert restored.profile(HOME).rules[0].for_s == 600
