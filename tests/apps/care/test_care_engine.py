"""The alarm engine, one condition at a time, in simulated time (Europe/Madrid)."""

from __future__ import annotations

import json

import pytest
from care_home import HOME, Home, Sink, at, start_day

from msec.apps.care.engine import CareEngine
from msec.apps.care.model import AlarmKind, AlarmRequest, SensorEvent


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def engine(sink: Sink) -> CareEngine:
    return CareEngine(sink)


def test_a_fall_in_daytime_raises_inactivity_three_hours_after_the_last_motion(
    engine: CareEngine, sink: Sink
) -> None:
    home = Home(engine)
    start_day(home)
    home.set("motion", True, at("2026-03-02 11:00"))
    home.moving = False  # falls
    home.set("motion", False, at("2026-03-02 11:01"))
    home.advance(at("2026-03-02 13:59"))
    assert sink.kinds() == []
    home.advance(at("2026-03-02 14:10"))
    assert sink.kinds() == [AlarmKind.INACTIVITY]
    assert sink.alarms[0]["at"] == pytest.approx(at("2026-03-02 14:00"))


def test_no_inactivity_while_away_or_in_bed_or_sensor_silent(
    engine: CareEngine, sink: Sink
) -> None:
    home = Home(engine)
    start_day(home)
    # An outing: motion in the hall, the door, nobody home for 4 h.
    home.set("motion", True, at("2026-03-02 10:00"))
    home.moving = False
    home.set("door", True, at("2026-03-02 10:02"))
    home.set("door", False, at("2026-03-02 10:03"))
    home.advance(at("2026-03-02 14:00"))
    home.set("door", True, at("2026-03-02 14:00"))
    home.set("motion", True, at("2026-03-02 14:01"))
    # A long nap on the bed.
    home.set("bed", True, at("2026-03-02 15:00"))
    home.advance(at("2026-03-02 18:30"))
    home.set("bed", False, at("2026-03-02 18:30"))
    home.set("motion", True, at("2026-03-02 18:31"))
    home.moving = True
    # The motion sensor silent for 3 h, then back: it counts from its return.
    home.silent.add("motion")
    home.advance(at("2026-03-02 21:50"))
    home.silent.clear()
    home.set("motion", False, at("2026-03-02 21:51"))
    home.set("bed", True, at("2026-03-02 22:30"))
    home.moving = False
    home.advance(at("2026-03-03 06:00"))
    assert AlarmKind.INACTIVITY not in sink.kinds()
    assert sink.kinds() == [AlarmKind.DEVICE_OFFLINE]  # the silence itself


def test_getting_out_of_bed_is_a_sign_of_life_and_the_clock_starts_again(
    engine: CareEngine, sink: Sink
) -> None:
    home = Home(engine)
    start_day(home)
    home.set("motion", True, at("2026-03-02 12:00"))
    home.moving = False
    home.set("bed", True, at("2026-03-02 12:05"))  # lies down for a long nap
    home.advance(at("2026-03-02 16:00"))
    assert sink.kinds() == []
    # Gets off the bed (its message before any motion's) and then nothing moves: a fall.
    home.set("bed", False, at("2026-03-02 16:00"))
    home.advance(at("2026-03-02 18:59"))
    assert sink.kinds() == []
    home.advance(at("2026-03-02 19:05"))
    assert sink.kinds() == [AlarmKind.INACTIVITY]


def test_no_morning_activity_at_ten(engine: CareEngine, sink: Sink) -> None:
    home = Home(engine)
    home.t = at("2026-03-02 20:00")
    home.set("motion", True, at("2026-03-02 22:00"))
    home.set("bed", True, at("2026-03-02 22:30"))
    home.advance(at("2026-03-03 09:59"))
    assert sink.kinds() == []
    home.advance(at("2026-03-03 10:05"))
    assert sink.kinds() == [AlarmKind.NO_MORNING_ACTIVITY]
    home.advance(at("2026-03-03 12:00"))
    assert sink.kinds() == [AlarmKind.NO_MORNING_ACTIVITY]  # in bed: no inactivity


