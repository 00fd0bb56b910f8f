"""Connected Care's portal over HTTP: the operators' board and the caregivers' view."""

from __future__ import annotations

import re

import pytest
from care_site import HOMES, CareSite
from fastapi.testclient import TestClient

from msec.apps.care.app import CareApp
from msec.apps.care.engine import HomeState
from msec.apps.care.model import AlarmKind
from msec.platform import Platform

SITE = "http://testserver"
PASSWORD = "correct horse battery"
XSS = "<script>alert(1)</script>"


class Portal:
    def __init__(self, platform: Platform, care: CareApp, app: object) -> None:
        self.platform, self.care, self.app = platform, care, app

    def login(self, name: str, role: str) -> TestClient:
        self.platform.principals.add_user(name, tenant="default", roles=[role],
                                          password=PASSWORD)  # fmt: skip
        client = TestClient(self.app, base_url=SITE, follow_redirects=False)  # type: ignore[arg-type]
        token = csrf(client.get("/login").text)
        response = client.post("/login", data={"csrf": token, "identifier": name,
                                               "password": PASSWORD}, headers={"Origin": SITE})
        assert response.status_code == 303
        return client


def csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]


@pytest.fixture
def portal(care_site: CareSite) -> Portal:
    for home in HOMES:  # homes the engine has heard of
        care_site.care.service.engine.homes.setdefault(home, HomeState())
    return Portal(care_site.platform, care_site.care, care_site.app)


def test_operator_acknowledges_and_resolves_from_the_board(portal: Portal) -> None:
    alarm = portal.care.alarms.raise_alarm("home-0001", AlarmKind.INACTIVITY, "e", at=100.0,
                                           detail={})  # fmt: skip
    olga = portal.login("olga", "operator")
    board = olga.get("/care")
    assert board.status_code == 200
    assert f'data-alarm="{alarm.id}"' in board.text and 'data-state="raised"' in board.text
    token = csrf(board.text)
    done = olga.post(f"/care/alarms/{alarm.id}/acknowledge",
                     data={"csrf": token, "note": XSS}, headers={"Origin": SITE})  # fmt: skip
    assert done.status_code == 303
    assert portal.care.alarms.get(alarm.id).state == "acknowledged"
    board = olga.get("/care").text
    assert 'data-state="acknowledged"' in board and "<script>alert" not in board
    olga.post(f"/care/alarms/{alarm.id}/resolve",
              data={"csrf": token, "false_positive": "yes"}, headers={"Origin": SITE})
    resolved = portal.care.alarms.get(alarm.id)
    assert resolved.state == "resolved" and resolved.false_positive
    assert resolved.notes[0].text == XSS  # stored as written, shown escaped
    again = olga.post(f"/care/alarms/{alarm.id}/resolve", data={"csrf": token},
                      headers={"Origin": SITE})  # fmt: skip
    assert again.headers["location"] == "/care?error=1"
    forged = olga.post(f"/care/alarms/{alarm.id}/resolve", data={"csrf": "x"},
                       headers={"Origin": SITE})  # fmt: skip
    assert forged.status_code == 403


def test_caregivers_see_only_granted_homes_and_cannot_handle(portal: Portal) -> None:
    mine = portal.care.alarms.raise_alarm("home-0001", AlarmKind.NIGHT_DOOR, "e", at=1.0,
                                          detail={})  # fmt: skip
    portal.care.alarms.raise_alarm("home-0002", AlarmKind.LOW_BATTERY, "b", at=2.0, detail={})
    carmen = portal.login("carmen", "caregiver")
    board = carmen.get("/care").text
    assert "data-alarm=" not in board and 'data-home="home-0001"' not in board
    grant = portal.platform.consent.grant("home-0001", "user:carmen", scope="home-0001-*",
                                          granted_by="user:home-0001")  # fmt: skip
    board = carmen.get("/care").text
    assert f'data-alarm="{mine.id}"' in board and 'data-home="home-0001"' in board
    assert 'data-home="home-0002"' not in board
    assert 'action="/care/alarms/' not in board  # nothing to handle for a caregiver
    token = csrf(board)
    refused = carmen.post(f"/care/alarms/{mine.id}/acknowledge", data={"csrf": token},
                          headers={"Origin": SITE})  # fmt: skip
    assert refused.status_code == 403
    portal.platform.consent.revoke(grant.id, by="user:home-0001")
    assert f'data-alarm="{mine.id}"' not in carmen.get("/care").text
    pablo = portal.login("pablo", "citizen")
    assert pablo.get("/care", headers={"Accept": "text/html"}).status_code == 403
    anonymous = TestClient(portal.app, base_url=SITE, follow_redirects=False)  # type: ignore[arg-type]
    assert anonymous.get("/care").status_code == 303
