"""Connected Care's portal beyond the board: the people looked after, their devices, alerts.

``/care/homes`` lists the people (operators and admins: every person; a caregiver: only those
who granted them access through a consent grant of scope ``<home>-*``, checked on every
request, so a revoked grant closes the page at once). ``/care/homes/{home}`` is one person:
personal data (stored only encrypted in the companion store), devices with their
connectivity and battery, the alarms switched on for them and their own settings, the
caregivers they granted access to, and their alarms' history. Operators create people
(``/care/homes/new``), change their data and settings, register their devices (the
credentials are shown once, as a download) and grant or revoke caregivers' access on their
behalf (with evidence of their consent). Caregivers only look.

Every view or change of a person's data is decided by the access layer as the resource
``<home>-gw/care/person`` and recorded in the audit trail (allowed or not); a list of people
is one audit entry naming the homes shown.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from msec.access.consent import ConsentError, scope_matches
from msec.access.model import Decision, Verb
from msec.apps.care.alarms import SqlAlarms
from msec.apps.care.engine import CareEngine
from msec.apps.care.model import DEVICE_ROLES, device_name, split_device
from msec.apps.care.offboard import offboard
from msec.apps.care.pages import CARE_ROLES, CARE_STAFF, homes_seen, kind_labels
from msec.apps.care.people import (
    CarePeople,
    DuplicatePerson,
    Person,
    Profile,
    ProfileError,
    SqlPeople,
    check_home,
)
from msec.apps.care.portal_devices import add_device_pages, device_rows
from msec.apps.care.portal_forms import (
    FormError,
    parse_disabled,
    parse_rules,
    parse_settings,
    rule_fields,
    setting_fields,
    shown,
)
from msec.registry.base import DuplicateDevice
from msec.sdk.device import Endpoint
from msec.web.ui import NavItem, Viewer, ViewerDep, WebUi

if TYPE_CHECKING:
    from msec.platform.platform import Platform

__all__ = ["CareAccess", "add_care_portal"]

#: People per page of the list.
PAGE_SIZE: Final = 50
_HISTORY: Final = 50
_NUMBERED = re.compile(r"home-(\d{1,9})")
#: What ``?saved=`` and ``?error=`` may say after a change (each has a message).
SAVED: Final = frozenset(
    {"created", "profile", "settings", "grant", "revoked", "devices", "erased"}
)
FAILED: Final = frozenset({"grant", "erase"})


class CareAccess:
    """Who may see or change which person. A person is decided as the resource
    ``<home>-gw/care/person``; every decision on one is recorded in the audit trail."""

    def __init__(self, ui: WebUi, platform: Platform) -> None:
        self.ui = ui
        self.platform = platform

    @staticmethod
    def staff(viewer: Viewer) -> bool:
        return viewer.has_role(*CARE_STAFF)

    @staticmethod
    def target(home: str) -> tuple[str, str, str]:
        return device_name(home, "gw"), "care", "person"

    def decide(self, request: Request, viewer: Viewer, home: str, verb: Verb) -> Decision:
        return self.ui.access.authorize(viewer.principal, verb, *self.target(home),
                                        source=_source(request), record=False,
                                        personal=True)  # fmt: skip

    def check(self, request: Request, viewer: Viewer, home: str, verb: Verb) -> None:
        """Audit this access to ``home``'s personal data; refused: 404 for reading (no
        telling whether the person exists), 403 for changing."""
        decision = self.decide(request, viewer, home, verb)
        target = "/".join(self.target(home))
        if not decision.allowed:
            self.ui.access.refuse(viewer.principal, verb, target, decision.reason,
                                  source=_source(request))  # fmt: skip
            if verb is Verb.GET:
                raise HTTPException(404, viewer.t("care.no_home"))
            raise HTTPException(403, viewer.t("error.forbidden"))
        self._record(request, viewer, verb, target, decision.reason, decision.policy)

    def _record(self, request: Request, viewer: Viewer, verb: Verb, target: str, reason: str,
                policy: str | None) -> None:  # fmt: skip
        audit = self.ui.access.audit
        if audit is not None:  # personal data: recorded whatever the resource's own flag
            audit.record(viewer.principal, verb, target, Decision(True, reason, policy, True),
                         source=_source(request))  # fmt: skip

    def visible(self, request: Request, viewer: Viewer, homes: Iterable[str]) -> list[str]:
        """The homes of ``homes`` the viewer may see (a caregiver: those whose person granted
        them access and it is in force now)."""
        homes = list(homes)
        if not self.staff(viewer):
            grants = self.platform.consent.active(viewer.principal.id)
            homes = [h for h in homes
                     if any(scope_matches(g.scope, device_name(h, "gw")) for g in grants)]
        self.ui.access.prefetch(self.target(h)[0] for h in homes)  # one batch, not one per home
        return [h for h in homes if self.decide(request, viewer, h, Verb.GET).allowed]

    def listed(self, request: Request, viewer: Viewer, homes: list[str]) -> None:
        """One audit entry for a list of people shown with their names."""
        if homes:
            self._record(request, viewer, Verb.GET, "care/people",
                         f"listed {len(homes)}: {' '.join(homes)}", None)  # fmt: skip


def _source(request: Request) -> str:
    return request.client.host if request.client else ""


def add_care_portal(app: FastAPI, ui: WebUi, platform: Platform, alarms: SqlAlarms,
                    engine: CareEngine) -> CarePeople:  # fmt: skip
    """The portal's pages, navigation and people store; call :meth:`CarePeople.apply` once the
    engine has restored its snapshot."""
    store = SqlPeople(platform.engine, platform.companion, platform.trust.log)
    store.create_schema()
    people = CarePeople(store, engine)
    ui.nav += [
        NavItem("/care/homes", "nav.care_homes", CARE_ROLES, order=51),
        NavItem("/care/devices", "nav.care_devices", CARE_STAFF, order=52),
        NavItem("/care/alerts", "nav.care_alerts", CARE_STAFF, order=53),
    ]
    _add_home_pages(app, ui, platform, alarms, people, CareAccess(ui, platform))
    add_device_pages(app, ui, platform, alarms, people)
    return people


def _known_homes(platform: Platform, people: CarePeople) -> list[str]:
    """Every home: people recorded, homes with a registered device (every device has a
    provider in the twin), homes the engine heard of."""
    homes = set(people.store.homes()) | set(homes_seen(people.engine))
    homes |= {parts[0] for p in platform.twin.providers() if (parts := split_device(p.name))}
    return sorted(homes)


def _next_home(homes: Iterable[str]) -> str:
    numbers = [int(m.group(1)) for h in homes if (m := _NUMBERED.fullmatch(h))]
    return f"home-{max(numbers, default=0) + 1:04d}"


def _known(request: Request, name: str, known: frozenset[str]) -> str:
    value = request.query_params.get(name, "")
    return value if value in known else ""


def _page(text: str) -> int:
    return int(text) if text.isdigit() and 0 < len(text) < 6 else 1


def _add_home_pages(app: FastAPI, ui: WebUi, platform: Platform, alarms: SqlAlarms,
                    people: CarePeople, access: CareAccess) -> None:  # fmt: skip
    store, engine = people.store, people.engine
    fields = setting_fields()

    def home_or_404(viewer: Viewer, home: str) -> str:
        try:
            return check_home(home)
        except ValueError:
            raise HTTPException(404, viewer.t("care.no_home")) from None

    # -- the list ---------------------------------------------------------------------------------

    @app.get("/care/homes", response_class=HTMLResponse, include_in_schema=False)
    def homes_list(request: Request, viewer: ViewerDep, q: str = "", page: str = "1") -> Response:
        ui.require(request, viewer, CARE_ROLES)
        query = q.strip().lower()[:40]
        homes = [h for h in _known_homes(platform, people) if query in h]
        staff = access.staff(viewer)
        if not staff:  # a caregiver's few homes, decided before paging
            homes = access.visible(request, viewer, homes)
        pages = max(1, -(-len(homes) // PAGE_SIZE))
        number = min(_page(page), pages)
        shown_homes = homes[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
        if staff:
            shown_homes = access.visible(request, viewer, shown_homes)
        found = {p.home: p for p in store.find(shown_homes)}
        profiles = store.profiles(found.values())
        access.listed(request, viewer, [h for h in shown_homes if h in profiles])
        active = alarms.active()
        now = time.time()
        rows = []
        for home in shown_homes:
            state = engine.homes.get(home)
            seen = state.last_seen if state is not None else {}
            rows.append({
                "home": home, "person": found.get(home), "profile": profiles.get(home),
                "reporting": sum(1 for t in seen.values() if now - t < 1800),
                "last": max(seen.values(), default=None),
                "alarms": sum(1 for a in active if a.home == home),
            })  # fmt: skip
        return ui.render(request, viewer, "care/homes.html", title=viewer.t("care.homes.title"),
                         rows=rows, q=query, page=number, pages=pages, staff=staff,
                         devices=len(DEVICE_ROLES))  # fmt: skip

    # -- a new person -----------------------------------------------------------------------------

    def new_page(request: Request, viewer: Viewer, *, values: dict[str, str],
                 error: ProfileError | None = None, status: int = 200) -> Response:  # fmt: skip
        return ui.render(request, viewer, "care/home_new.html", status=status,
                         title=viewer.t("care.new.title"), values=values, error=error)  # fmt: skip

    @app.get("/care/homes/new", response_class=HTMLResponse, include_in_schema=False)
    def new_person(request: Request, viewer: ViewerDep, home: str = "") -> Response:
        ui.require(request, viewer, CARE_STAFF)
        suggested = home[:40] if home else _next_home(_known_homes(platform, people))
        return new_page(request, viewer, values={"home": suggested})

    @app.post("/care/homes", response_class=HTMLResponse, include_in_schema=False)
    async def create_person(request: Request, viewer: ViewerDep) -> Response:
        form = await ui.form(request, viewer)
        ui.require(request, viewer, CARE_STAFF)
        values = {k: str(form.get(k) or "")[:2000] for k in
                  ("home", "name", "address", "phone", "birth_year", "notes")}  # fmt: skip
        home = values["home"].strip().lower()
        try:
            check_home(home)
        except ValueError:
            return new_page(request, viewer, values=values, status=400,
                            error=ProfileError("home", "care.error.home"))  # fmt: skip
        try:
            profile = Profile.parse(form)
        except ProfileError as exc:
            return new_page(request, viewer, values=values, error=exc, status=400)
        access.check(request, viewer, home, Verb.SET)
        try:
            await run_in_threadpool(store.add, home, profile, by=viewer.principal.id)
        except DuplicatePerson:
            return new_page(request, viewer, values=values, status=409,
                            error=ProfileError("home", "care.error.home_taken"))  # fmt: skip
        return ui.redirect(request, viewer, f"/care/homes/{home}?saved=created")

    # -- one person -------------------------------------------------------------------------------

    def config_values(person: Person | None) -> dict[str, Any]:
        own = person.settings if person else {}
        values: dict[str, Any] = {f"s.{f.name}": shown(f.unit, own.get(f.name)) for f in fields}
        for rule in engine.rules:
            mine = person.rules.get(rule.kind, {}) if person else {}
            for f in rule_fields(rule.params):
                values[f"r.{rule.kind}.{f.name}"] = shown(f.unit, mine.get(f.name))
        kinds = engine.kinds()
        off = person.disabled if person else frozenset()
        values["enabled"] = [k for k in kinds if k not in off]
        return values

    def home_page(request: Request, viewer: Viewer, home: str, *, status: int = 200,
                  profile_form: dict[str, str] | None = None,
                  config_form: dict[str, Any] | None = None,
                  error: ProfileError | FormError | None = None) -> Response:  # fmt: skip
        person = store.get(home)
        state = engine.homes.get(home)
        if person is None and state is None and not alarms.history(home, limit=1):
            raise HTTPException(404, viewer.t("care.no_home"))
        profile = store.profile(person) if person else None
        if profile_form is None:
            profile_form = {"name": profile.name, "address": profile.address,
                            "phone": profile.phone, "notes": profile.notes,
                            "birth_year": str(profile.birth_year or "")} if profile else {}
        history = alarms.history(home, limit=_HISTORY)
        staff = access.staff(viewer)
        own = engine.person(home)
        applied = person is None or (
            own.overrides == person.settings and own.disabled == person.disabled
            and own.rules == person.rules
        )  # fmt: skip
        grants = []
        if staff:
            grants = [g for g in platform.consent.grants_of(home)
                      if g.in_force(time.time())]  # fmt: skip
        return ui.render(
            request, viewer, "care/home.html", status=status,
            title=profile.name if profile else home, home=home, person=person, profile=profile,
            profile_form=profile_form, config=config_form or config_values(person),
            profile_error=error if isinstance(error, ProfileError) else None,
            config_error=error if isinstance(error, FormError) else None, staff=staff,
            applied=applied, generic=engine.settings,
            settings=engine.settings_of(home), fields=fields, rules=engine.rules,
            rule_fields=rule_fields, kinds=engine.kinds(), labels=kind_labels(viewer, engine),
            devices=device_rows(platform, engine, alarms, [home]), now=time.time(),
            history=history, events={a.id: alarms.events(a.id) for a in history},
            grants=grants, saved=_known(request, "saved", SAVED),
            failed=_known(request, "error", FAILED), shown=shown,
        )  # fmt: skip

    @app.get("/care/homes/{home}", response_class=HTMLResponse, include_in_schema=False)
    def person_page(request: Request, home: str, viewer: ViewerDep) -> Response:
        ui.require(request, viewer, CARE_ROLES)
        home = home_or_404(viewer, home)
        access.check(request, viewer, home, Verb.GET)
        return home_page(request, viewer, home)

    async def changing(request: Request, viewer: Viewer, home: str) -> tuple[str, Any]:
        """The form of a change to ``home``: CSRF checked, staff only, audited."""
        form = await ui.form(request, viewer)

        def check() -> str:  # the access decision is audited: a database write
            ui.require(request, viewer, CARE_STAFF)
            found = home_or_404(viewer, home)
            access.check(request, viewer, found, Verb.SET)
            return found

        return await run_in_threadpool(check), form

    @app.post("/care/homes/{home}/profile", response_class=HTMLResponse, include_in_schema=False)
    async def change_profile(request: Request, home: str, viewer: ViewerDep) -> Response:
        home, form = await changing(request, viewer, home)
        values = {k: str(form.get(k) or "")[:2000]
                  for k in ("name", "address", "phone", "birth_year", "notes")}  # fmt: skip
        try:
            profile = Profile.parse(form)
        except ProfileError as exc:
            return home_page(request, viewer, home, status=400, profile_form=values, error=exc)
        if store.get(home) is None:
            await run_in_threadpool(store.add, home, profile, by=viewer.principal.id)
        else:
            await run_in_threadpool(store.update_profile, home, profile, by=viewer.principal.id)
        return ui.redirect(request, viewer, f"/care/homes/{home}?saved=profile")

    @app.post("/care/homes/{home}/settings", response_class=HTMLResponse, include_in_schema=False)
    async def change_settings(request: Request, home: str, viewer: ViewerDep) -> Response:
        home, form = await changing(request, viewer, home)
        submitted: dict[str, Any] = {k: str(v)[:64] for k, v in form.items() if k != "csrf"}
        submitted["enabled"] = [str(v) for v in form.getlist("enabled")]
        if store.get(home) is None:
            raise HTTPException(404, viewer.t("care.no_home"))
        try:
            settings = parse_settings(form, fields)
            rules = parse_rules(form, [(r.kind, r.params) for r in engine.rules])
            disabled = parse_disabled(form, engine.kinds())
            await run_in_threadpool(lambda: people.configure(
                home, settings=settings, disabled=disabled, rules=rules, by=viewer.principal.id))
        except FormError as exc:
            return home_page(request, viewer, home, status=400, config_form=submitted, error=exc)
        except ValueError as exc:  # the engine's own check, naming the setting
            error = FormError("", "care.error.engine", detail=str(exc)[:300])
            return home_page(request, viewer, home, status=400, config_form=submitted,
                             error=error)  # fmt: skip
        return ui.redirect(request, viewer, f"/care/homes/{home}?saved=settings#settings")

    @app.post("/care/homes/{home}/devices", include_in_schema=False)
    async def register_devices(request: Request, home: str, viewer: ViewerDep) -> Response:
        home, _ = await changing(request, viewer, home)
        if store.get(home) is None:
            raise HTTPException(404, viewer.t("care.no_home"))
        http_url = ui.site_url(request)
        created = await run_in_threadpool(_register, platform, home, http_url)
        if not created:
            return ui.redirect(request, viewer, f"/care/homes/{home}?saved=devices#devices")
        body = json.dumps({"home": home, "devices": created}, indent=2)
        response = Response(body, media_type="application/json")
        response.headers["Content-Disposition"] = f'attachment; filename="{home}-devices.json"'
        return ui.finish(request, viewer, response)

    @app.post("/care/homes/{home}/grants", include_in_schema=False)
    async def grant(request: Request, home: str, viewer: ViewerDep) -> Response:
        home, form = await changing(request, viewer, home)
        name = str(form.get("caregiver") or "").strip().lower()[:100]
        evidence = str(form.get("evidence") or "").strip()[:500]
        grantee = platform.principals.principal(f"user:{name}") if name else None
        if grantee is None or "caregiver" not in grantee.roles or not evidence:
            return ui.redirect(request, viewer, f"/care/homes/{home}?error=grant#caregivers")
        try:
            await run_in_threadpool(lambda: platform.consent.grant(
                home, grantee.id, scope=f"{home}-*", granted_by=viewer.principal.id,
                on_behalf=True, evidence=evidence))  # fmt: skip
        except (ValueError, ConsentError):
            return ui.redirect(request, viewer, f"/care/homes/{home}?error=grant#caregivers")
        return ui.redirect(request, viewer, f"/care/homes/{home}?saved=grant#caregivers")

    @app.post("/care/homes/{home}/grants/{grant_id}/revoke", include_in_schema=False)
    async def revoke(request: Request, home: str, grant_id: str, viewer: ViewerDep) -> Response:
        home, _ = await changing(request, viewer, home)
        found = platform.consent.get_grant(grant_id[:64])
        if found is None or found.subject != home:
            raise HTTPException(404, viewer.t("care.no_grant"))
        await run_in_threadpool(platform.consent.revoke, found.id, by=viewer.principal.id)
        return ui.redirect(request, viewer, f"/care/homes/{home}?saved=revoked#caregivers")


    @app.post("/care/homes/{home}/erase", include_in_schema=False)
    async def erase(request: Request, home: str, viewer: ViewerDep) -> Response:
        """The person leaves the service (see :mod:`msec.apps.care.offboard`); the form must
        repeat the home's id."""
        home, form = await changing(request, viewer, home)
        if str(form.get("confirm") or "").strip() != home:
            return ui.redirect(request, viewer, f"/care/homes/{home}?error=erase#erase")
        await run_in_threadpool(
            offboard, platform, people, alarms, home, by=viewer.principal.id
        )
        return ui.redirect(request, viewer, f"/care/homes/{home}?saved=erased")


def _register(platform: Platform, home: str, http_url: str) -> list[dict[str, Any]]:
    """Register the home's devices that are not registered yet, with the person as their data
    subject; their credentials files (private keys) as JSON, for this answer only."""
    mqtt = platform.settings.mqtt
    endpoint = Endpoint(mqtt.host, mqtt.port or 1883, http_url=http_url)
    created = []
    with tempfile.TemporaryDirectory(prefix="msec-care-") as folder:
        for role, (kind, _, _) in DEVICE_ROLES.items():
            name = device_name(home, role)
            if platform.registry.get(name) is not None:
                continue
            out = Path(folder) / f"{name}.json"
            try:
                platform.add_device(name, kind, endpoint=endpoint, out=out, subject=home)
            except DuplicateDevice:  # registered a moment ago by someone else
                continue
            created.append(json.loads(out.read_text()))
    return created
