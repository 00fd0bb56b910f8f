"""Connected Care's alarm API: who sees which home's alarms, and handling them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from care_site import CareSite
from fastapi.testclient import TestClient

from msec.apps.care.app import CareApp
from msec.apps.care.model import AlarmKind
from msec.platform import Platform

PASSWORD = "correct horse battery"


class World:
    def __init__(self, platform: Platform, care: CareApp, client: TestClient) -> None:
        self.platform, self.care, self.client = platform, care, client
        self.tokens: dict[str, str] = {}

    def user(self, name: str, role: str, *, subject: str | None = None) -> None:
        self.platform.principals.add_user(name, tenant="default", roles=[role],
                                          password=PASSWORD, subject=subject)  # fmt: skip
        self.tokens[name], _ = self.platform.principals.issue_token(f"user:{name}", ttl_s=600)

    def get(self, path: str, who: str) -> object:
        return self.client.get(path, headers={"Authorization": f"Bearer {self.tokens[who]}"})

    def post(self, path: str, who: str, body: object = None) -> object:
        return self.client.post(path, json=body,
                                headers={"Authorization": f"Bearer {self.tokens[who]}"})


@pytest.fixture
def world(care_site: CareSite) -> Iterator[World]:
    with TestClient(care_site.app) as client:
        w = World(care_site.platform, care_site.care, client)
        w.user("olga", "operator")
        w.user("carmen", "caregiver")
        w.user("pablo", "citizen")
        yield w


def test_operators_see_and_handle_alarms(world: World) -> None:
    alarms = world.care.alarms
    first = alarms.raise_alarm("home-0001", AlarmKind.INACTIVITY, "e1", at=100.0,
                               detail={"hours": 3})  # fmt: skip
    alarms.raise_alarm("home-0002", AlarmKind.NIGHT_DOOR, "e2", at=200.0, detail={})
    listed = world.get("/api/v1/care/alarms", "olga").json()
    assert {a["home"] for a in listed} == {"home-0001", "home-0002"}
    acked = world.post(f"/api/v1/care/alarms/{first.id}/acknowledge", "olga",
                       {"note": "calling her now"})  # fmt: skip
    assert acked.status_code == 200 and acked.json()["state"] == "acknowledged"
    assert world.post(f"/api/v1/care/alarms/{first.id}/acknowledge", "olga").status_code == 409
    noted = world.post(f"/api/v1/care/alarms/{first.id}/notes", "olga", {"note": "on my way"})
    assert noted.status_code == 201
    done = world.post(f"/api/v1/care/alarms/{first.id}/resolve", "olga",
                      {"note": "she was fine", "false_positive": True})  # fmt: skip
    assert done.json()["state"] == "resolved" and done.json()["false_positive"] is True
    detail = world.get(f"/api/v1/care/alarms/{first.id}", "olga").json()
    assert [e["event"] for e in detail["events"]][:1] == ["raised"]
    assert "resolved" in [e["event"] for e in detail["events"]]
    assert [n["text"] for n in detail["notes"]] == ["calling her now", "on my way", "she was fine"]
    counts = world.get("/api/v1/care/alarms/counts", "olga").json()
    assert counts["resolved"]["inactivity"] == 1


def test_caregivers_see_only_homes_that_granted_them_access(world: World) -> None:
    alarms = world.care.alarms
    mine = alarms.raise_alarm("home-0001", AlarmKind.INACTIVITY, "e1", at=100.0, detail={})
    other = alarms.raise_alarm("home-0002", AlarmKind.NIGHT_DOOR, "e2", at=200.0, detail={})
    assert world.get("/api/v1/care/alarms", "carmen").json() == []
    grant = world.platform.consent.grant("home-0001", "user:carmen", scope="home-0001-*",
                                         granted_by="user:home-0001")  # fmt: skip
    assert [a["id"] for a in world.get("/api/v1/care/alarms", "carmen").json()] == [mine.id]
    assert world.get(f"/api/v1/care/alarms/{other.id}", "carmen").status_code == 404
    # Seeing is not handling: acknowledging needs SET, which the grant does not give.
    assert world.post(f"/api/v1/care/alarms/{mine.id}/acknowledge", "carmen").status_code == 403
    world.platform.consent.revoke(grant.id, by="user:home-0001")
    assert world.get("/api/v1/care/alarms", "carmen").json() == []  # at once
    assert world.get("/api/v1/care/alarms", "pablo").json() == []


def test_bad_requests(world: World) -> None:
    alarm = world.care.alarms.raise_alarm("home-0001", AlarmKind.LOW_BATTERY, "b", at=1.0,
                                          detail={})  # fmt: skip
    for path in ("/api/v1/care/alarms/999", "/api/v1/care/alarms/abc", "/api/v1/care/alarms/-1"):
        assert world.get(path, "olga").status_code == 404
    url = f"/api/v1/care/alarms/{alarm.id}/notes"
    headers = {"Authorization": f"Bearer {world.tokens['olga']}"}
    assert world.client.post(url, content=b"{not json", headers=headers).status_code == 400
    assert world.post(url, "olga", ["a list"]).status_code == 400
    assert world.post(url, "olga", {"note": 5}).status_code == 400
    assert world.post(url, "olga", {"note": "x" * 3000}).status_code == 400
    assert world.post(url, "olga", {"note": "bell\x07"}).status_code == 400
    big = world.client.post(url, content=b"{" + b" " * 9000 + b"}", headers=headers)
    assert big.status_code == 413
    assert world.client.get("/api/v1/care/alarms").status_code == 401


def test_a_list_of_many_homes_alarms_looks_the_homes_up_in_one_batch(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    alarms = world.care.alarms
    homes = [f"home-{i:04d}" for i in range(1, 41)]
    for home in homes:
        alarms.raise_alarm(home, AlarmKind.NO_MORNING_ACTIVITY, "m", at=100.0, detail={})
    batches: list[int] = []
    tenants = world.platform.twin.tenants
    monkeypatch.setattr(world.platform.twin, "tenants", lambda wanted: batches.append(
        len(set(wanted))) or tenants(wanted))  # fmt: skip
    listed = world.get("/api/v1/care/alarms", "olga").json()
    assert sorted(a["home"] for a in listed) == homes
    # One lookup for the 40 homes (not one per home, each waiting again for the lock).
    assert batches == [40]
    world.platform.consent.grant("home-0003", "user:carmen", scope="home-0003-*",
                                 granted_by="user:home-0003")  # fmt: skip
    assert [a["home"] for a in world.get("/api/v1/care/alarms", "carmen").json()] == ["home-0003"]
    assert batches == [40]  # the same homes, still fresh
