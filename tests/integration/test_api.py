"""
The user's face of a node on loopback: the types its calls give (the
`.Connection` a handler sees, the results of ``reply()``), its events, its
context managers and ``async for``, and its arguments checked at the door.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import LogEvent
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from tests.support import MESH, MeshNodes, log_text, wait_for, within
from twisted_mesh import Connection, Limits, MeshClosed, MeshService, MeshSocket, Message, Network, SendResult
from twisted_mesh._service.endpoints import host_port
from twisted_mesh.errors import NotMeshPeer
from twisted_mesh.tls import self_signed_certificate

ROOT = Path(__file__).resolve().parents[2]

# -- types ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_handler_gets_a_connection(mesh: MeshNodes) -> None:
    """A handler's second argument is a `.Connection`, with the peer's ID and address and the link's direction."""
    a, b = await mesh.line(2)  # b dials a
    seen: list[Connection] = []

    def handler(msg: Message, conn: Connection) -> bool:
        seen.append(conn)
        return True

    b.register_handler(handler)
    a.send("hello")
    await wait_for(lambda: seen)
    conn = seen[0]
    assert isinstance(conn, Connection)
    assert (conn.peer_id, conn.peer_addr, conn.outgoing, conn.encryption, conn.closing) == (
        a.id,
        a.out_addr,
        True,
        "Plaintext",
        False,
    )
    assert b.routing_table[a.id] is conn
    await within(b.disconnect(conn))
    assert conn.closing


@pytest_twisted.ensureDeferred
async def test_reply_returns_a_send_result(mesh: MeshNodes) -> None:
    """reply() says where the reply went, as send() does."""
    a, b = await mesh.line(2)
    sent = a.send("ping")
    assert isinstance(sent, SendResult) and sent.queued == [b.id]
    msg = await within(b.next_message())
    answer = msg.reply("pong")
    assert isinstance(answer, SendResult) and answer.queued == [a.id] and not answer.pending
    assert (await within(a.next_message())).packets == (2, "pong")


@pytest.mark.parametrize("register", ["on", "once"])
def test_an_unknown_event_is_refused(mesh: MeshNodes, register: str) -> None:
    """on("mesage", ...) is a ValueError naming the events, not a callback never called."""
    sock: Any = mesh()
    with pytest.raises(ValueError, match="the events are 'connect', 'disconnect', 'message'"):
        getattr(sock, register)("mesage", lambda s: None)


# -- closing, and async for -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_close_twice(mesh: MeshNodes) -> None:
    """close() a second time, at once or later, fires too, with no error."""
    a, b = await mesh.line(2)
    first, second = a.close(), a.close()
    await within(defer.gatherResults([first, second]))
    await within(a.close())
    await wait_for(lambda: not b.routing_table)
    assert not a.running


@pytest_twisted.ensureDeferred
async def test_async_with_closes_the_node(mesh: MeshNodes) -> None:
    """async with a MeshSocket closes it at the end, once its connections are closed."""
    a = mesh()
    async with MeshSocket("127.0.0.1", 0, MESH) as b:
        assert b.running
        await within(b.connect("127.0.0.1", a.out_addr[1]))
    assert not b.running and not b._connections
    with pytest.raises(MeshClosed):
        b.send("too late")


@pytest_twisted.ensureDeferred
async def test_async_with_starts_a_service_and_waits_for_it() -> None:
    """async with a MeshService starts it and enters once it listens; the end stops it."""
    service = MeshService(MESH, listen=["tcp:0:interface=127.0.0.1"])
    async with service as node:
        assert node is service and node.running and node.ports
    assert not service.running and not service.ports


@pytest_twisted.ensureDeferred
async def test_async_with_a_service_that_cannot_listen(mesh: MeshNodes) -> None:
    """async with a service whose port is taken raises that, and leaves the service stopped."""
    taken = mesh()
    service = MeshService(MESH, listen=[("127.0.0.1", taken.out_addr[1])])
    with pytest.raises(CannotListenError):
        async with service:
            pytest.fail("entered a service that does not listen")
    assert not service.running


def test_with_closes_the_node(mesh: MeshNodes) -> None:
    """with a MeshSocket starts its close at the end."""
    with MeshSocket("127.0.0.1", 0, MESH) as sock:
        assert sock.running
    assert not sock.running
    with pytest.raises(MeshClosed):
        sock.send("too late")


