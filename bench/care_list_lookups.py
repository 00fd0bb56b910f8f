"""What the access decisions cost a list of new alarms, one lookup per home or one batch.

    .venv/bin/python bench/care_list_lookups.py [--alarms 286] [--polls 20]

One process, as in ``msec serve``: the care API with ``--alarms`` active alarms, each of its
own home, each home's gateway registered with the person as its subject. Every poll of
``GET /api/v1/care/alarms`` starts with the access layer's cache empty, as when a burst of
new homes' alarms (a morning check due at 10:00 in 286 homes) first reaches the operators.
It times the polls (median and max), and counts their SQL queries, with the homes looked up
one at a time (as before ``AccessService.prefetch``) and in one batch (as now), each alone
and beside a thread that keeps the interpreter busy (as the care engine decrypting readings
and the ingest threads do on a loaded server): every query releases the interpreter lock,
and waits to get it back.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import sqlalchemy as sa

from care_api_site import care_api_site, one_by_one_and_batched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alarms", type=int, default=286)
    parser.add_argument("--polls", type=int, default=20)
    args = parser.parse_args()
    site = care_api_site(args.alarms, register=True)
    queries = [0]

    def counted(*_: Any) -> None:
        queries[0] += 1

    sa.event.listen(site.platform.engine, "before_cursor_execute", counted)
    batched = site.access._resources_many

    def polls() -> dict[str, Any]:
        took, asked = [], []
        for _ in range(args.polls):
            site.access._info.clear()  # every home new to the access layer
            before, began = queries[0], time.perf_counter()
            answer = site.client.get("/api/v1/care/alarms", params={"limit": 1000})
            took.append(1000 * (time.perf_counter() - began))
            asked.append(queries[0] - before)
            assert answer.status_code == 200 and len(answer.json()) == args.alarms
        return {"median_ms": round(statistics.median(took), 1), "max_ms": round(max(took), 1),
                "queries": round(statistics.median(asked))}  # fmt: skip

    figures: dict[str, Any] = {"alarms": args.alarms, "polls": args.polls}

    def batch(on: bool) -> None:
        site.access._resources_many = batched if on else None  # None: prefetch does nothing

    figures.update(one_by_one_and_batched(polls, batch))
    print(json.dumps(figures))
    site.close()


if __name__ == "__main__":
    main()
