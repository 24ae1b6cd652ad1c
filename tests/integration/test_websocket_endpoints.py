"""
Stream endpoints over WebSocket (`.twisted_mesh.websocket`), over real
loopback sockets: wss, and the ``ws:``/``wss:`` endpoint strings.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint, clientFromString, serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import getPlugins

from tests.integration.websocket_support import Framed, Recording, listen, pair
from tests.support import within
from twisted_mesh._service.endpoints import WEBSOCKET_SLACK, client_from_string, server_from_string
from twisted_mesh.websocket import (
    WebSocketClientEndpoint,
    WebSocketClientParser,
    WebSocketHandshakeError,
    WebSocketServerEndpoint,
    WebSocketServerParser,
)

# -- wss --------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for localhost and 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest_twisted.ensureDeferred
async def test_wss_with_a_trusted_certificate(ports: list[IListeningPort], tmp_path: Path) -> None:
    (tmp_path / "trust").mkdir()
    key, cert = self_signed(tmp_path)
    (tmp_path / "trust" / "cert.pem").write_bytes(cert.read_bytes())
    server = serverFromString(reactor, f"wss:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
    factory = Recording()
    port = await listen(ports, factory, server)

    trusting = clientFromString(reactor, f"wss:host=localhost:port={port}:trustRoots={tmp_path / 'trust'}")
    assert isinstance(trusting, WebSocketClientEndpoint)
    client = await within(trusting.connect(Recording()))
    assert isinstance(client, Framed)
    their_side = await within(factory.built.get())
    client.sendString(b"secret")
    assert await within(their_side.strings.get()) == b"secret"
    their_side.sendString(b"reply")
    assert await within(client.strings.get()) == b"reply"

    # The platform's trust store does not know the certificate.
    untrusting = clientFromString(reactor, f"wss:host=localhost:port={port}")
    with pytest.raises(WebSocketHandshakeError, match="certificate verify failed"):
        await within(untrusting.connect(Recording()))


# -- endpoint strings ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_parsers_called_directly(ports: list[IListeningPort]) -> None:
    server = WebSocketServerParser().parseStreamServer(reactor, "0", interface="127.0.0.1")
    assert isinstance(server, WebSocketServerEndpoint)
    factory = Recording()
    port = await listen(ports, factory, server)
    client = WebSocketClientParser().parseStreamClient(reactor, host="127.0.0.1", port=str(port), timeout="5")
    assert isinstance(client, WebSocketClientEndpoint)
    proto = await within(client.connect(Recording()))
    assert isinstance(proto, Framed)
    proto.sendString(b"parsed")
    assert await within((await within(factory.built.get())).strings.get()) == b"parsed"


def test_parser_strings() -> None:
    """The rest of the string goes to Twisted's parsers; the URL is built."""
    server = WebSocketServerParser().parseStreamServer(reactor, "4444", interface="::1", backlog="7")
    inner: Any = server._inner  # type: ignore[attr-defined]
    assert (inner._port, inner._interface, inner._backlog) == (4444, "::1", 7)
    client: Any = WebSocketClientParser().parseStreamClient(reactor, "::1", "4444")
    assert client._url == "ws://[::1]:4444/" and client._inner._host == "::1"
    secure: Any = WebSocketClientParser(secure=True).parseStreamClient(reactor, host="example.com", port="443")
    assert secure._url == "wss://example.com:443/"
    with pytest.raises(ValueError, match="host= and port="):
        WebSocketClientParser().parseStreamClient(reactor, host="example.com")


def _plugins_found() -> bool:
    return "ws" in {parser.prefix for parser in getPlugins(IStreamServerEndpointStringParser)}


@pytest_twisted.ensureDeferred
async def test_endpoint_strings(ports: list[IListeningPort]) -> None:
    if not _plugins_found():
        pytest.skip("the twisted/plugins of the checkout are not found: pip install . or set PYTHONPATH")
    servers = {parser.prefix for parser in getPlugins(IStreamServerEndpointStringParser)}
    clients = {parser.prefix for parser in getPlugins(IStreamClientEndpointStringParserWithReactor)}
    assert {"ws", "wss"} <= servers and {"ws", "wss"} <= clients
    server = serverFromString(reactor, "ws:0:interface=127.0.0.1")
    assert isinstance(server, WebSocketServerEndpoint)
    factory = Recording()
    port = await listen(ports, factory, server)
    client = clientFromString(reactor, f"ws:host=127.0.0.1:port={port}:timeout=5")
    proto = await within(client.connect(Recording()))
    assert isinstance(proto, Framed)
    proto.sendString(b"from a string")
    assert await within((await within(factory.built.get())).strings.get()) == b"from a string"


@pytest_twisted.ensureDeferred
async def test_endpoint_strings_take_the_frame_limit(ports: list[IListeningPort]) -> None:
    """
    A node makes its ``ws:`` endpoint strings accept messages as large as its
    frames may be (and some slack), not the default size.
    """
    if not _plugins_found():
        pytest.skip("the twisted/plugins of the checkout are not found: pip install . or set PYTHONPATH")
    cap = 1024 + WEBSOCKET_SLACK
    client = client_from_string(reactor, "ws:host=127.0.0.1:port=1", 1024)
    assert isinstance(client, WebSocketClientEndpoint) and client.max_message_size == cap
    assert isinstance(server_from_string(reactor, "tcp:0", 1024), TCP4ServerEndpoint)
    server = server_from_string(reactor, "ws:0:interface=127.0.0.1", 1024)
    assert isinstance(server, WebSocketServerEndpoint) and server.max_message_size == cap
    near, far = await pair(ports, server=server)
    near.sendString(b"x" * (cap - 4))
    assert await within(far.strings.get()) == b"x" * (cap - 4)
    near.sendString(b"x" * (cap - 3))
    await within(far.lost)
    assert not far.strings.pending
