"""`msec bench web` runs against the demo and reports every figure (no speed asserted)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from msec.cli.main import app

FIGURES = (
    "users", "duration_s", "think_ms", "requests", "errors", "requests_per_s", "p50_ms",
    "p95_ms", "p99_ms", "pages", "live_p50_ms", "live_p95_ms", "live_max_ms", "live_events",
    "cpu_count", "target_p95_ms", "target_live_ms", "p95_ok", "live_ok",
)  # fmt: skip


@pytest.mark.slow
def test_bench_web_reports_pages_and_live_values() -> None:
    # Devices publish every second so that live values reach the open pages in a short run.
    args = "bench web --users 3 --duration 4 --warmup 1 --sim-interval 1 --json"
    result = CliRunner().invoke(app, args.split())
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    for key in FIGURES:
        assert key in figures, key
    assert figures["users"] == 3 and figures["officers"] == 1 and figures["logged_in"] == 2
    assert figures["requests"] > 0 and figures["errors"] == 0, figures["error_kinds"]
    assert figures["requests"] == sum(p["count"] for p in figures["pages"].values())
    assert figures["live_events"] > 0 and figures["stream_errors"] == []
    assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
    assert 0 < figures["live_p50_ms"] <= figures["live_max_ms"]
    assert figures["target_p95_ms"] == 100 and figures["target_live_ms"] == 2000
