"""
twisted_mesh nodes meshing with each other over real loopback TCP.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import LogEvent
from zope.interface import implementer

from tests.support import MESH, MeshNodes, RawPeer, joined_raw_peers, log_text, wait_for, within
from twisted_mesh import MeshService, MeshSocket, Message, Network, ProtocolMismatch, flags
from twisted_mesh._ids import new_node_id
from twisted_mesh.errors import SelfConnection


async def collect(sock: MeshSocket, count: int) -> list[Message]:
    """The next ``count`` messages of ``sock``."""
    return [await within(sock.next_message()) for _ in range(count)]


@pytest_twisted.ensureDeferred
async def test_port_zero_and_connect(mesh: MeshNodes) -> None:
    """Port 0 listens on a free port, and connect() fires with the peer's ID."""
    a, b = mesh(), mesh()
    assert a.out_addr[0] == "127.0.0.1" and a.out_addr[1] > 0
    assert not a.routing_table
    peer_id = await b.connect("127.0.0.1", a.out_addr[1])
    assert peer_id == a.id
    await wait_for(lambda: b.id in a.routing_table)
    assert a.routing_table and b.routing_table


@pytest_twisted.ensureDeferred
async def test_wildcard_address_gives_lan_out_addr() -> None:
    """'0.0.0.0' listens everywhere and advertises a real address."""
    sock = MeshSocket("0.0.0.0", 0)
    try:
        assert sock.out_addr[0] != "0.0.0.0"
        assert sock.out_addr[1] == sock.ports[0].getHost().port
    finally:
        await sock.close()


@pytest_twisted.ensureDeferred
async def test_port_in_use_raises(mesh: MeshNodes) -> None:
    """A taken port fails the constructor, as the references' sockets do."""
    a = mesh()
    with pytest.raises(CannotListenError):
        MeshSocket("127.0.0.1", a.out_addr[1])


@pytest_twisted.ensureDeferred
async def test_broadcast_crosses_a_line(mesh: MeshNodes) -> None:
    """A broadcast reaches every node of a line, with its packets' types."""
    a, b, c = await mesh.line()
    a.send("text", b"bytes", 7, [1, [2, "x"]], {"k": b"v"}, None, True, 1.5)
    for node in (b, c):
        msg = await within(node.next_message())
        assert msg.packets == (flags.broadcast, "text", b"bytes", 7, [1, [2, "x"]], {"k": b"v"}, None, True, 1.5)
        assert msg.sender == a.id
        assert msg.msg_type == flags.broadcast
    assert b.recv() is None and c.recv() is None


@pytest_twisted.ensureDeferred
async def test_message_id_is_the_same_everywhere(mesh: MeshNodes) -> None:
    a, b, c = await mesh.line()
    a.send("same")
    first, second = await within(b.next_message()), await within(c.next_message())
    assert first.id == second.id and len(first.id) == 32


@pytest_twisted.ensureDeferred
async def test_send_type_sets_the_subflag(mesh: MeshNodes) -> None:
    """send(type=whisper) arrives with the whisper sub-flag."""
    a, b = await mesh.line(2)
    a.send("psst", type=flags.whisper)
    msg = await within(b.next_message())
    assert msg.packets == (flags.whisper, "psst")


@pytest_twisted.ensureDeferred
async def test_whisper_flag_is_not_relayed(mesh: MeshNodes) -> None:
    """flag=whisper goes to direct peers only."""
    a, b, c = await mesh.line()
    a.send("near", flag=flags.whisper, type=flags.whisper)
    a.send("far")
    assert (await within(b.next_message())).packets == (flags.whisper, "near")
    assert (await within(b.next_message())).packets == (flags.broadcast, "far")
    assert (await within(c.next_message())).packets == (flags.broadcast, "far")
    assert c.recv() is None


@pytest_twisted.ensureDeferred
async def test_recv_oldest_first(mesh: MeshNodes) -> None:
    a, b = await mesh.line(2)
    for n in range(5):
        a.send(n)
    await wait_for(lambda: len(b._node.queue) == 5)
    first = b.recv()
    assert isinstance(first, Message) and first.packets == (0, 0)
    rest = b.recv(10)
    assert isinstance(rest, list) and [m.packets[1] for m in rest] == [1, 2, 3, 4]
    assert b.recv() is None and b.recv(3) == []


@pytest_twisted.ensureDeferred
async def test_reply_to_a_peer(mesh: MeshNodes) -> None:
    a, b = await mesh.line(2)
    a.send("question")
    msg = await within(b.next_message())
    msg.reply("answer", 42)
    answer = await within(a.next_message())
    assert answer.packets == (flags.whisper, "answer", 42)
    assert answer.sender == b.id and answer.msg_type == flags.whisper


@pytest_twisted.ensureDeferred
async def test_reply_to_a_node_that_is_not_a_peer(mesh: MeshNodes) -> None:
    """The replier asks the mesh for the sender's address, dials it, replies."""
    a, b, c = await mesh.line()
    a.send("who hears me?")
    msg = await within(c.next_message())
    assert a.id not in c.routing_table
    msg.reply("I do")
    answer = await within(a.next_message())
    assert answer.packets == (flags.whisper, "I do")
    assert answer.sender == c.id
    assert a.id in c.routing_table


