"""
The transports beyond plain TCP: TLS ('SSL') and WebSocket ('ws', 'wss'),
between twisted_mesh nodes and with the reference nodes.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import ssl
from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ConnectionClosed
from twisted.logger import LogEvent, formatEvent

from tests.reference import Reference
from tests.support import MeshNodes, wait_for, within
from twisted_mesh import HandshakeFailed, Limits, MeshSocket, Network, flags
from twisted_mesh._link.tcp import tcp_connection
from twisted_mesh.tls import TLSOptions, self_signed_certificate


def network(encryption: str) -> Network:
    """The "mesh" network over ``encryption``'s transport."""
    return Network("mesh", encryption)


def tls_nodes(mesh: MeshNodes, encryption: str, *options: TLSOptions | None) -> list[MeshSocket]:
    """Nodes of ``encryption``'s network, one for each TLS options (None: a self-signed certificate)."""
    return [mesh(prot=network(encryption), tls=tls) for tls in options]


async def dial_refused(dialler: MeshSocket, listener: MeshSocket) -> str:
    """What ``dialler``'s dial to ``listener`` fails with (TLS errors come in several types)."""
    with pytest.raises(Exception) as caught:  # noqa: B017
        await within(dialler.connect("127.0.0.1", listener.out_addr[1]))
    return str(caught.value)


async def exchange(first: MeshSocket, second: MeshSocket) -> None:
    """A broadcast each way and a reply: the link works both ways."""
    first.send("one way", b"\x00")
    msg = await within(second.next_message())
    assert msg.packets == (flags.broadcast, "one way", b"\x00") and msg.sender == first.id
    msg.reply("and back")
    answer = await within(first.next_message())
    assert answer.packets == (flags.whisper, "and back") and answer.sender == second.id


@pytest.mark.parametrize("encryption", ["SSL", "ws", "wss"])
@pytest_twisted.ensureDeferred
async def test_between_twisted_mesh_nodes(mesh: MeshNodes, encryption: str) -> None:
    a, b, c = (mesh(prot=network(encryption)) for _ in range(3))
    assert await within(b.connect("127.0.0.1", a.out_addr[1])) == a.id
    await within(c.connect("127.0.0.1", b.out_addr[1]))
    await exchange(a, b)
    # c heard a's broadcast through the mesh.
    assert (await within(c.next_message())).packets == (flags.broadcast, "one way", b"\x00")
    # Peer exchange dials over the same transport.
    await wait_for(lambda: a.id in c.routing_table)
    await exchange(c, a)


@pytest.mark.parametrize("encryption", ["Plaintext", "SSL", "ws", "wss"])
@pytest_twisted.ensureDeferred
async def test_a_link_finds_its_tcp_connection_under_any_wrapper(mesh: MeshNodes, encryption: str) -> None:
    """
    Under TLS and WebSocket too, each link finds its TCP connection and
    turns Nagle's delay off on it; it has it send at the end of a turn
    when what it writes reaches it at once (not through TLS, which gathers
    writes until its own next turn).
    """
    a, b = (mesh(prot=network(encryption)) for _ in range(2))
    await within(b.connect("127.0.0.1", a.out_addr[1]))
    await exchange(b, a)
    links = [link for node in (a, b) for link in node._connections]
    assert len(links) == 2
    for link in links:
        tcp = tcp_connection(link.transport)
        assert isinstance(tcp, FileDescriptor)
        assert tcp.getHandle().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert link._writer._tcp is (None if encryption in ("SSL", "wss") else tcp)


@pytest.mark.parametrize("encryption", ["SSL", "ws", "wss"])
@pytest_twisted.ensureDeferred
async def test_a_plaintext_peer_is_refused(mesh: MeshNodes, encryption: str) -> None:
    """Each transport is its own network: a TCP dial of it fails."""
    secured = mesh(prot=network(encryption))
    # A WebSocket listener waits for an HTTP request that never comes: the
    # handshake timeout ends the attempt.
    plain = mesh(prot=network("Plaintext"), limits=Limits(handshake_timeout=3))
    with pytest.raises((HandshakeFailed, ConnectionClosed)):
        await within(plain.connect("127.0.0.1", secured.out_addr[1]))
    assert not secured.routing_table and not plain.routing_table


