"""
The handshake and what a link negotiates with its peer: the peer's
handshake read and checked, the form of IDs each side writes, the
compression each side sends with, and the renegotiation words.

Pure functions: no transport, no reactor, no node.  `.LinkProtocol` acts on
what they decide.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, NamedTuple

from twisted_mesh import _compression, flags
from twisted_mesh._core.link import Address, parse_address
from twisted_mesh._ids import id_text, is_node_id, protocol_id
from twisted_mesh._serial import pack
from twisted_mesh.errors import HandshakeFailed, ProtocolMismatch, SelfConnection
from twisted_mesh.keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, NodeKey, node_id_of, verify

#: The most compression codes a peer may list.
MAX_CODES = 32


def offered() -> list[int]:
    """
    The compression codes a link offers: in its handshake, and in the
    renegotiation that is a twisted_mesh node's first word.
    """
    return list(_compression.SUPPORTED)


def parse_codes(value: object) -> tuple[int, ...] | None:
    """Read a list of compression codes, each once, or ``None``."""
    if not isinstance(value, list) or len(value) > MAX_CODES:
        return None
    if not all(type(code) is int and 0 <= code <= 0xFF for code in value):
        return None
    return tuple(dict.fromkeys(value))


class PeerHandshake(NamedTuple):
    """
    A peer's handshake, read.

    :ivar peer_id: its node ID.
    :ivar protocol_id: the protocol ID it speaks.
    :ivar address: the address it asks others to dial, or ``None`` for a
        peer that cannot be dialled (a browser).
    :ivar codes: the compression codes it reads, each once.
    :ivar writes_str: whether it wrote its IDs as str (else as bin).
    :ivar public_key: on a signed network, the peer's public key.
    :ivar nonce: on a signed network, what the peer's proof is asked to
        sign with ours (see `.ProofTerms`).
    """

    peer_id: str
    protocol_id: str
    address: Address | None
    codes: tuple[int, ...]
    writes_str: bool
    public_key: bytes | None = None
    nonce: bytes | None = None


#: The size of the nonce of a signed network's handshake.
NONCE_SIZE = 32


def parse_handshake(payload: tuple[Any, ...]) -> PeerHandshake | None:
    """
    Read ``[handshake, id, protocol_id, [host, port], [codes]]``, or on a
    signed network ``[..., public_key, nonce]``; or ``None``.

    Port 0 says the peer cannot be dialled (a browser): its address is
    ``None``.
    """
    public_key = nonce = None
    if len(payload) == 7:
        public_key, nonce = payload[5], payload[6]
        if type(public_key) is not bytes or len(public_key) != PUBLIC_KEY_SIZE:
            return None
        if type(nonce) is not bytes or len(nonce) != NONCE_SIZE:
            return None
    elif len(payload) != 5:
        return None
    peer_id, theirs = id_text(payload[1]), id_text(payload[2])
    address, codes = parse_address(payload[3]), parse_codes(payload[4])
    undialable = isinstance(payload[3], list) and len(payload[3]) == 2 and payload[3][1] == 0
    if peer_id is None or theirs is None or codes is None or not is_node_id(peer_id):
        return None
    if address is None and not undialable:
        return None
    return PeerHandshake(peer_id, theirs, address, codes, isinstance(payload[1], str), public_key, nonce)


def handshake_payload(
    node_id: str, protocol_id: str, address: Address, as_bin: bool, proving: tuple[bytes, bytes] | None = None
) -> tuple[Any, ...]:
    """
    Our handshake, its IDs in the given form.

    :param proving: on a signed network, our public key and our nonce.
    """
    payload = (flags.handshake, wire_id(node_id, as_bin), wire_id(protocol_id, as_bin), list(address), offered())
    return payload if proving is None else (*payload, *proving)


def wire_id(node_id: str, as_bin: bool) -> str | bytes:
    """An ID in the form the peer reads: bin (``as_bin``) or str."""
    return node_id.encode("ascii") if as_bin else node_id


def mismatch(handshake: PeerHandshake, subnet: str, encryption: str, signed: bool) -> ProtocolMismatch | None:
    """
    The error of a handshake in another protocol than ours, if it is; it
    says so when the peer is on the same subnet, signed where we are not or
    the other way round.
    """
    ours, theirs = protocol_id(subnet, encryption, signed), handshake.protocol_id
    if theirs == ours:
        return None
    if theirs == protocol_id(subnet, encryption, not signed):
        if signed:
            note = (
                "this network is signed, and the peer is on the unsigned network"
                " of the same subnet (py2p, js2p, or a node without signed=True)"
            )
        else:
            note = "the peer is on the signed network of the same subnet, and this node is not (it needs signed=True)"
        return ProtocolMismatch(ours, theirs, note)
    return ProtocolMismatch(ours, theirs)


def unproved(handshake: PeerHandshake, allowed: frozenset[str] | None) -> tuple[HandshakeFailed, str] | None:
    """
    Why a signed network's peer is refused before its proof, if it is: its
    handshake has no key, a key that is not its ID's, or an ID that the
    allow-list does not hold.

    :return: the error, and the reason the node counts it under.
    """
    if handshake.public_key is None or handshake.nonce is None:
        return HandshakeFailed("the peer's handshake has no key, on a signed network"), "unproved"
    if node_id_of(handshake.public_key) != handshake.peer_id:
        return HandshakeFailed(f"the peer's key is not that of its ID {handshake.peer_id}"), "wrong_key"
    if allowed is not None and handshake.peer_id not in allowed:
        return HandshakeFailed(f"the peer {handshake.peer_id} is not on the allow-list"), "not_allowed"
    return None


#: What a handshake proof signs first.
PROOF_CONTEXT = b"twisted-mesh/0.7 handshake proof\x00"

#: The label of the keying material a TLS link's proofs are bound to
#: (`.LinkProtocol.channel_binding`, RFC 5705 and 9266).
BINDING_LABEL = b"EXPORTER-twisted-mesh-proof"


class ProofTerms(NamedTuple):
    """
    What a handshake proof signs, beside `.PROOF_CONTEXT`: the link as the
    node that signs sees it.

    The checker must find in it its own ID, its own nonce, and the other
    role than its own: a proof made for another node, another connection or
    another network does not hold, nor one sent back to its maker.  On a
    TLS link the proof also binds the TLS session (``binding``): a node in
    the middle, with a TLS session to each end, cannot pass it on.

    :ivar protocol_id: the link's protocol ID.
    :ivar signer_dialled: whether the node that signs is the one dialled.
    :ivar signer_id: its node ID.
    :ivar checker_id: the ID of the node it proves its key to.
    :ivar signer_address: the address the signer's handshake gave, or
        ``None`` for a node that cannot be dialled: a node in the middle
        cannot pass the link on under an address of its own.
    :ivar signer_nonce: the signer's nonce.
    :ivar checker_nonce: the checker's nonce.
    :ivar binding: the TLS session's keying material, or empty without TLS.
    """

    protocol_id: str
    signer_dialled: bool
    signer_id: str
    checker_id: str
    signer_address: Address | None
    signer_nonce: bytes
    checker_nonce: bytes
    binding: bytes

    def signed(self) -> bytes:
        """The bytes the proof signs: the context, then these terms in msgpack."""
        address = None if self.signer_address is None else list(self.signer_address)
        role = "dialled" if self.signer_dialled else "dialler"
        terms = [self.protocol_id, role, self.signer_id, self.checker_id, address]
        return PROOF_CONTEXT + pack([*terms, self.signer_nonce, self.checker_nonce, self.binding])


def proof(key: NodeKey, terms: ProofTerms) -> bytes:
    """Our proof that we hold ``key``, on the terms of the link."""
    return key.sign(terms.signed())


def proof_holds(handshake: PeerHandshake, signature: bytes, terms: ProofTerms) -> bool:
    """Whether ``signature`` is the proof of the peer of ``handshake`` on ``terms`` (the peer's, as we see them)."""
    return handshake.public_key is not None and verify(handshake.public_key, signature, terms.signed())


def refusal(handshake: PeerHandshake, own_id: str, expected_id: str | None) -> tuple[HandshakeFailed, str] | None:
    """
    Why a peer's first handshake (in our protocol) is refused, if it is.

    :param own_id: our node's ID: a peer with it is our node.
    :param expected_id: the ID of the peer dialled for, if it is known.
    :return: the error, and the reason the node counts it under.
    """
    if handshake.peer_id == own_id:
        return SelfConnection("connected to itself"), "self"
    if expected_id is not None and handshake.peer_id != expected_id:
        # Before the routing table: this peer is not the one dialled for.
        return HandshakeFailed(f"the peer is {handshake.peer_id}, not {expected_id}"), "unexpected"
    return None


class IdForm(NamedTuple):
    """
    The form our handshake goes to the peer in.

    :ivar as_bin: whether our IDs go as bin (else as str).
    :ivar sends_twice: whether the peer now holds the link under both forms
        of our ID, and so writes each of its whispers to it twice.
    """

    as_bin: bool
    sends_twice: bool


def answer_form(peer_writes_str: bool, *, sent: bool, as_bin: bool, identified: bool) -> IdForm | None:
    """
    Whether a peer's handshake is answered with ours (again), and in which
    form; ``None`` when ours went already in a form the peer reads.

    :param peer_writes_str: whether the peer wrote its IDs as str.
    :param sent: whether our handshake went already.
    :param as_bin: whether it went with IDs as bin.
    :param identified: whether the peer's handshake came before.
    """
    if not sent:
        # The peer spoke first, and hears our handshake once, in its form.
        return IdForm(not peer_writes_str, False)
    if as_bin and peer_writes_str and not identified:
        # A node that writes IDs as str (js2p) spoke after we did (it was
        # slow to, see LinkProtocol._no_first_word): restate ours in its
        # form.  js2p then keeps this connection under both forms of our
        # ID, and a whisper it sends to all its peers comes twice, back to
        # back.
        return IdForm(False, True)
    return None


def unprompted_form(encryption: str) -> bool:
    """
    The form (bin: ``True``) to speak first in to a node that says nothing,
    over ``encryption``: js2p over WebSocket (py2p has no WebSocket); else
    py2p, which reads nothing but bin.
    """
    return encryption not in ("ws", "wss")


def send_code(peer_codes: tuple[int, ...]) -> int | None:
    """The compression to send with to a peer that reads ``peer_codes``, if any."""
    return _compression.choose(_compression.SENT, peer_codes)


def agreed(peer_codes: tuple[int, ...]) -> list[int]:
    """The codes both sides read, in our order: what a changed list is answered with."""
    return [code for code in _compression.SUPPORTED if code in peer_codes]


class Word(Enum):
    """What a renegotiation message says."""

    #: The compression codes the peer reads from now on.
    COMPRESSION = "compression"
    #: Send the last message again.
    RESEND = "resend"
    #: A signed network's peer proves its key (see `.read_proof`).
    PROOF = "proof"
    #: The peer speaks lazy push (see `.twisted_mesh._core.tree`).
    LAZY_PUSH = "lazy_push"
    #: A word of lazy push for the node: prune, ihave or graft.
    TREE = "tree"
    #: A compression word with a bad list of codes.
    MALFORMED = "malformed"
    #: Something else, which is ignored.
    OTHER = "other"


_TREE_WORDS = frozenset((flags.prune, flags.ihave, flags.graft))


def read_renegotiation(payload: tuple[Any, ...]) -> tuple[Word, tuple[int, ...]]:
    """Read a renegotiation's payload: what it says, with its codes."""
    if len(payload) == 2 and payload[0] == flags.compression:
        codes = parse_codes(payload[1])
        return (Word.MALFORMED, ()) if codes is None else (Word.COMPRESSION, codes)
    if len(payload) == 1 and payload[0] == flags.resend:
        return Word.RESEND, ()
    if payload and payload[0] == flags.proof:
        return Word.PROOF, ()
    if len(payload) == 1 and payload[0] == flags.lazy_push:
        return Word.LAZY_PUSH, ()
    if payload and type(payload[0]) is int and payload[0] in _TREE_WORDS:
        return Word.TREE, ()
    return Word.OTHER, ()


def read_proof(payload: tuple[Any, ...]) -> bytes | None:
    """The signature of a proof, ``[proof, signature]``, or ``None``."""
    if len(payload) == 2 and type(payload[1]) is bytes and len(payload[1]) == SIGNATURE_SIZE:
        return payload[1]
    return None
