"""Connected Care's device management and alert configuration pages (operators, admins).

``/care/devices`` lists every care device of every home (filter ``?home=``): its home and
role, whether it reports (online, or silent since when), battery and signal where known, and
its open ``device_offline`` / ``low_battery`` alarms. ``/care/alerts`` shows the generic
settings (default, in force) and the custom rules of the alert definitions with what they
mean, and lets operators change the generic settings (stored in ``care_generic`` and given to
the engine at once).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from msec.apps.care.alarms import Alarm, SqlAlarms
from msec.apps.care.engine import CareEngine, HomeState
from msec.apps.care.model import DEVICE_ROLES, AlarmKind, CareSettings, device_name, split_device
from msec.apps.care.pages import CARE_STAFF, homes_seen, kind_labels
from msec.apps.care.people import CarePeople
from msec.apps.care.portal_forms import FormError, parse_settings, setting_fields, shown
from msec.web.ui import Viewer, ViewerDep, WebUi

if TYPE_CHECKING:
    from msec.platform.platform import Platform
    from msec.twin.base import ProviderInfo

__all__ = ["DeviceRow", "add_device_pages", "device_rows"]

_DEVICE_ALARMS: Final = (AlarmKind.DEVICE_OFFLINE.value, AlarmKind.LOW_BATTERY.value)


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One care device as the pages show it."""

    home: str
    role: str
    name: str
    kind: str
    registered: bool
    last_seen: float | None
    online: bool
    battery: float | None
    battery_low: bool
    rssi: float | None
    alarms: tuple[Alarm, ...]


def _offline_after(engine: CareEngine, home: str, role: str) -> float:
    profile = engine.profile(home)
    return float(profile.offline_s.get(role, profile.settings.offline_s))


def _health(state: HomeState | None, name: str, role: str,
            twin: dict[str, ProviderInfo]) -> tuple[float | None, float | None]:  # fmt: skip
    """Battery and RSSI of a device: the engine's view of the home if it keeps them, else the
    twin's (a home's readings are personal data, so usually not in the twin)."""
    info = twin.get(name)
    values = []
    for what in ("battery", "rssi"):
        kept = getattr(state, what, None) if state is not None else None
        value = kept.get(role) if isinstance(kept, dict) else None
        if value is None and info is not None:
            value = getattr(info, what)
        values.append(value)
    return values[0], values[1]


def device_rows(
    platform: Platform, engine: CareEngine, alarms: SqlAlarms, homes: Iterable[str] | None = None,
    *, registered_only: bool = False, now: float | None = None,
) -> list[DeviceRow]:  # fmt: skip
    """The care devices (of ``homes``, or all registered ones) with their connectivity."""
    now = time.time() if now is None else now
    records = {r.name: r for r in platform.registry.all() if split_device(r.name)}
    wanted = set(homes) if homes is not None else None
    twin = {p.name: p for p in platform.twin.providers() if split_device(p.name)}
    open_alarms: dict[tuple[str, str], list[Alarm]] = {}
    for alarm in alarms.active():
        if str(alarm.kind) in _DEVICE_ALARMS and (wanted is None or alarm.home in wanted):
            role = str(alarm.detail.get("device", ""))
            open_alarms.setdefault((alarm.home, role), []).append(alarm)
    rows = []
    for name, role, home in _names(records, wanted, registered_only):
        state = engine.homes.get(home)
        seen = state.last_seen.get(role) if state is not None else None
        record = records.get(name)
        battery, rssi = _health(state, name, role, twin)
        rows.append(DeviceRow(
            home, role, name, record.kind if record else DEVICE_ROLES[role][0],
            record is not None and not record.revoked, seen,
            seen is not None and now - seen < _offline_after(engine, home, role), battery,
            state is not None and role in state.battery_low_since, rssi,
            tuple(open_alarms.get((home, role), ())),
        ))  # fmt: skip
    return rows


def _names(records: dict[str, Any], wanted: set[str] | None,
           registered_only: bool) -> Iterator[tuple[str, str, str]]:  # fmt: skip
    """(device, role, home) of the devices to show, by home then role."""
    if wanted is None or registered_only:
        for name in sorted(records):
            parts = split_device(name)
            if parts is not None and (wanted is None or parts[0] in wanted):
                yield name, parts[1], parts[0]
        return
    for home in sorted(wanted):
        for role in DEVICE_ROLES:
            yield device_name(home, role), role, home


def add_device_pages(app: FastAPI, ui: WebUi, platform: Platform, alarms: SqlAlarms,
                     people: CarePeople) -> None:  # fmt: skip
    engine = people.engine
    fields = setting_fields()

    @app.get("/care/devices", response_class=HTMLResponse, include_in_schema=False)
    def devices(request: Request, viewer: ViewerDep, home: str = "") -> Response:
        ui.require(request, viewer, CARE_STAFF)
        home = home.strip()[:64]
        known = sorted(set(people.store.homes()) | set(homes_seen(engine)))  # for the datalist
        rows = device_rows(platform, engine, alarms, [home] if home else None,
                           registered_only=not home)  # fmt: skip
        return ui.render(request, viewer, "care/devices.html", title=viewer.t("care.devices.title"),
                         rows=rows, home=home, homes=known, now=time.time(),
                         labels=kind_labels(viewer, engine))  # fmt: skip

    def alerts_page(request: Request, viewer: Viewer, *, values: dict[str, str] | None = None,
                    error: FormError | None = None, status: int = 200) -> Response:  # fmt: skip
        stored = people.store.generic()
        if values is None:
            values = {f"s.{f.name}": shown(f.unit, stored.get(f.name)) for f in fields}
        defaults = CareSettings()
        rows = [{"field": f, "default": shown(f.unit, getattr(defaults, f.name)),
                 "base": shown(f.unit, getattr(people.base, f.name)),
                 "current": shown(f.unit, getattr(engine.settings, f.name))} for f in fields]
        types = getattr(getattr(engine, "definitions", None), "device_types", {}) or {}
        return ui.render(
            request, viewer, "care/alerts.html", status=status, title=viewer.t("care.alerts.title"),
            rows=rows, values=values, error=error, rules=engine.rules, device_types=types,
            saved=request.query_params.get("saved") == "1", kinds=kind_labels(viewer, engine),
        )  # fmt: skip

    @app.get("/care/alerts", response_class=HTMLResponse, include_in_schema=False)
    def alerts(request: Request, viewer: ViewerDep) -> Response:
        ui.require(request, viewer, CARE_STAFF)
        return alerts_page(request, viewer)

    @app.post("/care/alerts", response_class=HTMLResponse, include_in_schema=False)
    async def change_alerts(request: Request, viewer: ViewerDep) -> Response:
        form = await ui.form(request, viewer)
        ui.require(request, viewer, CARE_STAFF)
        values = {f"s.{f.name}": str(form.get(f"s.{f.name}") or "")[:64] for f in fields}
        try:
            overrides = parse_settings(form, fields)
            await run_in_threadpool(people.set_generic, overrides, by=viewer.principal.id)
        except FormError as exc:
            return alerts_page(request, viewer, values=values, error=exc, status=400)
        except ValueError as exc:
            error = FormError("", "care.error.engine", detail=str(exc)[:300])
            return alerts_page(request, viewer, values=values, error=error, status=400)
        return ui.redirect(request, viewer, "/care/alerts?saved=1")
