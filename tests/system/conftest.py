"""Fixtures of the system layer: the browser and the site (see `tests.system.browser`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.defer import Deferred

from tests.support import MeshNodes, unavailable
from tests.system.browser import CHROMIUM, PAGE_TIMEOUT, Chromium, Servers, Tab


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    """One headless Chromium for the module's tests (each test gets a context of its own)."""
    if not os.path.exists(CHROMIUM):
        unavailable(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`")
    try:
        import playwright  # noqa: F401
    except ImportError:
        unavailable("playwright is not installed: `pip install playwright` (the test extra)")
    browser = Chromium()
    try:
        browser.start()
    except Exception as e:
        browser.stop()
        unavailable(f"Chromium does not start under Playwright: {e}")
    yield browser
    browser.stop()


@pytest.fixture
def browser(chromium: Chromium) -> Iterator[Callable[..., Deferred[Tab]]]:
    """Open pages (tabs) of a fresh browser context; the context is closed after the test."""
    context = chromium.blocking(
        lambda: chromium.browser.new_context(viewport={"width": 1360, "height": 860}, device_scale_factor=1)
    )
    chromium.blocking(lambda: context.set_default_timeout(PAGE_TIMEOUT))

    def open_tab(url: str, *, webcrypto: bool = True, init_script: str | None = None) -> Deferred[Tab]:
        def open_page() -> Tab:
            page = context.new_page()
            tab = Tab(chromium, page)
            if not webcrypto:
                # A page without WebCrypto, as on plain http from another host:
                # the client must use its bundled SHA-256.
                page.add_init_script("Object.defineProperty(window.crypto, 'subtle', {value: undefined});")
            if init_script is not None:
                page.add_init_script(init_script)
            page.goto(url)
            return tab

        return chromium.call(open_page)

    yield open_tab
    chromium.blocking(context.close)


@pytest.fixture
def servers(mesh: MeshNodes) -> Iterator[Servers]:
    """Start servers and plain nodes (`.Servers`); everything started is stopped after the test."""
    started = Servers(mesh)
    yield started
    pytest_twisted.blockon(defer.ensureDeferred(started.close()))
