"""The municipality's board of the park (``/dashboard/park``; operator, officer and admin).

Areas side by side, time-series charts with zoom, thresholds per measurement and area that
raise notices (live), device health, CSV export, and the pilot's KPIs.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterator

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from msec.apps.park_guide.guide import ParkGuide
from msec.apps.park_guide.park import MEASUREMENTS
from msec.apps.park_guide.store import InvalidThreshold
from msec.core.models import ResourceValue
from msec.web.live import LiveFeed, sse_event
from msec.web.proof_pages import proof_path
from msec.web.ui import StaffRoles, Viewer, ViewerDep, WebUi

__all__ = ["add_dashboard"]

_ORDER = ("co2", "noise", "crowd")
#: Longest period a chart or an export covers.
_MAX_HOURS = 24 * 31
_MAX_POINTS = 10_000


def add_dashboard(app: FastAPI, ui: WebUi, guide: ParkGuide, feed: LiveFeed) -> None:
    park = guide.park

    def staff(request: Request, viewer: Viewer) -> None:
        ui.require(request, viewer, StaffRoles)

    def areas(viewer: Viewer) -> str:
        rows = []
        for stop in park.stops:
            values = guide.values(stop)
            rows.append({"stop": stop, "values": values,
                         "proofs": {m: proof_path(v.provider, v.seq) for m, v in values.items()}})
        return ui.fragment("park/_areas.html", viewer, rows=rows, order=_ORDER)

    def notices(viewer: Viewer) -> str:
        return ui.fragment("park/_notices.html", viewer, notices=guide.store.notices(limit=50),
                           park=park)  # fmt: skip

    @app.get("/dashboard/park", response_class=HTMLResponse, include_in_schema=False)
    def dashboard(request: Request, viewer: ViewerDep) -> Response:
        staff(request, viewer)
        return ui.render(
            request, viewer, "park/dashboard.html", title=viewer.t("dash.title"),
            kpis=guide.kpis(), areas_html=areas(viewer), notices_html=notices(viewer),
            thresholds=guide.store.thresholds(), health=guide.device_health(),
            scores=guide.trust_scores(), ratings=guide.store.ratings(limit=10),
            order=_ORDER, park=park, error=request.query_params.get("error", "")[:40],
            now=time.time(),
        )  # fmt: skip

    @app.get("/dashboard/park/live", include_in_schema=False)
    async def live(request: Request, viewer: ViewerDep) -> Response:
        staff(request, viewer)
        devices = set(park.devices())

        async def render(batch: list[ResourceValue]) -> list[str]:
            if not any(v.provider in devices for v in batch):
                return []
            a = await run_in_threadpool(areas, viewer)
            n = await run_in_threadpool(notices, viewer)
            return [sse_event("areas", a), sse_event("notices", n)]

        return ui.live(request, viewer, feed, render)

    @app.get("/dashboard/park/series.json", include_in_schema=False)
    def series(request: Request, viewer: ViewerDep, measurement: str = "co2",
               hours: str = "24") -> Response:  # fmt: skip
        staff(request, viewer)
        if measurement not in MEASUREMENTS:
            raise HTTPException(400, f"measurement is one of {', '.join(MEASUREMENTS)}")
        body = {"label": viewer.t(f"m.{measurement}")} | guide.series(
            measurement, _hours(hours), viewer.lang
        )
        return ui.finish(request, viewer, JSONResponse(body))

    @app.post("/dashboard/park/thresholds", include_in_schema=False)
    async def add_threshold(request: Request, viewer: ViewerDep) -> Response:
        form = await ui.form(request, viewer)
        staff(request, viewer)
        area = str(form.get("area") or "")
        source = request.client.host if request.client else ""
        if area != "*" and area not in {s.area for s in park.stops}:
            ui.events.warn("malformed", f"threshold for unknown area {area[:40]!r}", source=source)
            return ui.redirect(request, viewer, "/dashboard/park?error=threshold")
        try:
            value = float(str(form.get("value") or "nan"))
            await run_in_threadpool(
                guide.store.add_threshold, area, str(form.get("measurement") or ""),
                str(form.get("op") or ">"), value, by=viewer.principal.id,  # type: ignore[arg-type]
            )  # fmt: skip
        except (ValueError, InvalidThreshold) as exc:
            ui.events.warn("malformed", f"threshold refused: {str(exc)[:120]}", source=source)
            return ui.redirect(request, viewer, "/dashboard/park?error=threshold")
        await run_in_threadpool(guide.check_now, feed)
        return ui.redirect(request, viewer, "/dashboard/park#thresholds")

    @app.post("/dashboard/park/thresholds/{threshold_id}/remove", include_in_schema=False)
    async def remove_threshold(request: Request, threshold_id: str, viewer: ViewerDep) -> Response:
        await ui.form(request, viewer)
        staff(request, viewer)
        if threshold_id.isdigit() and len(threshold_id) < 12:
            await run_in_threadpool(guide.store.remove_threshold, int(threshold_id))
        return ui.redirect(request, viewer, "/dashboard/park#thresholds")

    @app.post("/dashboard/park/notices/{notice_id}/ack", include_in_schema=False)
    async def acknowledge(request: Request, notice_id: str, viewer: ViewerDep) -> Response:
        await ui.form(request, viewer)
        staff(request, viewer)
        if notice_id.isdigit() and len(notice_id) < 12:
            await run_in_threadpool(guide.store.acknowledge, int(notice_id),
                                    by=viewer.principal.id)  # fmt: skip
        return ui.redirect(request, viewer, "/dashboard/park#notices")

    @app.get("/dashboard/park/export.csv", include_in_schema=False)
    def export(request: Request, viewer: ViewerDep, hours: str = "24") -> Response:
        staff(request, viewer)
        since = time.time() - _hours(hours) * 3600
        response = StreamingResponse(_csv(guide, since), media_type="text/csv; charset=utf-8")
        stamp = time.strftime("%Y%m%d-%H%M", time.gmtime())
        response.headers["Content-Disposition"] = f'attachment; filename="park-{stamp}.csv"'
        return ui.finish(request, viewer, response)


def _hours(text: str) -> float:
    try:
        hours = float(text)
    except ValueError:
        raise HTTPException(400, "hours is a number") from None
    if not math.isfinite(hours) or not 0 < hours <= _MAX_HOURS:
        raise HTTPException(400, f"hours is in (0, {_MAX_HOURS}]")
    return hours


def _cell(text: str) -> str:
    """Text as a spreadsheet shows it, never as a formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv(guide: ParkGuide, since: float) -> Iterator[str]:
    """Every reading of the park's measurements since ``since``, oldest first per device."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["time_utc", "stop", "area", "device", "measurement", "value", "unit",
                     "seq", "proof"])  # fmt: skip
    yield buffer.getvalue()
    for stop in guide.park.stops:
        for device in stop.devices:
            for measurement, (service, resource, unit) in MEASUREMENTS.items():
                values = guide.platform.twin.history(device, service, resource, since=since,
                                                     limit=100_000)  # fmt: skip
                if not values:
                    continue
                buffer.seek(0)
                buffer.truncate()
                for v in values:
                    writer.writerow([
                        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(v.timestamp or 0)),
                        stop.number, _cell(stop.area), _cell(device), measurement, v.value,
                        unit, v.seq, proof_path(device, v.seq),
                    ])  # fmt: skip
                yield buffer.getvalue()
