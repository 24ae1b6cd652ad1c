"""
`.LinkProtocol`, one link, driven through a `.StringTransport` and a fake
clock: framing, the handshake, the peer's ID form, compression and
renegotiation, byte for byte.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from hashlib import sha256
from typing import Any

import msgpack
import pytest
from twisted.internet import task
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure

from tests.support import MESH
from twisted_mesh import _compression, flags
from twisted_mesh._frames import MAX_FRAME_SIZE, FrameReader, WireMessage
from twisted_mesh._ids import Protocol, new_node_id
from twisted_mesh._link import LinkFactory, LinkProtocol, WriteBatch
from twisted_mesh._link.protocol import FIRST_WORD_WAIT, MAX_BAD_FRAMES, MAX_UNIDENTIFIED_BUFFER
from twisted_mesh._link.writer import MAX_GATHERED
from twisted_mesh._node import MeshNode
from twisted_mesh.errors import HandshakeFailed, ProtocolMismatch, SelfConnection
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
        self.batch = WriteBatch()
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


# -- the handshake we send ---------------------------------------------------


def our_handshake(body: bytes, node_id: str, as_bin: bool) -> None:
    """``body`` is a node's handshake, uncompressed, its IDs in the given form."""
    assert is_raw(body)
    fields = msgpack.unpackb(body[32:], raw=False)
    assert fields[:2] == [flags.whisper, wire(node_id, as_bin)]
    assert type(fields[2]) is int
    ids = wire(node_id, as_bin), wire(MESH.id, as_bin)
    assert fields[3:] == [flags.handshake, *ids, list(OUT_ADDR), list(SUPPORTED)]
    assert body[SENDER_TAG_AT] == (BIN8 if as_bin else STR8)


def test_dialled_connection_waits_for_the_first_word() -> None:
    """
    On a connection it dialled, the node first writes a renegotiation (which
    a twisted_mesh node answers), and its handshake only once the node
    dialled said something.
    """
    rig = Rig()
    side = rig.link(outgoing=True)
    (word,) = side.messages()
    assert word.msg_type == flags.renegotiate and word.payload == (flags.compression, list(SUPPORTED))
    assert word.sender_is_bin and side.proto in rig.connections
    assert not side.closed and side.results == []


@pytest.mark.parametrize("as_bin", [True, False])
def test_dialled_connection_answers_the_handshake_in_its_form(as_bin: bool) -> None:
    """The node dialled sent its handshake at once (py2p, js2p): ours answers it, once, in its form."""
    rig = Rig()
    side = rig.link(outgoing=True)
    side.clear()
    peer_id = new_node_id(MESH)
    side.feed(handshake(peer_id, as_bin=as_bin), as_bin=as_bin)
    ours, peers = side.bodies()
    our_handshake(ours, rig.node.id, as_bin)
    assert WireMessage.from_body(peers, SUPPORTED).payload[0] == flags.peers
    assert side.results == [peer_id]
    rig.clock.advance(FIRST_WORD_WAIT)
    assert side.bodies() == []


@pytest.mark.parametrize("as_bin", [True, False])
def test_dialled_twisted_mesh_node_answers_the_first_word(as_bin: bool) -> None:
    """A twisted_mesh node dialled answers the renegotiation with its own: our handshake follows, in its form."""
    rig = Rig()
    side = rig.link(outgoing=True)
    side.clear()
    peer_id = new_node_id(MESH)
    side.feed(renegotiate(peer_id, flags.compression, list(SUPPORTED), as_bin=as_bin), as_bin=as_bin)
    (ours,) = side.bodies()
    our_handshake(ours, rig.node.id, as_bin)
    side.feed(handshake(peer_id, as_bin=as_bin), as_bin=as_bin)
    assert side.results == [peer_id]
    assert [WireMessage.from_body(body, SUPPORTED).payload[0] for body in side.bodies()] == [flags.peers]


@pytest.mark.parametrize(("encryption", "as_bin"), [("Plaintext", True), ("SSL", True), ("ws", False), ("wss", False)])
def test_dialled_node_that_says_nothing_gets_our_handshake_first(encryption: str, as_bin: bool) -> None:
    """
    After FIRST_WORD_WAIT of silence, the handshake goes out all the same: in
    bin (py2p reads nothing else), or over WebSocket in str (js2p's listener
    speaks only once it has the dialler's handshake).
    """
    rig = Rig()
    factory = LinkFactory(rig.node, True, rig.connections, encryption, batch=rig.batch)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    side = Side(proto, transport, rig.clock)
    side.clear()
    rig.clock.advance(FIRST_WORD_WAIT - 0.1)
    assert side.bodies() == []
    rig.clock.advance(0.1)
    (ours,) = side.bodies()
    assert is_raw(ours) and ours[SENDER_TAG_AT] == (BIN8 if as_bin else STR8)


def test_accepted_connection_answers_the_first_word_once() -> None:
    """A twisted_mesh node that dialled says a renegotiation first: it is answered with one, once."""
    rig = Rig()
    side = rig.link()
    peer_id = new_node_id(MESH)
    for _ in range(2):
        side.feed(renegotiate(peer_id, flags.compression, [flags.zlib]))
    (word,) = side.messages()
    assert word.msg_type == flags.renegotiate and word.payload == (flags.compression, list(SUPPORTED))
    assert side.proto.peer_codes == (flags.zlib,)
    side.feed(handshake(peer_id))
    ours, peers = side.bodies()
    our_handshake(ours, rig.node.id, True)
    assert WireMessage.from_body(peers, SUPPORTED).payload[0] == flags.peers
    assert rig.node.routing_table == {peer_id: side.proto}


@pytest.mark.parametrize("as_bin", [True, False])
def test_accepted_connection_answers_in_the_peers_form(as_bin: bool) -> None:
    """On a connection it accepted, the node waits for the peer's handshake and answers once, in its form."""
    rig = Rig()
    side = rig.link()
    assert side.bodies() == []
    peer_id = new_node_id(MESH)
    side.feed(handshake(peer_id, as_bin=as_bin), as_bin=as_bin)
    ours, peers = side.messages()
    ids = wire(rig.node.id, as_bin), wire(MESH.id, as_bin)
    assert ours.payload == (flags.handshake, *ids, list(OUT_ADDR), list(SUPPORTED))
    assert ours.sender_is_bin is as_bin and peers.sender_is_bin is as_bin
    assert peers.payload[0] == flags.peers
    assert side.proto.ids_as_bin is as_bin and side.results == [peer_id]