@pytest_twisted.ensureDeferred
async def test_async_for_ends_when_the_node_closes(mesh: MeshNodes) -> None:
    """async for takes the messages as they come, those queued before first, and ends once the node closes."""
    a, b = await mesh.line(2)
    a.send(1)
    await wait_for(lambda: len(b._node.queue) == 1)
    got: list[Any] = []

    async def listen() -> None:
        async for msg in b.messages():
            got.append(msg.packets[1])

    listening = defer.ensureDeferred(listen())
    a.send(2)
    await wait_for(lambda: len(got) == 2)
    await within(b.close())
    await within(listening)
    assert got == [1, 2]


@pytest_twisted.ensureDeferred
async def test_iterators_share_the_messages(mesh: MeshNodes) -> None:
    """Two iterators and recv() take from one queue: each message goes to one of them, whoever asked first."""
    a, b = await mesh.line(2)
    first, second = b.messages(), b.messages()
    steps = [first.__anext__(), second.__anext__()]
    for number in range(3):
        a.send(number)
    assert [(await within(step)).packets[1] for step in steps] == [0, 1]  # type: ignore[arg-type]
    await wait_for(lambda: len(b._node.queue) == 1)
    message = b.recv()
    assert message is not None and message.packets[1] == 2


@pytest_twisted.ensureDeferred
async def test_async_for_on_a_service_not_started() -> None:
    """A service that has not started has nothing to give: the iteration ends at once."""
    async for _ in MeshService(MESH).messages():
        pytest.fail("a message from a service not started")


#: A node's async for and async with, in an asyncio task and in a coroutine
#: that Twisted runs, started from an asyncio task.
ASYNCIO_PROGRAM = """
import asyncio
from twisted.internet import asyncioreactor
loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
asyncioreactor.install(loop)
from twisted.internet.defer import Deferred
from twisted_mesh import MeshSocket

async def exchange(label):
    async with MeshSocket("127.0.0.1", 0) as alice, MeshSocket("127.0.0.1", 0) as bob:
        connected = bob.connect("127.0.0.1", alice.out_addr[1])
        await (connected if TWISTED[0] else connected.asFuture(loop))
        bob.send(label)
        async for msg in alice.messages():
            print(label, msg.packets)
            break
    print(label, "closed", alice.running, bob.running)

TWISTED = [False]
loop.run_until_complete(exchange("asyncio"))

async def from_asyncio():
    TWISTED[0] = True
    await Deferred.fromCoroutine(exchange("twisted")).asFuture(loop)

loop.run_until_complete(from_asyncio())
"""


def test_async_for_and_with_in_asyncio_and_twisted_coroutines(tmp_path: Path) -> None:
    """On the asyncio reactor, async with and async for work in an asyncio task and in Twisted's coroutines."""
    script = tmp_path / "program.py"
    script.write_text(ASYNCIO_PROGRAM)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "asyncio (0, 'asyncio')",
        "asyncio closed 0 0",
        "twisted (0, 'twisted')",
        "twisted closed 0 0",
    ]


# -- arguments checked at the door ------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "text"),
    [
        (lambda: Network("mesh", "TCP"), ValueError, "unknown transport 'TCP' for encryption: use one of Plaintext"),
        (lambda: Network(""), ValueError, "subnet is empty"),
        (lambda: Network(b"mesh"), TypeError, "subnet must be a string"),  # type: ignore[arg-type]
        (lambda: Network("mesh", "Plaintext", "yes"), TypeError, "signed must be True or False"),  # type: ignore[arg-type]
        (lambda: Limits(max_queue=-1), ValueError, "max_queue must not be negative"),
        (lambda: Limits(handshake_timeout=-0.5), ValueError, "handshake_timeout must not be negative"),
        (lambda: Limits(max_frame_size="1M"), TypeError, "max_frame_size must be an int"),  # type: ignore[arg-type]
        (lambda: MeshSocket("127.0.0.1", "4444"), TypeError, "port must be an int, not '4444'"),  # type: ignore[arg-type]
        (lambda: MeshSocket("127.0.0.1", 70000), ValueError, "port must be 0 (any free port) to 65535"),
        (lambda: MeshService(MESH, connect=[("127.0.0.1", "4444")]), TypeError, "port must be an int"),  # type: ignore[list-item]
    ],
)
def test_bad_arguments_are_refused(make: Any, error: type[Exception], text: str) -> None:
    """A bad argument is refused where it is given, with an error that names it."""
    with pytest.raises(error, match=re.escape(text)):
        make()


