"""
The browser and the site for the system tests of the web face: a headless
Chromium driven by Playwright (`.Chromium`, its pages `.Tab`), and servers
(`.Servers`): twisted_mesh nodes with their web site, and peers of them.

Chromium comes from Debian (``apt-get install -y chromium``); Playwright
drives it with ``executable_path``.  Without it the browser tests fail under
CI (``CI`` set) and are skipped elsewhere (`tests.support.unavailable`).

Playwright's sync API blocks, and its objects belong to the thread that made
them: each browser runs in a worker thread of its own (`.Chromium`) while
the reactor serves the site in the main thread.

The browser tests save screenshots of the page in ``tests/system/artifacts/``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from tests.support import MESH, MeshNodes, within
from twisted_mesh import MeshService, Network
from twisted_mesh.web import WebService

T = TypeVar("T")

TESTS = Path(__file__).resolve().parent
ARTIFACTS = TESTS / "artifacts"
CHROMIUM = os.environ.get("TWISTED_MESH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Milliseconds Playwright waits for anything in the page (a loaded 2-core box is slow).
PAGE_TIMEOUT = 30_000
LOOPBACK = "tcp:0:interface=127.0.0.1"


# --- the browser, in a thread of its own --------------------------------------------------


class Chromium:
    """
    A headless Chromium under Playwright's sync API, every call of which runs
    in one worker thread; `.call` returns a Deferred that fires in the
    reactor's thread.
    """

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chromium")
        self._playwright: Any = None
        self.browser: Any = None

    def blocking(self, function: Callable[..., T], *args: Any, timeout: float = 120.0) -> T:
        """Run ``function`` in the browser's thread and wait for it (no reactor needed)."""
        return self._thread.submit(function, *args).result(timeout)

    def call(self, function: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run ``function`` in the browser's thread, without blocking the reactor."""
        d: Deferred[T] = Deferred()

        def done(future: Future[T]) -> None:
            error = future.exception()
            if error is not None:
                reactor.callFromThread(d.errback, Failure(error))  # type: ignore[attr-defined]
            else:
                reactor.callFromThread(d.callback, future.result())  # type: ignore[attr-defined]

        self._thread.submit(function, *args).add_done_callback(done)
        return within(d, PAGE_TIMEOUT / 1000 * 3)

    def start(self) -> None:
        def launch() -> None:
            from playwright.sync_api import sync_playwright

            self._playwright = sync_playwright().start()
            self.browser = self._playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

        self.blocking(launch)

    def stop(self) -> None:
        def close() -> None:
            if self.browser is not None:
                self.browser.close()
            if self._playwright is not None:
                self._playwright.stop()

        try:
            self.blocking(close)
        finally:
            self._thread.shutdown(wait=False)


# A chat line with the text ARG[0], sent by this page when ARG[1], its sender
# named ARG[2] (when not null): its sender and kind.
_SHOWN = """
([text, mine, kind]) => {
  for (const item of document.querySelectorAll("#messages li[data-sender]")) {
    const shown = {sender: item.dataset.sender, kind: item.querySelector(".kind").textContent};
    if (item.classList.contains("mine") === mine && item.querySelector(".text").textContent === text
        && (kind === null || shown.kind === kind)) {
      return shown;
    }
  }
  return null;
}
"""


class Tab:
    """A page of the browser, with the console errors it logged."""

    def __init__(self, chromium: Chromium, page: Any) -> None:
        self.chromium = chromium
        self.page = page
        self.console_errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console_errors.append(f"uncaught: {error}"))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def call(self, function: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run ``function(page, *args)`` in the browser's thread."""
        return self.chromium.call(function, self.page, *args)

    async def evaluate(self, script: str, arg: Any = None) -> Any:
        """The value of ``script`` (a JS function of ``arg``) in the page."""
        return await self.call(lambda page: page.evaluate(script, arg))

    async def node_id(self) -> str:
        """The ID of the page's mesh node."""
        return str(await self.evaluate("() => window.meshPage.sock.id"))

    async def wait_connected(self, to: str | None = None) -> None:
        """Wait until the page says it is connected (to the node ``to``)."""

        def wait(page: Any) -> None:
            page.wait_for_selector('#status[data-state="connected"]', timeout=PAGE_TIMEOUT)
            if to is not None:
                page.wait_for_function(
                    "id => window.meshPage.sock.routing_table.has(id) && "
                    "document.getElementById('status-text').textContent.includes(id.slice(0, 8))",
                    arg=to,
                    timeout=PAGE_TIMEOUT,
                )

        await self.call(wait)

    async def say(self, text: str) -> None:
        """Type ``text`` in the chat box, press Enter, and wait until it is shown as sent."""

        def say(page: Any) -> None:
            page.fill("#chat-input", text)
            page.press("#chat-input", "Enter")
            page.wait_for_function(_SHOWN, arg=[text, True, None], timeout=PAGE_TIMEOUT)

        await self.call(say)

    async def wait_for_message(self, text: str, kind: str | None = None) -> dict[str, Any]:
        """
        Wait until the chat shows a message ``text`` from another node (and
        names its sender ``kind``); return its sender and kind.
        """

        def wait(page: Any) -> dict[str, Any]:
            handle = page.wait_for_function(_SHOWN, arg=[text, False, kind], timeout=PAGE_TIMEOUT)
            return dict(handle.json_value())

        return await self.call(wait)

    async def screenshot(self, name: str) -> Path:
        """Save a screenshot of the page as ``tests/system/artifacts/NAME``."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name

        def shoot(page: Any) -> None:
            # A background tab's animations wait: bring it forward, and
            # show every animation finished.
            page.bring_to_front()
            page.screenshot(path=str(path), full_page=True, animations="disabled")

        await self.call(shoot)
        return path


# --- mesh nodes --------------------------------------------------------------------------


class Server:
    """A twisted_mesh node on TCP, with its web site (page and WebSocket) on another port."""

    def __init__(self, node: MeshService, web: WebService) -> None:
        self.node = node
        self.web = web

    @property
    def id(self) -> str:
        return self.node.id

    @property
    def tcp_port(self) -> int:
        return int(self.node.ports[0].getHost().port)

    @property
    def web_port(self) -> int:
        assert self.web.port is not None
        return int(self.web.port.getHost().port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/"

    async def stop(self) -> None:
        await self.web.stopService()
        await self.node.stopService()


class Servers:
    """
    Starts servers (a node on TCP with its web site) and peers of them, on
    loopback: their nodes come from ``mesh`` (stopped at its teardown), their
    web services stop at `.close`.
    """

    def __init__(self, mesh: MeshNodes) -> None:
        self.mesh = mesh
        self.webs: list[WebService] = []

    async def server(self, web: str = LOOPBACK, prot: Network = MESH, prefix: str = "/", **kwargs: Any) -> Server:
        """A started node of ``prot`` (and ``kwargs``) with its web site listening on ``web`` (under ``prefix``)."""
        node = self.mesh.service(prot, listen=[LOOPBACK], **kwargs)
        await within(node.listening)
        service = WebService(node, web, prefix=prefix)
        service.startService()
        self.webs.append(service)
        await within(service.listening)
        return Server(node, service)

    async def peer(self, of: Server) -> MeshService:
        """A started node of the server ``of``'s network, connected to it over TCP."""
        node = self.mesh.service(of.node.protocol, listen=[LOOPBACK])
        await within(node.listening)
        await within(node.connect(("127.0.0.1", of.tcp_port)))
        return node

    async def close(self) -> None:
        """Stop the web services still running."""
        for service in reversed(self.webs):
            if service.running:
                await service.stopService()
