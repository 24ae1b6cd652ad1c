"""
The addresses a command line gives (``twisted_mesh._service.arguments``):
``HOST:PORT`` pairs, and endpoint strings kept as they are once checked.
"""

from __future__ import annotations

import pytest
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.python.usage import UsageError

from twisted_mesh._service.arguments import check_endpoints, parse_host_port, parse_peers


@pytest.mark.parametrize(
    ("text", "address"),
    [("127.0.0.1:4444", ("127.0.0.1", 4444)), ("[::1]:1", ("::1", 1)), ("node.example:65535", ("node.example", 65535))],
)
def test_host_port(text: str, address: tuple[str, int]) -> None:
    assert parse_host_port(text) == address


@pytest.mark.parametrize("text", ["nohost", ":4444", "h:", "h:p", "h:0", "h:65536", "h:-1"])
def test_not_host_port(text: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_host_port(text)
    assert str(raised.value) == f"{text!r} is not HOST:PORT"


def test_peers_are_pairs_or_endpoint_strings() -> None:
    """Endpoint strings (a client type, or ``key=value`` parts) are kept; the others are pairs."""
    texts = ["127.0.0.1:4444", "WS:127.0.0.1:4444", "tcp:host=h:port=1", "unix:/run/mesh.sock", "[::1]:5"]
    assert parse_peers(texts) == [("127.0.0.1", 4444), *texts[1:4], ("::1", 5)]
    assert parse_peers([]) == []


def test_the_first_bad_peer_is_named() -> None:
    """Every peer is read before the endpoint strings are checked."""
    with pytest.raises(UsageError, match=r"^'nohost' is not HOST:PORT$"):
        parse_peers(["tcp:127.0.0.1", "nohost"])
    with pytest.raises(UsageError, match=r"^bad endpoint 'tcp:127.0.0.1': "):
        parse_peers(["tcp:127.0.0.1", "tcp6:::1:4444"])
    with pytest.raises(UsageError, match=r"^bad endpoint 'tcp6:::1:4444': .*Unknown endpoint type"):
        parse_peers(["tcp6:::1:4444"])


def test_check_endpoints() -> None:
    check_endpoints(serverFromString, ["tcp:0", "ws:0"])
    check_endpoints(clientFromString, [])
    with pytest.raises(UsageError, match=r"^bad endpoint 'bogus:1': "):
        check_endpoints(serverFromString, ["tcp:0", "bogus:1"])
