"""Browser tests: a real Chromium (Debian's ``chromium``) driven by Playwright against a demo.

One demo :class:`~msec.platform.runtime.Runtime` (Pilot 1's park, devices publishing every
2 s) serves the whole session. Playwright's own browser downloads are never used: the tests
launch ``/usr/bin/chromium``. Without it, or without the ``playwright`` package, the tests
are skipped, except in CI (``CI=true``), where that is a failure.

Every page a test opens through ``citizen_page`` / ``officer_page`` (or ``new_page``) is
watched: a console error, an uncaught exception or a Content-Security-Policy violation fails
the test at teardown, unless the test said it expects it (``watch.allow(pattern)``, e.g. the
403 a refused page answers with). The ``shot`` fixture, ``shot(page, name)``, saves a
full-page screenshot to ``test-artifacts/screenshots/<name>.png`` for people to look at.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from msec.platform.runtime import Runtime
from msec.platform.settings import Settings

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
#: Simulated devices publish this often; live updates arrive within about that.
SIM_INTERVAL_S = 2.0
#: Generous: a loaded CI machine runs the platform's workers next to the browser.
TIMEOUT_MS = 20_000
MOBILE = {
    "viewport": {"width": 390, "height": 844}, "device_scale_factor": 2,
    "is_mobile": True, "has_touch": True,
}  # fmt: skip
DESKTOP = {"viewport": {"width": 1366, "height": 900}}
#: Console errors that are not the page's fault: browsers ask for source maps of the vendored
#: libraries, which we do not ship.
ALWAYS_ALLOWED = (re.compile(r"leaflet\.js\.map"),)


def _unavailable(reason: str) -> NoReturn:
    # CI must never pass by skipping what it was meant to test (as in tests/conftest.py).
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class Demo:
    """The running demo: its URL, data directory and the demo accounts' passwords."""

    runtime: Runtime
    url: str
    data_dir: Path
    passwords: dict[str, str]

    def password(self, role: str) -> str:
        return self.passwords[f"demo-{role}"]


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One demo for the session, started once every park device has a live value."""
    data_dir = tmp_path_factory.mktemp("browser-demo")
    settings = Settings.load(None, data_dir=data_dir, http={"port": 0})
    runtime = Runtime(settings, simulate=True, sim_interval_s=SIM_INTERVAL_S)
    started = time.time()
    try:
        runtime.start()
        runtime.wait_for_simulators(started, timeout=60.0)
        passwords = json.loads((data_dir / "keys" / "demo-accounts.json").read_text())
        yield Demo(runtime, runtime.url, data_dir, passwords)
    finally:
        runtime.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, with nothing that talks to the network by itself."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@dataclass
class Watch:
    """What went wrong in the pages of one test: console errors, uncaught exceptions and
    CSP violations (Chromium reports those on the console as errors)."""

    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=lambda: list(ALWAYS_ALLOWED))

    def allow(self, pattern: str) -> None:
        """Expect console errors matching ``pattern`` from now on (a deliberate 403)."""
        self.allowed.append(re.compile(pattern))

    def attach(self, page: Page) -> Page:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: uncaught {exc}"))
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        location = message.location.get("url", "") if message.location else ""
        text = f"{message.text} ({location})"
        if not any(p.search(text) for p in self.allowed):
            self.errors.append(text)


@pytest.fixture
def watch() -> Iterator[Watch]:
    """The error watcher of this test's pages; the test fails if any error was seen."""
    seen = Watch()
    yield seen
    if seen.errors:
        pytest.fail("browser errors:\n" + "\n".join(seen.errors), pytrace=False)


def _context(browser: Browser, demo: Demo, **options: Any) -> BrowserContext:
    context = browser.new_context(base_url=demo.url, locale="en-GB", accept_downloads=True,
                                  **options)  # fmt: skip
    context.set_default_timeout(TIMEOUT_MS)
    return context


@pytest.fixture
def new_page(browser: Browser, demo: Demo, watch: Watch) -> Iterator[Callable[..., Page]]:
    """``new_page(mobile=True)``: a watched page in a fresh context (own cookies)."""
    contexts: list[BrowserContext] = []

    def make(*, mobile: bool) -> Page:
        context = _context(browser, demo, **(MOBILE if mobile else DESKTOP))
        contexts.append(context)
        return watch.attach(context.new_page())

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def citizen_page(new_page: Callable[..., Page]) -> Page:
    """A phone-sized page, as a visitor who scanned a stop's QR code has."""
    return new_page(mobile=True)


@pytest.fixture
def officer_page(new_page: Callable[..., Page]) -> Page:
    """A desktop page, as the municipality's officer has."""
    return new_page(mobile=False)


@pytest.fixture(autouse=True, scope="session")
def _expect_timeout() -> None:
    try:
        from playwright.sync_api import expect
    except ImportError:
        return
    expect.set_options(timeout=TIMEOUT_MS)


def save_screenshot(page: Page, name: str) -> Path:
    """A full-page screenshot at ``test-artifacts/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def shot() -> Callable[[Page, str], Path]:
    """``shot(page, name)``: see :func:`save_screenshot`."""
    return save_screenshot
