"""
A link (`.LinkProtocol`) driven through a `.StringTransport` and a fake
clock, and the frames its peer would send: what the tests of the link
share.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from hashlib import sha256
from typing import Any

from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tests.support import MESH
from twisted_mesh import _compression, flags
from twisted_mesh._core.node import MeshNode
from twisted_mesh._frames import MAX_FRAME_SIZE, FrameReader, WireMessage
from twisted_mesh._ids import new_node_id
from twisted_mesh._link import LinkFactory, LinkProtocol, WriteBatch
from twisted_mesh.limits import Limits
from twisted_mesh.message import Message

OUT_ADDR = ("127.0.0.1", 4444)
PEER_ADDR = ("10.0.0.2", 5555)
SUPPORTED = _compression.SUPPORTED

#: Where the sender's msgpack tag sits in an uncompressed body: after the
#: 32-byte checksum, the array's lead byte and the one-byte message type.
SENDER_TAG_AT = 32 + 2
BIN8, STR8 = 0xC4, 0xD9


class Rig:
    """A node, its factories and a clock: links to it are StringTransports."""

    def __init__(self, node_id: str | None = None) -> None:
        self.clock = task.Clock()
        self.node = MeshNode(MESH, self.clock, out_addr=OUT_ADDR, node_id=node_id)
        self.connections: set[LinkProtocol] = set()
        self.batch = WriteBatch(self.clock)
        self.delivered: list[tuple[Message, Any]] = []
        self.node.register_handler(lambda msg, link: self.delivered.append((msg, link)))

    def link(self, *, outgoing: bool = False, max_frame_size: int = MAX_FRAME_SIZE) -> Side:
        """Open a new connection to the node."""
        self.node.limits = Limits(max_frame_size=max_frame_size)
        factory = LinkFactory(self.node, outgoing, self.connections, batch=self.batch)
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        self.clock.advance(0)  # the end of the reactor's turn: what the link sent is written
        return Side(proto, transport, self.clock)


class Side:
    """The far end of one link: feeds frames in and reads what was written."""

    def __init__(self, proto: LinkProtocol, transport: StringTransport, clock: task.Clock) -> None:
        self.proto = proto
        self.transport = transport
        self.clock = clock
        self.results: list[Any] = []
        proto.handshake_done.addBoth(self.results.append)

    def clear(self) -> None:
        """Forget what was written so far."""
        self.clock.advance(0)
        self.transport.clear()

    def bodies(self) -> list[bytes]:
        """The frame bodies written since the last call (raw, as sent)."""
        self.clock.advance(0)  # the end of the reactor's turn, when what was sent is written
        data = self.transport.value()
        self.transport.clear()
        reader = FrameReader()
        bodies = reader.feed(data)
        assert reader.buffered == 0, "a partial frame was written"
        return bodies

    def messages(self, codes: tuple[int, ...] = SUPPORTED) -> list[WireMessage]:
        """The messages written since the last call, decoded."""
        return [WireMessage.from_body(body, codes) for body in self.bodies()]

    def feed(self, msg: WireMessage, *, as_bin: bool = True, code: int | None = None) -> None:
        """Deliver ``msg`` to the link as one frame."""
        self.proto.dataReceived(msg.frame(as_bin, code))

    @property
    def closed(self) -> bool:
        """Whether the link asked its transport to close."""
        return bool(self.transport.disconnecting)

    def failure(self) -> Failure:
        """The handshake's failure."""
        assert len(self.results) == 1 and isinstance(self.results[0], Failure), self.results
        failure: Failure = self.results[0]
        return failure


def wire(node_id: str, as_bin: bool) -> str | bytes:
    """An ID in the given form."""
    return node_id.encode("ascii") if as_bin else node_id


def handshake(
    peer_id: str,
    *,
    as_bin: bool = True,
    protocol_id: str = MESH.id,
    address: Any = PEER_ADDR,
    codes: Any = SUPPORTED,
) -> WireMessage:
    """A peer's handshake, its IDs in the given form."""
    payload = (
        flags.handshake,
        wire(peer_id, as_bin),
        wire(protocol_id, as_bin),
        list(address) if isinstance(address, tuple) else address,
        list(codes) if isinstance(codes, tuple) else codes,
    )
    return WireMessage.create(flags.whisper, peer_id, 0, payload, as_bin)


def message(sender: str, msg_type: int, *payload: Any, as_bin: bool = True) -> WireMessage:
    """A message from ``sender``."""
    return WireMessage.create(msg_type, sender, 0, payload, as_bin)


def renegotiate(sender: str, *payload: Any, as_bin: bool = True) -> WireMessage:
    """A renegotiate message from ``sender``."""
    return message(sender, flags.renegotiate, *payload, as_bin=as_bin)


def large(sender: str) -> WireMessage:
    """A broadcast whose body is well over MIN_COMPRESSED_SIZE."""
    msg = message(sender, flags.broadcast, flags.broadcast, "x" * 2000)
    assert len(msg.body_in(True)) >= _compression.MIN_COMPRESSED_SIZE
    return msg


def is_raw(body: bytes) -> bool:
    """Whether ``body`` is an uncompressed checksum + serial."""
    return sha256(body[32:]).digest() == body[:32]


def decompress(code: int, body: bytes) -> bytes:
    """Inflate ``body`` with the method ``code``, by the standard libraries."""
    if code == flags.zlib:
        return zlib.decompress(body)
    if code == flags.gzip:
        return gzip.decompress(body)
    if code == flags.bz2:
        return bz2.decompress(body)
    if code == flags.lzma:
        return lzma.decompress(body)
    if code == flags.snappy:
        import snappy

        return bytes(snappy.uncompress(body))
    raise AssertionError(f"unknown code {code}")


def assert_compressed_with(body: bytes, code: int | None, msg: WireMessage) -> None:
    """``body`` is ``msg`` (bin form) compressed with ``code``, or raw for None."""
    if code is None:
        assert body == msg.body_in(True)
        return
    assert not is_raw(body)
    assert decompress(code, body) == msg.body_in(True)


def connected(rig: Rig | None = None, *, as_bin: bool = True, codes: Any = SUPPORTED, outgoing: bool = False) -> Side:
    """A link whose peer's handshake was accepted; what it wrote is cleared."""
    rig = rig or Rig()
    side = rig.link(outgoing=outgoing)
    peer_id = new_node_id(MESH)
    side.feed(handshake(peer_id, as_bin=as_bin, codes=codes), as_bin=as_bin)
    assert side.proto.peer_id == peer_id
    side.clear()
    return side


def watched_by(reactor: Any) -> list[object]:
    """What ``reactor`` is asked to watch for writing (`addWriter`), from now on."""
    watched: list[object] = []
    add_writer = reactor.addWriter

    def watch(writer: object) -> None:
        watched.append(writer)
        add_writer(writer)

    reactor.addWriter = watch
    return watched
