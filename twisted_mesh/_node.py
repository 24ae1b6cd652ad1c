"""
The mesh node's core: routing table, relay with its seen-set, peer exchange,
requests for replies, handlers, the user's queue and events.

Nothing here does I/O.  Links (one per connection, see `.Link`) hand the node
the messages they read; the node answers through them, and asks its owner to
dial an address through the ``dialer`` it is given.
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Callable
from typing import Any
from typing import Protocol as Interface

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mesh import flags
from twisted_mesh._admission import Admission
from twisted_mesh._frames import FrameError, WireMessage
from twisted_mesh._ids import Protocol, b58decode_int, b58encode_int, id_text, new_node_id
from twisted_mesh._peerbook import PeerBook
from twisted_mesh._seen import MESSAGE_LIFETIME, SeenSet
from twisted_mesh._stats import NodeStats
from twisted_mesh.errors import MeshClosed
from twisted_mesh.limits import Limits
from twisted_mesh.message import Message

DEFAULT_LIMITS = Limits()

#: The least seconds between two log lines about one limit.
LIMIT_LOG_INTERVAL = 10.0

#: How many addresses of past peers a node keeps, to re-dial when alone.
MAX_KNOWN_ADDRESSES = 16

#: The longest host name an address may have (the longest DNS name).
MAX_HOST_LENGTH = 253

#: The least seconds between two answers to one peer's requests for peers.
PEERS_ANSWER_INTERVAL = 1.0

#: How many dialable peers that dialled it a node keeps, at least, whatever
#: its ``max_outgoing``: see `.MeshNode.max_incoming`.
MIN_INCOMING = 12

#: The most newcomers a node turned away that it remembers, as nodes with
#: room for peers; and how many peers messages may name each before it is
#: forgotten (a newcomer named in a peers message is dialled about one time
#: in four: it then has about half its room taken).
MAX_NEWCOMERS = 64
NEWCOMER_TELLS = 24

#: The least seconds between two requests for peers a node that keeps too
#: many peers sends, to learn which of its links are redundant.
TRIM_ASK_INTERVAL = 5.0

#: The most entries of a peers message this node sends: a random choice of
#: its peers and of the nodes it heard of; and the fewest it makes up with
#: those when it names newcomers first (see `.MeshNode._send_peers`).
PEERS_SENT = 16
MIN_PEERS_SENT = 4

#: The most sub-flags that no handler took which the node remembers having
#: logged (it logs the first message of each, then counts them).
MAX_LOGGED_SUBFLAGS = 64

#: Seconds after which a second link dialled by the same end replaces the
#: first (a peer that lost its link dials again; a browser reconnects),
#: rather than being a twin dialled at about the same time.
REDIAL_AFTER = 5.0

#: The types of packets a message may hold that need no look at its
#: structure before it is sent.
_SCALARS = frozenset((int, float, str, bytes, bool, type(None)))

Address = tuple[str, int]
Handler = Callable[[Message, "Link"], Any]
Dialer = Callable[[str, int, str], "Deferred[str]"]


class Link(Interface):
    """
    What the node needs of a connection to a peer.

    :ivar peer_id: the peer's node ID once its handshake arrived.
    :ivar peer_addr: the address the peer says others should dial.
    :ivar outgoing: whether this node dialled the connection.
    :ivar ids_as_bin: whether the peer writes IDs as bin (else as str).
    :ivar encryption: the transport of the link (``'Plaintext'``, ``'SSL'``,
        ``'ws'``, ``'wss'``).
    """

    peer_id: str | None
    peer_addr: Address | None
    outgoing: bool
    ids_as_bin: bool
    encryption: str

    @property
    def closing(self) -> bool:
        """Whether the link is closing: it is no longer the peer's link."""

    def dialler_port(self) -> int | None:
        """
        The port the dialling end connected from, which both ends see (the
        dialler as its own, the other end as its peer's), or ``None`` when
        the connection has no ports.
        """

    def send(self, msg: WireMessage) -> str | None:
        """
        Write ``msg`` to the peer, its sender field in the peer's form.

        :return: ``None`` when it was written; else why not.
        """

    def close(self, reason: str, *, error: bool = True, read_on: bool = False) -> None:
        """
        Close the connection, logging ``reason`` (as a warning if ``error``);
        with ``read_on``, still hand over what the peer sent before it saw
        the close.
        """

    def pause_reading(self) -> None:
        """Stop reading from the peer until `.resume_reading`."""

    def resume_reading(self) -> None:
        """Read from the peer again."""


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