# -- the peer's handshake ----------------------------------------------------


def test_bin_handshake_py2p_style() -> None:
    """A bin handshake: routing table, handshake_done, our handshake and peers in bin, no second handshake."""
    rig = Rig()
    side = rig.link(outgoing=True)
    side.clear()
    peer_id = new_node_id(MESH)
    side.feed(handshake(peer_id, codes=[flags.zlib, flags.gzip]))
    assert rig.node.routing_table == {peer_id: side.proto}
    assert side.results == [peer_id]
    assert side.proto.peer_addr == PEER_ADDR
    assert side.proto.peer_codes == (flags.zlib, flags.gzip)
    assert side.proto.ids_as_bin
    ours, *bodies = side.bodies()
    our_handshake(ours, rig.node.id, True)
    assert len(bodies) == 1
    (peers,) = [WireMessage.from_body(body, SUPPORTED) for body in bodies]
    assert peers.msg_type == flags.whisper
    assert peers.payload == (flags.peers, [])
    assert peers.sender == rig.node.id and peers.sender_is_bin
    assert bodies[0][SENDER_TAG_AT] == BIN8
    assert not side.closed


def test_str_handshake_js2p_style() -> None:
    """A dialled node's str handshake: our handshake again with str IDs, then everything in str form."""
    rig = Rig()
    # (No zlib: the tag bytes of what is written are read as they are, and a
    # raw body that js2p's zlib would misread goes out compressed.)
    bin_side = connected(rig, codes=[flags.gzip])
    side = rig.link(outgoing=True)
    side.clear()
    peer_id = new_node_id(MESH)
    side.feed(handshake(peer_id, as_bin=False, codes=[flags.gzip]), as_bin=False)
    assert side.results == [peer_id]
    assert not side.proto.ids_as_bin
    assert rig.node.routing_table[peer_id] is side.proto
    bodies = side.bodies()
    second, peers = (WireMessage.from_body(body, SUPPORTED) for body in bodies)
    assert second.payload == (flags.handshake, rig.node.id, MESH.id, list(OUT_ADDR), list(SUPPORTED))
    assert not second.sender_is_bin
    assert peers.payload[0] == flags.peers
    # The bin peer is listed, its ID in this peer's (str) form.
    assert peers.payload[1] == [[list(PEER_ADDR), bin_side.proto.peer_id]]
    assert all(body[SENDER_TAG_AT] == STR8 for body in bodies)

    # A message of the node's own goes out in each peer's form.
    bin_side.clear()
    rig.node.send(("hello",))
    (to_str,) = side.bodies()
    (to_bin,) = bin_side.bodies()
    assert to_str[SENDER_TAG_AT] == STR8
    assert to_bin[SENDER_TAG_AT] == BIN8
    assert to_str[32:].replace(bytes([STR8]), bytes([BIN8]), 1) == to_bin[32:]

    # A relayed one too, whatever form it arrived in.
    assert bin_side.proto.peer_id is not None
    relayed = message(bin_side.proto.peer_id, flags.broadcast, flags.broadcast, "relay me")
    bin_side.feed(relayed)
    (to_str,) = side.bodies()
    assert to_str[SENDER_TAG_AT] == STR8
    assert WireMessage.from_body(to_str, SUPPORTED).key == relayed.key
    assert bin_side.bodies() == []

    # Answers to the str peer (renegotiation) are in str form as well.
    side.feed(renegotiate(peer_id, flags.compression, [flags.bz2], as_bin=False), as_bin=False)
    (answer,) = side.bodies()
    assert answer[SENDER_TAG_AT] == STR8


def test_a_js2p_whisper_written_twice_is_delivered_once() -> None:
    """
    A dialled js2p node that spoke after us holds the connection under both
    forms of our ID, and writes each whisper it sends to all its peers twice:
    the second copy is dropped, and the same whisper sent again is delivered
    again.
    """
    rig = Rig()
    side = rig.link(outgoing=True)
    rig.clock.advance(FIRST_WORD_WAIT)  # a js2p node slow to speak: ours goes first, in bin
    peer_id = new_node_id(MESH)
    side.feed(handshake(peer_id, as_bin=False), as_bin=False)
    assert side.proto.peer_id == peer_id and not side.proto.ids_as_bin
    hello = message(peer_id, flags.whisper, flags.whisper, "hello")
    later = message(peer_id, flags.whisper, flags.whisper, "later")
    for msg in (hello, hello, hello, hello, later, later):
        side.feed(msg, as_bin=False)
    assert [m.packets for m in rig.node.recv(10)] == [(flags.whisper, "hello")] * 2 + [(flags.whisper, "later")]  # type: ignore[union-attr]


def test_whispers_written_twice_by_other_peers_are_delivered_twice() -> None:
    """Only a node that was told our ID twice writes whispers twice: from others, each copy is a message."""
    rig = Rig()
    side = connected(rig, as_bin=False)
    peer_id = side.proto.peer_id
    assert peer_id is not None
    hello = message(peer_id, flags.whisper, flags.whisper, "hello")
    side.feed(hello, as_bin=False)
    side.feed(hello, as_bin=False)
    assert len(rig.node.recv(10)) == 2  # type: ignore[arg-type]


def test_protocol_mismatch_closes() -> None:
    """Another protocol ID: closed, ProtocolMismatch, not in the routing table."""
    rig = Rig()
    side = rig.link(outgoing=True)
    side.clear()
    other = Protocol("other", "Plaintext").id
    side.feed(handshake(new_node_id(MESH), protocol_id=other))
    assert side.closed
    error = side.failure().value
    assert isinstance(error, ProtocolMismatch)
    assert (error.ours, error.theirs) == (MESH.id, other)
    assert rig.node.routing_table == {}
    (ours,) = side.bodies()  # the peer hears which network this is
    our_handshake(ours, rig.node.id, True)


