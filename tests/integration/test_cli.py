"""
The ``twisted-mesh`` command as a user runs it: the console script of the
wheel installed in a venv (see twistd.py), against real nodes.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import pytest_twisted

from tests.integration.test_transports import authority_and_certificates
from tests.integration.twistd import Launcher, Process, assert_clean, terminate
from tests.support import MeshNodes, wait_for, within
from twisted_mesh import MeshSocket, Network, NodeKey, __version__, flags
from twisted_mesh.tls import TLSOptions

SIGNED = Network("mesh", "Plaintext", signed=True)


def cli(launch: Launcher, *args: str, stdin: bytes | None = None) -> Process:
    """Start ``twisted-mesh ARGS``, writing ``stdin`` to it (then closing it) when given."""
    process, _ = launch.spawn([launch.venv.exe("twisted-mesh"), *args])
    if stdin is not None:
        assert process.transport is not None
        process.transport.write(stdin)
        process.transport.closeStdin()
    return process


async def run(launch: Launcher, *args: str, stdin: bytes | None = None) -> Process:
    """Run ``twisted-mesh ARGS`` to its end."""
    process = cli(launch, *args, stdin=stdin)
    await process.wait_for_end()
    return process


def assert_one_line_error(process: Process, status: int, *words: str) -> None:
    """The process failed with ``status`` and one line on stderr that has ``words``, and printed nothing else."""
    assert process.exit_code == status, process.output
    assert process.stdout == "" and process.stderr.count("\n") == 1, process.output
    assert all(word in process.stderr for word in words), process.output
    assert_clean(process)


def peer_at(sock: MeshSocket) -> str:
    """The HOST:PORT of a MeshSocket."""
    host, port = sock.out_addr
    return f"{host}:{port}"


# --- send ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_send_broadcasts_through_a_node(launch: Launcher, mesh: MeshNodes) -> None:
    """``send ENDPOINT PACKET...`` joins through a twistd node, whose other peers get the broadcast; status 0."""
    _, node = await launch.node()
    receiver = mesh(max_outgoing=0)
    await within(receiver.connect("127.0.0.1", node.port))
    token = f"probe-{uuid.uuid4().hex}"
    process = await run(launch, "send", f"127.0.0.1:{node.port}", token, "two words")
    assert process.exit_code == 0 and process.stdout == process.stderr == "", process.output
    msg = await within(receiver.next_message())
    assert msg.packets == (flags.broadcast, token, "two words") and msg.msg_type == flags.broadcast


@pytest_twisted.ensureDeferred
async def test_send_whisper_and_json_packets(launch: Launcher, mesh: MeshNodes) -> None:
    """``--whisper`` reaches the node dialled (an endpoint string here); ``--json`` sends typed packets."""
    sock = mesh(max_outgoing=0)
    endpoint = f"tcp:host=127.0.0.1:port={sock.out_addr[1]}"
    process = await run(
        launch, "send", "--whisper", "--json", endpoint, '"psst"', "7", '{"base64": "AP8="}', "[1, null]"
    )
    assert process.exit_code == 0, process.output
    msg = await within(sock.next_message())
    assert msg.msg_type == flags.whisper and msg.packets == (flags.whisper, "psst", 7, b"\x00\xff", [1, None])


@pytest_twisted.ensureDeferred
async def test_send_stdin_loses_no_line(launch: Launcher, mesh: MeshNodes) -> None:
    """``--stdin``: one message a line, paced by drained(), all of them received, in order; status 0 at EOF."""
    _, node = await launch.node()
    receiver = mesh(max_outgoing=0)
    await within(receiver.connect("127.0.0.1", node.port))
    got: list[str] = []
    receiver.register_handler(lambda msg, conn: got.append(msg.packets[1]) or True)
    lines = [f"line {n} " + "x" * (n % 300) for n in range(3000)]
    process = await run(launch, "send", "--stdin", f"127.0.0.1:{node.port}", stdin="\n".join(lines).encode())
    assert process.exit_code == 0, process.output
    await wait_for(lambda: len(got) >= len(lines), 60, "every line")
    assert got == lines


# --- listen -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_listen_prints_messages_and_ctrl_c_exits_0(launch: Launcher, mesh: MeshNodes) -> None:
    """``listen`` prints a line a message (``--json``: one JSON object a line); SIGINT ends it with status 0."""
    hub = mesh(max_outgoing=0)
    text = cli(launch, "listen", peer_at(hub))
    as_json = cli(launch, "listen", "--json", peer_at(hub))
    await wait_for(lambda: len(hub.routing_table) == 2, 60, "both listeners to join")
    hub.send("hello", b"\x00\xff", 42)
    hub.send("again")
    await text.wait_for_text("again")
    await as_json.wait_for_text("again")
    assert text.stdout.splitlines() == [
        f'{hub.id[:10]} broadcast: hello {{"base64":"AP8="}} 42',
        f"{hub.id[:10]} broadcast: again",
    ]
    first, second = (json.loads(line) for line in as_json.stdout.splitlines())
    assert first["sender"] == hub.id and first["msg_type"] == first["sub_flag"] == "broadcast"
    assert first["packets"] == ["hello", {"base64": "AP8="}, 42] and second["packets"] == ["again"]
    assert len(first["id"]) == 64 and isinstance(first["time"], int)
    for process in (text, as_json):
        process.terminate("INT")
        assert await process.wait_for_end() == 0, process.output
        assert process.stderr == "", process.output


@pytest_twisted.ensureDeferred
async def test_listen_ends_with_1_when_the_node_leaves(launch: Launcher, mesh: MeshNodes) -> None:
    """A listener whose node goes away says so in one line, with status 1."""
    hub = mesh(max_outgoing=0)
    process = cli(launch, "listen", peer_at(hub))
    await wait_for(lambda: len(hub.routing_table) == 1, 60, "the listener to join")
    await hub.close()
    await process.wait_for_end()
    assert_one_line_error(process, 1, "closed the connection")


# --- peers --------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_peers_table_and_json(launch: Launcher, mesh: MeshNodes) -> None:
    """``peers`` asks a twistd node (no --web) for its peers over the mesh protocol: a table, or JSON."""
    _, node = await launch.node()
    peers = [mesh(max_outgoing=0) for _ in range(2)]
    for peer in peers:
        await within(peer.connect("127.0.0.1", node.port))
    table = await run(launch, "peers", f"127.0.0.1:{node.port}")
    assert table.exit_code == 0, table.output
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NODE", "ID", "ADDRESS"]
    assert sorted(row.split() for row in rows) == sorted([peer.id, peer_at(peer)] for peer in peers)
    listed = await run(launch, "peers", "--json", f"127.0.0.1:{node.port}")
    assert listed.exit_code == 0, listed.output
    expected = [{"id": peer.id, "host": "127.0.0.1", "port": peer.out_addr[1]} for peer in peers]
    assert sorted(json.loads(listed.stdout), key=lambda p: p["id"]) == sorted(expected, key=lambda p: p["id"])


# --- signed networks ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_send_and_listen_on_a_signed_network(launch: Launcher, mesh: MeshNodes, tmp_path: Path) -> None:
    """``--signed --key FILE``: the clients join a signed node; the message comes from the key's ID."""
    _, node = await launch.node("--signed")
    relay = mesh(prot=SIGNED, max_outgoing=0)
    await within(relay.connect("127.0.0.1", node.port))
    listener = cli(launch, "listen", "--signed", "--json", peer_at(relay))
    await wait_for(lambda: len(relay.routing_table) == 2, 60, "the listener to join")
    key_file = tmp_path / "client.pem"
    sender_id = NodeKey.load_or_create(key_file)[0].node_id
    sent = await run(launch, "send", "--signed", "--key", str(key_file), f"127.0.0.1:{node.port}", "signed hello")
    assert sent.exit_code == 0, sent.output
    msg = await within(relay.next_message())
    assert msg.sender == sender_id and msg.packets == (flags.broadcast, "signed hello")
    await listener.wait_for_text("signed hello")
    (line,) = listener.stdout.splitlines()
    assert json.loads(line)["sender"] == sender_id
    unsigned = await run(launch, "send", f"127.0.0.1:{node.port}", "x")
    assert_one_line_error(unsigned, 1, "cannot join through")


