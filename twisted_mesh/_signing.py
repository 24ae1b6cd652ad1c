"""
Signed messages: how a node of a signed network signs what it sends, and
how it checks what it reads.

A signed message has two more fields at the end of its array, the sender's
public key and the signature::

    [msg_type, sender, time, *payload, public_key, signature]

The signature covers the context (`.MESSAGE_CONTEXT` and the subnet) and
the serial with the sender as bin up to the signature itself: the message's
type, sender, time and packets, and the key.  The key must hash to the sender's ID (see
`.node_id_of`).  Everything here is pure: no I/O, no reactor.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256
from typing import Any

from twisted_mesh._frames import WireMessage
from twisted_mesh._serial import pack
from twisted_mesh.keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, NodeKey, node_id_of, verify

#: What a message's signature covers first.
MESSAGE_CONTEXT = b"twisted-mesh/0.7 message\x00"

#: The msgpack head of the signature field (bin 8, 64 bytes), at the
#: serial's end before the signature.
_SIGNATURE_HEAD = pack(bytes(SIGNATURE_SIZE))[:-SIGNATURE_SIZE]

#: The length of the checksum that starts a body.
_CHECKSUM_SIZE = 32


def _context(subnet: str) -> bytes:
    """What a signature covers before the serial."""
    return MESSAGE_CONTEXT + pack(subnet)


class Signer:
    """
    Makes a node's messages on a signed network: each signed once, however
    many peers it goes to.

    :param key: the node's key (its ID is the messages' sender).
    :param subnet: the network's subnet, which every signature covers.
    """

    def __init__(self, key: NodeKey, subnet: str) -> None:
        self._key = key
        self._context = _context(subnet)

    def create(self, msg_type: int, time: int, payload: Sequence[Any]) -> WireMessage:
        """
        A new signed message of this node's, its sender as bin.

        :raise TypeError: when the payload holds a value msgpack cannot write.
        """
        key = self._key
        sender = key.node_id
        unsigned = pack([msg_type, sender.encode("ascii"), time, *payload, key.public_key, bytes(SIGNATURE_SIZE)])
        signed_part = unsigned[:-SIGNATURE_SIZE]
        serial = signed_part + key.sign(self._context + signed_part)
        checksum = sha256(serial).digest()
        return WireMessage(msg_type, sender, time, tuple(payload), checksum + serial, True, checksum)


class Verifier:
    """
    Checks the messages a node of a signed network reads.

    :param subnet: the network's subnet.
    """

    def __init__(self, subnet: str) -> None:
        self._context = _context(subnet)

    def check(self, msg: WireMessage) -> str | None:
        """
        Check ``msg``'s signature; when it holds, take the key and the
        signature off its payload.

        :return: ``None`` when it holds; else why not: ``'unsigned'`` (no key
            and signature where they go), ``'wrong_key'`` (a key that is not
            the sender's) or ``'bad_signature'`` (forged, or altered on the
            way).
        """
        payload = msg.payload
        if len(payload) < 2:
            return "unsigned"
        public_key, signature = payload[-2], payload[-1]
        if type(public_key) is not bytes or len(public_key) != PUBLIC_KEY_SIZE:
            return "unsigned"
        if type(signature) is not bytes or len(signature) != SIGNATURE_SIZE:
            return "unsigned"
        serial = msg.body_in(True)[_CHECKSUM_SIZE:]
        signed_part = serial[:-SIGNATURE_SIZE]
        if not signed_part.endswith(_SIGNATURE_HEAD):
            return "unsigned"
        if node_id_of(public_key) != msg.sender:
            return "wrong_key"
        if not verify(public_key, signature, self._context + signed_part):
            return "bad_signature"
        msg.payload = payload[:-2]
        return None
