"""Connected Care's API: alarms for programs (bearer tokens), decided by the access layer.

A home's alarms are decided as the resource ``<home>-gw/care/alarms`` (the home's gateway):
reading them is ``GET`` (operators of the tenant own every resource; a caregiver needs a
consent grant from the person), handling them (acknowledge, resolve, notes) is ``SET``.
Alarms of homes a caller may not read are left out of lists and answered 404 one by one.
"""


from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from msec.access.model import Principal, Verb
from msec.apps.care.alarms import Alarm, AlarmStateError, SqlAlarms, UnknownAlarm
from msec.apps.care.model import device_name
from msec.web.bodies import read_json_object

__all__ = ["add_care_api", "alarm_target"]

_MAX_BODY = 8192
_PREFIX = "/api/v1/care"


def alarm_target(home: str) -> tuple[str, str, str]:
    """The access-layer resource standing for a home's alarms."""
    return device_name(home, "gw"), "care", "alarms"


def add_care_api(app: FastAPI, alarms: SqlAlarms) -> None:
    caller: Callable[..., Principal] = app.state.api_caller
    allow: Callable[..., None] = app.state.api_allow
    access = app.state.access
    Caller = Annotated[Principal, Depends(caller)]

    def may(request: Request, who: Principal, home: str, verb: Verb) -> bool:
        source = request.client.host if request.client else ""
        return access.authorize(who, verb, *alarm_target(home), source=source, record=False,
                                personal=True).allowed  # fmt: skip

    def one(request: Request, who: Principal, alarm_id: str, verb: Verb) -> Alarm:
        if not alarm_id.isdigit() or len(alarm_id) > 18:
            raise HTTPException(404, "no such alarm")
        try:
            alarm = alarms.get(int(alarm_id))
        except UnknownAlarm:
            alarm = None
        if alarm is None or not may(request, who, alarm.home, Verb.GET):
            raise HTTPException(404, "no such alarm")
        if verb is not Verb.GET:
            allow(request, who, verb, *alarm_target(alarm.home))
        return alarm

    @app.get(_PREFIX + "/alarms", tags=["care"])
    def list_alarms(
        request: Request,
        who: Caller,
        home: Annotated[str | None, Query(max_length=64)] = None,
        state: Annotated[str, Query(pattern="^(active|all)$")] = "active",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Alarms the caller may see: active ones (raised first, newest first) or the history."""
        found = alarms.active(home) if state == "active" else alarms.history(home, limit=limit)
        access.prefetch(alarm_target(h)[0] for h in {a.home for a in found})  # one batch
        return [a.as_dict() for a in found if may(request, who, a.home, Verb.GET)][:limit]

    @app.get(_PREFIX + "/alarms/counts", tags=["care"], include_in_schema=True)
    def counts(request: Request, who: Caller) -> dict[str, Any]:
        """Alarms by state and kind (operators, for the board)."""
        allow(request, who, Verb.GET, "_platform", "care", "counts")
        return {state: {str(k): n for k, n in kinds.items()}
                for state, kinds in alarms.counts().items()}  # fmt: skip

    @app.get(_PREFIX + "/alarms/{alarm_id}", tags=["care"])
    def get_alarm(request: Request, alarm_id: str, who: Caller) -> dict[str, Any]:
        """One alarm with its whole lifecycle (raised, escalated, acknowledged, notes...)."""
        alarm = one(request, who, alarm_id, Verb.GET)
        data = alarm.as_dict()
        data["events"] = [
            {"event": e.event, "at": e.at, "by": e.by, "level": e.level}
            for e in alarms.events(alarm.id)
        ]
        return data

    async def body(request: Request) -> dict[str, Any]:
        data = await read_json_object(request, _MAX_BODY, empty={})
        note = data.get("note")
        if note is not None and not isinstance(note, str):
            raise HTTPException(400, "note is text")
        return data

    # The handlers below read their body on the event loop and do their database work in
    # the thread pool: a write waiting for the database's lock must not stall every other
    # request of the process (the operators' board polling the alarms among them).
    def change(action: Callable[[], Alarm]) -> dict[str, Any]:
        try:
            return action().as_dict()
        except AlarmStateError as exc:
            raise HTTPException(409, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.post(_PREFIX + "/alarms/{alarm_id}/acknowledge", tags=["care"])
    async def acknowledge(request: Request, alarm_id: str, who: Caller) -> dict[str, Any]:
        """Raised -> acknowledged (``{"note": "..."}`` optional); 409 from another state."""
        alarm = await run_in_threadpool(one, request, who, alarm_id, Verb.SET)
        data = await body(request)
        return await run_in_threadpool(
            change, lambda: alarms.acknowledge(alarm.id, by=who.id, note=data.get("note"))
        )

    @app.post(_PREFIX + "/alarms/{alarm_id}/resolve", tags=["care"])
    async def resolve(request: Request, alarm_id: str, who: Caller) -> dict[str, Any]:
        """-> resolved (``{"note": "...", "false_positive": true}`` optional)."""
        alarm = await run_in_threadpool(one, request, who, alarm_id, Verb.SET)
        data = await body(request)
        false_positive = data.get("false_positive", False)
        if not isinstance(false_positive, bool):
            raise HTTPException(400, "false_positive is true or false")
        return await run_in_threadpool(
            change, lambda: alarms.resolve(alarm.id, by=who.id, note=data.get("note"),
                                           false_positive=false_positive)
        )  # fmt: skip

    @app.post(_PREFIX + "/alarms/{alarm_id}/notes", tags=["care"], status_code=201)
    async def note(request: Request, alarm_id: str, who: Caller) -> dict[str, Any]:
        """Add an operator's note (``{"note": "..."}``)."""
        alarm = await run_in_threadpool(one, request, who, alarm_id, Verb.SET)
        data = await body(request)
        text = data.get("note")
        if not text:
            raise HTTPException(400, "note is required")
        return await run_in_threadpool(
            change, lambda: alarms.add_note(alarm.id, by=who.id, text=text)
        )
