"""
Writes that leave at once (`.write_now`) on the reactor's own TCP
connections over loopback, to a peer that keeps pausing its reads: the
socket often takes only part of a write, and every byte still arrives, in
order.
"""

from __future__ import annotations

import socket
import struct

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol

from tests.support import wait_for, within
from twisted_mesh._link.tcp import write_now

#: How many numbered chunks the sender writes, three a turn, and their size.
CHUNKS = 300
CHUNK_SIZE = 3000
#: The small socket buffers of both ends, so that sends stop short.
SOCKET_BUFFER = 8192


def chunk(number: int) -> bytes:
    """Chunk ``number``: its number over and over."""
    return struct.pack(">I", number) * (CHUNK_SIZE // 4)


class NumberedSender(Protocol):
    """Writes the chunks with `.write_now`, three in each turn of the reactor."""

    def __init__(self) -> None:
        self.written = 0
        self.held = False
        # How many writes left bytes in the connection (the socket took part).
        self.held_after = 0

    def connectionMade(self) -> None:
        self.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)  # type: ignore[union-attr]
        self._turn()

    def _turn(self) -> None:
        for _ in range(3):
            if self.written == CHUNKS:
                return
            self.held = write_now(self.transport, self.transport, chunk(self.written), held=self.held)  # type: ignore[arg-type]
            self.held_after += self.held
            self.written += 1
        reactor.callLater(0, self._turn)  # type: ignore[attr-defined]


class PausingReceiver(Protocol):
    """Reads the chunks, checking their order, and keeps pausing its reads for a moment."""

    def __init__(self) -> None:
        self.read = 0
        self.disorder: str | None = None
        self._buffer = b""
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)  # type: ignore[union-attr]
        self._pause()

    def _pause(self) -> None:
        if self.done.called:
            return
        self.transport.pauseProducing()  # type: ignore[union-attr]
        reactor.callLater(0.002, self.transport.resumeProducing)  # type: ignore[attr-defined,union-attr]
        reactor.callLater(0.004, self._pause)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= CHUNK_SIZE and not self.done.called:
            got, self._buffer = self._buffer[:CHUNK_SIZE], self._buffer[CHUNK_SIZE:]
            if got != chunk(self.read):
                self.disorder = f"chunk {self.read} is not the next one written"
                self.done.callback(None)
                return
            self.read += 1
            if self.read == CHUNKS:
                self.done.callback(None)


@pytest_twisted.ensureDeferred
async def test_every_byte_arrives_in_order_when_sends_stop_short() -> None:
    senders: list[NumberedSender] = []

    def sender() -> NumberedSender:
        senders.append(NumberedSender())
        return senders[-1]

    port = reactor.listenTCP(0, Factory.forProtocol(sender), interface="127.0.0.1")  # type: ignore[attr-defined]
    try:
        receiver = PausingReceiver()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), receiver)
        await within(receiver.done, 120)
        assert receiver.disorder is None and receiver.read == CHUNKS
        await wait_for(lambda: senders and senders[0].written == CHUNKS, what="the last chunk written")
        # (Not in vain: the socket took part of some writes, and later ones waited behind them.)
        assert senders[0].held_after > 0
        receiver.transport.loseConnection()  # type: ignore[union-attr]
    finally:
        await port.stopListening()
