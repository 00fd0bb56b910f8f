"""``msec bench web``: page latency and throughput of the web UI, and how fast live values
reach an open page, with the demo's simulators running.

One run starts the platform exactly as ``msec demo`` does (:class:`Runtime` with the park
simulators, uvicorn in a thread of this process) in a temporary data directory, waits until
every park device has published a live value, creates the bench's accounts, then drives the
site from a separate process (``spawn``), so that the load generator does not share the
server's GIL:

* ``users`` virtual users, each with its own ``httpx.AsyncClient`` (cookies, keep-alive
  connection): 80 % citizens (every other one logged in, the rest anonymous) and 20 % officers
  (logged in; at least one when ``users`` > 1). Each user loops: pick a page view from its
  role's table (:data:`CITIZEN_VIEWS`, :data:`OFFICER_VIEWS`), fetch it as a browser would
  (the page, then what its script fetches: ``/park`` then ``/park/plan.json``,
  ``/dashboard/park`` then its three ``series.json`` charts at once; static files are cached
  by browsers and left out), then think. Think times are exponential with mean ``think_ms``,
  capped at ten times the mean (TPC-W's think-time rule): people read a page before they
  click, so ``users`` = 50 means fifty people browsing, not fifty closed-loop request loops.
  ``think_ms`` = 0 makes each user a closed loop: the saturation figure. Users start spread
  over one think time.
* ``live_pages`` anonymous stop pages keep their event stream (``/park/stops/{n}/live``) open.
  Each ``co2``/``noise``/``crowd`` event carries the card of the reading shown; its proof link
  names ``(provider, seq)``. ``live_*_ms`` is the receive time minus that reading's
  ``twin_readings.stored_at`` (the ingest worker's commit time, same host clock), the first
  time each stream shows it.

Nothing is measured during the first ``warmup_s`` (templates compile, connections open).
``requests`` counts the requests started in the next ``duration_s`` seconds; a latency is from
sending a request to its whole body read; ``errors`` are answers >= 400 and exceptions
(timeouts, refused connections), by kind in ``error_kinds``.

The server answers from one process, so its Python code runs one thread at a time (the GIL):
``server_cpu_cores`` (CPU time of the bench process in the window, every thread, divided by
the window) near 1.0 means it is saturated whatever the number of cores, and
``server_cpu_ms_per_request`` is the cost that sets the ceiling (about 1000 / it requests/s).
Both hold less noise than latencies on a shared machine. The load generator is part of the
machine's load (``loadgen_cpu_cores``), most of all with ``think_ms`` = 0; the ingest worker
and the broker are other processes, not counted.
"""

from __future__ import annotations

import asyncio
import html
import multiprocessing
import os
import random
import re
import secrets
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

# The load process imports this module too: the platform's modules are imported inside
# run_web_bench only, so that the load generator starts light.

__all__ = ["CITIZEN_VIEWS", "OFFICER_VIEWS", "PageView", "run_web_bench"]

TARGET_P95_MS: Final = 100.0
TARGET_LIVE_MS: Final = 2000.0
OFFICER_SHARE: Final = 0.2
#: A think time never exceeds this many times the mean (TPC-W caps at ten times as well).
THINK_CAP: Final = 10.0
_MEASUREMENTS: Final = ("co2", "noise", "crowd")
_PROOF_LINK = re.compile(r'href="/proof/reading/([^/"]+)/(\d+)"')
_CSRF_INPUT = re.compile(r'name="csrf" value="([^"]*)"')


# -- what users do ------------------------------------------------------------------------------


@dataclass
class _Tab:
    """What a user's browser remembers between page views."""

    stops: tuple[int, ...]
    #: Proof links seen on the last stop page (what a citizen can click next).
    proofs: list[str] = field(default_factory=list)


Request = tuple[str, str]  # (path template, path)


@dataclass(frozen=True, slots=True)
class PageView:
    """One thing a user does, with its share of that role's views. ``requests`` gives the
    page first, then what the page's script fetches (sent together once the page is in)."""

    name: str
    weight: float
    requests: Callable[[random.Random, _Tab], list[Request]]


def _series(m: str) -> Request:
    return ("/dashboard/park/series.json", f"/dashboard/park/series.json?measurement={m}&hours=24")


def _stop(rng: random.Random, tab: _Tab) -> list[Request]:
    return [("/park/stops/{n}", f"/park/stops/{rng.choice(tab.stops)}")]


def _proof(rng: random.Random, tab: _Tab) -> list[Request]:
    # A citizen reaches a proof from a stop page's badge; none seen yet: the stop page first.
    if not tab.proofs:
        return _stop(rng, tab)
    return [("/proof/reading/{device}/{seq}", rng.choice(tab.proofs))]