# -- verified TLS ----------------------------------------------------------------------


def authority_and_certificates(
    *names: str, bare: tuple[str, ...] = ()
) -> tuple[ssl.Certificate, list[ssl.PrivateCertificate]]:
    """
    A throwaway certificate authority, and a certificate it signed for each
    name (an IP address or a DNS name, in subjectAltName; only in the
    common name for those in ``bare``).
    """
    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject: str, issuer: x509.Name, public_key: Any, signing_key: Any, is_ca: bool, san: Any) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        )
        if san is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    def pem(key: Any, certificate: Any) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ) + certificate.public_bytes(serialization.Encoding.PEM)

    authority_key = ec.generate_private_key(ec.SECP256R1())
    authority_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "twisted_mesh test authority")])
    authority = build(
        "twisted_mesh test authority", authority_name, authority_key.public_key(), authority_key, True, None
    )
    signed = []
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            san: Any = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            san = x509.DNSName(name)
        certificate = build(name, authority_name, key.public_key(), authority_key, False, None if name in bare else san)
        signed.append(ssl.PrivateCertificate.loadPEM(pem(key, certificate)))
    return ssl.Certificate.loadPEM(authority.public_bytes(serialization.Encoding.PEM)), signed


@pytest.mark.parametrize("encryption", ["SSL", "wss"])
@pytest_twisted.ensureDeferred
async def test_verified_tls(mesh: MeshNodes, encryption: str) -> None:
    authority, (first, second) = authority_and_certificates("127.0.0.1", "127.0.0.1")
    a, b = tls_nodes(mesh, encryption, TLSOptions(first, authority), TLSOptions(second, authority))
    assert await within(b.connect("127.0.0.1", a.out_addr[1])) == a.id
    await wait_for(lambda: b.id in a.routing_table)
    await exchange(a, b)


@pytest.mark.parametrize("encryption", ["SSL", "wss"])
@pytest_twisted.ensureDeferred
async def test_verified_tls_refuses_another_authority(mesh: MeshNodes, encryption: str) -> None:
    authority, (first,) = authority_and_certificates("127.0.0.1")
    other_authority, (stranger,) = authority_and_certificates("127.0.0.1")
    a, b = tls_nodes(mesh, encryption, TLSOptions(first, authority), TLSOptions(stranger, other_authority))
    assert "certificate verify failed" in await dial_refused(b, a)
    assert not a.routing_table and not b.routing_table


@pytest.mark.parametrize("encryption", ["SSL", "wss"])
@pytest_twisted.ensureDeferred
async def test_verified_tls_checks_the_name(mesh: MeshNodes, encryption: str) -> None:
    """A listener whose certificate names another host is refused by the dialler."""
    authority, (wrong_name, dialler) = authority_and_certificates("elsewhere.example", "127.0.0.1")
    a, b = tls_nodes(mesh, encryption, TLSOptions(wrong_name, authority), TLSOptions(dialler, authority))
    assert "IPAddressMismatch" in await dial_refused(b, a)
    assert not b.routing_table


@pytest.mark.parametrize("encryption", ["SSL", "wss"])
@pytest_twisted.ensureDeferred
async def test_verified_tls_refuses_a_certificate_naming_no_host(
    mesh: MeshNodes, encryption: str, log_events: list[LogEvent]
) -> None:
    """
    A listener whose certificate, signed by the authority, names no host (no
    subjectAltName) is refused by the dialler, with one log line and no
    traceback.  (Twisted's own check logs a traceback, then accepts it.)
    """
    authority, (bare, dialler) = authority_and_certificates("127.0.0.1", "127.0.0.2", bare=("127.0.0.1",))
    a, b = tls_nodes(mesh, encryption, TLSOptions(bare, authority), TLSOptions(dialler, authority))
    assert "subjectAltName" in await dial_refused(b, a)
    assert not b.routing_table and not a.routing_table
    lines = [formatEvent(event) or "" for event in log_events if event.get("log_namespace") == "twisted_mesh.tls"]
    refused = [line for line in lines if line.startswith("refused the TLS certificate of ")]
    assert len(refused) == 1 and "dialled as 127.0.0.1: it names no host" in refused[0], lines
    assert not [event for event in log_events if "log_failure" in event]


