"""
Stream endpoints over WebSocket (`.twisted_mesh.websocket`), over real
loopback sockets: framing across messages, closes, refused connections,
plain HTTP, text messages, wss, the endpoint strings, and the mesh protocol
itself, with twisted_mesh and with js2p in 'ws' mode.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from struct import pack
from typing import Any

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, reactor, task
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    clientFromString,
    connectProtocol,
    serverFromString,
)
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    NoProtocol,
)
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.internet.protocol import Factory
from twisted.logger import LogEvent
from twisted.plugin import getPlugins
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from twisted.web.client import Agent
from twisted.web.pages import notFound
from twisted.web.server import Site

from tests.reference import ReferenceNode
from tests.support import log_text, wait_for, within
from twisted_mesh import MeshService, Protocol, flags
from twisted_mesh._endpoints import WEBSOCKET_SLACK, client_from_string, server_from_string
from twisted_mesh._link import LinkFactory, LinkProtocol, WriteBatch
from twisted_mesh._node import MeshNode
from twisted_mesh.websocket import (
    OpeningFactory,
    WebSocketClientEndpoint,
    WebSocketClientParser,
    WebSocketHandshakeError,
    WebSocketServerEndpoint,
    WebSocketServerParser,
)

Reference = Callable[..., Awaitable[ReferenceNode]]
WS_MESH = Protocol("mesh", "ws")


# -- a framed test protocol -------------------------------------------------------------


class Framed(Int32StringReceiver):
    """
    Keeps the strings it receives, the chunks they came in, and how it was
    closed.
    """

    def __init__(self) -> None:
        self.strings: DeferredQueue[bytes] = DeferredQueue()
        self.chunks: list[bytes] = []
        self.reasons: list[Failure] = []
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        if isinstance(self.factory, Recording):
            self.factory.built.put(self)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        super().dataReceived(data)

    def stringReceived(self, string: bytes) -> None:
        self.strings.put(string)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.reasons.append(reason)
        if not self.lost.called:
            self.lost.callback(None)


class Silent(Framed):
    """Reads and answers nothing."""

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)


class Recording(Factory):
    """Builds `.Framed` protocols (or ``kind``) and queues each one connected."""

    def __init__(self, kind: type[Framed] = Framed) -> None:
        self.kind = kind
        self.built: DeferredQueue[Framed] = DeferredQueue()
        self.count = 0

    def buildProtocol(self, addr: Any) -> Framed:
        proto = self.kind()
        proto.factory = self
        self.count += 1
        return proto


@pytest.fixture
def ports() -> Iterator[list[IListeningPort]]:
    """Listening ports, stopped at teardown."""
    started: list[IListeningPort] = []
    yield started
    pytest_twisted.blockon(defer.gatherResults([defer.maybeDeferred(port.stopListening) for port in started]))


async def listen(
    ports: list[IListeningPort], factory: IProtocolFactory, endpoint: IStreamServerEndpoint | None = None
) -> int:
    """Listen on ``endpoint`` (by default ws: on loopback); return the port."""
    if endpoint is None:
        endpoint = WebSocketServerEndpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), reactor=reactor)
    port = await within(endpoint.listen(factory))
    ports.append(port)
    return int(port.getHost().port)


def ws_client(port: int) -> WebSocketClientEndpoint:
    return WebSocketClientEndpoint(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port), f"ws://127.0.0.1:{port}/", reactor=reactor
    )


async def pair(
    ports: list[IListeningPort],
    client: IStreamClientEndpoint | None = None,
    server: IStreamServerEndpoint | None = None,
) -> tuple[Framed, Framed]:
    """A connected (client, server) pair of `.Framed` protocols."""
    factory = Recording()
    port = await listen(ports, factory, server)
    proto = await within((client or ws_client(port)).connect(Recording()))
    assert isinstance(proto, Framed)
    return proto, await within(factory.built.get())


async def settle(seconds: float = 0.3) -> None:
    await task.deferLater(reactor, seconds)


def frame(body: bytes) -> bytes:
    return pack(">I", len(body)) + body


def no_traceback(events: list[LogEvent]) -> None:
    text = log_text(events)
    assert "Traceback" not in text, text
    assert not [event for event in events if "log_failure" in event], text


# -- data ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_frames_cross_both_ways(ports: list[IListeningPort]) -> None:
    client, server = await pair(ports)
    assert client.transport is not None and server.transport is not None
    client.sendString(b"ping")
    assert await within(server.strings.get()) == b"ping"
    server.sendString(b"pong" * 1000)
    assert await within(client.strings.get()) == b"pong" * 1000
    # Addresses are the TCP connection's.
    assert client.transport.getPeer().port == server.transport.getHost().port
    assert server.transport.getPeer().port == client.transport.getHost().port


@pytest_twisted.ensureDeferred
async def test_messages_are_read_as_a_stream(ports: list[IListeningPort]) -> None:
    """A frame split across messages, and several frames in one message."""
    client, server = await pair(ports)
    assert client.transport is not None
    one, two, three = frame(b"hello"), frame(b""), frame(b"x" * 70000)
    # Each write is one binary message.
    writes = [one[:2], one[2:7], one[7:] + two + three[:10], three[10:]]
    for chunk in writes:
        client.transport.write(chunk)
    assert [await within(server.strings.get()) for _ in range(3)] == [b"hello", b"", b"x" * 70000]
    # The receiver saw the message boundaries, not the frames'.
    assert server.chunks == writes
    client.transport.writeSequence([frame(b"a"), frame(b"b")])
    assert [await within(server.strings.get()) for _ in range(2)] == [b"a", b"b"]


@pytest_twisted.ensureDeferred
async def test_tcp_nodelay_and_producer_pass_through(ports: list[IListeningPort]) -> None:
    client, server = await pair(ports)
    transport: Any = server.transport
    transport.setTcpNoDelay(True)
    assert transport._websocket.transport.getTcpNoDelay()
    transport.pauseProducing()
    client.sendString(b"held")
    await settle()
    assert not server.strings.pending
    transport.resumeProducing()
    assert await within(server.strings.get()) == b"held"


@pytest_twisted.ensureDeferred
async def test_too_large_message_closes(ports: list[IListeningPort]) -> None:
    small = WebSocketServerEndpoint(
        TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), reactor=reactor, max_message_size=1024
    )
    client, server = await pair(ports, server=small)
    client.sendString(b"x" * 1000)
    assert await within(server.strings.get()) == b"x" * 1000
    client.sendString(b"x" * 2000)
    await within(server.lost)
    await within(client.lost)
    assert server.reasons[0].check(ConnectionLost) and not server.strings.pending


@pytest_twisted.ensureDeferred
async def test_a_write_longer_than_a_message_goes_out_in_several(ports: list[IListeningPort]) -> None:
    """
    A write longer than the endpoint's message limit (frames a read made
    together, say) is cut into messages within the limit, read as one stream.
    """
    small = dict(reactor=reactor, max_message_size=1024)
    server_endpoint = WebSocketServerEndpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), **small)
    factory = Recording()
    port = await listen(ports, factory, server_endpoint)
    client_endpoint = WebSocketClientEndpoint(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port), f"ws://127.0.0.1:{port}/", **small
    )
    client = await within(client_endpoint.connect(Recording()))
    server = await within(factory.built.get())
    assert client.transport is not None
    strings = [bytes([n]) * 900 for n in range(3)]
    client.transport.write(b"".join(frame(string) for string in strings))
    assert [await within(server.strings.get()) for _ in strings] == strings
    assert len(server.chunks) == 3 and max(map(len, server.chunks)) <= 1024
    assert not server.lost.called and not client.lost.called


# -- closing ---------------------------------------------------------------------------


@pytest.mark.parametrize("closer", ["client", "server"])
@pytest_twisted.ensureDeferred
async def test_lose_connection_closes_both_sides_once(ports: list[IListeningPort], closer: str) -> None:
    client, server = await pair(ports)
    first, other = (client, server) if closer == "client" else (server, client)
    assert first.transport is not None
    first.sendString(b"last words")
    first.transport.loseConnection()
    first.transport.loseConnection()
    # Written before the close: delivered.
    assert await within(other.strings.get()) == b"last words"
    for proto in (first, other):
        await within(proto.lost)
        assert proto.reasons[0].check(ConnectionDone), proto.reasons[0]
    await settle()
    assert len(client.reasons) == 1 and len(server.reasons) == 1
    # Writes after the close go nowhere, as on TCP.
    first.transport.write(b"ignored")


@pytest_twisted.ensureDeferred
async def test_abort_connection(ports: list[IListeningPort]) -> None:
    client, server = await pair(ports)
    assert client.transport is not None
    client.transport.abortConnection()  # type: ignore[attr-defined]
    await within(client.lost)
    await within(server.lost)
    assert client.reasons[0].check(ConnectionAborted) and server.reasons[0].check(ConnectionLost)
    await settle()
    assert len(client.reasons) == 1 and len(server.reasons) == 1


@pytest_twisted.ensureDeferred
async def test_connection_closed_before_opening(ports: list[IListeningPort], log_events: list[LogEvent]) -> None:
    """A TCP connection that never opens a WebSocket builds no protocol."""
    factory = Recording()
    port = await listen(ports, factory)
    raw = await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Framed()))
    assert raw.transport is not None
    raw.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    raw.transport.loseConnection()
    await within(raw.lost)
    await settle()
    assert factory.count == 0
    no_traceback(log_events)


class Watching(Recording):
    """
    A `.Recording` that is an `.OpeningFactory`: it keeps what it is told of
    each connection, and drops them all while they open if told to.
    """

    def __init__(self, *, refuse: bool = False) -> None:
        super().__init__()
        self.refuse = refuse
        self.told: list[tuple[str, object]] = []
        self.drops: list[Callable[[str], None]] = []

    def opening(self, peer: Any, drop: Callable[[str], None]) -> object | None:
        token = object()
        self.told.append(("opening", token))
        self.drops.append(drop)
        return None if self.refuse else token

    def opened(self, token: object, protocol: Any) -> None:
        assert protocol.transport is None, "told once connected"
        self.told.append(("opened", token))

    def closed(self, token: object) -> None:
        self.told.append(("closed", token))


@pytest_twisted.ensureDeferred
async def test_an_opening_factory_hears_of_connections_before_they_open(
    ports: list[IListeningPort], log_events: list[LogEvent]
) -> None:
    """
    A factory that is an OpeningFactory is told of each connection as it is
    accepted; then that its protocol was built for it, or that it closed
    before its WebSocket opened; and it may drop a connection while it opens.
    """
    assert isinstance(Watching(), OpeningFactory) and not isinstance(Recording(), OpeningFactory)
    factory = Watching()
    port = await listen(ports, factory)
    near = await within(ws_client(port).connect(Recording()))
    far = await within(factory.built.get())
    (_, token), opened = factory.told
    assert opened == ("opened", token)
    del factory.told[:]

    raw = await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Framed()))
    await wait_for(lambda: len(factory.told) == 1)
    assert raw.transport is not None
    raw.transport.loseConnection()
    await wait_for(lambda: len(factory.told) == 2)
    (_, token), closed = factory.told
    assert closed == ("closed", token)
    del factory.told[:]

    dropped = await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Framed()))
    await wait_for(lambda: len(factory.told) == 1)
    factory.drops[-1]("room for another")
    await within(dropped.lost)
    await wait_for(lambda: len(factory.told) == 2)
    assert factory.told[1][0] == "closed"

    refusing = Watching(refuse=True)
    port = await listen(ports, refusing)
    with pytest.raises(WebSocketHandshakeError):
        await within(ws_client(port).connect(Recording()))
    assert [what for what, _ in refusing.told] == ["opening"] and refusing.count == 0
    assert isinstance(near, Framed) and not near.lost.called and not far.lost.called
    assert factory.count == 1
    no_traceback(log_events)


# -- failed connections ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_connect_to_nothing_fails(ports: list[IListeningPort]) -> None:
    port = await listen(ports, Recording())
    await ports.pop().stopListening()
    factory = Recording()
    with pytest.raises(ConnectionRefusedError):
        await within(ws_client(port).connect(factory))
    assert factory.count == 0


@pytest_twisted.ensureDeferred
async def test_refused_upgrade_fails(ports: list[IListeningPort]) -> None:
    """An HTTP server that is no WebSocket server: a clear error."""
    port = await listen(ports, Site(notFound()), TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"))
    factory = Recording()
    with pytest.raises(WebSocketHandshakeError) as raised:
        await within(ws_client(port).connect(factory))
    assert f"ws://127.0.0.1:{port}/" in str(raised.value) and "404" in str(raised.value)
    assert factory.count == 0


@pytest_twisted.ensureDeferred
async def test_connect_can_be_cancelled(ports: list[IListeningPort]) -> None:
    """A server that accepts TCP but never answers: cancelling drops it."""
    silent = Recording(Silent)
    port = await listen(ports, silent, TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"))
    factory = Recording()
    connecting = ws_client(port).connect(factory)
    their_side = await within(silent.built.get())
    await settle()  # past the TCP connection, in the opening handshake
    connecting.cancel()
    with pytest.raises(defer.CancelledError):
        await connecting
    await within(their_side.lost)
    assert their_side.chunks[0].startswith(b"GET / HTTP/1.1\r\n")
    assert factory.count == 0


@pytest_twisted.ensureDeferred
async def test_plain_http_gets_a_response(ports: list[IListeningPort], log_events: list[LogEvent]) -> None:
    factory = Recording()
    port = await listen(ports, factory)
    response = await within(Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/".encode()))
    assert response.code == 426
    assert response.length == 0  # Content-Length: 0, a complete answer
    await settle()
    assert factory.count == 0
    no_traceback(log_events)


@pytest_twisted.ensureDeferred
async def test_protocol_that_fails_to_start(ports: list[IListeningPort], log_events: list[LogEvent]) -> None:
    """A factory that builds nothing: the server logs it, the client fails."""

    class Refusing(Factory):
        def buildProtocol(self, addr: Any) -> None:
            return None

    port = await listen(ports, Refusing())
    factory = Recording()
    with pytest.raises(WebSocketHandshakeError):
        await within(ws_client(port).connect(factory))
    assert "could not build a protocol" in log_text(log_events)

    port = await listen(ports, Recording())
    with pytest.raises(NoProtocol):
        await within(ws_client(port).connect(Refusing()))


# -- text messages ---------------------------------------------------------------------


class RawClient(WebSocketClientProtocol):
    """A raw Autobahn client that tells its factory how it closed."""

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.closed.callback((wasClean, code, reason))


class TextSender(RawClient):
    """Sends one text message once open."""

    def onOpen(self) -> None:
        self.sendMessage(b"hello", isBinary=False)


class Deaf(RawClient):
    """Never answers a close."""

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> bool:
        return True


async def raw_client(port: int, kind: type[RawClient]) -> Deferred[tuple[bool, int | None, str | None]]:
    """Connect a raw client; return a Deferred of its onClose arguments."""
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/", reactor=reactor)
    factory.protocol = kind
    factory.closed = Deferred()
    await within(TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory))
    closed: Deferred[tuple[bool, int | None, str | None]] = factory.closed
    return closed


@pytest_twisted.ensureDeferred
async def test_text_message_closes_the_connection(ports: list[IListeningPort], log_events: list[LogEvent]) -> None:
    factory = Recording()
    port = await listen(ports, factory)
    closed = await raw_client(port, TextSender)
    was_clean, code, _ = await within(closed)
    assert was_clean and code == 1003
    server = await within(factory.built.get())
    await within(server.lost)
    reason = server.reasons[0]
    assert reason.check(ConnectionLost) and "text message" in reason.getErrorMessage()
    assert not server.chunks
    assert "binary messages only" in log_text(log_events)
    no_traceback(log_events)


@pytest_twisted.ensureDeferred
async def test_close_handshake_times_out(ports: list[IListeningPort]) -> None:
    """A peer that never answers our close is dropped after a few seconds."""
    factory = Recording()
    port = await listen(ports, factory)
    closed = await raw_client(port, Deaf)
    server = await within(factory.built.get())
    assert server.transport is not None
    started = reactor.seconds()
    server.transport.loseConnection()
    await within(server.lost)
    assert 4 < reactor.seconds() - started < 10
    assert server.reasons[0].check(ConnectionLost)
    was_clean, _, _ = await within(closed)
    assert not was_clean


# -- wss --------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for localhost and 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest_twisted.ensureDeferred
async def test_wss_with_a_trusted_certificate(ports: list[IListeningPort], tmp_path: Path) -> None:
    (tmp_path / "trust").mkdir()
    key, cert = self_signed(tmp_path)
    (tmp_path / "trust" / "cert.pem").write_bytes(cert.read_bytes())
    server = serverFromString(reactor, f"wss:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
    factory = Recording()
    port = await listen(ports, factory, server)

    trusting = clientFromString(reactor, f"wss:host=localhost:port={port}:trustRoots={tmp_path / 'trust'}")
    assert isinstance(trusting, WebSocketClientEndpoint)
    client = await within(trusting.connect(Recording()))
    assert isinstance(client, Framed)
    their_side = await within(factory.built.get())
    client.sendString(b"secret")
    assert await within(their_side.strings.get()) == b"secret"
    their_side.sendString(b"reply")
    assert await within(client.strings.get()) == b"reply"

    # The platform's trust store does not know the certificate.
    untrusting = clientFromString(reactor, f"wss:host=localhost:port={port}")
    with pytest.raises(WebSocketHandshakeError, match="certificate verify failed"):
        await within(untrusting.connect(Recording()))


# -- endpoint strings ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_parsers_called_directly(ports: list[IListeningPort]) -> None:
    server = WebSocketServerParser().parseStreamServer(reactor, "0", interface="127.0.0.1")
    assert isinstance(server, WebSocketServerEndpoint)
    factory = Recording()
    port = await listen(ports, factory, server)
    client = WebSocketClientParser().parseStreamClient(reactor, host="127.0.0.1", port=str(port), timeout="5")
    assert isinstance(client, WebSocketClientEndpoint)
    proto = await within(client.connect(Recording()))
    assert isinstance(proto, Framed)
    proto.sendString(b"parsed")
    assert await within((await within(factory.built.get())).strings.get()) == b"parsed"


def test_parser_strings() -> None:
    """The rest of the string goes to Twisted's parsers; the URL is built."""
    server = WebSocketServerParser().parseStreamServer(reactor, "4444", interface="::1", backlog="7")
    inner: Any = server._inner  # type: ignore[attr-defined]
    assert (inner._port, inner._interface, inner._backlog) == (4444, "::1", 7)
    client: Any = WebSocketClientParser().parseStreamClient(reactor, "::1", "4444")
    assert client._url == "ws://[::1]:4444/" and client._inner._host == "::1"
    secure: Any = WebSocketClientParser(secure=True).parseStreamClient(reactor, host="example.com", port="443")
    assert secure._url == "wss://example.com:443/"
    with pytest.raises(ValueError, match="host= and port="):
        WebSocketClientParser().parseStreamClient(reactor, host="example.com")


