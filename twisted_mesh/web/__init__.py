"""
The node's web face: a page for people, C{/status} and C{/metrics}.
"""

from __future__ import annotations

from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from twisted_mesh.service import MeshService
from twisted_mesh.web.status import MetricsResource, StatusResource

__all__ = ["MetricsResource", "StatusResource", "web_site"]

_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>twisted_mesh node</title></head>
<body><h1>twisted_mesh node</h1>
<p>This node's state: <a href="/status">/status</a> (JSON), <a href="/metrics">/metrics</a> (Prometheus).</p>
</body></html>
"""


def web_site(service: MeshService) -> Site:
    """The web site of C{service}: C{/}, C{/status} and C{/metrics}."""
    root = Resource()
    root.putChild(b"", Data(_PAGE, "text/html; charset=utf-8"))
    root.putChild(b"status", StatusResource(service))
    root.putChild(b"metrics", MetricsResource(service))
    return Site(root)
