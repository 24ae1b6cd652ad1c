"""
TLS: self-signed mode (the default, as py2p and js2p do it) and verified
mode, where a certificate authority signs every node's certificate.
"""

import datetime
import ipaddress
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import NameOID
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from twisted_mesh import MeshSocket, Network
from twisted_mesh.tls import TLSOptions

SSL_MESH = Network("mesh", "SSL")


def make_pki(folder: str, *hosts: str) -> None:
    """
    Write a certificate authority (ca.pem) and, for each host, a key and a
    certificate it signed (HOST.pem, both in one file), as a real
    deployment's PKI would hand them out.
    """
    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(
        subject: str,
        issuer: str,
        public_key: CertificatePublicKeyTypes,
        signing_key: CertificateIssuerPrivateKeyTypes,
        ca: bool,
        host: str | None = None,
    ) -> bytes:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
        )
        constraints = x509.BasicConstraints(ca=ca, path_length=None)
        builder = builder.add_extension(constraints, critical=True)
        if host is not None:
            # The name a dialler checks: an IP address or a DNS name.
            name: x509.GeneralName
            try:
                name = x509.IPAddress(ipaddress.ip_address(host))
            except ValueError:
                name = x509.DNSName(host)
            alt_names = x509.SubjectAlternativeName([name])
            builder = builder.add_extension(alt_names, critical=False)
        signed = builder.sign(signing_key, hashes.SHA256())
        return signed.public_bytes(serialization.Encoding.PEM)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_pem = certificate("mesh CA", "mesh CA", ca_key.public_key(), ca_key, ca=True)
    (Path(folder) / "ca.pem").write_bytes(ca_pem)
    for host in hosts:
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        cert_pem = certificate(
            host, "mesh CA", key.public_key(), ca_key, ca=False, host=host
        )
        (Path(folder) / f"{host}.pem").write_bytes(key_pem + cert_pem)


async def main(reactor: IReactorTime) -> None:
    # Self-signed mode: encrypted, but nobody is authenticated.
    alice = MeshSocket("127.0.0.1", 0, prot=SSL_MESH)
    bob = MeshSocket("127.0.0.1", 0, prot=SSL_MESH)
    await bob.connect("127.0.0.1", alice.out_addr[1])
    print("self-signed: connected, verified:", alice.tls.verified)

    # Verified mode: both sides show a certificate the authority signed, and
    # the dialler checks that the listener's names the host it dialled.
    # (One certificate for this machine's nodes: it names 127.0.0.1.)
    with tempfile.TemporaryDirectory() as folder:
        make_pki(folder, "127.0.0.1")
        tls = TLSOptions.from_files(
            f"{folder}/127.0.0.1.pem", authority=f"{folder}/ca.pem"
        )
    carol = MeshSocket("127.0.0.1", 0, prot=SSL_MESH, tls=tls)
    dave = MeshSocket("127.0.0.1", 0, prot=SSL_MESH, tls=tls)
    await dave.connect("127.0.0.1", carol.out_addr[1])
    print("verified: connected, verified:", carol.tls.verified)

    # A self-signed node cannot join the verified nodes.
    try:
        await bob.connect("127.0.0.1", carol.out_addr[1])
    except Exception:  # the TLS handshake fails, or the connection closes
        print("self-signed dialler refused")

    await defer.gatherResults([node.close() for node in (alice, bob, carol, dave)])


task.react(main)