def test_out_of_bed_at_night_after_thirty_minutes(engine: CareEngine, sink: Sink) -> None:
    home = Home(engine)
    start_day(home)
    home.set("bed", True, at("2026-03-02 22:40"))
    home.moving = False
    home.set("bed", False, at("2026-03-03 02:00"))  # a bathroom trip of 20 min is fine
    home.set("motion", True, at("2026-03-03 02:01"))
    home.set("bed", True, at("2026-03-03 02:20"))
    home.set("bed", False, at("2026-03-03 03:00"))  # then up for good
    home.set("motion", True, at("2026-03-03 03:01"))
    home.advance(at("2026-03-03 03:29"))
    assert sink.kinds() == []
    home.advance(at("2026-03-03 03:35"))
    assert sink.kinds() == [AlarmKind.OUT_OF_BED]
    assert sink.alarms[0]["at"] == pytest.approx(at("2026-03-03 03:30"))


def test_late_bedtime_counts_from_the_start_of_the_night(engine: CareEngine, sink: Sink) -> None:
    home = Home(engine)
    start_day(home)
    home.set("motion", True, at("2026-03-02 22:00"))
    home.advance(at("2026-03-02 23:20"))
    home.set("bed", True, at("2026-03-02 23:20"))
    home.moving = False
    home.advance(at("2026-03-03 06:00"))
    assert sink.kinds() == []
    home2 = Home(engine, "home-0002")
    start_day(home2)
    home2.set("motion", True, at("2026-03-02 22:00"))
    home2.advance(at("2026-03-02 23:40"))
    assert sink.kinds() == [AlarmKind.OUT_OF_BED]  # never went to bed: 23:30


def test_night_door_with_the_bed_empty(engine: CareEngine, sink: Sink) -> None:
    home = Home(engine)
    start_day(home)
    home.set("door", True, at("2026-03-02 20:00"))  # daytime: nothing
    home.set("door", False, at("2026-03-02 20:01"))
    home.set("bed", True, at("2026-03-02 22:30"))
    home.moving = False
    home.set("bed", False, at("2026-03-03 03:00"))
    home.set("door", True, at("2026-03-03 03:04"))
    assert sink.kinds() == [AlarmKind.NIGHT_DOOR]
    assert sink.alarms[0]["trigger"].startswith(f"{HOME}-door/")
    home.set("door", False, at("2026-03-03 03:05"))
    home.set("door", True, at("2026-03-03 03:15"))  # coming back in: the same episode
    sink.resolve_all()
    home.set("door", True, at("2026-03-03 03:16"))
    assert sink.kinds() == [AlarmKind.NIGHT_DOOR]


def test_appliance_on_for_four_hours(engine: CareEngine, sink: Sink) -> None:
    home = Home(engine)
    start_day(home)
    home.set("plug", 80.0, at("2026-03-02 09:00"))  # TV for 3 h: fine
    home.set("plug", 0.5, at("2026-03-02 12:00"))
    home.set("plug", 1500.0, at("2026-03-02 12:30"))  # a heater left on
    for hour in range(13, 17):
        home.set("motion", True, at(f"2026-03-02 {hour}:10"))
    home.advance(at("2026-03-02 16:29"))
    assert sink.kinds() == []
    home.advance(at("2026-03-02 16:31"))
    assert sink.kinds() == [AlarmKind.APPLIANCE_ON]


def test_device_offline_and_low_battery(engine: CareEngine, sink: Sink) -> None:
    home = Home(engine)
    start_day(home)
    home.report("bed", ("health", "battery"), 40.0, at("2026-03-02 08:00"))
    home.silent.add("plug")
    home.advance(at("2026-03-02 08:20"))
    assert sink.kinds() == []
    home.set("motion", True, at("2026-03-02 08:40"))
    home.advance(at("2026-03-02 08:45"))
    assert sink.kinds() == [AlarmKind.DEVICE_OFFLINE]
    assert sink.alarms[0]["detail"]["device"] == "plug"
    home.report("bed", ("health", "battery"), 14.0, at("2026-03-02 08:50"))
    home.report("bed", ("health", "battery"), 13.0, at("2026-03-02 09:00"))
    assert sink.kinds() == [AlarmKind.DEVICE_OFFLINE, AlarmKind.LOW_BATTERY]


