"""
The live page of the web face in a real headless Chromium driven by
Playwright (see `tests.system.browser`), meshed with Python twisted_mesh
nodes and a py2p node.  Screenshots of the page go to ``tests/system/artifacts/``.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.reference import Reference, ReferenceNode
from tests.support import wait_for, within
from tests.system.browser import PAGE_TIMEOUT, Servers
from twisted_mesh import MeshService, flags


@pytest_twisted.ensureDeferred
async def test_page_loads_without_console_errors(servers: Servers, browser: Any) -> None:
    """The page loads, joins the mesh through its node, shows itself in the graph, and logs no error."""
    server = await servers.server()
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
async def test_chat_between_the_browser_python_and_py2p(servers: Servers, browser: Any, reference: Reference) -> None:
    """
    A message typed in the browser reaches a Python node and a py2p node of
    the mesh; their broadcasts show up on the page; the server node's reply
    comes back as a whisper.
    """
    server = await servers.server()
    python = await servers.peer(server)
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
async def test_two_tabs_see_each_others_messages(servers: Servers, browser: Any) -> None:
    """
    Two browser tabs, each a node dialling the server, chat through it; one
    of them has no WebCrypto and checksums with the bundled SHA-256.
    """
    server = await servers.server()
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
async def test_page_reconnects_when_the_node_restarts(servers: Servers, browser: Any) -> None:
    """
    When its node goes away the page says so and dials again, with backoff;
    once a node is back on the port, the page rejoins and chats through it.
    """
    server = await servers.server()
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

    again = await servers.server(web=f"tcp:{port}:interface=127.0.0.1")
    assert again.web_port == port and again.id != server.id
    await tab.wait_connected(to=again.id)
    await tab.say("back again")
    msg = await within(again.node.next_message())
    assert msg.packets == (flags.broadcast, "back again")
    lines = await tab.evaluate("() => [...document.querySelectorAll('#messages li.system')].map(li => li.textContent)")
    assert lines[0].startswith("Joined the mesh through node")
    assert any(line.startswith("Lost the node") for line in lines)
    assert lines[-1] == f"Reconnected to node {again.id[:10]}"


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
async def test_a_producer_that_awaits_drained_loses_nothing(servers: Servers, browser: Any) -> None:
    """
    A browser node sends 3,000 broadcasts of 8 kB as fast as it can, with
    ``maxSendBuffer`` at 1 MiB and ``await sock.drained()`` after each 100
    (800 kB, under 1 MiB less the 64 KiB drained() waits for): its buffer
    grows past 64 KiB, so drained() has to wait, and the node it dialled
    receives every message, in order.  (Without the waits, Chromium holds
    more than 1 MiB and the client refuses messages.)
    """
    server = await servers.server()
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
