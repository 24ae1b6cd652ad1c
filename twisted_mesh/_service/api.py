"""
`.NodeAPI`: what a node's user does with it (its identity, sending and
receiving, handlers and events), each forwarded to the node core.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from twisted.internet.defer import Deferred

from twisted_mesh import flags
from twisted_mesh._core.inbox import Event
from twisted_mesh._core.link import Address
from twisted_mesh._core.node import MeshNode
from twisted_mesh._ids import Network
from twisted_mesh._stats import NodeStats
from twisted_mesh.limits import Limits
from twisted_mesh.message import Connection, Handler, Message, Messages, SendResult

_Node = TypeVar("_Node", bound="NodeAPI")


class NodeAPI:
    """
    The part of `.MeshService` that is the node's own API, as py2p's and
    js2p's sockets have it: each method forwards to the node.

    :ivar _node: the node.
    """

    _node: MeshNode

    @property
    def protocol(self) -> Network:
        """The network this node belongs to."""
        return self._node.protocol

    @property
    def id(self) -> str:
        """This node's ID, in base58."""
        return self._node.id

    @property
    def out_addr(self) -> Address:
        """The address this node asks peers to dial."""
        return self._node.out_addr

    @property
    def limits(self) -> Limits:
        """What this node accepts from peers and holds for them."""
        return self._node.limits

    @property
    def routing_table(self) -> dict[str, Connection]:
        """The connected peers' connections, by node ID."""
        return self._node.routing_table  # type: ignore[return-value]

    @property
    def stats(self) -> NodeStats:
        """Counters of what this node and its links did."""
        return self._node.stats

    def send(self, *packets: Any, flag: int = flags.broadcast, type: int = flags.broadcast) -> SendResult:
        """
        Send ``packets`` to the mesh; they arrive as ``(type, *packets)``.

        :param flag: `.flags.broadcast` relays them to every node of the
            mesh; `.flags.whisper` sends them to this node's peers only.
        :param type: the sub-flag, the first packet the receivers see.
        :return: which peers it was queued to (each gets it unless its
            connection is lost), and which not and why; true when it was
            queued to at least one peer.  See `.drained` to send no faster
            than the peers read.
        :raise TypeError: when a packet is not something msgpack can write.
        :raise ValueError: when the message is larger than a frame may be
            (`.Limits.max_frame_size`).
        """
        return self._node.send(packets, flag, type)

    def drained(self) -> Deferred[None]:
        """
        A Deferred that fires once what was sent is on its way: no peer has
        more waiting for it than its connection buffers (at once when none
        has).  A producer that sends faster than its peers read waits on it
        between batches (``await sock.drained()``), and so loses nothing to
        `.Limits.max_send_buffer`.  A peer that reads nothing for
        `.Limits.congestion_timeout` seconds is cut off, so that is the
        longest wait for one peer.
        """
        return self._node.drained()

    @overload
    def recv(self) -> Message | None: ...

    @overload
    def recv(self, quantity: None) -> Message | None: ...

    @overload
    def recv(self, quantity: int) -> list[Message]: ...

    def recv(self, quantity: int | None = None) -> Message | list[Message] | None:
        """
        Take received messages, oldest first: with no argument the next one
        or ``None``; with a number, a list of up to that many.
        """
        return self._node.recv(quantity)

    def next_message(self) -> Deferred[Message]:
        """
        A Deferred that fires with the next received message.  It fails
        with `.MeshClosed` when the node closes first, or is closed with
        nothing queued.
        """
        return self._node.next_message()

    def messages(self) -> Messages:
        """
        The received messages, as an asynchronous iterator, for a coroutine
        that Twisted runs or an asyncio task (see :doc:`/asyncio`)::

            async for msg in sock.messages():
                print(msg.packets)

        Each step takes the next message as `.next_message` does, and so
        from the same queue as `.recv`: a message goes to one taker only,
        whichever asked first (several iterators share the messages, they
        do not each get them all), and a handler that takes a message keeps
        it from all of them.  The iteration ends once the node is closed
        and nothing is queued (at once for a service that has not started).
        """
        return Messages(self._node.next_message)

    def register_handler(self, handler: Handler) -> None:
        """
        Offer each received broadcast and whisper to ``handler(msg, conn)``
        before it is queued; a handler that returns true takes it.  ``conn``
        is the `.Connection` the message came over.
        """
        self._node.register_handler(handler)

    def on(self: _Node, event: Event, callback: Callable[[_Node], object]) -> None:
        """
        Call ``callback(self)`` each time ``event`` happens: ``'connect'`` when
        the node gets its first peer, ``'disconnect'`` when it loses its last
        one, ``'message'`` when a message arrives for the user (queued for
        `.recv`, or given to a waiting `.next_message`).

        :raise ValueError: when ``event`` is none of these.
        """
        self._node.events.on(event, callback)

    def once(self: _Node, event: Event, callback: Callable[[_Node], object]) -> None:
        """
        Like `.on`, for the next time ``event`` happens only.

        :raise ValueError: when ``event`` is not ``'connect'``,
            ``'disconnect'`` or ``'message'``.
        """
        self._node.events.once(event, callback)

    def request_peers(self) -> None:
        """Ask every peer for its peers, to dial those not connected."""
        self._node.request_peers()

    def peers_of(self, peer_id: str) -> Deferred[list[tuple[Address, str]]]:
        """
        Ask the peer ``peer_id`` for its peers, over the mesh protocol (a
        ``request`` whisper, answered with a ``peers`` one).

        :return: a Deferred that fires with what the peer tells of: the
            nodes it would have this node dial, ``((host, port), node ID)``
            each (its peers of this link's transport, and nodes it heard
            of; this node and the peer itself left out).  It fails with
            `.ConnectionLost` when the link closes first.
        :raise KeyError: when ``peer_id`` is not a peer.
        """
        return self._node.ask_peers(self._node.routing_table[peer_id])
