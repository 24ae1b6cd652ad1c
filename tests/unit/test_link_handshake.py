"""
`.LinkProtocol`, one link: the handshake we send, the peer's, their
timeout and repeats, and the form of the IDs each side writes, byte for
byte.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tests.support import MESH
from tests.unit.link_rig import (
    BIN8,
    OUT_ADDR,
    PEER_ADDR,
    SENDER_TAG_AT,
    STR8,
    SUPPORTED,
    Rig,
    Side,
    connected,
    handshake,
    is_raw,
    message,
    renegotiate,
    wire,
)
from twisted_mesh import flags
from twisted_mesh._frames import WireMessage
from twisted_mesh._ids import Network, new_node_id
from twisted_mesh._link import LinkFactory
from twisted_mesh._link.negotiation import FIRST_WORD_WAIT
from twisted_mesh.errors import HandshakeFailed, ProtocolMismatch, SelfConnection
from twisted_mesh.limits import Limits

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
    """
    A twisted_mesh node dialled answers the renegotiation with its own: we
    say we speak lazy push, and our handshake follows, in its form.
    """
    rig = Rig()
    side = rig.link(outgoing=True)
    side.clear()
    peer_id = new_node_id(MESH)
    assert not side.proto.lazy_push
    side.feed(renegotiate(peer_id, flags.compression, list(SUPPORTED), as_bin=as_bin), as_bin=as_bin)
    side.feed(renegotiate(peer_id, flags.lazy_push, as_bin=as_bin), as_bin=as_bin)
    assert side.proto.lazy_push
    word, ours = side.bodies()
    assert WireMessage.from_body(word, SUPPORTED).payload == (flags.lazy_push,)
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
    word, lazy_push = side.messages()
    assert word.msg_type == flags.renegotiate and word.payload == (flags.compression, list(SUPPORTED))
    assert lazy_push.msg_type == flags.renegotiate and lazy_push.payload == (flags.lazy_push,)
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
    other = Network("other", "Plaintext").id
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
    side.feed(handshake(new_node_id(MESH), as_bin=False, protocol_id=Network("mesh", "SSL").id), as_bin=False)
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
    rig.clock.advance(0)  # the turn ends: the answer is written
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
