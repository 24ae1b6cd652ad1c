"""
Signed networks over real loopback TCP: nodes prove their keys in the
handshake, sign what they send, and drop what does not hold; an allow-list
keeps a mesh private.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from hashlib import sha256
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.logger import LogEvent

from tests.support import MeshNodes, RawPeer, log_text, raw_peer, wait_for, within
from twisted_mesh import HandshakeFailed, MeshSocket, Network, NodeKey, flags
from twisted_mesh._frames import FrameReader, WireMessage
from twisted_mesh._serial import pack
from twisted_mesh.tls import self_signed_certificate

SIGNED = Network("mesh", "Plaintext", signed=True)


@pytest_twisted.ensureDeferred
async def test_a_signed_line_of_three_delivers_broadcasts_whispers_and_replies(mesh: MeshNodes) -> None:
    a, b, c = await mesh.line(3, prot=SIGNED)
    assert a.send("hello", b"\x00\x01")
    for node in (b, c):
        msg = await within(node.next_message())
        assert msg.packets == (flags.broadcast, "hello", b"\x00\x01") and msg.sender == a.id
    # A whisper reaches the direct peers only.
    assert b.send("psst", flag=flags.whisper)
    for node in (a, c):
        msg = await within(node.next_message())
        assert (msg.msg_type, msg.packets, msg.sender) == (flags.whisper, (flags.broadcast, "psst"), b.id)
    # A reply over two hops: c is no peer of a's, and dials it.
    assert a.recv() is None
    c.send("question")
    asked = await within(a.next_message())
    assert asked.sender == c.id
    result = asked.reply("answer")
    await within(result.settled())
    assert result.queued == [c.id]
    answer = await within(c.next_message())
    assert answer.packets == (flags.whisper, "answer") and answer.sender == a.id
    for node in (a, b, c):
        assert not {"unsigned", "wrong_key", "bad_signature"} & set(node.status()["dropped"])


@pytest_twisted.ensureDeferred
async def test_the_node_dialled_has_the_dialler_once_connect_fires(mesh: MeshNodes) -> None:
    """As on an unsigned network: the node dialled proves its key only once the dialler's proof holds."""
    a, b = mesh(prot=SIGNED), mesh(prot=SIGNED)
    await within(b.connect("127.0.0.1", a.out_addr[1]))
    assert b.id in a.routing_table
    assert a.send("at once").queued == [b.id]


@pytest_twisted.ensureDeferred
async def test_a_node_keeps_the_id_of_its_key(mesh: MeshNodes) -> None:
    key = NodeKey.generate()
    first = mesh(prot=SIGNED, key=key)
    assert first.id == key.node_id
    await first.close()
    assert mesh(prot=SIGNED, key=key).id == key.node_id


@pytest_twisted.ensureDeferred
async def test_a_node_that_claims_another_id_is_refused(mesh: MeshNodes, log_events: list[LogEvent]) -> None:
    node, other = mesh(prot=SIGNED), NodeKey.generate()
    # Its own key, another node's ID.
    impostor = await raw_peer(node.out_addr[1], SIGNED, node_id=other.node_id)
    impostor.handshake()
    await within(impostor.lost)
    assert node._node.stats.handshake_failures["wrong_key"] == 1
    assert other.node_id not in node.routing_table
    assert "is not that of its ID" in log_text(log_events)


@pytest_twisted.ensureDeferred
async def test_a_node_that_cannot_prove_its_key_is_refused(mesh: MeshNodes, log_events: list[LogEvent]) -> None:
    node = mesh(prot=SIGNED)
    # The key of the ID it claims, and no proof: it sends a message instead.
    silent = await raw_peer(node.out_addr[1], SIGNED, key=NodeKey.generate(), proves=False)
    silent.handshake()
    await wait_for(lambda: silent.received, what="the node's handshake")
    silent.send(flags.renegotiate, flags.proof, bytes(64), signed=False)
    await within(silent.lost)
    assert node._node.stats.handshake_failures["bad_proof"] == 1
    assert silent.id not in node.routing_table
    assert "did not prove that it holds its key" in log_text(log_events)


@pytest_twisted.ensureDeferred
async def test_a_handshake_without_a_key_is_refused(mesh: MeshNodes) -> None:
    node = mesh(prot=SIGNED)
    keyless = await raw_peer(node.out_addr[1], SIGNED)
    keyless.key = None  # its handshake goes without a key
    keyless.handshake()
    await within(keyless.lost)
    assert node._node.stats.handshake_failures["unproved"] == 1


@pytest_twisted.ensureDeferred
async def test_a_message_before_the_proof_closes_the_link(mesh: MeshNodes, log_events: list[LogEvent]) -> None:
    node = mesh(prot=SIGNED)
    hasty = await raw_peer(node.out_addr[1], SIGNED, proves=False)
    hasty.handshake()
    await wait_for(lambda: hasty.received, what="the node's handshake")
    hasty.send(flags.broadcast, flags.broadcast, "too early")
    await within(hasty.lost)
    assert hasty.id not in node.routing_table
    assert node.recv() is None
    assert "a message came before the proof of the peer's key" in log_text(log_events)


