"""The HTTP API end to end through FastAPI's TestClient, on real SQLite storage."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from msec.crypto.envelope import MAX_ENVELOPE_BYTES
from msec.ingest import Incoming, Ingestor
from msec.ingest.worker import LATENCY_BUCKETS, WorkerStats
from msec.platform import Platform, Settings
from msec.sdk import Device
from msec.web.app import create_app
from msec.web.metrics import IngestCollector, make_registry

KIND = "environment_station"
NAME = "llamas-test"
GOOD = [("environment", "temperature", 18.5)]
AUTH = {"Authorization": "Bearer tok"}
COSE = {"Content-Type": "application/cose"}

PROVIDER = "/api/v1/providers/{provider}"
RESOURCE = "/api/v1/providers/{provider}/services/{service}/resources/{resource}"
HISTORY = RESOURCE + "/history"
#: Every route of the API as OpenAPI names it.
API_PATHS = {
    "/api/v1/health", "/api/v1/providers", PROVIDER, RESOURCE, HISTORY,
    "/api/v1/security/events", "/api/v1/ingest",
    "/api/v1/log/checkpoint", "/api/v1/log/key", "/api/v1/log/proof/inclusion",
    "/api/v1/log/proof/consistency", "/api/v1/log/entries", "/api/v1/log/proof/record",
}
#: Routes that need no bearer token: health is public, ingest is authenticated by the
#: envelope's own signature (see msec.web.app).
PUBLIC = {"/api/v1/health", "/api/v1/ingest",
          # The log's checkpoint, key and proofs: sizes and hashes anyone may check.
          "/api/v1/log/checkpoint", "/api/v1/log/key", "/api/v1/log/proof/inclusion",
          "/api/v1/log/proof/consistency",
          # The API's own documentation pages (served offline by fastapi-offline).
          "/docs", "/redoc", "/docs/oauth2-redirect"}


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = Platform.open(Settings.load(None, data_dir=tmp_path / "data"))
    # No retry grace: an envelope sent twice is a replay at once (the grace has its own test).
    p.ingestor = Ingestor(p.registry, p.twin, p.events, retry_grace=0.0)
    yield p
    p.close()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


@pytest.fixture
def client(platform: Platform, run_dir: Path) -> Iterator[TestClient]:
    p = platform
    app = create_app(
        twin=p.twin, events=p.events, ingestor=p.ingestor, tokens={"tok": "operator"},
        metrics=make_registry(IngestCollector(run_dir, lambda: p.ingestor.stats, p.events)),
        trust=p.trust,
    )
    with TestClient(app) as c:
        yield c


@pytest.fixture
def device(platform: Platform) -> Device:
    return platform.add_device(NAME, KIND)


def post(client: TestClient, data: bytes, headers: dict[str, str] = COSE):
    return client.post("/api/v1/ingest", content=data, headers=headers)


def event_reasons(platform: Platform) -> list[str]:
    return [e.reason for e in platform.events.query(limit=10_000)]


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus text exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def segment(text: str) -> str:
    """``text`` as one URL path segment: ``/`` and ``.`` encoded too, so that neither the
    client's dot-segment normalisation nor routing can change which segment it is."""
    return quote(text, safe="").replace(".", "%2E")


# ---- authentication -----------------------------------------------------------------------
def test_health_is_public(client: TestClient, platform: Platform) -> None:
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert "unauthorized" not in event_reasons(platform)


