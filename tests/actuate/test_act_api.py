"""The act routes through FastAPI's TestClient, on a real (SQLite) platform and access layer.

Commands go to an in-memory publisher; a simulated smart plug opens them and reports its new
state straight into the ingest pipeline, so a command goes all the way round: API, signature,
plug, sealed reading, twin, and ``GET /api/v1/commands/{id}`` says ``acknowledged``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
import schemathesis
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from msec.access.model import Principal, PrincipalKind, Verb
from msec.access.service import AccessService, NotAuthenticated
from msec.actuate import Actuator, CommandSigner, MemoryPublisher, SqlCommands, open_command
from msec.ingest import Incoming
from msec.platform import Platform, Settings
from msec.sdk.command import CommandReceiver
from msec.sdk.sim.plug import SmartPlug
from msec.web.act_api import MAX_ACT_BODY, add_act_routes

ACT = "/api/v1/providers/{}/services/{}/resources/{}/act"
SWITCH = ACT.format("plug-01", "plug", "switch")
OPERATOR = {"Authorization": "Bearer op"}
CITIZEN = {"Authorization": "Bearer cit"}
ELSEWHERE = {"Authorization": "Bearer far"}

_bearer = HTTPBearer(auto_error=False)


def service(name: str, tenant: str, role: str) -> Principal:
    return Principal(f"service:{name}", PrincipalKind.SERVICE, tenant, frozenset({role}))


def build_app(access: AccessService, actuator: Actuator, platform: Platform) -> FastAPI:
    """The routes behind ``caller``/``allow`` dependencies that behave as msec.web.app's."""
    app = FastAPI()

    def caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        try:
            who = access.authenticate(credentials.credentials if credentials else None)
        except NotAuthenticated:
            who = None
        if who is None or not who.authenticated:
            raise HTTPException(401, "missing or invalid bearer token")
        return who

    def allow(
        request: Request, who: Principal, verb: Verb, provider: str, service: str = "*",
        resource: str = "*",
    ) -> None:
        decision = access.authorize(who, verb, provider, service, resource, source="test")
        if not decision.allowed:
            if decision.reason == "another tenant's resource":
                raise HTTPException(404, f"no provider {provider!r}")
            raise HTTPException(403, f"not allowed: {verb} {provider}/{service}/{resource}")

    add_act_routes(app, caller, allow, actuator, platform.twin, platform.registry)
    return app


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = Platform.open(Settings.load(None, data_dir=tmp_path / "data"))
    yield p
    p.close()


@pytest.fixture
def signer(platform: Platform) -> CommandSigner:
    return CommandSigner.load_or_create(platform.settings.data_dir / "keys" / "command.key")


@pytest.fixture
def publisher() -> MemoryPublisher:
    return MemoryPublisher()


@pytest.fixture
def actuator(platform: Platform, signer: CommandSigner, publisher: MemoryPublisher) -> Actuator:
    commands = SqlCommands(platform.engine)
    commands.create_schema()
    return Actuator(signer, commands, publisher)


@pytest.fixture
def plug(platform: Platform, signer: CommandSigner, tmp_path: Path) -> SmartPlug:
    device = platform.add_device("plug-01", "smart_plug")
    device.command_key = signer.public_key
    device.save(tmp_path / "plug-01.json")

    def report(rows: list[Any]) -> None:
        [outcome] = platform.ingestor.process([Incoming(device.seal(rows), None, "test")])
        assert outcome.ok, outcome.rejected

    return SmartPlug(device, CommandReceiver.for_device(device), report=report)


@pytest.fixture
def client(platform: Platform, actuator: Actuator, plug: SmartPlug) -> Iterator[TestClient]:
    access = platform.access_service(
        static_tokens={
            "op": service("op", "default", "operator"),
            "cit": service("cit", "default", "citizen"),
            "far": service("far", "santander", "operator"),
        }
    )
    with TestClient(build_app(access, actuator, platform)) as c:
        yield c


def test_act_round_trip_through_the_plug(
    client: TestClient, publisher: MemoryPublisher, plug: SmartPlug, platform: Platform
) -> None:
    response = client.post(SWITCH, json={"args": {"on": True}, "ttl_s": 20}, headers=OPERATOR)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "sent" and body["seq"] > 0 and len(body["command"]) == 32
    assert response.headers["location"] == f"/api/v1/commands/{body['command']}"
    [(topic, data)] = publisher.sent
    assert topic == "msec/default/plug-01/_cmd"
    assert client.get(f"/api/v1/commands/{body['command']}", headers=OPERATOR).json()[
        "status"
    ] == "sent"

    applied = plug.handle(data)
    assert applied is not None and applied.principal == "service:op"
    assert plug.on is True
    latest = platform.twin.latest("plug-01", "plug", "switch")
    assert latest is not None and latest.value is True
    power = platform.twin.latest("plug-01", "plug", "power")
    assert power is not None and power.value > 0

    status = client.get(f"/api/v1/commands/{body['command']}", headers=OPERATOR)
    assert status.status_code == 200
    got = status.json()
    assert got["status"] == "acknowledged"
    assert (got["provider"], got["service"], got["resource"]) == ("plug-01", "plug", "switch")
    assert got["args"] == {"on": True} and got["principal"] == "service:op"
    assert got["seq"] == body["seq"] and got["expires_at"] == body["expires_at"]

    # The same bytes again (a replayed or redelivered message): refused, nothing moves.
    assert plug.handle(data) is None
    assert plug.refused["replay"] == 1 and plug.applied == 1


