"""
Serve browser.html from a mesh node: the page, the browser client and the
mesh's WebSocket on one port, with a Python node in the mesh that answers
each browser.

    python serve_page.py [PORT]

then open http://127.0.0.1:PORT/browser.html (8080 by default; 0 picks a
free port).  Ctrl-C stops it.
"""

import sys
from pathlib import Path

from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Site
from twisted.web.static import File

from twisted_mesh import MeshService, MeshSocket, Network
from twisted_mesh.web import web_resource

MESH = Network("mesh", "Plaintext")


async def main(reactor: IReactorTime, port: str = "8080") -> None:
    node = MeshService(MESH, listen=["tcp:0:interface=127.0.0.1"])
    node.startService()
    await node.listening

    # The node's site (its page, /twisted_mesh.js, /status, /metrics and the
    # mesh over WebSocket at /), with a page of our own beside them.
    root = web_resource(node)
    root.putChild(b"browser.html", File(str(Path(__file__).with_name("browser.html"))))
    endpoint = serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1")
    web = await endpoint.listen(Site(root))
    # Tell WebSocket peers where to dial this node.
    node.advertise("ws", ("127.0.0.1", web.getHost().port))

    # A Python node of the same mesh, over TCP: it answers each message.
    python_node = MeshSocket("127.0.0.1", 0, prot=MESH)
    await python_node.connect("127.0.0.1", node.out_addr[1])

    def answer(sock: MeshSocket) -> None:
        msg = sock.recv()
        assert msg is not None
        print("the Python node got", msg.packets, flush=True)
        sock.send("hello from Python")

    python_node.on("message", answer)
    print(f"open http://127.0.0.1:{web.getHost().port}/browser.html", flush=True)
    await defer.Deferred()  # until Ctrl-C


task.react(main, sys.argv[1:])
