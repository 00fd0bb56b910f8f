"""Installing Connected Care on a running platform."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from fastapi import FastAPI

from msec.access.model import Effect, Policy, Verb
from msec.apps.care.alarms import SqlAlarms
from msec.apps.care.api import add_care_api
from msec.apps.care.contacts import install_contacts
from msec.apps.care.datasets import install_datasets
from msec.apps.care.model import DEVICE_ROLES
from msec.apps.care.notify import Recipient
from msec.apps.care.pages import CARE_ROLES, add_care_pages
from msec.apps.care.rules import load_definitions
from msec.apps.care.service import CareService
from msec.web.live import LiveFeed
from msec.web.ui import NavItem, WebUi

if TYPE_CHECKING:
    from msec.apps.care.people import CarePeople
    from msec.platform.platform import Platform

__all__ = ["SENSITIVE_RESOURCES", "CareApp", "install"]

#: Every reading of a home's devices is personal data: stored encrypted per person in the
#: companion store (erasable with them), never in the twin. The runtime adds these patterns
#: to ``[sensitive] resources`` before its ingest workers start.
SENSITIVE_RESOURCES: Final = tuple(f"*-{role}/*/*" for role in DEVICE_ROLES)

#: Caregivers read a home's data only with a consent grant from the person.
CAREGIVER_POLICY: Final = Policy(
    "care-caregivers-with-consent", Effect.ALLOW,
    frozenset({Verb.DESCRIBE, Verb.GET, Verb.SUBSCRIBE}), roles=frozenset({"caregiver"}),
    consent=True, priority=100,
    description="Connected Care: caregivers see the homes whose person granted them access",
)  # fmt: skip


class CareApp:
    """What ``install`` set up; ``stop`` ends the engine (the runtime calls it at stop)."""

    def __init__(self, platform: Platform, alarms: SqlAlarms, service: CareService,
                 people: CarePeople) -> None:  # fmt: skip
        self.platform = platform
        self.alarms = alarms
        self.service = service
        #: The people looked after (the portal's store, kept in step with the engine).
        self.people = people
        #: What else ``install`` started (notifications, datasets), stopped after the engine.
        self.parts: list[Any] = []

    def stop(self) -> None:
        self.service.stop()
        for part in self.parts:
            part.stop()


def install(app: FastAPI, ui: WebUi, platform: Platform, feed: LiveFeed) -> CareApp:
    """Tables, the caregivers' policy, the API, and the engine running on the log."""
    alarms = SqlAlarms(platform.engine)
    alarms.create_schema()
    # A mistake in the definition file stops the start: better than running without an alarm.
    definitions = load_definitions(platform.settings.care.alerts)
    # The runtime's clock (simulated time in ``msec bench care``), else the wall clock.
    clock = getattr(app.state, "clock", time.time)
    service = CareService(platform, alarms, definitions=definitions, clock=clock)
    service.create_schema()
    platform.policies.ensure(CAREGIVER_POLICY, by="app:care")
    if ui.access.sync is not None:
        ui.access.sync.refresh(force=True)
    add_care_api(app, alarms)
    ui.add_app("msec.apps.care")
    ui.nav.append(NavItem("/care", "nav.care", CARE_ROLES, order=50))
    for role in ("operator", "caregiver"):
        ui.home.setdefault(role, "/care")
    add_care_pages(app, ui, alarms, service.engine)
    from msec.apps.care.portal import add_care_portal  # people, devices and alerts pages

    people = add_care_portal(app, ui, platform, alarms, service.engine)
    # Notifications subscribe to the alarms before the engine can raise one; both keep to the
    # wall clock (a benchmark's simulated time must not make datasets or mails).
    desk = [Recipient("email", address, name="Operators' desk", role="operator")
            for address in platform.settings.care.desk]  # fmt: skip
    parts = [install_contacts(app, platform, alarms, desk=desk), install_datasets(app, platform)]
    # The stored people's settings go over those of the engine's snapshot before it runs.
    service.start(prepare=people.apply)
    care = CareApp(platform, alarms, service, people)
    care.parts += parts
    return care
