"""
The node's web site (twisted.web): its resources at ``/`` (or under a path
prefix), the site that serves them, and the WebSocket links it accepts.
`.WebService` (in `twisted_mesh.web`) listens with it.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

from twisted.internet.interfaces import IAddress, IProtocol
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site
from twisted.web.static import File
from twisted.web.util import Redirect

from twisted_mesh._link import LinkProtocol
from twisted_mesh._logs import LoggedID
from twisted_mesh._service.endpoints import WEBSOCKET_SLACK, Refused
from twisted_mesh.service import MeshService
from twisted_mesh.web.status import MetricsResource, StatusResource
from twisted_mesh.websocket import OpeningFactory, websocket_server_factory


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
