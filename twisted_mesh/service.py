"""
`.MeshService`: a mesh node as a Twisted service, with its listeners and
diallers named by endpoint strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
)
from twisted.internet.interfaces import IListeningPort, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from twisted_mesh._awaiting import awaitable
from twisted_mesh._core.exchange import DEFAULT_MAX_OUTGOING
from twisted_mesh._core.link import Address
from twisted_mesh._core.node import MeshNode
from twisted_mesh._ids import Network, is_node_id
from twisted_mesh._logs import SERVICE, NodeLogger
from twisted_mesh._service.api import NodeAPI
from twisted_mesh._service.bootstrap import Bootstrap
from twisted_mesh._service.dialler import Dialler
from twisted_mesh._service.endpoints import (
    DialAddress,
    ListenAddress,
    address_text,
    dial_address,
    dialling_endpoint,
    listening_endpoint,
)
from twisted_mesh._service.listeners import Listeners
from twisted_mesh._service.rejoin import MAINTENANCE_INTERVAL, SUMMARY_INTERVAL, Rejoiner
from twisted_mesh._service.status import status_report
from twisted_mesh.keys import NodeKey
from twisted_mesh.limits import DEFAULT_LIMITS, Limits
from twisted_mesh.message import Connection
from twisted_mesh.tls import TLSOptions

__all__ = [
    "DEFAULT_PROTOCOL",
    "MAINTENANCE_INTERVAL",
    "SUMMARY_INTERVAL",
    "DialAddress",
    "ListenAddress",
    "MeshService",
]

DEFAULT_PROTOCOL = Network("mesh", "Plaintext")

_Service = TypeVar("_Service", bound="MeshService")


def allow_list(ids: Iterable[str]) -> frozenset[str]:
    """
    The node IDs of an allow-list, checked.

    :raise ValueError: naming an entry that is not a node ID.
    """
    if isinstance(ids, str):
        raise TypeError("allow is a list of node IDs, not one string")
    allowed = frozenset(ids)
    for node_id in allowed:
        if not isinstance(node_id, str) or not is_node_id(node_id):
            raise ValueError(f"allow: {node_id!r} is not a node ID")
    return allowed


class MeshService(NodeAPI, Service):
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
      for ``'SSL'`` and ``'wss'``; to dial, ``"HOST:PORT"`` (or
      ``"[IPv6]:PORT"``) is that pair too.

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
        cannot be parsed, or a port is out of range.
    :raise TypeError: when a port is not an int (``"4444"``, say).
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
    :param key: the node's key (see `.NodeKey`): its ID is the key's, the
        same across restarts.  A node of a signed network
        (``Network(..., signed=True)``) without one makes a new key.
    :param allow: on a signed network, the node IDs of the only peers let
        in (each proves its ID in the handshake); by default, any.
    :param reactor: the reactor to use; by default the global one.
    :raise ValueError: when ``allow`` is given for a network that is not
        signed, or an ID of it is not a node ID.
    """

    def __init__(
        self,
        protocol: Network = DEFAULT_PROTOCOL,
        listen: Sequence[ListenAddress] = (),
        connect: Sequence[DialAddress] = (),
        *,
        tls: TLSOptions | None = None,
        out_addr: Address | None = None,
        max_outgoing: int = DEFAULT_MAX_OUTGOING,
        max_incoming: int | None = None,
        limits: Limits = DEFAULT_LIMITS,
        key: NodeKey | None = None,
        allow: Iterable[str] | None = None,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._tls = tls
        self._reactor = reactor
        self._node = MeshNode(
            protocol,
            reactor,
            out_addr=out_addr or ("127.0.0.1", 0),
            max_outgoing=max_outgoing,
            max_incoming=max_incoming,
            limits=limits,
            key=key,
            allow=None if allow is None else allow_list(allow),
        )
        self._log = NodeLogger(SERVICE, self._node.id, self)
        self._dialler = Dialler(self._node, lambda: bool(self.running))
        # (The open connections, with or without a handshake.)
        self._connections = self._dialler.links
        endpoints = [listening_endpoint(reactor, address, protocol, lambda: self.tls, limits) for address in listen]
        self._listeners = Listeners(endpoints, self._dialler.accepting, self._node.id)
        # Each bootstrap peer as given (for the log), with its endpoint and
        # transport unless it is a (host, port) pair, which the node dials.
        peers = [dial_address(address) for address in connect]
        bootstrap: list[Bootstrap] = [
            (address, None if isinstance(address, tuple) else self._client_endpoint(address, protocol.encryption))
            for address in peers
        ]
        self._rejoiner = Rejoiner(self._node, reactor, bootstrap, self._dialler.dial)
        self._out_addr_given = out_addr is not None
        self._node.dialer = self._dial_address
        self._node.event_source = self
        self._node.peer_lost = self._rejoiner.peer_lost
        self._node.dial_failed = self._rejoiner.exchange_dial_failed
        self._node.close("the node has not started: start its service (or make a MeshSocket) first")
        self.listening: Deferred[list[IListeningPort]] = Deferred()
        """
        Fires with the listening ports once every listener is up, or fails
        with the first error, or with `.CancelledError` when the service
        stops first (a new Deferred each time the service starts).
        """

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
    def ports(self) -> list[IListeningPort]:
        """The ports this node listens on."""
        return self._listeners.ports

    def status(self) -> dict[str, Any]:
        """
        A snapshot of this node for people and monitors: its identity, its
        peers with what crossed each link, and its counters.
        """
        return status_report(self._node, self._connections, self._rejoiner.unreachable(), self._reactor.seconds())

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
        # Every missing peer is due at once.
        self._rejoiner.start()
        self._listeners.open().addCallbacks(self._listening, self._listen_failed)

    def _listening(self, ports: list[IListeningPort]) -> None:
        self._listeners.advertise(self._node, self._out_addr_given)
        self._log.info(
            "node {node} listening on {bound}, advertised as {address} (node ID {node_id}, {protocol})",
            bound=", ".join(self._listeners.bound()),
            address=address_text(self.out_addr),
            node_id=self.id,
            protocol=self.protocol,
        )
        self.listening.callback(ports)
        self._rejoiner.maintain()

    def _listen_failed(self, failure: Failure) -> None:
        self._log.error("could not listen: {error}", error=failure.getErrorMessage())
        self.listening.errback(failure)

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, give up the dials under way, and close every
        connection; a connection accepted from now on (a WebSocket that was
        still opening, say) is closed at once.  `.listening`, if it has not
        fired, fails with `.CancelledError`.

        :return: a Deferred that fires once every connection is closed.
            Stopping a service that is not running does no harm, and its
            Deferred fires too (once the connections still closing are).
        """
        super().stopService()
        self._node.close("the node is closed")
        if self._listeners.opening and not self.listening.called:
            self.listening.errback(CancelledError("the service stopped before it was listening"))
        self._rejoiner.stop()
        self._dialler.cancel_dials()
        waiting = self._listeners.close()
        waiting.extend(self._dialler.close_links())
        return DeferredList(waiting).addCallback(lambda _: None)

    # -- as a context manager ----------------------------------------------------

    def __enter__(self: _Service) -> _Service:
        """``with node:`` starts the service (a `.MeshSocket` runs already)."""
        self.startService()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """The end of ``with node:`` stops the service; its connections finish closing as the reactor runs."""
        self.stopService()

    async def __aenter__(self: _Service) -> _Service:
        """
        ``async with node:`` starts the service and waits until it listens;
        when it cannot, the service is stopped and the error raised.  It
        waits in a coroutine that Twisted runs and in an asyncio task
        alike (see :doc:`/asyncio`).
        """
        self.startService()
        entered: Deferred[_Service] = Deferred()

        def listening(result: object) -> object:
            if isinstance(result, Failure):
                self.stopService()
                entered.errback(result)
                return None
            entered.callback(self)
            return result

        self.listening.addBoth(listening)
        return await awaitable(entered)

    async def __aexit__(self, *exc_info: object) -> None:
        """The end of ``async with node:`` stops the service, and waits until every connection is closed."""
        await awaitable(self.stopService())

    # -- dialling ------------------------------------------------------------

    def protocol_factory(self, encryption: str) -> Factory:
        """
        The factory of this node's accepted connections of a transport, for
        a listener the node does not own (a web site serving the mesh over
        WebSocket, say).  While the service is not running, a connection it
        is asked for is closed at once.  See `.advertise`.
        """
        return self._dialler.accepting(encryption)

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

    def _client_endpoint(self, address: DialAddress, encryption: str) -> tuple[IStreamClientEndpoint, str]:
        max_frame_size = self.limits.max_frame_size
        return dialling_endpoint(self._reactor, address, self.protocol, encryption, lambda: self.tls, max_frame_size)

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
            endpoint, a ``(host, port)`` pair, ``"HOST:PORT"`` (or
            ``"[IPv6]:PORT"``), or a host when ``port`` is given.
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
            be parsed, or the port is out of range.
        :raise TypeError: when the port is not an int (``"4444"``, say).
        :raise MeshClosed: when the node is closed (or its service has not
            started).
        """
        address = dial_address(address if port is None else (str(address), port))
        endpoint, transport = self._client_endpoint(address, encryption or self.protocol.encryption)
        self._node.ensure_open()
        expected = id.decode("ascii") if isinstance(id, bytes) else id
        return self._dialler.connect(address, endpoint, transport, expected)

    def disconnect(self, link: Connection) -> Deferred[None]:
        """
        Close the connection ``link`` (the `.Connection` a handler is given,
        or a value of `.routing_table`), as py2p's and js2p's
        ``disconnect(handler)`` do.

        :return: a Deferred that fires once it is closed.
        :raise ValueError: when ``link`` is not a connection of this node.
        """
        return self._dialler.disconnect(link)

    def _dial_address(self, host: str, port: int, encryption: str) -> Deferred[str]:
        return self.connect((host, port), encryption=encryption)