@pytest.mark.parametrize("encryption", ["SSL", "wss"])
@pytest_twisted.ensureDeferred
async def test_verified_listener_refuses_self_signed_dialler(mesh: MeshNodes, encryption: str) -> None:
    authority, (first,) = authority_and_certificates("127.0.0.1")
    a, b = tls_nodes(mesh, encryption, TLSOptions(first, authority), None)
    await dial_refused(b, a)
    await wait_for(lambda: not a._connections)
    assert not a.routing_table


def test_tls_options_from_files(tmp_path: Path) -> None:
    certificate = self_signed_certificate("node.example")
    (tmp_path / "node.pem").write_bytes(certificate.dumpPEM())
    options = TLSOptions.from_files(tmp_path / "node.pem", authority=tmp_path / "node.pem")
    assert options.verified
    assert options.certificate.getSubject().commonName == b"node.example"


def test_a_key_needs_its_certificate(tmp_path: Path) -> None:
    """A key file without the certificate it goes with is refused, not ignored."""
    (tmp_path / "key.pem").write_bytes(b"a key")
    with pytest.raises(ValueError, match="needs its certificate"):
        TLSOptions.from_files(key=tmp_path / "key.pem")


def test_verified_tls_needs_a_certificate() -> None:
    authority, _ = authority_and_certificates()
    with pytest.raises(ValueError):
        TLSOptions(authority=authority)


# -- endpoint strings ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ssl_endpoint_string(mesh: MeshNodes, tmp_path: Path) -> None:
    """An 'SSL' node listens on Twisted's own ssl: endpoint string."""
    certificate = self_signed_certificate("127.0.0.1")
    (tmp_path / "node.pem").write_bytes(certificate.dumpPEM())
    ssl_mesh = Network("mesh", "SSL")
    listener = mesh.service(ssl_mesh, listen=[f"ssl:0:interface=127.0.0.1:privateKey={tmp_path / 'node.pem'}"])
    port = (await listener.listening)[0].getHost().port
    dialler = mesh(prot=ssl_mesh)
    assert await within(dialler.connect("127.0.0.1", port)) == listener.id


@pytest.mark.parametrize("other", ["SSL", "ws", "wss"])
@pytest_twisted.ensureDeferred
async def test_a_node_on_two_transports_bridges_them(mesh: MeshNodes, other: str, tmp_path: Path) -> None:
    """
    A node that listens on TCP and on another transport joins both networks
    and relays between them; its peer lists name only peers of the
    receiver's transport.
    """
    prefix = {"SSL": "ssl", "ws": "ws", "wss": "wss"}[other]
    listen = f"{prefix}:0:interface=127.0.0.1"
    if other in ("SSL", "wss"):
        (tmp_path / "bridge.pem").write_bytes(self_signed_certificate("127.0.0.1").dumpPEM())
        listen += f":privateKey={tmp_path / 'bridge.pem'}"
    bridge = mesh.service(network("Plaintext"), listen=["tcp:0:interface=127.0.0.1", listen])
    tcp_port, other_port = (port.getHost().port for port in await within(bridge.listening))
    assert bridge.status()["out_addrs"] == {"Plaintext": ["127.0.0.1", tcp_port], other: ["127.0.0.1", other_port]}
    plain, secured = mesh(prot=network("Plaintext")), mesh(prot=network(other))
    plain_too = mesh(prot=network("Plaintext"))
    assert await within(plain.connect("127.0.0.1", tcp_port)) == bridge.id
    assert await within(secured.connect("127.0.0.1", other_port)) == bridge.id
    assert await within(plain_too.connect("127.0.0.1", tcp_port)) == bridge.id
    # Peer exchange: the TCP nodes find each other, never the other transport's node.
    await wait_for(lambda: plain.id in plain_too.routing_table)
    assert secured.id not in plain.routing_table and secured.id not in plain_too.routing_table
    assert set(secured.routing_table) == {bridge.id}
    plain.send("across")
    msg = await within(secured.next_message())
    assert msg.packets == (0, "across") and msg.sender == plain.id
    secured.send("and back")
    for node in (plain, plain_too):
        got = [await within(node.next_message()) for _ in range(1 if node is plain else 2)]
        assert got[-1].packets == (0, "and back") and got[-1].sender == secured.id
    assert {peer["transport"] for peer in bridge.status()["peers"]} == {"Plaintext", other}


