"""
``twistd mesh``'s options as a user gives them (see test_twistd.py): bad
options, the peers it dials and re-dials, the address it gives, --verbose.
"""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, error

from tests.integration.twistd import (
    MESH_PORT,
    REDIAL,
    START_TIMEOUT,
    Launcher,
    assert_clean,
    pause,
    terminate,
)
from tests.support import LOOPBACK, MESH, MeshNodes, http_get, short, wait_for, within
from twisted_mesh import HandshakeFailed, MeshService, Network, NodeKey, flags

# --- options -----------------------------------------------------------------------------


BAD_OPTIONS = [
    (["--transport", "nope"], "--transport must be one of"),
    (["--port", "notanumber"], "notanumber"),
    (["--port", "70000"], "between 0 and 65535"),
    (["--max-outgoing", "-1"], "--max-outgoing"),
    (["--listen", "ssl:0"], "ssl:0"),  # no certificate
    (["--tls-ca", "x.pem"], "--tls-ca needs --tls-cert"),
    (["--tls-key", "key.pem"], "--tls-key needs --tls-cert"),
    (["--tls-cert", "missing.pem"], "missing.pem"),
    (["--out-addr", "nohost"], "nohost"),
    (["--out-addr", "host:0"], "host:0"),
    (["--connect", "host:notaport"], "host:notaport"),
    (["--no-such-option"], "no-such-option"),
    # Not an endpoint string, nor HOST:PORT.
    (["--connect", "bad"], "bad"),
    (["--connect", "tcp:host=127.0.0.1"], "tcp:host=127.0.0.1"),
    (["--listen", "bogus:0"], "bogus"),
    (["--listen", "tcp:notaport"], "notaport"),
    (["--web", "notanendpoint"], "notanendpoint"),
    (["--web", "70000"], "70000"),
    (["--allow", "ids.txt"], "--allow needs --signed"),
    (["--signed", "--allow", "/nonexistent/ids.txt"], "--allow: cannot read /nonexistent/ids.txt"),
    (["--key", "/nonexistent/node.pem"], "--key: "),
    (["--web-prefix", "/mesh/"], "--web-prefix needs --web"),
    (["--web", "0", "--web-prefix", "/a b/"], "bad web prefix"),
]


