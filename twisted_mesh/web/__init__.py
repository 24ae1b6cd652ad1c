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

from collections.abc import Callable
from importlib import resources
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress, IListeningPort, IProtocol, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site
from twisted.web.static import File
from twisted.web.util import Redirect

from twisted_mesh._core.link import Address
from twisted_mesh._link import LinkProtocol
from twisted_mesh._logs import WEB, LoggedID, NodeLogger
from twisted_mesh._service.endpoints import WEBSOCKET_SLACK, Refused, address_text, encryption_of, outward_address
from twisted_mesh.service import MeshService
from twisted_mesh.web.status import MetricsResource, StatusResource
from twisted_mesh.websocket import OpeningFactory, websocket_server_factory

__all__ = [
    "MetricsResource",
    "StatusResource",
    "WebService",
    "site_prefix",
    "static_path",
    "web_resource",
    "web_site",
]


def static_path(name: str = "") -> str:
    """The file ``name`` of the page's static folder (the folder itself by default)."""
    folder = resources.files("twisted_mesh.web") / "static"
    return str(folder / name) if name else str(folder)


class _Links(Factory):
    """
    Builds the node's WebSocket links, through the node's own factory, and
    keeps them so that `.WebService` can close them when it stops.  An
    upgrade to the mesh is one of the node's pending connections from the
    moment it is asked for (see `.OpeningFactory`).

    :ivar accepting: whether to build links; once `.WebService` stopped, a
        WebSocket that was still opening is closed as soon as it opens.
    """

    def __init__(self, wrapped: Factory) -> None:
        assert isinstance(wrapped, OpeningFactory)
        self._wrapped = wrapped
        self.links: set[LinkProtocol] = set()
        self.accepting = True

    def buildProtocol(self, addr: Any) -> Any:
        if not self.accepting:
            return Refused()
        link = self._wrapped.buildProtocol(addr)
        if isinstance(link, LinkProtocol):
            self.links.add(link)
            link.closed.addBoth(lambda _: self.links.discard(link))
        return link

    def opening(self, peer: IAddress, drop: Callable[[str], None]) -> object | None:
        return self._wrapped.opening(peer, drop)

    def opened(self, token: object, protocol: IProtocol) -> None:
        self._wrapped.opened(token, protocol)

    def closed(self, token: object) -> None:
        self._wrapped.closed(token)

    def doStart(self) -> None:
        self._wrapped.doStart()

    def doStop(self) -> None:
        self._wrapped.doStop()


class _Front(Resource):
    """
    ``/``: the mesh's WebSocket for requests that ask to upgrade, the page
    for the others.
    """

    isLeaf = True

    def __init__(self, websocket: IResource, page: IResource) -> None:
        super().__init__()
        self._websocket = websocket
        self._page = page

    def render(self, request: Request) -> Any:
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        if upgrade == b"websocket":
            transport: Any = request.channel.transport
            if transport is not None:
                # twisted.web's channel is the connection's producer; the
                # WebSocket takes the connection over (and the mesh link
                # registers itself as the producer).
                transport.unregisterProducer()
            return self._websocket.render(request)
        request.setHeader(b"cache-control", b"no-cache")
        return self._page.render(request)


class _StaticFile(File):
    """
    The page's files: UTF-8 types, no directory listings, and browsers
    check them again on each load (they change with the package).
    """

    contentTypes = {
        **File.contentTypes,
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".html": "text/html; charset=utf-8",
        ".svg": "image/svg+xml",
    }

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"cache-control", b"no-cache")
        return super().render_GET(request)

    def directoryListing(self) -> Any:
        return self.forbidden


def _static(name: str = "") -> File:
    return _StaticFile(static_path(name))


class _Folder(Resource):
    """A path of the prefix: its children, and a redirect to itself with a slash (``/mesh`` to ``/mesh/``)."""

    def render(self, request: Request) -> Any:
        return Redirect(request.uri.split(b"?", 1)[0] + b"/").render(request)


def site_prefix(prefix: str) -> str:
    """
    A path prefix of the site, checked and put in one form: ``/`` or
    ``/a/b/`` (``mesh`` and ``/mesh`` are ``/mesh/``).

    :raise ValueError: for a prefix with an empty, ``.`` or ``..`` part, or
        characters a URL path cannot hold as they are.
    """
    parts = prefix.strip("/").split("/") if prefix.strip("/") else []
    for part in parts:
        if part in ("", ".", "..") or not all(char.isalnum() or char in "-._~" for char in part):
            raise ValueError(f"bad web prefix {prefix!r}: give a path such as /mesh/")
    return "/" + "".join(part + "/" for part in parts)


