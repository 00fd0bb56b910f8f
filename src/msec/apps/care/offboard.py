"""A person leaves the service: her devices stop, her data is erased, nobody sees her home.

:func:`offboard` is what the portal's "Erase this person" button runs (``POST
/care/homes/{home}/erase``), in this order, so that nothing new arrives while the rest goes:

1. her five devices are revoked (each revocation a log leaf): their messages are refused
   from then on, within a second (the ingest workers' registry check);
2. the engine stops watching the home (no device-offline alarms for revoked devices);
3. her active alarms are resolved, with a note saying why;
4. every consent grant on her data is revoked: caregivers lose the home at their next request;
5. her data subject is crypto-shredded (``msec erase``): personal data, readings and
   contacts' link to her are unreadable, the erasure is logged and ``msec verify`` holds;
   her contacts' own subjects are erased at the next read or maintenance round;
6. her row in ``care_people`` (settings only) goes.

Every step is idempotent: running it again (a crash half-way, a second click) finishes the
job. The alarm history stays (home ids and times, no personal data), so do the log's leaves,
which commit to ciphertexts only.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from msec.apps.care.alarms import AlarmStateError, SqlAlarms
from msec.apps.care.model import DEVICE_ROLES, device_name
from msec.apps.care.people import CarePeople
from msec.companion.errors import UnknownSubject
from msec.platform.platform import Platform

__all__ = ["ERASE_NOTE", "Offboarded", "offboard"]

#: The note on the alarms resolved by an offboarding.
ERASE_NOTE = "The person left the service; her data was erased."


@dataclass(frozen=True, slots=True)
class Offboarded:
    """What :func:`offboard` did."""

    home: str
    devices_revoked: tuple[str, ...]
    alarms_resolved: int
    grants_revoked: int
    records_erased: int


def offboard(
    platform: Platform, people: CarePeople, alarms: SqlAlarms, home: str, *, by: str
) -> Offboarded:
    """Take ``home``'s person out of the service and erase her data (see the module)."""
    revoked = tuple(
        name
        for role in DEVICE_ROLES
        if platform.registry.revoke(name := device_name(home, role))
    )
    people.engine.remove(home)
    resolved = 0
    for alarm in alarms.active(home):
        with contextlib.suppress(AlarmStateError):  # resolved meanwhile by an operator
            alarms.resolve(alarm.id, by=by, note=ERASE_NOTE)
            resolved += 1
    grants = platform.consent.revoke_all(home, by=by)
    try:
        erasure = platform.erase_subject(home, reason="care: the person left the service")
        erased = int(getattr(erasure, "record_count", 0))
    except UnknownSubject:  # erased before, or never stored anything
        erased = 0
    people.store.remove(home)
    return Offboarded(home, revoked, resolved, len(grants), erased)
