"""A platform with Connected Care installed on its web app, for the API and portal tests
(the fixture is registered by this folder's conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI

from msec.access.model import Principal, PrincipalKind
from msec.apps.care.app import CareApp, install
from msec.platform import Platform, Settings
from msec.platform.runtime import web_ui
from msec.web.app import create_app

HOMES = ("home-0001", "home-0002")


@dataclass
class CareSite:
    platform: Platform
    app: FastAPI
    care: CareApp


def care_web(platform: Platform) -> CareSite:
    """``platform``'s web app (an operator service token ``op-token``) with the care app
    installed and its engine running; stop it with ``site.care.stop()``."""
    operator = Principal("service:operator", PrincipalKind.SERVICE, "default",
                         frozenset({"operator"}))  # fmt: skip
    access = platform.access_service({"op-token": operator})
    ui, feed = web_ui(platform, access)
    app = create_app(twin=platform.twin, events=platform.events, ingestor=platform.ingestor,
                     access=access, principals=platform.principals, trust=platform.trust,
                     consent=platform.consent, registry=platform.registry, ui=ui)  # fmt: skip
    return CareSite(platform, app, install(app, ui, platform, feed))


@pytest.fixture
def care_site(tmp_path: Path) -> Iterator[CareSite]:
    """Two homes (their gateways registered with the home as subject), the web app with the
    care app installed and its engine running."""
    platform = Platform.open(Settings.load(None, data_dir=tmp_path / "data"))
    for home in HOMES:
        platform.add_device(f"{home}-gw", "care_gateway", subject=home)
    site = care_web(platform)
    yield site
    site.care.stop()
    platform.close()
