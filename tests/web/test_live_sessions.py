"""The live feed (what changed, to whom) and web sessions (expiry, CSRF tokens)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from msec.core.models import ResourceValue
from msec.twin import make_engine
from msec.web.live import LiveFeed, TooManyStreams, sse_event, sse_stream
from msec.web.sessions import CsrfTokens, LoginEmails, SqlSessions, normalise_email

T = TypeVar("T")


def run_alone(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(main())`` in a thread of its own: the browser tests' Playwright keeps an
    event loop running in the main thread for the whole session."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(main())).result(timeout=60)


def _value(provider: str, value: float, seq: int) -> ResourceValue:
    return ResourceValue(provider, "environment", "co2", value, 1000.0 + seq, "ppm", seq)


def test_feed_reports_only_changes_after_the_baseline() -> None:
    snapshot = [_value("a", 400.0, 1), _value("b", 410.0, 1)]
    feed = LiveFeed(lambda: list(snapshot))
    seen: list[list[ResourceValue]] = []
    feed.listen(seen.append)
    assert len(feed.poll()) == 2 and seen == []  # the first poll is the baseline
    assert feed.poll() == [] and seen == []
    snapshot[1] = _value("b", 900.0, 2)
    assert [v.value for v in feed.poll()] == [900.0]
    assert [[v.provider for v in batch] for batch in seen] == [["b"]]


def test_stream_delivers_batches_to_a_subscriber() -> None:
    snapshot = [_value("a", 400.0, 1)]
    feed = LiveFeed(lambda: list(snapshot), interval=0.05)

    async def render(batch: list[ResourceValue]) -> list[str]:
        return [sse_event("co2", f"<b>{v.value}</b>\nline 2") for v in batch]

    async def run() -> list[str]:
        out: list[str] = []
        stream = sse_stream(feed, render)
        out.append(await stream.__anext__())  # retry: hint
        snapshot[0] = _value("a", 777.0, 2)
        out.append(await asyncio.wait_for(stream.__anext__(), 5))
        await stream.aclose()
        return out

    try:
        events = run_alone(run)
    finally:
        feed.stop()
    assert events[0].startswith("retry:")
    assert events[1] == "event: co2\ndata: <b>777.0</b>\ndata: line 2\n\n"
    assert feed.subscribers == 0


def test_sessions_end_at_logout_idle_and_max_age(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    sessions = SqlSessions(engine, max_s=1000, idle_s=100)
    sessions.create_schema()
    token, _ = sessions.create("user:ana", at=0)
    assert sessions.get(token, at=70) is not None  # a request: last seen at 70
    assert sessions.get(token, at=160) is not None  # 90 s idle, and seen again
    assert sessions.get(token, at=261) is None  # 101 s idle: ended
    token, _ = sessions.create("user:ana", at=0)
    for t in range(40, 1000, 40):
        assert sessions.get(token, at=t) is not None
    assert sessions.get(token, at=1001) is None  # max age
    token, _ = sessions.create("user:ana", at=0)
    assert sessions.delete_for("user:ana") == 1 and sessions.get(token, at=1) is None
    assert sessions.get("forged", at=1) is None and sessions.get("x" * 500) is None
    # Only a hash of the cookie is stored.
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT token_hash FROM web_sessions").scalars().all()
    assert token not in stored


def test_csrf_tokens_bind_to_their_session() -> None:
    tokens = CsrfTokens(b"k" * 32)
    assert tokens.check("s1", tokens.token("s1"))
    assert not tokens.check("s2", tokens.token("s1"))
    assert not tokens.check("", tokens.token(""))
    assert not tokens.check("s1", None) and not tokens.check("s1", 5)
    assert not CsrfTokens(b"j" * 32).check("s1", tokens.token("s1"))


def test_login_emails_are_kept_as_keyed_hashes(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/e.db")
    emails = LoginEmails(engine, b"k" * 32)
    emails.create_schema()
    assert emails.add("ana@example.org", "citizen-1")
    assert not emails.add("ana@example.org", "citizen-2")
    assert emails.user_of("ana@example.org") == "citizen-1"
    assert LoginEmails(engine, b"j" * 32).user_of("ana@example.org") is None
    assert emails.remove_user("citizen-1") and emails.user_of("ana@example.org") is None
    assert normalise_email(" Ana@Example.ORG ") == "ana@example.org"
    for bad in ("ana", "ana@", "@x.org", "a b@x.org", "a@x", "<a>@x.org", "a@b@c.org"):
        assert normalise_email(bad) is None, bad


def test_feed_caps_open_streams_per_address_and_in_all() -> None:
    feed = LiveFeed(lambda: [], max_streams=3, max_per_source=2)

    async def run() -> None:
        a1, a2 = feed.subscribe("10.0.0.1"), feed.subscribe("10.0.0.1")
        with pytest.raises(TooManyStreams):
            feed.subscribe("10.0.0.1")
        b1 = feed.subscribe("10.0.0.2")
        with pytest.raises(TooManyStreams):
            feed.subscribe("10.0.0.3")  # 3 in all
        feed.unsubscribe(a1)
        feed.unsubscribe(a1)  # twice: counted once
        a3 = feed.subscribe("10.0.0.1")
        for sub in (a2, a3, b1):
            feed.unsubscribe(sub)
        assert feed.subscribers == 0

    try:
        run_alone(run)
    finally:
        feed.stop()
