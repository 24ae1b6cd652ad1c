"""
A mesh node as a Twisted service, with its web face, in an application.

make_application() is what a .tac file would hold (run it with
``PYTHONPATH=. twistd -ny mesh.tac``)::

    # mesh.tac
    from service_app import make_application
    application = make_application(["tcp:4444"], web="tcp:8080")

main() runs two such nodes on this machine instead: a second node dials the
first at start, and the first one's status is read from Python and over HTTP.
"""

import json
from collections.abc import Sequence
from urllib.request import urlopen

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.python.components import Componentized

from twisted_mesh import Limits, MeshService, Network
from twisted_mesh.web import WebService

MESH = Network("mesh", "Plaintext")


def make_application(
    listen: Sequence[str], connect: Sequence[str] = (), web: str | None = None
) -> Componentized:
    """
    An application with one mesh node that listens on the endpoint strings
    in listen, dials those in connect at start (and again whenever it is
    not connected to one of them), and serves its page, /status and
    /metrics on web.
    """
    application: Componentized = service.Application("mesh")
    limits = Limits(max_queue=10_000)
    node = MeshService(MESH, listen=listen, connect=connect, limits=limits)
    node.setName("mesh")
    node.setServiceParent(application)
    if web is not None:
        site = WebService(node, web)
        site.setName("web")
        site.setServiceParent(application)
    return application


LOOPBACK = "tcp:0:interface=127.0.0.1"


def port_number(port: IListeningPort) -> int:
    """The number of the TCP port ``port`` listens on."""
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    return address.port


def fetch(url: str) -> bytes:
    """GET a URL: this blocks, so it runs in a thread."""
    with urlopen(url, timeout=30) as response:
        body: bytes = response.read()
        return body


async def main(reactor: IReactorTime) -> None:
    first = service.IServiceCollection(make_application([LOOPBACK], web=LOOPBACK))
    node, site = first.getServiceNamed("mesh"), first.getServiceNamed("web")
    assert isinstance(node, MeshService) and isinstance(site, WebService)
    service.IService(first).startService()
    try:
        [port] = await node.listening
        web_port = port_number(await site.listening)
        print("first node listening:", port_number(port) == node.out_addr[1])

        address = f"tcp:host=127.0.0.1:port={node.out_addr[1]}"
        second = make_application([LOOPBACK], connect=[address])
        other = service.IServiceCollection(second).getServiceNamed("mesh")
        assert isinstance(other, MeshService)
        joined: defer.Deferred[MeshService] = defer.Deferred()
        other.once("connect", joined.callback)
        service.IService(second).startService()
        try:
            await joined.addTimeout(30, reactor)
            print("second node joined:", node.id in other.routing_table)

            peers = node.status()["peers"]
            print("peers of the first node:", [p["id"] == other.id for p in peers])

            # The same over HTTP, as a monitor would read it.
            site_url = f"http://127.0.0.1:{web_port}"
            status = await threads.deferToThread(fetch, site_url + "/status")
            print("GET /status, id:", json.loads(status)["id"] == node.id)
            metrics = await threads.deferToThread(fetch, site_url + "/metrics")
            lines = metrics.decode().splitlines()
            print("GET /metrics:", [x for x in lines if x.startswith("mesh_peers ")])
        finally:
            await service.IService(second).stopService()
    finally:
        await service.IService(first).stopService()


if __name__ == "__main__":
    task.react(main)