# --- verified TLS -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_send_to_a_node_that_verifies_its_peers(launch: Launcher, mesh: MeshNodes, tmp_path: Path) -> None:
    """``--tls-cert`` and ``--tls-ca``: a client joins a node that lets in only certificates of its authority."""
    authority, (node_certificate, client_certificate) = authority_and_certificates("127.0.0.1", "127.0.0.1")
    node = mesh(prot=Network("mesh", "SSL"), tls=TLSOptions(node_certificate, authority), max_outgoing=0)
    (tmp_path / "client.pem").write_bytes(client_certificate.dumpPEM())
    (tmp_path / "ca.pem").write_bytes(authority.dumpPEM())
    tls = ["--transport", "SSL", "--tls-cert", str(tmp_path / "client.pem"), "--tls-ca", str(tmp_path / "ca.pem")]
    process = await run(launch, "send", *tls, peer_at(node), "verified")
    assert process.exit_code == 0, process.output
    assert (await within(node.next_message())).packets == (flags.broadcast, "verified")
    stranger = await run(launch, "send", "--transport", "SSL", "--timeout", "5", peer_at(node), "x")
    assert_one_line_error(stranger, 1, "cannot join through", "give --tls-cert and --tls-ca")


# --- errors -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_client_that_cannot_join_says_why_in_one_line(launch: Launcher, mesh: MeshNodes) -> None:
    """Refused, another subnet, nobody answering: one line each, status 1."""
    sock = mesh(max_outgoing=0)
    port = sock.out_addr[1]
    await sock.close()
    refused = await run(launch, "send", f"127.0.0.1:{port}", "x")
    assert_one_line_error(refused, 1, f"twisted-mesh send: cannot join through 127.0.0.1:{port}: connection refused")
    other = mesh(max_outgoing=0)
    mismatch = await run(launch, "peers", "--subnet", "other", peer_at(other))
    assert_one_line_error(mismatch, 1, "twisted-mesh peers: cannot join through", "subnet")


