"""
The options of C{twistd mesh}, parsed in-process (tests/test_twistd.py runs
the command itself).
"""

from __future__ import annotations

import pytest
from twisted.python import usage

from twisted_mesh.tap import Options


def parsed(*args: str) -> Options:
    """The options of C{twistd mesh ARGS}."""
    options = Options()
    options.parseOptions(list(args))
    return options


@pytest.mark.parametrize(
    "peer",
    [
        "tcp:127.0.0.1:4444",
        "TCP:127.0.0.1:4444",
        "tcp:host=127.0.0.1:port=4444",
        "ws:127.0.0.1:4444",
        "ws:host=127.0.0.1:port=4444",
        "tls:127.0.0.1:4444",
        "unix:/run/mesh.sock",
        "unix:path=/run/mesh.sock",
    ],
)
def test_connect_takes_endpoint_strings(peer: str) -> None:
    """A C{--connect} that starts with a client endpoint type is an endpoint string, with or without keywords."""
    assert parsed("--connect", peer)["connect"] == [peer]


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("127.0.0.1:4444", ("127.0.0.1", 4444)),
        ("localhost:4444", ("localhost", 4444)),
        ("[::1]:4444", ("::1", 4444)),
        ("[2001:db8::7]:4444", ("2001:db8::7", 4444)),
    ],
)
def test_connect_takes_host_port(peer: str, address: tuple[str, int]) -> None:
    """Any other C{--connect} is C{HOST:PORT} or C{[IPv6]:PORT}."""
    assert parsed("--connect", peer)["connect"] == [address]


@pytest.mark.parametrize(
    ("peer", "message"),
    [
        ("tcp6:::1:4444", "Unknown endpoint type"),  # tcp6 is a server endpoint type only
        ("tcp:127.0.0.1", "tcp:127.0.0.1"),
        ("nohost:notaport", "is not HOST:PORT"),
    ],
)
def test_connect_refuses_what_it_cannot_dial(peer: str, message: str) -> None:
    """A C{--connect} that is neither a client endpoint string nor C{HOST:PORT} is a usage error."""
    with pytest.raises(usage.UsageError, match=message):
        parsed("--connect", peer)


def test_tls_key_needs_tls_cert() -> None:
    """C{--tls-key} alone is a usage error, not ignored."""
    with pytest.raises(usage.UsageError, match="--tls-key needs --tls-cert"):
        parsed("--tls-key", "node-key.pem")
