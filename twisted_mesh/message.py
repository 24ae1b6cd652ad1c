"""
`.Message`: a message as the user receives it; `.SendResult`: what a send
or a reply did with a message; `.Connection`: what a handler sees of the
connection a message came over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, runtime_checkable
from typing import Protocol as Interface

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from twisted_mesh._awaiting import awaitable
from twisted_mesh._frames import WireMessage
from twisted_mesh._logs import SHORT_ID
from twisted_mesh.errors import MeshClosed


class SendResult:
    """
    What a send (`.twisted_mesh.MeshService.send`) or a reply
    (`.twisted_mesh.Message.reply`) did with a message.

    :ivar queued: the peers it was queued to, by node ID: each gets it
        unless its connection is lost.
    :ivar skipped: the peers it was not queued to, with the reason (the
        connection is closing, the peer's send buffer is full (see
        `.Limits.max_send_buffer`), a reply's target could not be reached).
    :ivar pending: the peers it will be queued to once they are reached: a
        reply to a node this node is not connected to waits while the mesh
        is asked for the node's address and the node is dialled.  Each
        moves to ``queued`` or ``skipped`` then; `.settled` tells when.
    """

    __slots__ = ("queued", "skipped", "pending", "_waiters")

    def __init__(self) -> None:
        self.queued: list[str] = []
        self.skipped: dict[str, str] = {}
        self.pending: tuple[str, ...] = ()
        self._waiters: list[Deferred[SendResult]] | None = None

    def __bool__(self) -> bool:
        return bool(self.queued)

    def __repr__(self) -> str:
        pending = f", pending={list(self.pending)!r}" if self.pending else ""
        return f"SendResult(queued={self.queued!r}, skipped={self.skipped!r}{pending})"

    def settled(self) -> Deferred[SendResult]:
        """
        A Deferred that fires with this result once nothing is ``pending``
        (at once when nothing is): a reply to a node that was not a peer
        is then in ``queued``, or in ``skipped`` with the reason.
        """
        if not self.pending:
            return succeed(self)
        d: Deferred[SendResult] = Deferred()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(d)
        return d

    def _settle(self, peer_id: str, refused: str | None) -> None:
        """``peer_id``, pending, was queued to (when ``refused`` is None) or skipped."""
        self.pending = tuple(pending for pending in self.pending if pending != peer_id)
        if refused is None:
            self.queued.append(peer_id)
        else:
            self.skipped[peer_id] = refused
        waiters = self._waiters
        if waiters is not None and not self.pending:
            self._waiters = None
            for waiter in waiters:
                waiter.callback(self)


@runtime_checkable
class Connection(Interface):
    """
    A connection of the node to a peer, as a handler (see
    `.MeshService.register_handler`) and `.MeshService.routing_table` give
    it; `.MeshService.disconnect` closes it.  Each connection of a node is
    one (``isinstance(conn, Connection)`` holds; its class is private: rely
    on these attributes only).

    :ivar peer_id: the peer's node ID, once its handshake arrived (a
        handler always sees it set).
    :ivar peer_addr: the ``(host, port)`` the peer asks others to dial it
        at, once its handshake arrived; ``None`` for a peer that cannot be
        dialled (a browser, say).
    :ivar outgoing: whether this node dialled the connection (else the peer
        did).
    :ivar encryption: its transport: ``'Plaintext'`` (TCP), ``'SSL'``
        (TLS), ``'ws'`` or ``'wss'`` (WebSocket).
    """

    peer_id: str | None
    peer_addr: tuple[str, int] | None
    outgoing: bool
    encryption: str

    @property
    def closing(self) -> bool:
        """Whether the connection is closing (or closed): it is no longer the peer's."""


#: A handler of received messages: called with each message and the
#: `.Connection` it came over (for a relayed broadcast, the peer that
#: relayed it, not the node that sent it), it takes the message when it
#: returns true (see `.MeshService.register_handler`).
Handler = Callable[["Message", Connection], object]


#: What a message replies with: called with the sender's node ID and the
#: packets, it whispers them to the sender (see `.Message.reply`).
Reply = Callable[[str, tuple[Any, ...]], SendResult]


class Message:
    """
    A message this node received for its user: a broadcast or a whisper,
    most often.

    :ivar packets: the payload, sub-flag first: a broadcast of
        ``send("this is", "a test")`` arrives as ``(0, "this is", "a test")``.
    :ivar sender: the node ID of the node that sent it.
    :ivar id: the message ID: 32 bytes, the same on every node.
    :ivar time: the UTC second the sender stamped it with.
    :ivar msg_type: its main flag (most often `.flags.broadcast` or
        `.flags.whisper`).
    """

    __slots__ = ("packets", "sender", "id", "time", "msg_type", "_reply")

    def __init__(self, wire: WireMessage, reply: Reply) -> None:
        self.packets: tuple[Any, ...] = wire.payload
        self.sender: str = wire.sender
        self.id: bytes = wire.key
        self.time: int = wire.time
        self.msg_type: int = wire.msg_type
        self._reply = reply

    def reply(self, *packets: Any) -> SendResult:
        """
        Whisper ``packets`` back to the sender: they arrive as
        ``(flags.whisper, *packets)``.

        When this node is not connected to the sender, it asks the mesh for
        the sender's address, dials it and sends the reply once connected.

        :return: whether the reply was queued to the sender, or skipped and
            why; when the sender is not a peer, the sender is in ``pending``
            until it is reached or given up (``settled()`` tells when).
        :raise TypeError: when a packet is not something msgpack can write.
        :raise ValueError: when the reply is larger than a frame may be.
        :raise MeshClosed: when the node is closed.
        """
        return self._reply(self.sender, packets)

    def __repr__(self) -> str:
        return f"<Message from {self.sender[:SHORT_ID]}... packets={self.packets!r}>"


class Messages:
    """
    The messages a node receives, as an asynchronous iterator (see
    `.MeshService.messages`)::

        async for msg in sock.messages():
            print(msg.packets)

    Each step takes the next message as `.MeshService.next_message` does;
    the iteration ends once the node is closed and no message is left.
    A step is a `~twisted.internet.defer.Deferred` in a coroutine that
    Twisted runs, an `asyncio.Future` in an asyncio task.

    :param next_message: what takes the next message.
    """

    def __init__(self, next_message: Callable[[], Deferred[Message]]) -> None:
        self._next_message = next_message

    def __aiter__(self) -> Messages:
        return self

    def __anext__(self) -> Awaitable[Message]:
        return awaitable(self._next_message().addErrback(_end_on_close))


def _end_on_close(failure: Failure) -> Message:
    """A step that failed because the node closed: the iteration's end."""
    failure.trap(MeshClosed)
    raise StopAsyncIteration
