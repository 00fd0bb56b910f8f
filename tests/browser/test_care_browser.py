"""Pilot 2 in a browser: an operator handles an alarm on the live board and looks after a
person; a caregiver sees only the home that granted them access, until it is revoked."""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

import pytest

from msec.apps.care.model import AlarmKind, CareSettings
from msec.apps.care.people import Profile, SqlPeople

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips these tests (fails them in CI)
    expect = None

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.slow

#: A person the operator creates (no devices: the test raises her alarms itself).
NEW_HOME = "home-0101"
#: Homes of the demo's simulated fleet (``msec.platform.care_demo``), devices reporting: the
#: operator records who lives in the first, the person of the second lets a caregiver in.
DEMO_HOME = "home-0001"
CAREGIVER_HOME = "home-0002"


def log_in(page: Page, user: str, password: str) -> None:
    page.goto("/login")
    page.fill("#identifier", user)
    page.fill("#password", password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login" not in url)


def nav(page: Page, path: str) -> Any:
    """The navigation bar's link to ``path``."""
    return page.locator(f"header nav a[href='{path}']")


def care(demo: Any) -> Any:
    return demo.runtime.apps["care"]


def test_operator_handles_an_alarm_and_looks_after_a_person(
    officer_page: Page, demo: Any, shot: Any, watch: Any
) -> None:
    page = officer_page
    alarms = care(demo).alarms
    log_in(page, "demo-operator", demo.password("operator"))
    expect(page).to_have_url(re.compile(r"/care$"))

    # -- a new person, her alarm settings, her devices' page --------------------------------
    nav(page, "/care/homes").click()
    page.get_by_role("link", name="New person").click()
    page.fill("#home", NEW_HOME)
    page.fill("#p-name", "Ana Ruiz Gómez")
    page.fill("#p-address", "Calle Alta 3, 1ºA\n39008 Santander")
    page.fill("#p-phone", "+34 942 555 010")
    page.fill("#p-birth_year", "1941")
    page.fill("#p-notes", "Key with the neighbour in 1ºB. Hard of hearing: ring twice.")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("h1")).to_have_text("Ana Ruiz Gómez")
    expect(page.locator("#saved")).to_be_visible()
    page.fill("#s\\.night_start", "21:30")
    page.fill("#s\\.inactivity_s", "120")
    page.get_by_label("Appliance on for hours").uncheck()
    page.get_by_role("button", name="Save the alarm settings").click()
    expect(page.locator("#saved")).to_contain_text("Alarm settings saved")
    expect(page.locator("#s\\.night_start")).to_have_value("21:30")
    assert care(demo).service.engine.person(NEW_HOME).disabled == {"appliance_on"}
    page.fill("#s\\.night_end", "29:00")  # past the browser's own check (the pattern)
    watch.allow(rf"status of 400 .*/care/homes/{NEW_HOME}/settings\)$")  # the refusal
    page.get_by_role("button", name="Save the alarm settings").click()
    expect(page.locator("#config-error")).to_contain_text("Night ends: write a local time")

    # -- the board: an alarm comes in live, is acknowledged with a note, then resolved -------
    first = alarms.raise_alarm(NEW_HOME, AlarmKind.INACTIVITY, "browser-1",
                               detail={"hours": 2})  # fmt: skip
    nav(page, "/care").click()
    row = page.locator(f"#alarm-{first.id}")
    expect(row).to_have_attribute("data-state", "raised")
    expect(row).to_contain_text("No movement for hours")
    page.evaluate("window.__sameDocument = true")
    second = alarms.raise_alarm(NEW_HOME, AlarmKind.NIGHT_DOOR, "browser-2", detail={})
    live = page.locator(f"#alarm-{second.id}")
    expect(live).to_have_attribute("data-state", "raised")  # by server-sent events
    assert page.evaluate("window.__sameDocument") is True  # no reload
    page.wait_for_timeout(1500)  # the new alarm's highlight fades (site.css .flash)
    shot(page, "care-01-board")

    row.get_by_label("Note").fill("Called her: she had fallen asleep in the armchair.")
    row.get_by_role("button", name="Acknowledge").click()
    row = page.locator(f"#alarm-{first.id}")
    expect(row).to_have_attribute("data-state", "acknowledged")
    expect(row).to_contain_text("demo-operator")
    row.get_by_label("Note").fill("She is fine; the daughter will visit.")
    row.get_by_label("It was a false alarm").check()
    row.get_by_role("button", name="Resolve").click()
    expect(page.locator(f"#alarm-{first.id}")).to_have_count(0)
    resolved = alarms.get(first.id)
    assert resolved.state == "resolved" and resolved.false_positive
    assert [n.text for n in resolved.notes] == [
        "Called her: she had fallen asleep in the armchair.",
        "She is fine; the daughter will visit.",
    ]
    shot(page, "care-02-board-handled")

    # -- the person's page: the alarm's history with its notes --------------------------------
    page.locator(f"#alarm-{second.id} a[href='/care/homes/{NEW_HOME}']").click()
    history = page.locator(f"#alarm-history li[data-alarm='{first.id}']")
    expect(history).to_have_attribute("data-state", "resolved")
    expect(history).to_contain_text("She is fine; the daughter will visit.")
    shot(page, "care-03-person-history")

    # -- a home of the demo whose devices report: who lives there ----------------------------
    nav(page, "/care/homes").click()
    page.locator(f"#people tr[data-home='{DEMO_HOME}'] a").click()
    expect(page.locator(f"tr[data-device='{DEMO_HOME}-gw']")).to_have_attribute(
        "data-status", "online"
    )
    page.fill("#p-name", "Dolores Fuertes de la Vega")
    page.fill("#p-address", "Calle del Sol 12, 3ºB\n39001 Santander")
    page.fill("#p-phone", "+34 942 123 456")
    page.fill("#p-birth_year", "1938")
    page.get_by_role("button", name="Save the personal data").click()
    expect(page.locator("h1")).to_have_text("Dolores Fuertes de la Vega")
    shot(page, "care-04-person")

    nav(page, "/care/devices").click()
    expect(page.locator("h1")).to_have_text("Devices")
    nav(page, "/care/alerts").click()
    settings = len(dataclasses.fields(CareSettings))
    expect(page.locator("#generic-settings tr[data-setting]")).to_have_count(settings)
    shot(page, "care-05-alerts")


