"""Connected Care's portal over HTTP: people, devices, alert configuration, caregivers' view.

The people pages (``/care/homes``), device management (``/care/devices``) and alert
configuration (``/care/alerts``), as operators and as caregivers with and without a consent
grant; personal data stored only encrypted and shown escaped; every view of it audited;
CSRF; settings checked, persisted and applied to the engine again after a restart.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from care_home import Sink
from care_site import CareSite, care_web
from fastapi import FastAPI
from fastapi.testclient import TestClient

from msec.apps.care.alarms import EVENTS
from msec.apps.care.app import CareApp
from msec.apps.care.engine import CareEngine
from msec.apps.care.model import DEVICE_ROLES, AlarmKind, SensorEvent
from msec.apps.care.offboard import ERASE_NOTE, offboard
from msec.apps.care.people import (
    LIMITS,
    CarePeople,
    DuplicatePerson,
    Profile,
    ProfileError,
    SqlPeople,
    UnknownPerson,
    check_home,
)
from msec.apps.care.portal import FAILED, SAVED
from msec.apps.care.portal_forms import FormError, parse_settings, setting_fields
from msec.apps.care.rules import RULE_TYPES
from msec.companion import SqlCompanion
from msec.companion.errors import UnknownSubject
from msec.companion.keys import FileKeyWrapper
from msec.platform import Platform, Settings
from msec.tlog import SqlLog
from msec.web.i18n import Catalogs

SITE = "http://testserver"
PASSWORD = "correct horse battery"
XSS = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
HOME = "home-0001"
OTHER = "home-0002"
PERSON = {"name": "Dolores Fuertes de Barriga", "address": "Calle del Sol 12, 3ºB\nSantander",
          "phone": "+34 942 123 456", "birth_year": "1938",
          "notes": "Llave con la vecina del 3ºA"}  # fmt: skip
TEMPLATES = Path(__file__).resolve().parents[3] / "src" / "msec" / "apps" / "care" / "templates"


class Portal:
    """The site of ``care_site`` with people logged in through the login form."""

    def __init__(self, platform: Platform, app: FastAPI, care: CareApp) -> None:
        self.platform, self.app, self.care = platform, app, care

    @property
    def engine(self) -> Any:
        return self.care.service.engine

    def login(self, name: str, role: str) -> TestClient:
        if self.platform.principals.principal(f"user:{name}") is None:
            self.platform.principals.add_user(name, tenant="default", roles=[role],
                                              password=PASSWORD)  # fmt: skip
        client = TestClient(self.app, base_url=SITE, follow_redirects=False)  # type: ignore[arg-type]
        token = csrf(client.get("/login").text)
        response = client.post("/login", data={"csrf": token, "identifier": name,
                                               "password": PASSWORD}, headers={"Origin": SITE})
        assert response.status_code == 303
        return client

    def grant(self, home: str, caregiver: str) -> str:
        return self.platform.consent.grant(home, f"user:{caregiver}", scope=f"{home}-*",
                                           granted_by=f"user:{home}").id  # fmt: skip


def csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]


def post(client: TestClient, page: str, action: str, data: dict[str, Any]) -> Any:
    """Submit a form of ``page`` as a browser does (its CSRF token, this site's origin)."""
    token = csrf(client.get(page).text)
    return client.post(action, data={"csrf": token, **data}, headers={"Origin": SITE})


def create(client: TestClient, home: str = HOME, **fields: str) -> Any:
    return post(client, "/care/homes/new", "/care/homes", {"home": home, **PERSON, **fields})


@pytest.fixture
def portal(care_site: CareSite) -> Portal:
    return Portal(care_site.platform, care_site.app, care_site.care)


@contextmanager
def site_on(data_dir: Path) -> Iterator[Portal]:
    """A platform on ``data_dir`` with the care app installed (as ``care_site``), stopped on
    exit: opening it again is a restart."""
    platform = Platform.open(Settings.load(None, data_dir=data_dir))
    site = care_web(platform)
    try:
        yield Portal(platform, site.app, site.care)
    finally:
        site.care.stop()
        platform.close()


# -- operators ------------------------------------------------------------------------------------


def test_an_operator_creates_a_person_and_sees_every_page(portal: Portal) -> None:
    olga = portal.login("olga", "operator")
    board = olga.get("/care").text
    for link in ("/care/homes", "/care/devices", "/care/alerts"):
        assert f'href="{link}"' in board  # in the navigation
    new = olga.get("/care/homes/new").text
    assert 'value="home-0003"' in new  # the next free number after the fixture's two homes
    created = create(olga)
    assert created.status_code == 303
    assert created.headers["location"] == f"/care/homes/{HOME}?saved=created"
    page = olga.get(created.headers["location"])
    assert page.status_code == 200
    assert f"<h1>{PERSON['name']}</h1>" in page.text and 'id="saved"' in page.text
    for section in ("profile-form", "register-devices", "settings-form", "grant-form"):
        assert f'id="{section}"' in page.text
    assert page.text.count('<tr data-device="home-0001-') == 5
    people = olga.get("/care/homes").text
    assert f'data-home="{HOME}"' in people and PERSON["name"] in people
    assert 'data-home="home-0002"' in people  # a home with devices and nobody recorded
    assert olga.get("/care/homes?q=0002").text.count("<tr data-home=") == 1
    for path in ("/care/devices", f"/care/devices?home={HOME}", "/care/alerts"):
        assert olga.get(path).status_code == 200
    for kind in AlarmKind:
        assert f'data-kind="{kind.value}"' in olga.get("/care/alerts").text
    again = create(olga)
    assert again.status_code == 409 and "already a person" in again.text
    bad = create(olga, home="home-0001-gw")
    assert bad.status_code == 400 and 'aria-invalid="true"' in bad.text
    assert olga.get("/care/homes/nobody-here").status_code == 404

    # Personal data changed; an invalid field is refused with the form as it was typed.
    changed = post(olga, f"/care/homes/{HOME}", f"/care/homes/{HOME}/profile",
                   {**PERSON, "phone": "+34 600 000 000"})  # fmt: skip
    assert changed.headers["location"] == f"/care/homes/{HOME}?saved=profile"
    assert "+34 600 000 000" in olga.get(f"/care/homes/{HOME}").text
    refused = post(olga, f"/care/homes/{HOME}", f"/care/homes/{HOME}/profile",
                   {**PERSON, "birth_year": "1850", "notes": "kept as typed"})  # fmt: skip
    assert refused.status_code == 400 and 'id="profile-error"' in refused.text
    assert "kept as typed" in refused.text
    assert "+34 600 000 000" in olga.get(f"/care/homes/{HOME}").text


def test_personal_data_is_stored_only_encrypted(portal: Portal, tmp_path: Path) -> None:
    olga = portal.login("olga", "operator")
    assert create(olga).status_code == 303
    post(olga, f"/care/homes/{HOME}", f"/care/homes/{HOME}/profile",
         {**PERSON, "notes": "Marcapasos desde 2019"})  # fmt: skip
    people = SqlPeople(portal.platform.engine, portal.platform.companion,
                       portal.platform.trust.log)  # fmt: skip
    person = people.get(HOME)
    assert person is not None and person.profile_record == f"care-profile.{HOME}.2"
    profile = people.profile(person)
    assert profile is not None and profile.notes == "Marcapasos desde 2019"
    exported = portal.platform.export_subject(HOME)
    assert {r["kind"] for r in exported["records"]} == {"care_profile"}
    portal.platform.engine.dispose()
    database = (tmp_path / "data" / "msec.db").read_bytes()
    wal = tmp_path / "data" / "msec.db-wal"
    stored = database + (wal.read_bytes() if wal.exists() else b"")
    for text in ("Dolores", "Barriga", "Calle del Sol", "942 123 456", "vecina", "Marcapasos"):
        assert text.encode() not in stored, text
    # Erased with the person: the page no longer has their data.
    portal.platform.erase_subject(HOME, reason="test")
    assert "Dolores" not in olga.get(f"/care/homes/{HOME}").text


def test_personal_data_with_markup_is_shown_escaped(portal: Portal) -> None:
    olga = portal.login("olga", "operator")
    fields = {"name": XSS, "address": XSS, "notes": XSS}
    assert create(olga, **fields).status_code == 303
    portal.platform.principals.add_user("carmen", tenant="default", roles=["caregiver"],
                                        password=PASSWORD)  # fmt: skip
    portal.grant(HOME, "carmen")
    carmen = portal.login("carmen", "caregiver")
    for client, path in ((olga, f"/care/homes/{HOME}"), (olga, "/care/homes"),
                         (carmen, f"/care/homes/{HOME}"), (carmen, "/care/homes")):  # fmt: skip
        text = client.get(path).text
        assert "<script>alert(1)" not in text and "<img src=x" not in text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, path


def test_devices_are_registered_once_and_shown_with_their_connectivity(portal: Portal) -> None:
    olga = portal.login("olga", "operator")
    create(olga)
    answer = post(olga, f"/care/homes/{HOME}", f"/care/homes/{HOME}/devices", {})
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == f'attachment; filename="{HOME}-devices.json"'
    credentials = answer.json()["devices"]
    # The fixture registered the gateway already: the four sensors, with their private keys.
    assert [d["name"] for d in credentials] == [f"{HOME}-{r}" for r in
                                                 ("motion", "door", "bed", "plug")]  # fmt: skip
    assert all(d["secret_key"] for d in credentials)
    for d in credentials:
        assert portal.platform.registry.get(d["name"]).subject == HOME  # type: ignore[union-attr]
    again = post(olga, f"/care/homes/{HOME}", f"/care/homes/{HOME}/devices", {})
    assert again.headers["location"] == f"/care/homes/{HOME}?saved=devices#devices"

    now = time.time()
    engine = portal.engine
    engine.observe(SensorEvent(HOME, "motion", f"{HOME}-motion", "motion", "detected", True,
                               now - 5, 1))  # fmt: skip
    engine.observe(SensorEvent(HOME, "bed", f"{HOME}-bed", "health", "battery", 4.0,
                               now - 7200, 1))  # fmt: skip
    (low,) = portal.care.alarms.active(HOME, AlarmKind.LOW_BATTERY)  # raised by the engine
    page = olga.get(f"/care/devices?home={HOME}").text
    assert re.search(rf'data-device="{HOME}-motion" data-status="online"', page)
    assert re.search(rf'data-device="{HOME}-bed" data-status="silent"', page)
    assert re.search(rf'data-device="{HOME}-door" data-status="never"', page)
    bed = page.split(f'data-device="{HOME}-bed"')[1].split("</tr>")[0]
    assert f'data-alarm="{low.id}"' in bed and "Low battery" in bed and ">low<" in bed
    everything = olga.get("/care/devices").text
    assert everything.count("<tr data-device=") == 6  # five here and the other home's gateway
    assert 'data-device="home-0002-gw" data-status="never"' in everything


# -- caregivers -----------------------------------------------------------------------------------


def test_a_caregiver_sees_only_the_homes_that_granted_access(portal: Portal) -> None:
    olga = portal.login("olga", "operator")
    create(olga)
    create(olga, home=OTHER, name="Otra Persona")
    carmen = portal.login("carmen", "caregiver")
    assert 'href="/care/homes"' in carmen.get("/care").text
    assert 'href="/care/devices"' not in carmen.get("/care").text
    listed = carmen.get("/care/homes").text
    assert "<tr data-home=" not in listed and 'id="no-people"' in listed
    assert carmen.get(f"/care/homes/{HOME}").status_code == 404
    for path in ("/care/devices", "/care/alerts", "/care/homes/new"):
        assert carmen.get(path).status_code == 403, path

    grant = portal.grant(HOME, "carmen")
    listed = carmen.get("/care/homes").text
    assert f'data-home="{HOME}"' in listed and PERSON["name"] in listed
    assert f'data-home="{OTHER}"' not in listed and "Otra Persona" not in listed
    page = carmen.get(f"/care/homes/{HOME}")
    assert page.status_code == 200 and PERSON["phone"] in page.text
    for form in ("profile-form", "settings-form", "grant-form", "register-devices"):
        assert f'id="{form}"' not in page.text  # looking only
    assert PERSON["notes"] not in page.text
    assert carmen.get(f"/care/homes/{OTHER}").status_code == 404
    token = csrf(page.text)
    for action in ("profile", "settings", "devices", "grants"):
        refused = carmen.post(f"/care/homes/{HOME}/{action}", data={"csrf": token, **PERSON},
                              headers={"Origin": SITE})  # fmt: skip
        assert refused.status_code == 403, action

    portal.platform.consent.revoke(grant, by=f"user:{HOME}")  # the person withdraws it
    assert carmen.get(f"/care/homes/{HOME}").status_code == 404
    assert f'data-home="{HOME}"' not in carmen.get("/care/homes").text


def test_an_operator_grants_and_revokes_on_the_persons_behalf(portal: Portal) -> None:
    olga = portal.login("olga", "operator")
    create(olga)
    portal.platform.principals.add_user("carmen", tenant="default", roles=["caregiver"],
                                        password=PASSWORD)  # fmt: skip
    page = f"/care/homes/{HOME}"
    missing = post(olga, page, f"{page}/grants", {"caregiver": "carmen", "evidence": ""})
    assert missing.headers["location"] == f"{page}?error=grant#caregivers"
    not_a_caregiver = post(olga, page, f"{page}/grants", {"caregiver": "olga", "evidence": "x"})
    assert not_a_caregiver.headers["location"] == f"{page}?error=grant#caregivers"
    granted = post(olga, page, f"{page}/grants",
                   {"caregiver": "carmen", "evidence": "signed form #12"})  # fmt: skip
    assert granted.headers["location"] == f"{page}?saved=grant#caregivers"
    (grant,) = portal.platform.consent.active("user:carmen")
    assert grant.scope == f"{HOME}-*" and grant.on_behalf and grant.evidence == "signed form #12"
    carmen = portal.login("carmen", "caregiver")
    assert carmen.get(page).status_code == 200
    shown = olga.get(page).text
    assert f'data-grant="{grant.id}"' in shown and "signed form #12" in shown
    revoked = post(olga, page, f"{page}/grants/{grant.id}/revoke", {})
    assert revoked.headers["location"] == f"{page}?saved=revoked#caregivers"
    assert carmen.get(page).status_code == 404
    assert post(olga, page, f"{OTHER}/grants/{grant.id}/revoke", {}).status_code == 404


def test_a_person_leaving_the_service_is_erased_from_the_portal(portal: Portal) -> None:
    platform, engine = portal.platform, portal.engine
    olga = portal.login("olga", "operator")
    create(olga)
    create(olga, home=OTHER, name="Otra Persona")
    page = f"/care/homes/{HOME}"
    assert post(olga, page, f"{page}/devices", {}).status_code == 200
    carmen = portal.login("carmen", "caregiver")
    portal.grant(HOME, "carmen")
    now = time.time()
    engine.observe(SensorEvent(HOME, "gw", f"{HOME}-gw", "health", "battery", 3.0, now, 1))
    [alarm] = portal.care.alarms.active(HOME)
    assert HOME in engine.homes and carmen.get(page).status_code == 200
    shown = olga.get(page).text
    assert 'id="erase-form"' in shown and 'id="erase-form"' not in carmen.get(page).text

    # A caregiver may not; a wrong confirmation erases nothing.
    token = csrf(carmen.get(page).text)
    refused = carmen.post(f"{page}/erase", data={"csrf": token, "confirm": HOME},
                          headers={"Origin": SITE})  # fmt: skip
    assert refused.status_code == 403
    wrong = post(olga, page, f"{page}/erase", {"confirm": OTHER})
    assert wrong.headers["location"] == f"{page}?error=erase#erase"
    assert portal.care.people.store.get(HOME) is not None
    assert not platform.registry.get(f"{HOME}-gw").revoked  # type: ignore[union-attr]

    done = post(olga, page, f"{page}/erase", {"confirm": HOME})
    assert done.headers["location"] == f"{page}?saved=erased"
    assert all(platform.registry.get(f"{HOME}-{role}").revoked  # type: ignore[union-attr]
               for role in DEVICE_ROLES)  # fmt: skip
    assert HOME not in engine.homes and engine.person(HOME).overrides == {}
    resolved = portal.care.alarms.get(alarm.id)
    assert resolved is not None and resolved.state == "resolved"
    assert resolved.notes[-1].text == ERASE_NOTE
    assert carmen.get(page).status_code == 404  # her grant went too
    assert portal.care.people.store.get(HOME) is None
    with pytest.raises(UnknownSubject):
        platform.companion.subject(HOME, create=False)
    after = olga.get(f"{page}?saved=erased").text
    assert 'id="saved"' in after and PERSON["name"] not in after
    assert PERSON["name"] not in olga.get("/care/homes").text
    assert "Otra Persona" in olga.get("/care/homes").text  # the other person is untouched
    assert portal.care.people.store.get(OTHER) is not None
    platform.trust.checkpoint()
    report = platform.trust.verify()
    assert report.ok, report.problems
    # Again (a second click, a crash half-way): it finishes, and finds nothing left to do.
    again = offboard(platform, portal.care.people, portal.care.alarms, HOME, by="user:olga")
    assert (again.alarms_resolved, again.grants_revoked, again.records_erased) == (0, 0, 0)


def test_every_view_of_personal_data_is_audited(portal: Portal) -> None:
    olga = portal.login("olga", "operator")
    create(olga)
    olga.get(f"/care/homes/{HOME}")
    olga.get("/care/homes")
    carmen = portal.login("carmen", "caregiver")
    carmen.get(f"/care/homes/{HOME}")
    audit = portal.platform.audit
    mine = audit.query(principal="user:olga")
    target = f"{HOME}-gw/care/person"
    assert any(e.target == target and e.verb == "SET" and e.allowed for e in mine)  # created
    assert any(e.target == target and e.verb == "GET" and e.allowed and e.sensitive
               for e in mine)  # fmt: skip
    assert any(e.target == "care/people" and HOME in e.reason for e in mine)
    refused = audit.query(principal="user:carmen", allowed=False)
    assert [e.target for e in refused] == [target]
    denied = portal.platform.events.query(reason="access_denied")
    assert any(e.detail.startswith(f"user:carmen GET {target}") for e in denied)
    portal.grant(HOME, "carmen")
    carmen.get(f"/care/homes/{HOME}")
    allowed = audit.query(principal="user:carmen", allowed=True)
    assert [e.target for e in allowed] == [target]
    assert allowed[0].policy == "care-caregivers-with-consent"


# -- forms ----------------------------------------------------------------------------------------


def test_forms_without_a_valid_csrf_token_are_refused(portal: Portal) -> None:
    olga = portal.login("olga", "operator")
    create(olga)
    forms = {
        "/care/homes": {"home": "home-0009", **PERSON},
        f"/care/homes/{HOME}/profile": {**PERSON, "name": "Changed"},
        f"/care/homes/{HOME}/settings": {"s.night_start": "20:00"},
        f"/care/homes/{HOME}/devices": {},
        f"/care/homes/{HOME}/grants": {"caregiver": "x", "evidence": "y"},
        "/care/alerts": {"s.offline_s": "10"},
    }
    token = csrf(olga.get("/care").text)
    for action, data in forms.items():
        forged = olga.post(action, data={"csrf": "forged", **data}, headers={"Origin": SITE})
        assert forged.status_code == 403, action
        cross = olga.post(action, data={"csrf": token, **data},
                          headers={"Origin": "https://evil.example"})  # fmt: skip
        assert cross.status_code == 403, action
    people = SqlPeople(portal.platform.engine, portal.platform.companion,
                       portal.platform.trust.log)  # fmt: skip
    assert people.homes() == [HOME]
    assert people.get(HOME).settings == {}  # type: ignore[union-attr]
    assert portal.platform.registry.get(f"{HOME}-motion") is None
    assert portal.engine.settings.offline_s == 1800
    assert portal.platform.events.query(reason="csrf")


def test_settings_errors_are_shown_and_change_nothing(portal: Portal) -> None:
    olga = portal.login("olga", "operator")
    create(olga)
    page = f"/care/homes/{HOME}"
    cases = {
        "s.night_start": ("25:99", "Night starts: write a local time as HH:MM"),
        "s.inactivity_s": ("-5", "No movement for: write a number above zero"),
        "s.low_battery_pct": ("140", "Battery below: write a percentage between 0 and 100"),
        "s.timezone": ("Mars/Olympus", "Time zone: write a time zone"),
        "s.appliance_w": ("lots", "Appliance above: write a number"),
    }
    for field, (value, message) in cases.items():
        answer = post(olga, page, f"{page}/settings", {field: value, "enabled": ["inactivity"]})
        assert answer.status_code == 400, field
        assert message in answer.text, field
        assert f'name="{field}" value="{value}"' in answer.text  # the form as typed
        assert 'aria-invalid="true"' in answer.text
    assert portal.engine.person(HOME).overrides == {}
    assert portal.engine.person(HOME).disabled == frozenset()

    # In the viewer's language.
    spanish = post(olga, f"{page}?lang=es", f"{page}/settings", {"s.night_start": "9:00"})
    assert spanish.status_code == 400 and "escriba una hora local" in spanish.text

    # What only the engine knows is refused with its own words, and nothing is stored.
    people = CarePeople(SqlPeople(portal.platform.engine, portal.platform.companion,
                                  portal.platform.trust.log), portal.engine)  # fmt: skip
    with pytest.raises(ValueError, match="no rule raises the kind 'heater'"):
        people.configure(HOME, settings={}, disabled=(), rules={"heater": {"for_s": 5.0}},
                         by="user:olga")  # fmt: skip
    with pytest.raises(ValueError, match="unknown alarm kind"):
        people.configure(HOME, settings={}, disabled=["fire"], rules={}, by="user:olga")
    assert people.store.get(HOME).settings == {}  # type: ignore[union-attr]

    generic = post(olga, "/care/alerts?lang=en", "/care/alerts", {"s.escalate_after_s": "0"})
    assert generic.status_code == 400
    assert "Escalate unacknowledged after: write a number above zero" in generic.text
    assert portal.engine.settings.escalate_after_s == 900


def test_settings_are_applied_at_once_and_again_after_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with site_on(data_dir) as portal:
        olga = portal.login("olga", "operator")
        create(olga)
        create(olga, home=OTHER, name="Otra Persona")
        page = f"/care/homes/{HOME}"
        saved = post(olga, page, f"{page}/settings", {
            "s.night_start": "21:30", "s.inactivity_s": "120", "s.low_battery_pct": "20",
            "enabled": [k.value for k in AlarmKind if k is not AlarmKind.APPLIANCE_ON],
        })  # fmt: skip
        assert saved.headers["location"] == f"{page}?saved=settings#settings"
        mine = portal.engine.person(HOME)
        assert mine.overrides == {"night_start": "21:30", "inactivity_s": 7200.0,
                                  "low_battery_pct": 20.0}  # fmt: skip
        assert mine.disabled == {"appliance_on"}
        assert portal.engine.settings_of(HOME).inactivity_s == 7200
        shown = olga.get(page).text
        assert 'name="s.inactivity_s" value="120"' in shown
        assert 'value="appliance_on">' in shown and 'value="inactivity" checked>' in shown
        generic = post(olga, "/care/alerts", "/care/alerts",
                       {"s.offline_s": "60", "s.night_end": "06:30"})  # fmt: skip
        assert generic.headers["location"] == "/care/alerts?saved=1"
        assert portal.engine.settings.offline_s == 3600
        assert portal.engine.settings_of(HOME).offline_s == 3600  # not her own: the generic
        assert portal.engine.settings_of(HOME).night_start == "21:30"  # her own stays
        portal.care.service.save()
        with portal.platform.engine.connect() as conn:
            stale = conn.execute(sa.text("SELECT snapshot FROM care_engine_state")).scalar_one()
        post(olga, page, f"{page}/settings", {"s.night_start": "22:15", "enabled": ["inactivity"]})
    # A crash after the snapshot before the last change: the store wins at the next start.
    engine = sa.create_engine(f"sqlite:///{data_dir / 'msec.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE care_engine_state SET snapshot = :s"), {"s": stale})
    engine.dispose()

    with site_on(data_dir) as again:
        mine = again.engine.person(HOME)
        assert mine.overrides == {"night_start": "22:15"}
        assert mine.disabled == {k.value for k in AlarmKind} - {"inactivity"}
        assert again.engine.settings.offline_s == 3600
        assert again.engine.settings.night_end == "06:30"
        assert again.engine.settings_of(OTHER).offline_s == 3600
        assert again.engine.person(OTHER).overrides == {}
        text = again.login("olga", "operator").get("/care/alerts").text
        assert 'name="s.offline_s" value="60"' in text


