"""
Stream endpoints over WebSocket (`.twisted_mesh.websocket`), over real
loopback sockets: refused and failed connections, plain HTTP, and text
messages.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionLost, ConnectionRefusedError, NoProtocol
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import LogEvent
from twisted.web.client import Agent
from twisted.web.pages import notFound
from twisted.web.server import Site

from tests.integration.websocket_support import Recording, Silent, listen, no_traceback, settle, ws_client
from tests.support import log_text, within
from twisted_mesh.websocket import WebSocketHandshakeError

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
