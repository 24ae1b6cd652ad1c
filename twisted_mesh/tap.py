"""
The C{twistd mesh} command: its options, and the service they make.
"""

from __future__ import annotations

from twisted.python import usage

from twisted_mesh._endpoints import Address, client_string, server_string
from twisted_mesh._ids import ENCRYPTIONS, Protocol
from twisted_mesh.service import MeshService


def _address(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise usage.UsageError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


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
    ]
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
        if not self["listen"]:
            self["listen"] = [server_string(self["protocol"], "", self["port"])]
        self["connect"] = [
            peer if "=" in peer or peer.count(":") != 1 else client_string(self["protocol"], *_address(peer))
            for peer in self["connect"]
        ]


def makeService(options: Options) -> MeshService:
    """Make the node C{options} describe."""
    return MeshService(
        options["protocol"],
        listen=options["listen"],
        connect=options["connect"],
        out_addr=options["out-addr"],
        max_outgoing=options["max-outgoing"],
    )