def _plugins_found() -> bool:
    return "ws" in {parser.prefix for parser in getPlugins(IStreamServerEndpointStringParser)}


@pytest_twisted.ensureDeferred
async def test_endpoint_strings(ports: list[IListeningPort]) -> None:
    if not _plugins_found():
        pytest.skip("the twisted/plugins of the checkout are not found: pip install . or set PYTHONPATH")
    servers = {parser.prefix for parser in getPlugins(IStreamServerEndpointStringParser)}
    clients = {parser.prefix for parser in getPlugins(IStreamClientEndpointStringParserWithReactor)}
    assert {"ws", "wss"} <= servers and {"ws", "wss"} <= clients
    server = serverFromString(reactor, "ws:0:interface=127.0.0.1")
    assert isinstance(server, WebSocketServerEndpoint)
    factory = Recording()
    port = await listen(ports, factory, server)
    client = clientFromString(reactor, f"ws:host=127.0.0.1:port={port}:timeout=5")
    proto = await within(client.connect(Recording()))
    assert isinstance(proto, Framed)
    proto.sendString(b"from a string")
    assert await within((await within(factory.built.get())).strings.get()) == b"from a string"


@pytest_twisted.ensureDeferred
async def test_endpoint_strings_take_the_frame_limit(ports: list[IListeningPort]) -> None:
    """
    A node makes its ``ws:`` endpoint strings accept messages as large as its
    frames may be (and some slack), not the default size.
    """
    if not _plugins_found():
        pytest.skip("the twisted/plugins of the checkout are not found: pip install . or set PYTHONPATH")
    cap = 1024 + WEBSOCKET_SLACK
    client = client_from_string(reactor, "ws:host=127.0.0.1:port=1", 1024)
    assert isinstance(client, WebSocketClientEndpoint) and client.max_message_size == cap
    assert isinstance(server_from_string(reactor, "tcp:0", 1024), TCP4ServerEndpoint)
    server = server_from_string(reactor, "ws:0:interface=127.0.0.1", 1024)
    assert isinstance(server, WebSocketServerEndpoint) and server.max_message_size == cap
    near, far = await pair(ports, server=server)
    near.sendString(b"x" * (cap - 4))
    assert await within(far.strings.get()) == b"x" * (cap - 4)
    near.sendString(b"x" * (cap - 3))
    await within(far.lost)
    assert not far.strings.pending


