"""SqlAlarms on SQLite (a temporary file) and on PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

import msec.apps.care.alarms as alarms_module
from msec.apps.care.alarms import (
    MAX_NOTE,
    Alarm,
    AlarmStateError,
    Note,
    SqlAlarms,
    UnknownAlarm,
    alarms_table,
)
from msec.apps.care.model import AlarmKind, AlarmRequest

T0 = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC
ESCALATE = 900.0
INACTIVITY = AlarmKind.INACTIVITY


@pytest.fixture
def alarms(engine: Engine) -> SqlAlarms:
    alarms = SqlAlarms(engine)
    alarms.create_schema()
    alarms.create_schema()  # idempotent
    return alarms


def raise_one(alarms: SqlAlarms, home: str = "h1", kind: AlarmKind = INACTIVITY, **kw) -> Alarm:
    episode = kw.pop("episode", f"{home}-{kind}-1")
    alarm = alarms.raise_alarm(home, kind, episode, at=kw.pop("at", T0), **kw)
    assert alarm is not None
    return alarm


# -- raising and the two uniqueness rules ------------------------------------------------------


def test_raise_stores_the_alarm(alarms: SqlAlarms) -> None:
    alarm = raise_one(alarms, detail={"silent_s": 10_800, "room": "living"}, trigger="h1-motion/42")
    assert alarm.home == "h1"
    assert alarm.kind is INACTIVITY
    assert alarm.state == "raised"
    assert alarm.level == 0
    assert alarm.raised_at == T0
    assert alarm.detail == {"silent_s": 10_800, "room": "living"}
    assert alarm.trigger == "h1-motion/42"
    assert alarm.acknowledged_at is alarm.acknowledged_by is None
    assert alarm.resolved_at is alarm.resolved_by is None
    assert alarm.false_positive is False
    assert alarm.notes == ()
    assert alarm.active
    assert alarms.get(alarm.id) == alarm
    assert alarms.get(alarm.id + 1000) is None
    # A sensor's odd value does not stop the alarm: JSON has no NaN.
    odd = alarms.raise_alarm(
        "h2", INACTIVITY, "e", at=T0, detail={"v": float("nan"), "l": [float("-inf"), 1.5]}
    )
    assert odd is not None and odd.detail == {"v": None, "l": [None, 1.5]}
    # A kind may be given as its string value.
    night = alarms.raise_alarm("h1", "night_door", "n1", at=T0)
    assert night is not None and night.kind is AlarmKind.NIGHT_DOOR


def test_one_active_alarm_per_home_and_kind(alarms: SqlAlarms) -> None:
    first = raise_one(alarms, episode="morning")
    assert alarms.raise_alarm("h1", INACTIVITY, "afternoon", at=T0 + 60) is None
    # Another kind or another home is another alarm.
    assert alarms.raise_alarm("h1", AlarmKind.LOW_BATTERY, "afternoon", at=T0) is not None
    assert alarms.raise_alarm("h2", INACTIVITY, "afternoon", at=T0) is not None
    # Acknowledged is still active.
    alarms.acknowledge(first.id, by="op:ana", at=T0 + 60)
    assert alarms.raise_alarm("h1", INACTIVITY, "afternoon", at=T0 + 120) is None
    # Once resolved, a new incident raises a new alarm.
    alarms.resolve(first.id, by="op:ana", at=T0 + 180)
    second = alarms.raise_alarm("h1", INACTIVITY, "afternoon", at=T0 + 240)
    assert second is not None and second.id != first.id
    assert [a.id for a in alarms.active("h1", INACTIVITY)] == [second.id]


def test_an_episode_raises_once_even_after_it_was_resolved(alarms: SqlAlarms) -> None:
    first = raise_one(alarms, episode="2025-06-15T12")
    alarms.resolve(first.id, by="op:ana", at=T0 + 60)
    # The engine restarts and re-evaluates the same incident: no second alarm.
    assert alarms.raise_alarm("h1", INACTIVITY, "2025-06-15T12", at=T0 + 120) is None
    assert alarms.active() == []
    assert len(alarms.history()) == 1


def test_both_rules_are_database_constraints(alarms: SqlAlarms, engine: Engine) -> None:
    raise_one(alarms, episode="e1")
    row = {
        "home": "h1", "kind": INACTIVITY.value, "state": "raised", "level": 0, "raised_at": T0,
        "detail": "{}", "false_positive": False,
    }  # fmt: skip
    # A second active alarm, bypassing the store.
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(alarms_table.insert().values(**row, episode="e2"))
    # The same episode again, even resolved.
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(alarms_table.insert().values(**(row | {"state": "resolved"}), episode="e1"))
    # A resolved alarm next to the active one is fine.
    with engine.begin() as conn:
        conn.execute(alarms_table.insert().values(**(row | {"state": "resolved"}), episode="e3"))


@pytest.mark.parametrize("same_episode", [True, False])
def test_concurrent_raises_make_exactly_one_alarm(alarms: SqlAlarms, same_episode: bool) -> None:
    start = threading.Barrier(8)

    def attempt(i: int) -> Alarm | None:
        start.wait()
        episode = "e" if same_episode else f"e{i}"
        return alarms.raise_alarm("h1", INACTIVITY, episode, at=T0 + i, detail={"i": i})

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(attempt, range(8)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert [a.id for a in alarms.history()] == [winners[0].id]
    assert [e.event for e in alarms.events(winners[0].id)] == ["raised"]


def test_custom_rule_kinds_are_stored_and_counted(alarms: SqlAlarms) -> None:
    stored = alarms.raise_alarm("h1", "heater_on_long", "e1", at=T0, detail={"rule": "Heater"})
    assert stored is not None and stored.kind == "heater_on_long"
    assert alarms.raise_alarm("h1", "heater_on_long", "e2", at=T0 + 1, detail={}) is None
    assert [a.kind for a in alarms.active(kind="heater_on_long")] == ["heater_on_long"]
    assert alarms.counts()["raised"]["heater_on_long"] == 1
    assert alarms.get(stored.id).as_dict()["kind"] == "heater_on_long"


def test_raise_alarms_stores_a_burst_in_one_write(alarms: SqlAlarms, engine: Engine) -> None:
    transactions: list[str] = []
    sa.event.listen(engine, "commit", lambda conn: transactions.append("commit"))
    heard: list[tuple[str, int]] = []
    alarms.on_change.append(lambda event, a: heard.append((event, a.id)))
    already = raise_one(alarms, home="h9", episode="old")
    transactions.clear()
    heard.clear()
    requests = [
        AlarmRequest("h1", INACTIVITY, "e1", T0, {"hours": 3}, None),
        AlarmRequest("h2", AlarmKind.NIGHT_DOOR, "e2", T0 + 1, {}, "h2-door/7"),
        AlarmRequest("h1", INACTIVITY, "e3", T0 + 2),  # h1 already has one active: refused
        AlarmRequest("h9", INACTIVITY, "new", T0 + 3),  # active since before: refused
        AlarmRequest("h3\n", INACTIVITY, "e4", T0 + 4),  # unfit: logged, the others go on
        AlarmRequest("h4", "heater_on_long", "e5", T0 + 5, {"rule": "Heater"}),
    ]
    results = alarms.raise_alarms(requests)
    assert transactions == ["commit"]
    assert [r is not None for r in results] == [True, True, False, False, False, True]
    stored = [r for r in results if r is not None]
    assert [(a.home, a.kind, a.episode, a.raised_at) for a in stored] == [
        ("h1", INACTIVITY, "e1", T0),
        ("h2", AlarmKind.NIGHT_DOOR, "e2", T0 + 1),
        ("h4", "heater_on_long", "e5", T0 + 5),
    ]
    assert stored[1].trigger == "h2-door/7" and stored[0].detail == {"hours": 3}
    assert heard == [("raised", a.id) for a in stored]
    assert all([e.event for e in alarms.events(a.id)] == ["raised"] for a in stored)
    assert {a.id for a in alarms.active()} == {already.id} | {a.id for a in stored}


def test_raise_alarms_stores_nothing_when_the_database_fails(
    alarms: SqlAlarms, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def fail_on_the_second(*args: object, **kw: object) -> object:
        calls.append(1)
        if len(calls) == 2:  # after the first alarm's row is written
            raise sa.exc.OperationalError("insert", {}, Exception("disk I/O error"))
        return saved(*args, **kw)

    requests = [AlarmRequest(f"h{i}", INACTIVITY, "e", T0) for i in range(3)]
    saved = alarms_module._event_row
    monkeypatch.setattr(alarms_module, "_event_row", fail_on_the_second)
    with pytest.raises(sa.exc.OperationalError):
        alarms.raise_alarms(requests)
    monkeypatch.undo()
    assert alarms.history() == []  # the first one was rolled back with the rest
    assert [a is not None for a in alarms.raise_alarms(requests)] == [True, True, True]
    assert alarms.raise_alarms([]) == []


@pytest.mark.parametrize(
    ("args", "kw"),
    [
        (("h1", "Earth quake!", "e"), {}),
        (("h1", "x", "e"), {}),
        (("h1", "k" * 33, "e"), {}),
        (("", INACTIVITY, "e"), {}),
        (("h1\n", INACTIVITY, "e"), {}),
        (("h" * 65, INACTIVITY, "e"), {}),
        (("h1", INACTIVITY, ""), {}),
        (("h1", INACTIVITY, "e" * 201), {}),
        (("h1", INACTIVITY, "e"), {"detail": ["not", "an", "object"]}),
        (("h1", INACTIVITY, "e"), {"detail": {"x": object()}}),
        (("h1", INACTIVITY, "e"), {"detail": {"x": "y" * 20_000}}),
        (("h1", INACTIVITY, "e"), {"trigger": "h1-motion/1\r\nX: y"}),
        (("h1", INACTIVITY, "e"), {"at": float("inf")}),
    ],
)
def test_raise_rejects_bad_values(alarms: SqlAlarms, args: tuple, kw: dict) -> None:
    kw.setdefault("at", T0)
    with pytest.raises(ValueError):
        alarms.raise_alarm(*args, **kw)
    assert alarms.history() == []


# -- transitions -------------------------------------------------------------------------------


def test_acknowledge_then_resolve(alarms: SqlAlarms) -> None:
    alarm = raise_one(alarms)
    acked = alarms.acknowledge(alarm.id, by="op:ana", at=T0 + 60, note="Calling her now")
    assert acked.state == "acknowledged"
    assert (acked.acknowledged_by, acked.acknowledged_at) == ("op:ana", T0 + 60)
    assert acked.notes == (Note(T0 + 60, "op:ana", "Calling her now"),)
    assert acked.active
    done = alarms.resolve(alarm.id, by="op:luis", at=T0 + 600, note="She is fine, was napping")
    assert done.state == "resolved"
    assert (done.resolved_by, done.resolved_at) == ("op:luis", T0 + 600)
    assert done.acknowledged_by == "op:ana"
    assert done.false_positive is False
    assert [n.text for n in done.notes] == ["Calling her now", "She is fine, was napping"]
    assert not done.active
    assert alarms.get(alarm.id) == done


def test_resolve_straight_from_raised_as_a_false_positive(alarms: SqlAlarms) -> None:
    alarm = raise_one(alarms)
    done = alarms.resolve(alarm.id, by="op:ana", at=T0 + 30, false_positive=True)
    assert done.state == "resolved"
    assert done.false_positive is True
    assert done.acknowledged_at is None
    with pytest.raises(ValueError):
        alarms.resolve(raise_one(alarms, "h2").id, by="op:ana", false_positive="yes")  # type: ignore[arg-type]


def test_forbidden_transitions_change_nothing(alarms: SqlAlarms) -> None:
    alarm = raise_one(alarms)
    alarms.acknowledge(alarm.id, by="op:ana", at=T0 + 1)
    with pytest.raises(AlarmStateError, match="acknowledged"):
        alarms.acknowledge(alarm.id, by="op:luis", at=T0 + 2)
    alarms.resolve(alarm.id, by="op:ana", at=T0 + 3)
    before = alarms.get(alarm.id)
    with pytest.raises(AlarmStateError, match="resolved"):
        alarms.acknowledge(alarm.id, by="op:luis", at=T0 + 4)
    with pytest.raises(AlarmStateError, match="resolved"):
        alarms.resolve(alarm.id, by="op:luis", at=T0 + 4)
    assert alarms.get(alarm.id) == before
    assert [e.event for e in alarms.events(alarm.id)] == ["raised", "acknowledged", "resolved"]


def test_unknown_alarm(alarms: SqlAlarms) -> None:
    with pytest.raises(UnknownAlarm):
        alarms.acknowledge(404, by="op:ana")
    with pytest.raises(UnknownAlarm):
        alarms.resolve(404, by="op:ana")
    with pytest.raises(UnknownAlarm):
        alarms.add_note(404, by="op:ana", text="hello")
    assert alarms.events(404) == []


@pytest.mark.parametrize("by", ["", "x" * 201, "op:ana\n", None])
def test_who_is_required(alarms: SqlAlarms, by: object) -> None:
    alarm = raise_one(alarms)
    with pytest.raises(ValueError):
        alarms.acknowledge(alarm.id, by=by)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        alarms.resolve(alarm.id, by=by)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        alarms.add_note(alarm.id, by=by, text="hi")  # type: ignore[arg-type]
    assert alarms.get(alarm.id) == alarm


# -- notes -------------------------------------------------------------------------------------


def test_notes_keep_line_breaks_and_tabs(alarms: SqlAlarms) -> None:
    alarm = raise_one(alarms)
    noted = alarms.add_note(alarm.id, by="op:ana", at=T0 + 5, text="  Line 1\r\n\tLine 2\r  ")
    assert noted.notes == (Note(T0 + 5, "op:ana", "Line 1\n\tLine 2"),)
    assert noted.state == "raised"
    longest = alarms.add_note(alarm.id, by="op:ana", at=T0 + 6, text="é" * MAX_NOTE)
    assert len(longest.notes) == 2
    # A resolved alarm takes follow-up notes; its state stays.
    alarms.resolve(alarm.id, by="op:ana", at=T0 + 7)
    after = alarms.add_note(alarm.id, by="op:luis", at=T0 + 8, text="Daughter called back")
    assert after.state == "resolved"
    assert after.notes[-1] == Note(T0 + 8, "op:luis", "Daughter called back")


@pytest.mark.parametrize(
    "text",
    ["", "   \n ", "x" * (MAX_NOTE + 1), "bell\x07", "nul\x00", "esc\x1b[31m", "del\x7f", 42],
)
def test_bad_notes_are_refused(alarms: SqlAlarms, text: object) -> None:
    alarm = raise_one(alarms)
    with pytest.raises(ValueError):
        alarms.add_note(alarm.id, by="op:ana", text=text)  # type: ignore[arg-type]
    if isinstance(text, str) and text.strip():
        with pytest.raises(ValueError):
            alarms.acknowledge(alarm.id, by="op:ana", note=text)
        with pytest.raises(ValueError):
            alarms.resolve(alarm.id, by="op:ana", note=text)
    assert alarms.get(alarm.id) == alarm
    assert [e.event for e in alarms.events(alarm.id)] == ["raised"]


def test_an_empty_note_when_acknowledging_is_no_note(alarms: SqlAlarms) -> None:
    alarm = raise_one(alarms)
    assert alarms.acknowledge(alarm.id, by="op:ana", note="  ").notes == ()


# -- escalation --------------------------------------------------------------------------------


def test_escalation_once_per_period(alarms: SqlAlarms) -> None:
    alarm = raise_one(alarms)
    assert alarms.escalate_due(at=T0 + ESCALATE - 1, after_s=ESCALATE) == []
    (first,) = alarms.escalate_due(at=T0 + ESCALATE, after_s=ESCALATE)
    assert (first.id, first.level) == (alarm.id, 1)
    # Not again within the same period.
    assert alarms.escalate_due(at=T0 + ESCALATE, after_s=ESCALATE) == []
    assert alarms.escalate_due(at=T0 + 2 * ESCALATE - 1, after_s=ESCALATE) == []
    (second,) = alarms.escalate_due(at=T0 + 2 * ESCALATE, after_s=ESCALATE)
    assert second.level == 2
    events = alarms.events(alarm.id)
    assert [(e.event, e.level, e.at, e.by) for e in events] == [
        ("raised", 0, T0, None),
        ("escalated", 1, T0 + ESCALATE, None),
        ("escalated", 2, T0 + 2 * ESCALATE, None),
    ]


def test_escalation_can_be_limited_to_some_homes_or_exclude_them(alarms: SqlAlarms) -> None:
    mine, others = raise_one(alarms, "h1"), raise_one(alarms, "h2")
    late = T0 + ESCALATE
    assert alarms.escalate_due(at=late, after_s=ESCALATE, exclude=["h1"]) == [
        alarms.get(others.id)
    ]
    assert [a.id for a in alarms.escalate_due(at=late, after_s=ESCALATE, homes=["h1"])] == [
        mine.id
    ]
    assert alarms.escalate_due(at=late, after_s=ESCALATE) == []


def test_after_an_outage_each_call_escalates_one_level(alarms: SqlAlarms) -> None:
    raise_one(alarms)
    late = T0 + 10 * ESCALATE
    assert [a.level for a in alarms.escalate_due(at=late, after_s=ESCALATE)] == [1]
    assert [a.level for a in alarms.escalate_due(at=late, after_s=ESCALATE)] == [2]


def test_only_unacknowledged_alarms_escalate(alarms: SqlAlarms) -> None:
    raised = raise_one(alarms, "h1")
    acked = raise_one(alarms, "h2")
    resolved = raise_one(alarms, "h3")
    alarms.acknowledge(acked.id, by="op:ana", at=T0 + 1)
    alarms.resolve(resolved.id, by="op:ana", at=T0 + 1)
    escalated = alarms.escalate_due(at=T0 + 5 * ESCALATE, after_s=ESCALATE)
    assert [a.id for a in escalated] == [raised.id]
    # An acknowledged alarm keeps the level it reached.
    assert alarms.get(acked.id).level == 0


def test_concurrent_escalations_happen_once(alarms: SqlAlarms) -> None:
    first, second = raise_one(alarms, "h1"), raise_one(alarms, "h2", at=T0 + 1)
    start = threading.Barrier(8)

    def attempt(_: int) -> list[Alarm]:
        start.wait()
        return alarms.escalate_due(at=T0 + ESCALATE + 1, after_s=ESCALATE)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = [a for batch in pool.map(attempt, range(8)) for a in batch]
    assert sorted(a.id for a in results) == [first.id, second.id]
    assert {a.level for a in results} == {1}
    assert alarms.get(first.id).level == alarms.get(second.id).level == 1


@pytest.mark.parametrize("after_s", [0, -1, float("nan"), float("inf"), True, "900"])
def test_escalation_needs_a_positive_period(alarms: SqlAlarms, after_s: object) -> None:
    with pytest.raises(ValueError):
        alarms.escalate_due(at=T0, after_s=after_s)  # type: ignore[arg-type]


# -- history and queries -----------------------------------------------------------------------


def test_events_tell_the_whole_story(alarms: SqlAlarms) -> None:
    alarm = raise_one(alarms)
    alarms.escalate_due(at=T0 + ESCALATE, after_s=ESCALATE)
    alarms.add_note(alarm.id, by="op:ana", at=T0 + 1000, text="No answer on the phone")
    alarms.acknowledge(alarm.id, by="op:ana", at=T0 + 1100)
    alarms.resolve(alarm.id, by="op:luis", at=T0 + 2000, note="Neighbour checked: all well")
    events = alarms.events(alarm.id)
    assert [(e.event, e.at, e.by, e.level, e.text) for e in events] == [
        ("raised", T0, None, 0, None),
        ("escalated", T0 + ESCALATE, None, 1, None),
        ("note", T0 + 1000, "op:ana", 1, "No answer on the phone"),
        ("acknowledged", T0 + 1100, "op:ana", 1, None),
        ("resolved", T0 + 2000, "op:luis", 1, "Neighbour checked: all well"),
    ]
    assert all(e.alarm_id == alarm.id for e in events)
    assert [e.id for e in events] == sorted(e.id for e in events)


def test_active_lists_raised_first_then_acknowledged_newest_first(alarms: SqlAlarms) -> None:
    a1 = raise_one(alarms, "h1", at=T0)
    a2 = raise_one(alarms, "h2", at=T0 + 10)
    a3 = raise_one(alarms, "h3", at=T0 + 20)
    a4 = raise_one(alarms, "h4", at=T0 + 30)
    a5 = raise_one(alarms, "h1", AlarmKind.LOW_BATTERY, at=T0 + 40)
    alarms.acknowledge(a1.id, by="op:ana", at=T0 + 50)
    alarms.acknowledge(a3.id, by="op:ana", at=T0 + 50)
    alarms.resolve(a4.id, by="op:ana", at=T0 + 50)
    assert [a.id for a in alarms.active()] == [a5.id, a2.id, a3.id, a1.id]
    assert [a.id for a in alarms.active("h1")] == [a5.id, a1.id]
    assert [a.id for a in alarms.active(kind="low_battery")] == [a5.id]
    assert [a.id for a in alarms.active("h1", INACTIVITY)] == [a1.id]
    with pytest.raises(ValueError):
        alarms.active(kind="Earth quake!")


def test_history_filters_and_limits(alarms: SqlAlarms) -> None:
    ids = []
    for i in range(5):
        alarm = raise_one(alarms, "h1", episode=f"e{i}", at=T0 + i * 100)
        alarms.resolve(alarm.id, by="op:ana", at=T0 + i * 100 + 1)
        ids.append(alarm.id)
    other = raise_one(alarms, "h2", at=T0 + 250)
    assert [a.id for a in alarms.history()] == [ids[4], ids[3], other.id, *ids[2::-1]]
    assert [a.id for a in alarms.history("h1", since=T0 + 200)] == [ids[4], ids[3], ids[2]]
    assert [a.id for a in alarms.history(limit=2)] == [ids[4], ids[3]]
    assert alarms.history("h9") == []


def test_counts_by_state_and_kind(alarms: SqlAlarms) -> None:
    empty = alarms.counts()
    assert set(empty) == {"raised", "acknowledged", "resolved"}
    assert all(set(by_kind) == set(AlarmKind) for by_kind in empty.values())
    assert sum(n for by_kind in empty.values() for n in by_kind.values()) == 0
    raise_one(alarms, "h1")
    acked = raise_one(alarms, "h2")
    gone = raise_one(alarms, "h3", AlarmKind.LOW_BATTERY)
    alarms.acknowledge(acked.id, by="op:ana")
    alarms.resolve(gone.id, by="op:ana")
    counts = alarms.counts()
    assert counts["raised"][INACTIVITY] == 1
    assert counts["acknowledged"][INACTIVITY] == 1
    assert counts["resolved"][AlarmKind.LOW_BATTERY] == 1
    assert sum(n for by_kind in counts.values() for n in by_kind.values()) == 3


def test_as_dict_is_json_ready(alarms: SqlAlarms) -> None:
    alarm = alarms.add_note(raise_one(alarms, detail={"a": 1}).id, by="op:ana", text="hi", at=T0)
    data = alarm.as_dict()
    assert data["kind"] == "inactivity"
    assert data["notes"] == [{"at": T0, "by": "op:ana", "text": "hi"}]
    assert "notes" not in alarm.as_dict(notes=False)


# -- on_change ---------------------------------------------------------------------------------


def test_on_change_hears_every_committed_change(alarms: SqlAlarms) -> None:
    heard: list[tuple[str, int, str, int]] = []

    def broken(event: str, alarm: Alarm) -> None:
        raise RuntimeError("a broken subscriber")

    alarms.on_change.append(broken)
    alarms.on_change.append(lambda event, a: heard.append((event, a.id, a.state, a.level)))
    alarm = raise_one(alarms)
    # Nothing happens, nothing is heard.
    assert alarms.raise_alarm("h1", INACTIVITY, "other", at=T0) is None
    assert alarms.escalate_due(at=T0 + 1, after_s=ESCALATE) == []
    alarms.escalate_due(at=T0 + ESCALATE, after_s=ESCALATE)
    alarms.add_note(alarm.id, by="op:ana", at=T0 + 950, text="hm")
    alarms.acknowledge(alarm.id, by="op:ana", at=T0 + 1000)
    with pytest.raises(AlarmStateError):
        alarms.acknowledge(alarm.id, by="op:ana", at=T0 + 1000)
    alarms.resolve(alarm.id, by="op:ana", at=T0 + 1100)
    assert heard == [
        ("raised", alarm.id, "raised", 0),
        ("escalated", alarm.id, "raised", 1),
        ("note", alarm.id, "raised", 1),
        ("acknowledged", alarm.id, "acknowledged", 1),
        ("resolved", alarm.id, "resolved", 1),
    ]


def test_a_batch_subscriber_hears_one_transactions_alarms_at_once(alarms: SqlAlarms) -> None:
    batches: list[tuple[str, list[str]]] = []
    heard: list[str] = []

    class Batch:
        def __call__(self, event: str, alarm: Alarm) -> None:
            batches.append((event, [alarm.home]))

        def many(self, event: str, found: list[Alarm]) -> None:
            batches.append((event, [a.home for a in found]))

    class Broken(Batch):
        def many(self, event: str, found: list[Alarm]) -> None:
            raise RuntimeError("a broken batch subscriber")

    alarms.on_change.extend([Broken(), Batch(), lambda e, a: heard.append(a.home)])
    homes = ["h1", "h2", "h3"]
    alarms.raise_alarms([AlarmRequest(h, INACTIVITY, "e", T0, {}) for h in [*homes, "h1"]])
    assert batches == [("raised", homes)] and heard == homes  # the repeat was not stored
    alarms.raise_alarms([AlarmRequest("h1", INACTIVITY, "e", T0, {})])  # nothing new
    assert batches == [("raised", homes)]


def test_on_change_runs_after_the_commit(alarms: SqlAlarms, engine: Engine) -> None:
    seen_by_others: list[str | None] = []

    def look(event: str, alarm: Alarm) -> None:
        # A separate store (another connection) already sees the change.
        seen_by_others.append(SqlAlarms(engine).get(alarm.id).state)  # type: ignore[union-attr]

    alarms.on_change.append(look)
    alarm = raise_one(alarms)
    alarms.acknowledge(alarm.id, by="op:ana")
    assert seen_by_others == ["raised", "acknowledged"]
