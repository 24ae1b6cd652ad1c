"""
A node's listeners: the ports it opens at each start of its service, and the
addresses they tell peers to dial.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, FirstError, gatherResults, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from twisted_mesh._core.link import Address
from twisted_mesh._core.node import MeshNode
from twisted_mesh._logs import SERVICE, NodeLogger
from twisted_mesh._service.endpoints import address_text, outward_address


class Listeners:
    """
    Listens on endpoints, each with the factory of its transport, from
    `.open` to `.close`.

    :param endpoints: the endpoints, each with the transport it carries.
    :param factory: the factory of the connections a transport accepts.
    :param node_id: the ID of the node that listens (for the log).
    """

    def __init__(
        self, endpoints: Sequence[tuple[IStreamServerEndpoint, str]], factory: Callable[[str], Factory], node_id: str
    ) -> None:
        self._log = NodeLogger(SERVICE, node_id, self)
        self._endpoints = list(endpoints)
        self._factory = factory
        self._ports: list[IListeningPort] = []
        # Each start has a token of its own: ports that open for a start
        # that is over (the listeners closed, or another listener failed)
        # are closed at once.
        self._start: object | None = None
        # The addresses the listeners told peers to dial, by transport.
        self._advertised: dict[str, Address] = {}

    @property
    def ports(self) -> list[IListeningPort]:
        """The ports open."""
        return list(self._ports)

    @property
    def opening(self) -> bool:
        """Whether `.open` was called, and neither `.close` nor a failure to listen came since."""
        return self._start is not None

    def open(self) -> Deferred[list[IListeningPort]]:
        """
        Listen on every endpoint.

        :return: a Deferred that fires with the ports once every one is open,
            or fails with the first error (the other ports are closed then);
            it never fires when `.close` (or another `.open`) comes first.
        """
        start = self._start = object()
        result: Deferred[list[IListeningPort]] = Deferred()
        listening = []
        for endpoint, encryption in self._endpoints:
            opening = maybeDeferred(endpoint.listen, self._factory(encryption))
            listening.append(opening.addCallback(self._opened, start))
        gatherResults(listening, consumeErrors=True).addCallbacks(
            self._listening, self._failed, callbackArgs=(start, result), errbackArgs=(start, result)
        )
        return result

    def bound(self) -> list[str]:
        """Where each open port listens, for the log: its address, and its transport."""
        return [
            f"{address_text(port.getHost())} ({encryption})"
            for port, (_, encryption) in zip(self._ports, self._endpoints, strict=True)
        ]

    def close(self) -> list[Deferred[Any]]:
        """Stop listening: a Deferred for each port, that fires once it is closed."""
        self._start = None
        waiting: list[Deferred[Any]] = [maybeDeferred(port.stopListening) for port in self._ports]
        self._ports = []
        return waiting

    def advertise(self, node: MeshNode, out_addr_given: bool) -> None:
        """
        Tell the peers of each transport to dial ``node`` at its first IP
        listener of that transport (a wildcard interface gives the LAN
        address), and make the main transport's the node's own address;
        not where ``out_addr_given`` says the node's address was given.
        What the listeners told peers before is replaced (a restart may
        listen on other ports), but not an address set since.
        """
        main = node.protocol.encryption
        addresses: dict[str, Address] = {}
        for port, (_, encryption) in zip(self._ports, self._endpoints, strict=True):
            outward = outward_address(port.getHost())
            given = out_addr_given and encryption == main
            if outward is not None and encryption not in addresses and not given:
                addresses[encryption] = outward
        for encryption, outward in addresses.items():
            if node.out_addrs.get(encryption, outward) == self._advertised.get(encryption, outward):
                node.out_addrs[encryption] = outward
        self._advertised = addresses
        if not out_addr_given and node.out_addrs:
            node.out_addr = node.out_addrs.get(main) or next(iter(node.out_addrs.values()))

    def _opened(self, port: IListeningPort, start: object) -> IListeningPort:
        """Keep a port that opened, to close it later; close it now if its start is over."""
        if start is self._start:
            self._ports.append(port)
        else:
            self._close_port(port)
        return port

    def _close_port(self, port: IListeningPort) -> Deferred[Any]:
        def failed(failure: Failure) -> None:
            self._log.warn("could not stop listening on {port}: {error}", port=port, error=failure.getErrorMessage())

        return maybeDeferred(port.stopListening).addErrback(failed)

    def _listening(self, ports: list[IListeningPort], start: object, result: Deferred[list[IListeningPort]]) -> None:
        if start is self._start:
            self._ports = ports
            result.callback(ports)

    def _failed(self, failure: Failure, start: object, result: Deferred[list[IListeningPort]]) -> None:
        if start is not self._start:
            return
        # The ports that did open close, and so do those still to open.
        self._start = None
        for port in self._ports:
            self._close_port(port)
        self._ports = []
        result.errback(failure.value.subFailure if isinstance(failure.value, FirstError) else failure)
