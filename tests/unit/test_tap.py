"""
The options of ``twistd mesh``, parsed in-process (tests/integration/test_twistd.py runs
the command itself).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.python import usage

from twisted_mesh.tap import Options, _daemonizing
from twisted_mesh.tls import self_signed_certificate


def parsed(*args: str) -> Options:
    """The options of ``twistd mesh ARGS``."""
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
    """A ``--connect`` that starts with a client endpoint type is an endpoint string, with or without keywords."""
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
    """Any other ``--connect`` is ``HOST:PORT`` or ``[IPv6]:PORT``."""
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
    """A ``--connect`` that is neither a client endpoint string nor ``HOST:PORT`` is a usage error."""
    with pytest.raises(usage.UsageError, match=message):
        parsed("--connect", peer)


def test_tls_key_needs_tls_cert() -> None:
    """``--tls-key`` alone is a usage error, not ignored."""
    with pytest.raises(usage.UsageError, match="--tls-key needs --tls-cert"):
        parsed("--tls-key", "node-key.pem")


def test_web_given_twice_is_a_usage_error() -> None:
    """A node serves one web site: a second ``--web`` is a usage error, not the one kept."""
    with pytest.raises(usage.UsageError, match="--web is given twice"):
        parsed("--web", "8080", "--web", "8081")
    assert parsed("--web", "8080")["web"] == "tcp:8080"


def test_port_and_listen_do_not_mix() -> None:
    """``--port`` is for a node without ``--listen``: both together is a usage error, not a port ignored."""
    with pytest.raises(usage.UsageError, match="--port is for a node without --listen"):
        parsed("--port", "4445", "--listen", "tcp:4446")
    assert parsed()["listen"] == [4444]
    assert parsed("--port", "4445")["listen"] == [4445]
    assert parsed("--listen", "tcp:4446")["listen"] == ["tcp:4446"]


@pytest.fixture
def certificate(tmp_path: Path) -> str:
    """A PEM file with a self-signed certificate and its key."""
    pem = tmp_path / "node.pem"
    pem.write_bytes(self_signed_certificate("node.example").dumpPEM())
    return str(pem)


@pytest.mark.parametrize(
    "args",
    [
        ["--transport", "SSL"],
        ["--transport", "wss"],
        ["--listen", "tcp:4444", "--listen", "ssl:4445:privateKey={pem}"],
        ["--listen", "tcp:4444", "--connect", "wss:host=node.example:port=4445"],
        ["--web", "ssl:8443:privateKey={pem}"],
    ],
)
def test_tls_options_with_tls_links(certificate: str, args: list[str]) -> None:
    """The ``--tls`` options are taken when the node may have SSL or wss links."""
    options = parsed("--tls-cert", certificate, *(arg.format(pem=certificate) for arg in args))
    assert options["tls"] is not None


@pytest.mark.parametrize("args", [[], ["--transport", "ws", "--web", "8080"], ["--listen", "tcp:4444"]])
def test_tls_options_without_tls_links_are_a_usage_error(certificate: str, args: list[str]) -> None:
    """The ``--tls`` options of a node that has no SSL or wss link would do nothing: a usage error."""
    with pytest.raises(usage.UsageError, match="this node has none"):
        parsed("--tls-cert", certificate, *args)


def test_tls_listener_needs_a_folder_of_pems(tmp_path: Path) -> None:
    """
    Twisted's ``tls:`` server string takes a folder of PEM files first:
    ``tls:4444`` (port 443, folder "4444") is a usage error.
    """
    with pytest.raises(usage.UsageError, match="'4444' is not a folder"):
        parsed("--listen", "tls:4444")
    with pytest.raises(usage.UsageError, match="is not a folder"):
        parsed("--web", f"tls:path={tmp_path / 'missing'}:port=8443")
    assert parsed("--listen", f"tls:{tmp_path}:port=4444")["listen"] == [f"tls:{tmp_path}:port=4444"]


def test_help_says_what_the_options_do() -> None:
    """``--help`` tells the port's transport, the default ``--out-addr`` and what ``--tls-cert`` secures."""
    text = " ".join(str(Options()).split())
    assert "over --transport (TCP, TLS or WebSocket)" in text
    assert "the LAN address when it listens on every interface" in text
    assert "an ssl:, tls: or wss: endpoint string names its own" in text


@pytest.mark.parametrize(
    ("twistd", "daemon"), [(None, False), ({"nodaemon": True}, False), ({"nodaemon": False}, True)]
)
def test_daemon_mode_is_read_from_twistd(twistd: dict[str, bool] | None, daemon: bool) -> None:
    """The node raises at start, for twistd's launcher to report, only when twistd runs it as a daemon."""
    options = parsed()
    if twistd is not None:
        options.parent = twistd  # type: ignore[attr-defined]
    assert _daemonizing(options) == daemon