# -- the mesh protocol -----------------------------------------------------------------


class Node:
    """A mesh node built by hand, as `.twisted_mesh.MeshService` builds one."""

    def __init__(self, protocol: Protocol = WS_MESH) -> None:
        # A node that only dials still names a port to dial it at: port 0 is
        # a malformed handshake.
        self.node = MeshNode(protocol, reactor, out_addr=("127.0.0.1", 9), max_outgoing=0)
        connections: set[LinkProtocol] = set()
        self.connections = connections
        batch = WriteBatch()
        self.server = LinkFactory(self.node, False, connections, batch=batch)
        self.client = LinkFactory(self.node, True, connections, batch=batch)

    async def close(self) -> None:
        links = list(self.connections)
        for link in links:
            link.close("the test is over", error=False)
        await defer.gatherResults([link.closed for link in links])


@pytest.fixture
def nodes() -> Iterator[Callable[[], Node]]:
    made: list[Node] = []

    def make() -> Node:
        made.append(Node())
        return made[-1]

    yield make
    pytest_twisted.blockon(defer.gatherResults([defer.ensureDeferred(node.close()) for node in made]))


@pytest_twisted.ensureDeferred
async def test_mesh_handshake_over_websocket(ports: list[IListeningPort], nodes: Callable[[], Node]) -> None:
    a, b = nodes(), nodes()
    port = await listen(ports, a.server)
    a.node.out_addr = ("127.0.0.1", port)
    link = await within(ws_client(port).connect(b.client))
    assert isinstance(link, LinkProtocol)
    assert await within(link.handshake_done) == a.node.id
    await wait_for(lambda: b.node.id in a.node.routing_table)
    b.node.send(("over ws", b"\x00\xff"), flags.broadcast, flags.broadcast)
    msg = await within(a.node.next_message())
    assert msg.packets == (flags.broadcast, "over ws", b"\x00\xff") and msg.sender == b.node.id