def test_commands_switch_off_too(client: TestClient, publisher: MemoryPublisher, plug: SmartPlug):
    for on in (True, False):
        assert client.post(SWITCH, json={"args": {"on": on}}, headers=OPERATOR).status_code == 202
        plug.handle(publisher.sent[-1][1])
        assert plug.on is on
    assert plug.applied == 2


def test_only_who_may_act(client: TestClient, publisher: MemoryPublisher, platform: Platform):
    assert client.post(SWITCH, json={"args": {"on": True}}).status_code == 401
    assert client.post(SWITCH, json={"args": {"on": True}}, headers=CITIZEN).status_code == 403
    # Another tenant's device does not even exist for them.
    assert client.post(SWITCH, json={"args": {"on": True}}, headers=ELSEWHERE).status_code == 404
    assert publisher.sent == []
    reasons = [e.reason for e in platform.events.query(limit=100)]
    assert reasons.count("access_denied") == 2


def test_describe_is_needed_to_follow_a_command(client: TestClient) -> None:
    command = client.post(SWITCH, json={"args": {"on": True}}, headers=OPERATOR).json()["command"]
    url = f"/api/v1/commands/{command}"
    assert client.get(url).status_code == 401
    assert client.get(url, headers=CITIZEN).status_code == 200  # DESCRIBE: authenticated
    assert client.get(url, headers=ELSEWHERE).status_code == 404
    assert client.get("/api/v1/commands/" + "0" * 32, headers=OPERATOR).status_code == 404
    assert client.get("/api/v1/commands/not-an-id", headers=OPERATOR).status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        ACT.format("nobody", "plug", "switch"),
        ACT.format("plug-01", "plug", "volume"),
        ACT.format("plug-01", "environment", "temperature"),
        ACT.format("plug-01", "health", "battery"),
    ],
)
def test_unknown_device_or_resource_is_404(client: TestClient, url: str) -> None:
    response = client.post(url, json={"args": {"on": True}}, headers=OPERATOR)
    assert response.status_code == 404, response.text


def test_a_revoked_device_is_409(client: TestClient, platform: Platform) -> None:
    platform.registry.revoke("plug-01")
    response = client.post(SWITCH, json={"args": {"on": True}}, headers=OPERATOR)
    assert response.status_code == 409


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"{not json", 400),
        (b"\xff\xfe", 400),
        (b'{"args": NaN}', 400),
        (b"[1, 2]", 422),
        (b"{}", 422),
        (b'{"args": {"on": true}, "extra": 1}', 422),
        (b'{"args": {"on": true}, "ttl_s": 0}', 422),
        (b'{"args": {"on": true}, "ttl_s": 301}', 422),
        (b'{"args": {"on": true}, "ttl_s": "30"}', 422),
        (b'{"args": {"on": true}, "ttl_s": true}', 422),
        (b'{"args": {"on": 1e999}}', 422),
        (b'{"args": {"k": "\\u0000"}}', 422),
        (b'{"args": [[[[["deep"]]]]]}', 422),
        (b'{"args": "' + b"x" * 300 + b'"}', 422),
    ],
)
def test_bad_bodies_are_refused(
    client: TestClient, publisher: MemoryPublisher, content: bytes, status: int
) -> None:
    response = client.post(
        SWITCH, content=content, headers={**OPERATOR, "Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert publisher.sent == []


def test_body_size_and_type(client: TestClient, publisher: MemoryPublisher) -> None:
    big = b'{"args": "' + b"x" * MAX_ACT_BODY + b'"}'
    headers = {**OPERATOR, "Content-Type": "application/json"}
    assert client.post(SWITCH, content=big, headers=headers).status_code == 413
    form = {**OPERATOR, "Content-Type": "application/x-www-form-urlencoded"}
    assert client.post(SWITCH, content=b"args=on", headers=form).status_code == 415
    assert publisher.sent == []


def test_broker_down_is_503_and_recorded(
    client: TestClient, publisher: MemoryPublisher, actuator: Actuator
) -> None:
    publisher.down = True
    response = client.post(SWITCH, json={"args": {"on": True}}, headers=OPERATOR)
    assert response.status_code == 503
    [failed] = actuator.commands.recent("plug-01")
    assert failed.status == "failed"


def test_a_command_opens_only_with_the_platform_key(
    client: TestClient, publisher: MemoryPublisher, signer: CommandSigner
) -> None:
    client.post(SWITCH, json={"args": {"on": True}}, headers=OPERATOR)
    data = publisher.sent[-1][1]
    command = open_command(data, signer.public_key, device="plug-01", now=0)
    assert command.args == {"on": True}


def test_openapi_lists_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    act = paths["/api/v1/providers/{provider}/services/{service}/resources/{resource}/act"]
    assert act["post"]["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "args"
    ]
    assert "/api/v1/commands/{command_id}" in paths


def test_generated_requests_never_get_a_5xx(client: TestClient) -> None:
    api = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    statuses: set[int] = set()
    for result in api.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def run(case: schemathesis.Case) -> None:
            for headers in (OPERATOR, CITIZEN, {}):
                response = case.call(headers=headers)
                assert response.status_code < 500, (case.method, case.formatted_path)
                statuses.add(response.status_code)

        run()
    assert {401, 404} <= statuses
