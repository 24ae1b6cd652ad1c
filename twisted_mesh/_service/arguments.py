"""
Addresses as a command line gives them (``twistd mesh --connect``, the
ENDPOINT of ``twisted-mesh send``...): ``HOST:PORT``, or an endpoint
string, checked before anything is dialled or listened on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.endpoints import clientFromString
from twisted.python import usage

from twisted_mesh._core.link import Address
from twisted_mesh._service.endpoints import ENDPOINT_TYPES


def parse_host_port(text: str) -> Address:
    """
    The address ``text`` gives as ``HOST:PORT`` or ``[IPv6]:PORT``.

    :raise usage.UsageError: when it is not, or its port is not 1 to 65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise usage.UsageError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _client_types() -> frozenset[str]:
    """The types of client endpoint strings: Twisted's and its plugins' (``ws``, ``wss``...)."""
    from twisted.internet.interfaces import IStreamClientEndpointStringParserWithReactor
    from twisted.plugin import getPlugins

    plugins = getPlugins(IStreamClientEndpointStringParserWithReactor)
    return ENDPOINT_TYPES | {plugin.prefix.lower() for plugin in plugins}


def _peer(text: str, client_types: frozenset[str]) -> str | Address:
    kind, sep, _ = text.partition(":")
    if "=" in text or (sep and kind.lower() in client_types):
        return text
    return parse_host_port(text)


def parse_peers(texts: Sequence[str]) -> list[str | Address]:
    """
    The peers ``texts`` name, each kept as an endpoint string when it has
    ``key=value`` parts or starts with a client endpoint type
    (``tcp:127.0.0.1:4444``, ``unix:/run/mesh.sock``), else read as
    ``HOST:PORT`` or ``[IPv6]:PORT`` (see `parse_host_port`); then each
    endpoint string checked (see `check_endpoints`).

    :raise usage.UsageError: for the first that is neither, else for the
        first endpoint string that cannot be parsed.
    """
    if not texts:
        return []
    client_types = _client_types()
    peers = [_peer(text, client_types) for text in texts]
    check_endpoints(clientFromString, [peer for peer in peers if isinstance(peer, str)])
    return peers


def check_endpoints(parse: Callable[[Any, str], object], descriptions: Sequence[str]) -> None:
    """
    Check that ``parse`` (`.serverFromString` or `.clientFromString`) takes
    each endpoint string of ``descriptions``.

    :raise usage.UsageError: naming the first it does not take, and why.
    """
    from twisted.internet import reactor

    for description in descriptions:
        try:
            parse(reactor, description)
        except Exception as e:
            raise usage.UsageError(f"bad endpoint {description!r}: {e}") from None