def protected_urls(client: TestClient) -> list[tuple[str, str]]:
    """(method, url) of every route that is not public, path parameters filled in."""
    found = []
    for route in client.app.routes:
        if not isinstance(route, APIRoute) or route.path in PUBLIC:
            continue
        url = route.path.format(**{name: "x" for name in route.param_convertors})
        found.extend((method, url) for method in sorted(route.methods))
    return found


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer tok2"},
    {"Authorization": "Bearer "},
    {"Authorization": "Basic tok"},
    {"Authorization": "tok"},
], ids=["none", "wrong", "prefix", "empty", "basic", "no-scheme"])
def test_every_other_route_needs_the_token(client: TestClient, platform: Platform,
                                           headers: dict[str, str]) -> None:
    urls = protected_urls(client)
    assert {url for _, url in urls} >= {
        "/api/v1/providers", "/api/v1/providers/x",
        "/api/v1/providers/x/services/x/resources/x",
        "/api/v1/providers/x/services/x/resources/x/history",
        "/api/v1/security/events", "/metrics", "/api/v1/log/entries",
        "/api/v1/log/proof/record",
    }
    for n, (method, url) in enumerate(urls, start=1):
        # A query parameter named like the handlers' role argument must not stand in for it.
        response = client.request(method, url, headers=headers, params={"_role": "operator"})
        assert response.status_code == 401, (method, url, response.text)
        assert response.headers["www-authenticate"] == "Bearer", (method, url)
        unauthorized = platform.events.query(reason="unauthorized", limit=10_000)
        assert len(unauthorized) == n, (method, url)
        assert unauthorized[0].detail == f"{method} {url}"


def test_the_right_token_is_let_in(client: TestClient, platform: Platform) -> None:
    assert client.get("/api/v1/providers", headers=AUTH).status_code == 200
    assert client.get("/api/v1/security/events", headers=AUTH).json() == []
    assert event_reasons(platform) == []


# ---- ingest and the twin --------------------------------------------------------------------
def test_ingest_then_read_provider_resource_and_history(client: TestClient,
                                                        device: Device) -> None:
    t0 = time.time() - 1000
    for i in range(5):
        response = post(client, device.seal([("environment", "temperature", 10.0 + i)],
                                            at=t0 + 10 * i))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "stored" and body["stored"] == 1
    response = post(client, device.seal([("environment", "temperature", 20.0),
                                          ("environment", "humidity", 55.0)], at=t0 + 50))
    assert response.json()["stored"] == 2

    providers = client.get("/api/v1/providers", headers=AUTH).json()
    assert [p["name"] for p in providers] == [NAME]
    assert providers[0]["kind"] == KIND

    provider = client.get(f"/api/v1/providers/{NAME}", headers=AUTH).json()
    environment = provider["services"]["environment"]
    assert environment["temperature"]["unit"] == "°C"
    assert environment["temperature"]["value"] == 20.0
    assert environment["humidity"] == {"value": 55.0, "unit": "%", "timestamp": t0 + 50}

    base = f"/api/v1/providers/{NAME}/services/environment/resources/temperature"
    latest = client.get(base, headers=AUTH).json()
    assert latest["value"] == 20.0 and latest["unit"] == "°C"
    assert latest["timestamp"] == pytest.approx(t0 + 50)

    def history(**params: float) -> list[float]:
        response = client.get(base + "/history", params=params, headers=AUTH)
        assert response.status_code == 200, response.text
        return [v["value"] for v in response.json()["values"]]

    assert history() == [10.0, 11.0, 12.0, 13.0, 14.0, 20.0]
    assert history(since=t0 + 10, until=t0 + 40) == [11.0, 12.0, 13.0]  # until is exclusive
    assert history(since=t0 + 10, limit=2) == [11.0, 12.0]
    assert history(limit=1) == [10.0]
    assert history(until=t0) == []


def test_unknown_provider_or_resource_is_404(client: TestClient, device: Device) -> None:
    assert post(client, device.seal(GOOD)).status_code == 200
    for url in (
        "/api/v1/providers/nobody",
        "/api/v1/providers/nobody/services/environment/resources/temperature",
        "/api/v1/providers/nobody/services/environment/resources/temperature/history",
        f"/api/v1/providers/{NAME}/services/environment/resources/noise",
        f"/api/v1/providers/{NAME}/services/environment/resources/noise/history",
        f"/api/v1/providers/{NAME}/services/kitchen/resources/temperature",
    ):
        response = client.get(url, headers=AUTH)
        assert response.status_code == 404, url
        assert "detail" in response.json()