def test_network_is_a_named_tuple() -> None:
    """Network is checked and stays the NamedTuple it was: fields, equality, _replace, pickling."""
    network = Network("mesh", "ws", signed=True)
    assert network == ("mesh", "ws", True) and network._fields == ("subnet", "encryption", "signed")
    assert network._replace(encryption="SSL") == Network("mesh", "SSL", True)
    assert pickle.loads(pickle.dumps(network)) == network
    assert repr(Network("mesh")) == "Network(subnet='mesh', encryption='Plaintext', signed=False)"


@pytest_twisted.ensureDeferred
async def test_connect_refuses_a_port_given_as_a_string(mesh: MeshNodes) -> None:
    """connect(host, "4444") is a TypeError naming the port, not a dial that fails later."""
    sock = mesh()
    with pytest.raises(TypeError, match="port must be an int, not '4444'"):
        sock.connect("127.0.0.1", "4444")  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_connect_takes_host_colon_port(mesh: MeshNodes) -> None:
    """connect("127.0.0.1:4444") dials that address, as --connect does; so does a service's connect list."""
    a, b = mesh(), mesh()
    assert await within(b.connect(f"127.0.0.1:{a.out_addr[1]}")) == a.id
    service = mesh.service(connect=[f"127.0.0.1:{a.out_addr[1]}"])
    await wait_for(lambda: a.id in service.routing_table)


def test_host_port() -> None:
    """HOST:PORT and [IPv6]:PORT are addresses; endpoint strings are not."""
    assert host_port("127.0.0.1:4444") == ("127.0.0.1", 4444)
    assert host_port("node.example:80") == ("node.example", 80)
    assert host_port("[::1]:4444") == ("::1", 4444)
    for text in ("tcp:4444", "ws:4444", "tcp:host=h:port=4444", "unix:/run/mesh.sock", "::1:4444", "h:p"):
        assert host_port(text) is None, text


# -- dialling what is not a mesh node -------------------------------------------------------------


def _web_site() -> Site:
    root = Resource()
    root.putChild(b"", Data(b"<p>not a mesh node</p>", "text/html"))
    return Site(root)


class Greeting(TwistedProtocol):
    """A server of another protocol that speaks first, as SMTP, SSH or FTP servers do."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"220 mail.example ESMTP ready\r\n")


def _listening(factory: Factory, tls: bool) -> Deferred[IListeningPort]:
    if tls:
        endpoint = SSL4ServerEndpoint(reactor, 0, self_signed_certificate().options(), interface="127.0.0.1")
    else:
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    return endpoint.listen(factory)


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest_twisted.ensureDeferred
async def test_dialling_a_server_that_speaks_first(mesh: MeshNodes, log_events: list[LogEvent], tls: bool) -> None:
    """
    connect() to a server of another protocol, over TCP or TLS, fails at
    once with NotMeshPeer, whose text shows what the server sent; the node
    logs it in one line.
    """
    port = await _listening(Factory.forProtocol(Greeting), tls)
    try:
        sock = mesh(prot=Network(MESH.subnet, "SSL" if tls else "Plaintext"))
        with pytest.raises(NotMeshPeer, match=r"did not speak the mesh protocol: it sent b'220 mail\.example"):
            await within(sock.connect("127.0.0.1", port.getHost().port), 5)
        assert not sock.routing_table
        assert "did not speak the mesh protocol: it sent b'220 mail.example" in log_text(log_events)
    finally:
        await port.stopListening()


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest_twisted.ensureDeferred
async def test_dialling_a_web_server(mesh: MeshNodes, tls: bool) -> None:
    """
    connect() to a web server, which waits for a request, fails with
    NotMeshPeer once the handshake's time is up, over TCP or TLS.
    """
    port = await _listening(_web_site(), tls)
    try:
        sock = mesh(prot=Network(MESH.subnet, "SSL" if tls else "Plaintext"), limits=Limits(handshake_timeout=1.5))
        with pytest.raises(NotMeshPeer, match=r"did not speak the mesh protocol: it sent nothing \(no handshake"):
            await within(sock.connect("127.0.0.1", port.getHost().port))
        assert sock.stats.handshake_failures["timeout"] == 1
    finally:
        await port.stopListening()


def test_the_typed_program_runs() -> None:
    """tests/typed/program.py, which tox -e mypy checks with mypy --strict, also runs as it says."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    program = ROOT / "tests" / "typed" / "program.py"
    result = subprocess.run([sys.executable, str(program)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "closed: True"
    assert "refused: unknown event 'mesage'" in result.stdout
