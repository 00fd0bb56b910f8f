"""Installing the Park Guide on a running platform's web application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from msec.apps.park_guide.dashboard import add_dashboard
from msec.apps.park_guide.guide import CITIZEN_ROLE, ParkGuide
from msec.apps.park_guide.pages import add_park_pages
from msec.apps.park_guide.park import Park, default_park, load_park
from msec.apps.park_guide.store import SqlParkStore
from msec.web.live import LiveFeed
from msec.web.ui import NavItem, StaffRoles, WebUi

if TYPE_CHECKING:
    from msec.platform.platform import Platform

__all__ = ["install", "park_of"]


def park_of(platform: Platform) -> Park:
    """The configured park (``[park] file``), else Las Llamas park of the demo."""
    path = platform.settings.park.file
    if path is None:
        return default_park()

    def locate(device: str) -> tuple[float, float] | None:
        info = platform.twin.provider(device)
        if info is None or info.latitude is None or info.longitude is None:
            return None
        return info.latitude, info.longitude

    return load_park(path, locate)


def install(app: FastAPI, ui: WebUi, platform: Platform, feed: LiveFeed,
            park: Park | None = None) -> ParkGuide:  # fmt: skip
    """Add the guide's pages, links, messages and threshold checks; returns the guide."""
    guide = ParkGuide(platform, park or park_of(platform), SqlParkStore(platform.engine))
    guide.setup()
    if ui.access.sync is not None:  # the guide's policies are in force at once
        ui.access.sync.refresh(force=True)
    ui.add_app("msec.apps.park_guide")
    ui.nav += [
        NavItem("/park", "nav.park", None, order=10),
        NavItem("/park/leaderboard", "nav.leaderboard", None, order=20),
        NavItem("/park/account", "nav.account", frozenset({CITIZEN_ROLE}), order=30),
        NavItem("/dashboard/park", "nav.dashboard", StaffRoles, order=40),
        NavItem("/park/register", "nav.register", frozenset(), order=800),
    ]
    for role in sorted(StaffRoles):
        ui.home.setdefault(role, "/dashboard/park")
    ui.home.setdefault(CITIZEN_ROLE, "/park/account")
    ui.register_path = "/park/register"
    guide.feed = feed
    feed.listen(guide.on_changes)
    add_park_pages(app, ui, guide, feed)
    add_dashboard(app, ui, guide, feed)
    return guide