def test_protocol_mismatch_other_transport_str_form() -> None:
    """The same subnet over another transport is another network too."""
    rig = Rig()
    side = rig.link(outgoing=True)
    side.feed(handshake(new_node_id(MESH), as_bin=False, protocol_id=Protocol("mesh", "SSL").id), as_bin=False)
    assert side.closed
    assert side.failure().check(ProtocolMismatch)
    assert rig.node.routing_table == {}


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param((flags.handshake, b"PEER", MESH.id.encode(), list(PEER_ADDR)), id="too-short"),
        pytest.param((flags.handshake, b"PEER", MESH.id.encode(), list(PEER_ADDR), [], 1), id="too-long"),
        pytest.param((flags.handshake, b"PEER", MESH.id.encode(), "10.0.0.2:5555", []), id="address-str"),
        pytest.param((flags.handshake, b"PEER", MESH.id.encode(), ["10.0.0.2"], []), id="address-short"),
        pytest.param((flags.handshake, b"PEER", MESH.id.encode(), ["10.0.0.2", -1], []), id="port-negative"),
        pytest.param((flags.handshake, b"PEER", MESH.id.encode(), ["10.0.0.2", 65536], []), id="port-65536"),
        pytest.param((flags.handshake, b"PEER", MESH.id.encode(), ["10.0.0.2", "5555"], []), id="port-str"),
        pytest.param((flags.handshake, b"PEER", MESH.id.encode(), ["", 5555], []), id="host-empty"),
        pytest.param((flags.handshake, b"PEER", MESH.id.encode(), list(PEER_ADDR), ["zlib"]), id="codes-str"),
        pytest.param((flags.handshake, b"PEER", MESH.id.encode(), list(PEER_ADDR), [19, 1.5]), id="codes-float"),
        pytest.param((flags.handshake, b"PEER", MESH.id.encode(), list(PEER_ADDR), [True]), id="codes-bool"),
        pytest.param((flags.handshake, b"PEER", MESH.id.encode(), list(PEER_ADDR), 19), id="codes-not-list"),
        pytest.param((flags.handshake, b"", MESH.id.encode(), list(PEER_ADDR), []), id="id-empty"),
        pytest.param((flags.handshake, "", MESH.id, list(PEER_ADDR), []), id="id-empty-str"),
        pytest.param((flags.handshake, b"P\xc3\xa9ER", MESH.id.encode(), list(PEER_ADDR), []), id="id-non-ascii"),
        pytest.param((flags.handshake, "PéER", MESH.id, list(PEER_ADDR), []), id="id-non-ascii-str"),
        pytest.param((flags.handshake, 12345, MESH.id.encode(), list(PEER_ADDR), []), id="id-int"),
        pytest.param((flags.handshake, b"PEER", None, list(PEER_ADDR), []), id="protocol-none"),
    ],
)
def test_malformed_handshake(payload: tuple[Any, ...]) -> None:
    """A malformed handshake: closed, HandshakeFailed, the node untouched."""
    rig = Rig()
    side = rig.link(outgoing=True)
    side.clear()
    side.feed(WireMessage.create(flags.whisper, "PEER", 0, payload))
    assert side.closed
    failure = side.failure()
    assert failure.check(HandshakeFailed) and not failure.check(SelfConnection)
    assert side.proto.peer_id is None
    assert rig.node.routing_table == {}
    assert rig.delivered == [] and not rig.node.queue
    assert side.bodies() == []


def test_handshake_with_port_0_is_a_peer_that_cannot_be_dialled() -> None:
    """Port 0 (a browser node): accepted, with no address to pass on."""
    rig = Rig()
    side = rig.link(outgoing=False)
    peer_id = new_node_id(MESH)
    payload = (flags.handshake, peer_id.encode(), MESH.id.encode(), ["", 0], [])
    side.feed(WireMessage.create(flags.whisper, peer_id, 0, payload))
    assert not side.closed
    assert rig.node.routing_table[peer_id] is side.proto
    assert side.proto.peer_addr is None


def test_frame_before_handshake_closes() -> None:
    """A user message before the handshake: closed, nothing delivered."""
    rig = Rig()
    side = rig.link(outgoing=True)
    side.feed(message(new_node_id(MESH), flags.broadcast, flags.broadcast, "too early"))
    assert side.closed
    assert rig.delivered == [] and not rig.node.queue
    assert rig.node.routing_table == {}
    side.proto.connectionLost(Failure(Exception("gone")))
    assert side.failure().check(HandshakeFailed)


def test_handshake_in_one_byte_chunks() -> None:
    """The handshake split into 1-byte writes still works."""
    rig = Rig()
    side = rig.link()
    peer_id = new_node_id(MESH)
    frame = handshake(peer_id).frame(True, None)
    for i in range(len(frame) - 1):
        side.proto.dataReceived(frame[i : i + 1])
    assert rig.node.routing_table == {}
    side.proto.dataReceived(frame[-1:])
    assert rig.node.routing_table == {peer_id: side.proto}
    assert not side.closed


def test_handshake_and_message_in_one_write() -> None:
    """A handshake and a broadcast in one chunk are both read, in order."""
    rig = Rig()
    side = rig.link()
    peer_id = new_node_id(MESH)
    msg = message(peer_id, flags.broadcast, flags.broadcast, "hi")
    side.proto.dataReceived(handshake(peer_id).frame(True, None) + msg.frame(True, None))
    assert [m.packets for m, _ in rig.delivered] == [(flags.broadcast, "hi")]
    assert rig.node.recv().sender == peer_id  # type: ignore[union-attr]


# -- size limits and bad frames ----------------------------------------------


def test_oversized_frame_closes_at_its_header() -> None:
    """A header announcing more than max_frame_size closes at once."""
    rig = Rig()
    side = rig.link(max_frame_size=1024)
    side.proto.dataReceived((1025).to_bytes(4, "big"))
    assert side.closed


