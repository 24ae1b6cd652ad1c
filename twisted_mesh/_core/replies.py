"""
`.Replies`: replies to nodes that are not peers, which wait while the mesh
is asked for the node's address and the node is dialled; and the answers
this node gives to such requests.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from twisted_mesh import flags
from twisted_mesh._core.context import NodeContext
from twisted_mesh._core.exchange import PeerExchange
from twisted_mesh._core.link import Link, parse_address
from twisted_mesh._core.outbox import Outbox
from twisted_mesh._core.routing import RoutingTable
from twisted_mesh._core.seen import MESSAGE_LIFETIME
from twisted_mesh._frames import WireMessage
from twisted_mesh._ids import b58encode_int, id_text
from twisted_mesh._logs import NODE, LoggedID, LoggedText, NodeLogger
from twisted_mesh.message import SendResult


class _PendingReply:
    """A reply waiting for its target's address, then for a link to it."""

    __slots__ = ("request_id", "target", "packets", "result", "expiry")

    def __init__(self, request_id: str, target: str, packets: tuple[Any, ...], result: SendResult) -> None:
        self.request_id = request_id
        self.target = target
        self.packets = packets
        self.result = result
        self.expiry: IDelayedCall | None = None


class Replies:
    """
    Replies, and the requests for addresses they make.

    :ivar requests: the replies waiting for their target's address, by
        request ID.
    :ivar waiting: the replies waiting for a link to their target, by target.
    """

    def __init__(self, node: NodeContext, routing: RoutingTable, outbox: Outbox, exchange: PeerExchange) -> None:
        self._log = NodeLogger(NODE, node.id, self)
        self._node = node
        self._routing = routing
        self._outbox = outbox
        self._exchange = exchange
        self.requests: dict[str, _PendingReply] = {}
        self.waiting: dict[str, list[_PendingReply]] = {}

    def reply(self, target: str, packets: tuple[Any, ...]) -> SendResult:
        """
        Whisper ``packets`` to the node ``target``; when it is not a peer, ask
        the mesh for its address, dial it and send once connected.

        :return: whether it was queued to ``target``, or skipped and why; or,
            when ``target`` is not a peer, ``target`` in ``pending`` until it
            is reached or given up (`.SendResult.settled`), within
            `.MESSAGE_LIFETIME` seconds.
        :raise TypeError: when a packet is not something msgpack can write.
        :raise ValueError: when the reply is larger than a frame may be.
        """
        # Refused now if it cannot be sent, whenever it would go.
        reply = self._outbox.new_message(flags.whisper, (flags.whisper, *packets))
        result = SendResult()
        table = self._routing.table
        link = table.get(target)
        if link is not None:
            result._settle(target, link.send(reply))
            return result
        if not table:
            self._log.warn("could not reply to {target}: no peer to ask for its address", target=LoggedID(target))
            result._settle(target, "not connected to it, nor to any node to ask for its address")
            return result
        request_id = b58encode_int(int.from_bytes(os.urandom(32), "big"))
        if len(self.requests) >= self._node.limits.max_pending_replies:
            dropped = self.requests.pop(next(iter(self.requests)))
            most = self._node.limits.max_pending_replies
            self._node.log.hit("max_pending_replies", "dropped the oldest reply waiting for an address")
            self._settle(dropped, f"given up: more than max_pending_replies ({most}) replies waited")
        pending = self.requests[request_id] = _PendingReply(request_id, target, packets, result)
        pending.expiry = self._node.clock.callLater(MESSAGE_LIFETIME, self._expired, pending)
        result.pending = (target,)
        self._log.info("not connected to {target}: asking the mesh for its address", target=LoggedID(target))
        self._outbox.send(flags.broadcast, (flags.request, request_id, target.encode("ascii")))
        return result

    def link_ready(self, link: Link) -> None:
        """Send the replies waiting for the peer of ``link``, a new peer."""
        assert link.peer_id is not None
        for pending in self.waiting.pop(link.peer_id, ()):
            self._send(link, pending)

    def close(self, reason: str) -> None:
        """Give up every reply waiting: the node closed."""
        pending = [*self.requests.values(), *(p for waiting in self.waiting.values() for p in waiting)]
        self.requests.clear()
        self.waiting.clear()
        for reply in pending:
            self._settle(reply, f"the node closed before the reply could go: {reason}")

    def _expired(self, pending: _PendingReply) -> None:
        pending.expiry = None
        target = pending.target
        if self.requests.get(pending.request_id) is pending:
            del self.requests[pending.request_id]
            reason = f"no node gave the address of {target} within {MESSAGE_LIFETIME} s"
        else:
            waiting = self.waiting.get(target, [])
            if pending in waiting:
                waiting.remove(pending)
            if not waiting:
                self.waiting.pop(target, None)
            reason = f"{target} was not reached within {MESSAGE_LIFETIME} s"
        self._log.warn("a reply to {target} was given up: {reason}", target=LoggedID(target), reason=LoggedText(reason))
        self._settle(pending, reason)

    def _settle(self, pending: _PendingReply, refused: str | None) -> None:
        """A waiting reply went (``refused`` is None) or was given up: say so in its result."""
        if pending.expiry is not None and pending.expiry.active():
            pending.expiry.cancel()
        pending.expiry = None
        pending.result._settle(pending.target, refused)

    def _send(self, link: Link, pending: _PendingReply) -> None:
        """Send a reply that waited, now that its target is a peer."""
        self._settle(pending, self._outbox.whisper(link, (flags.whisper, *pending.packets)))

    # -- requests and responses from peers ----------------------------------

    def on_request(self, link: Link, msg: WireMessage) -> None:
        """A peer asks for this node's peers, or for the address of a node: answer when this node can."""
        payload = msg.payload
        if len(payload) == 2 and id_text(payload[1]) == "*":
            self._exchange.answer_request(link)
            return
        target = id_text(payload[2]) if len(payload) == 3 else None
        if target is None or id_text(payload[1]) is None or msg.msg_type != flags.broadcast:
            self._node.log.malformed(link.peer_id, "request")
            return
        peer = self._routing.table.get(target)
        # Only an address the asker can dial: one of the transport it asked on.
        if peer is not None and peer.peer_addr is not None and peer.encryption == link.encryption:
            self._outbox.send(flags.broadcast, (flags.response, payload[1], [list(peer.peer_addr), payload[2]]))

    def on_response(self, link: Link, payload: tuple[Any, ...]) -> None:
        """A node gave the address of a reply's target: dial it, and send the reply once connected."""
        request_id = id_text(payload[1]) if len(payload) == 3 else None
        info = payload[2] if len(payload) == 3 else None
        address = parse_address(info[0]) if isinstance(info, list) and len(info) == 2 else None
        target = id_text(info[1]) if address is not None and isinstance(info, list) else None
        if request_id is None or target is None:
            self._node.log.malformed(link.peer_id, "response")
            return
        pending = self.requests.get(request_id)
        if pending is None:
            return
        if target != pending.target:
            self._log.warn("a response to request {request} names another node: ignored", request=request_id)
            return
        del self.requests[request_id]
        assert address is not None
        peer = self._routing.table.get(target)
        if peer is not None:
            self._send(peer, pending)
            return
        # Sent by link_ready once a link to the target is up: the one dialled
        # here, or one on its way already.
        self.waiting.setdefault(target, []).append(pending)
        dialing = self._exchange.dialing
        d = self._exchange.dial(address, target, link.encryption)
        if d is None:
            if address not in dialing and target not in dialing.values():
                self._drop(target, f"could not dial {address[0]}:{address[1]}")
            return

        def connected(peer_id: str) -> None:
            if peer_id != target:
                self._drop(target, f"{address[0]}:{address[1]} is another node")

        def failed(failure: Failure) -> None:
            self._drop(target, f"could not connect to {address[0]}:{address[1]}: {failure.getErrorMessage()}")

        d.addCallbacks(connected, failed)

    def _drop(self, target: str, reason: str) -> None:
        """Give up the replies waiting for ``target``, unless a dial may still bring it."""
        if target in self._routing.table or target in self._exchange.dialing.values():
            return
        given_up = self.waiting.pop(target, ())
        if given_up:
            self._log.warn(
                "could not reach {target} to reply: {reason}", target=LoggedID(target), reason=LoggedText(reason)
            )
        for pending in given_up:
            self._settle(pending, reason)
