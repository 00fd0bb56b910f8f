"""The ingest benchmark runs end to end and reports what it claims (no timing asserted)."""

from __future__ import annotations

import pytest

from msec.bench.ingest import run_ingest_bench


@pytest.mark.integration
@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_bench_ingest_reports_every_figure(broker: str) -> None:
    result = run_ingest_bench(messages=3000, broker=broker, workers=2, batch=3, rate=None,
                              database="sqlite")
    for key in ("readings_per_s", "lost", "p50_ms", "p99_ms", "raw_per_s", "ratio",
                "half_rate_p99_ms", "half_rate_lost"):
        assert key in result, key
    assert result["readings"] == 3000 and result["messages"] == 1000
    assert result["lost"] == 0 and result["half_rate_lost"] == 0
    assert result["readings_per_s"] > 0 and result["raw_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["readings_per_s"] / result["raw_per_s"],
                                            abs=0.01)
    assert 0 <= result["p50_ms"] <= result["p99_ms"]
    assert result["security_events"] == 0
    assert result["workers"] == (2 if broker == "mosquitto" else 1)