def _resources(service: MeshService, encryption: str, reactor: Any, prefix: str = "/") -> tuple[Resource, _Links]:
    """The root resource of the site, and the factory of its WebSocket links."""
    if encryption not in ("ws", "wss"):
        raise ValueError(f"a web port carries 'ws' or 'wss' links, not {encryption!r}")
    from autobahn.twisted.resource import WebSocketResource

    links = _Links(service.protocol_factory(encryption))
    limits = service.limits
    factory = websocket_server_factory(
        links,
        reactor=reactor,
        max_message_size=limits.max_frame_size + WEBSOCKET_SLACK,
        open_timeout=limits.handshake_timeout,
    )
    websocket = WebSocketResource(factory)
    site = Resource()
    site.putChild(b"", _Front(websocket, _static("index.html")))
    site.putChild(b"twisted_mesh.js", _static("twisted_mesh.js"))
    site.putChild(b"static", _static())
    site.putChild(b"status", StatusResource(service))
    site.putChild(b"metrics", MetricsResource(service))
    parts = site_prefix(prefix).strip("/").split("/")
    if parts == [""]:
        return site, links
    root = folder = Resource()
    # Nodes dial the port itself, path "/"; browsers are sent to the site.
    root.putChild(b"", _Front(websocket, Redirect(site_prefix(prefix).encode())))
    for part in parts[:-1]:
        inner = _Folder()
        folder.putChild(part.encode(), inner)
        folder = inner
    last = _Folder()
    folder.putChild(parts[-1].encode(), last)
    for name, child in site.children.items():
        last.putChild(name, child)
    return root, links


def web_resource(service: MeshService, encryption: str = "ws", *, reactor: Any = None) -> Resource:
    """
    The root resource of the web site of ``service`` (see `.web_site`), to
    mount in a site of one's own (at any path: the page's links are
    relative).

    :param encryption: ``'ws'``, or ``'wss'`` when the site is served over
        TLS: the transport of the links browsers open.
    :param reactor: the reactor for Autobahn; by default the global one.
    """
    return _resources(service, encryption, reactor)[0]


class _Channel(HTTPChannel):
    """
    An HTTP connection whose timeout runs from its start, or from the answer
    to its last request, and not from the last byte that came: a request
    must come whole within it, and one sent a byte at a time does not hold
    the connection for long.  (While a request is answered, the timeout is
    off; a WebSocket takes the connection over for good.)
    """

    def dataReceived(self, data: bytes) -> None:
        # HTTPChannel's, without its resetTimeout().
        LineReceiver.dataReceived(self, data)


class _Site(Site):
    """
    The site of ``service``, without a line in the log for each request (the
    page polls /status), and with the WebSocket links it accepted.  An HTTP
    connection must send each request whole within the node's handshake
    timeout.
    """

    # (Twisted's own channel would also switch to HTTP/2, which this site's
    # TLS does not offer.)
    protocol = _Channel  # type: ignore[assignment]
    # (No "Starting factory" line: the service logs where the site listens.)
    noisy = False

    def __init__(self, service: MeshService, encryption: str, reactor: Any, prefix: str = "/") -> None:
        root, self.links = _resources(service, encryption, reactor, prefix)
        super().__init__(root, timeout=service.limits.handshake_timeout)
        self.displayTracebacks = False
        self._node_id = LoggedID(service.id)

    def logPrefix(self) -> str:
        # Twisted's "... starting on 8080" as the port opens.
        return f"node {self._node_id} web site"

    def log(self, request: Any) -> None:
        pass


def web_site(service: MeshService, encryption: str = "ws", *, prefix: str = "/", reactor: Any = None) -> Site:
    """
    The web site of ``service``: the page, the browser client, the mesh over
    WebSocket, ``/status`` and ``/metrics``.  `.WebService` serves it and
    tells WebSocket peers where to dial; a site served some other way
    should call ``service.advertise(encryption, (host, port))`` itself.

    :param encryption: ``'ws'``, or ``'wss'`` when the site is served over TLS.
    :param prefix: the path the site is served under (see `.site_prefix`),
        for a reverse proxy that forwards that path as it is.
    :param reactor: the reactor for Autobahn; by default the global one.
    :raise ValueError: for a bad ``prefix``.
    """
    return _Site(service, encryption, reactor, prefix)


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
