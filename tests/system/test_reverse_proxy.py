"""
The web page behind a real reverse proxy: nginx serves the node's site under
``/mesh/`` with the configuration of ``examples/nginx-mesh.conf`` (the one
the deploy guide shows), and a page in Chromium joins the mesh through it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.support import http_get, unavailable, wait_for
from tests.system.browser import Servers

ROOT = Path(__file__).resolve().parents[2]
SNIPPET = ROOT / "examples" / "nginx-mesh.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class Proxy:
    """nginx on a port of loopback, forwarding ``/mesh/`` as the example says."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, web_port: int) -> None:
        """Run nginx in front of the site on ``web_port``, once it answers on a port of its own."""
        location = SNIPPET.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{web_port}")
        for _ in range(5):  # a port free a moment ago may be taken
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
            (self.folder / "nginx.conf").write_text(self._config(location))
            process = self.process = subprocess.Popen(
                [NGINX, "-p", str(self.folder), "-c", "nginx.conf"], stderr=subprocess.PIPE
            )
            await wait_for(lambda p=process: p.poll() is not None or self._answers(), what="nginx to listen")
            if process.poll() is None:
                return
            error = process.stderr.read().decode() if process.stderr else ""
            if "Address already in use" not in error:
                raise AssertionError(f"nginx did not start: {error}")
        raise AssertionError("no free port for nginx")

    def _answers(self) -> bool:
        """Whether nginx takes connections on its port."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def _config(self, location: str) -> str:
        folder = self.folder
        return f"""
daemon off;
master_process off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    server {{
        listen 127.0.0.1:{self.port};
        {location}
    }}
}}
"""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    if not Path(NGINX).exists():
        unavailable(f"no nginx at {NGINX}: install it with `apt-get install -y nginx-light`")
    running = Proxy(tmp_path)
    yield running
    running.stop()


@pytest_twisted.ensureDeferred
async def test_a_page_behind_nginx_joins_the_mesh(servers: Servers, browser: Any, proxy: Proxy) -> None:
    """
    ``https://site/mesh/`` through nginx: the page, /mesh/status and the
    browser's WebSocket all pass the proxy, and the page chats with a Python
    node of the mesh.
    """
    server = await servers.server(prefix="/mesh/")
    await proxy.start(server.web_port)
    base = f"http://127.0.0.1:{proxy.port}/mesh/"
    code, _, body = await http_get(f"{base}status")
    assert code == 200 and server.id.encode() in body
    python = await servers.peer(server)
    tab = await browser(base)
    await tab.wait_connected(to=server.id)
    me = await tab.node_id()
    await wait_for(lambda: me in server.node.routing_table, what="the browser, through nginx, at the node")
    python.send("through the proxy")
    await tab.wait_for_message("through the proxy")
    await tab.say("from behind nginx")
    got = await python.next_message()
    while got.packets[1:] != ("from behind nginx",):  # (the page may say hello first)
        got = await python.next_message()
    assert got.sender == me
    assert tab.console_errors == []