@pytest.mark.parametrize("params", [
    {"since": 100.0, "until": 99.0},
    {"limit": 0},
    {"limit": 10001},
    {"limit": -1},
    {"since": "yesterday"},
])
def test_bad_history_queries_are_422(client: TestClient, device: Device,
                                     params: dict[str, object]) -> None:
    assert post(client, device.seal(GOOD)).status_code == 200
    url = f"/api/v1/providers/{NAME}/services/environment/resources/temperature/history"
    assert client.get(url, params=params, headers=AUTH).status_code == 422
    assert client.get(url, params={"limit": 10000}, headers=AUTH).status_code == 200


# ---- ingest refusals ------------------------------------------------------------------------
def test_each_ingest_refusal_has_its_status_reason_and_event(client: TestClient,
                                                            platform: Platform,
                                                            device: Device) -> None:
    stranger, _ = Device.create("stranger", KIND)
    impostor, _ = Device.create(NAME, KIND)  # same name, another key
    cases = [
        ("wrong content type", device.seal(GOOD), {"Content-Type": "application/json"},
         415, "malformed"),
        ("no content type", device.seal(GOOD), {}, 415, "malformed"),
        ("oversized", b"\x00" * (MAX_ENVELOPE_BYTES + 1), COSE, 413, "oversized"),
        ("garbage", b"\x00garbage", COSE, 400, "malformed"),
        ("unknown device", stranger.seal(GOOD), COSE, 403, "unknown_device"),
        ("forged", impostor.seal(GOOD), COSE, 401, "bad_signature"),
        ("out of range", device.seal([("environment", "temperature", 900.0)]), COSE,
         400, "out_of_range"),
    ]
    for n, (label, data, headers, status, reason) in enumerate(cases, start=1):
        response = post(client, data, headers)
        assert response.status_code == status, (label, response.text)
        assert response.json()["status"] == "rejected", label
        assert response.json()["reason"] == reason, label
        reasons = event_reasons(platform)
        assert len(reasons) == n and reasons[0] == reason, (label, reasons)
    assert platform.twin.count_readings() == 0


def test_the_size_limit_is_exactly_64_kib(client: TestClient, platform: Platform) -> None:
    response = post(client, b"\x00" * MAX_ENVELOPE_BYTES)
    assert response.status_code == 400 and response.json()["reason"] == "malformed"
    response = post(client, b"\x00" * (10 * MAX_ENVELOPE_BYTES))
    assert response.status_code == 413 and response.json()["reason"] == "oversized"
    assert event_reasons(platform) == ["oversized", "malformed"]


def test_replays_are_409_and_the_events_can_be_filtered(client: TestClient,
                                                        platform: Platform,
                                                        device: Device) -> None:
    for i in range(3):
        data = device.seal([("environment", "temperature", 10.0 + i)])
        assert post(client, data).status_code == 200
        again = post(client, data)
        assert again.status_code == 409 and again.json()["reason"] == "replay"
        assert post(client, b"junk").status_code == 400  # other events in between
    assert platform.twin.count_readings(NAME) == 3

    events = client.get("/api/v1/security/events", params={"reason": "replay"},
                        headers=AUTH).json()
    assert len(events) == 3
    assert {e["reason"] for e in events} == {"replay"}
    assert all(e["device"] == NAME for e in events)
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, reverse=True)  # newest first

    limited = client.get("/api/v1/security/events", params={"reason": "replay", "limit": 2},
                         headers=AUTH).json()
    assert [e["id"] for e in limited] == ids[:2]
    everything = client.get("/api/v1/security/events", headers=AUTH).json()
    assert sorted(e["reason"] for e in everything) == ["malformed"] * 3 + ["replay"] * 3
    for bad in ({"limit": 0}, {"limit": 10001}, {"reason": "x" * 65}):
        assert client.get("/api/v1/security/events", params=bad,
                          headers=AUTH).status_code == 422


