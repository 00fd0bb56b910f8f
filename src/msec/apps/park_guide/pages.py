"""The citizens' pages of the Park Guide.

``/park`` (the plan and its heat map), ``/park/stops/{n}`` (what a stop's QR code opens:
live values with a plain verdict, rating), ``/park/qr`` (the printable QR sheet),
``/park/register`` (informed consent, then e-mail and password), ``/park/account``
(points, consent, data download, withdrawal, deletion) and ``/park/leaderboard``.
"""

from __future__ import annotations

import json
from typing import Any

import segno
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from msec.access.model import Verb
from msec.apps.park_guide.guide import CITIZEN_ROLE, ParkGuide, RegistrationError, ShownValue
from msec.apps.park_guide.park import MEASUREMENTS, Stop
from msec.apps.park_guide.store import FLAGS, InvalidRating, UnknownParticipant
from msec.core.models import ResourceValue
from msec.web.live import LiveFeed, sse_event
from msec.web.proof_pages import proof_path
from msec.web.ui import Viewer, ViewerDep, WebUi

__all__ = ["add_park_pages"]

_ORDER = ("co2", "noise", "crowd")
_RANK = {"good": 0, "moderate": 1, "poor": 2}


def add_park_pages(app: FastAPI, ui: WebUi, guide: ParkGuide, feed: LiveFeed) -> None:
    park = guide.park

    def stop_or_404(viewer: Viewer, number: str) -> Stop:
        stop = park.stop(int(number)) if number.isdigit() and len(number) < 6 else None
        if stop is None:
            raise HTTPException(404, viewer.t("park.no_stop"))
        return stop

    def readable(request: Request, viewer: Viewer, stop: Stop) -> tuple[str, ...]:
        """The stop's devices the viewer may read. The guide makes them public
        (``ParkGuide.setup``); an operator who removes that policy closes them here too."""
        source = request.client.host if request.client else ""
        return tuple(
            d for d in stop.devices
            if ui.access.authorize(viewer.principal, Verb.GET, d, source=source,
                                   record=False).allowed
        )  # fmt: skip

    def citizen(viewer: Viewer) -> bool:
        return viewer.has_role(CITIZEN_ROLE)

    def value_card(viewer: Viewer, measurement: str, shown: ShownValue | None) -> str:
        return ui.fragment(
            "park/_value.html", viewer, m=measurement, v=shown,
            proof=proof_path(shown.provider, shown.seq) if shown else "",
        )  # fmt: skip

    # -- the plan -------------------------------------------------------------------------------

    @app.get("/park", response_class=HTMLResponse, include_in_schema=False)
    def plan(request: Request, viewer: ViewerDep) -> Response:
        stops = []
        for stop in park.stops:
            values = guide.values(stop, readable(request, viewer, stop))
            worst = max((v.verdict for v in values.values()), key=_RANK.get, default=None)
            stops.append({"stop": stop, "verdict": worst, "values": values})
        return ui.render(request, viewer, "park/plan.html", title=park.name, stops=stops,
                         order=_ORDER)  # fmt: skip

    @app.get("/park/plan.json", include_in_schema=False)
    def plan_json(request: Request, viewer: ViewerDep) -> Response:
        (south, west), (north, east) = park.bounds()
        areas, heat, stops = [], [], []
        for stop in park.stops:
            values = guide.values(stop, readable(request, viewer, stop))
            worst = max((v.verdict for v in values.values()), key=_RANK.get, default=None)
            name = stop.text("name", viewer.lang)
            areas.append({"stop": stop.number, "name": name, "verdict": worst,
                          "polygon": [list(p) for p in park.area_polygon(stop)]})  # fmt: skip
            stops.append({"number": stop.number, "name": name, "latitude": stop.latitude,
                          "longitude": stop.longitude, "url": f"/park/stops/{stop.number}"})
            crowd = values.get("crowd")
            if crowd is not None:
                heat.append([stop.latitude, stop.longitude,
                             round(min(1.0, crowd.value / stop.capacity), 3)])  # fmt: skip
        body = {"bounds": [[south, west], [north, east]], "areas": areas, "stops": stops,
                "heat": heat}  # fmt: skip
        return ui.finish(request, viewer, JSONResponse(body))

    # -- a stop ---------------------------------------------------------------------------------

    @app.get("/park/stops/{number}", response_class=HTMLResponse, include_in_schema=False)
    def stop_page(request: Request, number: str, viewer: ViewerDep) -> Response:
        stop = stop_or_404(viewer, number)
        values = guide.values(stop, readable(request, viewer, stop))
        earned = 0
        consented = citizen(viewer) and guide.consented(viewer.principal)
        if consented:
            try:
                earned = guide.store.record_visit(viewer.principal.id, stop.number)
            except UnknownParticipant:
                guide.store.join(viewer.principal.id, language=viewer.lang)
                earned = guide.store.record_visit(viewer.principal.id, stop.number)
        cards = {m: value_card(viewer, m, values.get(m)) for m in _ORDER}
        scores = {d: guide.trust(d) for d in stop.devices}
        return ui.render(
            request, viewer, "park/stop.html", title=stop.text("name", viewer.lang),
            stop=stop, cards=cards, order=_ORDER, earned=earned, citizen=citizen(viewer),
            consented=consented, flags=FLAGS, scores=scores,
            rated=request.query_params.get("rated") == "1",
            error=request.query_params.get("error", "")[:40],
            values=values, stops=park.stops,
        )  # fmt: skip

    @app.get("/park/stops/{number}/live", include_in_schema=False)
    async def stop_live(request: Request, number: str, viewer: ViewerDep) -> Response:
        stop = stop_or_404(viewer, number)
        allowed = readable(request, viewer, stop)
        devices = set(allowed)

        async def render(batch: list[ResourceValue]) -> list[str]:
            if not any(v.provider in devices for v in batch):
                return []
            values = await run_in_threadpool(guide.values, stop, allowed)
            events = []
            for m in _ORDER:
                changed = any(
                    v.provider in devices and (v.service, v.resource) == MEASUREMENTS[m][:2]
                    for v in batch
                )
                if changed:
                    events.append(sse_event(m, value_card(viewer, m, values.get(m))))
            return events

        return ui.live(request, viewer, feed, render)

    @app.post("/park/stops/{number}/rate", include_in_schema=False)
    async def rate(request: Request, number: str, viewer: ViewerDep) -> Response:
        form = await ui.form(request, viewer)
        stop = stop_or_404(viewer, number)
        ui.require(request, viewer, {CITIZEN_ROLE})
        back = f"/park/stops/{stop.number}"
        if not guide.consented(viewer.principal):
            return ui.redirect(request, viewer, f"{back}?error=consent")
        measurement = str(form.get("measurement") or "")
        source = request.client.host if request.client else ""
        if measurement not in MEASUREMENTS:
            ui.events.warn("malformed", f"rating of unknown measurement {measurement[:40]!r}",
                           source=source)  # fmt: skip
            raise HTTPException(400, viewer.t("rate.error.invalid"))
        shown = (await run_in_threadpool(guide.values, stop)).get(measurement)
        if shown is None or shown.seq is None:
            return ui.redirect(request, viewer, f"{back}?error=nodata")
        stars_text = str(form.get("stars") or "")
        try:
            stars = int(stars_text) if stars_text.isdigit() and len(stars_text) == 1 else 0
            await run_in_threadpool(
                guide.rate, viewer.principal.id, shown, stars,
                [str(f) for f in form.getlist("flags")], str(form.get("comment") or ""),
            )  # fmt: skip
        except InvalidRating as exc:
            # The form cannot produce these (stars 1-5, known flags, maxlength): a crafted
            # request, or a comment pasted past the limit.
            ui.events.warn("malformed", f"rating refused: {str(exc)[:120]}", source=source)
            return ui.redirect(request, viewer, f"{back}?error=invalid")
        except UnknownParticipant:
            guide.store.join(viewer.principal.id, language=viewer.lang)
            return ui.redirect(request, viewer, f"{back}?error=retry")
        return ui.redirect(request, viewer, f"{back}?rated=1")

    # -- the QR sheet ---------------------------------------------------------------------------

    @app.get("/park/qr", response_class=HTMLResponse, include_in_schema=False)
    def qr_sheet(request: Request, viewer: ViewerDep) -> Response:
        site = ui.site_url(request)
        cards = []
        for stop in park.stops:
            url = f"{site}/park/stops/{stop.number}"
            svg = segno.make(url, error="m").svg_inline(scale=4, border=2, title=url)
            cards.append({"stop": stop, "url": url, "svg": svg})
        return ui.render(request, viewer, "park/qr.html", title=viewer.t("qr.title"), cards=cards)

    # -- registration and account ---------------------------------------------------------------

    def notice_for(viewer: Viewer) -> Any:
        from msec.apps.park_guide.notice import NOTICE_PURPOSE

        return guide.platform.consent.latest_notice(NOTICE_PURPOSE, viewer.lang)

    @app.get("/park/register", response_class=HTMLResponse, include_in_schema=False)
    def register_page(request: Request, viewer: ViewerDep) -> Response:
        if viewer.logged_in:
            return ui.redirect(request, viewer, "/park/account")
        return ui.render(request, viewer, "park/register.html", title=viewer.t("register.title"),
                         notice=notice_for(viewer), error=None, email="",
                         next=_local(request.query_params.get("next")))  # fmt: skip

    @app.post("/park/register", response_class=HTMLResponse, include_in_schema=False)
    async def register(request: Request, viewer: ViewerDep) -> Response:
        form = await ui.form(request, viewer)
        source = request.client.host if request.client else ""
        email = str(form.get("email") or "")[:300]
        target = _local(str(form.get("next") or ""))
        if ui.access.throttle(viewer.principal, source):
            raise HTTPException(429, viewer.t("login.slow_down"))
        try:
            principal = await run_in_threadpool(
                guide.register, ui, email, str(form.get("password") or ""),
                str(form.get("repeat") or ""), form.get("consent") == "yes", viewer.lang,
            )  # fmt: skip
        except RegistrationError as exc:
            return ui.render(request, viewer, "park/register.html", status=400,
                             title=viewer.t("register.title"), notice=notice_for(viewer),
                             error=exc, email=email, next=target)  # fmt: skip
        response = ui.redirect(request, viewer, target or "/park/account?welcome=1")
        ui.start_session(request, response, principal.id)
        return response

    @app.get("/park/account", response_class=HTMLResponse, include_in_schema=False)
    def account(request: Request, viewer: ViewerDep) -> Response:
        ui.require(request, viewer, {CITIZEN_ROLE})
        me = viewer.principal.id
        participant = guide.store.participant(me)
        board = guide.store.leaderboard(limit=1000)
        mine = (
            next((e for e in board if participant and e.pseudonym == participant.pseudonym), None)
        )
        return ui.render(
            request, viewer, "park/account.html", title=viewer.t("account.title"),
            participant=participant, points=guide.store.points_of(me), rank=mine,
            consented=guide.consented(viewer.principal),
            ratings=[r for r in guide.store.ratings(limit=1000) if r.user_id == me][:20],
            welcome=request.query_params.get("welcome") == "1",
        )  # fmt: skip

    @app.post("/park/account/withdraw", include_in_schema=False)
    async def withdraw(request: Request, viewer: ViewerDep) -> Response:
        await ui.form(request, viewer)
        ui.require(request, viewer, {CITIZEN_ROLE})
        await run_in_threadpool(guide.withdraw, viewer.principal)
        return ui.redirect(request, viewer, "/park/account")

    @app.post("/park/account/consent", include_in_schema=False)
    async def consent_again(request: Request, viewer: ViewerDep) -> Response:
        form = await ui.form(request, viewer)
        ui.require(request, viewer, {CITIZEN_ROLE})
        if form.get("consent") == "yes":
            await run_in_threadpool(guide.accept_again, viewer.principal, viewer.lang)
        return ui.redirect(request, viewer, "/park/account")

    @app.post("/park/account/delete", include_in_schema=False)
    async def delete(request: Request, viewer: ViewerDep) -> Response:
        form = await ui.form(request, viewer)
        ui.require(request, viewer, {CITIZEN_ROLE})
        if form.get("confirm") != "yes":
            raise HTTPException(400, viewer.t("account.delete_confirm_missing"))
        await run_in_threadpool(guide.delete_account, ui, viewer.principal)
        response = ui.redirect(request, viewer, "/park?deleted=1")
        ui.end_session(request, response)
        return response

    @app.get("/park/account/export.json", include_in_schema=False)
    def export(request: Request, viewer: ViewerDep) -> Response:
        ui.require(request, viewer, {CITIZEN_ROLE})
        body = json.dumps(guide.export_account(viewer.principal), indent=2, ensure_ascii=False)
        response = Response(body, media_type="application/json")
        response.headers["Content-Disposition"] = 'attachment; filename="my-park-guide-data.json"'
        return ui.finish(request, viewer, response)

    @app.get("/park/leaderboard", response_class=HTMLResponse, include_in_schema=False)
    def leaderboard(request: Request, viewer: ViewerDep) -> Response:
        participant = guide.store.participant(viewer.principal.id) if citizen(viewer) else None
        return ui.render(
            request, viewer, "park/leaderboard.html", title=viewer.t("leaderboard.title"),
            board=guide.store.leaderboard(limit=20),
            me=participant.pseudonym if participant else None,
        )  # fmt: skip



def _local(target: str | None) -> str:
    from msec.web.ui import safe_next

    return safe_next(target, "")