def test_duplicates_and_old_readings_change_nothing(engine: CareEngine, sink: Sink) -> None:
    home = Home(engine)
    start_day(home)
    home.set("motion", True, at("2026-03-02 11:00"))
    home.moving = False
    # The same reading delivered again much later (QoS 1 retry) is not new motion.
    seq = home.seq
    engine.observe(SensorEvent(HOME, "motion", f"{HOME}-motion", "motion", "detected", True,
                               at("2026-03-02 11:00"), seq))  # fmt: skip
    home.advance(at("2026-03-02 14:05"))
    assert sink.kinds() == [AlarmKind.INACTIVITY]


def test_personal_night_hours_override_the_generic_ones(engine: CareEngine, sink: Sink) -> None:
    engine.configure(HOME, night_start="21:30", night_end="06:00")
    home = Home(engine)
    start_day(home)
    home.set("motion", True, at("2026-03-02 21:00"))
    home.advance(at("2026-03-02 22:05"))
    assert sink.kinds() == [AlarmKind.OUT_OF_BED]  # her night began at 21:30
    with pytest.raises(ValueError):
        engine.configure(HOME, night_start="25:99")
    with pytest.raises(ValueError):
        engine.configure(HOME, inactivity_s=-5)


def test_a_restart_loses_and_duplicates_nothing(engine: CareEngine, sink: Sink) -> None:
    home = Home(engine)
    start_day(home)
    home.set("motion", True, at("2026-03-02 11:00"))
    home.moving = False
    home.advance(at("2026-03-02 12:00"))
    saved = engine.snapshot()
    seq, t = home.seq, home.t
    # Down from 12:00; on restart the readings stored meanwhile are replayed (the engine
    # tails the log from its snapshot), and the inactivity timer (14:00) comes due among them.
    again = CareEngine(sink)
    again.restore(saved)
    home.engine = again
    home.advance(at("2026-03-02 15:00"))
    assert sink.kinds() == [AlarmKind.INACTIVITY]
    assert sink.alarms[0]["at"] == pytest.approx(at("2026-03-02 14:00"))
    # A second crash, with the alarm resolved meanwhile: the replay raises nothing twice.
    sink.resolve_all()
    third = CareEngine(sink)
    third.restore(saved)
    home.engine, home.seq, home.t = third, seq, t
    home.advance(at("2026-03-02 15:00"))
    assert sink.kinds() == [AlarmKind.INACTIVITY]


def test_readings_stored_out_of_order_still_count(engine: CareEngine, sink: Sink) -> None:
    """Two ingest workers may commit a device's door close before its open: the open,
    arriving late with a lower sequence number, still raises the night door alarm."""
    home = Home(engine)
    start_day(home)
    home.state["bed"] = False
    home.advance(at("2026-03-02 23:50"))
    door = f"{HOME}-door"
    opened, closed = at("2026-03-03 00:10"), at("2026-03-03 00:11")
    engine.observe(SensorEvent(HOME, "door", door, "contact", "open", False, closed, 10_001))
    assert AlarmKind.NIGHT_DOOR not in sink.kinds()
    engine.observe(SensorEvent(HOME, "door", door, "contact", "open", True, opened, 10_000))
    assert sink.kinds().count(AlarmKind.NIGHT_DOOR) == 1
    assert engine.homes[HOME].last_door_open == opened
    # A late motion also moves the inactivity clock.
    engine.observe(SensorEvent(HOME, "motion", f"{HOME}-motion", "motion", "detected", True,
                               at("2026-03-03 00:12"), 1))  # fmt: skip
    assert engine.homes[HOME].last_motion == at("2026-03-03 00:12")


class BatchSink(Sink):
    """A sink that also takes several alarms at once, as ``SqlAlarms.raise_alarms`` does."""

    def __init__(self, fail: int = 0) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.fail = fail

    def raise_alarms(self, requests: list[AlarmRequest]) -> list[bool]:
        if self.fail:
            self.fail -= 1
            raise OSError("the database is away")
        self.batches.append(len(requests))
        return [self.raise_alarm(r.home, r.kind, r.episode, at=r.at, detail=r.detail,
                                 trigger=r.trigger) for r in requests]  # fmt: skip