def forged(member: RawPeer, fields: list[object]) -> WireMessage:
    """A message of ``fields`` as they are, with a good checksum, as ``member`` would write it."""
    serial = pack(fields)
    return WireMessage.from_body(sha256(serial).digest() + serial, ())


@pytest_twisted.ensureDeferred
async def test_forged_altered_and_unsigned_messages_go_nowhere(mesh: MeshNodes, log_events: list[LogEvent]) -> None:
    # member -> honest -> behind: what the member makes up stops at honest.
    honest = mesh(prot=SIGNED, max_outgoing=0)
    behind = mesh(prot=SIGNED, max_outgoing=0)
    await within(behind.connect("127.0.0.1", honest.out_addr[1]))
    member = await raw_peer(honest.out_addr[1], SIGNED)
    await member.join()
    # behind's broadcast comes to the member, which relays it back altered.
    behind.send("pay 10")
    await wait_for(lambda: member.user_messages(), what="behind's broadcast at the member")
    (relayed,) = member.user_messages()
    fields = [relayed.msg_type, behind.id.encode(), relayed.time, *relayed.payload]
    fields[4] = "pay 99"
    relayed_altered = forged(member, fields)
    assert (await within(honest.next_message())).packets == (0, "pay 10")
    # A message that says it is behind's, signed with the member's key.
    genuine = member.send(flags.broadcast, flags.broadcast, "pay 10")
    key, signature = WireMessage.from_body(genuine.body_in(True), ()).payload[-2:]
    now = genuine.time
    claimed = behind.id.encode()
    impersonating = forged(member, [flags.broadcast, claimed, now, flags.broadcast, "pay 10", key, signature])
    # The member's own message, a packet altered on the way.
    altered = forged(member, [flags.broadcast, member.id.encode(), now, flags.broadcast, "pay 99", key, signature])
    # The member's message with its key and signature stripped.
    stripped = forged(member, [flags.broadcast, member.id.encode(), now + 1, flags.broadcast, "pay 10"])
    for msg in (relayed_altered, impersonating, altered, stripped):
        member.send_raw(msg.frame(True, None))
    member.send(flags.broadcast, flags.broadcast, "the last")
    for node in (honest, behind):
        first = await within(node.next_message())
        last = await within(node.next_message())
        assert (first.packets, last.packets) == ((0, "pay 10"), (0, "the last"))
        assert node.recv() is None
    dropped = honest.status()["dropped"]
    assert (dropped["wrong_key"], dropped["bad_signature"], dropped["unsigned"]) == (1, 2, 1)
    assert honest.status()["protocol"]["signed"] is True
    # Only what was signed takes room in the seen-set: the three real broadcasts.
    assert honest.status()["seen"] == 3
    assert not {"unsigned", "wrong_key", "bad_signature"} & set(behind.status()["dropped"])
    assert "that says it is" in log_text(log_events)
    # The member is still a peer: a bad message is dropped, not its link.
    assert member.id in honest.routing_table


@pytest_twisted.ensureDeferred
async def test_an_unsigned_whisper_is_not_delivered(mesh: MeshNodes) -> None:
    node = mesh(prot=SIGNED)
    member = await raw_peer(node.out_addr[1], SIGNED)
    await member.join()
    member.send(flags.whisper, flags.whisper, "unsigned", signed=False)
    member.send(flags.whisper, flags.whisper, "signed")
    msg = await within(node.next_message())
    assert msg.packets == (flags.whisper, "signed")
    assert node.recv() is None
    assert node.status()["dropped"]["unsigned"] == 1


@pytest_twisted.ensureDeferred
async def test_only_the_allowed_join(mesh: MeshNodes, log_events: list[LogEvent]) -> None:
    friend_key = NodeKey.generate()
    node = mesh(prot=SIGNED, allow=[friend_key.node_id])
    friend = mesh(prot=SIGNED, key=friend_key)
    assert await within(friend.connect("127.0.0.1", node.out_addr[1])) == node.id
    stranger = mesh(prot=SIGNED)
    with pytest.raises(HandshakeFailed):
        await within(stranger.connect("127.0.0.1", node.out_addr[1]))
    assert node._node.stats.handshake_failures["not_allowed"] == 1
    assert stranger.id not in node.routing_table and node.id not in stranger.routing_table
    assert "is not on the allow-list" in log_text(log_events)


@pytest_twisted.ensureDeferred
async def test_signed_and_unsigned_nodes_of_a_subnet_do_not_mix(mesh: MeshNodes, log_events: list[LogEvent]) -> None:
    signed, plain = mesh(prot=SIGNED), mesh()
    with pytest.raises(Exception, match="this node is not"):
        await within(plain.connect("127.0.0.1", signed.out_addr[1]))
    await wait_for(lambda: "this network is signed" in log_text(log_events), what="the signed node's log line")
    assert not signed.routing_table and not plain.routing_table


