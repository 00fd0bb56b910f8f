"""Prometheus metrics, gathered from the ingest workers' stats files at scrape time."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from msec.guard.base import EventLog
from msec.ingest.pipeline import Stats


class IngestCollector(Collector):
    """Sums the counters of every worker (``<run_dir>/worker-*.json``) and the HTTP ingestor.

    Worker files older than ``stale_after`` seconds are ignored for the backlog gauge but
    still count for totals of the current run.
    """

    def __init__(self, run_dir: Path, http_stats: Callable[[], Stats], events: EventLog,
                 stale_after: float = 30.0) -> None:
        self._run_dir = run_dir
        self._http_stats = http_stats
        self._events = events
        self._stale_after = stale_after

    def _workers(self) -> list[dict]:
        found = []
        for path in sorted(self._run_dir.glob("worker-*.json")):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # being replaced right now; next scrape reads it
        return found

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        workers = self._workers()
        http = self._http_stats()
        accepted = http.accepted + sum(w.get("accepted", 0) for w in workers)
        yield CounterMetricFamily("msec_readings_accepted", "Readings verified and stored",
                                  value=accepted)
        duplicates = http.duplicates + sum(w.get("duplicates", 0) for w in workers)
        yield CounterMetricFamily("msec_readings_duplicate",
                                  "Readings redelivered and already stored (idempotent)",
                                  value=duplicates)
        rejected = CounterMetricFamily("msec_messages_rejected",
                                       "Messages refused by the ingest checks, by reason",
                                       labels=["reason"])
        totals: dict[str, int] = dict(http.rejected)
        for w in workers:
            for reason, count in w.get("rejected", {}).items():
                totals[reason] = totals.get(reason, 0) + count
        for reason, count in sorted(totals.items()):
            rejected.add_metric([reason], count)
        yield rejected
        events = GaugeMetricFamily("msec_security_events_stored",
                                   "Security events in the durable log, by reason",
                                   labels=["reason"])
        for reason, count in sorted(self._events.counts().items()):
            events.add_metric([reason], count)
        yield events
        if workers:
            bounds = workers[0]["latency_buckets"]
            counts = [0] * (len(bounds) + 1)
            total = 0.0
            for w in workers:
                for i, c in enumerate(w.get("latency_counts", [])):
                    counts[i] += c
                total += w.get("latency_sum", 0.0)
            cumulative, buckets = 0, []
            for bound, c in zip([*map(str, bounds), "+Inf"], counts, strict=True):
                cumulative += c
                buckets.append((bound, cumulative))
            yield HistogramMetricFamily("msec_ingest_latency_seconds",
                                        "Receive to durable latency of MQTT messages",
                                        buckets=buckets, sum_value=total)
        now = time.time()
        backlog = sum(w.get("backlog", 0) for w in workers
                      if now - w.get("updated", 0) < self._stale_after)
        yield GaugeMetricFamily("msec_ingest_backlog",
                                "Messages received by workers and not yet stored", value=backlog)
        yield GaugeMetricFamily("msec_ingest_workers", "Workers that reported recently",
                                value=sum(1 for w in workers
                                          if now - w.get("updated", 0) < self._stale_after))


def make_registry(collector: IngestCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry
