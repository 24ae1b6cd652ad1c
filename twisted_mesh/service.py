"""
`.MeshService`: a mesh node as a Twisted service, with its listeners and
diallers named by endpoint strings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar, Union

from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    FirstError,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IProtocol,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mesh import flags
from twisted_mesh._admission import Slot, source_of
from twisted_mesh._connection import MeshFactory, MeshProtocol
from twisted_mesh._endpoints import (
    Address,
    client_endpoint,
    client_from_string,
    encryption_of,
    outward_address,
    server_endpoint,
    server_from_string,
)
from twisted_mesh._ids import ENCRYPTIONS, Protocol
from twisted_mesh._node import DEFAULT_LIMITS, Handler, Link, MeshNode, SendResult
from twisted_mesh._redial import MAX_DELAY, MissingPeers
from twisted_mesh._stats import NodeStats
from twisted_mesh.errors import SelfConnection
from twisted_mesh.limits import Limits
from twisted_mesh.message import Message
from twisted_mesh.tls import TLSOptions

DEFAULT_PROTOCOL = Protocol("mesh", "Plaintext")

#: The longest wait, in seconds, between two checks that the node is in the
#: mesh: that it dials the missing peers that are due, and has room for.
MAINTENANCE_INTERVAL = 15.0

#: The least seconds between two log lines that list the peers the node
#: still cannot reach.
SUMMARY_INTERVAL = 300.0

# zope interfaces do not support "|" at run time, hence Union.
#: Where to listen: an endpoint string, an endpoint, a port, or (host, port).
ListenAddress = Union[str, IStreamServerEndpoint, int, Address]  # noqa: UP007
#: What to dial: an endpoint string, an endpoint, or (host, port).
DialAddress = Union[str, IStreamClientEndpoint, Address]  # noqa: UP007


class MeshService(Service):
    """
    A mesh node: it listens on ``listen``, dials ``connect``, relays
    broadcasts and queues the messages meant for its user.

    Addresses are given in any of these forms:

    - an endpoint string: ``"tcp:4444"``, ``"ssl:4444:privateKey=key.pem"``,
      ``"ws:4444"``; for dialling ``"tcp:host=192.0.2.7:port=4444"``;
      Twisted's ``tls:`` listens with a folder of PEM files, its first
      argument, on ``port=`` (443 by default): ``"tls:/etc/mesh/pems:port=4444"``;
      it dials ``"tls:host=node.example:port=4444"``, checking the
      certificate;
    - an endpoint object;
    - a port number (listen only) or a ``(host, port)`` pair: the node's own
      transport (``protocol.encryption``) at that address, secured by ``tls``
      for ``'SSL'`` and ``'wss'``.

    The transport is part of the protocol ID, so each transport is a network
    of its own.  An endpoint string's prefix names its transport (``tcp:``,
    ``tcp6:`` and ``unix:`` are ``'Plaintext'``, ``ssl:`` and ``tls:`` are ``'SSL'``, ``ws:``
    and ``wss:`` are WebSocket); ports, pairs and endpoint objects use the
    main transport, ``protocol.encryption``.  A node that listens on several
    transports joins each one's network and relays broadcasts between them:
    a bridge, for instance between browsers (WebSocket) and py2p nodes (TCP).

    :param protocol: the subnet, and the main transport.
    :param listen: where to listen.
    :param connect: peers to dial once listening, and again when the node
        is not connected to them while it needs peers (it has fewer links it
        dialled than ``max_outgoing``): about a second after one leaves, then
        after a delay that doubles with each failed dial (or link that did
        not last), jittered, up to five minutes.  Past peers the node lost
        are dialled in the same way, until
        `.Limits.forget_lost_peer_after` has passed.
    :raise ValueError: when an endpoint string of ``listen`` or ``connect``
        cannot be parsed.
    :param tls: how ``'SSL'`` and ``'wss'`` links are secured; by default a
        self-signed certificate and no verification, as the references do.
    :param out_addr: the address peers should dial; by default, that of the
        first listener of the main transport, else of the first listener (a
        wildcard interface gives the LAN address).
    :param max_outgoing: how many connections peer exchange may dial: the
        node dials peers it hears of until it has that many.
    :param max_incoming: how many dialable peers that dialled this node it
        keeps (by default three times ``max_outgoing``, and at least 12):
        past it, a newcomer gets this node's handshake and other peers to
        dial, and is let go.  So a seed that every node dials first keeps a
        bounded number of links.
    :param limits: what the node accepts from peers and holds for them.
    :param reactor: the reactor to use; by default the global one.
    """

    _log = Logger()

    def __init__(
        self,
        protocol: Protocol = DEFAULT_PROTOCOL,
        listen: Sequence[ListenAddress] = (),
        connect: Sequence[DialAddress] = (),
        *,
        tls: TLSOptions | None = None,
        out_addr: Address | None = None,
        max_outgoing: int = 4,
        max_incoming: int | None = None,
        limits: Limits = DEFAULT_LIMITS,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        if protocol.encryption not in ENCRYPTIONS:
            raise ValueError(f"unknown transport {protocol.encryption!r}: use one of {', '.join(ENCRYPTIONS)}")
        self._tls = tls
        self._reactor = reactor
        self._node = MeshNode(
            protocol,
            reactor,
            out_addr=out_addr or ("127.0.0.1", 0),
            max_outgoing=max_outgoing,
            max_incoming=max_incoming,
            limits=limits,
        )
        self._factories: dict[tuple[str, bool], MeshFactory] = {}
        self._accepting: dict[str, _Accepting] = {}
        self._connections: set[MeshProtocol] = set()
        self._connecting: set[Deferred[IProtocol]] = set()
        self._listen = [self._server_endpoint(address) for address in listen]
        # Each bootstrap peer as given (for the log), with its endpoint and
        # transport unless it is a (host, port) pair, which the node dials.
        self._bootstrap: list[tuple[DialAddress, tuple[IStreamClientEndpoint, str] | None]] = [
            (address, None if isinstance(address, tuple) else self._client_endpoint(address, protocol.encryption))
            for address in connect
        ]
        # The bootstrap endpoints being dialled: not dialled again until that dial ends.
        self._bootstrap_dialling: set[int] = set()
        self._out_addr_given = out_addr is not None
        self._node.dialer = self._dial_address
        self._node.event_source = self
        self._node.close("the node has not started: start its service (or make a MeshSocket) first")
        self._ports: list[IListeningPort] = []
        self._redial: IDelayedCall | None = None
        # The bootstrap peers (by index) and the past peers the node misses,
        # with when to dial each again.  Only past peers are forgotten.
        self._missing_bootstrap: MissingPeers[int] = MissingPeers(reactor)
        self._missing_past: MissingPeers[tuple[Address, str]] = MissingPeers(reactor, limits.forget_lost_peer_after)
        # When the peers the node still cannot reach were last listed.
        self._summarised = -math.inf
        self._bootstrap_ids: dict[int, str] = {}
        self._bootstrap_known: dict[int, tuple[Address, str]] = {}
        self._bootstrap_self: set[int] = set()
        # The bootstrap peers dialled since the service started: later, they
        # are dialled only while the node needs peers.
        self._bootstrap_tried: set[int] = set()
        self._listener_addrs: dict[str, Address] = {}
        self._start: object | None = None
        self._node.peer_lost = self._peer_lost
        self._node.dial_failed = self._exchange_dial_failed
        self.listening: Deferred[list[IListeningPort]] = Deferred()
        """
        Fires with the listening ports once every listener is up, or fails
        with the first error, or with `.CancelledError` when the service
        stops first (a new Deferred each time the service starts).
        """

    # -- the node's identity -------------------------------------------------

    @property
    def protocol(self) -> Protocol:
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
    def tls(self) -> TLSOptions:
        """
        How this node's ``'SSL'`` and ``'wss'`` links are secured: as given, or
        a self-signed certificate made the first time it is needed.
        """
        if self._tls is None:
            self._tls = TLSOptions()
        return self._tls

    @property
    def routing_table(self) -> dict[str, MeshProtocol]:
        """The connected peers, by node ID: truthy once connected."""
        return self._node.routing_table  # type: ignore[return-value]

    @property
    def ports(self) -> list[IListeningPort]:
        """The ports this node listens on."""
        return list(self._ports)

    @property
    def stats(self) -> NodeStats:
        """Counters of what this node and its links did."""
        return self._node.stats

    def status(self) -> dict[str, Any]:
        """
        A snapshot of this node for people and monitors: its identity, its
        peers with what crossed each link, and its counters.
        """
        node = self._node
        peers = []
        for peer_id, link in sorted(node.routing_table.items()):
            assert isinstance(link, MeshProtocol)
            peers.append(
                {
                    "id": peer_id,
                    "address": list(link.peer_addr) if link.peer_addr else None,
                    "remote": str(link.remote_address()),
                    "direction": "out" if link.outgoing else "in",
                    "transport": link.encryption,
                    "ids": "bin" if link.ids_as_bin else "str",
                    "compression": link.compression_name(),
                    "frames_in": link.stats.frames_in,
                    "frames_out": link.stats.frames_out,
                    "bytes_in": link.stats.bytes_in,
                    "bytes_out": link.stats.bytes_out,
                }
            )
        stats = node.stats
        return {
            "id": node.id,
            "protocol": {
                "subnet": node.protocol.subnet,
                "encryption": node.protocol.encryption,
                "id": node.protocol.id,
            },
            "out_addr": list(node.out_addr),
            "out_addrs": {encryption: list(address) for encryption, address in node.out_addrs.items()},
            "uptime": self._reactor.seconds() - node.started,
            "peers": peers,
            "connections": len(self._connections),
            "pending": node.admission.pending,
            "seen": len(node.seen),
            "queued": len(node.queue),
            "frames_in": stats.frames_in,
            "frames_out": stats.frames_out,
            "bytes_in": stats.bytes_in,
            "bytes_out": stats.bytes_out,
            "relayed": stats.relayed,
            "delivered": stats.delivered,
            "dropped": dict(stats.dropped),
            "connections_made": dict(stats.connections),
            "handshake_failures": dict(stats.handshake_failures),
            "limit_hits": dict(stats.limit_hits),
            "failed_dials": stats.failed_dials,
            "trimmed": stats.trimmed,
            "heard_of": len(node.peer_book),
            "unreachable": len(self._missing_bootstrap.unreachable()) + len(self._missing_past.unreachable()),
        }

    # -- starting and stopping -----------------------------------------------

    def startService(self) -> None:
        """
        Listen on every ``listen`` endpoint, then dial every ``connect`` one.
        A service that runs already (a `.MeshSocket` added to an
        application, say) is left as it is.
        """
        if self.running:
            return
        super().startService()
        self._node.open()
        if self.listening.called:
            self.listening = Deferred()
        # Each start has a token of its own: ports that open for a start
        # that is over (the service stopped, or another listener failed)
        # are closed at once.
        start = self._start = object()
        # Every missing peer is due at once.
        self._missing_bootstrap.clear()
        self._missing_past.clear()
        self._bootstrap_tried.clear()
        listening = []
        for endpoint, encryption in self._listen:
            opening = maybeDeferred(endpoint.listen, self._accepting_factory(encryption))
            listening.append(opening.addCallback(self._opened, start))
        gatherResults(listening, consumeErrors=True).addCallbacks(
            self._listening, self._listen_failed, callbackArgs=(start,), errbackArgs=(start,)
        )

    def _opened(self, port: IListeningPort, start: object) -> IListeningPort:
        """Keep a port that opened, to close it on stop; close it now if its start is over."""
        if start is self._start:
            self._ports.append(port)
        else:
            self._close_port(port)
        return port

    def _close_port(self, port: IListeningPort) -> Deferred[Any]:
        def failed(failure: Failure) -> None:
            self._log.warn("could not stop listening on {port}: {error}", port=port, error=failure.getErrorMessage())

        return maybeDeferred(port.stopListening).addErrback(failed)

    def _listening(self, ports: list[IListeningPort], start: object) -> None:
        if start is not self._start:
            return
        self._ports = ports
        node = self._node
        addresses: dict[str, Address] = {}
        for port, (_, encryption) in zip(ports, self._listen, strict=True):
            outward = outward_address(port.getHost())
            given = self._out_addr_given and encryption == node.protocol.encryption
            if outward is not None and encryption not in addresses and not given:
                addresses[encryption] = outward
        for encryption, outward in addresses.items():
            # Replace what this service's listeners told peers before (a
            # restart may listen on other ports), but not what was set since.
            if node.out_addrs.get(encryption, outward) == self._listener_addrs.get(encryption, outward):
                node.out_addrs[encryption] = outward
        self._listener_addrs = addresses
        if not self._out_addr_given and node.out_addrs:
            node.out_addr = node.out_addrs.get(node.protocol.encryption) or next(iter(node.out_addrs.values()))
        self._log.info(
            "node {id} of {protocol} listening at {address}", id=self.id, protocol=self.protocol, address=self.out_addr
        )
        self.listening.callback(ports)
        self._maintain()

    def _maintain(self) -> None:
        """
        Keep the node in the mesh: dial each bootstrap peer it is not
        connected to (after the first time, only while the node needs
        peers) and, to fill its outgoing links, nodes it heard of and (also
        when it has no peer at all) the past peers it lost, each when it is
        due (see
        `.MissingPeers`: about a second after it left, then after delays that
        double with each failed dial, up to five minutes); forget the past
        peers missing for `.Limits.forget_lost_peer_after` seconds.  Check
        again when the next missing peer is due, or after
        `.MAINTENANCE_INTERVAL` seconds.  So a node, or a group of nodes cut
        off from the rest, re-joins once it can.
        """
        self._redial = None
        if not self.running:
            return
        node = self._node
        for index, (address, endpoint) in enumerate(self._bootstrap):
            peer_id = self._bootstrap_ids.get(index)
            if peer_id in node.routing_table:
                self._missing_bootstrap.reached(index)
                continue
            # Not one found to be this node, nor one whose dial is under way;
            # after the first dial, only while the node needs peers (a seed
            # that turned it away is not asked again while it has some).
            given_up_or_dialling = index in self._bootstrap_self or index in self._bootstrap_dialling
            wanted = index not in self._bootstrap_tried or self._needs_peers()
            if not given_up_or_dialling and wanted and self._missing_bootstrap.due(index):
                self._bootstrap_tried.add(index)
                self._dial_bootstrap(index, address, endpoint, peer_id)
        # Nodes heard of first: a past peer whose link did not last (a seed
        # that turned this node away) is dialled only when they do not fill
        # the node's links.
        self._dial_heard_of()
        self._dial_past_peers()
        self._summarise()
        self._schedule_maintenance()

    def _needs_peers(self) -> bool:
        """Whether the node has fewer links than peer exchange may dial, or none at all."""
        node = self._node
        return not node.routing_table or node.outgoing_count() < node.max_outgoing

    def _dial_heard_of(self) -> None:
        """
        While the node has room for links it dials, dial nodes it heard of
        (from peer exchange, or that a seed turned away), drawn at random;
        one that cannot be dialled is forgotten.
        """
        node = self._node
        room = node.max_outgoing - node.outgoing_count()
        if room <= 0:
            return
        # (The node skips the peers it is dialling already.)
        leave_out = frozenset((*node.routing_table, node.id))
        for address, peer_id in node.peer_book.sample(node.protocol.encryption, room, leave_out):
            dial = node.dial(address, peer_id, node.protocol.encryption)
            if dial is not None:
                dial.addErrback(self._heard_of_dial_failed, address, peer_id)

    def _heard_of_dial_failed(self, failure: Failure, address: Address, peer_id: str) -> None:
        self._node.peer_book.forget(address, self._node.protocol.encryption)
        self._node.stats.failed_dials += 1
        error = failure.getErrorMessage()
        self._log.debug("could not connect to {peer} at {address}: {error}", peer=peer_id, address=address, error=error)

    def _dial_past_peers(self) -> None:
        """
        Forget the past peers missing for too long, then dial those that are
        due, the latest first, as many as the node has room for (all of them
        when it has no peer).  A bootstrap peer's address is left to its own
        dials.
        """
        node, missing = self._node, self._missing_past
        bootstrap = set(self._bootstrap_known.values())
        connected = {(link.peer_addr, link.encryption) for link in node.routing_table.values()}
        lost = [known for known in node.known_addresses if known not in connected and known not in bootstrap]
        missing.retain(set(lost))
        for known in missing.forget_expired():
            lost.remove(known)
            del node.known_addresses[known]
            node.stats.limit_hits["forget_lost_peer_after"] += 1
            self._log.info(
                "forgot the past peer {peer}: missing for {seconds:.0f} s",
                peer=known[0],
                seconds=self.limits.forget_lost_peer_after,
            )
        due = [known for known in lost if missing.due(known)]
        room = node.max_outgoing - node.outgoing_count() if node.routing_table else len(due)
        for known in due[-room:] if room > 0 else []:
            # The node skips its own addresses and those it is dialling already.
            dial = node.dial(known[0], None, known[1])
            if dial is not None:
                dial.addCallbacks(
                    lambda _, known=known: missing.reached(known),
                    self._dial_failed,
                    errbackArgs=(known[0], missing, known),
                )

    def _dial_bootstrap(
        self,
        index: int,
        address: DialAddress,
        endpoint: tuple[IStreamClientEndpoint, str] | None,
        peer_id: str | None,
    ) -> None:
        """
        Dial the bootstrap peer ``address`` (through ``endpoint``, unless it is
        a pair) unless it is this node's own address, or it (or the peer
        ``peer_id``) is being dialled already.
        """
        node = self._node
        if endpoint is None:
            assert isinstance(address, tuple)
            # The node skips its own addresses and those it is dialling already.
            dial = node.dial(address, peer_id, node.protocol.encryption)
            if dial is None:
                return
        else:
            self._bootstrap_dialling.add(index)

            def ended(result: object) -> object:
                self._bootstrap_dialling.discard(index)
                return result

            # (An endpoint may raise at once: the round goes on.)
            dial = maybeDeferred(self._dial, *endpoint).addBoth(ended)
        dial.addCallbacks(
            self._met_bootstrap_peer, self._bootstrap_dial_failed, callbackArgs=(index,), errbackArgs=(index, address)
        )

    def _met_bootstrap_peer(self, peer_id: str, index: int) -> None:
        self._missing_bootstrap.reached(index)
        self._bootstrap_ids[index] = peer_id
        link = self._node.routing_table.get(peer_id)
        if link is not None and link.peer_addr is not None:
            self._bootstrap_known[index] = (link.peer_addr, link.encryption)

    def _bootstrap_dial_failed(self, failure: Failure, index: int, address: DialAddress) -> None:
        if failure.check(SelfConnection):
            self._bootstrap_self.add(index)
            self._missing_bootstrap.reached(index)
            self._log.warn("the bootstrap peer {peer} is this node: not dialling it again", peer=address)
            return
        self._dial_failed(failure, address, self._missing_bootstrap, index)

    def _exchange_dial_failed(self, failure: Failure, address: Address, encryption: str) -> None:
        """
        A dial to a peer that peer exchange told of failed: one to a past
        peer the node misses counts as one of that peer's failed dials
        (see `._dial_failed`); another is logged at debug level.
        """
        self._dial_failed(failure, address, self._missing_past, (address, encryption))

    def _dial_failed(self, failure: Failure, name: object, missing: MissingPeers[Any], peer: Hashable) -> None:
        """
        A dial the node made on its own failed, to ``peer`` of ``missing``
        (``name`` in the log): count it, and warn of the first failure since
        the peer was last connected; later ones are logged at debug level,
        and listed now and then by `._summarise`.  Dial again when it is due.
        """
        if not self.running:
            return  # (the dial was given up at the stop)
        self._node.stats.failed_dials += 1
        retry = missing.failed(peer)
        error = failure.getErrorMessage()
        if retry is None:
            self._log.debug("could not connect to {peer}: {error}", peer=name, error=error)
            return
        if retry.failures == 1:
            self._log.warn(
                "could not connect to {peer}: {error}; trying again in {delay:.1f} s, then less and less often "
                "(at least once every {most:.0f} s), logging further failures at debug level",
                peer=name,
                error=error,
                delay=retry.delay,
                most=MAX_DELAY,
            )
        else:
            self._log.debug(
                "could not connect to {peer} ({failures} failures in a row): {error}; trying again in {delay:.1f} s",
                peer=name,
                failures=retry.failures,
                error=error,
                delay=retry.delay,
            )
        self._schedule_maintenance()

    def _summarise(self) -> None:
        """
        List the peers the node has been unable to reach for
        `.SUMMARY_INTERVAL` seconds or more, at most once every
        `.SUMMARY_INTERVAL` seconds.
        """
        now = self._reactor.seconds()
        if now - self._summarised < SUMMARY_INTERVAL:
            return
        peers = [self._bootstrap[index][0] for index in self._missing_bootstrap.unreachable(SUMMARY_INTERVAL)]
        peers.extend(address for address, _ in self._missing_past.unreachable(SUMMARY_INTERVAL))
        if peers:
            self._summarised = now
            self._log.info(
                "still cannot reach these peers, missing for {minutes:.0f} minutes or more: {peers}; "
                "dialling each at least once every {most:.0f} s",
                count=len(peers),
                minutes=SUMMARY_INTERVAL / 60,
                peers=", ".join(map(str, peers)),
                most=MAX_DELAY,
            )

    def _schedule_maintenance(self) -> None:
        """
        Run `._maintain` when the next missing peer is due, or after
        `.MAINTENANCE_INTERVAL` seconds, unless it is to run sooner already.
        """
        if not self.running:
            return
        now = self._reactor.seconds()
        when = min(now + MAINTENANCE_INTERVAL, self._missing_bootstrap.next_due(), self._missing_past.next_due())
        if self._redial is not None:
            if self._redial.getTime() <= when:
                return
            self._redial.cancel()
        self._redial = self._reactor.callLater(when - now, self._maintain)

    def _peer_lost(self, link: Link, lasted: float) -> None:
        """
        A peer left after ``lasted`` seconds: dial it again in about a second
        (its delays start over), when it is a bootstrap peer or a past peer
        the node can dial; unless the link lasted less than `.SHORT_LIVED`
        seconds (the peer turned this node away, say): then its delays go
        on growing.  (While peers keep leaving, the earliest check already
        due stands.)
        """
        if not self.running:
            return
        for index, peer_id in self._bootstrap_ids.items():
            if peer_id == link.peer_id:
                self._missing_bootstrap.lost(index, lasted)
        if link.peer_addr is not None:
            known = (link.peer_addr, link.encryption)
            if known not in self._bootstrap_known.values():
                self._missing_past.lost(known, lasted)
        self._schedule_maintenance()
        if not self._node.routing_table and self._redial is not None:
            delay = self._redial.getTime() - self._reactor.seconds()
            self._log.info("no peers: dialling the known peers again in {delay:.1f} s", delay=delay)

    def _listen_failed(self, failure: Failure, start: object) -> None:
        if start is not self._start:
            return
        # The ports that did open close, and so do those still to open.
        self._start = None
        for port in self._ports:
            self._close_port(port)
        self._ports = []
        error = failure.value.subFailure if isinstance(failure.value, FirstError) else failure
        self._log.error("could not listen: {error}", error=error.getErrorMessage())
        self.listening.errback(error)

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, give up the dials under way, and close every
        connection; a connection accepted from now on (a WebSocket that was
        still opening, say) is closed at once.  `.listening`, if it has not
        fired, fails with `.CancelledError`.
        """
        super().stopService()
        self._node.close("the node is closed")
        if self._start is not None and not self.listening.called:
            self.listening.errback(CancelledError("the service stopped before it was listening"))
        self._start = None
        if self._redial is not None:
            self._redial.cancel()
            self._redial = None
        for connecting in list(self._connecting):
            connecting.cancel()
        waiting: list[Deferred[Any]] = [maybeDeferred(port.stopListening) for port in self._ports]
        self._ports = []
        for link in list(self._connections):
            waiting.append(link.closed)
            link.close("the node is stopping", error=False)
        return DeferredList(waiting).addCallback(lambda _: None)

    # -- dialling ------------------------------------------------------------

    def protocol_factory(self, encryption: str) -> Factory:
        """
        The factory of this node's accepted connections of a transport, for
        a listener the node does not own (a web site serving the mesh over
        WebSocket, say).  While the service is not running, a connection it
        is asked for is closed at once.  See `.advertise`.
        """
        return self._accepting_factory(encryption)

    def advertise(self, encryption: str, address: Address) -> None:
        """Tell peers of the transport ``encryption`` to dial this node at ``address``."""
        self._node.out_addrs[encryption] = address

    def withdraw(self, encryption: str, address: Address) -> None:
        """
        Stop telling peers of the transport ``encryption`` to dial this node
        at ``address`` (its listener there stopped), unless another address
        was advertised since.
        """
        if self._node.out_addrs.get(encryption) == address:
            del self._node.out_addrs[encryption]

    def _factory(self, encryption: str, outgoing: bool) -> MeshFactory:
        factory = self._factories.get((encryption, outgoing))
        if factory is None:
            factory = MeshFactory(self._node, outgoing, self._connections, encryption)
            self._factories[encryption, outgoing] = factory
        return factory

    def _accepting_factory(self, encryption: str) -> _Accepting:
        factory = self._accepting.get(encryption)
        if factory is None:
            factory = self._accepting[encryption] = _Accepting(self, self._factory(encryption, False))
        return factory

    def _server_endpoint(self, address: ListenAddress) -> tuple[IStreamServerEndpoint, str]:
        main = self.protocol.encryption
        # A WebSocket listener takes messages as large as frames, and gives a
        # connection the handshake's time to open its WebSocket.
        fitting = (self.limits.max_frame_size, self.limits.handshake_timeout)
        if isinstance(address, str):
            endpoint = _parsed(server_from_string, self._reactor, address, *fitting)
            return endpoint, encryption_of(address, main)
        if isinstance(address, int):
            address = ("", address)
        if isinstance(address, tuple):
            tls = self.tls if main in ("SSL", "wss") else None
            endpoint = server_endpoint(self._reactor, self.protocol, tls, *address, *fitting)
            return endpoint, main
        return address, main

    def _client_endpoint(self, address: DialAddress, encryption: str) -> tuple[IStreamClientEndpoint, str]:
        if isinstance(address, str):
            dialler = _parsed(client_from_string, self._reactor, address, self.limits.max_frame_size)
            return dialler, encryption_of(address, encryption)
        if isinstance(address, tuple):
            tls = self.tls if encryption in ("SSL", "wss") else None
            transport = Protocol(self.protocol.subnet, encryption)
            dialler = client_endpoint(self._reactor, transport, tls, *address, self.limits.max_frame_size)
            return dialler, encryption
        return address, encryption

    def connect(
        self,
        address: DialAddress | str,
        port: int | None = None,
        id: str | bytes | None = None,
        *,
        encryption: str | None = None,
    ) -> Deferred[str]:
        """
        Dial a peer.

        :param address: an endpoint string (``"tcp:host=h:port=4444"``), an
            endpoint, a ``(host, port)`` pair, or a host when ``port`` is given.
        :param port: the peer's port, when ``address`` is a host.
        :param id: the ID of the peer expected there, as py2p's and js2p's
            ``connect(addr, port, id)`` take it: when it is connected
            already, nothing is dialled; when another node answers, the
            link is closed and the dial fails with `.HandshakeFailed`.
            Nor is a ``(host, port)`` pair dialled when a peer that gave that
            address is connected.
        :param encryption: the transport of a pair or an endpoint object; by
            default the main one.  An endpoint string's prefix names its own.
        :return: a Deferred that fires with the peer's ID once its handshake
            is accepted.  It fails with `.ProtocolMismatch` when the peer's
            subnet is another; with `.HandshakeFailed` or a connection error
            when the peer speaks another transport or goes away.  Cancelling
            it gives the dial up, and closes the connection if it was made.
        :raise ValueError: when ``address`` is an endpoint string that cannot
            be parsed.
        :raise MeshClosed: when the node is closed (or its service has not
            started).
        """
        if port is not None:
            address = (str(address), port)
        endpoint, transport = self._client_endpoint(address, encryption or self.protocol.encryption)
        self._node.ensure_open()
        expected = id.decode("ascii") if isinstance(id, bytes) else id
        if expected is not None and expected in self._node.routing_table:
            return succeed(expected)
        if isinstance(address, tuple):
            # A peer connected at that address already: a second link to it
            # would be one too many.
            for peer_id, link in self._node.routing_table.items():
                if link.encryption == transport and expected in (None, peer_id) and address in _addresses_of(link):
                    return succeed(peer_id)
        return self._dial(endpoint, transport, expected)

    def _dial(self, endpoint: IStreamClientEndpoint, encryption: str, expected: str | None = None) -> Deferred[str]:
        """
        Dial ``endpoint`` over ``encryption``: a Deferred of the peer's ID, as
        `.connect` returns it.
        """
        link: MeshProtocol | None = None

        def cancel(result: Deferred[str]) -> None:
            if link is None:
                connecting.cancel()
            else:
                link.close("the dial was cancelled", error=False)

        result: Deferred[str] = Deferred(cancel)

        def connected(protocol: IProtocol) -> None:
            nonlocal link
            self._connecting.discard(connecting)
            assert isinstance(protocol, MeshProtocol)
            link = protocol
            link.expected_id = expected
            link.handshake_done.addCallbacks(handshake_done, failed)

        def handshake_done(peer_id: str) -> None:
            if not result.called:
                result.callback(peer_id)

        def failed(failure: Failure) -> None:
            self._connecting.discard(connecting)
            if not result.called:
                result.errback(failure)

        connecting = endpoint.connect(self._factory(encryption, True))
        self._connecting.add(connecting)
        connecting.addCallbacks(connected, failed)
        return result

    def disconnect(self, link: MeshProtocol) -> Deferred[None]:
        """
        Close the connection ``link`` (the ``conn`` a handler is given, or a
        value of `.routing_table`), as py2p's and js2p's
        ``disconnect(handler)`` do.

        :return: a Deferred that fires once it is closed.
        :raise ValueError: when ``link`` is not a connection of this node.
        """
        if not isinstance(link, MeshProtocol) or link.factory.node is not self._node:
            raise ValueError(f"{link!r} is not a connection of this node")
        link.close("disconnected by this node's user", error=False)
        return link.closed

    def _dial_address(self, host: str, port: int, encryption: str) -> Deferred[str]:
        return self.connect((host, port), encryption=encryption)

    # -- messages ------------------------------------------------------------

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

    def recv(self, quantity: int | None = None) -> Message | list[Message] | None:
        """
        Take received messages, oldest first: with no argument the next one
        or ``None``; with a number, a list of up to that many.
        """
        return self._node.recv(quantity)

    def next_message(self) -> Deferred[Message]:
        """A Deferred that fires with the next received message."""
        return self._node.next_message()

    def register_handler(self, handler: Handler) -> None:
        """
        Offer each received broadcast and whisper to ``handler(msg, conn)``
        before it is queued; a handler that returns true takes it.
        """
        self._node.register_handler(handler)

    def on(self, event: str, callback: Callable[[Any], Any]) -> None:
        """
        Call ``callback(self)`` each time ``event`` happens: ``'connect'`` when
        the node gets its first peer, ``'disconnect'`` when it loses its last
        one, ``'message'`` when a message arrives for the user (queued for
        `.recv`, or given to a waiting `.next_message`).
        """
        self._node.events.on(event, callback)

    def once(self, event: str, callback: Callable[[Any], Any]) -> None:
        """Like `.on`, for the next time ``event`` happens only."""
        self._node.events.once(event, callback)

    def request_peers(self) -> None:
        """Ask every peer for its peers, to dial those not connected."""
        self._node.request_peers()


