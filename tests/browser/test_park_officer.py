"""Pilot 1 on the municipality's desktop: the officer's park dashboard, live notices, CSV."""

from __future__ import annotations

import csv
import io
import re
from typing import TYPE_CHECKING, Any

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips these tests (fails them in CI)
    expect = None

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.slow

CSV_HEADER = ["time_utc", "stop", "area", "device", "measurement", "value", "unit", "seq",
              "proof"]  # fmt: skip
#: How far below an area's current noise the test's threshold lies: readings vary by about
#: 0.1 dB(A) between two reports, and a notice raised once stays listed even when it clears.
NOISE_MARGIN_DB = 3.0


def log_in(page: Page, user: str, password: str) -> None:
    page.goto("/login")
    page.fill("#identifier", user)
    page.fill("#password", password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login" not in url)


def test_officer_watches_the_park_sets_a_threshold_and_exports(
    officer_page: Page, demo: Any, shot: Any
) -> None:
    page = officer_page
    log_in(page, "demo-officer", demo.password("officer"))
    page.goto("/dashboard/park")
    expect(page.locator("h1")).to_have_text("Park dashboard")

    # -- KPIs, the areas side by side, three uPlot charts, the devices' health ----------------
    kpis = page.locator("#kpis [data-kpi]")
    expect(kpis).to_have_count(6)
    expect(page.locator("[data-kpi='readings_verified']")).to_have_text(re.compile(r"^[1-9]\d*$"))
    rows = page.locator("#areas tbody tr[data-area]")
    expect(rows).to_have_count(4)
    for m in ("co2", "noise", "crowd"):
        chart = page.locator(f"#chart-{m}")
        expect(chart).to_have_attribute("data-state", "ok")
        expect(chart.locator(".uplot canvas")).to_be_visible()
    expect(page.locator(".chart .uplot")).to_have_count(3)
    health = page.locator("#device-health tbody tr")
    expect(health).to_have_count(7)
    expect(page.locator("#device-health tr[data-silent]")).to_have_count(0)
    shot(page, "officer-01-dashboard")

    # -- a threshold set in another tab raises a notice that arrives here by SSE -------------
    # The quietest area: a loud minute (a siren, a motorbike) could end before the threshold
    # is checked, and it is least likely to be passing there.
    readings = {
        row.get_attribute("data-area"): float(row.locator("td").nth(1).locator("a").inner_text())
        for row in rows.all()
    }
    area, noise = min(readings.items(), key=lambda item: item[1])
    limit = round(noise - NOISE_MARGIN_DB, 1)
    page.evaluate("window.__sameDocument = true")
    notices = page.locator("#notices-live li[data-notice]")
    expect(page.locator("#open-notices")).to_have_text("Open notices: 0")
    expect(notices).to_have_count(0)

    editor = page.context.new_page()
    editor.goto("/dashboard/park")
    editor.select_option("#th-area", area)
    editor.select_option("#th-measurement", "noise")
    editor.select_option("#th-op", ">")
    editor.fill("#th-value", str(limit))
    editor.locator("#threshold-form").get_by_role("button", name="Add threshold").click()
    editor.wait_for_url(re.compile(r"/dashboard/park#thresholds$"))
    expect(editor.locator("#thresholds table")).to_contain_text(f"> {limit}")
    shot(editor, "officer-02-threshold-set")
    editor.close()

    notice = notices.filter(has_text=f"Noise > {limit}").first
    expect(notice).to_be_visible(timeout=15_000)
    expect(notice).to_contain_text(area)
    assert page.evaluate("window.__sameDocument") is True, "the dashboard was reloaded"
    shot(page, "officer-03-notice-live")

    notice_id = notice.get_attribute("data-notice")
    notice.get_by_role("button", name="Acknowledge").click()
    page.wait_for_url(re.compile(r"/dashboard/park#notices$"))
    acknowledged = page.locator(f"#notices-live li[data-notice='{notice_id}']")
    expect(acknowledged).to_contain_text("acknowledged by user:demo-officer")
    expect(acknowledged.get_by_role("button", name="Acknowledge")).to_have_count(0)
    shot(page, "officer-04-notice-acknowledged")

    # -- the CSV export: a header and signed readings with their proof links -----------------
    with page.expect_download() as download_info:
        page.click("#export-csv")
    download = download_info.value
    assert re.fullmatch(r"park-\d{8}-\d{4}\.csv", download.suggested_filename)
    text = download.path().read_text(encoding="utf-8")
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == CSV_HEADER
    assert len(table) > 1
    row = dict(zip(CSV_HEADER, table[1], strict=True))
    assert row["measurement"] in {"co2", "noise", "crowd"}
    assert row["proof"] == f"/proof/reading/{row['device']}/{row['seq']}"
    float(row["value"])


def test_a_citizen_may_not_open_the_dashboard(
    officer_page: Page, demo: Any, watch: Any, shot: Any
) -> None:
    page = officer_page
    log_in(page, "demo-citizen", demo.password("citizen"))
    watch.allow(r"status of 403 .*/dashboard/park\)$")  # the refusal itself
    response = page.goto("/dashboard/park")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text("Not allowed")
    expect(page.get_by_role("alert")).to_have_text("Your account may not open this page.")
    expect(page.locator("#kpis")).to_have_count(0)
    shot(page, "officer-citizen-refused")
