"""
`.NodeKey`: a node's Ed25519 key, and the node ID it makes.

A node of a signed network (``Network(..., signed=True)``) proves in each
handshake that it holds the key of its ID, and signs every message it sends
with it.  A node given a key keeps the same ID across restarts.
"""

from __future__ import annotations

import os
from functools import lru_cache
from hashlib import sha384
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from twisted_mesh._ids import b58encode_int

#: The size of an Ed25519 public key, and of a signature, in bytes.
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


@lru_cache(maxsize=4096)
def node_id_of(public_key: bytes) -> str:
    """
    The node ID of an Ed25519 public key: base58 of the SHA-384 of its 32
    raw bytes, as long as a random node ID and of the same alphabet.
    Cached: a node hears from the same few senders again and again.
    """
    return b58encode_int(int.from_bytes(sha384(public_key).digest(), "big"))


class NodeKey:
    """
    A node's Ed25519 private key.

    :ivar public_key: the raw 32 bytes of its public key, as it goes on the
        wire.
    :ivar node_id: the ID of the node that holds it (see `.node_id_of`).
    """

    __slots__ = ("_private", "public_key", "node_id")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_key = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.node_id = node_id_of(self.public_key)

    def __repr__(self) -> str:
        return f"<NodeKey of {self.node_id}>"

    @classmethod
    def generate(cls) -> NodeKey:
        """A new random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NodeKey:
        """
        Read a key from a PEM file (PKCS #8, unencrypted), as `.save` writes.

        :raise ValueError: naming the file, when it holds no Ed25519 private
            key in PEM.
        :raise OSError: when it cannot be read.
        """
        data = Path(path).read_bytes()
        try:
            private = load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{os.fspath(path)} holds no unencrypted PEM private key: {e}") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{os.fspath(path)} holds a {type(private).__name__}, not an Ed25519 key")
        return cls(private)

    def save(self, path: str | os.PathLike[str]) -> None:
        """
        Write the key to a new PEM file that only its owner may read
        (mode 0600).

        :raise FileExistsError: when the file exists: a key is never
            overwritten.
        """
        pem = self._private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(pem)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> tuple[NodeKey, bool]:
        """
        The key of the file at ``path``, made and saved there first when
        there is no such file.

        :return: the key, and whether it was made now.
        """
        try:
            return cls.load(path), False
        except FileNotFoundError:
            key = cls.generate()
            key.save(path)
            return key, True

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._private.sign(data)


@lru_cache(maxsize=4096)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    """A public key read from its raw bytes; cached, for a node hears from the same few senders."""
    return Ed25519PublicKey.from_public_bytes(raw)


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """
    Whether ``signature`` is the signature of ``data`` by ``public_key``
    (raw 32 bytes, as on the wire).
    """
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        _public_key(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):  # (ValueError: not a point of the curve)
        return False
    return True
