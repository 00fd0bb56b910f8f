"""How long the alarm poll stalls while the care engine writes its snapshot.

    .venv/bin/python bench/care_snapshot_stall.py [--homes 10000] [--alarms 286]

One process, as in ``msec serve``: the care API with ``--alarms`` active alarms and an alarm
engine holding ``--homes`` homes. It times ``GET /api/v1/care/alarms`` (median and max of
20 polls) alone, then beside a thread that writes the engine's snapshot again and again,
first as one ``json.dumps`` of the whole state (how it was written before), then as the
engine writes it now (:meth:`CareEngine.snapshot_json`, a few hundred homes per call). A
single ``json.dumps`` call holds the interpreter lock until it returns, so every other
thread of the process (the API's among them) waits for the whole state to be encoded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

from care_api_site import beside, care_api_site
from msec.apps.care.engine import CareEngine
from msec.apps.care.model import SensorEvent


class _Nowhere:
    def raise_alarm(self, *args: object, **kwargs: object) -> bool:
        return False


def engine_with(homes: int) -> CareEngine:
    engine = CareEngine(_Nowhere())
    t = 1_772_442_000.0  # 2026-03-02 08:00 UTC
    for i in range(homes):
        home = f"home-{i:05d}"
        engine.configure(home, inactivity_s=3600 + i % 600)
        for role, service, res, value in (("motion", "motion", "detected", True),
                                          ("door", "contact", "open", False),
                                          ("bed", "occupancy", "occupied", False),
                                          ("plug", "power", "power", 3.0)):  # fmt: skip
            engine.observe(SensorEvent(home, role, f"{home}-{role}", service, res, value,
                                       t + i % 600, 1))  # fmt: skip
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--homes", type=int, default=10_000)
    parser.add_argument("--alarms", type=int, default=286)
    args = parser.parse_args()
    site = care_api_site(args.alarms)
    client = site.client
    engine = engine_with(args.homes)

    def polls() -> tuple[float, float]:
        took = []
        for _ in range(20):
            began = time.perf_counter()
            answer = client.get("/api/v1/care/alarms", params={"limit": 1000})
            took.append(1000 * (time.perf_counter() - began))
            assert answer.status_code == 200 and len(answer.json()) == args.alarms
        return statistics.median(took), max(took)

    def whole() -> str:  # the engine's snapshot_json before: one call for the whole state
        with engine._lock:
            live = {
                "now": engine.now,
                "homes": {h: vars(st) for h, st in engine.homes.items()},
                "people": {h: own.as_dict() for h, own in engine._own.items()},
                "retry": [dataclasses.asdict(r) for r in engine._retry],
            }
            return json.dumps(live, separators=(",", ":"))

    figures: dict[str, object] = {"homes": args.homes, "alarms": args.alarms}
    figures["poll_alone_ms"] = [round(x, 1) for x in polls()]
    for name, write in (("one_dumps", whole), ("chunked", engine.snapshot_json)):
        took = []
        for _ in range(5):
            began = time.perf_counter()
            size = len(write())
            took.append(1000 * (time.perf_counter() - began))
        assert name == "one_dumps" or write() == whole()  # the same text
        figures[f"{name}_write_ms"] = round(statistics.median(took), 1)
        figures["snapshot_mb"] = round(size / 1e6, 1)
        figures[f"poll_beside_{name}_ms"] = [round(x, 1) for x in beside(write, polls)]
    print(json.dumps(figures))
    site.close()


if __name__ == "__main__":
    main()