def test_an_allow_list_needs_a_signed_network(mesh: MeshNodes) -> None:
    with pytest.raises(ValueError, match="allow needs a signed network"):
        MeshSocket("127.0.0.1", 0, allow=[NodeKey.generate().node_id])
    with pytest.raises(ValueError, match="is not a node ID"):
        MeshSocket("127.0.0.1", 0, SIGNED, allow=["not an id"])


# --- a node in the middle ------------------------------------------------------------------


class _Relay(Protocol):
    """One end of a node in the middle: what it reads it hands to ``on_frame``."""

    def __init__(self, on_frame: Callable[[_Relay, WireMessage], None]) -> None:
        self.on_frame = on_frame
        self.reader = FrameReader(1 << 24)
        self.other: _Relay | None = None

    def dataReceived(self, data: bytes) -> None:
        for body in self.reader.feed(data):
            self.on_frame(self, WireMessage.from_body(body, (), 1 << 24))

    def write(self, msg_type: int, payload: tuple[Any, ...], sender: str) -> None:
        assert self.transport is not None
        self.transport.write(WireMessage.create(msg_type, sender, int(time.time()), payload).frame(True, None))


@pytest_twisted.ensureDeferred
async def test_a_proof_made_for_another_node_does_not_pass(mesh: MeshNodes) -> None:
    """
    M holds no key of the list.  A dials M; M dials B saying it is A (A's
    key, A's nonce), and tells A that it is C, with B's nonce: A's proof is
    made for C, and B, which finds another node than itself in it, refuses
    it.  (Before proofs named their checker, B took M for A.)
    """
    key_a, key_b, key_c = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
    members = [key_a.node_id, key_b.node_id, key_c.node_id]
    a = mesh(prot=SIGNED, key=key_a, allow=members, max_outgoing=0)
    b = mesh(prot=SIGNED, key=key_b, allow=members, max_outgoing=0)
    to_b: list[_Relay] = []

    def from_b(end: _Relay, msg: WireMessage) -> None:
        payload = msg.payload
        if payload[:1] == (flags.handshake,) and len(payload) == 7 and end.other is not None:
            shake = (flags.handshake, key_c.node_id.encode(), SIGNED.id.encode(), ["127.0.0.1", 1], [])
            end.other.write(flags.whisper, (*shake, key_c.public_key, payload[6]), key_c.node_id)

    def from_a(end: _Relay, msg: WireMessage) -> None:
        payload = msg.payload
        if payload[:1] == (flags.handshake,) and len(payload) == 7 and not to_b:
            relay = _Relay(from_b)
            relay.other = end
            to_b.append(relay)
            shake = (flags.handshake, key_a.node_id.encode(), SIGNED.id.encode(), ["127.0.0.1", 1], [])
            d = connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", b.out_addr[1]), relay)
            d.addCallback(lambda _: relay.write(flags.whisper, (*shake, key_a.public_key, payload[6]), key_a.node_id))
        elif payload[:1] == (flags.proof,) and to_b:
            to_b[0].write(flags.renegotiate, payload, key_a.node_id)  # A's proof, on to B

    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(lambda: _Relay(from_a))
    )
    try:
        a.connect("127.0.0.1", port.getHost().port).addErrback(lambda _: None)
        await wait_for(lambda: b._node.stats.handshake_failures["bad_proof"] == 1, what="B refusing the proof")
        assert key_a.node_id not in b.routing_table
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_node_in_the_middle_of_tls_cannot_pass_proofs_on(mesh: MeshNodes) -> None:
    """
    M ends a TLS session with each of A and B (self-signed mode verifies
    nobody) and passes every frame on as it is: A and B would mesh through
    it, and M would read all.  A proof binds its TLS session, which is not
    the other end's, so B refuses A's proof and the two never mesh.
    """
    tls_mesh = Network("mesh", "SSL", signed=True)
    a, b = mesh(prot=tls_mesh, max_outgoing=0), mesh(prot=tls_mesh, max_outgoing=0)
    passed: list[WireMessage] = []

    def forward(end: _Relay, msg: WireMessage) -> None:
        passed.append(msg)
        if end.other is not None and end.other.transport is not None:
            end.other.transport.write(msg.frame(msg.sender_is_bin, None))

    certificate = self_signed_certificate("middle")

    def from_a() -> _Relay:
        near = _Relay(forward)
        far = _Relay(forward)
        near.other, far.other = far, near
        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", b.out_addr[1], CertificateOptions(verify=False))
        connectProtocol(endpoint, far)
        return near

    server = SSL4ServerEndpoint(reactor, 0, certificate.options(), interface="127.0.0.1")
    port = await server.listen(Factory.forProtocol(from_a))
    try:
        with pytest.raises(HandshakeFailed):
            await within(a.connect("127.0.0.1", port.getHost().port))
        await wait_for(lambda: b._node.stats.handshake_failures["bad_proof"] == 1, what="B refusing the proof")
        assert any(msg.payload[:1] == (flags.proof,) for msg in passed)  # the proof went through M
        assert not a.routing_table and not b.routing_table
    finally:
        await port.stopListening()
