"""The care API in one process, as ``msec serve`` runs it, for the care micro-benchmarks
(``care_snapshot_stall.py``, ``care_list_lookups.py``): a fresh platform in a temporary
folder, an operator's static token, and ``alarms`` active alarms of homes
``home-00000``, ``home-00001``...
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from msec.access.model import Principal, PrincipalKind
from msec.access.service import AccessService
from msec.apps.care.app import install
from msec.apps.care.model import AlarmKind, AlarmRequest
from msec.platform import Platform, Settings
from msec.platform.runtime import web_ui
from msec.web.app import create_app

TOKEN = "bench-token"


@dataclass
class CareApiSite:
    platform: Platform
    access: AccessService
    care: Any
    client: TestClient

    def close(self) -> None:
        self.care.stop()
        self.platform.close()


def home(i: int) -> str:
    return f"home-{i:05d}"


def care_api_site(alarms: int, *, register: bool = False) -> CareApiSite:
    """The site; ``register``: each home's gateway registered with the home as its subject
    (as the portal does), so that an access decision has a device to look up."""
    platform = Platform.open(Settings.load(None, data_dir=Path(tempfile.mkdtemp()) / "data"))
    operator = Principal("service:bench", PrincipalKind.SERVICE, "default",
                         frozenset({"operator"}))  # fmt: skip
    access = platform.access_service({TOKEN: operator})
    ui, feed = web_ui(platform, access)
    app = create_app(twin=platform.twin, events=platform.events, ingestor=platform.ingestor,
                     access=access, principals=platform.principals, trust=platform.trust,
                     consent=platform.consent, registry=platform.registry, ui=ui)  # fmt: skip
    care = install(app, ui, platform, feed)
    if register:
        for i in range(alarms):
            platform.add_device(f"{home(i)}-gw", "care_gateway", subject=home(i))
    care.alarms.raise_alarms([
        AlarmRequest(home(i), AlarmKind.NO_MORNING_ACTIVITY, "2026-03-02", time.time())
        for i in range(alarms)
    ])  # fmt: skip
    client = TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})
    return CareApiSite(platform, access, care, client)


def beside(work: Callable[[], object], measure: Callable[[], Any]) -> Any:
    """``measure()`` while another thread calls ``work()`` again and again."""
    stop = threading.Event()

    def again() -> None:
        while not stop.is_set():
            work()

    thread = threading.Thread(target=again, daemon=True)
    thread.start()
    time.sleep(0.2)
    try:
        return measure()
    finally:
        stop.set()
        thread.join()


def spin() -> int:
    """Pure Python work that only lets go of the interpreter lock when made to (as the care
    engine decrypting readings and the ingest threads on a loaded server): for ``beside``."""
    return sum(i * i for i in range(20_000))


def one_by_one_and_batched(
    measure: Callable[[], dict[str, Any]], batch: Callable[[bool], None]
) -> dict[str, Any]:
    """``measure()`` (a dict with ``median_ms``) one at a time (``batch(False)``), then
    batched, each alone and beside :func:`spin`; with the ratios of the medians."""
    figures: dict[str, Any] = {}
    for name, batched in (("one_by_one", False), ("batched", True)):
        batch(batched)
        figures[name] = {"alone": measure(), "busy": beside(spin, measure)}
    for where in ("alone", "busy"):
        figures[f"ratio_{where}"] = round(
            figures["one_by_one"][where]["median_ms"] / figures["batched"][where]["median_ms"], 1
        )
    return figures
