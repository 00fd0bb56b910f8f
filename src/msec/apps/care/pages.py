"""Connected Care's portal: the live board of alarms for operators, and caregivers' view.

``/care`` lists the active alarms first (raised before acknowledged, newest first) and each
home's latest activity from the engine's state (last motion, bed, door, devices reporting),
each home linking to its person's page (:mod:`msec.apps.care.portal`). Operators and admins
acknowledge and resolve alarms there with a note (``POST /care/alarms/{id}/acknowledge|
resolve``). A caregiver sees the same board for the homes whose person granted them access,
and cannot handle alarms. The board refreshes itself by server-sent events (``/care/live``)
when an alarm changes after the version the page was rendered with.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, Final

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from msec.access.model import Verb
from msec.apps.care.alarms import Alarm, AlarmStateError, SqlAlarms
from msec.apps.care.api import alarm_target
from msec.apps.care.engine import CareEngine
from msec.apps.care.model import AlarmKind
from msec.web.live import sse_event
from msec.web.ui import Viewer, ViewerDep, WebUi

__all__ = ["CARE_ROLES", "CARE_STAFF", "add_care_pages", "homes_seen", "kind_labels"]

#: Who sees the board (caregivers: only the homes that granted them access).
CARE_ROLES: Final = frozenset({"operator", "admin", "caregiver"})
#: Who handles alarms and manages people, devices and alerts (caregivers only look).
CARE_STAFF: Final = frozenset({"operator", "admin"})
_REFRESH_S: Final = 1.0
#: The most homes the board lists (those with alarms first).
BOARD_HOMES: Final = 200


def add_care_pages(app: FastAPI, ui: WebUi, alarms: SqlAlarms, engine: CareEngine) -> None:
    def may(request: Request, viewer: Viewer, home: str, verb: Verb) -> bool:
        source = request.client.host if request.client else ""
        return ui.access.authorize(viewer.principal, verb, *alarm_target(home), source=source,
                                   record=False, personal=True).allowed  # fmt: skip

    def board(request: Request, viewer: Viewer) -> dict[str, Any]:
        active = alarms.active()
        seen = homes_seen(engine)
        # What the access decisions need, for every home on the board, in one batch.
        ui.access.prefetch(alarm_target(h)[0] for h in {*seen, *(a.home for a in active)})
        active = [a for a in active if may(request, viewer, a.home, Verb.GET)]
        per_home = Counter(a.home for a in active)
        now = time.time()
        visible = [h for h in seen if may(request, viewer, h, Verb.GET)]
        # Homes with alarms first; a provider with thousands of homes finds the others under
        # People (/care/homes), so the board stays quick to draw and to refresh.
        visible.sort(key=lambda h: (-per_home[h], h))
        homes = []
        for home in visible[:BOARD_HOMES]:
            state = engine.homes[home]
            seen = state.last_seen
            homes.append({
                "home": home,
                "last_motion": state.last_motion,
                "in_bed": state.bed_occupied,
                "last_door": state.last_door_open,
                "reporting": sum(1 for t in seen.values() if now - t < 1800),
                "devices": len(seen),
                "alarms": per_home[home],
            })  # fmt: skip
        return {"active": active, "homes": homes, "more_homes": len(visible) - len(homes),
                "handles": viewer.has_role(*CARE_STAFF), "labels": kind_labels(viewer, engine)}

    @app.get("/care", response_class=HTMLResponse, include_in_schema=False)
    def care_board(request: Request, viewer: ViewerDep) -> Response:
        ui.require(request, viewer, CARE_ROLES)
        count, newest = alarms.version()  # read first: a change while rendering is sent
        return ui.render(request, viewer, "care/board.html", title=viewer.t("care.title"),
                         since=f"{count}-{newest}", **board(request, viewer))  # fmt: skip

    @app.get("/care/live", include_in_schema=False)
    async def care_live(request: Request, viewer: ViewerDep, since: str = "") -> Response:
        """The board again whenever an alarm changes after ``since`` (the alarms' version
        the page was rendered with; none: at once)."""
        ui.require(request, viewer, CARE_ROLES)

        async def stream() -> AsyncIterator[str]:
            last = _version(since)
            yield "retry: 2000\n\n"
            quiet = 0.0
            while not await request.is_disconnected():
                current = await asyncio.to_thread(alarms.version)
                if current != last:
                    last = current
                    data = await asyncio.to_thread(board, request, viewer)
                    yield sse_event("board", ui.fragment("care/_board.html", viewer, **data))
                    quiet = 0.0
                elif quiet >= 15:
                    yield ": keep-alive\n\n"
                    quiet = 0.0
                await asyncio.sleep(_REFRESH_S)
                quiet += _REFRESH_S

        response = StreamingResponse(stream(), media_type="text/event-stream")
        response.headers["X-Accel-Buffering"] = "no"
        return ui.finish(request, viewer, response)

    async def handle(request: Request, viewer: Viewer, alarm_id: str, action: str) -> Response:
        form = await ui.form(request, viewer)
        # The database work in the thread pool: a write waiting for the lock must not stall
        # the event loop (and every other page and poll with it).
        return await run_in_threadpool(change, request, viewer, alarm_id, action, form)

    def change(request: Request, viewer: Viewer, alarm_id: str, action: str, form: Any) -> Response:
        ui.require(request, viewer, CARE_STAFF)
        alarm = alarms.get(int(alarm_id)) if alarm_id.isdigit() and len(alarm_id) < 18 else None
        if alarm is None or not may(request, viewer, alarm.home, Verb.GET):
            raise HTTPException(404, viewer.t("care.no_alarm"))
        if not may(request, viewer, alarm.home, Verb.SET):
            raise HTTPException(403, viewer.t("error.forbidden"))
        note = str(form.get("note") or "").strip() or None
        try:
            done: Alarm
            if action == "acknowledge":
                done = alarms.acknowledge(alarm.id, by=viewer.principal.id, note=note)
            else:
                done = alarms.resolve(alarm.id, by=viewer.principal.id, note=note,
                                      false_positive=form.get("false_positive") == "yes")
        except (AlarmStateError, ValueError):
            return ui.redirect(request, viewer, "/care?error=1")
        return ui.redirect(request, viewer, f"/care#alarm-{done.id}")

    @app.post("/care/alarms/{alarm_id}/acknowledge", include_in_schema=False)
    async def acknowledge(request: Request, alarm_id: str, viewer: ViewerDep) -> Response:
        return await handle(request, viewer, alarm_id, "acknowledge")

    @app.post("/care/alarms/{alarm_id}/resolve", include_in_schema=False)
    async def resolve(request: Request, alarm_id: str, viewer: ViewerDep) -> Response:
        return await handle(request, viewer, alarm_id, "resolve")


def _version(text: str) -> tuple[int, int] | None:
    count, _, newest = text.partition("-")
    if count.isdigit() and newest.isdigit() and len(text) < 40:
        return int(count), int(newest)
    return None


def homes_seen(engine: CareEngine) -> list[str]:
    """The homes the engine has heard of, sorted (read while its thread may add one)."""
    for _ in range(5):
        try:
            return sorted(engine.homes_seen())
        except RuntimeError:  # the dict grew during the copy: read again
            continue
    return []


def kind_labels(viewer: Viewer, engine: CareEngine) -> dict[str, str]:
    """Every alarm kind's name for people: the built-in ones translated, the custom rules'
    labels from the alert definitions."""
    labels = {k.value: viewer.t(f"alarm.{k.value}") for k in AlarmKind}
    for rule in engine.rules:
        labels.setdefault(rule.kind, rule.label)
    return labels