USAGE_ERRORS = [
    (["send"], "twisted-mesh send: error: give the ENDPOINT"),
    (["send", "127.0.0.1:1"], "twisted-mesh send: error: give at least one PACKET"),
    (["listen", "--nope", "127.0.0.1:1"], "twisted-mesh listen: error: option --nope not recognized"),
    (["peers", "nohost"], "twisted-mesh peers: error: 'nohost' is not HOST:PORT"),
    (["frob"], "twisted-mesh: error: unknown command 'frob'"),
    (["node", "--transport", "nope"], "twisted-mesh node: error: --transport must be one of"),
    (["--port", "70000"], "twisted-mesh: error: --port must be between 0 and 65535"),
]


@pytest.mark.parametrize(("args", "line"), USAGE_ERRORS, ids=[" ".join(args) for args, _ in USAGE_ERRORS])
@pytest_twisted.ensureDeferred
async def test_a_usage_error_is_one_line_with_status_2(launch: Launcher, args: list[str], line: str) -> None:
    process = await run(launch, *args)
    assert_one_line_error(process, 2, line, "--help)")


@pytest_twisted.ensureDeferred
async def test_tls_files_that_cannot_be_used_are_named(launch: Launcher, tmp_path: Path) -> None:
    """A PEM that does not parse, a certificate without its key: one line naming the file, status 2."""
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    lone = tmp_path / "lone.pem"
    pem = TLSOptions().certificate.dumpPEM()
    end = b"-----END CERTIFICATE-----\n"
    lone.write_bytes(pem[pem.index(b"-----BEGIN CERTIFICATE") : pem.index(end) + len(end)])
    garbled = await run(launch, "node", "--port", "0", "--transport", "SSL", "--tls-cert", str(bad))
    assert_one_line_error(garbled, 2, f"{bad} holds no PEM certificate")
    keyless = await run(launch, "node", "--port", "0", "--transport", "SSL", "--tls-cert", str(lone))
    assert_one_line_error(keyless, 2, f"{lone} holds no PEM private key")


@pytest_twisted.ensureDeferred
async def test_a_port_in_use_is_named(launch: Launcher, mesh: MeshNodes) -> None:
    """A node whose port is taken says which, in one line of its log, and exits with status 1."""
    port = mesh(max_outgoing=0).out_addr[1]
    process = await run(launch, "node", "--listen", f"tcp:{port}:interface=127.0.0.1")
    assert process.exit_code == 1, process.output
    (line,) = [line for line in process.stdout.splitlines() if "could not listen" in line]
    assert f"127.0.0.1:{port}" in line and "Address already in use" in line
    assert_clean(process)


# --- the version, and python -m -----------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["twisted-mesh", "--version"], ["twisted-mesh", "send", "--version"], ["twisted-mesh", "node", "--version"]]
    + [["python", "-m", "twisted_mesh", "--version"], ["twistd", "mesh", "--version"]],
    ids=" ".join,
)
@pytest_twisted.ensureDeferred
async def test_version_everywhere(launch: Launcher, argv: list[str]) -> None:
    process, _ = launch.spawn([launch.venv.exe(argv[0]), *argv[1:]])
    assert await process.wait_for_end() == 0, process.output
    assert process.stdout == f"twisted_mesh {__version__}\n", process.output


@pytest_twisted.ensureDeferred
async def test_python_m_port_0_runs_a_node(launch: Launcher, mesh: MeshNodes) -> None:
    """``python -m twisted_mesh --port 0`` (options, no command) runs a node, as the README says."""
    process, _ = launch.spawn([launch.venv.exe("python"), "-m", "twisted_mesh", "--port", "0"])
    node = await process.started()
    sock = mesh(max_outgoing=0)
    assert await within(sock.connect("127.0.0.1", node.port)) == node.id
    await terminate(process)


@pytest_twisted.ensureDeferred
async def test_python_m_and_twisted_mesh_help(launch: Launcher) -> None:
    """The help names the command that was run, and lists the node's options."""
    for argv, usage in [
        (["python", "-m", "twisted_mesh", "--help"], "Usage: python -m twisted_mesh [COMMAND]"),
        (["twisted-mesh", "node", "--help"], "Usage: twisted-mesh node [options]"),
    ]:
        process, _ = launch.spawn([launch.venv.exe(argv[0]), *argv[1:]])
        assert await process.wait_for_end() == 0, process.output
        assert process.stdout.startswith(usage) and "--listen=" in process.stdout, process.output
