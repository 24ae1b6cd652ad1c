"""
Identifiers: base58, protocol IDs and node IDs.

Everything here is pure: no I/O, no reactor.
"""

from __future__ import annotations

import os
import re
from hashlib import sha256, sha384
from typing import NamedTuple

PROTOCOL_VERSION = "0.7"

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_DIGIT = {char: value for value, char in enumerate(_ALPHABET)}

#: The transports a `.Network` may name, as the references spell them.
ENCRYPTIONS = ("Plaintext", "SSL", "ws", "wss")


def b58encode_int(number: int) -> str:
    """
    Write a non-negative integer in base58 (Bitcoin's alphabet, no padding).

    :param number: the integer to write.
    :return: its base58 digits; ``"1"`` for zero.
    """
    if number < 0:
        raise ValueError("base58 encodes non-negative integers only")
    digits = []
    while True:
        number, digit = divmod(number, 58)
        digits.append(_ALPHABET[digit])
        if not number:
            return "".join(reversed(digits))


_BASE58 = re.compile(f"[{_ALPHABET}]+")


def is_base58(text: str) -> bool:
    """Whether ``text`` is a non-empty string of base58 digits."""
    return _BASE58.fullmatch(text) is not None


def b58decode_int(text: str) -> int:
    """
    Read a base58 number written by `.b58encode_int`.

    :param text: base58 digits.
    :raise ValueError: when ``text`` is empty or holds a non-base58 character.
    """
    if not text:
        raise ValueError("empty base58 string")
    number = 0
    for char in text:
        try:
            number = number * 58 + _DIGIT[char]
        except KeyError:
            raise ValueError(f"not a base58 character: {char!r}") from None
    return number


class _NetworkFields(NamedTuple):
    subnet: str
    encryption: str = "Plaintext"
    signed: bool = False


class Network(_NetworkFields):
    """
    The network a node belongs to: an application's subnet and a transport,
    signed or not.

    Nodes talk only to nodes of the same `.Network.id`: a different subnet
    or a different transport is a different network, and so is the signed
    network of a subnet.  py2p and js2p call it ``Protocol``:
    `twisted_mesh.Protocol` is this class too.

    :ivar subnet: a string naming the application's network.
    :ivar encryption: the transport: ``'Plaintext'`` (TCP), ``'SSL'`` (TLS),
        ``'ws'`` or ``'wss'`` (WebSocket).
    :ivar signed: whether the network is signed: each node proves its key
        in the handshake, and signs every message it sends (see
        :doc:`/authenticated`).  Only twisted_mesh nodes join a signed
        network.
    :raise TypeError: when ``subnet`` is not a string, or ``signed`` not a
        bool.
    :raise ValueError: when ``subnet`` is empty, or ``encryption`` is not
        one of the transports (`.ENCRYPTIONS`).
    """

    __slots__ = ()

    def __new__(cls, subnet: str, encryption: str = "Plaintext", signed: bool = False) -> Network:
        if not isinstance(subnet, str):
            raise TypeError(f"subnet must be a string, not {type(subnet).__name__}")
        if not subnet:
            raise ValueError("subnet is empty: name the application's network")
        if encryption not in ENCRYPTIONS:
            raise ValueError(f"unknown transport {encryption!r} for encryption: use one of {', '.join(ENCRYPTIONS)}")
        if not isinstance(signed, bool):
            raise TypeError(f"signed must be True or False, not {signed!r}")
        return super().__new__(cls, subnet, encryption, signed)

    @property
    def id(self) -> str:
        """The protocol ID: base58 of sha256(subnet + encryption + version), ``+signed`` after it when signed."""
        return protocol_id(self.subnet, self.encryption, self.signed)


#: The name py2p and js2p give `.Network`: code written for them runs as it is.
Protocol = Network


#: What a signed network's protocol ID is computed with after the version.
SIGNED_SUFFIX = "+signed"


def protocol_id(subnet: str, encryption: str, signed: bool = False) -> str:
    """
    Compute the protocol ID that nodes compare in their handshakes.

    :param subnet: the application's subnet name.
    :param encryption: the transport name.
    :param signed: whether the network is signed.
    """
    suffix = SIGNED_SUFFIX if signed else ""
    digest = sha256((subnet + encryption + PROTOCOL_VERSION + suffix).encode("utf-8"))
    return b58encode_int(int.from_bytes(digest.digest(), "big"))


def new_node_id(protocol: Network) -> str:
    """
    Make a fresh, random node ID for a node of ``protocol``.

    The ID is base58 of a SHA-384 over the protocol ID and 32 random bytes,
    which makes it 64 to 66 characters long, like the references' IDs.
    """
    digest = sha384(protocol.id.encode("ascii") + os.urandom(32)).digest()
    return b58encode_int(int.from_bytes(digest, "big"))


#: The shortest node ID accepted from the wire.  Node IDs have 64 to 66
#: digits; from 32 characters on, an ID takes as many bytes as msgpack bin as
#: it does as msgpack str, so a message relayed with its sender in the other
#: form keeps its size (and stays within the size limit it arrived within).
MIN_NODE_ID_LENGTH = 32


def is_node_id(text: str) -> bool:
    """Whether ``text`` can be a node ID: base58, of `.MIN_NODE_ID_LENGTH` characters or more."""
    return len(text) >= MIN_NODE_ID_LENGTH and is_base58(text)


#: The longest ID read from the wire.  Node IDs (base58 of a SHA-384) have
#: at most 66 digits, protocol and request IDs (SHA-256) 44; a longer one is
#: refused before anything is done with it.
MAX_ID_LENGTH = 128


def id_text(value: object) -> str | None:
    """
    Read an ID field from the wire in either form, bin or str.

    :return: the ID as text, or ``None`` when ``value`` is neither a non-empty
        ASCII ``bytes`` nor a non-empty ASCII ``str`` of at most
        `.MAX_ID_LENGTH` characters.
    """
    if isinstance(value, bytes):
        if not value or len(value) > MAX_ID_LENGTH or not value.isascii():
            return None
        return value.decode("ascii")
    if isinstance(value, str) and value and len(value) <= MAX_ID_LENGTH and value.isascii():
        return value
    return None
