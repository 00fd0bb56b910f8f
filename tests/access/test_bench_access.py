"""`msec bench access` runs, agrees with casbin, and reports its figures (no speed asserted)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from msec.cli.main import app


def test_bench_access_reports_every_figure_and_agrees_with_casbin() -> None:
    result = CliRunner().invoke(
        app,
        ["bench", "access", "--policies", "300", "--decisions", "20000",
         "--casbin-seconds", "1", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["policies"] == 301 and figures["decisions"] >= 20000
    for key in ("decisions_per_s", "p99_us", "casbin_decisions_per_s", "ratio_vs_casbin"):
        assert figures[key] > 0, key
    assert figures["casbin_decisions"] > 0
    assert figures["agreement"] == 1.0  # the same workload, the same answers
