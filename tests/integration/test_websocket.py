"""
Stream endpoints over WebSocket (`.twisted_mesh.websocket`), over real
loopback sockets: framing across messages, and closes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IListeningPort
from twisted.logger import LogEvent

from tests.integration.websocket_support import Framed, Recording, frame, listen, no_traceback, pair, settle, ws_client
from tests.support import wait_for, within
from twisted_mesh.websocket import (
    OpeningFactory,
    WebSocketClientEndpoint,
    WebSocketHandshakeError,
    WebSocketServerEndpoint,
)

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
