"""
Helpers shared by the tests: waiting for conditions, capturing logs, and a
raw peer that speaks frames by hand.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import LogEvent, formatEvent

from twisted_mesh import flags
from twisted_mesh._frames import FrameReader, WireMessage
from twisted_mesh._ids import Protocol as MeshProtocolId
from twisted_mesh._ids import new_node_id

#: The plaintext network most tests run on.
MESH = MeshProtocolId("mesh", "Plaintext")

T = TypeVar("T")


async def wait_for(condition: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    """
    Poll ``condition`` until it is true; fail after ``timeout`` seconds.
    """
    from twisted.internet import reactor

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        await task.deferLater(reactor, 0.01)


def within(d: Deferred[T], seconds: float = 30.0) -> Deferred[T]:
    """``d``, failed with a timeout when it has not fired after ``seconds``."""
    from twisted.internet import reactor

    return d.addTimeout(seconds, reactor)


def log_text(events: list[LogEvent]) -> str:
    """All captured log events, formatted, one per line."""
    return "\n".join(formatEvent(event) for event in events)


class RawPeer(Protocol):
    """
    A peer written by hand for tests: it sends the frames it is told to and
    keeps every message it receives, with no relay or rules of its own.
    """

    def __init__(self, protocol: MeshProtocolId, *, ids_as_bin: bool = True, node_id: str | None = None) -> None:
        self.protocol_id = protocol.id
        self.id = node_id or new_node_id(protocol)
        self.ids_as_bin = ids_as_bin
        self.received: list[WireMessage] = []
        self.lost: Deferred[None] = Deferred()
        self._reader = FrameReader()

    def connectionMade(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        for body in self._reader.feed(data):
            self.received.append(WireMessage.from_body(body, ()))

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)

    def wire_id(self, node_id: str) -> str | bytes:
        """An ID in this peer's form."""
        return node_id.encode() if self.ids_as_bin else node_id

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are."""
        assert self.transport is not None
        self.transport.write(data)

    def send(self, msg_type: int, *payload: Any, sender: str | None = None, time: int | None = None) -> WireMessage:
        """Write a message with this peer (or ``sender``) as its sender."""
        msg = WireMessage.create(
            msg_type, sender or self.id, int(_now()) if time is None else time, payload, self.ids_as_bin
        )
        self.send_raw(msg.frame(self.ids_as_bin, None))
        return msg

    def handshake(self, port: int = 1, protocol_id: str | None = None) -> None:
        """Send this peer's handshake."""
        self.send(
            flags.whisper,
            flags.handshake,
            self.wire_id(self.id),
            self.wire_id(protocol_id or self.protocol_id),
            ["127.0.0.1", port],
            [],
        )

    def user_messages(self) -> list[WireMessage]:
        """The received broadcasts and whispers meant for a user."""
        return [
            msg
            for msg in self.received
            if msg.msg_type in (flags.broadcast, flags.whisper) and msg.payload[0] in (flags.broadcast, flags.whisper)
        ]


def _now() -> float:
    return time.time()


async def raw_peer(port: int, protocol: MeshProtocolId, **kwargs: Any) -> RawPeer:
    """Connect a `.RawPeer` to a node listening on ``port`` of loopback."""
    from twisted.internet import reactor

    peer = RawPeer(protocol, **kwargs)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer)
    return peer


class GoneLink:
    """
    A peer's link for a node's routing table, with no connection behind it:
    it writes nothing, and only has to enter the table and leave it.
    """

    closing = False

    def __init__(self, peer_id: str, peer_addr: tuple[str, int], encryption: str = "Plaintext") -> None:
        self.peer_id = peer_id
        self.peer_addr = peer_addr
        self.outgoing = True
        self.ids_as_bin = True
        self.encryption = encryption

    def dialler_port(self) -> None:
        return None

    def send(self, msg: object) -> None:
        return None

    def close(self, reason: str, *, error: bool = True, read_on: bool = False) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connected_components(tables: dict[str, set[str]]) -> list[set[str]]:
    """
    The groups of nodes that reach each other, from each node's routing
    table (by node ID): a link counts when either end lists it.
    """
    edges: dict[str, set[str]] = {node_id: set() for node_id in tables}
    for node_id, peers in tables.items():
        for peer in peers & edges.keys():
            edges[node_id].add(peer)
            edges[peer].add(node_id)
    left, parts = set(edges), []
    while left:
        todo, part = [left.pop()], set()
        while todo:
            node_id = todo.pop()
            part.add(node_id)
            todo.extend(edges[node_id] & left)
            left -= edges[node_id]
        parts.append(part)
    return parts


class RawWebSocket(Protocol):
    """
    A WebSocket client written by hand: it asks to upgrade when told to
    (`.upgrade`), keeps what it receives, and never answers a close.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[None] = Deferred()

    def upgrade(self) -> None:
        """Send the opening handshake."""
        assert self.transport is not None
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)
