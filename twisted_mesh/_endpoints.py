"""
Endpoint strings and addresses: what the service listens on and dials.
"""

from __future__ import annotations

import socket

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress

from twisted_mesh._ids import Protocol

Address = tuple[str, int]


def quote(value: str) -> str:
    """Escape C{value} for use inside a Twisted endpoint string."""
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def server_string(protocol: Protocol, host: str, port: int) -> str:
    """
    The endpoint string a node of C{protocol} listens on at C{host:port}.
    """
    if protocol.encryption != "Plaintext":
        raise ValueError(f"no listener for the transport {protocol.encryption!r}")
    interface = "" if host in ("", "0.0.0.0") else f":interface={quote(host)}"
    return f"tcp:{port}{interface}"


def client_string(protocol: Protocol, host: str, port: int) -> str:
    """
    The endpoint string a node of C{protocol} dials C{host:port} with.
    """
    if protocol.encryption != "Plaintext":
        raise ValueError(f"no dialler for the transport {protocol.encryption!r}")
    return f"tcp:host={quote(host)}:port={port}"


def lan_address() -> str:
    """
    This machine's address on its LAN: the source address of its default
    route, or C{127.0.0.1} when it has none.  No packet is sent.
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # Connecting a UDP socket only picks a route; 192.0.2.1 (TEST-NET-1)
        # is never routed anywhere.
        probe.connect(("192.0.2.1", 9))
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


def outward_address(host: IAddress) -> Address | None:
    """
    The address peers should dial for a listener bound to C{host}, or L{None}
    when it is not an IP listener.  A wildcard interface gives the LAN
    address.
    """
    if not isinstance(host, (IPv4Address, IPv6Address)):
        return None
    if host.host in ("0.0.0.0", "::", ""):
        return lan_address(), host.port
    return host.host, host.port
