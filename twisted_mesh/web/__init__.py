"""
The node's web face, on one port (twisted.web):

    - ``/``: a live page of the mesh for people (its peers as a graph, the
      message rate, a chat box) that runs a browser mesh node;
    - ``/`` with ``Upgrade: websocket``: the mesh itself, for browsers and
      any WebSocket node (js2p dials ``ws://host:port``, path ``/``);
    - ``/twisted_mesh.js``: the browser client, one file;
    - ``/status`` (JSON) and ``/metrics`` (Prometheus);
    - ``/static/``: the page's script and style.

A browser joins the mesh through the node serving the page: its link is a
``'ws'`` link of the node (``'wss'`` when the port speaks TLS), and the node
relays between it and its TCP, TLS and WebSocket peers.

Behind a reverse proxy that serves the site under a path (``/mesh/``), give
that path as the site's ``prefix``: every path above is then under it (the
page's own links are relative), and ``/`` still takes the mesh's WebSocket,
for nodes that dial the port, and sends browsers to the prefix.

`.WebService` listens with the site and then tells the node's WebSocket
peers to dial this port; `.web_site` is the site alone.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.python.failure import Failure
from twisted.web.server import Site

from twisted_mesh._core.link import Address
from twisted_mesh._logs import WEB, NodeLogger
from twisted_mesh._service.endpoints import address_text, encryption_of, outward_address
from twisted_mesh.service import MeshService
from twisted_mesh.web.site import _Site, site_prefix, static_path, web_resource, web_site
from twisted_mesh.web.status import MetricsResource, StatusResource

__all__ = [
    "MetricsResource",
    "StatusResource",
    "WebService",
    "site_prefix",
    "static_path",
    "web_resource",
    "web_site",
]


def _encryption_of(endpoint: str | IStreamServerEndpoint) -> str:
    """``'wss'`` for a TLS endpoint string (``ssl:``, ``tls:``), else ``'ws'``."""
    if isinstance(endpoint, str) and encryption_of(endpoint, "Plaintext") == "SSL":
        return "wss"
    return "ws"


class WebService(Service):
    """
    Serve the web site of a mesh node, and have the node's WebSocket peers
    dial it: once listening, the node advertises this port for its ``'ws'``
    (or ``'wss'``) links.  Stopping it stops listening and closes the
    WebSocket links it accepted.

    :param mesh: the node.
    :param endpoint: where to listen: an endpoint string (``"tcp:8080"``;
        ``"ssl:8443:..."`` or ``"tls:PEM-FOLDER:port=8443"`` serves ``https``
        and ``wss``) or an endpoint.
    :param encryption: ``'ws'`` or ``'wss'``; by default ``'wss'`` for an
        ``ssl:`` or ``tls:`` string and ``'ws'`` otherwise.
    :param advertise: whether to tell peers to dial this port.
    :param prefix: the path the site is served under (``/mesh/``), for a
        reverse proxy that forwards that path; the mesh's WebSocket is at
        ``/`` too, where nodes dial it.
    :param reactor: the reactor; by default the global one.

    :ivar listening: fires with the listening port once it listens, or
        fails with why it cannot, or with `.CancelledError` when the
        service stops first (a new Deferred each time the service starts).
    """

    def __init__(
        self,
        mesh: MeshService,
        endpoint: str | IStreamServerEndpoint,
        *,
        encryption: str | None = None,
        advertise: bool = True,
        prefix: str = "/",
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._log = NodeLogger(WEB, mesh.id, self)
        self._mesh = mesh
        self._reactor = reactor
        self._endpoint = serverFromString(reactor, endpoint) if isinstance(endpoint, str) else endpoint
        self.encryption = encryption or _encryption_of(endpoint)
        self._advertise = advertise
        self.prefix = site_prefix(prefix)
        site = _Site(mesh, self.encryption, reactor, self.prefix)
        self.site: Site = site
        self._links = site.links
        self._port: IListeningPort | None = None
        self._advertised: Address | None = None
        self._starting: Deferred[IListeningPort] | None = None
        self.listening: Deferred[IListeningPort] = Deferred()

    @property
    def port(self) -> IListeningPort | None:
        """The listening port, once listening."""
        return self._port

    def startService(self) -> None:
        """
        Listen; once listening, advertise the port to WebSocket peers.  A
        service that runs already is left as it is.
        """
        if self.running:
            return
        super().startService()
        if self.listening.called:
            self.listening = Deferred()
        self._links.accepting = True
        self._starting = self._endpoint.listen(self.site)
        self._starting.addCallbacks(self._listened, self._failed)

    def _listened(self, port: IListeningPort) -> None:
        self._starting = None
        self._port = port
        address = outward_address(port.getHost())
        if self._advertise and address is not None:
            self._mesh.advertise(self.encryption, address)
            self._advertised = address
        self._log.info(
            "node {node} serving its web page and {encryption} mesh endpoint on {bound}, path {prefix}, "
            "advertised as {address}",
            encryption=self.encryption,
            bound=address_text(port.getHost()),
            prefix=self.prefix,
            address=address_text(address) if self._advertise and address is not None else "nothing",
        )
        self.listening.callback(port)

    def _failed(self, failure: Failure) -> None:
        self._starting = None
        if not failure.check(CancelledError):
            self._log.error("could not serve the web site: {error}", error=failure.getErrorMessage())
        self.listening.errback(failure)

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, stop telling peers to dial this port, and close the
        WebSocket links of this site (and those still opening, once they
        open).
        """
        super().stopService()
        self._links.accepting = False
        waiting: list[Deferred[Any]] = []
        if self._starting is not None:
            self._starting.cancel()
        if self._advertised is not None:
            self._mesh.withdraw(self.encryption, self._advertised)
            self._advertised = None
        if self._port is not None:
            waiting.append(maybeDeferred(self._port.stopListening))
            self._port = None
        for link in list(self._links.links):
            waiting.append(link.closed)
            link.close("the web service is stopping", error=False)
        return DeferredList(waiting).addCallback(lambda _: None)
