"""
``twistd mesh`` and ``python -m twisted_mesh`` as a user runs them: from a wheel
of this checkout installed into a fresh virtualenv, as real processes on
loopback, meshed with in-process twisted_mesh nodes and py2p.  Here: the
install, messages, the web face, stopping, the daemon and ``python -m``; the
options and dialling in test_twistd_options.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import zipfile
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, error, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import ServerFactory
from twisted.internet.utils import getProcessOutputAndValue

from tests.integration.twistd import (
    LISTENING,
    REPO,
    Launcher,
    Reference,
    Venv,
    assert_clean,
    assert_exited_0,
    dial,
    parse_metrics,
    pause,
    terminate,
    undiallable,
)
from tests.support import LOOPBACK, MESH, MeshNodes, RawWebSocket, http_get, wait_for, within
from twisted_mesh import flags

# --- the package as installed ------------------------------------------------------------


def test_wheel_ships_the_plugin_and_nothing_of_twisted(venv: Venv) -> None:
    """
    The wheel carries the plugin module, but no ``twisted/__init__.py`` or
    ``twisted/plugins/__init__.py`` (which would shadow Twisted's own) and
    no ``dropin.cache`` (which would be stale, or overwrite Twisted's).
    """
    names = set(zipfile.ZipFile(venv.wheel).namelist())
    assert "twisted/plugins/mesh.py" in names
    assert "twisted_mesh/tap.py" in names and "twisted_mesh/__main__.py" in names
    assert "twisted_mesh/web/__init__.py" in names and "twisted_mesh/web/status.py" in names
    assert not {"twisted/__init__.py", "twisted/plugins/__init__.py"} & names
    assert not [name for name in names if name.endswith("dropin.cache")]


@pytest_twisted.ensureDeferred
async def test_plugin_is_found_from_the_install(venv: Venv, tmp_path: Path) -> None:
    """``twistd --help`` lists ``mesh``, and twisted_mesh imports from the venv, not the checkout."""
    out, err, code = await getProcessOutputAndValue(venv.exe("twistd"), ["--help"], env=venv.env, path=str(tmp_path))
    assert code == 0, (out, err)
    assert re.search(rb"^\s+mesh\s+A node of a p2p-today mesh", out, re.M), out.decode()
    assert b"Traceback" not in out + err

    out, err, code = await getProcessOutputAndValue(
        venv.exe("python"),
        ["-c", "import twisted_mesh, twisted.plugins.mesh as p; print(twisted_mesh.__file__); print(p.__file__)"],
        env=venv.env,
        path=str(tmp_path),
    )
    assert code == 0, err
    site_packages = str(venv.bin.parent / "lib")
    for line in out.decode().split():
        assert line.startswith(site_packages) and "site-packages" in line, out
        assert not line.startswith(str(REPO)), out


@pytest_twisted.ensureDeferred
async def test_plugin_survives_uninstall_and_reinstall(venv: Venv, tmp_path: Path) -> None:
    """
    Twisted's dropin cache, written while twisted_mesh is installed, does
    not keep a removed plugin alive or hide a reinstalled one.
    """

    async def help_text() -> bytes:
        out, err, code = await getProcessOutputAndValue(
            venv.exe("twistd"), ["--help"], env=venv.env, path=str(tmp_path)
        )
        assert code == 0 and b"Traceback" not in out + err, (out, err)
        return out

    async def pip(*args: str) -> None:
        out, err, code = await getProcessOutputAndValue(venv.exe("pip"), args, env=venv.env, path=str(tmp_path))
        assert code == 0, (out, err)

    assert b" mesh " in await help_text()  # the cache now holds it
    await pip("uninstall", "-y", "twisted_mesh")
    assert not re.search(rb"^\s+mesh\s", await help_text(), re.M)
    await pip("install", "--no-deps", "--no-index", str(venv.wheel))
    assert re.search(rb"^\s+mesh\s+A node", await help_text(), re.M)


# --- messages across a twistd node ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_messages_cross_a_twistd_node(launch: Launcher, mesh: MeshNodes, reference: Reference) -> None:
    """
    Nodes that dial only the twistd node, and cannot be dialled, exchange
    broadcasts through it: twisted_mesh with twisted_mesh, and py2p with
    twisted_mesh both ways.
    """
    _, node = await launch.node()
    left, right = mesh(max_outgoing=0), mesh(max_outgoing=0)
    assert await within(left.connect("127.0.0.1", node.port)) == node.id
    assert await within(right.connect("127.0.0.1", node.port)) == node.id
    await undiallable(left)
    await undiallable(right)

    left.send("across", b"\x00twistd", 7)
    msg = await within(right.next_message())
    assert msg.packets == (flags.broadcast, "across", b"\x00twistd", 7)
    assert msg.sender == left.id
    assert set(right.routing_table) == {node.id} and set(left.routing_table) == {node.id}

    ref = await reference("py2p")
    assert await ref.connect("127.0.0.1", node.port)
    assert node.id in await ref.wait_for_peers(1)
    await pause(0.5)  # py2p's peer requests land, and its dials to the others fail
    await ref.send("from py2p", b"\xffbin")
    for sock in (left, right):
        got = await within(sock.next_message())
        assert got.packets == (flags.broadcast, "from py2p", b"\xffbin")
        assert got.sender == ref.id
    await pause(0.02)  # py2p's frame reader breaks on bursts
    right.send("from twisted_mesh", 3)
    theirs = await ref.next_message()
    assert theirs["packets"] == [flags.broadcast, "from twisted_mesh", 3]
    assert theirs["sender"] == right.id
    assert (await within(left.next_message())).packets == (flags.broadcast, "from twisted_mesh", 3)
    await pause(0.02)
    left.send("again")
    again = await ref.next_message()
    assert again["packets"] == [flags.broadcast, "again"] and again["sender"] == left.id
    assert (await within(right.next_message())).packets == (flags.broadcast, "again")
    # Nobody could dial anybody but the twistd node: it all went through it.
    assert await ref.peers() == [node.id]
    assert set(left.routing_table) == set(right.routing_table) == {node.id}
    await pause(0.3)
    assert left.recv() is None and right.recv() is None and ref.pending_messages() == 0


# --- the web face ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_status_metrics_and_page(launch: Launcher, mesh: MeshNodes) -> None:
    """``--web``: ``/status`` and ``/metrics`` tell the truth about the node and its peers; ``/`` is a page."""
    _, node = await launch.node("--web", LOOPBACK)
    assert node.web
    base = f"http://127.0.0.1:{node.web}"
    left, right = mesh(max_outgoing=0), mesh(max_outgoing=0)
    await within(left.connect("127.0.0.1", node.port))
    await within(right.connect("127.0.0.1", node.port))
    left.send("counted")
    assert (await within(right.next_message())).packets == (flags.broadcast, "counted")

    code, headers, body = await http_get(f"{base}/status")
    assert code == 200 and headers[b"content-type"] == [b"application/json"]
    status = json.loads(body)
    assert status["id"] == node.id
    assert status["protocol"] == {"subnet": "mesh", "encryption": "Plaintext", "id": MESH.id, "signed": False}
    assert status["out_addr"] == ["127.0.0.1", node.port]
    assert 0 < status["uptime"] < 600
    peers = {peer["id"]: peer for peer in status["peers"]}
    assert set(peers) == {left.id, right.id}
    for sock in (left, right):
        peer = peers[sock.id]
        assert peer["address"] == list(sock.out_addr)
        assert peer["direction"] == "in"
        assert peer["compression"] is None or isinstance(peer["compression"], str)
        assert peer["frames_in"] >= 1 and peer["frames_out"] >= 1
        assert peer["bytes_in"] > 0 and peer["bytes_out"] > 0
    assert status["connections"] == 2
    assert status["pending"] == 0
    assert status["seen"] >= 1  # the broadcast
    assert status["relayed"] >= 1  # ... relayed to the right
    assert status["frames_in"] >= sum(p["frames_in"] for p in peers.values())
    assert status["bytes_in"] >= sum(p["bytes_in"] for p in peers.values())
    assert status["connections_made"] == {"in": 2}
    assert status["handshake_failures"] == {}

    code, headers, body = await http_get(f"{base}/metrics")
    assert code == 200 and headers[b"content-type"][0].startswith(b"text/plain")
    metrics = parse_metrics(body.decode("utf-8"))

    def sample(name: str, **labels: str) -> float:
        return metrics[(name, frozenset(labels.items()))]

    assert sample("mesh_peers") == 2
    assert sample("mesh_connections") == 2
    assert sample("mesh_pending_connections") == 0
    assert sample("mesh_connections_total", direction="in") == 2
    assert sample("mesh_frames_received_total") >= status["frames_in"] >= 4
    assert sample("mesh_frames_sent_total") >= status["frames_out"] >= 3
    assert sample("mesh_bytes_received_total") >= status["bytes_in"] > 0
    assert sample("mesh_bytes_sent_total") >= status["bytes_out"] > 0
    assert sample("mesh_relayed_total") >= 1
    assert sample("mesh_seen_messages") >= 1
    assert sample("mesh_uptime_seconds") >= status["uptime"]
    assert sample("mesh_queued_messages") == 0  # the plugin takes what it gets

    code, headers, body = await http_get(f"{base}/")
    assert code == 200 and headers[b"content-type"][0].startswith(b"text/html")
    assert b"<html" in body and b'"status"' in body and b'"metrics"' in body
    code, _, _ = await http_get(f"{base}/nothing-here")
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_web_prefix_puts_the_site_under_a_path(launch: Launcher) -> None:
    """``--web-prefix /mesh/``: the page, /status and /metrics are under /mesh/, for a reverse proxy."""
    process, node = await launch.node("--web", LOOPBACK, "--web-prefix", "/mesh/")
    assert node.web
    await process.wait_for_text("path /mesh/")  # (logged once the site listens, after the port line)
    base = f"http://127.0.0.1:{node.web}"
    for path in ("/mesh/", "/mesh/status", "/mesh/metrics", "/mesh/twisted_mesh.js"):
        code, _, body = await http_get(f"{base}{path}")
        assert code == 200 and body, path
    code, _, _ = await http_get(f"{base}/status")
    assert code == 404
    assert_clean(process)


# --- stopping ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sigterm_stops_cleanly(launch: Launcher) -> None:
    """SIGTERM: exit 0, no traceback, and the port is closed."""
    process, node = await launch.node("--web", LOOPBACK)
    assert node.web
    # The node logs that it listens before its reactor runs, and so before
    # its signal handlers are in place: a SIGTERM then would kill it.  Once
    # it answers, they are.
    code, _, _ = await http_get(f"http://127.0.0.1:{node.web}/status")
    assert code == 200
    await terminate(process)
    for port in (node.port, node.web):  # nothing listens there any more
        with pytest.raises(error.ConnectionRefusedError):
            await within(defer.ensureDeferred(dial(port)))
    assert_exited_0(process)


@pytest_twisted.ensureDeferred
async def test_sigterm_with_peers(launch: Launcher, mesh: MeshNodes, reference: Reference) -> None:
    """SIGTERM with a twisted_mesh and a py2p peer: exit 0, and both see the node leave."""
    process, node = await launch.node()
    sock = mesh(max_outgoing=0)
    ref = await reference("py2p")
    await within(sock.connect("127.0.0.1", node.port))
    await undiallable(sock)  # or py2p would dial it, and they would stay peers
    assert await ref.connect("127.0.0.1", node.port)
    assert node.id in await ref.wait_for_peers(1)
    await terminate(process)
    await wait_for(lambda: not sock.routing_table, 30, "the twisted_mesh node to see the twistd node leave")

    async def py2p_alone() -> None:
        for _ in range(300):
            if node.id not in await ref.peers():
                return
            await pause(0.1)
        raise AssertionError(f"py2p still lists the twistd node:\n{ref.log[-2000:]}")

    await py2p_alone()
    assert_exited_0(process)


@pytest.mark.parametrize("listener", ["--listen", "--web"])
@pytest_twisted.ensureDeferred
async def test_a_listener_that_fails_stops_the_process(launch: Launcher, listener: str) -> None:
    """
    A node, or its web site, that cannot listen (the port is taken) logs
    why and stops the process, which exits with status 1.
    """
    taken = reactor.listenTCP(0, ServerFactory(), interface="127.0.0.1")
    try:
        busy = f"tcp:{taken.getHost().port}:interface=127.0.0.1"
        args = ["--listen", busy] if listener == "--listen" else ["--listen", LOOPBACK, "--web", busy]
        process = launch.twistd(*args)
        code = await process.wait_for_end()
    finally:
        await taken.stopListening()
    assert code == 1 and process.signal is None, f"exit code {code}, signal {process.signal}\n{process.output}"
    assert "Address already in use" in process.stdout, process.output
    assert "stopping, with exit status 1" in process.stdout, process.output
    assert "Server Shut Down" in process.stdout, process.output
    assert_clean(process)


# --- the daemon and python -m --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_daemon_with_port(launch: Launcher, mesh: MeshNodes) -> None:
    """``twistd mesh --port N`` (no ``-n``): it daemonizes, serves, and stops on SIGTERM."""
    process, cwd = launch.spawn(
        [launch.venv.exe("twistd"), "--logfile", "mesh.log", "--pidfile", "mesh.pid", "mesh", "--port", "0"]
    )
    assert await process.wait_for_end() == 0, process.output
    log, pidfile = cwd / "mesh.log", cwd / "mesh.pid"
    await wait_for(pidfile.exists, 30, "the pid file")
    pid = int(pidfile.read_text())
    try:
        await wait_for(lambda: log.exists() and LISTENING.search(log.read_text()), 30, "the daemon to listen")
        listening = LISTENING.search(log.read_text())
        assert listening
        sock = mesh(max_outgoing=0)
        assert await within(sock.connect("127.0.0.1", int(listening["port"]))) == listening["id"]
        os.kill(pid, signal.SIGTERM)
        await wait_for(lambda: not pidfile.exists(), 30, "the daemon to stop")
        await wait_for(lambda: "Server Shut Down" in log.read_text(), 30, "the daemon to log its end")
        await wait_for(lambda: not sock.routing_table, 30, "the peer to see the daemon leave")
        assert "Traceback" not in log.read_text()
    finally:
        if pidfile.exists():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest_twisted.ensureDeferred
async def test_daemon_that_cannot_listen_exits_1(launch: Launcher) -> None:
    """
    ``twistd mesh`` (no ``-n``) whose port is taken: the command itself says
    why and exits with status 1, and the daemon's log tells it without a
    traceback.
    """
    taken = reactor.listenTCP(0, ServerFactory(), interface="127.0.0.1")
    try:
        busy = f"tcp:{taken.getHost().port}:interface=127.0.0.1"
        process, cwd = launch.spawn(
            [launch.venv.exe("twistd"), "--logfile", "mesh.log", "--pidfile", "mesh.pid", "mesh", "--listen", busy]
        )
        code = await process.wait_for_end()
        log = cwd / "mesh.log"
        await wait_for(lambda: log.exists() and "exit status 1" in log.read_text(), 30, "the daemon's log")
    finally:
        await taken.stopListening()
    assert code == 1, process.output
    assert "An error has occurred" in process.stderr and "Address already in use" in process.stderr, process.output
    assert_clean(process)
    await wait_for(lambda: not (cwd / "mesh.pid").exists(), 30, "the daemon to end")
    text = log.read_text()
    assert "could not listen" in text and "Traceback" not in text, text


@pytest_twisted.ensureDeferred
async def test_a_second_signal_while_stopping(launch: Launcher) -> None:
    """
    Ctrl-C twice, while the node waits for a WebSocket peer that does not
    answer its close: the node stops as after one, with status 0.
    """
    process, node = await launch.node("--web", LOOPBACK)
    assert node.web
    client = RawWebSocket()
    await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", node.web), client))
    client.upgrade()
    try:
        await wait_for(lambda: b" 101 " in client.received, 30, "the WebSocket to open")
        process.terminate("INT")
        await process.wait_for_text("is stopping")
        process.terminate("INT")
        await process.wait_for_end()
    finally:
        if client.transport is not None:
            client.transport.loseConnection()
    assert_clean(process)
    assert "ReactorNotRunning" not in process.stdout, process.output
    assert_exited_0(process)


@pytest_twisted.ensureDeferred
async def test_python_m_help(venv: Venv, tmp_path: Path) -> None:
    """``python -m twisted_mesh --help`` shows the mesh options."""
    out, err, code = await getProcessOutputAndValue(
        venv.exe("python"), ["-m", "twisted_mesh", "--help"], env=venv.env, path=str(tmp_path)
    )
    assert code == 0, (out, err)
    text = out.decode()
    for option in ("--listen", "--connect", "--port", "--transport", "--subnet", "--web", "--verbose", "--tls-cert"):
        assert option in text, text
    assert "Traceback" not in text + err.decode()


@pytest_twisted.ensureDeferred
async def test_python_m_runs_a_node(launch: Launcher, mesh: MeshNodes) -> None:
    """``python -m twisted_mesh --listen ...`` runs a node in the foreground, without a pid file; SIGTERM ends it."""
    process, cwd = launch.spawn([launch.venv.exe("python"), "-m", "twisted_mesh", "--listen", LOOPBACK])
    node = await process.started()
    sock = mesh(max_outgoing=0)
    assert await within(sock.connect("127.0.0.1", node.port)) == node.id
    assert list(cwd.iterdir()) == []  # --pidfile= : no twistd.pid
    await terminate(process)
    await wait_for(lambda: not sock.routing_table, 30, "the peer to see the node leave")
    assert_exited_0(process)


@pytest_twisted.ensureDeferred
async def test_python_m_bad_option(launch: Launcher) -> None:
    """``python -m twisted_mesh`` gives the same usage errors."""
    process, _ = launch.spawn([launch.venv.exe("python"), "-m", "twisted_mesh", "--transport", "nope"])
    assert await process.wait_for_end() not in (0, None), process.output
    assert "--transport must be one of" in process.stdout + process.stderr
    assert_clean(process)
