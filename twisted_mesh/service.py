"""
L{MeshService}: a mesh node as a Twisted service, with its listeners and
diallers named by endpoint strings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, FirstError, gatherResults, maybeDeferred
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocol, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_mesh import flags
from twisted_mesh._connection import MeshFactory, MeshProtocol
from twisted_mesh._endpoints import Address, client_string, outward_address
from twisted_mesh._frames import MAX_FRAME_SIZE
from twisted_mesh._ids import Protocol
from twisted_mesh._node import Handler, MeshNode
from twisted_mesh.message import Message

DEFAULT_PROTOCOL = Protocol("mesh", "Plaintext")


class MeshService(Service):
    """
    A mesh node: it listens on C{listen}, dials C{connect}, relays
    broadcasts and queues the messages meant for its user.

    :param protocol: the network to join (subnet and transport).
    :param listen: endpoint strings to listen on, such as C{"tcp:4444"}.
    :param connect: endpoint strings of peers to dial once listening, such
        as C{"tcp:host=10.0.0.2:port=4444"}.
    :param out_addr: the address peers should dial; by default, that of the
        first listener (a wildcard interface gives the LAN address).
    :param max_outgoing: how many connections peer exchange may dial.
    :param max_frame_size: the largest frame body accepted, in bytes.
    :param reactor: the reactor to use; by default the global one.
    """

    _log = Logger()

    def __init__(
        self,
        protocol: Protocol = DEFAULT_PROTOCOL,
        listen: Sequence[str] = (),
        connect: Sequence[str] = (),
        *,
        out_addr: Address | None = None,
        max_outgoing: int = 4,
        max_frame_size: int = MAX_FRAME_SIZE,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._listen = list(listen)
        self._bootstrap = list(connect)
        self._out_addr_given = out_addr is not None
        self._node = MeshNode(protocol, reactor, out_addr=out_addr or ("127.0.0.1", 0), max_outgoing=max_outgoing)
        self._node.dialer = self._dial_address
        self._node.event_source = self
        connections: set[MeshProtocol] = set()
        self._connections = connections
        self._server_factory = MeshFactory(self._node, False, connections, max_frame_size)
        self._client_factory = MeshFactory(self._node, True, connections, max_frame_size)
        self._ports: list[IListeningPort] = []
        self.listening: Deferred[list[IListeningPort]] = Deferred()
        """Fires with the listening ports once every listener is up."""

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
    def routing_table(self) -> dict[str, MeshProtocol]:
        """The connected peers, by node ID: truthy once connected."""
        return self._node.routing_table  # type: ignore[return-value]

    @property
    def ports(self) -> list[IListeningPort]:
        """The ports this node listens on."""
        return list(self._ports)

    # -- starting and stopping -----------------------------------------------

    def startService(self) -> None:
        """Listen on every C{listen} endpoint, then dial every C{connect} one."""
        super().startService()
        listening = [
            serverFromString(self._reactor, description).listen(self._server_factory) for description in self._listen
        ]
        gatherResults(listening, consumeErrors=True).addCallbacks(self._listening, self._listen_failed)

    def _listening(self, ports: list[IListeningPort]) -> None:
        self._ports = ports
        if not self._out_addr_given:
            for port in ports:
                address = outward_address(port.getHost())
                if address is not None:
                    self._node.out_addr = address
                    break
        self._log.info(
            "node {id} of {protocol} listening at {address}", id=self.id, protocol=self.protocol, address=self.out_addr
        )
        self.listening.callback(ports)
        for description in self._bootstrap:
            self.connect(description).addErrback(self._log_dial_failure, description)

    def _listen_failed(self, failure: Failure) -> None:
        error = failure.value.subFailure if isinstance(failure.value, FirstError) else failure
        self._log.error("could not listen: {error}", error=error.getErrorMessage())
        self.listening.errback(error)

    def _log_dial_failure(self, failure: Failure, description: str) -> None:
        self._log.warn("could not connect to {peer}: {error}", peer=description, error=failure.getErrorMessage())

    def stopService(self) -> Deferred[None]:
        """Stop listening and close every connection."""
        super().stopService()
        waiting: list[Deferred[Any]] = [maybeDeferred(port.stopListening) for port in self._ports]
        self._ports = []
        for link in list(self._connections):
            waiting.append(link.closed)
            link.close("the node is stopping", error=False)
        return DeferredList(waiting).addCallback(lambda _: None)

    # -- dialling ------------------------------------------------------------

    def connect(self, endpoint: str | IStreamClientEndpoint, port: int | None = None) -> Deferred[str]:
        """
        Dial a peer.

        :param endpoint: an endpoint string (C{"tcp:host=h:port=4444"}), an
            endpoint, or a host name when C{port} is given.
        :param port: the peer's port, when C{endpoint} is a host.
        :return: a Deferred that fires with the peer's ID once its handshake
            is accepted; it fails with L{ProtocolMismatch} when the peer
            belongs to another network.
        """
        if port is not None:
            endpoint = client_string(self.protocol, str(endpoint), port)
        client: IStreamClientEndpoint = (
            clientFromString(self._reactor, endpoint) if isinstance(endpoint, str) else endpoint
        )
        return client.connect(self._client_factory).addCallback(_handshake_done)

    def _dial_address(self, host: str, port: int) -> Deferred[str]:
        return self.connect(host, port)

    # -- messages ------------------------------------------------------------

    def send(self, *packets: Any, flag: int = flags.broadcast, type: int = flags.broadcast) -> None:
        """
        Send C{packets} to the mesh; they arrive as C{(type, *packets)}.

        :param flag: L{flags.broadcast} relays them to every node of the
            mesh; L{flags.whisper} sends them to this node's peers only.
        :param type: the sub-flag, the first packet the receivers see.
        :raise TypeError: when a packet is not something msgpack can write.
        """
        self._node.send(packets, flag, type)

    def recv(self, quantity: int | None = None) -> Message | list[Message] | None:
        """
        Take received messages, oldest first: with no argument the next one
        or L{None}; with a number, a list of up to that many.
        """
        return self._node.recv(quantity)

    def next_message(self) -> Deferred[Message]:
        """A Deferred that fires with the next received message."""
        return self._node.next_message()

    def register_handler(self, handler: Handler) -> None:
        """
        Offer each received broadcast and whisper to C{handler(msg, conn)}
        before it is queued; a handler that returns true takes it.
        """
        self._node.register_handler(handler)

    def on(self, event: str, callback: Callable[[Any], Any]) -> None:
        """
        Call C{callback(self)} each time C{event} happens: C{'connect'} when
        the node gets its first peer, C{'message'} when a message is queued.
        """
        self._node.events.on(event, callback)

    def once(self, event: str, callback: Callable[[Any], Any]) -> None:
        """Like L{on}, for the next time C{event} happens only."""
        self._node.events.once(event, callback)

    def request_peers(self) -> None:
        """Ask every peer for its peers, to dial those not connected."""
        self._node.request_peers()


def _handshake_done(link: IProtocol) -> Deferred[str]:
    assert isinstance(link, MeshProtocol)
    return link.handshake_done
