"""
TLS for the ``'SSL'`` and ``'wss'`` transports: self-signed like the reference
nodes, or verified against a certificate authority.

Self-signed mode (the default, and what py2p and js2p do) encrypts the link
but authenticates nobody: a listener shows a certificate made in memory at
start, and a dialler accepts any certificate.  It stops passive eavesdroppers,
not an attacker in the middle.  Verified mode (give ``authority``) makes both
sides prove a certificate signed by that authority, and the dialler checks
that the listener's certificate names the host it dialled.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from OpenSSL.crypto import FILETYPE_PEM, X509
from service_identity import CertificateError, VerificationError
from service_identity.hazmat import DNS_ID, IPAddress_ID, verify_service_identity
from service_identity.pyopenssl import extract_patterns
from twisted.internet import ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_mesh._logs import TLS

#: (Not a class attribute: there, a Logger takes the class's path as its namespace.)
_log = Logger(namespace=TLS)


def self_signed_certificate(common_name: str = "twisted_mesh") -> ssl.PrivateCertificate:
    """
    Make a key and a certificate for it, signed by itself, valid for a year.

    :param common_name: the name the certificate carries.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    loaded: ssl.PrivateCertificate = ssl.PrivateCertificate.loadPEM(
        key_pem + certificate.public_bytes(serialization.Encoding.PEM)
    )
    return loaded


_T = TypeVar("_T")


class TLSOptions:
    """
    How a node's TLS links are secured.

    :param certificate: this node's key and certificate; by default (and in
        self-signed mode) a fresh self-signed one.
    :param authority: the certificate authority that signs every node's
        certificate.  With it, TLS is verified both ways; without it, the
        node neither asks for nor checks its peers' certificates.
    """

    def __init__(
        self,
        certificate: ssl.PrivateCertificate | None = None,
        authority: ssl.Certificate | None = None,
    ) -> None:
        self.verified = authority is not None
        if certificate is None:
            if self.verified:
                raise ValueError("verified TLS needs this node's certificate, signed by the authority")
            certificate = self_signed_certificate()
        self.certificate = certificate
        self.authority = authority

    @classmethod
    def from_files(
        cls, certificate: str | Path | None = None, key: str | Path | None = None, authority: str | Path | None = None
    ) -> TLSOptions:
        """
        Read PEM files: a certificate and its key (or one file with both),
        and the authority's certificate.

        :raise ValueError: when a key is given without its certificate, or a
            file cannot be read or holds no PEM certificate (or key) where
            one is expected: its message names the file.
        """
        if key is not None and certificate is None:
            raise ValueError("a private key needs its certificate")
        private = None
        if certificate is not None:
            pem = _read_pem(certificate)
            _check_pem(certificate, lambda: ssl.Certificate.loadPEM(pem), "holds no PEM certificate")
            key_pem = pem if key is None else _read_pem(key)
            no_key = "holds no PEM private key" + ("" if key is not None else " (give the key's file too)")
            _check_pem(key or certificate, lambda: ssl.KeyPair.load(key_pem, FILETYPE_PEM), no_key)
            private = ssl.PrivateCertificate.loadPEM(key_pem + b"\n" + pem)
        ca = None
        if authority is not None:
            authority_pem = _read_pem(authority)
            ca = _check_pem(authority, lambda: ssl.Certificate.loadPEM(authority_pem), "holds no PEM certificate")
        return cls(private, ca)

    def server_options(self) -> Any:
        """The context factory a TLS listener uses."""
        if self.authority is None:
            _log.info("TLS in self-signed mode: links are encrypted, but no peer is authenticated")
            return self.certificate.options()
        return ssl.CertificateOptions(
            privateKey=self.certificate.privateKey.original,
            certificate=self.certificate.original,
            verify=True,
            caCerts=[self.authority.original],
            requireCertificate=True,
        )

    def client_creator(self, hostname: str) -> IOpenSSLClientConnectionCreator | Any:
        """The connection creator a TLS dialler of ``hostname`` uses."""
        if self.authority is None:
            # Like the references' diallers: accept whatever the peer shows.
            return ssl.CertificateOptions()
        creator = ssl.optionsForClientTLS(hostname, trustRoot=self.authority, clientCertificate=self.certificate)
        return _NameChecking(creator, hostname)


@implementer(IOpenSSLClientConnectionCreator)
class _NameChecking:
    """
    Twisted's verified client connections, whose check of the name in the
    listener's certificate refuses any certificate that does not name
    ``hostname``, with one log line.  (Twisted's own check logs a traceback
    for a certificate that names no host at all, and then accepts it.)
    """

    def __init__(self, creator: IOpenSSLClientConnectionCreator, hostname: str) -> None:
        self._creator = creator
        self._hostname = hostname
        self._service_id = IPAddress_ID(hostname) if isIPAddress(hostname) or isIPv6Address(hostname) else None

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = self._creator.clientConnectionForTLS(tlsProtocol)
        service_id = self._service_id or DNS_ID(self._hostname)

        def verify(connection: SSL.Connection, certificate: X509, error: int, depth: int, ok: int) -> bool:
            if depth != 0 or not ok:
                return bool(ok)
            refused: Exception
            try:
                verify_service_identity(extract_patterns(certificate), [service_id], [])
                return True
            except VerificationError as e:
                refused, reason = e, "it names another host"
            except CertificateError as e:
                refused, reason = e, f"it names no host ({e})"
            except Exception as e:
                # (An error raised out of OpenSSL's callback would be lost.)
                refused, reason = e, f"it cannot be read: {e!r}"
            _log.warn(
                "refused the TLS certificate of {address}, dialled as {host}: {reason}",
                address=tlsProtocol.transport.getPeer() if tlsProtocol.transport is not None else None,
                host=self._hostname,
                reason=reason,
            )
            tlsProtocol.failVerification(Failure(refused))
            return False

        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
        return connection


def _read_pem(path: str | Path) -> bytes:
    """The bytes of a PEM file; `ValueError` naming it when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None


def _check_pem(path: str | Path, load: Callable[[], _T], missing: str) -> _T:
    """What ``load`` reads from the file ``path``; `ValueError` naming it and what is ``missing`` when it fails."""
    try:
        return load()
    except Exception:
        raise ValueError(f"{path} {missing}") from None
