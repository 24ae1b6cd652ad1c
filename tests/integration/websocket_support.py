"""
What the WebSocket tests share: a framed test protocol, listening on and
dialling WebSocket endpoints on loopback, with the ``ports`` fixture of ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from struct import pack
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamClientEndpoint, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import LogEvent
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from tests.reference import ReferenceNode
from tests.support import log_text, within
from twisted_mesh import Network
from twisted_mesh.websocket import WebSocketClientEndpoint, WebSocketServerEndpoint

Reference = Callable[..., Awaitable[ReferenceNode]]
WS_MESH = Network("mesh", "ws")


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