CITIZEN_VIEWS: Final = (
    PageView("plan", 0.25, lambda rng, tab: [("/park", "/park"),
                                             ("/park/plan.json", "/park/plan.json")]),
    PageView("stop", 0.45, _stop),
    PageView("leaderboard", 0.10, lambda rng, tab: [("/park/leaderboard", "/park/leaderboard")]),
    PageView("proof", 0.20, _proof),
)  # fmt: skip
OFFICER_VIEWS: Final = (
    PageView("dashboard", 0.6,
             lambda rng, tab: [("/dashboard/park", "/dashboard/park"),
                               *(_series(m) for m in _MEASUREMENTS)]),
    PageView("chart", 0.4, lambda rng, tab: [_series(rng.choice(_MEASUREMENTS))]),
)  # fmt: skip


# -- the load process ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _User:
    role: str  # "citizen" or "officer"
    name: str | None = None  # None: anonymous
    password: str | None = None


@dataclass(frozen=True)
class _LoadPlan:
    url: str
    users: tuple[_User, ...]
    stops: tuple[int, ...]
    warmup_s: float
    duration_s: float
    think_ms: float
    live_pages: int
    seed: int


@dataclass
class _LoadResult:
    #: (path template, latency ms, status code or exception name), requests started in the window
    samples: list[tuple[str, float, int | str]] = field(default_factory=list)
    #: (stream, provider, seq, receive epoch s), first showing per stream, in the window
    live: list[tuple[int, str, int, float]] = field(default_factory=list)
    #: The measured window, epoch seconds.
    window_epoch: tuple[float, float] = (0.0, 0.0)
    #: CPU seconds the load process itself used in the window.
    cpu_s: float = 0.0
    login_failures: list[str] = field(default_factory=list)
    stream_errors: list[str] = field(default_factory=list)


def _drive(plan: _LoadPlan) -> _LoadResult:
    """The load process's entry point."""
    return asyncio.run(_load(plan))


async def _load(plan: _LoadPlan) -> _LoadResult:
    result = _LoadResult()
    timeout = httpx.Timeout(30.0)
    # uvicorn closes a connection idle for 5 s; reusing one it is closing fails (ReadError)
    # where a browser would silently retry: drop idle connections before the server does.
    limits = httpx.Limits(keepalive_expiry=4.0)
    clients = [
        httpx.AsyncClient(base_url=plan.url, timeout=timeout, limits=limits, follow_redirects=False)
        for _ in plan.users
    ]
    try:
        logins = [
            _login(c, plan.url, u, result)
            for c, u in zip(clients, plan.users, strict=True)
            if u.name
        ]
        await asyncio.gather(*logins)
        loop_start = time.perf_counter()
        window = (loop_start + plan.warmup_s, loop_start + plan.warmup_s + plan.duration_s)
        now = time.time()
        result.window_epoch = (now + plan.warmup_s, now + plan.warmup_s + plan.duration_s)
        clock = asyncio.create_task(_own_cpu(window, result))
        rng = random.Random(plan.seed)
        users = [
            _browse(c, u, plan, window, random.Random(rng.random()), result)
            for c, u in zip(clients, plan.users, strict=True)
        ]
        streams = [asyncio.create_task(_watch(plan, k, result)) for k in range(plan.live_pages)]
        await asyncio.gather(*users)
        await clock
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
    return result


async def _login(client: httpx.AsyncClient, url: str, user: _User, result: _LoadResult) -> None:
    """The browser's login: the form (CSRF token, browser cookie), then POST with Origin."""
    try:
        page = await client.get("/login")
        found = _CSRF_INPUT.search(page.text)
        form = {
            "identifier": user.name or "",
            "password": user.password or "",
            "csrf": html.unescape(found.group(1)) if found else "",
        }
        answer = await client.post("/login", data=form, headers={"Origin": url})
        if answer.status_code != 303 or "msec_session" not in client.cookies:
            result.login_failures.append(f"{user.name}: {answer.status_code}")
    except httpx.HTTPError as exc:
        result.login_failures.append(f"{user.name}: {type(exc).__name__}")


async def _own_cpu(window: tuple[float, float], result: _LoadResult) -> None:
    await asyncio.sleep(max(0.0, window[0] - time.perf_counter()))
    start = time.process_time()
    await asyncio.sleep(max(0.0, window[1] - time.perf_counter()))
    result.cpu_s = time.process_time() - start


