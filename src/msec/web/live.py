"""Live values for open pages: one poller per process, server-sent events to every page.

Readings are stored by the ingest workers (other processes), so the web process learns of
them from the database: :class:`LiveFeed` reads every resource's latest value once per
``interval`` (one indexed query over ``twin_resources``, whatever the number of open pages),
and hands what changed to its listeners (threshold checks, in the poller's thread) and to
every subscribed page (an asyncio queue per page). A page then receives a value within
``interval`` plus the time to render it of the reading's commit.

:func:`sse_stream` turns a subscription into ``text/event-stream``; a comment line every
15 s keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from msec.core.models import ResourceValue

__all__ = ["LiveFeed", "Subscription", "TooManyStreams", "sse_event", "sse_stream"]

log = logging.getLogger(__name__)

Key = tuple[str, str, str]
Listener = Callable[[list[ResourceValue]], None]
#: How many change batches a slow page may fall behind before it is resynchronised.
_QUEUE: Final = 64
HEARTBEAT_S: Final = 15.0


@dataclass(eq=False)
class Subscription:
    """One open page's stream of change batches (``None``: the feed stopped)."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[list[ResourceValue] | None] = field(
        default_factory=lambda: asyncio.Queue(_QUEUE)
    )
    #: Set when batches were dropped: the page should reload everything it shows.
    behind: bool = False
    #: The client address holding it (for the per-address cap).
    source: str = ""


class TooManyStreams(Exception):
    """A new live stream would pass the feed's caps (answered 429)."""


class LiveFeed:
    """Polls ``snapshot`` every ``interval`` seconds in a daemon thread once started."""

    def __init__(
        self,
        snapshot: Callable[[], Sequence[ResourceValue]],
        *,
        interval: float = 0.5,
        max_streams: int = 2000,
        max_per_source: int = 20,
    ) -> None:
        self._snapshot = snapshot
        self.interval = interval
        self.max_streams = max_streams
        self.max_per_source = max_per_source
        self._per_source: dict[str, int] = {}
        self._seen: dict[Key, tuple[float | None, int | None]] = {}
        self.values: dict[Key, ResourceValue] = {}
        self._listeners: list[Listener] = []
        self._subscriptions: set[Subscription] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.polls = 0

    def listen(self, listener: Listener) -> None:
        """Call ``listener(changes)`` in the poller's thread after every poll with changes."""
        self._listeners.append(listener)

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self.poll()  # the first snapshot is the baseline, not a change
            self._thread = threading.Thread(target=self._run, name="live-feed", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(5)
        with self._lock:
            subscriptions = list(self._subscriptions)
        for sub in subscriptions:
            self._deliver(sub, None)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # the database may be away for a moment: keep polling
                log.exception("live feed: polling the twin failed")

    def poll(self) -> list[ResourceValue]:
        """Read the snapshot, publish and return what changed since the last poll."""
        changes: list[ResourceValue] = []
        first = self.polls == 0
        for value in self._snapshot():
            key = (value.provider, value.service, value.resource)
            mark = (value.timestamp, value.seq)
            if self._seen.get(key) != mark:
                self._seen[key] = mark
                self.values[key] = value
                changes.append(value)
        self.polls += 1
        if changes and not first:
            for listener in self._listeners:
                try:
                    listener(changes)
                except Exception:
                    log.exception("live feed: a listener failed")
            with self._lock:
                subscriptions = list(self._subscriptions)
            for sub in subscriptions:
                self._deliver(sub, changes)
        return changes

    @staticmethod
    def _deliver(sub: Subscription, batch: list[ResourceValue] | None) -> None:
        def put() -> None:
            try:
                sub.queue.put_nowait(batch)
            except asyncio.QueueFull:
                sub.behind = True

        with contextlib.suppress(RuntimeError):  # the page's loop is closed: it went away
            sub.loop.call_soon_threadsafe(put)

    def subscribe(self, source: str = "") -> Subscription:
        """A subscription for the running event loop (call from async code).

        Raises :class:`TooManyStreams` past ``max_streams`` open streams in all, or
        ``max_per_source`` from one client address: an open stream costs the server a little
        for as long as it is open, so nobody may hold thousands."""
        self.start()
        with self._lock:
            if len(self._subscriptions) >= self.max_streams:
                raise TooManyStreams("too many live streams are open")
            if source and self._per_source.get(source, 0) >= self.max_per_source:
                raise TooManyStreams(f"too many live streams from {source}")
            sub = Subscription(asyncio.get_running_loop(), source=source)
            self._subscriptions.add(sub)
            if source:
                self._per_source[source] = self._per_source.get(source, 0) + 1
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscriptions:
                self._subscriptions.discard(sub)
                if sub.source:
                    left = self._per_source.get(sub.source, 1) - 1
                    if left > 0:
                        self._per_source[sub.source] = left
                    else:
                        self._per_source.pop(sub.source, None)

    @property
    def running(self) -> bool:
        """Whether the poller runs (``values`` is then at most ``interval`` old)."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stop.is_set()

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)


def sse_event(event: str, data: str, *, id: str | None = None) -> str:
    """One server-sent event; ``data`` may span lines."""
    lines = [f"event: {event}"]
    if id is not None:
        lines.append(f"id: {id}")
    lines += [f"data: {line}" for line in data.splitlines() or [""]]
    return "\n".join(lines) + "\n\n"


async def sse_stream(
    feed: LiveFeed,
    render: Callable[[list[ResourceValue]], Awaitable[list[str]]],
    *,
    initial: list[str] | None = None,
    is_disconnected: Callable[[], Awaitable[bool]] | None = None,
    sub: Subscription | None = None,
) -> AsyncIterator[str]:
    """Events for one page: ``initial`` first, then ``render(changes)`` for each batch
    (on ``sub``, taken with :meth:`LiveFeed.subscribe` beforehand to refuse early, or a new
    subscription)."""
    sub = sub if sub is not None else feed.subscribe()
    try:
        yield "retry: 2000\n\n"
        for event in initial or []:
            yield event
        while True:
            try:
                batch = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_S)
            except TimeoutError:
                if is_disconnected is not None and await is_disconnected():
                    return
                yield ": keep-alive\n\n"
                continue
            if batch is None:
                return
            if sub.behind:  # dropped batches: send everything known instead
                sub.behind = False
                batch = list(feed.values.values())
            for event in await render(batch):
                yield event
    finally:
        feed.unsubscribe(sub)