@pytest.mark.parametrize(("args", "message"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
@pytest_twisted.ensureDeferred
async def test_bad_options_give_a_usage_error(launch: Launcher, args: list[str], message: str) -> None:
    """A bad option stops twistd at once with a usage error naming it: no traceback, no node."""
    process = launch.twistd("--listen", LOOPBACK, *args)

    def decided() -> bool:
        return not process.running or " listening on " in process.stdout or "Traceback" in process.stdout

    await wait_for(decided, START_TIMEOUT, "twistd to refuse the options")
    if process.running:
        await pause(0.5)  # let it log what it will
        process.terminate("KILL")
        await process.wait_for_end()
        raise AssertionError(f"twistd started a node despite {' '.join(args)}:\n{process.output}")
    assert process.exit_code not in (0, None), process.output
    assert_clean(process)
    assert message in process.stdout + process.stderr, process.output


# --- bootstrap and re-dialling ---------------------------------------------------------------


@pytest.mark.parametrize("form", ["HOST:PORT", "endpoint"])
@pytest_twisted.ensureDeferred
async def test_connect_bootstraps_and_redials(launch: Launcher, mesh: MeshNodes, form: str) -> None:
    """
    ``--connect``: the node dials the peer at start; when it loses it and has
    no peer left, it dials it again within two seconds, then with a growing
    delay until it is back.
    """
    first = mesh(max_outgoing=0)
    port = first.out_addr[1]
    peer = f"127.0.0.1:{port}" if form == "HOST:PORT" else f"tcp:host=127.0.0.1:port={port}"
    process, node = await launch.node("--connect", peer)
    await wait_for(lambda: node.id in first.routing_table, 30, "the twistd node to dial in")
    assert first.routing_table[node.id].outgoing is False

    assert not REDIAL.findall(process.stdout)
    await first.close()
    # Two retries find nobody, each after a longer delay than the last; the third finds the peer back.
    await wait_for(lambda: len(REDIAL.findall(process.stdout)) >= 2, 30, "two re-dial attempts")
    second = mesh("127.0.0.1", port, max_outgoing=0)
    await wait_for(lambda: node.id in second.routing_table, 60, "the twistd node to dial again")
    delays = [float(delay) for delay in REDIAL.findall(process.stdout)]
    assert delays[0] <= 2.0 and delays[0] < delays[1], delays
    assert process.running
    assert_clean(process)


@pytest_twisted.ensureDeferred
async def test_connect_endpoint_strings_without_keywords(launch: Launcher, mesh: MeshNodes, tmp_path: Path) -> None:
    """
    ``--connect`` takes endpoint strings with positional parts only
    (``tcp:HOST:PORT``, ``ws:HOST:PORT``, ``unix:PATH``), and dials them over
    their transports.
    """
    tcp_peer = mesh(max_outgoing=0)
    ws_peer = MeshService(MESH, listen=["ws:0:interface=127.0.0.1"])
    path = tmp_path / "peer.sock"
    unix_peer = MeshService(MESH, listen=[f"unix:{path}"])
    services = [ws_peer, unix_peer]
    for service in services:
        service.startService()
    try:
        (ws_port,) = await within(ws_peer.listening)
        await within(unix_peer.listening)
        process, node = await launch.node(
            *("--connect", f"tcp:127.0.0.1:{tcp_peer.out_addr[1]}"),
            *("--connect", f"ws:127.0.0.1:{ws_port.getHost().port}"),
            *("--connect", f"unix:{path}"),
        )
        peers = [tcp_peer, ws_peer, unix_peer]
        await wait_for(
            lambda: all(node.id in peer.routing_table for peer in peers) or not process.running,
            30,
            "the twistd node to dial its three peers",
        )
        assert all(node.id in peer.routing_table for peer in peers), process.output
        assert ws_peer.routing_table[node.id].encryption == "ws"
        assert_clean(process)
    finally:
        await defer.gatherResults([service.stopService() for service in services])


@pytest_twisted.ensureDeferred
async def test_connect_ipv6_host_port(launch: Launcher, mesh: MeshNodes) -> None:
    """``--connect [::1]:PORT``, the bracketed HOST:PORT of IPv6, dials that peer."""
    try:
        sock = mesh("::1", 0, max_outgoing=0)
    except error.CannotListenError:
        pytest.skip("no IPv6 loopback")
    process, node = await launch.node("--connect", f"[::1]:{sock.out_addr[1]}")
    await wait_for(
        lambda: node.id in sock.routing_table or not process.running or "Traceback" in process.stdout,
        30,
        "the twistd node to dial [::1]",
    )
    assert node.id in sock.routing_table, process.output


@pytest_twisted.ensureDeferred
async def test_out_addr_is_what_peers_are_told(launch: Launcher, mesh: MeshNodes) -> None:
    """``--out-addr``: the node tells its peers (and /status) to dial that address, not its listener's."""
    process = launch.twistd("--listen", LOOPBACK, "--out-addr", "192.0.2.7:4444", "--web", LOOPBACK)
    node = await process.started(web=True)
    assert (node.host, node.port) == ("192.0.2.7", 4444)
    real = MESH_PORT.search(process.stdout)
    assert real, process.output
    sock = mesh(max_outgoing=0)
    assert await within(sock.connect("127.0.0.1", int(real[1]))) == node.id
    assert sock.routing_table[node.id].peer_addr == ("192.0.2.7", 4444)
    _, _, body = await http_get(f"http://127.0.0.1:{node.web}/status")
    assert json.loads(body)["out_addr"] == ["192.0.2.7", 4444]
    assert_clean(process)


# --- --verbose -----------------------------------------------------------------------------


@pytest.mark.parametrize("verbose", [True, False], ids=["verbose", "quiet"])
@pytest_twisted.ensureDeferred
async def test_verbose_logs_received_messages(launch: Launcher, mesh: MeshNodes, verbose: bool) -> None:
    """``--verbose`` logs each message the node receives, with its packets; the default does not."""
    process, node = await launch.node(*(["--verbose"] if verbose else []))
    sender, receiver = mesh(max_outgoing=0), mesh(max_outgoing=0)
    await within(sender.connect("127.0.0.1", node.port))
    await within(receiver.connect("127.0.0.1", node.port))
    token = f"probe-{uuid.uuid4().hex}"
    sender.send(token, 42)
    assert (await within(receiver.next_message())).packets == (flags.broadcast, token, 42)
    if verbose:
        await process.wait_for_text(token)
        (line,) = [line for line in process.stdout.splitlines() if token in line]
        assert short(sender.id) in line and f"(0, '{token}', 42)" in line
    else:
        await pause(1.0)
        assert token not in process.stdout
    assert_clean(process)


# --- keys, signed networks, allow-lists -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_signed_node_keeps_its_key_and_lets_in_only_the_allowed(
    launch: Launcher, mesh: MeshNodes, tmp_path: Path
) -> None:
    """
    ``--key`` makes the key file (mode 0600) and logs the ID, which the node
    keeps across restarts; ``--signed --allow`` lets in the listed IDs only.
    """
    signed = Network("mesh", "Plaintext", signed=True)
    key_file, allow_file = tmp_path / "node.pem", tmp_path / "allowed.txt"
    friend_key = NodeKey.generate()
    allow_file.write_text(f"# the one peer let in\n{friend_key.node_id}\n\n")
    args = ("--signed", "--key", str(key_file), "--allow", str(allow_file))
    process, node = await launch.node(*args)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert node.id == NodeKey.load(key_file).node_id
    assert f"node key {key_file} (made now): node ID {node.id}" in process.stdout
    friend = mesh(prot=signed, key=friend_key)
    assert await within(friend.connect("127.0.0.1", node.port)) == node.id
    with pytest.raises(HandshakeFailed):
        await within(mesh(prot=signed).connect("127.0.0.1", node.port))
    await process.wait_for_text("is not on the allow-list")
    await terminate(process)
    again, restarted = await launch.node(*args)
    assert restarted.id == node.id
    assert f"node key {key_file} (loaded): node ID {node.id}" in again.stdout
    assert_clean(again)


@pytest_twisted.ensureDeferred
async def test_an_allow_file_with_a_bad_line_is_named(launch: Launcher, tmp_path: Path) -> None:
    """A line of --allow that is not a node ID stops twistd with its file and line."""
    allow_file = tmp_path / "allowed.txt"
    allow_file.write_text(f"{NodeKey.generate().node_id}\nnot-an-id\n")
    process = launch.twistd("--listen", LOOPBACK, "--signed", "--allow", str(allow_file))
    await process.wait_for_end()
    assert process.exit_code not in (0, None)
    assert f"--allow: {allow_file}, line 2: 'not-an-id' is not a node ID" in process.stdout + process.stderr
    assert_clean(process)
