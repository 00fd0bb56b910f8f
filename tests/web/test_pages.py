"""The pages for people, over HTTP: Park Guide and dashboard, sessions, CSRF, XSS, languages.

Real SQLite storage, the real access layer and the real park guide; readings are written to
the twin directly (the browser tests in tests/browser run the whole platform with its
simulators).
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from msec.access.model import Principal, PrincipalKind
from msec.apps.park_guide.app import install
from msec.apps.park_guide.guide import ParkGuide
from msec.core.models import Reading
from msec.platform import Platform, Settings
from msec.platform.runtime import web_ui
from msec.sdk.sim.park import PARK_DEVICES
from msec.web.app import create_app
from msec.web.i18n import Catalogs
from msec.web.live import LiveFeed
from msec.web.ui import CSP, WebUi

SITE = "http://testserver"
XSS = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
PASSWORD = "correct horse battery"


class Site:
    def __init__(self, platform: Platform, ui: WebUi, guide: ParkGuide, feed: LiveFeed,
                 client: TestClient) -> None:  # fmt: skip
        self.platform, self.ui, self.guide, self.feed, self.client = (
            platform, ui, guide, feed, client
        )

    def new_client(self) -> TestClient:
        return TestClient(self.client.app, base_url=SITE, follow_redirects=False)


def _seed(platform: Platform, *, noise: float = 52.0, co2: float = 430.0, at: float | None = None,
          seq: int = 1) -> None:  # fmt: skip
    now = time.time() if at is None else at
    rows = []
    for device in PARK_DEVICES:
        if device.kind == "environment_station":
            rows += [Reading(device.name, "environment", "co2", co2, now, seq),
                     Reading(device.name, "environment", "noise", noise, now, seq + 1),
                     Reading(device.name, "health", "battery", 80.0, now, seq + 2)]  # fmt: skip
        else:
            rows.append(Reading(device.name, "crowd", "count", 20, now, seq))
    platform.twin.write(rows)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    platform = Platform.open(Settings.load(None, data_dir=tmp_path / "data"))
    for d in PARK_DEVICES:
        platform.add_device(d.name, d.kind, description=d.description, latitude=d.latitude,
                            longitude=d.longitude)  # fmt: skip
    _seed(platform)
    operator = Principal("service:operator", PrincipalKind.SERVICE, "default",
                         frozenset({"operator"}))  # fmt: skip
    access = platform.access_service({"op-token": operator})
    ui, feed = web_ui(platform, access)
    app = create_app(twin=platform.twin, events=platform.events, ingestor=platform.ingestor,
                     access=access, principals=platform.principals, trust=platform.trust,
                     ui=ui)  # fmt: skip
    guide = install(app, ui, platform, feed)
    feed.poll()
    with TestClient(app, base_url=SITE, follow_redirects=False) as client:
        yield Site(platform, ui, guide, feed, client)
    platform.close()


def csrf_of(response) -> str:  # type: ignore[no-untyped-def]
    found = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert found, "the page has no CSRF token"
    return found.group(1)


def post(client: TestClient, page: str, path: str, data: dict[str, object]):  # type: ignore[no-untyped-def]
    """GET ``page`` for its token, then POST the form like a browser of this site would."""
    token = csrf_of(client.get(page))
    return client.post(path, data={"csrf": token, **data}, headers={"Origin": SITE})


def register(client: TestClient, email: str, *, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    return post(client, "/park/register", "/park/register",
                {"email": email, "password": password, "repeat": password, "consent": "yes"})


def login(client: TestClient, identifier: str, password: str):  # type: ignore[no-untyped-def]
    return post(client, "/login", "/login", {"identifier": identifier, "password": password})


def add_staff(site: Site, name: str, role: str) -> TestClient:
    site.platform.principals.add_user(name, tenant="default", roles=[role], password=PASSWORD)
    client = site.new_client()
    assert login(client, name, PASSWORD).status_code == 303
    return client


# -- pages for everyone ------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/park", "/park/stops/1", "/park/stops/4", "/park/qr",
                                  "/park/register", "/login", "/park/leaderboard"])
def test_public_pages_render_with_a_strict_csp(site: Site, path: str) -> None:
    response = site.client.get(path)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert response.headers["cache-control"] == "no-store"
    assert "<script>" not in response.text  # no inline script anywhere
    assert ' style="' not in response.text  # no inline style either (CSP style-src 'self')


def test_stop_page_shows_values_with_verdicts_and_proof_links(site: Site) -> None:
    page = site.client.get("/park/stops/1").text
    for measurement in ("co2", "noise", "crowd"):
        assert f'data-measurement="{measurement}"' in page
    assert "430" in page and "52.0" in page
    assert 'class="verdict good"' in page
    proofs = re.findall(r'href="(/proof/reading/[^"]+)"', page)
    assert proofs, "every value links to its proof"
    proof = site.client.get(proofs[0])
    assert proof.status_code == 200
    assert proof.text.count('data-status="ok"') == 4  # device, leaf, inclusion, signature
    data = site.client.get(proofs[0] + "/proof.json").json()
    assert data["verifier_key"] == site.platform.trust.verifier_key()
    assert data["index"] < data["size"]


def test_a_tampered_reading_fails_its_proof(site: Site) -> None:
    page = site.client.get("/park/stops/1").text
    device, seq = re.findall(r'href="/proof/reading/([^/"]+)/(\d+)"', page)[0]
    with site.platform.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE twin_readings SET value_num = value_num + 1 WHERE provider = ? AND seq = ?",
            (device, int(seq)),
        )
    proof = site.client.get(f"/proof/reading/{device}/{seq}")
    assert 'data-status="failed" data-check="leaf"' in proof.text


def test_unknown_stops_and_readings_are_404_pages(site: Site) -> None:
    for path in ("/park/stops/9", "/park/stops/abc", "/park/stops/-1",
                 "/proof/reading/llamas-01/999999", "/proof/reading/llamas-01/abc"):
        response = site.client.get(path, headers={"Accept": "text/html"})
        assert response.status_code == 404, path
        assert "<!doctype html>" in response.text
    # A device that is not public: anonymous visitors are asked to log in (whether it
    # exists or not), and the refusal is recorded.
    before = site.platform.audit.counters()["denied"]
    response = site.client.get("/proof/reading/x/1", headers={"Accept": "text/html"})
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    assert site.platform.audit.counters()["denied"] == before + 1


def test_qr_sheet_has_one_code_per_stop_linking_to_it(site: Site) -> None:
    page = site.client.get("/park/qr").text
    assert page.count("<svg") == 4
    for n in range(1, 5):
        assert f"{SITE}/park/stops/{n}" in page
    site.ui.public_url = "https://park.example.org"
    assert "https://park.example.org/park/stops/3" in site.client.get("/park/qr").text


def test_plan_json_has_areas_stops_and_heat(site: Site) -> None:
    plan = site.client.get("/park/plan.json").json()
    assert len(plan["areas"]) == len(plan["stops"]) == 4
    assert all(len(a["polygon"]) >= 3 for a in plan["areas"])
    assert plan["heat"] and all(0 <= h[2] <= 1 for h in plan["heat"])


# -- languages -------------------------------------------------------------------------------

def test_every_message_exists_in_every_language() -> None:
    catalogs = Catalogs(["msec.web", "msec.apps.park_guide"])
    assert catalogs.problems() == []


def test_language_by_query_cookie_and_header(site: Site) -> None:
    spanish = site.client.get("/park/stops/1?lang=es")
    assert 'lang="es"' in spanish.text and "En esta zona" in spanish.text
    assert spanish.cookies.get("msec_lang") == "es"
    assert "En esta zona" in site.client.get("/park/stops/1").text  # remembered
    other = site.new_client()
    assert "このエリアでは" in other.get("/park/stops/1", headers={"Accept-Language": "ja"}).text
    assert "In this area" in other.get("/park/stops/1?lang=<script>").text


# -- registration, consent, erasure ----------------------------------------------------------------

def test_register_rate_and_delete_account(site: Site, tmp_path: Path) -> None:
    client = site.new_client()
    register_page = client.get("/park/register").text
    for field in ("Who is responsible", "Purpose", "Legal basis", "Who receives it",
                  "Your rights"):
        assert field in register_page
    response = register(client, "Ana.Garcia@example.org")
    assert response.status_code == 303 and response.headers["location"].startswith("/park/account")
    account = client.get("/park/account").text
    pseudonym = re.search(r'id="pseudonym">([^<]+)<', account).group(1)  # type: ignore[union-attr]
    user = site.platform.principals.list_users()[-1]
    principal_id = f"user:{user.name}"
    assert site.platform.consent.has_consented(principal_id, "park_guide")
    # The address is stored only encrypted (companion) and as a keyed hash.
    site.platform.engine.dispose()
    database = (tmp_path / "data" / "msec.db").read_bytes()
    wal = tmp_path / "data" / "msec.db-wal"
    stored = database + (wal.read_bytes() if wal.exists() else b"")
    assert b"ana.garcia@example.org" not in stored.lower()

    # A visit earns points once a day; a rating earns points and shows on the board.
    assert "You earned 10 points" in client.get("/park/stops/2").text
    assert "You earned" not in client.get("/park/stops/2").text
    rated = post(client, "/park/stops/2", "/park/stops/2/rate",
                 {"measurement": "noise", "stars": "2", "flags": ["seems_wrong"],
                  "comment": XSS})  # fmt: skip
    assert rated.headers["location"] == "/park/stops/2?rated=1"
    assert site.guide.store.points_of(principal_id) == 15
    assert pseudonym in client.get("/park/leaderboard").text
    account = client.get("/park/account").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in account and XSS not in account
    exported = client.get("/park/account/export.json").json()
    assert exported["profile"]["records"][0]["content"]["email"] == "ana.garcia@example.org"
    assert exported["participant"]["pseudonym"] == pseudonym and len(exported["ratings"]) == 1

    # Logging out and in again with the e-mail address.
    token = csrf_of(client.get("/park/account"))
    client.post("/logout", data={"csrf": token}, headers={"Origin": SITE})
    assert client.get("/park/account").status_code == 303
    assert login(client, "ana.garcia@example.org", PASSWORD).status_code == 303

    # Deleting: consent withdrawn, profile erased, e-mail forgotten, sessions ended.
    deleted = post(client, "/park/account", "/park/account/delete", {"confirm": "yes"})
    assert deleted.status_code == 303
    assert not site.platform.consent.has_consented(principal_id, "park_guide")
    assert site.ui.emails.user_of("ana.garcia@example.org") is None
    assert pseudonym not in client.get("/park/leaderboard").text
    assert client.get("/park/account").status_code == 303  # logged out
    assert login(client, "ana.garcia@example.org", PASSWORD).status_code == 401
    assert site.guide.store.trust_score("llamas-03").ratings == 1  # kept, anonymised
    assert site.platform.trust.verify().ok


def test_registration_refuses_bad_input_and_keeps_the_form(site: Site) -> None:
    client = site.new_client()
    cases = [
        ({"email": "not-an-address"}, "valid e-mail"),
        ({"email": XSS}, "valid e-mail"),
        ({"password": "short", "repeat": "short"}, "10 to 1024"),
        ({"repeat": "something else entirely"}, "differ"),
        ({"consent": "no"}, "tick the box"),
    ]
    for change, message in cases:
        data = {"email": "b@example.org", "password": PASSWORD, "repeat": PASSWORD,
                "consent": "yes"} | change  # fmt: skip
        response = post(client, "/park/register", "/park/register", data)
        assert response.status_code == 400, change
        assert message in response.text
        assert "<script>alert(1)" not in response.text
    assert register(client, "b@example.org").status_code == 303
    other = site.new_client()
    taken = register(other, "B@Example.org")
    assert taken.status_code == 400 and "already registered" in taken.text


def test_withdrawn_consent_stops_points_and_ratings(site: Site) -> None:
    client = site.new_client()
    register(client, "c@example.org")
    post(client, "/park/account", "/park/account/withdraw", {})
    assert "You earned" not in client.get("/park/stops/3").text
    refused = post(client, "/park/stops/3", "/park/stops/3/rate",
                   {"measurement": "co2", "stars": "5"})  # fmt: skip
    assert refused.headers["location"].endswith("error=consent")
    post(client, "/park/account", "/park/account/consent", {"consent": "yes"})
    assert "You earned 10 points" in client.get("/park/stops/3").text


def test_invalid_ratings_are_refused(site: Site) -> None:
    client = site.new_client()
    register(client, "d@example.org")
    for data in ({"measurement": "co2", "stars": "9"}, {"measurement": "co2", "stars": "x"},
                 {"measurement": "co2", "stars": "3", "flags": ["nonsense"]},
                 {"measurement": "co2", "stars": "3", "comment": "x" * 501}):
        response = post(client, "/park/stops/1", "/park/stops/1/rate", data)
        assert response.headers["location"].endswith("error=invalid"), data
    bad = post(client, "/park/stops/1", "/park/stops/1/rate", {"measurement": "<b>", "stars": 3})
    assert bad.status_code == 400
    # Each crafted rating is a security event; nothing of them is stored.
    assert site.platform.events.counts().get("malformed", 0) == 5
    assert site.guide.store.rating_count() == 0


# -- CSRF, brute force, roles ----------------------------------------------------------------------

def test_forms_without_a_valid_csrf_token_are_refused(site: Site) -> None:
    client = site.new_client()
    client.get("/login")  # the browser nonce cookie
    before = site.platform.events.counts().get("csrf", 0)
    cases = [
        ({"identifier": "x", "password": "y"}, {"Origin": SITE}),
        ({"identifier": "x", "password": "y", "csrf": "forged"}, {"Origin": SITE}),
        ({"identifier": "x", "password": "y", "csrf": csrf_of(client.get("/login"))},
         {"Origin": "https://evil.example"}),
        ({"identifier": "x", "password": "y", "csrf": csrf_of(client.get("/login"))},
         {"Origin": "null"}),
    ]
    for data, headers in cases:
        assert client.post("/login", data=data, headers=headers).status_code == 403
    # A token of another browser is worth nothing here.
    stranger = site.new_client()
    token = csrf_of(stranger.get("/park/register"))
    data = {"email": "e@example.org", "password": PASSWORD, "repeat": PASSWORD,
            "consent": "yes", "csrf": token}  # fmt: skip
    assert client.post("/park/register", data=data, headers={"Origin": SITE}).status_code == 403
    assert site.platform.events.counts().get("csrf", 0) == before + len(cases) + 1
    # A session's forms need the session's token, not the anonymous one.
    register(client, "f@example.org")
    response = client.post("/park/account/delete", data={"confirm": "yes", "csrf": token},
                           headers={"Origin": SITE})  # fmt: skip
    assert response.status_code == 403
    assert client.get("/park/account").status_code == 200  # still there


def test_oversized_and_malformed_forms(site: Site) -> None:
    client = site.new_client()
    token = csrf_of(client.get("/login"))
    big = client.post("/login", data={"csrf": token, "identifier": "x" * 20000},
                      headers={"Origin": SITE})  # fmt: skip
    assert big.status_code == 413
    json_body = client.post("/login", json={"csrf": token}, headers={"Origin": SITE})
    assert json_body.status_code == 415


def test_login_brute_force_locks_the_account(site: Site) -> None:
    site.platform.principals.add_user("officer-ana", tenant="default", roles=["officer"],
                                      password=PASSWORD)  # fmt: skip
    client = site.new_client()
    for _ in range(5):
        assert login(client, "officer-ana", "wrong password!").status_code == 401
    locked = login(client, "officer-ana", PASSWORD)
    assert locked.status_code == 429 and "locked" in locked.text
    assert "msec_session" not in locked.cookies
    assert site.platform.events.counts().get("login_failed", 0) >= 6
    # Unknown users and wrong passwords look alike.
    unknown = login(site.new_client(), "nobody", "wrong password!")
    assert unknown.status_code == 401 and "Wrong e-mail, user name or password" in unknown.text


def test_login_redirects_only_within_the_site(site: Site) -> None:
    site.platform.principals.add_user("officer-bo", tenant="default", roles=["officer"],
                                      password=PASSWORD)  # fmt: skip
    for target, expected in (("//evil.example/x", "/dashboard/park"),
                             ("https://evil.example", "/dashboard/park"),
                             ("/park/stops/2", "/park/stops/2")):
        client = site.new_client()
        token = csrf_of(client.get("/login"))
        response = client.post("/login", data={"csrf": token, "identifier": "officer-bo",
                                               "password": PASSWORD, "next": target},
                               headers={"Origin": SITE})  # fmt: skip
        assert response.headers["location"] == expected, target


def test_session_cookie_flags(site: Site) -> None:
    site.platform.principals.add_user("officer-cy", tenant="default", roles=["officer"],
                                      password=PASSWORD)  # fmt: skip
    client = site.new_client()
    response = login(client, "officer-cy", PASSWORD)
    cookie = next(h for h in response.headers.get_list("set-cookie")
                  if h.startswith("msec_session="))  # fmt: skip
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    # Over HTTPS (``auto``), or always when configured so: Secure.
    https = TestClient(site.client.app, base_url="https://testserver", follow_redirects=False)
    token = csrf_of(https.get("/login"))
    response = https.post("/login", data={"csrf": token, "identifier": "officer-cy",
                                          "password": PASSWORD},
                          headers={"Origin": "https://testserver"})  # fmt: skip
    cookie = next(h for h in response.headers.get_list("set-cookie")
                  if h.startswith("msec_session="))  # fmt: skip
    assert "Secure" in cookie
    site.ui.secure_cookies = "always"
    page = site.new_client().get("/login")
    assert all("Secure" in h for h in page.headers.get_list("set-cookie"))


def test_a_citizen_never_reaches_the_dashboard(site: Site) -> None:
    client = site.new_client()
    register(client, "g@example.org")
    denied_before = site.platform.audit.counters()["denied"]
    for path in ("/dashboard/park", "/dashboard/park/series.json?measurement=co2",
                 "/dashboard/park/export.csv"):
        response = client.get(path, headers={"Accept": "text/html"})
        assert response.status_code == 403, path
    token = csrf_of(client.get("/park/account"))
    for path, data in (("/dashboard/park/thresholds",
                        {"area": "*", "measurement": "co2", "op": ">", "value": "1"}),
                       ("/dashboard/park/notices/1/ack", {})):
        response = client.post(path, data={"csrf": token, **data}, headers={"Origin": SITE})
        assert response.status_code == 403, path
    assert site.guide.store.thresholds() == []
    assert site.platform.audit.counters()["denied"] >= denied_before + 5
    assert "/dashboard/park" not in client.get("/park").text  # not even linked
    anonymous = site.new_client().get("/dashboard/park")
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")


# -- the municipality's board ------------------------------------------------------------------

def test_officer_threshold_raises_a_notice_and_exports_csv(site: Site) -> None:
    officer = add_staff(site, "officer-di", "officer")
    board = officer.get("/dashboard/park")
    assert board.status_code == 200
    for kpi in ("participants", "readings_verified", "tamper_checks_passed",
                "unauthorised_attempts"):
        assert f'data-kpi="{kpi}"' in board.text
    added = post(officer, "/dashboard/park", "/dashboard/park/thresholds",
                 {"area": "los_castros", "measurement": "noise", "op": ">", "value": "51.5"})
    assert added.status_code == 303
    notices = site.guide.store.notices(open_only=True)
    assert [(n.area, n.measurement, n.value) for n in notices] == [("los_castros", "noise", 52.0)]
    assert "Open notices: 1" in officer.get("/dashboard/park").text
    # The simulator's next quieter reading clears it; a louder one raises a new one.
    _seed(site.platform, noise=50.0, seq=100)
    site.feed.poll()
    assert site.guide.store.notices(open_only=True) == []
    _seed(site.platform, noise=66.0, seq=200)
    site.feed.poll()
    assert len(site.guide.store.notices(open_only=True)) == 1
    bad = post(officer, "/dashboard/park", "/dashboard/park/thresholds",
               {"area": XSS, "measurement": "noise", "op": ">", "value": "nan"})
    assert bad.headers["location"].endswith("error=threshold")

    exported = officer.get("/dashboard/park/export.csv?hours=1")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0][:6] == ["time_utc", "stop", "area", "device", "measurement", "value"]
    assert len(rows) > 10 and {r[4] for r in rows[1:]} == {"co2", "noise", "crowd"}
    series = officer.get("/dashboard/park/series.json?measurement=noise").json()
    assert series["threshold"] == 51.5 and len(series["series"]) == 4
    assert officer.get("/dashboard/park/series.json?measurement=x").status_code == 400
    assert officer.get("/dashboard/park/export.csv?hours=-1").status_code == 400


def test_csv_cells_never_start_a_formula() -> None:
    from msec.apps.park_guide.dashboard import _cell

    assert _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _cell("@SUM") == "'@SUM" and _cell("lake") == "lake"


def test_live_streams_past_the_cap_are_refused(site: Site) -> None:
    site.feed.max_per_source = 0
    response = site.client.get("/park/stops/1/live")
    assert response.status_code == 429
    assert site.platform.events.counts().get("rate_limited", 0) == 1