class Events:
    """
    Named events with callbacks, as the references' ``on`` and ``once``.
    """

    _log = Logger()

    def __init__(self) -> None:
        self._callbacks: dict[str, list[tuple[Callable[..., Any], bool]]] = {}

    def on(self, event: str, callback: Callable[..., Any]) -> None:
        """Call ``callback`` each time ``event`` happens."""
        self._callbacks.setdefault(event, []).append((callback, False))

    def once(self, event: str, callback: Callable[..., Any]) -> None:
        """Call ``callback`` the next time ``event`` happens, then forget it."""
        self._callbacks.setdefault(event, []).append((callback, True))

    def emit(self, event: str, *args: Any) -> None:
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


class _PendingReply:
    """A reply waiting for its target's address, then for a link to it."""

    __slots__ = ("request_id", "target", "packets", "result", "expiry")

    def __init__(self, request_id: str, target: str, packets: tuple[Any, ...], result: SendResult) -> None:
        self.request_id = request_id
        self.target = target
        self.packets = packets
        self.result = result
        self.expiry: IDelayedCall | None = None


def parse_address(value: object) -> Address | None:
    """
    Read an address field, ``[host, port]``, from the wire.

    :return: the address, or ``None`` when it has the wrong shape, or a host
        longer than `.MAX_HOST_LENGTH`.
    """
    if not isinstance(value, list) or len(value) != 2:
        return None
    host, port = value
    if isinstance(host, bytes) and len(host) <= MAX_HOST_LENGTH:
        host = host.decode("ascii", "replace")
    if not isinstance(host, str) or not 0 < len(host) <= MAX_HOST_LENGTH:
        return None
    if type(port) is not int or not 0 < port < 65536:
        return None
    return host, port