# -- the pieces -----------------------------------------------------------------------------------


def test_every_message_exists_in_every_language() -> None:
    catalogs = Catalogs(["msec.web", "msec.apps.care"])
    assert catalogs.problems() == []
    english = catalogs.messages["en"]
    used: set[str] = set()
    for template in TEMPLATES.rglob("*.html"):
        used |= set(re.findall(r'\bt\("([a-z0-9_.]+)"\s*[,)]', template.read_text()))
    assert used and sorted(used - english.keys()) == []
    for field in setting_fields():
        assert field.label in english and f"care.meaning.{field.name}" in english
    for kind in AlarmKind:
        assert f"care.kind_meaning.{kind.value}" in english
    dynamic = [f"care.event.{e}" for e in EVENTS] + [f"care.role.{r}" for r in DEVICE_ROLES]
    dynamic += [f"care.rule_type.{t}" for t in RULE_TYPES] + [f"care.saved.{s}" for s in SAVED]
    dynamic += [f"care.error.{e}" for e in FAILED] + ["care.saved.generic"]
    dynamic += [f"care.person.{f}" for f in ("home", *LIMITS, "birth_year")]
    assert [key for key in dynamic if key not in english] == []


def test_profiles_and_settings_forms_are_checked() -> None:
    assert Profile.parse({"name": " Ana ", "birth_year": ""}) == Profile("Ana")
    with pytest.raises(ProfileError) as exc:  # born after "now" (1970)
        Profile.parse({"name": "Ana", "birth_year": "1980"}, now=0)
    assert exc.value.field == "birth_year"
    bad = (({"name": ""}, "name"), ({"name": "A", "phone": "call me"}, "phone"),
           ({"name": "A\x00"}, "name"), ({"name": "A", "notes": "x" * 2001}, "notes"))
    for form, field in bad:
        with pytest.raises(ProfileError) as exc:
            Profile.parse(form)
        assert exc.value.field == field
    profile = Profile.parse({"name": "Ana", "address": "a\r\nb", "birth_year": "1940"})
    assert profile.address == "a\nb" and Profile.from_json(profile.to_json()) == profile
    for bad in ("home-0001-gw", "Home", "", "new", "a" * 41, "x/y"):
        with pytest.raises(ValueError):
            check_home(bad)
    fields = setting_fields()
    assert parse_settings({"s.inactivity_s": "90", "s.night_start": "", "s.appliance_w": "2,5"},
                          fields) == {"inactivity_s": 5400.0, "appliance_w": 2.5}  # fmt: skip
    with pytest.raises(FormError) as error:
        parse_settings({"s.offline_s": "nan"}, fields)
    assert error.value.field == "s.offline_s" and error.value.label == "care.setting.offline_s"