class _CpuClock:
    """Samples this process's CPU time (every thread: the server, the live feed, the
    simulators) in a thread, to tell how much of it a time window used."""

    def __init__(self, every_s: float = 0.1) -> None:
        self.samples: list[tuple[float, float]] = []
        self._every = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cpu-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.samples.append((time.time(), time.process_time()))
            if self._stop.wait(self._every):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def used(self, start: float, end: float) -> float:
        """CPU seconds used between epoch ``start`` and ``end`` (to the nearest samples)."""
        inside = [cpu for at, cpu in self.samples if start <= at <= end]
        return inside[-1] - inside[0] if len(inside) > 1 else 0.0


def _think(rng: random.Random, think_ms: float) -> float:
    if think_ms <= 0:
        return 0.0
    return min(rng.expovariate(1000.0 / think_ms), THINK_CAP * think_ms / 1000.0)


async def _browse(
    client: httpx.AsyncClient,
    user: _User,
    plan: _LoadPlan,
    window: tuple[float, float],
    rng: random.Random,
    result: _LoadResult,
) -> None:
    views = OFFICER_VIEWS if user.role == "officer" else CITIZEN_VIEWS
    weights = [v.weight for v in views]
    tab = _Tab(plan.stops)
    await asyncio.sleep(rng.uniform(0, plan.think_ms / 1000.0))
    while time.perf_counter() < window[1]:
        view = rng.choices(views, weights)[0]
        page, *fetches = view.requests(rng, tab)
        await _get(client, page, tab, window, result)
        if fetches:
            await asyncio.gather(*(_get(client, r, tab, window, result) for r in fetches))
        await asyncio.sleep(_think(rng, plan.think_ms))


async def _get(
    client: httpx.AsyncClient,
    request: Request,
    tab: _Tab,
    window: tuple[float, float],
    result: _LoadResult,
) -> None:
    template, path = request
    start = time.perf_counter()
    status: int | str
    try:
        response = await client.get(path)
        status = response.status_code
    except httpx.HTTPError as exc:
        response, status = None, type(exc).__name__
    elapsed_ms = (time.perf_counter() - start) * 1000.0
    if response is not None and template == "/park/stops/{n}":
        tab.proofs = [f"/proof/reading/{p}/{s}" for p, s in _PROOF_LINK.findall(response.text)]
    if window[0] <= start < window[1]:
        result.samples.append((template, elapsed_ms, status))


async def _watch(plan: _LoadPlan, stream: int, result: _LoadResult) -> None:
    """Keep stop page ``stream``'s live values open; note each reading it shows first."""
    number = plan.stops[stream % len(plan.stops)]
    seen: set[tuple[str, int]] = set()
    timeout = httpx.Timeout(30.0, read=None)  # an idle stream sends a comment every 15 s
    try:
        async with (
            httpx.AsyncClient(base_url=plan.url, timeout=timeout) as client,
            client.stream("GET", f"/park/stops/{number}/live") as response,
        ):
            event, data = "", []
            async for line in response.aiter_lines():
                if line:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)
                    continue
                received = time.time()
                if event in _MEASUREMENTS and received >= result.window_epoch[0]:
                    for provider, seq in _PROOF_LINK.findall("\n".join(data)):
                        if (provider, int(seq)) not in seen:
                            seen.add((provider, int(seq)))
                            result.live.append((stream, provider, int(seq), received))
                event, data = "", []
    except httpx.HTTPError as exc:
        result.stream_errors.append(f"stream {stream}: {type(exc).__name__}")


# -- the bench ----------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _accounts(platform: Any, tenant: str, users: int) -> tuple[_User, ...]:
    """Officers first (20 %, at least one of several users), then citizens, every other
    citizen with an account of their own and the rest anonymous."""
    officers = max(1, round(users * OFFICER_SHARE)) if users > 1 else 0
    out: list[_User] = []
    for i in range(users):
        role = "officer" if i < officers else "citizen"
        if role == "citizen" and (i - officers) % 2 == 0:
            out.append(_User(role))
            continue
        name, password = f"bench-{role}-{i:03d}", secrets.token_urlsafe(18)
        platform.principals.add_user(name, tenant=tenant, roles=[role], password=password)
        out.append(_User(role, name, password))
    return tuple(out)


