"""SqlParkStore on SQLite (a temporary file) and on PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from msec.apps.park_guide import store as store_module
from msec.apps.park_guide.store import (
    FLAGS,
    RATING_POINTS,
    VISIT_POINTS,
    InvalidRating,
    InvalidThreshold,
    LeaderboardEntry,
    Observation,
    SqlParkStore,
    UnknownParticipant,
)

T0 = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC
DAY = 86_400.0
DAY_START = T0 - T0 % DAY


@pytest.fixture
def store(engine: Engine) -> SqlParkStore:
    store = SqlParkStore(engine)
    store.create_schema()
    store.create_schema()  # idempotent
    return store


def rate(store: SqlParkStore, user: str, stars: int, *, seq: int = 1, **kw) -> object:
    provider = kw.pop("provider", "llamas-03")
    return store.rate(user, provider, "environment", "co2", seq, stars, at=kw.pop("at", T0), **kw)


def joined(store: SqlParkStore, *users: str) -> None:
    for user in users:
        store.join(user, at=T0)


# -- participants ------------------------------------------------------------------------------


def test_join_gives_a_friendly_pseudonym_and_is_idempotent(store: SqlParkStore) -> None:
    first = store.join("user:ana", language="es", at=T0)
    assert first.user_id == "user:ana"
    assert first.language == "es"
    assert first.joined == T0
    assert re.fullmatch(r"[A-Z][a-z]+-\d{4}", first.pseudonym)
    assert first.pseudonym.split("-")[0] in store_module._PSEUDONYM_NAMES
    again = store.join("user:ana", language="ja", at=T0 + 100)
    assert again == first
    assert store.participant("user:ana") == first
    assert store.participant("user:nobody") is None
    assert store.participant_count() == 1


def test_pseudonyms_are_unique(store: SqlParkStore) -> None:
    pseudonyms = {store.join(f"user:{i}", at=T0).pseudonym for i in range(60)}
    assert len(pseudonyms) == 60
    assert store.participant_count() == 60


def test_a_taken_pseudonym_is_drawn_again(
    store: SqlParkStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    draws = iter([7, 7, 8])
    monkeypatch.setattr(store_module.secrets, "choice", lambda names: "Heron")
    monkeypatch.setattr(store_module.secrets, "randbelow", lambda n: next(draws))
    assert store.join("user:a").pseudonym == "Heron-0007"
    assert store.join("user:b").pseudonym == "Heron-0008"


def test_join_refuses_bad_input(store: SqlParkStore) -> None:
    with pytest.raises(ValueError, match="language"):
        store.join("user:a", language="fr")
    with pytest.raises(ValueError, match="user id"):
        store.join("")
    with pytest.raises(ValueError, match="user id"):
        store.join("u" * 201)
    assert store.participant_count() == 0


def test_set_language(store: SqlParkStore) -> None:
    store.join("user:a", at=T0)
    store.set_language("user:a", "ja")
    assert store.participant("user:a").language == "ja"
    with pytest.raises(ValueError, match="unknown language"):
        store.set_language("user:a", "xx")
    assert store.participant("user:a").language == "ja"
    with pytest.raises(UnknownParticipant):
        store.set_language("user:b", "es")


# -- visits and points -------------------------------------------------------------------------


def test_a_visit_earns_points_once_per_stop_per_utc_day(store: SqlParkStore) -> None:
    store.join("user:a", at=T0)
    assert store.record_visit("user:a", 1, at=T0) == VISIT_POINTS == 10
    assert store.record_visit("user:a", 1, at=T0 + 60) == 0
    assert store.record_visit("user:a", 2, at=T0 + 120) == 10
    assert store.record_visit("user:a", 1, at=DAY_START + DAY - 0.001) == 0
    assert store.record_visit("user:a", 1, at=DAY_START + DAY) == 10
    assert store.points_of("user:a") == 30


def test_a_visit_needs_a_participant_and_a_stop_number(store: SqlParkStore) -> None:
    with pytest.raises(UnknownParticipant) as caught:
        store.record_visit("user:ghost", 1, at=T0)
    assert isinstance(caught.value, KeyError)
    store.join("user:a", at=T0)
    for bad in (0, -1, True, "1", 1.0):
        with pytest.raises(ValueError, match="stop must be an integer"):
            store.record_visit("user:a", bad, at=T0)  # type: ignore[arg-type]
    assert store.points_of("user:a") == 0
    assert store.points_of("user:ghost") == 0


def test_concurrent_visits_earn_points_once(store: SqlParkStore) -> None:
    store.join("user:a", at=T0)
    with ThreadPoolExecutor(max_workers=8) as pool:
        awarded = list(pool.map(lambda i: store.record_visit("user:a", 3, at=T0 + i), range(24)))
    assert sorted(awarded) == [0] * 23 + [10]
    assert store.points_of("user:a") == 10


# -- ratings -----------------------------------------------------------------------------------


def test_a_rating_earns_points_once_and_can_be_replaced(store: SqlParkStore) -> None:
    store.join("user:a", at=T0)
    first = store.rate(
        "user:a", "llamas-03", "environment", "co2", 42, 2, ["too_high"], " smells of exhaust ",
        at=T0,
    )  # fmt: skip
    assert first.points_awarded == RATING_POINTS == 5
    assert (first.user_id, first.provider, first.service, first.resource, first.seq) == (
        "user:a",
        "llamas-03",
        "environment",
        "co2",
        42,
    )
    assert (first.stars, first.flags, first.comment, first.created) == (
        2,
        ("too_high",),
        "smells of exhaust",
        T0,
    )
    second = store.rate(
        "user:a", "llamas-03", "environment", "co2", 42, 4, ["stale", "seems_wrong"], at=T0 + 10
    )
    assert second.id == first.id
    assert second.points_awarded == 0
    assert second.created == T0
    assert second.flags == ("seems_wrong", "stale")  # FLAGS order
    assert store.points_of("user:a") == 5
    [stored] = store.ratings()
    assert (stored.stars, stored.flags, stored.comment) == (4, ("seems_wrong", "stale"), "")
    assert store.rating_count() == 1
    # Another reading (or resource) of the same device is another rating.
    rate(store, "user:a", 3, seq=43)
    store.rate("user:a", "llamas-03", "environment", "noise", 42, 3, at=T0)
    assert store.points_of("user:a") == 15
    assert store.rating_count() == 3


def test_flags_and_comments_are_cleaned(store: SqlParkStore) -> None:
    store.join("user:a", at=T0)
    r = rate(store, "user:a", 1, flags=["stale", "stale", "too_low"], comment="a\r\nb\tc\rd\n")
    assert r.flags == ("stale", "too_low")
    assert r.comment == "a\nb\tc\nd"
    long = rate(store, "user:a", 1, seq=2, comment="  " + "x" * 500 + "\n ")
    assert long.comment == "x" * 500
    assert store.ratings()[0].comment == "x" * 500
    every = rate(store, "user:a", 1, seq=3, flags=reversed(FLAGS))
    assert every.flags == FLAGS


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stars": 0}, "stars must be a whole number from 1 to 5"),
        ({"stars": 6}, "stars"),
        ({"stars": True}, "stars"),
        ({"stars": 3.0}, "stars"),
        ({"stars": "3"}, "stars"),
        ({"flags": ["bogus"]}, "unknown flag 'bogus'"),
        ({"flags": [1]}, "unknown flag 1"),
        ({"flags": "stale"}, "not one string"),
        ({"flags": ["stale"] * 6}, "at most 5 flags"),
        ({"comment": "x" * 501}, "longer than 500"),
        ({"comment": "hi\x00"}, "control characters"),
        ({"comment": "\x1b[31mred"}, "control characters"),
        ({"comment": "a\x85b"}, "control characters"),
        ({"comment": "\ud800"}, "control characters"),
        ({"comment": None}, "must be text"),
        ({"provider": ""}, "provider must be 1 to 64"),
        ({"provider": "p" * 65}, "provider must be 1 to 64"),
        ({"provider": "llamas\n03"}, "provider contains control"),
        ({"service": ""}, "service must be"),
        ({"resource": "r" * 65}, "resource must be"),
        ({"resource": 5}, "resource must be"),
        ({"seq": -1}, "sequence number"),
        ({"seq": True}, "sequence number"),
        ({"seq": 1.5}, "sequence number"),
        ({"seq": 2**63}, "sequence number"),
    ],
)
def test_a_bad_rating_is_refused_and_nothing_stored(
    store: SqlParkStore, kwargs: dict, message: str
) -> None:
    store.join("user:a", at=T0)
    args = {
        "provider": "llamas-03",
        "service": "environment",
        "resource": "co2",
        "seq": 1,
        "stars": 3,
        **kwargs,
    }
    with pytest.raises(InvalidRating, match=message) as caught:
        store.rate("user:a", at=T0, **args)
    assert isinstance(caught.value, ValueError)
    assert store.rating_count() == 0
    assert store.points_of("user:a") == 0


def test_a_rating_needs_a_participant(store: SqlParkStore) -> None:
    with pytest.raises(UnknownParticipant):
        rate(store, "user:ghost", 3)
    assert store.rating_count() == 0


def test_ratings_newest_first_by_provider(store: SqlParkStore) -> None:
    joined(store, "user:a")
    rate(store, "user:a", 1, seq=1, at=T0)
    rate(store, "user:a", 2, seq=2, at=T0 + 2)
    rate(store, "user:a", 3, seq=3, at=T0 + 1, provider="llamas-05")
    assert [r.stars for r in store.ratings()] == [2, 3, 1]
    assert [r.stars for r in store.ratings(provider="llamas-03")] == [2, 1]
    assert [r.stars for r in store.ratings(limit=1)] == [2]
    assert store.ratings(provider="llamas-99") == []


# -- trust scores ------------------------------------------------------------------------------


def test_an_unrated_device_scores_the_prior(store: SqlParkStore) -> None:
    score = store.trust_score("llamas-01", at=T0)
    assert (score.provider, score.score, score.ratings, score.mean_stars) == (
        "llamas-01",
        75.0,
        0,
        None,
    )
    assert score.flags == dict.fromkeys(FLAGS, 0)
    assert store.trust_scores(at=T0) == {}


def test_trust_score_is_a_bayesian_average_with_a_flag_penalty(store: SqlParkStore) -> None:
    users = [f"user:{i}" for i in range(5)]
    joined(store, *users)
    # Two 1-star ratings: mean = (4*5 + 2) / 7 = 3.142857 -> (mean - 1) / 4 = 53.57 %.
    rate(store, users[0], 1, provider="llamas-01")
    rate(store, users[1], 1, provider="llamas-01")
    assert store.trust_score("llamas-01", at=T0).score == 53.6
    # 5, 4, 3, 2, 1 stars: mean = (20 + 15) / 10 = 3.5 -> 62.5; two of five say the device
    # is wrong (either flag, not "stale"): 62.5 * (1 - 0.5 * 2/5) = 50.0.
    for user, stars in zip(users, (5, 4, 3, 2, 1), strict=True):
        rate(store, user, stars)
    assert store.trust_score("llamas-03", at=T0).score == 62.5
    rate(store, users[0], 5, flags=["seems_wrong", "too_high"])
    rate(store, users[1], 4, flags=["sensor_damaged"])
    rate(store, users[2], 3, flags=["stale"])
    score = store.trust_score("llamas-03", at=T0)
    assert score.score == 50.0
    assert score.ratings == 5
    assert score.mean_stars == 3.0
    assert score.flags == {
        "seems_wrong": 1,
        "stale": 1,
        "too_high": 1,
        "too_low": 0,
        "sensor_damaged": 1,
    }
    assert store.trust_scores(at=T0) == {
        "llamas-01": store.trust_score("llamas-01", at=T0),
        "llamas-03": score,
    }


def test_both_distrust_flags_on_one_rating_count_once(store: SqlParkStore) -> None:
    joined(store, "user:a")
    rate(store, "user:a", 2, flags=["seems_wrong", "sensor_damaged"])
    # mean = 22 / 6 -> 66.67; the one rating is flagged: * 0.5 = 33.3.
    assert store.trust_score("llamas-03", at=T0).score == 33.3


def test_only_ratings_in_the_window_count(store: SqlParkStore) -> None:
    joined(store, "user:a", "user:b")
    rate(store, "user:a", 1, at=T0)
    rate(store, "user:b", 1, seq=2, at=T0 + 10 * DAY)
    # Both (mean 22/7): 53.6; only the later one (mean 21/6): 62.5; none: the prior.
    assert store.trust_score("llamas-03", at=T0 + 10 * DAY).score == 53.6
    assert store.trust_score("llamas-03", at=T0 + 30 * DAY + 1).score == 62.5
    assert store.trust_score("llamas-03", at=T0 + 40 * DAY + 1).score == 75.0
    assert store.trust_score("llamas-03", at=T0 + DAY, window_s=2 * DAY).ratings == 1
    # A rating "from the future" of ``at`` does not count yet.
    assert store.trust_score("llamas-03", at=T0 - 1).ratings == 0
    assert store.trust_scores(at=T0 + 40 * DAY + 1) == {}


rating_steps = st.lists(
    st.tuples(
        st.integers(0, 3),  # user
        st.integers(0, 3),  # reading
        st.integers(1, 5),  # stars
        st.lists(st.sampled_from(FLAGS), max_size=5),
    ),
    max_size=25,
)
_examples = itertools.count()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=rating_steps)
def test_any_ratings_keep_the_score_in_range_and_as_documented(
    store: SqlParkStore, steps: list[tuple[int, int, int, list[str]]]
) -> None:
    provider = f"dev-{next(_examples)}"  # the store outlives examples: a device each
    users = [f"user:{provider}:{i}" for i in range(4)]
    joined(store, *users)
    last: dict[tuple[int, int], tuple[int, list[str]]] = {}
    for user, reading, stars, flags in steps:
        rate(store, users[user], stars, seq=reading, flags=flags, provider=provider)
        last[user, reading] = (stars, flags)
        score = store.trust_score(provider, at=T0).score
        assert 0.0 <= score <= 100.0
    n = len(last)
    total = sum(stars for stars, _ in last.values())
    wrong = sum(bool({"seems_wrong", "sensor_damaged"} & set(f)) for _, f in last.values())
    mean = (4.0 * 5 + total) / (5 + n)
    expected = (mean - 1) / 4 * 100 * (1 - 0.5 * wrong / n if n else 1)
    assert store.trust_score(provider, at=T0).score == pytest.approx(expected, abs=0.0501)


# -- leaderboard -------------------------------------------------------------------------------


def test_leaderboard_ranks_ties_alike_and_hides_user_ids(store: SqlParkStore) -> None:
    joined(store, "user:a", "user:b", "user:c", "user:d", "user:e")
    for user, stops in (("user:a", 3), ("user:b", 2), ("user:c", 2), ("user:d", 1)):
        for number in range(1, stops + 1):
            store.record_visit(user, number, at=T0)
    pseudonym = {u: store.participant(u).pseudonym for u in ("user:a", "user:b", "user:c")}
    board = store.leaderboard()
    assert [(e.rank, e.points) for e in board] == [(1, 30), (2, 20), (2, 20), (4, 10)]
    assert board[0].pseudonym == pseudonym["user:a"]
    assert {board[1].pseudonym, board[2].pseudonym} == {pseudonym["user:b"], pseudonym["user:c"]}
    assert board[1].pseudonym < board[2].pseudonym
    assert store.participant("user:e").pseudonym not in {e.pseudonym for e in board}
    assert [f.name for f in dataclasses.fields(LeaderboardEntry)] == ["rank", "pseudonym", "points"]
    assert "user:" not in repr(board)
    assert [e.rank for e in store.leaderboard(limit=2)] == [1, 2]


def test_leaderboard_is_empty_without_points(store: SqlParkStore) -> None:
    joined(store, "user:a")
    assert store.leaderboard() == []


# -- leaving -----------------------------------------------------------------------------------


def test_leave_forgets_the_participant_but_keeps_anonymous_stars(store: SqlParkStore) -> None:
    joined(store, "user:a", "user:b")
    store.record_visit("user:a", 1, at=T0)
    rate(store, "user:a", 1, flags=["sensor_damaged"], comment="broken, I think")
    rate(store, "user:b", 4, comment="fine")
    pseudonym = store.participant("user:a").pseudonym
    before = store.trust_score("llamas-03", at=T0)
    assert pseudonym in {e.pseudonym for e in store.leaderboard()}

    assert store.leave("user:a") is True
    assert store.participant("user:a") is None
    assert store.points_of("user:a") == 0
    assert pseudonym not in {e.pseudonym for e in store.leaderboard()}
    assert store.participant_count() == 1
    assert store.active_participants(T0) == 1
    theirs, others = sorted(store.ratings(), key=lambda r: r.stars)
    assert (theirs.user_id, theirs.comment, theirs.stars, theirs.flags) == (
        None,
        "",
        1,
        ("sensor_damaged",),
    )
    assert (others.user_id, others.comment) == ("user:b", "fine")
    assert store.trust_score("llamas-03", at=T0) == before
    assert store.rating_count() == 2
    assert store.leave("user:a") is False
    with pytest.raises(UnknownParticipant):
        rate(store, "user:a", 5)


def test_after_leaving_one_starts_afresh(store: SqlParkStore) -> None:
    joined(store, "user:a")
    store.record_visit("user:a", 1, at=T0)
    rate(store, "user:a", 1)
    store.leave("user:a")
    again = store.join("user:a", at=T0 + 1)
    assert again.joined == T0 + 1
    assert store.points_of("user:a") == 0
    assert store.record_visit("user:a", 1, at=T0 + 2) == 10
    assert rate(store, "user:a", 5).points_awarded == 5
    assert store.rating_count() == 2


def test_leave_of_a_stranger_changes_nothing(store: SqlParkStore) -> None:
    joined(store, "user:a")
    rate(store, "user:a", 3, comment="ok")
    assert store.leave("user:b") is False
    assert store.ratings()[0].user_id == "user:a"
    assert store.ratings()[0].comment == "ok"


# -- thresholds and notices --------------------------------------------------------------------


def obs(value: float, *, provider: str = "llamas-03", area: str = "lake", m: str = "noise"):
    return Observation(
        provider, area, m, value, T0, seq=0 if math.isnan(value) else int(value * 10)
    )


def test_thresholds_are_kept_and_removed(store: SqlParkStore) -> None:
    loud = store.add_threshold("lake", "noise", ">", 65, by="user:op", at=T0)
    stuffy = store.add_threshold("*", "co2", ">", 1000.5, by="user:op", at=T0 + 1)
    assert (loud.area, loud.measurement, loud.op, loud.value, loud.created_by, loud.created) == (
        "lake",
        "noise",
        ">",
        65.0,
        "user:op",
        T0,
    )
    assert store.thresholds() == [loud, stuffy]
    assert store.remove_threshold(loud.id) is True
    assert store.remove_threshold(loud.id) is False
    assert store.thresholds() == [stuffy]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Lake", "noise", ">", 65), "area must be"),
        (("the-lake", "noise", ">", 65), "area must be"),
        (("", "noise", ">", 65), "area must be"),
        (("lake", "temperature", ">", 65), "unknown measurement"),
        (("lake", "noise", ">=", 65), "op must be"),
        (("lake", "noise", ">", math.nan), "finite number"),
        (("lake", "noise", ">", math.inf), "finite number"),
        (("lake", "noise", ">", "65"), "finite number"),
        (("lake", "noise", ">", True), "finite number"),
    ],
)
def test_a_bad_threshold_is_refused(store: SqlParkStore, args: tuple, message: str) -> None:
    with pytest.raises(InvalidThreshold, match=message):
        store.add_threshold(*args, by="user:op")
    with pytest.raises(InvalidThreshold, match="by"):
        store.add_threshold("lake", "noise", ">", 65, by="")
    assert store.thresholds() == []


def test_a_notice_is_raised_once_cleared_and_raised_again(store: SqlParkStore) -> None:
    loud = store.add_threshold("lake", "noise", ">", 65, by="user:op", at=T0)
    assert store.evaluate([obs(65.0)], at=T0) == []  # at the limit is not beyond it
    [notice] = store.evaluate([obs(70.5)], at=T0 + 1)
    assert (notice.threshold_id, notice.area, notice.provider, notice.measurement) == (
        loud.id,
        "lake",
        "llamas-03",
        "noise",
    )
    assert (notice.op, notice.limit, notice.value, notice.seq, notice.raised_at) == (
        ">",
        65.0,
        70.5,
        705,
        T0 + 1,
    )
    assert (notice.cleared_at, notice.acknowledged_by, notice.acknowledged_at) == (None,) * 3
    assert store.evaluate([obs(71.0), obs(90.0)], at=T0 + 2) == []
    assert store.notices(open_only=True) == [notice]

    assert store.evaluate([obs(60.0)], at=T0 + 3) == []
    assert store.notices(open_only=True) == []
    [cleared] = store.notices()
    assert cleared == dataclasses.replace(notice, cleared_at=T0 + 3)

    [again] = store.evaluate([obs(72.0)], at=T0 + 4)
    assert again.id != notice.id
    assert [n.id for n in store.notices()] == [again.id, notice.id]
    assert [n.id for n in store.notices(open_only=True)] == [again.id]
    assert [n.id for n in store.notices(limit=1)] == [again.id]


def test_a_batch_is_evaluated_in_order(store: SqlParkStore) -> None:
    store.add_threshold("lake", "noise", ">", 65, by="user:op", at=T0)
    raised = store.evaluate([obs(70.0), obs(50.0), obs(80.0)], at=T0)
    assert [n.value for n in raised] == [70.0, 80.0]
    assert [(n.value, n.cleared_at) for n in store.notices()] == [(80.0, None), (70.0, T0)]


def test_notices_match_area_measurement_and_device(store: SqlParkStore) -> None:
    store.add_threshold("lake", "noise", ">", 65, by="user:op", at=T0)
    quiet = store.add_threshold("palacio", "crowd", "<", 5, by="user:op", at=T0)
    assert store.evaluate([obs(70, area="palacio"), obs(70, m="co2")], at=T0) == []
    assert store.evaluate([obs(math.nan)], at=T0) == []
    raised = store.evaluate(
        [obs(70), obs(75, provider="llamas-04"), obs(2, area="palacio", m="crowd")], at=T0
    )
    assert [(n.provider, n.measurement) for n in raised] == [
        ("llamas-03", "noise"),
        ("llamas-04", "noise"),
        ("llamas-03", "crowd"),
    ]
    assert raised[2].threshold_id == quiet.id
    assert raised[2].op == "<"
    # A NaN neither raises nor clears.
    assert store.evaluate([obs(math.nan)], at=T0 + 1) == []
    assert len(store.notices(open_only=True)) == 3


def test_an_everywhere_threshold_names_the_area_it_fired_in(store: SqlParkStore) -> None:
    stuffy = store.add_threshold("*", "co2", ">", 1000, by="user:op", at=T0)
    raised = store.evaluate(
        [
            obs(1200, area="lake", m="co2"),
            obs(1100, provider="llamas-07", area="los_castros", m="co2"),
        ],
        at=T0,
    )
    assert [(n.threshold_id, n.area, n.provider) for n in raised] == [
        (stuffy.id, "lake", "llamas-03"),
        (stuffy.id, "los_castros", "llamas-07"),
    ]
    assert all(n.area != "*" for n in store.notices())


def test_removing_a_threshold_clears_its_notices(store: SqlParkStore) -> None:
    loud = store.add_threshold("lake", "noise", ">", 65, by="user:op", at=T0)
    other = store.add_threshold("*", "noise", ">", 80, by="user:op", at=T0)
    store.evaluate([obs(90)], at=T0)
    assert len(store.notices(open_only=True)) == 2
    assert store.remove_threshold(loud.id, at=T0 + 5)
    [still_open] = store.notices(open_only=True)
    assert still_open.threshold_id == other.id
    assert [n.cleared_at for n in store.notices() if n.threshold_id == loud.id] == [T0 + 5]
    assert store.evaluate([obs(90)], at=T0 + 6) == []  # the removed one fires no more


def test_acknowledge(store: SqlParkStore) -> None:
    store.add_threshold("lake", "noise", ">", 65, by="user:op", at=T0)
    [notice] = store.evaluate([obs(70)], at=T0)
    assert store.acknowledge(notice.id, by="user:op", at=T0 + 30) is True
    assert store.acknowledge(notice.id, by="user:other", at=T0 + 40) is False
    [seen] = store.notices()
    assert (seen.acknowledged_by, seen.acknowledged_at) == ("user:op", T0 + 30)
    assert seen.cleared_at is None  # acknowledged is not cleared
    assert store.acknowledge(notice.id + 100, by="user:op") is False
    with pytest.raises(ValueError, match="by"):
        store.acknowledge(notice.id, by="")


# -- KPIs --------------------------------------------------------------------------------------


def test_kpis(store: SqlParkStore) -> None:
    joined(store, "user:a", "user:b", "user:c", "user:d")
    store.record_visit("user:a", 1, at=T0)
    store.record_visit("user:a", 1, at=T0 + 500)  # no points, still activity
    rate(store, "user:a", 4, at=T0 + 100)
    rate(store, "user:b", 4, at=T0 + 200)
    rate(store, "user:c", 4, at=T0 - 1000)
    assert store.participant_count() == 4
    assert store.active_participants(T0 - 2000) == 3
    assert store.active_participants(T0) == 2
    assert store.active_participants(T0 + 150) == 2  # a's second visit, b's rating
    assert store.active_participants(T0 + 300) == 1
    assert store.active_participants(T0 + 600) == 0
    rate(store, "user:c", 2, at=T0 + 700)  # re-rating is activity too, not a new rating
    assert store.active_participants(T0 + 600) == 1
    assert store.rating_count() == 3
    assert store.rating_count(since=T0) == 2
    assert store.rating_count(since=T0 + 150) == 1