def test_an_immediate_http_retry_is_an_idempotent_duplicate(platform: Platform,
                                                            run_dir: Path,
                                                            device: Device) -> None:
    p = platform
    app = create_app(twin=p.twin, events=p.events, tokens={"tok": "operator"},
                     ingestor=Ingestor(p.registry, p.twin, p.events))  # default grace
    with TestClient(app) as retrying:
        data = device.seal(GOOD)
        assert post(retrying, data).json() == {"status": "stored", "stored": 1, "duplicates": 0}
        again = post(retrying, data)
        assert again.status_code == 200
        assert again.json() == {"status": "duplicate", "stored": 0, "duplicates": 1}
    assert platform.twin.count_readings(NAME) == 1
    assert event_reasons(platform) == []


# ---- metrics --------------------------------------------------------------------------------
def test_metrics_count_http_ingest(client: TestClient, device: Device) -> None:
    for i in range(4):
        rows = [("environment", "temperature", 10.0 + i), ("environment", "humidity", 50.0)]
        assert post(client, device.seal(rows)).status_code == 200
    data = device.seal(GOOD)
    assert post(client, data).status_code == 200
    assert post(client, data).status_code == 409

    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "msec_readings_accepted_total" in response.text
    samples = metric_samples(response.text)
    assert samples[("msec_readings_accepted_total", ())] == 9
    assert samples[("msec_messages_rejected_total", (("reason", "replay"),))] == 1
    assert samples[("msec_security_events_stored", (("reason", "replay"),))] == 1
    assert samples[("msec_ingest_workers", ())] == 0


def test_metrics_sum_worker_stats_files(client: TestClient, platform: Platform,
                                        device: Device, run_dir: Path) -> None:
    assert post(client, device.seal(GOOD)).status_code == 200  # 1 over HTTP

    # A worker process: its own Ingestor on the same storage, writing its stats file.
    worker = Ingestor(platform.registry, platform.twin, platform.events, retry_grace=0.0)
    rows = [("environment", "temperature", 15.0), ("environment", "humidity", 40.0)]
    data = device.seal(rows)
    outcomes = worker.process([Incoming(data, device.topic(rows), "w"),
                               Incoming(data, device.topic(rows), "w")])
    assert [o.stored for o in outcomes] == [2, 0]  # the second one is a replay
    stats = WorkerStats(run_dir / "worker-a.json")
    stats.observe(0.003, 2)
    stats.observe(0.2, 1)
    stats.observe(60.0, 1)
    stats.backlog = 5
    stats.flush(worker, force=True)

    # A second worker that stopped reporting an hour ago: counted in totals only.
    (run_dir / "worker-b.json").write_text(json.dumps({
        "pid": 1, "updated": time.time() - 3600, "accepted": 10, "duplicates": 1,
        "rejected": {"replay": 4, "bad_signature": 1},
        "latency_buckets": list(LATENCY_BUCKETS),
        "latency_counts": [1] + [0] * (len(LATENCY_BUCKETS) - 1) + [0],
        "latency_sum": 0.001, "latency_count": 1, "backlog": 100,
    }))
    (run_dir / "worker-c.json").write_text("{half written")  # skipped, not an error

    samples = metric_samples(client.get("/metrics", headers=AUTH).text)
    assert samples[("msec_readings_accepted_total", ())] == 1 + 2 + 10
    assert samples[("msec_readings_duplicate_total", ())] == 0 + 2 + 1
    assert samples[("msec_messages_rejected_total", (("reason", "replay"),))] == 0 + 1 + 4
    assert samples[("msec_messages_rejected_total", (("reason", "bad_signature"),))] == 1

    def bucket(le: str) -> float:
        return samples[("msec_ingest_latency_seconds_bucket", (("le", le),))]

    assert bucket("0.005") == 2 + 1
    assert bucket("0.1") == 3
    assert bucket("0.25") == 4
    assert bucket("10.0") == 4
    assert bucket("+Inf") == 5
    assert samples[("msec_ingest_latency_seconds_count", ())] == 5
    assert samples[("msec_ingest_latency_seconds_sum", ())] == pytest.approx(
        0.006 + 0.2 + 60.0 + 0.001)
    assert samples[("msec_ingest_backlog", ())] == 5
    assert samples[("msec_ingest_workers", ())] == 1