def sleepy_homes(engine: CareEngine, n: int) -> list[Home]:
    """``n`` homes whose person stays in bed past 10:00 (no morning activity)."""
    homes = [Home(engine, f"h{i}") for i in range(n)]
    for home in homes:
        home.t = at("2026-03-02 20:00")
        home.set("motion", True, at("2026-03-02 22:00"))
        home.set("bed", True, at("2026-03-02 22:30"))
        home.advance(at("2026-03-03 09:59"))
    return homes


def test_alarms_due_together_reach_the_sink_in_one_batch() -> None:
    sink = BatchSink()
    engine = CareEngine(sink)
    engine.keep_raised = True
    heard: list[str] = []
    engine.listeners.append(lambda raised: heard.append(raised.home))
    sleepy_homes(engine, 5)
    assert sink.kinds() == []
    engine.tick(at("2026-03-03 10:05"))
    assert sink.batches == [5]  # five alarms due at 10:00, one write
    assert sink.kinds() == [AlarmKind.NO_MORNING_ACTIVITY] * 5
    assert sorted(heard) == [f"h{i}" for i in range(5)]
    assert [r.home for r in engine.raised] == heard
    # Outside a batch (one reading at a time), each alarm is a batch of its own.
    engine.observe(SensorEvent("h0", "door", "h0-door", "contact", "open", True,
                               at("2026-03-03 10:06"), 10_000))  # fmt: skip
    with engine.batch():
        with engine.batch():  # nested: still one batch
            engine.observe(SensorEvent("h1", "gw", "h1-gw", "health", "battery", 5.0,
                                       at("2026-03-03 10:07"), 10_001))  # fmt: skip
            engine.observe(SensorEvent("h2", "gw", "h2-gw", "health", "battery", 4.0,
                                       at("2026-03-03 10:07"), 10_002))  # fmt: skip
        assert sink.batches == [5]  # held back until the outer batch ends
    assert sink.batches == [5, 2]
    assert sink.kinds()[-2:] == [AlarmKind.LOW_BATTERY] * 2


def test_a_failed_batch_is_retried_without_losing_an_alarm() -> None:
    sink = BatchSink(fail=1)
    engine = CareEngine(sink)
    sleepy_homes(engine, 3)
    engine.tick(at("2026-03-03 10:00"))
    assert sink.kinds() == []  # the store was away: nothing stored, nothing heard
    engine.tick(at("2026-03-03 10:01"))  # retried 5 s later, at its own due time
    assert sink.kinds() == [AlarmKind.NO_MORNING_ACTIVITY] * 3
    assert all(a["at"] < at("2026-03-03 10:01") for a in sink.alarms)


def test_alarms_the_store_failed_survive_a_restart() -> None:
    sink = BatchSink(fail=1)
    engine = CareEngine(sink)
    sleepy_homes(engine, 2)
    engine.tick(at("2026-03-03 10:00"))  # the store fails: kept for a retry
    saved = engine.snapshot()
    assert sink.kinds() == [] and len(saved["retry"]) == 2
    again = CareEngine(sink)
    again.restore(saved)
    again.tick(at("2026-03-03 10:00") + 1)
    assert sink.kinds() == [AlarmKind.NO_MORNING_ACTIVITY] * 2
    assert again.snapshot()["retry"] == []


def test_a_snapshot_of_many_homes_is_one_json_document(engine: CareEngine) -> None:
    """The snapshot is written a few hundred homes per ``json.dumps`` (so that the API's
    threads run in between): the text is still exactly one compact JSON document, and a
    restart from it has every home."""
    t = at("2026-03-02 08:00")
    homes = [f"home-{i:04d}" for i in range(600)]  # more than two chunks
    for i, home in enumerate(homes):
        engine.configure(home, inactivity_s=3600 + i)
        engine.observe(SensorEvent(home, "motion", f"{home}-motion", "motion", "detected",
                                   True, t + i, 1))  # fmt: skip
    text = engine.snapshot_json()
    data = json.loads(text)
    assert text == json.dumps(data, separators=(",", ":"))
    assert list(data["homes"]) == homes and list(data["people"]) == homes
    again = CareEngine(Sink())
    again.restore(data)
    assert again.snapshot_json() == text
