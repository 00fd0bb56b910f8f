"""What telling the families costs a burst of alarms: one home at a time, or one batch.

    .venv/bin/python bench/care_notify_burst.py [--alarms 286] [--rounds 5]

The care alarm store calls its subscribers in the thread that raised the alarms: for a
timer that is the care engine's, which holds its lock meanwhile, so whatever the subscribers
do delays the next readings and alarms. Here ``--alarms`` homes each have two contacts (an
e-mail address and a webhook, encrypted in the companion store, as the portal adds them);
a burst of ``--alarms`` alarms (the morning check due at 10:00 in 286 homes) is raised in
one call, with the contacts' notifications routed and queued one alarm at a time (as before
``CareNotifications.route_many``: a read of the home's contacts and one outbox transaction
per alarm) and in one batch (as now). It times the call (the alarms' own transaction and
the subscriber), median and max over ``--rounds`` bursts, and counts the SQL statements, each
alone and beside a thread that keeps the interpreter busy (as the ingest threads and the API
do on a loaded server). Nothing is sent: the notifier is not started.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from care_api_site import one_by_one_and_batched
from msec.apps.care.alarms import SqlAlarms
from msec.apps.care.contacts import CareNotifications, ContactBook
from msec.apps.care.model import AlarmKind, AlarmRequest
from msec.apps.care.notify import Outbox
from msec.platform import Platform, Settings

SECRET_NAME = "MSEC_CARE_WEBHOOK_BENCH"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alarms", type=int, default=286)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    platform = Platform.open(Settings.load(None, data_dir=Path(tempfile.mkdtemp()) / "data"))
    engine = platform.engine
    alarms = SqlAlarms(engine)
    alarms.create_schema()
    outbox = Outbox(engine)
    outbox.create_schema()
    book = ContactBook(engine, platform.companion, platform.trust.log, outbox=outbox,
                       environ={SECRET_NAME: "bench-secret-" + "x" * 32})  # fmt: skip
    book.create_schema()
    homes = [f"home-{i:05d}" for i in range(args.alarms)]
    for home in homes:
        book.add(home, "email", f"family.{home}@example.org", name="Family", by="bench")
        book.add(home, "webhook", f"https://hooks.example.org/{home}", name="Family app",
                 secret_name=SECRET_NAME, by="bench")  # fmt: skip
    notifications = CareNotifications(engine, alarms, outbox, book)
    subscriber: Any = notifications.outbox.subscriber(notifications.route)
    statements = [0]

    def counted(*_: Any) -> None:
        statements[0] += 1

    sa.event.listen(engine, "before_cursor_execute", counted)
    rounds = [0]

    def bursts() -> dict[str, Any]:
        took, ran = [], []
        for _ in range(args.rounds):
            rounds[0] += 1
            requests = [AlarmRequest(home, AlarmKind.NO_MORNING_ACTIVITY, f"day-{rounds[0]}",
                                     time.time()) for home in homes]  # fmt: skip
            alarms.on_change.append(subscriber)
            before, began = statements[0], time.perf_counter()
            raised = alarms.raise_alarms(requests)
            took.append(1000 * (time.perf_counter() - began))
            ran.append(statements[0] - before)
            alarms.on_change.remove(subscriber)
            assert all(raised) and len(raised) == len(homes)
            told = outbox.counts()["pending"]
            assert told == 2 * len(homes) * rounds[0], told  # every family told, once
            for alarm in raised:  # for the next burst (one active alarm per home and kind)
                assert alarm is not None
                alarms.resolve(alarm.id, by="bench")
        return {"median_ms": round(statistics.median(took), 1), "max_ms": round(max(took), 1),
                "statements": round(statistics.median(ran))}  # fmt: skip

    figures: dict[str, Any] = {"alarms": args.alarms, "contacts_per_home": 2,
                               "rounds": args.rounds}  # fmt: skip

    def batch(batched: bool) -> None:
        subscriber.route_many = notifications.route_many if batched else None

    figures.update(one_by_one_and_batched(bursts, batch))
    print(json.dumps(figures))
    platform.close()


if __name__ == "__main__":
    main()
