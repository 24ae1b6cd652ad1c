"""
The live page on a signed network, in a real headless Chromium (see
`tests.system.browser`): the page's node proves a key it keeps in the
browser, signs what it sends and checks what it reads, meshed with Python
nodes of the same signed network.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.support import wait_for, within
from tests.system.browser import PAGE_TIMEOUT, Servers
from twisted_mesh import Network, flags
from twisted_mesh.keys import node_id_of

SIGNED = Network("mesh", "Plaintext", signed=True)

# The page node's public key, as bytes.
_PUBLIC_KEY = "() => Array.from(window.meshPage.sock._key.publicKey)"


@pytest_twisted.ensureDeferred
async def test_the_page_joins_a_signed_network(servers: Servers, browser: Any) -> None:
    """
    The page learns from its node that the network is signed, proves its
    key, and chats with a Python node of the network both ways: its
    broadcasts are signed, and the Python node's are checked and shown.
    """
    server = await servers.server(prot=SIGNED)
    python = await servers.peer(server)
    tab = await browser(server.url)
    await tab.wait_connected(to=server.id)
    me = await tab.node_id()
    assert node_id_of(bytes(await tab.evaluate(_PUBLIC_KEY))) == me
    await wait_for(lambda: me in server.node.routing_table, what="the browser in the node's routing table")
    link = next(p for p in server.node.status()["peers"] if p["id"] == me)
    assert link["transport"] == "ws" and link["ids"] == "bin"
    transport = await tab.evaluate("() => document.getElementById('transport').textContent")
    assert transport.endswith("· mesh · signed")

    await tab.say("hello signed mesh, from a browser")
    msg = await within(python.next_message())
    assert msg.packets == (flags.broadcast, "hello signed mesh, from a browser") and msg.sender == me

    python.send("hello browser, signed by Python")
    shown = await tab.wait_for_message("hello browser, signed by Python", kind="tcp")
    assert shown["sender"] == python.id
    # The server node's reply is a signed whisper.
    to_server = await within(server.node.next_message())
    assert to_server.sender == me
    to_server.reply("a signed reply from the server node")
    shown = await tab.wait_for_message("a signed reply from the server node", kind="this node · whisper")
    assert shown["sender"] == server.id

    stats = await tab.evaluate("() => window.meshPage.sock.stats.dropped")
    assert stats == {}
    for node in (server.node, python):
        dropped = node.status()["dropped"]
        assert not {"unsigned", "wrong_key", "bad_signature"} & {k for k, v in dropped.items() if v}
    await tab.screenshot("page-signed.png")
    assert tab.console_errors == []


@pytest_twisted.ensureDeferred
async def test_a_reloaded_page_keeps_its_node_id(servers: Servers, browser: Any) -> None:
    """
    The page's key stays in the browser (IndexedDB): reloaded, the page
    comes back with the same node ID; a second tab open meanwhile takes a
    key of its own.
    """
    server = await servers.server(prot=SIGNED)
    python = await servers.peer(server)
    tab = await browser(server.url)
    await tab.wait_connected(to=server.id)
    before = await tab.node_id()
    extractable = await tab.evaluate("() => window.meshPage.sock._key.privateKey.extractable")
    assert extractable is False

    await tab.call(lambda page: page.reload())
    await tab.wait_connected(to=server.id)
    assert await tab.node_id() == before
    await wait_for(lambda: before in server.node.routing_table, what="the reloaded page back in the routing table")
    await tab.say("back with the same ID")
    msg = await within(python.next_message())
    assert msg.sender == before and msg.packets == (flags.broadcast, "back with the same ID")

    other = await browser(server.url)
    await other.wait_connected(to=server.id)
    second = await other.node_id()
    assert second != before
    await wait_for(lambda: {before, second} <= set(server.node.routing_table), what="both tabs in the routing table")
    assert tab.console_errors == [] and other.console_errors == []


# A browser whose WebCrypto has no Ed25519 (as Chrome before 137).
_NO_ED25519 = """
(() => {
  const subtle = window.crypto.subtle;
  for (const [name, at] of [["generateKey", 0], ["importKey", 2]]) {
    const real = subtle[name].bind(subtle);
    subtle[name] = (...args) => {
      const algorithm = args[at];
      if ((algorithm && algorithm.name) === "Ed25519" || algorithm === "Ed25519") {
        return Promise.reject(new DOMException("Unrecognized name.", "NotSupportedError"));
      }
      return real(...args);
    };
  }
})();
"""


@pytest_twisted.ensureDeferred
async def test_a_browser_without_ed25519_is_told_why(servers: Servers, browser: Any) -> None:
    """Without Ed25519 in WebCrypto the page does not dial, and says what the browser lacks."""
    server = await servers.server(prot=SIGNED)
    tab = await browser(server.url, init_script=_NO_ED25519)

    def told(page: Any) -> dict[str, Any]:
        page.wait_for_selector('#status[data-state="error"]', timeout=PAGE_TIMEOUT)
        page.wait_for_function("() => document.querySelector('#messages li.system') !== null", timeout=PAGE_TIMEOUT)
        return dict(
            page.evaluate(
                """() => ({
                  pill: document.getElementById('status-text').textContent,
                  lines: [...document.querySelectorAll('#messages li.system')].map(li => li.textContent),
                  links: window.meshPage.sock.links().length,
                })"""
            )
        )

    shown = await tab.call(told)
    assert shown["pill"].startswith("Cannot join")
    assert any("need an unsigned ws network" in line for line in shown["lines"])
    assert shown["links"] == 0 and server.node.routing_table == {}
    await tab.screenshot("page-signed-unsupported.png")
