"""
`.MeshNode`: one mesh node's state and rules, with no I/O of its own, made
of the parts of this package.

Links (one per connection, see `.Link`) hand the node the messages they
read; the node answers through them, and asks its owner to dial an address
through the ``dialer`` it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from twisted_mesh import flags
from twisted_mesh._admission import Admission
from twisted_mesh._core.context import NodeContext
from twisted_mesh._core.exchange import DEFAULT_MAX_OUTGOING, Dialer, PeerExchange
from twisted_mesh._core.inbox import Inbox
from twisted_mesh._core.link import Address, Link
from twisted_mesh._core.outbox import Outbox
from twisted_mesh._core.relay import Relay
from twisted_mesh._core.replies import Replies
from twisted_mesh._core.routing import RoutingTable
from twisted_mesh._core.seen import SeenSet
from twisted_mesh._core.tree import BroadcastTree
from twisted_mesh._ids import Network, new_node_id
from twisted_mesh._signing import Signer, Verifier
from twisted_mesh._stats import NodeLog, NodeStats
from twisted_mesh.keys import NodeKey
from twisted_mesh.limits import DEFAULT_LIMITS, Limits
from twisted_mesh.message import SendResult

_T = TypeVar("_T")


class _PartAttribute(Generic[_T]):
    """An attribute of the node that is the same-named one of one of its parts."""

    def __init__(self, part: str) -> None:
        self._part = part
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, node: MeshNode, owner: type | None = None) -> _T:
        value: _T = getattr(getattr(node, self._part), self._name)
        return value

    def __set__(self, node: MeshNode, value: _T) -> None:
        setattr(getattr(node, self._part), self._name, value)


class MeshNode:
    """
    One mesh node: the object the links and the service talk to.

    A node may have links of several transports: each link is part of its
    own transport's network (its handshake carries that transport's protocol
    ID), and the node relays broadcasts between them all.

    Its parts do the work, and most of its calls are theirs (bound methods
    of the parts, so that none costs a call of the node's own):
    ``message_received`` is the relay's, ``recv`` the inbox's, ``dial`` the
    peer exchange's...  To see or change what one does, look at the part.

    :ivar protocol: the node's subnet, its main transport, and whether its
        network is signed.
    :ivar id: this node's ID.
    :ivar key: the node's key, if it has one (on a signed network it does).
    :ivar allowed: on a signed network, the only node IDs it lets in, if
        there is an allow-list.
    :ivar clock: where the node reads the time and schedules timeouts.
    :ivar limits: what the node accepts and holds.
    :ivar stats: counters of what the node and its links did.
    :ivar node_log: the limits that bit and the malformed messages dropped.
    :ivar admission: the slots of the node's connections, handshaken or
        not; those without a handshake are bounded on their own.
    :ivar started: when the node was made, by ``clock``.
    :ivar peer_lost: called with the link of each peer that leaves the
        routing table, and the seconds it was in it.
    :ivar routing: the peers, and the back-pressure of slow ones.
    :ivar outbox: the node's own messages.
    :ivar exchange: peer exchange, and the number of peers.
    :ivar replies: replies to nodes that are not peers.
    :ivar inbox: the user's messages, handlers and events.
    :ivar tree: the links broadcasts are only announced to (lazy push).
    :ivar relay: what is done with each message a link reads.
    :ivar routing_table: ``routing.table``, the peers by node ID.
    :ivar known_addresses: ``routing.known_addresses``.
    :ivar peer_book: ``exchange.peer_book``, the nodes heard of.
    :ivar out_addrs: ``exchange.out_addrs``.
    :ivar queue: ``inbox.queue``, the messages waiting for ``recv()``.
    :ivar events: ``inbox.events``.
    :ivar seen: ``relay.seen``, the broadcasts seen lately.
    """

    #: What the service sets: see `.PeerExchange` and `.Inbox`.
    out_addr: _PartAttribute[Address] = _PartAttribute("exchange")
    max_outgoing: _PartAttribute[int] = _PartAttribute("exchange")
    max_incoming: _PartAttribute[int] = _PartAttribute("exchange")
    dialer: _PartAttribute[Dialer | None] = _PartAttribute("exchange")
    dial_failed: _PartAttribute[Callable[[Failure, Address, str], None]] = _PartAttribute("exchange")
    event_source: _PartAttribute[object] = _PartAttribute("inbox")

    def __init__(
        self,
        protocol: Network,
        clock: IReactorTime,
        *,
        out_addr: Address = ("127.0.0.1", 0),
        node_id: str | None = None,
        key: NodeKey | None = None,
        allow: frozenset[str] | None = None,
        max_outgoing: int = DEFAULT_MAX_OUTGOING,
        max_incoming: int | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.protocol = protocol
        if protocol.signed and key is None:
            key = NodeKey.generate()
        if key is not None:
            if node_id is not None and node_id != key.node_id:
                raise ValueError(f"node_id {node_id} is not the ID of the key given, {key.node_id}")
            node_id = key.node_id
        if allow is not None and not protocol.signed:
            raise ValueError("allow needs a signed network (signed=True): only there do peers prove their IDs")
        self.key = key
        self.allowed = allow
        self.id = node_id = node_id or new_node_id(protocol)
        self.clock = clock
        self.limits = limits
        self.stats = stats = NodeStats()
        self.node_log = log = NodeLog(stats, clock, node_id)
        self.started = clock.seconds()
        self.peer_lost: Callable[[Link, float], None] | None = None
        self.admission = Admission(limits, log.hit)
        signer = Signer(key, protocol.subnet) if protocol.signed and key is not None else None
        node = NodeContext(node_id, clock, limits, stats, log, signer)
        self.routing = routing = RoutingTable(node)
        most = limits.max_seen
        seen = SeenSet(most, lambda: log.hit("max_seen", "forgot broadcasts early to keep at most {most}", most=most))
        self.tree = tree = BroadcastTree(node, routing, seen)
        self.outbox = outbox = Outbox(node, routing, tree)
        self.exchange = exchange = PeerExchange(
            node,
            routing,
            outbox,
            encryption=protocol.encryption,
            out_addr=out_addr,
            max_outgoing=max_outgoing,
            max_incoming=max_incoming,
        )
        self.replies = replies = Replies(node, routing, outbox, exchange)
        self.inbox = inbox = Inbox(node, self.reply, self)
        self.relay = relay = Relay(
            node,
            routing,
            seen,
            tree,
            on_peers=exchange.on_peers,
            on_request=replies.on_request,
            on_response=replies.on_response,
            deliver=inbox.deliver,
            verify=Verifier(protocol.subnet).check if protocol.signed else None,
        )
        # The state of the parts that the service and the tests read.
        self.routing_table = routing.table
        self.known_addresses = routing.known_addresses
        self.peer_book = exchange.peer_book
        self.out_addrs = exchange.out_addrs
        self.queue = inbox.queue
        self.events = inbox.events
        self.seen = seen
        # The calls that one part serves: the hot path, message_received,
        # among them (no call of the node's own in between).
        self.message_received = relay.message_received
        self.tree_word_received = tree.word_received
        self.limit_hit = log.hit
        self.now = outbox.now
        self.link_congested = routing.link_congested
        self.link_drained = routing.link_drained
        self.drained = routing.drained
        self.dial = exchange.dial
        self.outgoing_count = exchange.outgoing_count
        self.out_addr_for = exchange.out_addr_for
        self.request_peers = exchange.request_peers
        self.ask_peers = exchange.ask
        self.register_handler = inbox.register_handler
        self.recv = inbox.recv
        self.next_message = inbox.next_message
        self.open = inbox.open
        self.ensure_open = inbox.ensure_open

    # -- the user's side ----------------------------------------------------

    def close(self, reason: str) -> None:
        """
        Take no more messages of the user's: ``send()`` and ``reply()`` raise
        `.MeshClosed` with ``reason``, and so do the ``next_message()``
        Deferreds waiting; replies waiting for their target are given up,
        and so are the broadcasts kept for peers (see `.BroadcastTree`).
        """
        self.inbox.close(reason)
        self.replies.close(reason)
        self.tree.close()

    def send(self, packets: tuple[Any, ...], flag: int = flags.broadcast, type: int = flags.broadcast) -> SendResult:
        """
        Send ``(type, *packets)`` to every peer: relayed through the whole
        mesh when ``flag`` is `.flags.broadcast`, to direct peers only when it
        is `.flags.whisper`.

        :return: which peers it was queued to, and which not and why.
        :raise TypeError: when a packet is not something msgpack can write.
        :raise ValueError: when the message is larger than a frame may be
            (`.Limits.max_frame_size`).
        :raise MeshClosed: when the node is closed.
        """
        self.inbox.ensure_open()
        return self.outbox.send(flag, (type, *packets))

    def reply(self, target: str, packets: tuple[Any, ...]) -> SendResult:
        """
        Whisper ``packets`` to the node ``target``, as `.Replies.reply` does.

        :raise MeshClosed: when the node is closed.
        """
        self.inbox.ensure_open()
        return self.replies.reply(target, packets)

    # -- links --------------------------------------------------------------

    def link_ready(self, link: Link) -> bool:
        """
        Enter a link whose handshake arrived into the routing table.

        When the peer already has a link (that is not closing), the one
        dialled by the node with the higher ID is kept (the peer applies the
        same rule) and the other is closed.  A newcomer this node has no
        room for is turned away.

        :return: whether ``link`` was kept.
        """
        routing, exchange = self.routing, self.exchange
        conflict = routing.conflict(link)
        if conflict is not None:
            keep, drop = conflict
            drop.close("a second connection to the same peer", error=False, read_on=True)
            if keep is not link:
                return False
        elif exchange.is_full_for(link):
            exchange.turn_away(link)
            return False
        was_empty = not routing.table
        routing.enter(link)
        exchange.send_peers(link)
        self.replies.link_ready(link)
        if was_empty:
            self.events.emit("connect", self.event_source)
        if not link.outgoing:
            exchange.trim()
        return True

    def link_lost(self, link: Link) -> None:
        """Forget a link that closed; emit ``'disconnect'`` when it was the last peer."""
        self.exchange.forget(link)
        self.tree.forget(link)
        lasted = self.routing.remove(link)
        if lasted is None:
            return
        if self.peer_lost is not None:
            self.peer_lost(link, lasted)
        if not self.routing.table:
            self.events.emit("disconnect", self.event_source)