def _addresses_of(link: Link) -> list[Address]:
    """Where a peer can be reached: the address it gives, and the one dialled."""
    addresses = [] if link.peer_addr is None else [link.peer_addr]
    if link.outgoing and isinstance(link, MeshProtocol):
        remote = link.remote_address()
        host, port = getattr(remote, "host", None), getattr(remote, "port", None)
        if isinstance(host, str) and isinstance(port, int):
            addresses.append((host, port))
    return addresses


class _Accepting(Factory):
    """
    The factory of a node's accepted connections of one transport: the
    node's own factory while its service runs.  A connection it is asked
    for while the service does not run (a WebSocket that was still opening
    when it stopped, say) is closed at once, and never reaches the node.

    Over WebSocket, a connection takes its place among the node's pending
    connections as soon as it is accepted, and its link is given that place
    once the WebSocket opens (an `OpeningFactory <.twisted_mesh.websocket.OpeningFactory>`): an opening handshake that
    never ends holds a pending place, as a mesh handshake that never comes
    does.
    """

    noisy = False

    def __init__(self, service: MeshService, links: MeshFactory) -> None:
        self._service = service
        self._links = links

    def logPrefix(self) -> str:
        # "MeshFactory starting on 4444", as before.
        return type(self._links).__name__

    def buildProtocol(self, addr: Any) -> TwistedProtocol | None:
        if not self._service.running:
            return _Refused()
        return self._links.buildProtocol(addr)

    def opening(self, peer: IAddress, drop: Callable[[str], None]) -> Slot | None:
        if not self._service.running:
            return None
        return self._links.node.admission.admit(source_of(peer), drop)

    def opened(self, token: object, protocol: IProtocol) -> None:
        assert isinstance(token, Slot)
        if isinstance(protocol, MeshProtocol):
            protocol.slot = token
        else:
            # Refused: the service stopped while the WebSocket opened.
            self.closed(token)

    def closed(self, token: object) -> None:
        assert isinstance(token, Slot)
        self._links.node.admission.release(token)


class _Refused(TwistedProtocol):
    """A connection that came when nothing may take it: it is closed at once."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


_Parsed = TypeVar("_Parsed")


def _parsed(parse: Callable[..., _Parsed], reactor: Any, description: str, *limits: float) -> _Parsed:
    """
    What ``parse`` makes of the endpoint string ``description`` with
    ``limits``; a `.ValueError` that names it if it cannot.
    """
    try:
        return parse(reactor, description, *limits)
    except Exception as e:
        raise ValueError(f"bad endpoint string {description!r}: {e}") from e