@pytest_twisted.ensureDeferred
async def test_js2p_dials_our_ws_listener(
    reference: Reference, ports: list[IListeningPort], nodes: Callable[[], Node]
) -> None:
    ref = await reference("js2p", encryption="ws")
    ours = nodes()
    port = await listen(ports, ours.server)
    ours.node.out_addr = ("127.0.0.1", port)
    assert await ref.connect("127.0.0.1", port)
    await wait_for(lambda: ref.id in ours.node.routing_table, what="js2p in our routing table")
    assert ours.node.id in await ref.wait_for_peers(1)
    await ref.send("from js2p", b"\x01")
    msg = await within(ours.node.next_message())
    assert msg.packets == (flags.broadcast, "from js2p", b"\x01") and msg.sender == ref.id
    ours.node.send(("from twisted", b"\x02"), flags.broadcast, flags.broadcast)
    theirs = await ref.next_message()
    assert theirs["packets"] == [flags.broadcast, "from twisted", b"\x02"] and theirs["sender"] == ours.node.id


@pytest_twisted.ensureDeferred
async def test_we_dial_js2p_ws_listener(reference: Reference, nodes: Callable[[], Node]) -> None:
    ref = await reference("js2p", encryption="ws")
    ours = nodes()
    link = await within(ws_client(ref.port).connect(ours.client))
    assert isinstance(link, LinkProtocol)
    assert await within(link.handshake_done) == ref.id
    assert ours.node.id in await ref.wait_for_peers(1)
    await ref.send("hello over ws")
    msg = await within(ours.node.next_message())
    assert msg.packets == (flags.broadcast, "hello over ws") and msg.sender == ref.id