def _figures(load: _LoadResult, stored_at: dict[tuple[str, int], float]) -> dict[str, Any]:
    latencies = [ms for _, ms, _ in load.samples]
    failed = Counter(
        f"{template} {status}"
        for template, _, status in load.samples
        if not isinstance(status, int) or status >= 400
    )
    by_page: dict[str, list[float]] = {}
    for template, ms, _ in load.samples:
        by_page.setdefault(template, []).append(ms)
    live = [
        (received - stored_at[(provider, seq)]) * 1000.0
        for _, provider, seq, received in load.live
        if (provider, seq) in stored_at
    ]
    return {
        "requests": len(latencies),
        "errors": sum(failed.values()),
        "p50_ms": _percentile(latencies, 0.50),
        "p95_ms": _percentile(latencies, 0.95),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": round(max(latencies), 1) if latencies else None,
        "pages": {
            t: {"count": len(v), "p95_ms": _percentile(v, 0.95)} for t, v in sorted(by_page.items())
        },
        "live_events": len(live),
        "live_p50_ms": _percentile(live, 0.50),
        "live_p95_ms": _percentile(live, 0.95),
        "live_max_ms": round(max(live), 1) if live else None,
        "error_kinds": dict(failed),
    }


def run_web_bench(
    *,
    users: int,
    duration_s: float,
    think_ms: float,
    live_pages: int = 5,
    warmup_s: float = 5.0,
    sim_interval_s: float | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Run the benchmark in a temporary directory; returns the figures as a dict.

    ``sim_interval_s`` overrides the demo's 10 s between two readings of a simulated device
    (tests use a short one so that live values arrive within a short run). Raises
    ``TimeoutError`` if the park devices never report, ``RuntimeError`` if a bench account
    cannot log in.
    """
    from msec.platform.demo import INTERVAL_S
    from msec.platform.runtime import Runtime
    from msec.platform.settings import Settings

    def say(text: str) -> None:
        if progress is not None:
            progress.print(text)

    with tempfile.TemporaryDirectory(prefix="msec-bench-web-") as tmp:
        settings = Settings.load(None, data_dir=Path(tmp) / "data", http={"port": 0})
        runtime = Runtime(settings, simulate=True, sim_interval_s=sim_interval_s)
        started = time.time()
        try:
            say("starting the demo platform…")
            runtime.start()
            runtime.wait_for_simulators(started, timeout=90.0)
            assert runtime.park_guide is not None
            stops = tuple(s.number for s in runtime.park_guide.park.stops)
            say(f"creating accounts for {users} users…")
            accounts = _accounts(runtime.platform, settings.tenant, users)
            plan = _LoadPlan(
                runtime.url, accounts, stops, warmup_s, duration_s, think_ms, live_pages,
                seed=int.from_bytes(os.urandom(4)),
            )  # fmt: skip
            load_before = os.getloadavg()[0]
            say(f"{users} users for {warmup_s:.0f} s of warm-up and {duration_s:.0f} s…")
            spawn = multiprocessing.get_context("spawn")
            clock = _CpuClock()
            try:
                with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                    load = pool.submit(_drive, plan).result()
            finally:
                clock.stop()
            server_cpu_s = clock.used(*load.window_epoch)
            load_after = os.getloadavg()[0]
            if load.login_failures:
                raise RuntimeError(f"bench accounts could not log in: {load.login_failures[:5]}")
            stored_at = runtime.platform.twin.stored_at({(p, s) for _, p, s, _ in load.live})
        finally:
            runtime.stop()
    figures = _figures(load, stored_at)
    p95, live_max = figures["p95_ms"], figures["live_max_ms"]
    requests = figures["requests"]
    return {
        "users": users,
        "citizens": sum(1 for u in accounts if u.role == "citizen"),
        "officers": sum(1 for u in accounts if u.role == "officer"),
        "logged_in": sum(1 for u in accounts if u.name),
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "think_ms": think_ms,
        "think": (
            f"exponential, mean {think_ms:g} ms, capped at {THINK_CAP:g}x"
            if think_ms > 0
            else "none (closed loop)"
        ),
        "requests_per_s": round(figures["requests"] / duration_s, 1),
        **figures,
        "live_pages": live_pages,
        "stream_errors": load.stream_errors,
        "sim_interval_s": sim_interval_s if sim_interval_s is not None else INTERVAL_S,
        "cpu_count": os.cpu_count(),
        "server_cpu_cores": round(server_cpu_s / duration_s, 2),
        "server_cpu_ms_per_request": round(server_cpu_s * 1000 / requests, 2) if requests else None,
        "loadgen_cpu_cores": round(load.cpu_s / duration_s, 2),
        "load_avg_1m_before": round(load_before, 2),
        "load_avg_1m_after": round(load_after, 2),
        "target_p95_ms": TARGET_P95_MS,
        "target_live_ms": TARGET_LIVE_MS,
        "p95_ok": p95 is not None and p95 < TARGET_P95_MS,
        "live_ok": live_max is not None and live_max < TARGET_LIVE_MS,
    }
