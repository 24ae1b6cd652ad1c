"""
The mesh protocol over WebSocket, over real loopback sockets: with
twisted_mesh, and with js2p in 'ws' mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.interfaces import IListeningPort

from tests.integration.websocket_support import WS_MESH, Reference, listen, ws_client
from tests.support import wait_for, within
from twisted_mesh import MeshService, Network, flags
from twisted_mesh._core.node import MeshNode
from twisted_mesh._link import LinkFactory, LinkProtocol, WriteBatch

# -- the mesh protocol -----------------------------------------------------------------


class Node:
    """A mesh node built by hand, as `.twisted_mesh.MeshService` builds one."""

    def __init__(self, protocol: Network = WS_MESH) -> None:
        # A node that only dials still names a port to dial it at: port 0 is
        # a malformed handshake.
        self.node = MeshNode(protocol, reactor, out_addr=("127.0.0.1", 9), max_outgoing=0)
        connections: set[LinkProtocol] = set()
        self.connections = connections
        batch = WriteBatch(reactor)
        self.server = LinkFactory(self.node, False, connections, batch=batch)
        self.client = LinkFactory(self.node, True, connections, batch=batch)

    async def close(self) -> None:
        links = list(self.connections)
        for link in links:
            link.close("the test is over", error=False)
        await defer.gatherResults([link.closed for link in links])


@pytest.fixture
def nodes() -> Iterator[Callable[[], Node]]:
    made: list[Node] = []

    def make() -> Node:
        made.append(Node())
        return made[-1]

    yield make
    pytest_twisted.blockon(defer.gatherResults([defer.ensureDeferred(node.close()) for node in made]))


@pytest_twisted.ensureDeferred
async def test_mesh_handshake_over_websocket(ports: list[IListeningPort], nodes: Callable[[], Node]) -> None:
    a, b = nodes(), nodes()
    port = await listen(ports, a.server)
    a.node.out_addr = ("127.0.0.1", port)
    link = await within(ws_client(port).connect(b.client))
    assert isinstance(link, LinkProtocol)
    assert await within(link.handshake_done) == a.node.id
    await wait_for(lambda: b.node.id in a.node.routing_table)
    b.node.send(("over ws", b"\x00\xff"), flags.broadcast, flags.broadcast)
    msg = await within(a.node.next_message())
    assert msg.packets == (flags.broadcast, "over ws", b"\x00\xff") and msg.sender == b.node.id


@pytest_twisted.ensureDeferred
async def test_js2p_dials_our_ws_listener(
    reference: Reference, ports: list[IListeningPort], nodes: Callable[[], Node]
) -> None:
    ref = await reference("js2p", encryption="ws")
    ours = nodes()
    port = await listen(ports, ours.server)
    ours.node.out_addr = ("127.0.0.1", port)
    assert await ref.connect("127.0.0.1", port)
    await wait_for(lambda: ref.id in ours.node.routing_table, what="js2p in our routing table")
    assert ours.node.id in await ref.wait_for_peers(1)
    await ref.send("from js2p", b"\x01")
    msg = await within(ours.node.next_message())
    assert msg.packets == (flags.broadcast, "from js2p", b"\x01") and msg.sender == ref.id
    ours.node.send(("from twisted", b"\x02"), flags.broadcast, flags.broadcast)
    theirs = await ref.next_message()
    assert theirs["packets"] == [flags.broadcast, "from twisted", b"\x02"] and theirs["sender"] == ours.node.id


@pytest_twisted.ensureDeferred
async def test_we_dial_js2p_ws_listener(reference: Reference, nodes: Callable[[], Node]) -> None:
    ref = await reference("js2p", encryption="ws")
    ours = nodes()
    link = await within(ws_client(ref.port).connect(ours.client))
    assert isinstance(link, LinkProtocol)
    assert await within(link.handshake_done) == ref.id
    assert ours.node.id in await ref.wait_for_peers(1)
    await ref.send("hello over ws")
    msg = await within(ours.node.next_message())
    assert msg.packets == (flags.broadcast, "hello over ws") and msg.sender == ref.id


@pytest_twisted.ensureDeferred
async def test_what_a_node_sends_as_its_peer_closes_goes_out_before_its_close() -> None:
    """
    A node sends a message in the turn it reads its peer's close (the peer
    closes to read on, as it closes a second connection to a node): the
    message goes out before the node answers the close, and the peer's node
    gets it.
    """
    a = MeshService(WS_MESH, listen=[("127.0.0.1", 0)])
    b = MeshService(WS_MESH, listen=[("127.0.0.1", 0)])
    a.startService()
    b.startService()
    try:
        await within(a.listening)
        (port,) = await within(b.listening)
        await within(a.connect(("127.0.0.1", port.getHost().port), encryption="ws"))
        await wait_for(lambda: a.id in b.routing_table, what="the link at b")
        a_to_b, b_to_a = a.routing_table[b.id], b.routing_table[a.id]
        a_to_b.pause_reading()  # a reads b's close once it reads again
        b_to_a.close("a second connection", error=False, read_on=True)
        await task.deferLater(reactor, 0.5, lambda: None)  # b's close is there to read
        # In one turn: a's user sends, and a reads again, b's close first.
        assert a.send("sent as b closes")
        a_to_b.resume_reading()
        message = await within(b.next_message(), 10)
        assert message.packets == (flags.broadcast, "sent as b closes")
    finally:
        await defer.gatherResults([a.stopService(), b.stopService()])