@pytest_twisted.ensureDeferred
async def test_what_a_node_sends_as_its_peer_closes_goes_out_before_its_close() -> None:
    """
    A node sends a message in the turn it reads its peer's close (the peer
    closes to read on, as it closes a second connection to a node): the
    message goes out before the node answers the close, and the peer's node
    gets it.
    """
    a = MeshService(WS_MESH, listen=[("127.0.0.1", 0)])
    b = MeshService(WS_MESH, listen=[("127.0.0.1", 0)])
    a.startService()
    b.startService()
    try:
        await within(a.listening)
        (port,) = await within(b.listening)
        await within(a.connect(("127.0.0.1", port.getHost().port), encryption="ws"))
        await wait_for(lambda: a.id in b.routing_table, what="the link at b")
        a_to_b, b_to_a = a.routing_table[b.id], b.routing_table[a.id]
        a_to_b.pause_reading()  # a reads b's close once it reads again
        b_to_a.close("a second connection", error=False, read_on=True)
        await task.deferLater(reactor, 0.5, lambda: None)  # b's close is there to read
        # In one turn: a's user sends, and a reads again, b's close first.
        assert a.send("sent as b closes")
        a_to_b.resume_reading()
        message = await within(b.next_message(), 10)
        assert message.packets == (flags.broadcast, "sent as b closes")
    finally:
        await defer.gatherResults([a.stopService(), b.stopService()])
