"""
`.Relay`: what a node does with each message its links read: a new
broadcast goes on to every other peer (a repeat, known by the seen-set, is
dropped), then the message goes where its sub-flag says.

This is the hot path: a broadcast costs one seen-set lookup, one ``send``
per peer (or, for a pruned link, its key announced: see `.BroadcastTree`)
and one call to where it goes next, nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted_mesh import flags
from twisted_mesh._core.context import NodeContext
from twisted_mesh._core.link import Link
from twisted_mesh._core.routing import RoutingTable
from twisted_mesh._core.seen import MESSAGE_LIFETIME, SeenSet
from twisted_mesh._core.tree import BroadcastTree
from twisted_mesh._frames import WireMessage
from twisted_mesh._logs import NODE, NodeLogger


class Relay:
    """
    The messages a node's links read.

    :param on_peers: called with ``(link, payload)`` for a peers message.
    :param on_request: called with ``(link, message)`` for a request.
    :param on_response: called with ``(link, payload)`` for a response.
    :param deliver: called with ``(link, message)`` for any other message:
        one for the node's user.
    :param verify: on a signed network, checks a message's signature (see
        `.Verifier.check`): after the checks that drop it cheaply (its
        time, the seen-set), before anything is done with it (the seen-set
        records a broadcast once its signature holds).
    :ivar seen: the broadcasts seen lately.
    :ivar tree: the links broadcasts are only announced to.
    """

    def __init__(
        self,
        node: NodeContext,
        routing: RoutingTable,
        seen: SeenSet,
        tree: BroadcastTree,
        *,
        on_peers: Callable[[Link, tuple[Any, ...]], None],
        on_request: Callable[[Link, WireMessage], None],
        on_response: Callable[[Link, tuple[Any, ...]], None],
        deliver: Callable[[Link, WireMessage], None],
        verify: Callable[[WireMessage], str | None] | None = None,
    ) -> None:
        self._log = NodeLogger(NODE, node.id, self)
        # What the hot path reads, each one attribute away.
        self._id = node.id
        self._clock = node.clock
        self._stats = node.stats
        self._routing = routing
        self._table = routing.table
        self.seen = seen
        self.tree = tree
        self._lazy = tree.lazy
        self._missing = tree.missing
        self._on_peers = on_peers
        self._on_request = on_request
        self._on_response = on_response
        self._deliver = deliver
        self._verify = verify
        self._log_unverified = node.log.unverified
        # The broadcasts relayed in this turn of the reactor, by key: a peer
        # that sends one of them is not written it too, if it waits still.
        self._relayed_now: dict[bytes, WireMessage] = {}

    def message_received(self, link: Link, msg: WireMessage) -> None:
        """
        Take a message a link read (not a handshake, not a renegotiation):
        relay it when it is a new broadcast, then act on its sub-flag, or
        deliver it.
        """
        msg_type, verify = msg.msg_type, self._verify
        if msg_type == flags.broadcast:
            now = self._clock.seconds()
            if not now - MESSAGE_LIFETIME <= msg.time <= now + MESSAGE_LIFETIME:
                # Too old; or stamped so far ahead that its key would be kept
                # (and take room in the seen-set) for longer than a lifetime.
                self._stats.dropped["expired"] += 1
                way = "older than" if msg.time < now else "stamped ahead by more than"
                self._log.debug("dropped a broadcast {way} {lifetime} s", way=way, lifetime=MESSAGE_LIFETIME)
                return
            if self._missing:
                self.tree.arrived(msg.key)
            # The node's own broadcasts come back by other paths: they are
            # known by their sender, not kept in the seen-set.
            if msg.sender == self._id:
                self._stats.dropped["duplicate"] += 1
                return
            if verify is None:
                if not self.seen.add(msg.key, msg.time, now):
                    self._repeat(link, msg)
                    return
            elif not self._new_and_verified(link, msg, now, verify):
                return
            origin, lazy, announced = self._table.get(msg.sender), self._lazy and self.tree.lazy_for(msg), None
            relayed = 0
            for _, peer in self._routing.peers:
                if peer is link or peer is origin:
                    continue
                if peer in lazy:
                    if announced is None:
                        announced = [peer]
                    else:
                        announced.append(peer)
                elif peer.send(msg) is None:
                    relayed += 1
            if announced is not None:
                self.tree.announce(msg, announced)
            if relayed:
                self._stats.relayed += relayed
                relayed_now = self._relayed_now
                if not relayed_now:
                    self._clock.callLater(0, relayed_now.clear)
                relayed_now[msg.key] = msg
        elif verify is not None and not self._verified(link, msg, verify):
            return
        payload = msg.payload
        if not payload:
            return
        subflag = payload[0]
        if subflag == flags.peers and msg_type == flags.whisper:
            self._on_peers(link, payload)
        elif subflag == flags.request:
            self._on_request(link, msg)
        elif subflag == flags.response and msg_type == flags.broadcast:
            self._on_response(link, payload)
        else:
            self._deliver(link, msg)

    def _new_and_verified(
        self, link: Link, msg: WireMessage, now: float, verify: Callable[[WireMessage], str | None]
    ) -> bool:
        """
        On a signed network, whether a broadcast is new and its signature
        holds: a repeat is dropped unchecked, and the seen-set records the
        broadcast only once its signature holds.
        """
        if self.seen.holds(msg.key, msg.time):
            self._repeat(link, msg)
            return False
        if not self._verified(link, msg, verify):
            return False
        self.seen.add(msg.key, msg.time, now)
        return True

    def _repeat(self, link: Link, msg: WireMessage) -> None:
        """
        ``link`` sent a broadcast seen already: dropped, and the link
        pruned (see `.BroadcastTree.repeat`); and if the node relayed it in
        this turn, what waits for that peer of it is not written.
        """
        self._stats.dropped["duplicate"] += 1
        relayed = self._relayed_now.get(msg.key)
        withdrawn = relayed is not None and link.withdraw(relayed)
        if withdrawn:
            self._stats.relayed -= 1
        # The peer gets the node's copy, and so a repeat of its own, unless
        # it was withdrawn or the peer sent the broadcast.  (A broadcast too
        # large to announce crosses pruned links too: its repeats say nothing.)
        tree = self.tree
        if not tree.too_large(msg):
            tree.repeat(link, has_ours=not withdrawn and msg.sender != link.peer_id)

    def _verified(self, link: Link, msg: WireMessage, verify: Callable[[WireMessage], str | None]) -> bool:
        """Whether ``msg``'s signature holds; one that does not is counted, logged and dropped."""
        failure = verify(msg)
        if failure is None:
            return True
        self._log_unverified(link.peer_id, msg.sender, failure)
        return False