def test_caregiver_sees_only_the_granted_home_until_revoked(
    new_page: Any, demo: Any, shot: Any, watch: Any
) -> None:
    app = care(demo)
    platform = app.platform
    store = SqlPeople(platform.engine, platform.companion, platform.trust.log)
    if store.get(CAREGIVER_HOME) is None:
        store.add(CAREGIVER_HOME, Profile("Ramón Pérez", phone="+34 942 000 111",
                                          address="Avenida de la Reina Victoria 8"),
                  by="user:demo-operator")  # fmt: skip
    # The demo's engine may have raised this one already (one active alarm per kind).
    mine = app.alarms.raise_alarm(CAREGIVER_HOME, AlarmKind.INACTIVITY, "browser-3", detail={})
    mine = mine or app.alarms.active(CAREGIVER_HOME, AlarmKind.INACTIVITY)[0]
    grant = platform.consent.grant(CAREGIVER_HOME, "user:demo-caregiver",
                                   scope=f"{CAREGIVER_HOME}-*",
                                   granted_by=f"user:{CAREGIVER_HOME}")  # fmt: skip
    page = new_page(mobile=True)
    log_in(page, "demo-caregiver", demo.password("caregiver"))
    expect(page).to_have_url(re.compile(r"/care$"))
    expect(page.locator(f"#alarm-{mine.id}")).to_contain_text("No movement for hours")
    expect(page.locator(f"#alarm-{mine.id} form")).to_have_count(0)  # nothing to handle
    homes = {a.get_attribute("href") for a in page.locator("#active-alarms li a").all()}
    assert homes == {f"/care/homes/{CAREGIVER_HOME}"}  # not the other homes' alarms
    rows = page.locator("#homes tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-home", CAREGIVER_HOME)

    nav(page, "/care/homes").click()
    rows = page.locator("#people tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-home", CAREGIVER_HOME)
    rows.first.get_by_role("link").click()
    expect(page.locator("h1")).to_have_text("Ramón Pérez")
    expect(page.locator("#profile")).to_contain_text("+34 942 000 111")
    expect(page.locator("form#profile-form, form#settings-form")).to_have_count(0)
    expect(nav(page, "/care/devices")).to_have_count(0)
    expect(nav(page, "/care/alerts")).to_have_count(0)
    shot(page, "care-06-caregiver")

    # The person withdraws her consent: the caregiver's next request no longer sees her.
    platform.consent.revoke(grant.id, by=f"user:{CAREGIVER_HOME}")
    watch.allow(rf"status of 404 .*/care/homes/{CAREGIVER_HOME}\)$")
    page.reload()
    expect(page.locator("h1")).not_to_have_text("Ramón Pérez")
    assert "Ramón" not in page.content()
    page.goto("/care/homes")
    expect(page.locator("#people")).to_have_count(0)
    expect(page.locator("#no-people")).to_be_visible()
    page.goto("/care")
    expect(page.locator(f"#alarm-{mine.id}")).to_have_count(0)
    expect(page.locator("#homes tbody tr")).to_have_count(0)
    shot(page, "care-07-caregiver-revoked")
