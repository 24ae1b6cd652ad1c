"""
The C{twistd mesh} command: its options, and the service they make.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.logger import Logger
from twisted.python import usage

from twisted_mesh._endpoints import Address
from twisted_mesh._ids import ENCRYPTIONS, Protocol
from twisted_mesh.message import Message
from twisted_mesh.service import MeshService
from twisted_mesh.tls import TLSOptions
from twisted_mesh.web import WebService


def _address(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise usage.UsageError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _check_endpoints(parse: Callable[[Any, str], object], descriptions: list[str]) -> None:
    from twisted.internet import reactor

    for description in descriptions:
        try:
            parse(reactor, description)
        except Exception as e:
            raise usage.UsageError(f"bad endpoint {description!r}: {e}") from None


class Options(usage.Options):
    """The options of C{twistd mesh}."""

    synopsis = "[options]"
    longdesc = (
        "Run a mesh node of the p2p-today protocol 0.7, which meshes with "
        "twisted_mesh, py2p and js2p nodes of the same subnet and transport."
    )

    optParameters = [
        ["port", "p", 4444, "The TCP port to listen on, when no --listen is given.", int],
        ["subnet", "s", "mesh", "The subnet: only nodes of the same subnet and transport mesh."],
        ["transport", "t", "Plaintext", "The transport: " + ", ".join(ENCRYPTIONS) + "."],
        ["out-addr", None, None, "HOST:PORT other nodes should dial (default: the listening address)."],
        ["max-outgoing", None, 4, "How many connections peer exchange may dial.", int],
        ["tls-cert", None, None, "PEM certificate (with its key, or see --tls-key) for SSL/wss links."],
        ["tls-key", None, None, "PEM private key of --tls-cert, when it is a file of its own."],
        [
            "tls-ca",
            None,
            None,
            "PEM certificate of the authority that signs every node's certificate: verify peers with it "
            "(needs --tls-cert). Without it, SSL/wss links verify nobody, and use --tls-cert or a self-signed "
            "certificate.",
        ],
        [
            "web",
            None,
            None,
            "Serve a status page, /status, /metrics, the browser client and the mesh over WebSocket on this port "
            "(or endpoint string; ssl: for https and wss).",
        ],
    ]
    optFlags = [["verbose", "v", "Also log each message this node receives, with its packets."]]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["connect"] = []

    def opt_listen(self, endpoint: str) -> None:
        """An endpoint string to listen on, such as tcp:4444 (repeatable)."""
        self["listen"].append(endpoint)

    def opt_connect(self, peer: str) -> None:
        """A peer to dial at start: HOST:PORT or an endpoint string (repeatable)."""
        self["connect"].append(peer)

    def postOptions(self) -> None:
        if self["transport"] not in ENCRYPTIONS:
            raise usage.UsageError(f"--transport must be one of {', '.join(ENCRYPTIONS)}")
        if not 0 <= self["port"] < 65536:
            raise usage.UsageError("--port must be between 0 and 65535")
        if self["max-outgoing"] < 0:
            raise usage.UsageError("--max-outgoing must not be negative")
        if self["out-addr"] is not None:
            self["out-addr"] = _address(self["out-addr"])
        self["protocol"] = Protocol(self["subnet"], self["transport"])
        web = self["web"]
        if web is not None and web.isdigit():
            if not 0 <= int(web) < 65536:
                raise usage.UsageError(f"--web {web}: a port must be between 0 and 65535")
            self["web"] = f"tcp:{web}"
        _check_endpoints(serverFromString, [*self["listen"], *([self["web"]] if web is not None else [])])
        # An endpoint string for a client always has "key=value" parts.
        self["connect"] = [peer if "=" in peer else _address(peer) for peer in self["connect"]]
        _check_endpoints(clientFromString, [peer for peer in self["connect"] if isinstance(peer, str)])
        if self["tls-ca"] and not self["tls-cert"]:
            raise usage.UsageError("--tls-ca needs --tls-cert: this node's certificate, signed by that authority")
        self["tls"] = None
        if self["tls-cert"] or self["tls-ca"]:
            try:
                self["tls"] = TLSOptions.from_files(self["tls-cert"], self["tls-key"], self["tls-ca"])
            except Exception as e:
                raise usage.UsageError(f"cannot load the TLS files: {e}") from None
        if not self["listen"]:
            self["listen"] = [self["port"]]


class _NodeProcess(MultiService):
    """
    The services of a C{twistd mesh} process.  SIGTERM and SIGINT stop it as
    a clean exit (status 0), and a node that cannot listen stops it.
    """

    def __init__(self, node: MeshService) -> None:
        super().__init__()
        self._node = node
        node.setServiceParent(self)

    def startService(self) -> None:
        from twisted.internet import reactor as _reactor

        reactor: Any = _reactor
        super().startService()

        def stop_on_signals() -> None:
            # Twisted's own handlers make twistd die of the signal after a
            # clean stop; a node that stopped cleanly exits with status 0.
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: reactor.callFromThread(reactor.stop))

        reactor.callWhenRunning(stop_on_signals)
        self._node.listening.addErrback(lambda _: reactor.stop())


def makeService(options: Options) -> MultiService:
    """Make the node C{options} describe, with its web face if asked."""
    node = MeshService(
        options["protocol"],
        listen=options["listen"],
        connect=options["connect"],
        tls=options["tls"],
        out_addr=options["out-addr"],
        max_outgoing=options["max-outgoing"],
    )
    top = _NodeProcess(node)
    # Nobody reads this node's queue: take every message, logging it if asked.
    node.register_handler(_log_message if options["verbose"] else _take_message)
    if options["web"] is not None:
        WebService(node, options["web"]).setServiceParent(top)
    return top


_log = Logger(namespace="twisted_mesh")


def _log_message(message: Message, link: object) -> bool:
    _log.info("message from {sender}: {packets!r}", sender=message.sender, packets=message.packets)
    return True


def _take_message(message: Message, link: object) -> bool:
    return True
