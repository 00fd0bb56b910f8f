"""`msec bench log` runs and reports its figures beside pymerkle (no speed asserted)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from msec.cli.main import app


def test_bench_log_reports_every_figure_on_the_same_tree() -> None:
    result = CliRunner().invoke(app, ["bench", "log", "--leaves", "3000", "--batch", "700",
                                      "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    for key in ("leaves_per_s", "inclusion_proof_ms", "pymerkle_leaves_per_s",
                "pymerkle_proof_ms", "append_ratio_vs_pymerkle", "proof_speedup_vs_pymerkle"):
        assert figures[key] > 0, key
    assert figures["leaves"] == 3000
    assert figures["pymerkle_same_root"] is True  # both logs hold the same RFC 9162 tree
