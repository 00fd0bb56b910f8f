"""The access layer through the HTTP API: every route, every role, tokens, consent, audit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from msec.access.engine import ResourceInfo
from msec.access.model import ROLES, Verb
from msec.ingest import Incoming
from msec.platform import Platform, Settings
from msec.web.app import create_app
from msec.web.metrics import IngestCollector, make_registry

KIND = "environment_station"
#: Routes anyone may call: health, the log's public proofs, ingest (the envelope's own
#: signature authenticates it), the token endpoint, and the API's documentation pages.
PUBLIC = {
    "/api/v1/consent/notices/{purpose}",
    "/api/v1/health", "/api/v1/ingest", "/api/v1/auth/token", "/api/v1/log/checkpoint",
    "/api/v1/log/key", "/api/v1/log/proof/inclusion", "/api/v1/log/proof/consistency",
    "/docs", "/redoc", "/docs/oauth2-redirect", "/openapi.json",
}  # fmt: skip
#: Who may call the platform-wide routes (everything else is decided per provider).
ONLY = {
    "/api/v1/security/events": {"admin", "operator"},
    "/metrics": {"admin", "operator"},
    "/api/v1/log/entries": {"admin", "operator"},
    "/api/v1/audit": {"admin"},
    "/api/v1/audit/counters": {"admin", "operator", "officer"},
    "/api/v1/policies": {"admin", "operator"},  # reading; changing them is for admins
}


class World:
    """An installation with park and home devices, demo users in two tenants, and a client."""

    def __init__(self, data_dir: Path, **settings: Any) -> None:
        self.platform = Platform.open(
            Settings.load(
                None,
                data_dir=data_dir,
                tenant="santander",
                **settings,
            )
        )
        p = self.platform
        self.park = p.add_device("llamas-01", KIND)
        self.home = p.add_device("home-7", KIND, subject="maria")
        for device, value in ((self.park, 410.0), (self.home, 650.0)):
            envelope = device.seal([("environment", "co2", value)])
            assert p.ingestor.process([Incoming(envelope, None, "test")])[0].ok
        self.tokens: dict[str, str] = {}
        for role in sorted(ROLES):
            p.principals.add_user(f"u-{role}", tenant="santander", roles=[role],
                                  password="correct horse battery")  # fmt: skip
            self.tokens[role], _ = p.principals.issue_token(f"user:u-{role}")
        p.principals.add_user("maria", tenant="santander", roles=["citizen"], subject="maria",
                              password="correct horse battery")  # fmt: skip
        self.tokens["maria"], _ = p.principals.issue_token("user:maria")
        p.principals.add_user("kenji", tenant="fujisawa", roles=["admin"],
                              password="correct horse battery")  # fmt: skip
        self.tokens["fujisawa-admin"], _ = p.principals.issue_token("user:kenji")
        run = data_dir / "run"
        run.mkdir(parents=True, exist_ok=True)
        app = create_app(
            twin=p.twin,
            events=p.events,
            ingestor=p.ingestor,
            metrics=make_registry(IngestCollector(run, lambda: p.ingestor.stats, p.events)),
            access=p.access_service(),
            principals=p.principals,
            policies=p.policies,
            registry=p.registry,
            consent=p.consent,
            trust=p.trust,
        )
        self.client = TestClient(app)

    def get(self, url: str, who: str | None = None, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return self.client.get(url, headers=headers, params=params)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "data")
    with w.client:
        yield w
    w.platform.close()


def routes(world: World) -> list[tuple[str, str]]:
    found = []
    for route in world.client.app.routes:
        if isinstance(route, APIRoute) and route.path not in PUBLIC:
            url = route.path.format(**{name: "x" for name in route.param_convertors})
            found.extend((method, url) for method in sorted(route.methods))
    return found


def test_no_route_forgets_the_access_layer(world: World) -> None:
    """Walk the OpenAPI routes: without a token every non-public one is 401."""
    paths = set(world.client.get("/openapi.json").json()["paths"])
    assert paths - PUBLIC == {path for path in paths if path not in PUBLIC}
    checked = routes(world)
    assert len(checked) >= 12
    for method, url in checked:
        response = world.client.request(method, url)
        assert response.status_code == 401, (method, url, response.text)


@pytest.mark.parametrize("role", sorted(ROLES))
def test_platform_routes_by_role(world: World, role: str) -> None:
    for path, allowed in ONLY.items():
        params = {"start": 0} if path.endswith("/entries") else {}
        status = world.get(path, role, **params).status_code
        assert status == (200 if role in allowed else 403), (path, role, status)


def test_a_wrong_role_on_every_route_is_refused_and_recorded(world: World) -> None:
    before = world.platform.audit.counters()["denied"]
    for method, url in routes(world):
        # Per-caller routes (one's own identity, grants, consent) and per-resource ones are
        # tested on their own; this walks the platform-wide ones.
        per_caller = ("/api/v1/auth", "/api/v1/providers", "/api/v1/consent", "/api/v1/commands")
        if method != "GET" or url.startswith(per_caller):
            continue
        if url == "/api/v1/log/proof/record":
            continue  # decided per record; covered below
        response = world.get(url, "buyer")
        assert response.status_code == 403, (url, response.text)
    denied = world.platform.audit.counters()["denied"]
    assert denied - before == len(ONLY) - 0  # one audit row a refusal
    reasons = [e.reason for e in world.platform.events.query(limit=1000)]
    assert reasons.count("access_denied") == denied


def test_personal_data_needs_the_owner_or_a_consent_grant(world: World) -> None:
    url = "/api/v1/providers/home-7/services/environment/resources/co2"
    assert world.get(url, "citizen").status_code == 403
    assert world.get(url, "caregiver").status_code == 403
    assert world.get(url, "maria").status_code == 200
    assert world.get(url, "operator").status_code == 200
    # maria lets the caregiver see her home: a consent policy plus her grant.
    care = {"id": "care", "effect": "allow", "verbs": ["GET"], "target": "*/*/*",
            "roles": ["caregiver"], "consent": True, "tenant": "$principal", "priority": 10}
    added = world.client.post("/api/v1/policies", json=care,
                              headers={"Authorization": f"Bearer {world.tokens['admin']}"})
    assert added.status_code == 201, added.text
    refused = world.client.post("/api/v1/policies", json={**care, "id": "other"},
                                headers={"Authorization": f"Bearer {world.tokens['operator']}"})
    assert refused.status_code == 403
    assert world.get(url, "caregiver").status_code == 403  # no grant yet
    grant = world.platform.consent.grant(
        "maria", "user:u-caregiver", scope="home-7", granted_by="user:maria"
    )
    assert world.get(url, "caregiver").status_code == 200
    world.platform.consent.revoke(grant.id, by="user:maria")
    assert world.get(url, "caregiver").status_code == 403  # the very next request
    audited = world.get("/api/v1/audit", "admin", principal="user:u-caregiver").json()
    assert [a["decision"] for a in audited][:3] == ["deny", "allow", "deny"]
    assert all(a["sensitive"] for a in audited)


def test_tenants_never_see_each_other(world: World) -> None:
    assert world.get("/api/v1/providers", "fujisawa-admin").json() == []
    response = world.get("/api/v1/providers/llamas-01", "fujisawa-admin")
    assert response.status_code == 404
    url = "/api/v1/providers/llamas-01/services/environment/resources/co2/history"
    assert world.get(url, "fujisawa-admin").status_code == 404
    assert {p["name"] for p in world.get("/api/v1/providers", "citizen").json()} == {
        "llamas-01", "home-7"
    }


def test_a_providers_values_are_shown_only_where_readable(world: World) -> None:
    home = world.get("/api/v1/providers/home-7", "citizen").json()
    assert "value" not in home["services"]["environment"]["co2"]
    home = world.get("/api/v1/providers/home-7", "maria").json()
    assert home["services"]["environment"]["co2"]["value"] == 650.0


def test_password_flow_lockout_and_revocation(world: World) -> None:
    def login(password: str) -> Any:
        return world.client.post(
            "/api/v1/auth/token",
            data={"grant_type": "password", "username": "u-officer", "password": password},
        )

    ok = login("correct horse battery")
    assert ok.status_code == 200 and ok.json()["token_type"] == "bearer"
    token = ok.json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert world.client.get("/api/v1/auth/me", headers=bearer).json()["roles"] == ["officer"]
    for _ in range(5):
        assert login("wrong").status_code == 401
    locked = login("correct horse battery")
    assert locked.status_code == 401 and locked.json()["error"] == "invalid_grant"
    assert world.client.post("/api/v1/auth/revoke", headers=bearer).json() == {"revoked": True}
    assert world.client.get("/api/v1/auth/me", headers=bearer).status_code == 401
    reasons = [e.reason for e in world.platform.events.query(limit=100)]
    assert reasons.count("login_failed") == 6
    assert world.client.post("/api/v1/auth/token", data={"grant_type": "client_credentials"}
                             ).status_code == 400  # fmt: skip


def test_an_expired_token_is_refused(world: World) -> None:
    token, _ = world.platform.principals.issue_token("user:u-admin", ttl_s=0.5)
    bearer = {"Authorization": f"Bearer {token}"}
    assert world.client.get("/api/v1/auth/me", headers=bearer).status_code == 200
    time.sleep(0.6)
    assert world.client.get("/api/v1/auth/me", headers=bearer).status_code == 401


def test_rate_limits_answer_429(tmp_path: Path) -> None:
    w = World(tmp_path / "data", http={"rate_per_s": 1.0, "rate_burst": 3})
    with w.client:
        statuses = [w.get("/api/v1/auth/me", "citizen").status_code for _ in range(5)]
        assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
        assert w.get("/api/v1/auth/me", "citizen").headers.get("retry-after") == "1"
        assert w.get("/api/v1/auth/me", "officer").status_code == 200  # per principal
    w.platform.close()


def test_the_kpi_counters_count_attempts_and_detections(world: World) -> None:
    world.get("/api/v1/audit", "citizen")
    world.get("/api/v1/security/events", "buyer")
    world.client.get("/api/v1/providers", headers={"Authorization": "Bearer forged"})
    counters = world.get("/api/v1/audit/counters", "officer").json()
    assert counters["attempts"] == counters["detections"] == 3
    assert counters["denied"] == 2


def test_verify_covers_the_access_layer(world: World) -> None:
    world.get("/api/v1/audit", "citizen")
    world.platform.trust.checkpoint()
    report = world.platform.trust.verify()
    assert report.ok, report.problems
    assert {"access", "audit", "event"} <= set(report.by_kind)


def test_consent_over_http_grant_use_and_revoke(world: World) -> None:
    url = "/api/v1/providers/home-7/services/environment/resources/co2"
    care = {"id": "care", "effect": "allow", "verbs": ["GET"], "target": "*/*/*",
            "roles": ["caregiver"], "consent": True, "tenant": "$principal", "priority": 10}
    admin = {"Authorization": f"Bearer {world.tokens['admin']}"}
    maria = {"Authorization": f"Bearer {world.tokens['maria']}"}
    assert world.client.post("/api/v1/policies", json=care, headers=admin).status_code == 201
    grant = {"grantee": "user:u-caregiver", "scope": "home-7"}
    # Not maria's device, or not maria: refused and recorded.
    other = world.client.post("/api/v1/consent/grants", json={**grant, "scope": "llamas-01"},
                              headers=maria)  # fmt: skip
    assert other.status_code == 403
    citizen = {"Authorization": f"Bearer {world.tokens['citizen']}"}
    assert world.client.post("/api/v1/consent/grants", json=grant,
                             headers=citizen).status_code == 403  # fmt: skip
    given = world.client.post("/api/v1/consent/grants", json=grant, headers=maria)
    assert given.status_code == 201, given.text
    assert world.get(url, "caregiver").status_code == 200
    listed = world.get("/api/v1/consent/grants", "caregiver").json()
    assert [g["id"] for g in listed["received"]] == [given.json()["id"]]
    revoked = world.client.delete(f"/api/v1/consent/grants/{given.json()['id']}", headers=maria)
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    assert world.get(url, "caregiver").status_code == 403
    # The operator grants on maria's behalf, with the paper form as evidence.
    operator = {"Authorization": f"Bearer {world.tokens['operator']}"}
    missing = world.client.post("/api/v1/consent/grants", json={**grant, "subject": "maria"},
                                headers=operator)  # fmt: skip
    assert missing.status_code == 400  # no evidence
    behalf = world.client.post(
        "/api/v1/consent/grants",
        json={**grant, "subject": "maria", "evidence": "paper form #12, scanned"},
        headers=operator,
    )
    assert behalf.status_code == 201 and behalf.json()["on_behalf"] is True
    assert world.get(url, "caregiver").status_code == 200


def test_informed_consent_notice_accept_and_withdraw(world: World) -> None:
    consent = world.platform.consent
    consent.publish_notice("park-guide", 1, controller="Ayuntamiento de Santander",
                           purpose_text="rate park data", legal_basis="consent (GDPR 6.1.a)",
                           recipients="none", rights="access, erasure, withdrawal",
                           text="...")  # fmt: skip
    notice = world.client.get("/api/v1/consent/notices/park-guide").json()
    assert notice["id"] == "park-guide/v1/en" and notice["controller"].startswith("Ayunt")
    citizen = {"Authorization": f"Bearer {world.tokens['citizen']}"}
    accepted = world.client.post("/api/v1/consent/notices/park-guide/accept",
                                 json={"notice": notice["id"]}, headers=citizen)  # fmt: skip
    assert accepted.status_code == 201
    status = world.get("/api/v1/consent/notices/park-guide/status", "citizen").json()
    assert status == {"consented": True, "needs_renewal": False}
    withdrawn = world.client.post("/api/v1/consent/notices/park-guide/withdraw", headers=citizen)
    assert withdrawn.json() == {"withdrawn": True}
    status = world.get("/api/v1/consent/notices/park-guide/status", "citizen").json()
    assert status["consented"] is False
    assert world.client.get("/api/v1/consent/notices/nothing").status_code == 404


def test_a_batch_of_resource_lookups_decides_as_one_at_a_time(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = world.platform
    names = ["llamas-01", "home-7", "nobody-9"]
    alone, batched = p.access_service(), p.access_service()
    assert alone.resource_info("home-7") == ResourceInfo("santander", "maria", sensitive=True)
    assert alone.resource_info("llamas-01") == ResourceInfo("santander", None, sensitive=False)
    assert alone.resource_info("nobody-9") is None
    lookups: list[list[str]] = []
    tenants = p.twin.tenants
    monkeypatch.setattr(p.twin, "tenants", lambda wanted: lookups.append(sorted(wanted))
                        or tenants(wanted))  # fmt: skip
    batched.prefetch(names * 3)
    assert lookups == [sorted(names)]  # one batch for all of them
    users = p.principals
    for role in ("operator", "citizen", "caregiver"):
        who = users.authenticate_token(world.tokens[role])
        for name in names:
            for verb in (Verb.GET, Verb.SET):
                expected = alone.authorize(who, verb, name, "environment", "co2", source="t")
                got = batched.authorize(who, verb, name, "environment", "co2", source="t")
                assert (got.allowed, got.reason) == (expected.allowed, expected.reason)
    assert len(lookups) == 1  # the decisions were made from the batch
    batched.prefetch(names)
    assert len(lookups) == 1  # still fresh: nothing looked up again