# -- the reference nodes ---------------------------------------------------------------


REFERENCE_TRANSPORTS = [("py2p", "SSL"), ("js2p", "SSL"), ("js2p", "ws")]


@pytest.mark.parametrize("we_dial", [True, False], ids=["we-dial", "they-dial"])
@pytest.mark.parametrize(("kind", "encryption"), REFERENCE_TRANSPORTS)
@pytest_twisted.ensureDeferred
async def test_reference_over_transport(
    reference: Reference, mesh: MeshNodes, kind: str, encryption: str, we_dial: bool
) -> None:
    node = mesh(prot=network(encryption))
    ref = await reference(kind, encryption=encryption)
    if we_dial:
        assert await within(node.connect("127.0.0.1", ref.port), 60) == ref.id
    else:
        assert await ref.connect("127.0.0.1", node.out_addr[1])
    await wait_for(lambda: ref.id in node.routing_table, 60)
    node.send("over", encryption)
    got = await ref.next_message(60)
    assert got["packets"] == [0, "over", encryption] and got["sender"] == node.id
    await ref.reply("reply over", encryption)
    reply = await within(node.next_message(), 60)
    assert reply.packets == (flags.whisper, "reply over", encryption)
    await ref.send("from", kind)
    msg = await within(node.next_message(), 60)
    assert msg.packets == (0, "from", kind) and msg.sender == ref.id
    msg.reply("ours")
    answer = await ref.next_message(60)
    assert answer["packets"] == [flags.whisper, "ours"]


@pytest_twisted.ensureDeferred
async def test_unix_socket_endpoint(mesh: MeshNodes, tmp_path: Path) -> None:
    """A 'Plaintext' node listens on a unix: endpoint string and is dialled on one."""
    path = tmp_path / "mesh.sock"
    listener = mesh.service(listen=[f"unix:{path}"])
    dialler = mesh.service()
    await within(listener.listening)
    assert await within(dialler.connect(f"unix:path={path}")) == listener.id
    await wait_for(lambda: dialler.id in listener.routing_table)
    dialler.send("over a unix socket")
    assert (await within(listener.next_message())).packets == (0, "over a unix socket")
    # (No TCP connection under it: what it writes, the reactor sends.)
    assert [link._writer._tcp for link in listener._connections] == [None]


def test_endpoint_prefixes_name_their_transport() -> None:
    from twisted_mesh._service.endpoints import encryption_of

    assert encryption_of("tls:host=example.com:port=4444", "Plaintext") == "SSL"
    assert encryption_of("ssl:4444:privateKey=k.pem", "Plaintext") == "SSL"
    assert encryption_of("wss:host=h:port=1", "Plaintext") == "wss"
    assert encryption_of("ws:4444", "SSL") == "ws"
    assert encryption_of("unix:/tmp/x", "SSL") == "Plaintext"
    assert encryption_of("systemd:domain=INET:index=0", "ws") == "ws"