# ---- documentation --------------------------------------------------------------------------
def test_docs_and_openapi_are_served(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert set(paths) >= API_PATHS, API_PATHS - set(paths)
    assert "post" in paths["/api/v1/ingest"]
    history_params = {p["name"] for p in paths[HISTORY]["get"]["parameters"]}
    assert {"since", "until", "limit"} <= history_params


def test_docs_pages_need_no_network(client: TestClient) -> None:
    """Swagger UI and ReDoc load their scripts from the platform itself, never a CDN."""
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        sources = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert sources, page
        assert all(src.startswith("/") for src in sources), sources  # no http(s)://
        for src in sources:
            if src.endswith((".js", ".css")):
                asset = client.get(src)
                assert asset.status_code == 200 and len(asset.content) > 1000, src


# ---- hostile input --------------------------------------------------------------------------
HOSTILE = [
    "..", "../..", "../../etc/passwd", "..%2F..", "%00", "\x00", "a\x00b", "x" * 10_000,
    "ñandú-☃-𝄞", "東京", "' OR 1=1 --", "\" OR \"\"=\"", "1; DROP TABLE twin_readings; --",
    "%", "%%", "{provider}", "*", "?", "#", " ", "\\", "$(reboot)", "<script>",
    NAME + "' --", NAME.upper(),
]


def assert_clean(response, allowed: set[int]) -> None:
    assert response.status_code in allowed, (response.status_code, response.text[:300])
    assert "detail" in response.json()


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_path_segments_are_clean_404s(client: TestClient, device: Device,
                                              text: str) -> None:
    assert post(client, device.seal(GOOD)).status_code == 200
    s = segment(text)
    for url in (
        f"/api/v1/providers/{s}",
        f"/api/v1/providers/{s}/services/environment/resources/temperature",
        f"/api/v1/providers/{NAME}/services/{s}/resources/temperature/history",
        f"/api/v1/providers/{NAME}/services/environment/resources/{s}",
    ):
        assert_clean(client.get(url, headers=AUTH), {404})


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_query_values_are_clean(client: TestClient, device: Device, text: str) -> None:
    assert post(client, device.seal(GOOD)).status_code == 200
    url = f"/api/v1/providers/{NAME}/services/environment/resources/temperature/history"
    for name in ("since", "until", "limit"):
        assert_clean(client.get(url, params={name: text}, headers=AUTH), {422})
    response = client.get("/api/v1/security/events", params={"reason": text}, headers=AUTH)
    if len(text) > 64:
        assert response.status_code == 422
    else:
        assert response.status_code == 200 and response.json() == []


_fuzz = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


SLOTS = [(PROVIDER, "provider"), (RESOURCE, "provider"), (RESOURCE, "service"),
         (RESOURCE, "resource"), (HISTORY, "provider"), (HISTORY, "service"),
         (HISTORY, "resource")]


@_fuzz
@given(text=st.text(min_size=1), slot=st.sampled_from(SLOTS))
def test_any_path_segment_is_a_clean_404(client: TestClient, device: Device, text: str,
                                         slot: tuple[str, str]) -> None:
    template, position = slot
    names = {"provider": NAME, "service": "environment", "resource": "temperature"}
    assume(text != names[position])
    names[position] = segment(text)
    # No reading was stored, so even a well-formed resource URL is a 404.
    assert_clean(client.get(template.format(**names), headers=AUTH), {404})


@_fuzz
@given(since=st.text(), until=st.text(), limit=st.text())
def test_any_query_string_is_clean(client: TestClient, device: Device, since: str,
                                   until: str, limit: str) -> None:
    assert post(client, device.seal(GOOD)).status_code == 200
    url = f"/api/v1/providers/{NAME}/services/environment/resources/temperature/history"
    response = client.get(url, params={"since": since, "until": until, "limit": limit},
                          headers=AUTH)
    assert response.status_code in (200, 422), (since, until, limit, response.text[:300])
