"""
The web face and the browser client: the site (``twisted_mesh.web``), the
client's codec in Node, and the live page in a real headless Chromium driven
by Playwright, meshed with Python twisted_mesh nodes and a py2p node.

Chromium comes from Debian (``apt-get install -y chromium``); Playwright
drives it with ``executable_path``.  Without it these tests fail under CI
(``CI`` set) and are skipped elsewhere.

Playwright's sync API blocks, and its objects belong to the thread that made
them: each browser runs in a worker thread of its own (`.Chromium`) while
the reactor serves the site in the main thread.

The browser tests save screenshots of the page in ``tests/artifacts/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol as StreamProtocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent

from tests.reference import ReferenceNode
from tests.support import MESH, wait_for, within
from twisted_mesh import MeshService, flags
from twisted_mesh.web import WebService, static_path

T = TypeVar("T")

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parents[1]
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


def _unavailable(reason: str) -> None:
    """Fail under CI, where the browser must be there; skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the browser tests)")
    pytest.skip(reason)


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
        """Save a screenshot of the page as ``tests/artifacts/NAME``."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name

        def shoot(page: Any) -> None:
            # A background tab's animations wait: bring it forward, and
            # show every animation finished.
            page.bring_to_front()
            page.screenshot(path=str(path), full_page=True, animations="disabled")

        await self.call(shoot)
        return path


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


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    """One headless Chromium for the module's tests (each test gets a context of its own)."""
    if not os.path.exists(CHROMIUM):
        _unavailable(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`")
    try:
        import playwright  # noqa: F401
    except ImportError:
        _unavailable("playwright is not installed: `pip install playwright` (the test extra)")
    browser = Chromium()
    try:
        browser.start()
    except Exception as e:
        browser.stop()
        _unavailable(f"Chromium does not start under Playwright: {e}")
    yield browser
    browser.stop()


@pytest.fixture
def browser(chromium: Chromium) -> Iterator[Callable[..., Deferred[Tab]]]:
    """Open pages (tabs) of a fresh browser context; the context is closed after the test."""
    context = chromium.blocking(
        lambda: chromium.browser.new_context(viewport={"width": 1360, "height": 860}, device_scale_factor=1)
    )
    chromium.blocking(lambda: context.set_default_timeout(PAGE_TIMEOUT))

    def open_tab(url: str, *, webcrypto: bool = True) -> Deferred[Tab]:
        def open_page() -> Tab:
            page = context.new_page()
            tab = Tab(chromium, page)
            if not webcrypto:
                # A page without WebCrypto, as on plain http from another host:
                # the client must use its bundled SHA-256.
                page.add_init_script("Object.defineProperty(window.crypto, 'subtle', {value: undefined});")
            page.goto(url)
            return tab

        return chromium.call(open_page)

    yield open_tab
    chromium.blocking(context.close)


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


@pytest.fixture
def nodes() -> Iterator[dict[str, Callable[..., Any]]]:
    """Start servers and plain nodes; everything started is stopped after the test."""
    started: list[Any] = []

    async def server(web: str = LOOPBACK) -> Server:
        node = MeshService(MESH, listen=[LOOPBACK])
        node.startService()
        started.append(node)
        await within(node.listening)
        service = WebService(node, web)
        service.startService()
        started.append(service)
        await within(service.listening)
        return Server(node, service)

    async def peer(of: Server) -> MeshService:
        node = MeshService(MESH, listen=[LOOPBACK])
        node.startService()
        started.append(node)
        await within(node.listening)
        await within(node.connect(("127.0.0.1", of.tcp_port)))
        return node

    yield {"server": server, "peer": peer}

    async def stop_all() -> None:
        for service in reversed(started):
            if service.running:
                await service.stopService()

    pytest_twisted.blockon(defer.ensureDeferred(stop_all()))


class _Body(StreamProtocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(self.data)


async def _get(url: str) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    response = await within(Agent(reactor).request(b"GET", url.encode()))
    collector = _Body()
    response.deliverBody(collector)
    body = await within(collector.done)
    headers = {name.lower(): values for name, values in response.headers.getAllRawHeaders()}
    return response.code, headers, body


# --- the site, without a browser ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_site_serves_page_client_status_and_metrics(nodes: dict[str, Any]) -> None:
    """The web port serves the page, the client, its files, /status and /metrics; it advertises itself."""
    server = await nodes["server"]()
    base = f"http://127.0.0.1:{server.web_port}"

    code, headers, page = await _get(f"{base}/")
    assert code == 200 and headers[b"content-type"][0].startswith(b"text/html")
    for needed in (b"<html", b"/twisted_mesh.js", b"/static/page.js", b"/status", b"/metrics"):
        assert needed in page

    code, headers, client = await _get(f"{base}/twisted_mesh.js")
    assert code == 200 and headers[b"content-type"] == [b"text/javascript; charset=utf-8"]
    assert client.startswith(b"/* twisted_mesh.js") and b"var twisted_mesh = " in client
    for name in ("page.js", "page.css", "favicon.svg"):
        code, _, body = await _get(f"{base}/static/{name}")
        assert code == 200 and body == Path(static_path(name)).read_bytes()

    code, headers, body = await _get(f"{base}/status")
    assert code == 200 and headers[b"content-type"] == [b"application/json"]
    status = json.loads(body)
    assert status["id"] == server.id
    assert status["out_addrs"]["ws"] == ["127.0.0.1", server.web_port]
    code, _, body = await _get(f"{base}/metrics")
    assert code == 200 and b"mesh_peers 0" in body
    for missing in ("/nothing-here", "/static/nothing.js", "/static/../__init__.py"):
        code, _, _ = await _get(f"{base}{missing}")
        assert code == 404, missing


@pytest_twisted.ensureDeferred
async def test_a_websocket_node_meshes_through_the_web_port(nodes: dict[str, Any]) -> None:
    """
    ``ws://host:webport/`` is the mesh: a Python node dials it as js2p would
    and exchanges broadcasts, through the server, with a TCP node.
    """
    server = await nodes["server"]()
    tcp = await nodes["peer"](server)
    ws = MeshService(MESH)
    ws.startService()
    try:
        peer_id = await within(ws.connect(f"ws:host=127.0.0.1:port={server.web_port}"))
        assert peer_id == server.id
        await wait_for(lambda: ws.id in server.node.routing_table)
        link = next(peer for peer in server.node.status()["peers"] if peer["id"] == ws.id)
        assert link["transport"] == "ws" and link["address"] is None
        ws.send("over websocket")
        msg = await within(tcp.next_message())
        assert msg.packets == (flags.broadcast, "over websocket") and msg.sender == ws.id
        tcp.send("over tcp")
        msg = await within(ws.next_message())
        assert msg.packets == (flags.broadcast, "over tcp") and msg.sender == tcp.id
    finally:
        await ws.stopService()


@pytest_twisted.ensureDeferred
async def test_stopping_the_web_service_closes_its_links(nodes: dict[str, Any]) -> None:
    """The WebSocket links of a stopped web service close; the node's other links stay."""
    server = await nodes["server"]()
    tcp = await nodes["peer"](server)
    ws = MeshService(MESH)
    ws.startService()
    try:
        await within(ws.connect(f"ws:host=127.0.0.1:port={server.web_port}"))
        await wait_for(lambda: ws.id in server.node.routing_table)
        await within(server.web.stopService())
        await wait_for(lambda: ws.id not in server.node.routing_table and not ws.routing_table)
        assert tcp.id in server.node.routing_table
    finally:
        await ws.stopService()


# --- the client's codec, in Node -----------------------------------------------------------


def test_js_client_in_node() -> None:
    """
    The bundled client's own tests (js/test/, ``node --test``): the frames
    of shared/vectors byte for byte, with WebCrypto and with the bundled
    SHA-256, the frame reader, and a MeshSocket against a fake WebSocket.
    """
    node = shutil.which("node")
    if node is None:
        _unavailable("node is not installed: the client's tests run under Node.js")
    assert node is not None
    done = subprocess.run(
        [node, "--test", "--test-reporter=tap", str(ROOT / "js" / "test")],
        cwd=ROOT / "js",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "# fail 0" in done.stdout and "# pass 0" not in done.stdout, done.stdout[-3000:]
    assert "# skipped 0" in done.stdout or not os.environ.get("CI"), done.stdout[-3000:]


# --- the page, in Chromium ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_page_loads_without_console_errors(nodes: dict[str, Any], browser: Any) -> None:
    """The page loads, joins the mesh through its node, shows itself in the graph, and logs no error."""
    server = await nodes["server"]()
    tab = await browser(server.url)
    await tab.wait_connected(to=server.id)
    me = await tab.node_id()
    await wait_for(lambda: me in server.node.routing_table, what="the browser in the node's routing table")
    link = next(p for p in server.node.status()["peers"] if p["id"] == me)
    assert link["transport"] == "ws" and link["address"] is None and link["ids"] == "str"

    def graph(page: Any) -> dict[str, Any]:
        page.wait_for_function("() => document.querySelector('#nodes .peer.k-you') !== null", timeout=PAGE_TIMEOUT)
        return dict(
            page.evaluate(
                """() => ({
                  api: ['Protocol', 'MeshSocket', 'Message', 'flags', 'codec'].filter(n => n in window.twisted_mesh),
                  you: document.querySelector('#nodes .peer.k-you text').textContent,
                  peers: document.getElementById('peers').textContent,
                  title: document.title,
                  webcrypto: window.twisted_mesh.codec.hasWebCrypto(),
                })"""
            )
        )

    shown = await tab.call(graph)
    assert shown["api"] == ["Protocol", "MeshSocket", "Message", "flags", "codec"]
    assert shown["you"] == "you" and shown["peers"] == "1" and "twisted_mesh" in shown["title"]
    assert shown["webcrypto"] is True  # http://127.0.0.1 is a secure context
    await tab.screenshot("page-alone.png")
    assert tab.console_errors == []


@pytest_twisted.ensureDeferred
async def test_chat_between_the_browser_python_and_py2p(
    nodes: dict[str, Any], browser: Any, reference: Callable[..., Any]
) -> None:
    """
    A message typed in the browser reaches a Python node and a py2p node of
    the mesh; their broadcasts show up on the page; the server node's reply
    comes back as a whisper.
    """
    server = await nodes["server"]()
    python = await nodes["peer"](server)
    py2p: ReferenceNode = await reference("py2p")
    await py2p.connect("127.0.0.1", server.tcp_port)
    await wait_for(lambda: py2p.id in server.node.routing_table, what="py2p joining the server")
    tab = await browser(server.url)
    await tab.wait_connected(to=server.id)
    me = await tab.node_id()

    await tab.say("hello mesh, from a browser")
    msg = await within(python.next_message())
    assert msg.packets == (flags.broadcast, "hello mesh, from a browser") and msg.sender == me
    got = await py2p.next_message()
    assert got["packets"] == [flags.broadcast, "hello mesh, from a browser"] and got["sender"] == me
    assert isinstance(got["raw_sender"], bytes)  # the server wrote it in py2p's form

    python.send("hello browser, from Python")
    shown = await tab.wait_for_message("hello browser, from Python", kind="tcp")
    assert shown["sender"] == python.id
    await py2p.send("hello browser, from py2p")
    shown = await tab.wait_for_message("hello browser, from py2p")
    assert shown["sender"] == py2p.id

    # The server node is the browser's peer: its reply is a whisper.
    to_server = await within(server.node.next_message())
    assert to_server.sender == me
    to_server.reply("a reply from the server node")
    shown = await tab.wait_for_message("a reply from the server node", kind="this node · whisper")
    assert shown["sender"] == server.id

    # A few seconds of traffic, so the rate and the graph have something to show.
    for i in range(3):
        python.send(f"message {i + 1} of a few from Python")
    await tab.wait_for_message("message 3 of a few from Python")
    await tab.call(lambda page: page.wait_for_timeout(2500))
    path = await tab.screenshot("page.png")
    assert path.stat().st_size > 10_000
    assert tab.console_errors == []


@pytest_twisted.ensureDeferred
async def test_two_tabs_see_each_others_messages(nodes: dict[str, Any], browser: Any) -> None:
    """
    Two browser tabs, each a node dialling the server, chat through it; one
    of them has no WebCrypto and checksums with the bundled SHA-256.
    """
    server = await nodes["server"]()
    first = await browser(server.url)
    second = await browser(server.url, webcrypto=False)
    await first.wait_connected(to=server.id)
    await second.wait_connected(to=server.id)
    assert await second.evaluate("() => window.twisted_mesh.codec.hasWebCrypto()") is False
    first_id, second_id = await first.node_id(), await second.node_id()
    await wait_for(lambda: {first_id, second_id} <= set(server.node.routing_table))

    await first.say("from the first tab")
    shown = await second.wait_for_message("from the first tab", kind="browser")
    assert shown["sender"] == first_id
    await second.say("from the second tab")
    shown = await first.wait_for_message("from the second tab", kind="browser")
    assert shown["sender"] == second_id
    # Each tab shows the other as a browser in the graph.
    kinds = await first.evaluate(
        "() => [...document.querySelectorAll('#nodes .peer')].map(g => g.getAttribute('class')).sort()"
    )
    assert kinds == ["peer k-browser", "peer k-you"]
    await first.screenshot("page-two-tabs.png")
    assert first.console_errors == [] and second.console_errors == []


@pytest_twisted.ensureDeferred
async def test_page_reconnects_when_the_node_restarts(nodes: dict[str, Any], browser: Any) -> None:
    """
    When its node goes away the page says so and dials again, with backoff;
    once a node is back on the port, the page rejoins and chats through it.
    """
    server = await nodes["server"]()
    port = server.web_port
    tab = await browser(server.url)
    await tab.wait_connected(to=server.id)

    await server.stop()

    def says_unreachable(page: Any) -> None:
        page.wait_for_function(
            "() => document.getElementById('status').dataset.state === 'connecting' && "
            "/unreachable|Reconnecting/.test(document.getElementById('status-text').textContent)",
            timeout=PAGE_TIMEOUT,
        )

    await tab.call(says_unreachable)
    await tab.screenshot("page-reconnecting.png")

    again = await nodes["server"](web=f"tcp:{port}:interface=127.0.0.1")
    assert again.web_port == port and again.id != server.id
    await tab.wait_connected(to=again.id)
    await tab.say("back again")
    msg = await within(again.node.next_message())
    assert msg.packets == (flags.broadcast, "back again")
    lines = await tab.evaluate("() => [...document.querySelectorAll('#messages li.system')].map(li => li.textContent)")
    assert lines[0].startswith("Joined the mesh through node")
    assert any(line.startswith("Lost the node") for line in lines)
    assert lines[-1] == f"Reconnected to node {again.id[:8]}"


# A browser node of its own in the page (ARG: url, count, size, batch,
# maxSendBuffer): it sends COUNT broadcasts [i, SIZE characters], awaiting
# drained() after each BATCH, and looks at its link's buffer every 5 ms.
_PRODUCER = """
async ({url, count, size, batch, maxSendBuffer}) => {
  const tm = window.twisted_mesh;
  const sock = new tm.MeshSocket(new tm.Protocol("mesh", "ws"), {maxSendBuffer, reconnect: false});
  await sock.connect(url);
  const [link] = sock.routing_table.values();
  let peak = 0;
  const look = setInterval(() => (peak = Math.max(peak, link.buffered)), 5);
  const text = "x".repeat(size);
  const sends = [];
  for (let i = 0; i < count; i++) {
    sends.push(sock.send([i, text]));
    if (i % batch === batch - 1) await sock.drained();
  }
  const outcomes = await Promise.allSettled(sends);
  clearInterval(look);
  return {
    id: sock.id,
    refused: outcomes.filter((o) => o.status === "rejected").map((o) => o.reason.message).slice(0, 3),
    skipped: sock.stats.skipped,
    peak,
  };
}
"""


@pytest_twisted.ensureDeferred
async def test_a_producer_that_awaits_drained_loses_nothing(nodes: dict[str, Any], browser: Any) -> None:
    """
    A browser node sends 3,000 broadcasts of 8 kB as fast as it can, with
    ``maxSendBuffer`` at 1 MiB and ``await sock.drained()`` after each 100
    (800 kB, under 1 MiB less the 64 KiB drained() waits for): its buffer
    grows past 64 KiB, so drained() has to wait, and the node it dialled
    receives every message, in order.  (Without the waits, Chromium holds
    more than 1 MiB and the client refuses messages.)
    """
    server = await nodes["server"]()
    received: list[Any] = []

    def take(node: MeshService) -> None:
        while (msg := node.recv()) is not None:
            received.append(msg)

    server.node.on("message", take)
    # A page with the client and no node of its own (the JSON of /status).
    tab = await browser(f"{server.url}status")
    await tab.call(lambda page: page.add_script_tag(url="/twisted_mesh.js"))
    count = 3000
    url = f"ws://127.0.0.1:{server.web_port}/"
    sent = await tab.evaluate(
        _PRODUCER, {"url": url, "count": count, "size": 8000, "batch": 100, "maxSendBuffer": 1 << 20}
    )
    assert sent["refused"] == [] and sent["skipped"] == {}
    assert sent["peak"] > 64 * 1024, "the buffer never filled: drained() was not put to the test"
    await wait_for(lambda: len(received) >= count, what="every message at the node")
    assert {msg.sender for msg in received} == {sent["id"]}
    assert [msg.packets[1] for msg in received] == list(range(count))