@pytest_twisted.ensureDeferred
async def test_peer_exchange_dials_peers_of_peers(mesh: MeshNodes) -> None:
    a, b = await mesh.line(2)
    c = mesh()
    await c.connect("127.0.0.1", b.out_addr[1])
    await wait_for(lambda: a.id in c.routing_table and c.id in a.routing_table)


@pytest_twisted.ensureDeferred
async def test_max_outgoing_limits_peer_exchange(mesh: MeshNodes) -> None:
    hub = mesh(max_outgoing=0)
    spokes = [mesh(max_outgoing=0) for _ in range(4)]
    for spoke in spokes:
        await spoke.connect("127.0.0.1", hub.out_addr[1])
    newcomer = mesh(max_outgoing=3)
    await newcomer.connect("127.0.0.1", hub.out_addr[1])
    # The hub, then two of the four spokes its peers list names; no more.
    await wait_for(lambda: len(newcomer.routing_table) == 3)
    newcomer.request_peers()
    await task.deferLater(reactor, 0.5)
    assert len(newcomer.routing_table) == 3
    assert newcomer._node.outgoing_count() == 3


@pytest_twisted.ensureDeferred
async def test_request_peers(mesh: MeshNodes) -> None:
    """request_peers() dials the peers of peers that joined later."""
    a, b = mesh(), mesh(max_outgoing=0)
    await a.connect("127.0.0.1", b.out_addr[1])
    c = mesh(max_outgoing=0)
    await c.connect("127.0.0.1", b.out_addr[1])
    assert c.id not in a.routing_table
    a.request_peers()
    await wait_for(lambda: c.id in a.routing_table)


@pytest_twisted.ensureDeferred
async def test_protocol_mismatch_fails_and_is_logged(mesh: MeshNodes, log_events: list[LogEvent]) -> None:
    ours, theirs = mesh(), mesh(prot=Network("other", "Plaintext"))
    with pytest.raises(ProtocolMismatch) as caught:
        await ours.connect("127.0.0.1", theirs.out_addr[1])
    assert caught.value.theirs == Network("other", "Plaintext").id
    assert not ours.routing_table
    await wait_for(lambda: "speaks protocol" in log_text(log_events))
    await wait_for(lambda: not theirs.routing_table and not theirs._connections)


@pytest_twisted.ensureDeferred
async def test_connecting_to_itself_fails(mesh: MeshNodes) -> None:
    a = mesh()
    with pytest.raises(SelfConnection):
        await a.connect("127.0.0.1", a.out_addr[1])
    assert not a.routing_table


@pytest_twisted.ensureDeferred
async def test_simultaneous_dials_keep_one_connection(mesh: MeshNodes) -> None:
    """Two nodes that dial each other at once end with one link, the same one."""
    for _ in range(5):
        a, b = mesh(max_outgoing=0), mesh(max_outgoing=0)
        results = await defer.DeferredList(
            [a.connect("127.0.0.1", b.out_addr[1]), b.connect("127.0.0.1", a.out_addr[1])], consumeErrors=True
        )
        assert all(ok for ok, _ in results)
        await wait_for(lambda a=a, b=b: len(a._connections) == 1 and len(b._connections) == 1)
        a_link, b_link = a.routing_table[b.id], b.routing_table[a.id]
        assert a_link.outgoing != b_link.outgoing
        a.send("once")
        assert (await within(b.next_message())).packets == (0, "once")


@pytest_twisted.ensureDeferred
async def test_events(mesh: MeshNodes) -> None:
    a, b = mesh(), mesh()
    connects: list[Any] = []
    messages: list[Any] = []
    once: list[Any] = []
    a.on("connect", connects.append)
    a.on("message", messages.append)
    a.once("message", once.append)
    await b.connect("127.0.0.1", a.out_addr[1])
    await wait_for(lambda: connects)
    assert connects == [a]
    b.send(1)
    b.send(2)
    await wait_for(lambda: len(messages) == 2)
    assert messages == [a, a] and once == [a]


@pytest_twisted.ensureDeferred
async def test_register_handler_takes_messages(mesh: MeshNodes) -> None:
    a, b = await mesh.line(2)
    seen: list[tuple[Any, ...]] = []

    def handler(msg: Message, conn: Any) -> bool:
        seen.append(msg.packets)
        return msg.packets[1] == "mine"

    b.register_handler(handler)
    a.send("mine")
    a.send("yours")
    assert (await within(b.next_message())).packets == (0, "yours")
    assert seen == [(0, "mine"), (0, "yours")]