def test_frame_at_the_limit_is_awaited() -> None:
    """A header announcing exactly max_frame_size waits for its body."""
    rig = Rig()
    side = rig.link(max_frame_size=1024)
    side.proto.dataReceived((1024).to_bytes(4, "big") + b"\0" * 100)
    assert not side.closed


def test_body_inflating_past_the_limit_closes() -> None:
    """A small compressed body that inflates past max_frame_size closes the link."""
    rig = Rig()
    side = rig.link(max_frame_size=4096)
    peer_id = new_node_id(MESH)
    side.feed(handshake(peer_id, codes=[flags.zlib]))
    big = message(peer_id, flags.broadcast, flags.broadcast, "x" * 100_000)
    body = zlib.compress(big.body_in(True))
    assert len(body) < 4096
    side.proto.dataReceived(len(body).to_bytes(4, "big") + body)
    assert side.closed
    assert rig.delivered == []


def corrupt(msg: WireMessage) -> bytes:
    """``msg``'s frame with its last byte changed: the checksum fails."""
    frame = bytearray(msg.frame(True, None))
    frame[-1] ^= 0x01
    return bytes(frame)


def test_bad_checksums_are_told_and_renegotiated_once() -> None:
    """
    Bad frames between good ones (which keep the link open): the warning and
    [compression, []] come once, a [resend] for each.
    """
    rig = Rig()
    side = connected(rig)
    peer_id = side.proto.peer_id
    assert peer_id is not None
    events: list[Any] = []
    side.proto._log = Logger(observer=events.append)  # type: ignore[arg-type]
    for n in range(5):
        side.proto.dataReceived(corrupt(message(peer_id, flags.broadcast, flags.broadcast, "bad", n)))
        side.feed(message(peer_id, flags.broadcast, flags.broadcast, "good", n))
    assert not side.closed and len(rig.delivered) == 5
    payloads = [m.payload for m in side.messages() if m.msg_type == flags.renegotiate]
    assert payloads == [(flags.compression, []), *[(flags.resend,)] * 5]
    warnings = [event for event in events if event["log_level"].name == "warn"]
    assert len(warnings) == 1


def test_bad_checksum_asks_for_a_resend() -> None:
    """A frame failing its checksum: renegotiate [compression, []] and [resend] go out."""
    side = connected()
    peer_id = side.proto.peer_id
    assert peer_id is not None
    mine = message(side.proto._node.id, flags.broadcast, flags.broadcast, "mine")
    side.proto.send(mine)
    side.clear()
    side.proto.dataReceived(corrupt(message(peer_id, flags.broadcast, flags.broadcast, "hi")))
    assert not side.closed
    compression, resend = side.messages()
    assert (compression.msg_type, compression.payload) == (flags.renegotiate, (flags.compression, []))
    assert (resend.msg_type, resend.payload) == (flags.renegotiate, (flags.resend,))
    assert not side.proto._node.queue
    # What the peer should resend to us is not our renegotiation: asked to
    # resend, we write our last real message.
    side.feed(renegotiate(peer_id, flags.resend))
    assert side.bodies() == [mine.body_in(True)]


@pytest.mark.parametrize("read_on", [True, False])
def test_what_arrives_after_a_close(read_on: bool) -> None:
    """
    A link closed to read on (a second connection to the same peer) still
    hands over what its peer sent before it saw the close; any other closed
    link throws it away.
    """
    rig = Rig()
    side = connected(rig)
    peer_id = side.proto.peer_id
    assert peer_id is not None
    side.proto.close("going", error=False, read_on=read_on)
    assert side.closed
    side.feed(message(peer_id, flags.broadcast, flags.broadcast, "late"))
    assert [msg.packets for msg, _ in rig.delivered] == ([(flags.broadcast, "late")] if read_on else [])


class HalfClosing(StringTransport):
    """A transport that can close its writing side only (as TCP can)."""

    half_closed = False

    def loseWriteConnection(self) -> None:
        self.half_closed = True


class Wrapping(StringTransport):
    """
    A transport that hands on the attributes it lacks from the one it wraps,
    as Twisted's TLS does: closing its writing side only is not its own.
    """

    def __init__(self, wrapped: HalfClosing) -> None:
        super().__init__()
        self.wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def test_read_on_closes_only_our_side_of_a_transport_that_can() -> None:
    """
    Closed to read on, a link over TCP closes its writing side only (TCP
    stops reading once it closes); over TLS, which reads on until the peer
    answers its close, it closes the TLS, not the TCP under it.
    """
    rig = Rig()
    for transport in (HalfClosing(), Wrapping(HalfClosing())):
        proto = LinkFactory(rig.node, False, rig.connections, batch=rig.batch).buildProtocol(None)
        proto.makeConnection(transport)
        proto.close("going", error=False, read_on=True)
        if isinstance(transport, Wrapping):
            assert transport.disconnecting and not transport.wrapped.half_closed
        else:
            assert transport.half_closed and not transport.disconnecting


def test_too_many_bad_frames_in_a_row_close() -> None:
    """More than MAX_BAD_FRAMES failing frames in a row close the link."""
    side = connected()
    peer_id = side.proto.peer_id
    assert peer_id is not None
    bad = corrupt(message(peer_id, flags.broadcast, flags.broadcast, "hi"))
    for _ in range(MAX_BAD_FRAMES):
        side.proto.dataReceived(bad)
    assert not side.closed
    side.proto.dataReceived(bad)
    assert side.closed