class MeshNode:
    """
    One mesh node's state and rules, with no I/O of its own.

    A node may have links of several transports: each link is part of its
    own transport's network (its handshake carries that transport's protocol
    ID), and the node relays broadcasts between them all.

    :ivar protocol: the node's subnet, and its main transport.
    :ivar id: this node's ID.
    :ivar out_addr: the address this node tells peers of its main transport
        to dial.
    :ivar out_addrs: the addresses for peers of other transports, by
        transport.
    :ivar routing_table: the peers whose handshake arrived, by node ID.
    :ivar max_outgoing: how many connections peer exchange may dial.
    :ivar max_incoming: how many dialable peers that dialled this node it
        keeps: past it, a newcomer gets this node's handshake and peers to
        dial, and its link is closed (it is turned away); a node that keeps
        more (a js2p node is never turned away, see `._is_full_for`; a link
        settled by `._resolve_conflict`) closes the most redundant ones.
        Peers that cannot be dialled (browsers) do not count, nor are they
        turned away.
    :ivar peer_book: the nodes heard of, that peer exchange tells peers to
        dial.
    :ivar dialer: called with ``(host, port, encryption)`` to dial a peer;
        its Deferred fires with the peer's ID once the handshake is over.
    :ivar peer_lost: called with the link of each peer that leaves the
        routing table, and the seconds it was in it.
    :ivar dial_failed: called with ``(failure, address, encryption)`` when a
        dial to a peer that peer exchange told of fails; by default, the
        failure is logged.
    :ivar event_source: the object passed to event callbacks.
    :ivar clock: where the node reads the time and schedules timeouts.
    :ivar limits: what the node accepts and holds.
    :ivar stats: counters of what the node and its links did.
    :ivar admission: the slots of the node's connections, handshaken or
        not; those without a handshake are bounded on their own.
    :ivar known_addresses: the addresses of the latest peers, with their
        transports, oldest first (the service drops those of the peers
        missing for `.Limits.forget_lost_peer_after` seconds).
    :ivar started: when the node was made, by ``clock``.
    """

    _log = Logger()

    def __init__(
        self,
        protocol: Protocol,
        clock: IReactorTime,
        *,
        out_addr: Address = ("127.0.0.1", 0),
        node_id: str | None = None,
        max_outgoing: int = 4,
        max_incoming: int | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.protocol = protocol
        self.limits = limits
        self.id = node_id or new_node_id(protocol)
        self.out_addr = out_addr
        self.out_addrs: dict[str, Address] = {}
        self.max_outgoing = max_outgoing
        self.max_incoming = max(3 * max_outgoing, MIN_INCOMING) if max_incoming is None else max_incoming
        self.peer_book = PeerBook()
        self.newcomers = PeerBook(MAX_NEWCOMERS, tell_limit=NEWCOMER_TELLS)
        self.routing_table: dict[str, Link] = {}
        # The routing table as it is, for the relay to go through.
        self._peers: tuple[tuple[str, Link], ...] = ()
        self.dialer: Dialer | None = None
        self.peer_lost: Callable[[Link, float], None] | None = None
        self.dial_failed: Callable[[Failure, Address, str], None] = self._dial_failed
        self.event_source: object = self
        self.events = Events()
        self.seen = SeenSet(
            limits.max_seen,
            lambda: self.limit_hit("max_seen", "forgot broadcasts early to keep at most {most}", most=limits.max_seen),
        )
        self.known_addresses: dict[tuple[Address, str], None] = {}
        self.stats = NodeStats()
        self.admission = Admission(limits, self.limit_hit)
        self.started = clock.seconds()
        self.queue: deque[Message] = deque()
        # The size on the wire of each queued message, and their sum.
        self._queue_sizes: deque[int] = deque()
        self._queued_bytes = 0
        self.clock = clock
        self._id_number = b58decode_int(self.id)
        self._handlers: list[Handler] = []
        self._waiters: deque[Deferred[Message]] = deque()
        # Replies waiting for their target's address, by request ID; and
        # those waiting for a link to their target, by target.
        self._requests: dict[str, _PendingReply] = {}
        self._replies: dict[str, list[_PendingReply]] = {}
        self._dialing: dict[Address, str | None] = {}
        self._congested: set[Link] = set()
        self._drain_waiters: list[Deferred[None]] = []
        self._limit_logged: dict[str, float] = {}
        # When each link's last request for peers was answered.
        self._peers_answered: dict[Link, float] = {}
        # When each link in the routing table entered it.
        self._joined: dict[Link, float] = {}
        # How many peers each peer listed in its last peers message, and
        # when the node last asked for them to learn which are redundant.
        self._listed: dict[Link, int] = {}
        self._asked_for_peers = -TRIM_ASK_INTERVAL
        # Why the node takes no more messages of its user's, once it closed.
        self._closed: str | None = None
        self._logged_subflags: set[object] = set()

    # -- opening and closing ------------------------------------------------

    def open(self) -> None:
        """Take messages of the user's again (a service that starts)."""
        self._closed = None

    def close(self, reason: str) -> None:
        """
        Take no more messages of the user's: ``send()`` and ``reply()`` raise
        `.MeshClosed` with ``reason``, and so do the ``next_message()``
        Deferreds waiting; replies waiting for their target are given up.
        """
        self._closed = reason
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            waiter.errback(MeshClosed(reason))
        pending = [*self._requests.values(), *(p for waiting in self._replies.values() for p in waiting)]
        self._requests, self._replies = {}, {}
        for reply in pending:
            self._settle_reply(reply, f"the node closed before the reply could go: {reason}")

    def ensure_open(self) -> None:
        """
        :raise MeshClosed: when the node is closed.
        """
        if self._closed is not None:
            raise MeshClosed(self._closed)

    def limit_hit(self, limit: str, text: str, *, warn: bool = True, **fields: Any) -> None:
        """
        Count a limit that bit, and log it (as a warning, or as information
        for one that bites in the node's normal work): the first time, then
        at most once every `.LIMIT_LOG_INTERVAL` seconds per limit.
        """
        self.stats.limit_hits[limit] += 1
        now = self.clock.seconds()
        if now - self._limit_logged.get(limit, -LIMIT_LOG_INTERVAL) >= LIMIT_LOG_INTERVAL:
            self._limit_logged[limit] = now
            count = self.stats.limit_hits[limit]
            log = self._log.warn if warn else self._log.info
            log("limit {limit} ({count} so far): " + text, limit=limit, count=count, **fields)

    def out_addr_for(self, encryption: str) -> Address:
        """The address this node tells peers of the transport ``encryption`` to dial."""
        return self.out_addrs.get(encryption, self.out_addr)

    # -- links ------------------------------------------------------------

    def link_ready(self, link: Link) -> bool:
        """
        Enter a link whose handshake arrived into the routing table.

        When the peer already has a link (that is not closing), the one
        dialled by the node with the higher ID is kept (the peer applies the
        same rule) and the other is closed.

        :return: whether ``link`` was kept.
        """
        peer_id = link.peer_id
        assert peer_id is not None
        existing = self.routing_table.get(peer_id)
        if existing is not None and existing is not link and not existing.closing:
            keep, drop = self._resolve_conflict(existing, link)
            drop.close("a second connection to the same peer", error=False, read_on=True)
            if keep is existing:
                return False
        elif self._is_full_for(link):
            self._turn_away(link)
            return False
        was_empty = not self.routing_table
        self.routing_table[peer_id] = link
        self._joined[link] = self.clock.seconds()
        self._peers = tuple(self.routing_table.items())
        if link.peer_addr is not None:
            known = (link.peer_addr, link.encryption)
            self.known_addresses.pop(known, None)
            self.known_addresses[known] = None
            while len(self.known_addresses) > MAX_KNOWN_ADDRESSES:
                del self.known_addresses[next(iter(self.known_addresses))]
        if self._congested and link not in self._congested:
            # A peer slow to read waits: this one must not feed it either.
            link.pause_reading()
        self._send_peers(link)
        for pending in self._replies.pop(peer_id, ()):
            self._send_reply(link, pending)
        if was_empty:
            self.events.emit("connect", self.event_source)
        if not link.outgoing:
            self._trim()
        return True

    # -- how many peers ---------------------------------------------------

    def _incoming(self) -> list[Link]:
        """The dialable peers that dialled this node (those `.max_incoming` counts)."""
        return [
            link
            for link in self.routing_table.values()
            if not link.outgoing and link.peer_addr is not None and not link.closing
        ]

    def _is_full_for(self, link: Link) -> bool:
        """
        Whether ``link``, a new peer's, is one incoming peer too many to keep.
        A js2p node (the one kind that writes IDs as str) is kept all the
        same, and a redundant link trimmed instead: on one host, it dials
        none of the peers it is given (it takes each for one it has, as
        they share its host), and would stay alone.
        """
        if link.outgoing or link.peer_addr is None or not link.ids_as_bin:
            return False
        return len(self._incoming()) >= self.max_incoming

    def _turn_away(self, link: Link) -> None:
        """
        Answer a newcomer that is one peer too many with peers to dial, and
        let it go; it is a node with room for peers, to tell others of.
        What it sent before it saw the close is still read.
        """
        assert link.peer_addr is not None and link.peer_id is not None
        self._send_peers(link, newcomers_first=True)
        self.newcomers.heard_of(link.peer_addr, link.encryption, link.peer_id)
        self.limit_hit(
            "max_incoming",
            "{peer} dialled this node, which keeps {most} peers that dialled it: sent it others to dial",
            warn=False,
            peer=link.peer_id,
            most=self.max_incoming,
        )
        link.close("this node has as many peers as it keeps: sent it others to dial", error=False, read_on=True)

    def _trim(self) -> None:
        """
        Close links of peers that dialled this node while it keeps more
        than `.max_incoming`: those of the peers that listed the most other
        peers (the most redundant), never one of a peer that listed fewer
        than two, which might have no other.  When too few are known to
        have others, ask those peers for their peers (at most every
        `.TRIM_ASK_INTERVAL` seconds): their answers trim again.
        """
        incoming = self._incoming()
        excess = len(incoming) - self.max_incoming
        if excess <= 0:
            return
        # (Not a js2p node's: it would dial none of its peers' peers again.)
        trimmable = [link for link in incoming if link.ids_as_bin]
        redundant = [link for link in trimmable if self._listed.get(link, 0) >= 2]
        now = self.clock.seconds()
        if len(redundant) < excess and now - self._asked_for_peers >= TRIM_ASK_INTERVAL:
            self._asked_for_peers = now
            for link in trimmable:
                if link not in redundant:
                    self._whisper(link, (flags.request, b"*"))
        redundant.sort(key=lambda link: self._listed[link], reverse=True)
        for link in redundant[:excess]:
            self.stats.trimmed += 1
            self._log.info(
                "closing the link of {peer}, which has {others} other peers: this node keeps {most} that dialled it",
                peer=link.peer_id,
                others=self._listed[link],
                most=self.max_incoming,
            )
            link.close("trimmed: the peer has others, and this node keeps fewer", error=False, read_on=True)

    def _resolve_conflict(self, existing: Link, new: Link) -> tuple[Link, Link]:
        """Return (the link to keep, the link to close)."""
        if existing.outgoing == new.outgoing:
            # Both dialled by the same end.  Long after the first: the dialler
            # has lost the first one (which may linger here, half open) and
            # dials again, or wants the new one; both ends keep the new one.
            if self.clock.seconds() - self._joined.get(existing, 0.0) >= REDIAL_AFTER:
                return new, existing
            # At about the same time: each end may have seen the other one
            # first, so keep the one from the lower port, which both see.
            ports = existing.dialler_port(), new.dialler_port()
            if ports[0] is not None and ports[1] is not None and ports[1] < ports[0]:
                return new, existing
            return existing, new
        assert new.peer_id is not None
        we_are_higher = self._id_number > b58decode_int(new.peer_id)
        # Keep the connection the higher node dialled.
        dialled_by_higher = new if new.outgoing == we_are_higher else existing
        other = existing if dialled_by_higher is new else new
        return dialled_by_higher, other

    def link_congested(self, link: Link) -> None:
        """
        A peer is slow to read: stop reading from the other peers (which
        would feed it more) until it catches up.  Links that are congested
        themselves keep reading, so two slow peers never wait on each other.
        """
        self._congested.add(link)
        if len(self._congested) == 1:
            self._log.info("peer {peer} is slow to read: pausing the others", peer=link.peer_id)
            for other in list(self.routing_table.values()):
                if other is not link:
                    other.pause_reading()
        else:
            # Paused for another slow peer until now.
            link.resume_reading()

    def link_drained(self, link: Link) -> None:
        """A slow peer caught up: read again once no peer is slow."""
        self._congested.discard(link)
        if self._congested:
            # Another peer is still slow: this one must not feed it.
            link.pause_reading()
        else:
            self._congestion_over()

    def _congestion_over(self) -> None:
        """No peer is slow any more: read from every peer, and tell those waiting for it."""
        for link in list(self.routing_table.values()):
            link.resume_reading()
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def drained(self) -> Deferred[None]:
        """
        A Deferred that fires once no peer is congested: none has more
        waiting for it than its transport buffers (at once when none has).
        A peer that reads nothing for `.Limits.congestion_timeout` seconds
        is cut off, so it is waited for that long at most.
        """
        if not self._congested:
            return succeed(None)
        d: Deferred[None] = Deferred(self._drain_waiters.remove)
        self._drain_waiters.append(d)
        return d

    def link_lost(self, link: Link) -> None:
        """Forget a link that closed; emit ``'disconnect'`` when it was the last peer."""
        if link in self._congested:
            self._congested.discard(link)
            if not self._congested:
                self._congestion_over()
        self._peers_answered.pop(link, None)
        self._listed.pop(link, None)
        joined = self._joined.pop(link, None)
        if link.peer_id is not None and self.routing_table.get(link.peer_id) is link:
            del self.routing_table[link.peer_id]
            self._peers = tuple(self.routing_table.items())
            if self.peer_lost is not None:
                lasted = self.clock.seconds() - joined if joined is not None else 0.0
                self.peer_lost(link, lasted)
            if not self.routing_table:
                self.events.emit("disconnect", self.event_source)

    def outgoing_count(self) -> int:
        """The connections this node dialled or is dialling."""
        return sum(1 for link in self.routing_table.values() if link.outgoing) + len(self._dialing)

    # -- receiving --------------------------------------------------------

    def message_received(self, link: Link, msg: WireMessage) -> None:
        """
        Take a message a link read (not a handshake, not a renegotiation):
        relay it when it is a new broadcast, then act on its sub-flag, or
        deliver it.
        """
        msg_type = msg.msg_type
        if msg_type == flags.broadcast:
            now = self.clock.seconds()
            if not now - MESSAGE_LIFETIME <= msg.time <= now + MESSAGE_LIFETIME:
                # Too old; or stamped so far ahead that its key would be kept
                # (and take room in the seen-set) for longer than a lifetime.
                self.stats.dropped["expired"] += 1
                way = "older than" if msg.time < now else "stamped ahead by more than"
                self._log.debug("dropped a broadcast {way} {lifetime} s", way=way, lifetime=MESSAGE_LIFETIME)
                return
            # The node's own broadcasts come back by other paths: they are
            # known by their sender, not kept in the seen-set.
            if msg.sender == self.id or not self.seen.add(msg.key, msg.time, now):
                self.stats.dropped["duplicate"] += 1
                return
            origin = self.routing_table.get(msg.sender)
            relayed = 0
            for _, peer in self._peers:
                if peer is not link and peer is not origin and peer.send(msg) is None:
                    relayed += 1
            self.stats.relayed += relayed
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

    def _deliver(self, link: Link, wire: WireMessage) -> None:
        message = Message(wire, self)
        self.stats.delivered += 1
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
        self.stats.dropped["unhandled"] += 1
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
        limits = self.limits
        while self.queue and len(self.queue) >= limits.max_queue:
            self._take()
            self.limit_hit("max_queue", "the receive queue is full: dropped its oldest message")
        while self.queue and self._queued_bytes + size > limits.max_queue_bytes:
            self._take()
            self.limit_hit("max_queue_bytes", "the receive queue holds too many bytes: dropped its oldest message")
        self.queue.append(message)
        self._queue_sizes.append(size)
        self._queued_bytes += size

    def _take(self) -> Message:
        """The oldest queued message, out of the queue."""
        self._queued_bytes -= self._queue_sizes.popleft()
        return self.queue.popleft()

    # -- peer exchange ----------------------------------------------------

    def _send_peers(self, link: Link, *, newcomers_first: bool = False) -> None:
        """
        Tell a peer of up to `.PEERS_SENT` nodes to dial, drawn at random
        from this node's peers and the nodes it heard of (so that the nodes
        told of a seed spread over the mesh, not all over its oldest peers);
        only nodes the peer can dial: of its link's transport.

        :param newcomers_first: name the newcomers this node turned away
            (nodes with room for peers, unlike a full node's own), and the
            others only when there are too few of them: for a newcomer that
            is turned away in turn.
        """
        encryption = link.encryption
        peers = {
            peer_id: peer.peer_addr
            for peer_id, peer in self.routing_table.items()
            if peer.peer_addr is not None and peer is not link and peer.encryption == encryption
        }
        leave_out = frozenset((*peers, self.id, link.peer_id or ""))
        chosen = self.newcomers.sample(encryption, PEERS_SENT, leave_out) if newcomers_first else []
        if len(chosen) < MIN_PEERS_SENT:
            leave_out |= {peer_id for _, peer_id in chosen}
            choice = [(address, peer_id) for peer_id, address in peers.items()]
            choice += self.peer_book.sample(encryption, PEERS_SENT, leave_out)
            chosen += random.sample(choice, min(PEERS_SENT - len(chosen), len(choice)))
        entries = [[list(address), self._wire_id(link, peer_id)] for address, peer_id in chosen]
        self._whisper(link, (flags.peers, entries))

    def _on_peers(self, link: Link, payload: tuple[Any, ...]) -> None:
        peers = []
        entries = payload[1] if len(payload) == 2 else None
        if not isinstance(entries, list):
            self._malformed(link, "peers message")
            return
        if len(entries) > self.limits.max_peers_per_message:
            self.limit_hit(
                "max_peers_per_message",
                "{peer} sent {entries} peers; considering the first {most}",
                peer=link.peer_id,
                entries=len(entries),
                most=self.limits.max_peers_per_message,
            )
            entries = entries[: self.limits.max_peers_per_message]
        for entry in entries:
            if not isinstance(entry, list) or len(entry) != 2:
                address, peer_id = None, None
            else:
                address, peer_id = parse_address(entry[0]), id_text(entry[1])
            if address is None or peer_id is None:
                self._malformed(link, "peers message")
                return
            peers.append((address, peer_id))
        self._listed[link] = len(peers)
        for address, peer_id in peers:
            if peer_id != self.id:
                self.peer_book.heard_of(address, link.encryption, peer_id)
        if not link.outgoing and link.peer_id is not None and self.routing_table.get(link.peer_id) is link:
            self._trim()
        # In random order: other nodes list their peers oldest first, and
        # dialling them in that order would make the oldest nodes hubs.
        random.shuffle(peers)
        for address, peer_id in peers:
            if self.outgoing_count() >= self.max_outgoing:
                break
            if peer_id != self.id and peer_id not in self.routing_table:
                d = self.dial(address, peer_id, link.encryption)
                if d is not None:
                    d.addErrback(self.dial_failed, address, link.encryption)

    def dial(self, address: Address, peer_id: str | None = None, encryption: str | None = None) -> Deferred[str] | None:
        """
        Dial ``address`` over ``encryption`` (by default the main transport)
        unless it, or the peer ``peer_id``, is connected or being dialled
        already.

        :return: the dialler's Deferred, or ``None`` when nothing was dialled.
        """
        if self.dialer is None or address in self._dialing or address in self._own_addresses():
            return None
        if peer_id is not None and (peer_id in self.routing_table or peer_id in self._dialing.values()):
            return None
        self._dialing[address] = peer_id
        # (A dialer may raise at once, on an address its endpoint refuses.)
        d: Deferred[str] = maybeDeferred(self.dialer, *address, encryption or self.protocol.encryption)

        def done(result: str | Failure) -> str | Failure:
            del self._dialing[address]
            return result

        return d.addBoth(done)

    def _own_addresses(self) -> set[Address]:
        return {self.out_addr, *self.out_addrs.values()}

    def _malformed(self, link: Link, what: str) -> None:
        self.stats.dropped["malformed"] += 1
        self._log.warn("dropped a malformed {what} from {peer}", what=what, peer=link.peer_id)

    def _dial_failed(self, failure: Failure, address: Address, encryption: str) -> None:
        self._log.info("could not connect to {address}: {error}", address=address, error=failure.getErrorMessage())

    def request_peers(self) -> None:
        """Ask every peer for its routing table."""
        for link in list(self.routing_table.values()):
            self._whisper(link, (flags.request, b"*" if link.ids_as_bin else "*"))

    # -- replies ----------------------------------------------------------

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
        :raise MeshClosed: when the node is closed.
        """
        self.ensure_open()
        # Refused now if it cannot be sent, whenever it would go.
        reply = self._new_message(flags.whisper, (flags.whisper, *packets))
        result = SendResult()
        link = self.routing_table.get(target)
        if link is not None:
            result._settle(target, link.send(reply))
            return result
        if not self.routing_table:
            self._log.warn("could not reply to {target}: no peer to ask for its address", target=target)
            result._settle(target, "not connected to it, nor to any node to ask for its address")
            return result
        request_id = b58encode_int(int.from_bytes(os.urandom(32), "big"))
        if len(self._requests) >= self.limits.max_pending_replies:
            dropped = self._requests.pop(next(iter(self._requests)))
            most = self.limits.max_pending_replies
            self.limit_hit("max_pending_replies", "dropped the oldest reply waiting for an address")
            self._settle_reply(dropped, f"given up: more than max_pending_replies ({most}) replies waited")
        pending = self._requests[request_id] = _PendingReply(request_id, target, packets, result)
        pending.expiry = self.clock.callLater(MESSAGE_LIFETIME, self._reply_expired, pending)
        result.pending = (target,)
        self._log.info("not connected to {target}: asking the mesh for its address", target=target)
        self._send_new(flags.broadcast, (flags.request, request_id, target.encode("ascii")))
        return result

    def _reply_expired(self, pending: _PendingReply) -> None:
        pending.expiry = None
        target = pending.target
        if self._requests.get(pending.request_id) is pending:
            del self._requests[pending.request_id]
            reason = f"no node gave the address of {target} within {MESSAGE_LIFETIME} s"
        else:
            waiting = self._replies.get(target, [])
            if pending in waiting:
                waiting.remove(pending)
            if not waiting:
                self._replies.pop(target, None)
            reason = f"{target} was not reached within {MESSAGE_LIFETIME} s"
        self._log.warn("a reply to {target} was given up: {reason}", target=target, reason=reason)
        self._settle_reply(pending, reason)

    def _settle_reply(self, pending: _PendingReply, refused: str | None) -> None:
        """A waiting reply went (``refused`` is None) or was given up: say so in its result."""
        if pending.expiry is not None and pending.expiry.active():
            pending.expiry.cancel()
        pending.expiry = None
        pending.result._settle(pending.target, refused)

    def _send_reply(self, link: Link, pending: _PendingReply) -> None:
        """Send a reply that waited, now that its target is a peer."""
        self._settle_reply(pending, self._whisper(link, (flags.whisper, *pending.packets)))

    def _on_request(self, link: Link, msg: WireMessage) -> None:
        payload = msg.payload
        if len(payload) == 2 and id_text(payload[1]) == "*":
            now = self.clock.seconds()
            if now - self._peers_answered.get(link, -PEERS_ANSWER_INTERVAL) >= PEERS_ANSWER_INTERVAL:
                self._peers_answered[link] = now
                self._send_peers(link)
            return
        target = id_text(payload[2]) if len(payload) == 3 else None
        if target is None or id_text(payload[1]) is None or msg.msg_type != flags.broadcast:
            self._malformed(link, "request")
            return
        peer = self.routing_table.get(target)
        # Only an address the asker can dial: one of the transport it asked on.
        if peer is not None and peer.peer_addr is not None and peer.encryption == link.encryption:
            self._send_new(flags.broadcast, (flags.response, payload[1], [list(peer.peer_addr), payload[2]]))

    def _on_response(self, link: Link, payload: tuple[Any, ...]) -> None:
        request_id = id_text(payload[1]) if len(payload) == 3 else None
        info = payload[2] if len(payload) == 3 else None
        address = parse_address(info[0]) if isinstance(info, list) and len(info) == 2 else None
        target = id_text(info[1]) if address is not None and isinstance(info, list) else None
        if request_id is None or target is None:
            self._malformed(link, "response")
            return
        pending = self._requests.get(request_id)
        if pending is None:
            return
        if target != pending.target:
            self._log.warn("a response to request {request} names another node: ignored", request=request_id)
            return
        del self._requests[request_id]
        assert address is not None
        peer = self.routing_table.get(target)
        if peer is not None:
            self._send_reply(peer, pending)
            return
        # Sent by link_ready once a link to the target is up: the one dialled
        # here, or one on its way already.
        self._replies.setdefault(target, []).append(pending)
        d = self.dial(address, target, link.encryption)
        if d is None:
            if address not in self._dialing and target not in self._dialing.values():
                self._drop_replies(target, f"could not dial {address[0]}:{address[1]}")
            return

        def connected(peer_id: str) -> None:
            if peer_id != target:
                self._drop_replies(target, f"{address[0]}:{address[1]} is another node")

        def failed(failure: Failure) -> None:
            self._drop_replies(target, f"could not connect to {address[0]}:{address[1]}: {failure.getErrorMessage()}")

        d.addCallbacks(connected, failed)

    def _drop_replies(self, target: str, reason: str) -> None:
        """Give up the replies waiting for ``target``, unless a dial may still bring it."""
        if target in self.routing_table or target in self._dialing.values():
            return
        given_up = self._replies.pop(target, ())
        if given_up:
            self._log.warn("could not reach {target} to reply: {reason}", target=target, reason=reason)
        for pending in given_up:
            self._settle_reply(pending, reason)

    # -- sending ----------------------------------------------------------

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
        self.ensure_open()
        return self._send_new(flag, (type, *packets))

    def _new_message(self, flag: int, payload: tuple[Any, ...]) -> WireMessage:
        """
        A new message of this node's.

        :raise TypeError: when the payload holds a value msgpack cannot write.
        :raise ValueError: when peers with this node's limits would refuse
            it: larger than a frame may be, lists and maps nested too deeply
            or too many of them.
        """
        msg = WireMessage.create(flag, self.id, self.now(), payload)
        body, limits = msg.body_in(True), self.limits
        size, most = len(body), limits.max_frame_size
        if size > most:
            raise ValueError(f"the message takes {size} bytes, more than the frame limit of {most}")
        if size > limits.max_items or not _SCALARS.issuperset(map(type, payload)):
            # Read as a peer reads it (most messages hold no list to check).
            try:
                WireMessage.from_body(body, (), limits.max_frame_size, limits.max_depth, limits.max_items)
            except FrameError as e:
                raise ValueError(f"peers would refuse the message: {e}") from None
        return msg

    def _send_new(self, flag: int, payload: tuple[Any, ...]) -> SendResult:
        """Write a new message of this node's to every peer."""
        msg = self._new_message(flag, payload)
        result = SendResult()
        for peer_id, link in self._peers:
            refused = link.send(msg)
            if refused is None:
                result.queued.append(peer_id)
            else:
                result.skipped[peer_id] = refused
        return result

    def _whisper(self, link: Link, payload: tuple[Any, ...]) -> str | None:
        """Whisper ``payload`` to one peer: ``None`` when it was queued, else why not."""
        return link.send(WireMessage.create(flags.whisper, self.id, self.now(), payload, link.ids_as_bin))

    def _wire_id(self, link: Link, node_id: str) -> str | bytes:
        return node_id.encode("ascii") if link.ids_as_bin else node_id

    def now(self) -> int:
        """The time to stamp a message with: whole UTC seconds."""
        return int(self.clock.seconds())

    # -- the user's side --------------------------------------------------

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
