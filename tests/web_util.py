"""Helpers for the web page's end-to-end tests: Debian's chromium driven by playwright, the
screenshots, and a broker serving the page on a loopback HTTP port."""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import FAST_HB, Procs

CHROMIUM = ("chromium", "chromium-browser")
VIEWPORT = {"width": 1280, "height": 900}
WAIT_MS = 120_000  # every wait on the page: generous, a slow machine only waits longer


def _missing(sentence: str) -> None:
    """Skip where the browser cannot run here; under CI that is a failure, not a skip."""
    if os.environ.get("CI"):
        pytest.fail(sentence)
    pytest.skip(sentence)


def chromium_path() -> str:
    path = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    if path is None:
        _missing("no chromium on PATH to drive the web page (apt install chromium)")
    return path


@pytest.fixture(scope="module")
def browser():
    """One headless chromium for the module's tests."""
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser, url: str):
    """A fresh page (its own cookies) at `url`, 1280x900, every wait WAIT_MS long."""
    page = browser.new_context(viewport=VIEWPORT).new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    return page


@pytest.fixture
def shots(tmp_path):
    """Where screenshots go: $SWARM_SCREENSHOTS (`make screenshots`), else the test's tmp."""
    folder = Path(os.environ.get("SWARM_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)

    def shot(page, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path))
        return path
    return shot


def web_broker(procs: Procs, port: int, http: int, *extra: str, name: str = "broker"):
    """A broker with its HTTP server (the page) on 127.0.0.1:`http`; returns once it answers."""
    proc = procs.start("swarm-broker", "--bind", f"tcp://127.0.0.1:{port}", "--heartbeat-s",
                       FAST_HB, "--http", f"127.0.0.1:{http}", "--no-mdns", "--state-dir",
                       "off", *extra, name=name)
    wait_http(f"http://127.0.0.1:{http}/health", proc)
    return proc


def wait_http(url: str, proc, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the broker exited: {proc.log_path.read_text()[-2000:]}"
        if status_of(url) is not None:  # any answer (/health is 503 with no worker) will do
            return
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def status_of(url: str, cookie: str | None = None) -> int | None:
    """The HTTP status a GET of `url` gets; None when nothing answers."""
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None