def test_after_a_bad_checksum_nothing_is_inflated(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Once a frame failed its checksum (and the peer was asked for raw frames),
    the peer's bodies are no longer inflated: a body may inflate to the frame
    limit, at some cost, and fail all the same.  Raw frames are read on.
    """
    rig = Rig()
    side = connected(rig, codes=[flags.zlib])
    peer_id = side.proto.peer_id
    assert peer_id is not None
    inflated: list[int] = []
    real = _compression.inflations

    def counting(codes: Any, data: bytes, limit: int) -> Any:
        if codes:  # (with none, nothing is tried)
            inflated.append(len(data))
        return real(codes, data, limit)

    monkeypatch.setattr(_compression, "inflations", counting)
    side.feed(large(peer_id), code=flags.zlib)
    assert len(rig.delivered) == 1 and len(inflated) == 1
    side.proto.dataReceived(corrupt(message(peer_id, flags.broadcast, flags.broadcast, "bad")))
    inflated.clear()
    side.feed(message(peer_id, flags.broadcast, flags.broadcast, "zlib again", "x" * 2000), code=flags.zlib)
    assert inflated == [] and len(rig.delivered) == 1
    side.feed(message(peer_id, flags.broadcast, flags.broadcast, "raw"))
    assert rig.delivered[-1][0].packets == (flags.broadcast, "raw")


def test_a_good_frame_resets_the_bad_frame_count() -> None:
    """Bad frames must come in a row to close the link."""
    side = connected()
    peer_id = side.proto.peer_id
    assert peer_id is not None
    bad = corrupt(message(peer_id, flags.broadcast, flags.broadcast, "hi"))
    for _ in range(MAX_BAD_FRAMES):
        side.proto.dataReceived(bad)
    side.feed(message(peer_id, flags.whisper, flags.whisper, "fine"))
    for _ in range(MAX_BAD_FRAMES):
        side.proto.dataReceived(bad)
    assert not side.closed


def test_a_large_frame_before_the_handshake_is_not_held() -> None:
    """
    A peer that has not sent its handshake may not have the node hold more
    than MAX_UNIDENTIFIED_BUFFER bytes of a frame; once it has, it may send
    frames up to the limit, even in the read that brings its handshake.
    """
    rig = Rig()
    side = rig.link()
    side.proto.dataReceived(struct.pack(">I", 1 << 20) + b"x" * (MAX_UNIDENTIFIED_BUFFER - 4))
    assert not side.closed
    side.proto.dataReceived(b"x")
    assert side.closed
    assert rig.node.stats.dropped["too_large"] == rig.node.stats.handshake_failures["malformed"] == 1

    rig = Rig()
    side = rig.link()
    peer_id = new_node_id(MESH)
    big = message(peer_id, flags.broadcast, flags.broadcast, "x" * (2 * MAX_UNIDENTIFIED_BUFFER))
    frame = big.frame(True, None)
    side.proto.dataReceived(handshake(peer_id).frame(True, None) + frame[: len(frame) // 2])
    side.proto.dataReceived(frame[len(frame) // 2 :])
    assert not side.closed
    assert [msg.packets for msg, _ in rig.delivered] == [(flags.broadcast, "x" * (2 * MAX_UNIDENTIFIED_BUFFER))]


def test_undecodable_frame_closes() -> None:
    """A frame whose checksum holds but is not a message closes the link."""
    side = connected()
    serial = msgpack.packb([1, 2])
    body = sha256(serial).digest() + serial
    side.proto.dataReceived(len(body).to_bytes(4, "big") + body)
    assert side.closed


# -- renegotiation ------------------------------------------------------------


def test_renegotiate_compression_changes_what_we_compress_with() -> None:
    """[compression, codes] switches our method; [] sends raw."""
    side = connected(codes=[flags.zlib])
    peer_id = side.proto.peer_id
    assert peer_id is not None
    msg = large(side.proto._node.id)
    side.proto.send(msg)
    (body,) = side.bodies()
    assert_compressed_with(body, flags.zlib, msg)

    side.feed(renegotiate(peer_id, flags.compression, [flags.bz2, flags.gzip]))
    (answer,) = side.messages()
    assert (answer.msg_type, answer.payload) == (flags.renegotiate, (flags.compression, [flags.gzip, flags.bz2]))
    assert side.proto.peer_codes == (flags.bz2, flags.gzip)
    side.proto.send(msg)
    (body,) = side.bodies()
    assert_compressed_with(body, flags.gzip, msg)

    side.feed(renegotiate(peer_id, flags.compression, []))
    (answer,) = side.messages()
    assert answer.payload == (flags.compression, [])
    side.proto.send(msg)
    (body,) = side.bodies()
    assert_compressed_with(body, None, msg)


def test_renegotiate_answers_only_a_change() -> None:
    """The same list again is not answered: no ping-pong."""
    side = connected(codes=[flags.zlib, flags.gzip])
    peer_id = side.proto.peer_id
    assert peer_id is not None
    side.feed(renegotiate(peer_id, flags.compression, [flags.zlib, flags.gzip]))
    assert side.bodies() == []
    side.feed(renegotiate(peer_id, flags.compression, [flags.gzip]))
    assert [m.payload for m in side.messages()] == [(flags.compression, [flags.gzip])]
    side.feed(renegotiate(peer_id, flags.compression, [flags.gzip]))
    assert side.bodies() == []


def test_renegotiate_unknown_codes_give_an_empty_intersection() -> None:
    """Codes we do not support are left out of the answer, and we send raw."""
    side = connected(codes=[flags.zlib])
    peer_id = side.proto.peer_id
    assert peer_id is not None
    side.feed(renegotiate(peer_id, flags.compression, [0x7E]))
    assert [m.payload for m in side.messages()] == [(flags.compression, [])]
    msg = large(side.proto._node.id)
    side.proto.send(msg)
    (body,) = side.bodies()
    assert_compressed_with(body, None, msg)


def test_malformed_renegotiate_compression_closes() -> None:
    """[compression, not-a-list-of-ints] closes the link."""
    side = connected()
    peer_id = side.proto.peer_id
    assert peer_id is not None
    side.feed(renegotiate(peer_id, flags.compression, ["zlib"]))
    assert side.closed


# -- writing -------------------------------------------------------------------


def count_writes(transport: StringTransport) -> list[bytes]:
    """Keep each write made to ``transport``, as it goes on writing."""
    writes: list[bytes] = []
    write = transport.write

    def counted(data: bytes) -> None:
        writes.append(data)
        write(data)

    transport.write = counted  # type: ignore[method-assign]
    return writes


def test_frames_sent_in_one_turn_are_written_at_its_end_in_one_write() -> None:
    """
    Messages sent outside a read (a user's sends) are written when the
    reactor's turn ends, all of them in one write, in order; and counted then.
    """
    side = connected()
    writes = count_writes(side.transport)
    stats = side.proto.stats
    frames_before, bytes_before = stats.frames_out, stats.bytes_out
    node_id = side.proto._node.id
    sent = [message(node_id, flags.broadcast, flags.broadcast, i) for i in range(5)]
    for msg in sent:
        assert side.proto.send(msg) is None
    assert writes == [] and stats.frames_out == frames_before
    side.clock.advance(0)
    assert writes == [b"".join(msg.frame(True, None) for msg in sent)]
    assert (stats.frames_out, stats.bytes_out) == (frames_before + 5, bytes_before + len(writes[0]))
    assert side.bodies() == [msg.body_in(True) for msg in sent]


def test_a_link_writes_once_it_gathered_max_gathered_bytes() -> None:
    """
    Frames are not gathered past MAX_GATHERED bytes: then they are written at
    once (so that the transport can tell a sender that the peer is slow),
    the rest at the end of the turn.
    """
    side = connected(codes=[])
    writes = count_writes(side.transport)
    node_id = side.proto._node.id
    sent = [message(node_id, flags.broadcast, flags.broadcast, i, b"x" * 1000) for i in range(100)]
    size = len(sent[0].frame(True, None))
    for msg in sent:
        side.proto.send(msg)
    per_write = -(-MAX_GATHERED // size)  # the frames that reach the limit
    assert [len(data) for data in writes] == [per_write * size] * (len(sent) // per_write)
    side.clock.advance(0)
    assert b"".join(writes) == b"".join(msg.frame(True, None) for msg in sent)
    assert len(writes) == -(-len(sent) // per_write)


class FillingTransport(StringTransport):
    """A transport that tells its producer to pause once it holds ``most`` bytes."""

    def __init__(self, most: int) -> None:
        super().__init__()
        self.most = most

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) >= self.most and self.producer is not None:
            self.producer.pauseProducing()


def test_closing_a_link_its_last_frames_fill_does_not_pause_the_others() -> None:
    """
    A link closed in the turn its user sent it frames writes them first; when
    they fill its transport, the congestion they make ends with the close:
    the node goes on reading from its other peers.
    """
    rig = Rig()
    other = connected(rig)
    proto = LinkFactory(rig.node, False, rig.connections, batch=rig.batch).buildProtocol(None)
    transport = FillingTransport(most=4096)
    proto.makeConnection(transport)
    side = Side(proto, transport, rig.clock)
    side.feed(handshake(new_node_id(MESH), codes=[]))
    side.clear()
    msg = message(rig.node.id, flags.whisper, flags.whisper, b"x" * 5000)
    assert side.proto.send(msg) is None
    side.proto.close("done with it", error=False)
    assert msg.frame(True, None) in transport.value()
    assert not rig.node._congested
    assert other.transport.producerState == "producing"


class PausingTransport(StringTransport):
    """
    A transport that holds what is written until `.drain`, and tells its
    producer to pause while it holds more than ``most`` bytes, as Twisted's
    TCP transport does.
    """

    def __init__(self, most: int) -> None:
        super().__init__()
        self.most = most
        self.held = 0
        self.paused = False

    def write(self, data: bytes) -> None:
        super().write(data)
        self.held += len(data)
        if self.held > self.most and not self.paused and self.producer is not None:
            self.paused = True
            self.producer.pauseProducing()

    def drain(self) -> None:
        """The peer read everything: empty the buffer, and ask the producer for more."""
        self.held = 0
        if self.paused and self.producer is not None:
            self.paused = False
            self.producer.resumeProducing()


def paused_link(rig: Rig, **limits: Any) -> tuple[Side, PausingTransport]:
    """A handshaken link, with ``limits``, whose transport pauses past 64 kB."""
    rig.node.limits = Limits(**limits)
    proto = LinkFactory(rig.node, False, rig.connections, batch=rig.batch).buildProtocol(None)
    transport = PausingTransport(most=64 * 1024)
    proto.makeConnection(transport)
    side = Side(proto, transport, rig.clock)
    side.feed(handshake(new_node_id(MESH), codes=[]))
    side.clear()
    return side, transport


def test_frames_wait_in_the_link_while_the_transport_is_full() -> None:
    """
    Once the transport is full, frames wait in the link, and the node hears
    that the peer is congested; when the transport asks for more, they go
    out in writes of about MAX_GATHERED bytes until it is full again, and
    when all are out the congestion ends.  Nothing is lost or reordered.
    """
    rig = Rig()
    other = connected(rig)
    side, transport = paused_link(rig)
    node_id = rig.node.id
    sent = [message(node_id, flags.broadcast, flags.broadcast, i, b"x" * 1000) for i in range(300)]
    for msg in sent:
        assert side.proto.send(msg) is None
    rig.clock.advance(0)
    assert transport.paused and rig.node._congested == {side.proto}
    assert other.transport.producerState == "paused"
    held = len(transport.value())
    assert held <= 2 * MAX_GATHERED + 1100, held
    rig.clock.advance(0)
    assert len(transport.value()) == held, "the link wrote to a full transport"
    writes = count_writes(transport)
    transport.drain()
    assert transport.paused and writes and all(len(data) <= MAX_GATHERED + 1100 for data in writes)
    while transport.paused:
        transport.drain()
    assert not rig.node._congested and other.transport.producerState == "producing"
    assert side.bodies() == [msg.body_in(True) for msg in sent]


def test_own_messages_past_max_send_buffer_are_skipped_with_a_reason() -> None:
    """
    More than max_send_buffer bytes waiting for a peer: a new message is not
    queued; send() says why, and the limit is counted; once the peer read,
    messages are queued again.
    """
    rig = Rig()
    side, transport = paused_link(rig, max_send_buffer=200_000)
    node_id = rig.node.id
    results = [side.proto.send(message(node_id, flags.broadcast, flags.broadcast, i, b"x" * 10_000)) for i in range(40)]
    refused = [i for i, result in enumerate(results) if result is not None]
    assert refused and refused == list(range(refused[0], 40))
    assert results[refused[0]] is not None and "max_send_buffer (200000)" in results[refused[0]]
    assert rig.node.stats.limit_hits["max_send_buffer"] == len(refused)
    assert side.proto._writer.unwritten_size <= 200_000 + 10_100
    while transport.paused:
        transport.drain()
    assert side.proto.send(message(node_id, flags.broadcast, flags.broadcast, "again")) is None


def test_a_peer_that_makes_progress_is_not_cut_off() -> None:
    """
    A congested peer that keeps reading (its transport asks for more now and
    then) stays, however long it is congested; one that reads nothing for
    congestion_timeout is cut off, and what waited for it is dropped.
    """
    rig = Rig()
    side, transport = paused_link(rig, congestion_timeout=5)
    node_id = rig.node.id
    for i in range(2000):
        side.proto.send(message(node_id, flags.broadcast, flags.broadcast, i, b"x" * 1000))
    rig.clock.advance(0)
    for _ in range(10):
        rig.clock.advance(4)
        transport.drain()
        assert transport.paused and not side.closed
    assert not rig.node.stats.limit_hits
    rig.clock.advance(5)
    assert rig.node.stats.limit_hits["congestion_timeout"] == 1
    assert side.closed and side.proto._writer.unwritten == []


def test_a_link_closed_while_its_transport_is_full_writes_what_waited() -> None:
    """
    What send() queued is written unless the connection is lost: a link
    closed (not aborted) while frames wait hands them all to the transport,
    which writes them before it closes.
    """
    rig = Rig()
    side, transport = paused_link(rig)
    sent = [message(rig.node.id, flags.broadcast, flags.broadcast, i, b"x" * 1000) for i in range(300)]
    for msg in sent:
        side.proto.send(msg)
    rig.clock.advance(0)
    side.proto.close("done", error=False)
    assert side.closed and not rig.node._congested
    assert side.bodies() == [msg.body_in(True) for msg in sent]


def test_a_lost_link_writes_nothing_more() -> None:
    """
    Frames gathered past MAX_GATHERED are written at once; the end of the
    turn, when the connection was lost meanwhile, writes nothing more.
    """
    side = connected(codes=[])
    writes = count_writes(side.transport)
    node_id = side.proto._node.id
    for i in range(70):
        side.proto.send(message(node_id, flags.broadcast, flags.broadcast, i, b"x" * 1000))
    assert len(writes) == 1
    side.proto.connectionLost(Failure(ConnectionDone()))
    side.clock.advance(0)
    assert len(writes) == 1 and not side.clock.getDelayedCalls()


def test_frames_of_a_turn_and_of_a_read_in_it_keep_their_order() -> None:
    """
    A frame sent in a turn, then one written in a read of the same turn (the
    answer to a resend): both go out at the end of the turn, in that order.
    """
    side = connected(codes=[])
    peer_id = side.proto.peer_id
    assert peer_id is not None
    writes = count_writes(side.transport)
    msg = message(side.proto._node.id, flags.whisper, flags.whisper, "first")
    side.proto.send(msg)
    side.feed(renegotiate(peer_id, flags.resend))
    assert writes == []
    assert side.bodies() == [msg.body_in(True)] * 2
    assert len(writes) == 1


def test_a_closing_link_writes_what_it_gathered_first() -> None:
    """Frames sent in the turn a link is closed in are written before it closes."""
    side = connected()
    writes = count_writes(side.transport)
    msg = message(side.proto._node.id, flags.broadcast, flags.broadcast, "last words")
    side.proto.send(msg)
    side.proto.close("done", error=False)
    assert writes == [msg.frame(True, None)] and side.closed
    side.clock.advance(0)
    assert writes == [msg.frame(True, None)]


def test_renegotiate_resend_writes_the_last_message_again() -> None:
    """
    [resend] writes the last message sent again, once: asking again, even
    many times in one read, writes nothing more until another message is sent.
    """
    side = connected(codes=[])
    peer_id = side.proto.peer_id
    assert peer_id is not None
    first = message(side.proto._node.id, flags.whisper, flags.whisper, "first")
    last = message(side.proto._node.id, flags.whisper, flags.whisper, "last")
    side.proto.send(first)
    side.proto.send(last)
    side.clear()
    resend = renegotiate(peer_id, flags.resend).frame(True, None)
    side.proto.dataReceived(resend * 100)
    assert side.bodies() == [last.body_in(True)]
    side.proto.dataReceived(resend)
    assert side.bodies() == []
    side.proto.send(first)
    side.clear()
    side.proto.dataReceived(resend * 2)
    assert side.bodies() == [first.body_in(True)]
    assert not side.closed


def test_renegotiate_resend_with_nothing_sent_is_ignored() -> None:
    """[resend] before we sent anything writes nothing."""
    side = Rig().link()
    side.clear()
    side.feed(renegotiate(new_node_id(MESH), flags.resend))
    assert side.bodies() == []
    assert not side.closed


def test_resend_after_compression_renegotiation_resends_the_last_message() -> None:
    """
    A peer that cannot read our frame sends [compression, []] then
    [resend] (as this link does itself): the resend must be the message it
    could not read, uncompressed now, not our answer to its renegotiation.
    """
    side = connected(codes=[flags.zlib])
    peer_id = side.proto.peer_id
    assert peer_id is not None
    msg = large(side.proto._node.id)
    side.proto.send(msg)
    side.clear()
    side.feed(renegotiate(peer_id, flags.compression, []))
    side.feed(renegotiate(peer_id, flags.resend))
    answer, resent = side.bodies()
    assert WireMessage.from_body(answer, SUPPORTED).payload == (flags.compression, [])
    assert resent == msg.body_in(True)


def test_renegotiation_is_not_shown_to_the_node() -> None:
    """Renegotiate messages and handshakes never reach the node's handlers."""
    rig = Rig()
    side = connected(rig)
    peer_id = side.proto.peer_id
    assert peer_id is not None
    side.feed(renegotiate(peer_id, flags.compression, [flags.zlib]))
    side.feed(renegotiate(peer_id, flags.resend))
    side.feed(renegotiate(peer_id, flags.broadcast, "not for the user"))
    side.feed(handshake(peer_id))
    assert rig.delivered == [] and not rig.node.queue
    assert not side.closed


# -- the handshake's timeout, repeats, and connecting to oneself -------------


def test_handshake_timeout_closes() -> None:
    """No handshake within Limits.handshake_timeout: closed, HandshakeFailed."""
    rig = Rig()
    side = rig.link(outgoing=True)
    rig.clock.advance(Limits.handshake_timeout - 0.001)
    assert not side.closed and side.results == []
    rig.clock.advance(0.001)
    assert side.closed
    assert side.failure().check(HandshakeFailed)
    side.proto.connectionLost(Failure(Exception("gone")))
    assert len(side.results) == 1
    assert side.proto not in rig.connections


def test_handshake_in_time_cancels_the_timeout() -> None:
    """A handshake in time: the timer is cancelled, the link stays."""
    rig = Rig()
    side = rig.link(outgoing=True)
    rig.clock.advance(Limits.handshake_timeout / 2)
    side.feed(handshake(new_node_id(MESH)))
    assert rig.clock.getDelayedCalls() == []
    rig.clock.advance(Limits.handshake_timeout * 2)
    assert not side.closed
    assert len(side.results) == 1 and isinstance(side.results[0], str)


def test_connection_lost_before_handshake() -> None:
    """A link lost before its handshake: HandshakeFailed, timer cancelled, closed fires."""
    rig = Rig()
    side = rig.link(outgoing=True)
    closed: list[None] = []
    side.proto.closed.addCallback(closed.append)
    side.proto.connectionLost(Failure(Exception("reset")))
    assert side.failure().check(HandshakeFailed)
    assert rig.clock.getDelayedCalls() == []
    assert closed == [None]
    assert side.proto not in rig.connections


def test_connection_lost_leaves_the_routing_table() -> None:
    """A link lost after its handshake leaves the routing table."""
    rig = Rig()
    side = connected(rig)
    assert rig.node.routing_table
    side.proto.connectionLost(Failure(Exception("reset")))
    assert rig.node.routing_table == {}
    assert side.proto not in rig.connections
    # Nothing is written on a link that is gone.
    side.proto.send(message(rig.node.id, flags.whisper, flags.whisper, "late"))
    assert side.bodies() == []


def test_second_handshake_same_id_is_quiet() -> None:
    """A second handshake with the same ID: accepted, nothing sent, nothing changed."""
    rig = Rig()
    side = connected(rig)
    peer_id = side.proto.peer_id
    assert peer_id is not None
    side.feed(handshake(peer_id))
    side.feed(handshake(peer_id, as_bin=False), as_bin=False)
    assert not side.closed
    assert side.bodies() == []
    assert rig.node.routing_table == {peer_id: side.proto}
    assert side.results == [peer_id]
    assert side.proto.ids_as_bin


def test_second_handshake_other_id_closes() -> None:
    """A second handshake with another ID closes the link."""
    rig = Rig()
    side = connected(rig)
    peer_id = side.proto.peer_id
    side.feed(handshake(new_node_id(MESH)))
    assert side.closed
    assert side.proto.peer_id == peer_id
    assert side.results == [peer_id]


def test_second_link_from_a_non_base58_peer_does_not_raise() -> None:
    """
    A peer whose ID is ASCII but not base58 connecting twice, once each way:
    reading its second handshake must not raise out of dataReceived; the node
    ends with at most one link to it and closes any other.
    """
    rig = Rig()
    first = rig.link(outgoing=True)
    second = rig.link()
    peer_id = "0OIl" + "x" * 60  # '0', 'O', 'I' and 'l' are not base58 digits
    first.feed(handshake(peer_id))
    second.feed(handshake(peer_id))
    kept = [side for side in (first, second) if rig.node.routing_table.get(peer_id) is side.proto]
    assert len(kept) <= 1
    assert all(side.closed for side in (first, second) if side not in kept)
    assert first.results and second.results


def test_connecting_to_itself() -> None:
    """A handshake carrying the node's own ID: closed, SelfConnection."""
    rig = Rig()
    side = rig.link(outgoing=True)
    side.clear()
    side.feed(handshake(rig.node.id, address=OUT_ADDR))
    assert side.closed
    assert side.failure().check(SelfConnection)
    assert rig.node.routing_table == {}
    (ours,) = side.bodies()
    our_handshake(ours, rig.node.id, True)


# -- compression chosen from the handshake -----------------------------------


@pytest.mark.parametrize(
    "codes",
    [
        [flags.zlib, flags.gzip],  # js2p
        [flags.zlib, flags.gzip, flags.bz2, flags.lzma],  # py2p
        [flags.lzma, flags.bz2],
        [flags.bz2, 0x7E],
        [flags.gzip],
        list(SUPPORTED),
        [],
        [0x7E],
    ],
)
def test_compression_from_the_handshake(codes: list[int]) -> None:
    """
    Large bodies go out with the first of our methods the peer lists, but
    never bz2 or lzma (too slow to compress every message with); small ones
    raw.
    """
    side = connected(codes=codes)
    expected = next((code for code in SUPPORTED if code in codes and code not in (flags.bz2, flags.lzma)), None)
    msg = large(side.proto._node.id)
    side.proto.send(msg)
    (body,) = side.bodies()
    assert_compressed_with(body, expected, msg)

    small = message(side.proto._node.id, flags.broadcast, flags.broadcast, "small")
    assert len(small.body_in(True)) < _compression.MIN_COMPRESSED_SIZE
    side.proto.send(small)
    # (Raw, unless js2p's zlib would take it for zlib output.)
    assert side.bodies() == [_compression.compress(expected, small.body_in(True))]


@pytest.mark.parametrize("code", [code for code in SUPPORTED])
def test_compressed_frames_from_the_peer_are_read(code: int) -> None:
    """A large frame the peer compressed with any code it listed is read."""
    rig = Rig()
    side = connected(rig, codes=[code])
    peer_id = side.proto.peer_id
    assert peer_id is not None
    msg = large(peer_id)
    side.feed(msg, code=code)
    assert not side.closed
    assert [m.id for m, _ in rig.delivered] == [msg.key]
