"""
`.Inbox`: the user's side of a node: the messages delivered to its handlers
or queued for ``recv()``, and the `.Events` it emits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Literal, get_args

from twisted.internet.defer import Deferred, fail, succeed

from twisted_mesh import flags
from twisted_mesh._core.context import NodeContext
from twisted_mesh._core.link import Link
from twisted_mesh._frames import WireMessage
from twisted_mesh._logs import NODE, NodeLogger
from twisted_mesh.errors import MeshClosed
from twisted_mesh.message import Handler, Message, Reply

#: The most sub-flags that no handler took which the node remembers having
#: logged (it logs the first message of each, then counts them).
MAX_LOGGED_SUBFLAGS = 64

#: The events a node emits (see `.Events`).
Event = Literal["connect", "disconnect", "message"]
EVENTS: tuple[Event, ...] = get_args(Event)


class Events:
    """
    Named events with callbacks, as the references' ``on`` and ``once``.

    :param node_id: the ID of the node whose events they are (for the log).
    """

    def __init__(self, node_id: str) -> None:
        self._log = NodeLogger(NODE, node_id, self)
        self._callbacks: dict[str, list[tuple[Callable[..., Any], bool]]] = {}

    def on(self, event: Event, callback: Callable[..., Any]) -> None:
        """
        Call ``callback`` each time ``event`` happens.

        :raise ValueError: when ``event`` is not one of `.EVENTS`.
        """
        self._add(event, callback, False)

    def once(self, event: Event, callback: Callable[..., Any]) -> None:
        """
        Call ``callback`` the next time ``event`` happens, then forget it.

        :raise ValueError: when ``event`` is not one of `.EVENTS`.
        """
        self._add(event, callback, True)

    def _add(self, event: str, callback: Callable[..., Any], once: bool) -> None:
        if event not in EVENTS:
            known = ", ".join(repr(name) for name in EVENTS)
            raise ValueError(f"unknown event {event!r}: the events are {known}")
        self._callbacks.setdefault(event, []).append((callback, once))

    def emit(self, event: Event, *args: Any) -> None:
        """Call the callbacks of ``event``; one that raises is logged."""
        callbacks = self._callbacks.get(event)
        if not callbacks:
            return
        self._callbacks[event] = [entry for entry in callbacks if not entry[1]]
        for callback, _ in callbacks:
            try:
                callback(*args)
            except Exception:
                self._log.failure("the {event!r} callback {callback!r} raised", event=event, callback=callback)


class Inbox:
    """
    The messages for a node's user.

    :param node: the node's limits (of the queue), counters and log.
    :param reply: what a `.Message` replies with.
    :ivar queue: the messages waiting for ``recv()``, oldest first.
    :ivar events: the events the node emits.
    :ivar event_source: the object passed to event callbacks.
    """

    def __init__(self, node: NodeContext, reply: Reply, event_source: object) -> None:
        self._log = NodeLogger(NODE, node.id, self)
        self._node = node
        self._stats = node.stats
        self._reply = reply
        self.event_source = event_source
        self.events = Events(node.id)
        self.queue: deque[Message] = deque()
        # The size on the wire of each queued message, and their sum.
        self._queue_sizes: deque[int] = deque()
        self._queued_bytes = 0
        self._handlers: list[Handler] = []
        self._waiters: deque[Deferred[Message]] = deque()
        # Why the node takes no more messages of its user's, once it closed.
        self._closed: str | None = None
        self._logged_subflags: set[object] = set()

    # -- opening and closing ------------------------------------------------

    def open(self) -> None:
        """Take messages of the user's again (a service that starts)."""
        self._closed = None

    def close(self, reason: str) -> None:
        """Take no more messages of the user's; fail the `.next_message` Deferreds waiting."""
        self._closed = reason
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            waiter.errback(MeshClosed(reason))

    def ensure_open(self) -> None:
        """
        :raise MeshClosed: when the node is closed.
        """
        if self._closed is not None:
            raise MeshClosed(self._closed)

    # -- delivering ---------------------------------------------------------

    def deliver(self, link: Link, wire: WireMessage) -> None:
        """Offer a message that came on ``link`` to the handlers; else queue it for the user."""
        message = Message(wire, self._reply)
        self._stats.delivered += 1
        for handler in self._handlers:
            try:
                if handler(message, link):
                    return
            except Exception:
                self._log.failure("the handler {handler!r} raised", handler=handler)
        subflag = message.packets[0]
        if subflag not in (flags.broadcast, flags.whisper):
            self._unhandled(subflag)
            return
        if self._waiters:
            self._waiters.popleft().callback(message)
        else:
            self._enqueue(message, len(wire.body_in(wire.sender_is_bin)))
        self.events.emit("message", self.event_source)

    def _unhandled(self, subflag: object) -> None:
        """A message of sub-flag ``subflag`` that no handler took: counted, and logged the first time."""
        self._node.stats.dropped["unhandled"] += 1
        logged = self._logged_subflags
        if subflag in logged or len(logged) >= MAX_LOGGED_SUBFLAGS:
            return
        logged.add(subflag)
        self._log.info(
            "a message of sub-flag {subflag!r} came and no handler took it: dropped (register a handler for it); "
            "more are counted as dropped, reason unhandled",
            subflag=subflag,
        )

    def _enqueue(self, message: Message, size: int) -> None:
        """Queue ``message``, of ``size`` bytes on the wire, dropping the oldest past the limits."""
        limits = self._node.limits
        while self.queue and len(self.queue) >= limits.max_queue:
            self._take()
            self._node.log.hit("max_queue", "the receive queue is full: dropped its oldest message")
        while self.queue and self._queued_bytes + size > limits.max_queue_bytes:
            self._take()
            self._node.log.hit("max_queue_bytes", "the receive queue holds too many bytes: dropped its oldest message")
        self.queue.append(message)
        self._queue_sizes.append(size)
        self._queued_bytes += size

    def _take(self) -> Message:
        """The oldest queued message, out of the queue."""
        self._queued_bytes -= self._queue_sizes.popleft()
        return self.queue.popleft()

    # -- the user's calls ---------------------------------------------------

    def register_handler(self, handler: Handler) -> None:
        """
        Offer every broadcast and whisper to ``handler(message, link)`` before
        it is queued; a handler that returns true takes it.
        """
        self._handlers.append(handler)

    def recv(self, quantity: int | None = None) -> Message | list[Message] | None:
        """
        Take received messages, oldest first: with no argument the next one
        or ``None``; with a number, a list of up to that many.
        """
        if quantity is None:
            return self._take() if self.queue else None
        return [self._take() for _ in range(min(quantity, len(self.queue)))]

    def next_message(self) -> Deferred[Message]:
        """
        A Deferred that fires with the next message (the queue's oldest).
        It fails with `.MeshClosed` when the node closes first, or is
        closed with nothing queued.
        """
        if self.queue:
            return succeed(self._take())
        if self._closed is not None:
            return fail(MeshClosed(self._closed))
        d: Deferred[Message] = Deferred(lambda d: self._waiters.remove(d))
        self._waiters.append(d)
        return d
