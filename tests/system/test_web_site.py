"""
The web face without a browser: the site (``twisted_mesh.web``) serves the
page, the client, /status and /metrics and carries the mesh over WebSocket;
the browser client's own tests run in Node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint

from tests.support import MeshNodes, http_get, unavailable, wait_for, within
from tests.system.browser import Servers
from twisted_mesh import Network, flags
from twisted_mesh.web import site_prefix, static_path
from twisted_mesh.websocket import WebSocketClientEndpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest_twisted.ensureDeferred
async def test_site_serves_page_client_status_and_metrics(servers: Servers) -> None:
    """The web port serves the page, the client, its files, /status and /metrics; it advertises itself."""
    server = await servers.server()
    base = f"http://127.0.0.1:{server.web_port}"

    code, headers, page = await http_get(f"{base}/")
    assert code == 200 and headers[b"content-type"][0].startswith(b"text/html")
    # (Relative links: the page works under any path, see test_site_under_a_prefix.)
    for needed in (b"<html", b'"twisted_mesh.js"', b'"static/page.js"', b'"status"', b'"metrics"'):
        assert needed in page

    code, headers, client = await http_get(f"{base}/twisted_mesh.js")
    assert code == 200 and headers[b"content-type"] == [b"text/javascript; charset=utf-8"]
    assert client.startswith(b"/* twisted_mesh.js") and b"var twisted_mesh = " in client
    for name in ("page.js", "page.css", "favicon.svg"):
        code, _, body = await http_get(f"{base}/static/{name}")
        assert code == 200 and body == Path(static_path(name)).read_bytes()

    code, headers, body = await http_get(f"{base}/status")
    assert code == 200 and headers[b"content-type"] == [b"application/json"]
    status = json.loads(body)
    assert status["id"] == server.id
    assert status["out_addrs"]["ws"] == ["127.0.0.1", server.web_port]
    code, _, body = await http_get(f"{base}/metrics")
    assert code == 200 and b"mesh_peers 0" in body
    for missing in ("/nothing-here", "/static/nothing.js", "/static/../__init__.py"):
        code, _, _ = await http_get(f"{base}{missing}")
        assert code == 404, missing


@pytest_twisted.ensureDeferred
async def test_a_websocket_node_meshes_through_the_web_port(servers: Servers, mesh: MeshNodes) -> None:
    """
    ``ws://host:webport/`` is the mesh: a Python node dials it as js2p would
    and exchanges broadcasts, through the server, with a TCP node.
    """
    server = await servers.server()
    tcp = await servers.peer(server)
    ws = mesh.service()
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


@pytest_twisted.ensureDeferred
async def test_stopping_the_web_service_closes_its_links(servers: Servers, mesh: MeshNodes) -> None:
    """The WebSocket links of a stopped web service close; the node's other links stay."""
    server = await servers.server()
    tcp = await servers.peer(server)
    ws = mesh.service()
    await within(ws.connect(f"ws:host=127.0.0.1:port={server.web_port}"))
    await wait_for(lambda: ws.id in server.node.routing_table)
    await within(server.web.stopService())
    await wait_for(lambda: ws.id not in server.node.routing_table and not ws.routing_table)
    assert tcp.id in server.node.routing_table


# --- the client's codec, in Node -----------------------------------------------------------


def test_js_client_in_node() -> None:
    """
    The bundled client's own tests (js/test/, ``node --test``): the frames
    of shared/vectors byte for byte, with WebCrypto and with the bundled
    SHA-256, the frame reader, and a MeshSocket against a fake WebSocket.
    """
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed: the client's tests run under Node.js")
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


@pytest_twisted.ensureDeferred
async def test_site_under_a_prefix(servers: Servers, mesh: MeshNodes) -> None:
    """
    ``prefix="/mesh/"`` (``--web-prefix``) serves the whole site under that
    path, for a reverse proxy that forwards it: the page, its files,
    /status and /metrics, and the browsers' WebSocket; ``/`` still carries
    the mesh for the nodes that dial the port, and sends browsers on.
    """
    server = await servers.server(prefix="/mesh")
    assert server.web.prefix == "/mesh/"
    base = f"http://127.0.0.1:{server.web_port}"
    code, _, page = await http_get(f"{base}/mesh/")
    assert code == 200 and b"<html" in page and b'"twisted_mesh.js"' in page
    for path in ("/mesh/twisted_mesh.js", "/mesh/static/page.js", "/mesh/status", "/mesh/metrics"):
        code, _, body = await http_get(f"{base}{path}")
        assert code == 200 and body, path
    for path, target in (("/mesh", b"/mesh/"), ("/", b"/mesh/")):
        code, headers, _ = await http_get(f"{base}{path}")
        assert code in (301, 302) and headers[b"location"] == [target], (path, code, headers)
    for missing in ("/status", "/metrics", "/twisted_mesh.js", "/mesh/nothing-here"):
        code, _, _ = await http_get(f"{base}{missing}")
        assert code == 404, missing
    # The WebSocket, as a browser opens it (under the prefix) and as a node dials it (at /).
    ws_mesh = Network("mesh", "ws")
    for path in ("/mesh/", "/"):
        node = mesh.service(ws_mesh)
        url = f"ws://127.0.0.1:{server.web_port}{path}"
        endpoint = WebSocketClientEndpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", server.web_port), url)
        assert await within(node.connect(endpoint)) == server.id
    await wait_for(lambda: len(server.node.routing_table) == 2, what="both WebSocket links at the server")


def test_a_bad_prefix_is_refused() -> None:
    for bad in ("/a//b/", "/../", "/a b/", "/%2e/"):
        with pytest.raises(ValueError, match="bad web prefix"):
            site_prefix(bad)
    assert [site_prefix(good) for good in ("", "/", "mesh", "/mesh", "/a/b/")] == [
        "/",
        "/",
        "/mesh/",
        "/mesh/",
        "/a/b/",
    ]