def people_store(engine: sa.Engine, tmp_path: Path) -> SqlPeople:
    """An empty people store on ``engine``, with its log and companion store."""
    log = SqlLog(engine)
    log.create_schema()
    companion = SqlCompanion(engine, FileKeyWrapper(tmp_path / "kek.key"))
    companion.create_schema()
    store = SqlPeople(engine, companion, log)
    store.create_schema()
    return store


def test_the_people_store(engine: sa.Engine, tmp_path: Path) -> None:
    store = people_store(engine, tmp_path)
    store.create_schema()  # idempotent
    ana = store.add(HOME, Profile("Ana", phone="1"), by="user:olga", at=10.0)
    assert (ana.home, ana.settings, ana.disabled, ana.configured) == (HOME, {}, frozenset(), False)
    with pytest.raises(DuplicatePerson):
        store.add(HOME, Profile("Other"), by="user:olga")
    with pytest.raises(UnknownPerson):
        store.update_profile(OTHER, Profile("x"), by="user:olga")
    with pytest.raises(UnknownPerson):
        store.set_config(OTHER, settings={}, disabled=(), rules={}, by="user:olga")
    store.update_profile(HOME, Profile("Ana María"), by="user:pablo")
    changed = store.set_config(HOME, settings={"inactivity_s": 60.0}, disabled=["low_battery"],
                               rules={"heater": {"for_s": 60.0}}, by="user:pablo")  # fmt: skip
    assert changed.configured and changed.updated_by == "user:pablo"
    assert changed.rules == {"heater": {"for_s": 60.0}} and changed.disabled == {"low_battery"}
    assert store.profile(changed) == Profile("Ana María")
    store.add(OTHER, Profile("Bea"), by="user:olga")
    assert [p.home for p in store.find([OTHER, "nobody", HOME])] == [HOME, OTHER]
    assert {h: p.name for h, p in store.profiles(store.all()).items()} == {
        HOME: "Ana María", OTHER: "Bea"}  # fmt: skip
    assert store.generic() == {}
    store.set_generic({"offline_s": 60.0}, by="user:olga")
    store.set_generic({"offline_s": 120.0}, by="user:olga")
    assert store.generic() == {"offline_s": 120.0}
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM care_people")).all()
    assert "Ana" not in json.dumps([list(map(str, r)) for r in rows])


def test_a_configuration_the_store_no_longer_holds_is_dropped_at_start(
    engine: sa.Engine, tmp_path: Path
) -> None:
    store = people_store(engine, tmp_path)
    store.add(HOME, Profile("Ana"), by="user:olga")
    store.set_config(HOME, settings={"inactivity_s": 60.0}, disabled=(), rules={},
                     by="user:olga")  # fmt: skip
    care = CareEngine(Sink())
    # The engine's snapshot still knows OTHER's own settings: saved before a crash, after
    # which OTHER was removed from the store.
    care.configure(OTHER, inactivity_s=120.0)
    assert care.configured_homes() == [OTHER]
    CarePeople(store, care).apply()
    assert care.configured_homes() == [HOME]
    assert care.settings_of(HOME).inactivity_s == 60.0
    assert care.settings_of(OTHER).inactivity_s == care.settings.inactivity_s