@pytest_twisted.ensureDeferred
async def test_no_echo_and_nothing_twice(mesh: MeshNodes) -> None:
    """
    A broadcast goes to every other neighbour once, never back to the one it
    came from, and a copy that comes round again is dropped.
    """
    node = mesh()
    left, right = await joined_raw_peers(node, 2)
    sent = left.send(flags.broadcast, flags.broadcast, "hi")
    await wait_for(lambda: right.user_messages())
    msg = await within(node.next_message())
    assert msg.packets == (0, "hi")
    # The same broadcast again, from the other side: dropped.
    right.send_raw(sent.frame(True, None))
    node.send("marker")
    await wait_for(lambda: len(right.user_messages()) == 2 and len(left.user_messages()) == 1)
    assert [m.payload for m in left.user_messages()] == [(0, "marker")]
    assert [m.payload for m in right.user_messages()] == [(0, "hi"), (0, "marker")]
    assert node.recv() is None


@pytest_twisted.ensureDeferred
async def test_no_relay_to_the_originator(mesh: MeshNodes) -> None:
    """A broadcast relayed by another node is not sent back to its originator."""
    node = mesh()
    origin, relay = await joined_raw_peers(node, 2)
    relay.send(flags.broadcast, flags.broadcast, "from origin", sender=origin.id)
    await within(node.next_message())
    node.send("marker")
    await wait_for(lambda: len(origin.user_messages()) == 1)
    assert [m.payload for m in origin.user_messages()] == [(0, "marker")]


@pytest_twisted.ensureDeferred
async def test_old_broadcasts_are_dropped(mesh: MeshNodes) -> None:
    node = mesh()
    (peer,) = await joined_raw_peers(node, 1)
    peer.send(flags.broadcast, flags.broadcast, "stale", stamp=int(node._node.clock.seconds()) - 120)
    peer.send(flags.broadcast, flags.broadcast, "fresh")
    assert (await within(node.next_message())).packets == (0, "fresh")
    assert node.recv() is None


@pytest_twisted.ensureDeferred
async def test_burst_through_a_line_arrives_whole_and_in_order(mesh: MeshNodes) -> None:
    """20,000 broadcasts through a line of three nodes: all arrive, in order, once."""
    a, b, c = await mesh.line()
    count = 20_000
    for n in range(count):
        a.send(n, "x" * 60)
    received = await collect(c, count)
    assert [m.packets[1] for m in received] == list(range(count))
    await wait_for(lambda: len(b._node.queue) == count)
    assert c.recv() is None and len(b._node.queue) == count


@pytest_twisted.ensureDeferred
async def test_mesh_service_from_endpoint_strings() -> None:
    """MeshService is the same node as a service, built from endpoint strings."""
    from twisted.application.service import MultiService

    first = MeshService(MESH, listen=["tcp:0:interface=127.0.0.1"])
    first.startService()
    ports = await first.listening
    port = ports[0].getHost().port
    second = MeshService(MESH, listen=["tcp:0:interface=127.0.0.1"], connect=[f"tcp:host=127.0.0.1:port={port}"])
    parent = MultiService()
    second.setServiceParent(parent)
    parent.startService()
    try:
        await wait_for(lambda: second.id in first.routing_table and first.id in second.routing_table)
        first.send("via services")
        assert (await within(second.next_message())).packets == (0, "via services")
    finally:
        await parent.stopService()
        await first.stopService()
    assert not first.routing_table and not second.routing_table


@pytest_twisted.ensureDeferred
async def test_close_stops_listening_and_disconnects(mesh: MeshNodes) -> None:
    a, b = await mesh.line(2)
    await a.close()
    await wait_for(lambda: not b.routing_table)
    with pytest.raises(ConnectionRefusedError):
        await b.connect("127.0.0.1", a.out_addr[1])


@implementer(IHalfCloseableProtocol)
class LingeringPeer(RawPeer):
    """A raw peer that writes on after the node closed its side, as one that has not yet seen the close."""

    def __init__(self, protocol: Network, **kwargs: Any) -> None:
        super().__init__(protocol, **kwargs)
        self.closed_by_node: Deferred[LingeringPeer] = Deferred()

    def readConnectionLost(self) -> None:
        self.closed_by_node.callback(self)

    def writeConnectionLost(self) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_a_second_connection_is_read_until_the_peer_closes_it(mesh: MeshNodes) -> None:
    """
    Of two connections from one peer, the node closes one; what the peer
    writes on it before it sees the close (over real TCP, which stops reading
    a socket it closes) is still delivered.
    """
    node = mesh()
    peer_id = new_node_id(MESH)
    peers = [LingeringPeer(MESH, node_id=peer_id) for _ in range(2)]
    for peer in peers:
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", node.out_addr[1]), peer)
    peers[0].handshake()
    await wait_for(lambda: peer_id in node.routing_table)
    peers[1].handshake()
    dropped = await within(defer.DeferredList([peer.closed_by_node for peer in peers], fireOnOneCallback=True))
    closed: LingeringPeer = dropped[0]
    closed.send(flags.broadcast, flags.broadcast, "written before it saw the close")
    assert closed.transport is not None
    closed.transport.loseConnection()
    msg = await within(node.next_message())
    assert msg.packets == (flags.broadcast, "written before it saw the close")
    await within(closed.lost)
    assert peer_id in node.routing_table
