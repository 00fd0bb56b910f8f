"""Pilot 1 in a phone's browser: a visitor scans a stop's QR code, joins, rates and leaves."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import msec.apps.park_guide

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips these tests (fails them in CI)
    expect = None

if TYPE_CHECKING:
    from playwright.sync_api import Dialog, Page

pytestmark = pytest.mark.slow

MEASUREMENTS = ("co2", "noise", "crowd")
VERDICTS = re.compile(r"^(Good|Moderate|Poor)$")
XSS = "<script>alert(1)</script>"
LOCALES = Path(msec.apps.park_guide.__file__).parent / "locales"


def catalog(lang: str) -> dict[str, str]:
    return json.loads((LOCALES / f"{lang}.json").read_text(encoding="utf-8"))


def card(page: Page, measurement: str) -> Any:
    """The value card of ``measurement`` on a stop page (replaced whole by each update)."""
    return page.locator(f"li#value-{measurement} > .value")


def seqs(page: Page) -> dict[str, str | None]:
    return {m: card(page, m).get_attribute("data-seq") for m in MEASUREMENTS}


def test_visitor_scans_joins_rates_verifies_and_deletes(
    citizen_page: Page, shot: Any, watch: Any
) -> None:
    page = citizen_page
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        # Only the deletion asks; anything else (an alert from injected script) is a failure.
        if dialog.type == "confirm" and "Delete your account" in dialog.message:
            dialog.accept()
        else:
            dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

    page.on("dialog", on_dialog)

    # -- the QR code of stop 1 opens its page: three values, each with a verdict ------------
    page.goto("/park/stops/1")
    for m in MEASUREMENTS:
        expect(card(page, m).locator("[data-value]")).to_have_text(re.compile(r"^\d+(\.\d)?$"))
        expect(card(page, m).locator(".verdict")).to_have_text(VERDICTS)
        expect(card(page, m).locator("a.badge")).to_have_attribute(
            "href", re.compile(r"^/proof/reading/[\w.-]+/\d+$")
        )
    shot(page, "citizen-01-stop")

    # -- a new reading replaces a card without a reload (htmx over SSE) ---------------------
    page.evaluate("window.__sameDocument = true")
    before = seqs(page)
    page.wait_for_function(
        """(before) => ["co2", "noise", "crowd"].some((m) => {
            const el = document.querySelector(`#value-${m} > .value`);
            return el && el.dataset.seq !== before[m];
        })""",
        arg=before,
    )
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    assert seqs(page) != before
    shot(page, "citizen-02-stop-live")

    # -- registration, from the link on the stop page, after reading the notice -------------
    page.locator("main").get_by_role("link", name="Register").click()
    expect(page).to_have_url(re.compile(r"/park/register\?next=/park/stops/1$"))
    notice = page.locator("#consent-notice")
    expect(notice).to_be_visible()
    labels = ["Who is responsible", "Purpose", "Legal basis", "Who receives it", "Your rights"]
    for label in labels:
        term = notice.locator("dt", has_text=label)
        expect(term).to_be_visible()
        expect(term.locator("xpath=following-sibling::dd[1]")).to_have_text(re.compile(r"\S"))
    shot(page, "citizen-03-register")
    email = f"visitor-{secrets.token_hex(4)}@example.org"
    password = secrets.token_urlsafe(12)
    page.fill("#email", email)
    page.fill("#password", password)
    page.fill("#repeat", password)
    page.check("#consent")
    page.get_by_role("button", name="Create my account").click()

    # -- back at the stop, now with points for the visit and the rating form ----------------
    expect(page).to_have_url(re.compile(r"/park/stops/1$"))
    expect(page.get_by_role("status")).to_contain_text("You earned 10 points")
    form = page.locator("#rate-form")
    expect(form).to_be_visible()
    shot(page, "citizen-04-stop-registered")
    form.locator("#measurement").select_option("noise")
    form.locator("label[for='stars-2']").click()  # the radio itself is visually hidden
    expect(form.locator("#stars-2")).to_be_checked()
    form.locator("input[name='flags']").first.check()
    form.locator("#comment").fill(f"Odd value {XSS}")
    form.get_by_role("button", name="Send rating").click()
    expect(page).to_have_url(re.compile(r"/park/stops/1\?rated=1$"))
    expect(page.locator("#rated")).to_have_text("Thank you! Your rating was saved.")
    shot(page, "citizen-05-rated")

    # -- the account shows the points, the nickname, and the comment as plain text ----------
    page.goto("/park/account")
    expect(page.locator("#points")).to_have_text("15")  # 10 for the visit, 5 for the rating
    pseudonym = page.locator("#pseudonym").inner_text().strip()
    assert pseudonym
    comment = page.locator("table td", has_text="Odd value")
    expect(comment).to_have_text(f"Odd value {XSS}")
    assert comment.locator("script").count() == 0
    shot(page, "citizen-06-account")

    # -- the leaderboard lists the nickname, marked as the visitor's own --------------------
    page.goto("/park/leaderboard")
    mine = page.locator("table#leaderboard tr.me")
    expect(mine).to_contain_text(pseudonym)
    expect(mine.locator("td").last).to_have_text("15")
    shot(page, "citizen-07-leaderboard")

    # -- a "verified" badge opens the proof, which the browser checks itself ----------------
    page.goto("/park/stops/1")
    page.locator("#value-co2 a.badge").click()
    expect(page).to_have_url(re.compile(r"/proof/reading/[\w.-]+/\d+$"))
    expect(page.locator("#proof")).to_have_attribute("data-verified", "true")
    for step in ("leaf", "inclusion", "checkpoint", "signature"):
        expect(page.locator(f"#proof li[data-step='{step}']")).to_have_attribute(
            "data-status", "ok"
        )
    shot(page, "citizen-08-proof")

    # -- deleting the account (confirmed twice) signs out and forgets the e-mail ------------
    page.goto("/park/account")
    page.check("#confirm-delete")
    page.click("#delete-account")
    expect(page).to_have_url(re.compile(r"/park\?deleted=1$"))
    expect(page.get_by_role("status")).to_have_text(
        "Your account and your personal data were deleted."
    )
    shot(page, "citizen-09-deleted")
    page.goto("/login")
    watch.allow(r"status of 401 .*/login\)$")  # the refused login answers 401
    page.fill("#identifier", email)
    page.fill("#password", password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-error")).to_have_text("Wrong e-mail, user name or password.")
    shot(page, "citizen-10-login-refused")
    assert dialogs == [], dialogs


def test_plan_draws_the_map_with_four_stops(citizen_page: Page, shot: Any) -> None:
    page = citizen_page
    page.goto("/park")
    plan = page.locator("#park-plan")
    expect(plan).to_have_class(re.compile(r"\bleaflet-container\b"))
    expect(plan).to_have_attribute("data-state", "ok")
    expect(plan.locator(".leaflet-marker-icon.plan-stop")).to_have_count(4)
    expect(page.locator("#stop-list > li")).to_have_count(4)
    shot(page, "citizen-plan")


def test_qr_sheet_has_four_codes(citizen_page: Page, shot: Any) -> None:
    page = citizen_page
    page.goto("/park/qr")
    codes = page.locator(".qr-card svg")
    expect(codes).to_have_count(4)
    for i in range(4):
        expect(codes.nth(i)).to_be_visible()
    shot(page, "citizen-qr")


@pytest.mark.parametrize("lang", ["es", "ja"])
def test_pages_speak_spanish_and_japanese(citizen_page: Page, shot: Any, lang: str) -> None:
    page = citizen_page
    english, local = catalog("en"), catalog(lang)
    for path, key, selector in [
        ("/park/stops/1", "stop.in_area", "main h2 >> nth=0"),
        ("/park", "plan.stops", "main h2 >> nth=0"),
        ("/park/register", "register.title", "h1"),
    ]:
        assert local[key] != english[key], key
        page.goto(f"{path}?lang={lang}")
        expect(page.locator("html")).to_have_attribute("lang", lang)
        expect(page.locator(selector)).to_have_text(local[key])
        shot(page, f"citizen-{lang}-{path.strip('/').replace('/', '-')}")
    # The choice is remembered: the next page without ?lang= keeps the language.
    page.goto("/park/leaderboard")
    expect(page.locator("h1")).to_have_text(local["leaderboard.title"])
