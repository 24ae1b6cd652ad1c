"""
`.twisted_mesh._link.handshake`: the handshake read and checked, the ID
forms, compression and renegotiation words, with no transport and no
reactor.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import MESH
from twisted_mesh import _compression, flags
from twisted_mesh._ids import Network, new_node_id
from twisted_mesh._link import handshake
from twisted_mesh._link.handshake import IdForm, PeerHandshake, Word
from twisted_mesh.errors import HandshakeFailed, ProtocolMismatch, SelfConnection
from twisted_mesh.keys import NodeKey

PEER = new_node_id(MESH)
ADDR = ["10.0.0.2", 5555]


def payload(
    peer: Any = PEER, protocol: Any = MESH.id, address: Any = ADDR, codes: Any = (flags.zlib,)
) -> tuple[Any, ...]:
    """A handshake's payload, as it comes off the wire."""
    return (flags.handshake, peer, protocol, address, list(codes))


@pytest.mark.parametrize("as_bin", [True, False])
def test_a_handshake_is_read_in_either_form(as_bin: bool) -> None:
    wire = (lambda text: text.encode()) if as_bin else (lambda text: text)
    read = handshake.parse_handshake(payload(wire(PEER), wire(MESH.id), [wire("10.0.0.2"), 5555]))
    assert read == PeerHandshake(PEER, MESH.id, ("10.0.0.2", 5555), (flags.zlib,), not as_bin)


def test_port_0_is_a_peer_that_cannot_be_dialled() -> None:
    read = handshake.parse_handshake(payload(address=["10.0.0.2", 0]))
    assert read is not None and read.address is None


def test_codes_are_read_once_each_in_order() -> None:
    read = handshake.parse_handshake(payload(codes=[flags.gzip, flags.zlib, flags.gzip]))
    assert read is not None and read.codes == (flags.gzip, flags.zlib)


@pytest.mark.parametrize(
    "bad",
    [
        (flags.handshake, PEER, MESH.id, ADDR),
        payload(peer="not base58 0OIl"),
        payload(peer=7),
        payload(protocol=None),
        payload(address=["10.0.0.2"]),
        payload(address=["10.0.0.2", 70000]),
        payload(codes=[256]),
        payload(codes=["zlib"]),
        payload(codes=list(range(handshake.MAX_CODES + 1))),
    ],
)
def test_a_malformed_handshake_is_none(bad: tuple[Any, ...]) -> None:
    assert handshake.parse_handshake(bad) is None


def test_parse_codes() -> None:
    assert handshake.parse_codes([]) == ()
    assert handshake.parse_codes([1, 1, 2]) == (1, 2)
    assert handshake.parse_codes((1, 2)) is None
    assert handshake.parse_codes([True]) is None
    assert handshake.parse_codes([-1]) is None


@pytest.mark.parametrize("as_bin", [True, False])
def test_our_handshake_in_the_peers_form(as_bin: bool) -> None:
    ours = handshake.handshake_payload(PEER, MESH.id, ("127.0.0.1", 4444), as_bin)
    wire = PEER.encode() if as_bin else PEER
    assert ours == (
        flags.handshake,
        wire,
        MESH.id.encode() if as_bin else MESH.id,
        ["127.0.0.1", 4444],
        list(_compression.SUPPORTED),
    )
    assert handshake.parse_handshake(ours) == PeerHandshake(
        PEER, MESH.id, ("127.0.0.1", 4444), _compression.SUPPORTED, not as_bin
    )


def test_a_handshake_in_another_protocol_is_a_mismatch() -> None:
    read = handshake.parse_handshake(payload(protocol="other"))
    assert read is not None
    error = handshake.mismatch(read, "mesh", "Plaintext", False)
    assert isinstance(error, ProtocolMismatch) and (error.ours, error.theirs) == (MESH.id, "other")
    assert error.note == ""
    same = handshake.parse_handshake(payload())
    assert same is not None and handshake.mismatch(same, "mesh", "Plaintext", False) is None


SIGNED = Network("mesh", "Plaintext", signed=True)


def test_a_signed_network_is_another_protocol_and_says_so() -> None:
    assert SIGNED.id != MESH.id and Network("mesh", "SSL", signed=True).id != SIGNED.id
    plain = handshake.parse_handshake(payload())
    assert plain is not None
    error = handshake.mismatch(plain, "mesh", "Plaintext", True)
    assert error is not None and (error.ours, error.theirs) == (SIGNED.id, MESH.id)
    assert "this network is signed" in str(error)
    signed = handshake.parse_handshake(payload(protocol=SIGNED.id))
    assert signed is not None
    error = handshake.mismatch(signed, "mesh", "Plaintext", False)
    assert error is not None and "signed network of the same subnet" in str(error)


def signed_payload(key: NodeKey, nonce: bytes = b"n" * 32, peer: str | None = None) -> tuple[Any, ...]:
    """A signed network's handshake, as it comes off the wire."""
    return (*payload(peer or key.node_id, SIGNED.id), key.public_key, nonce)


def test_a_signed_handshake_carries_a_key_and_a_nonce() -> None:
    key = NodeKey.generate()
    read = handshake.parse_handshake(signed_payload(key))
    assert read is not None and (read.public_key, read.nonce) == (key.public_key, b"n" * 32)
    assert handshake.unproved(read, None) is None
    ours = handshake.handshake_payload(key.node_id, SIGNED.id, ("127.0.0.1", 1), True, (key.public_key, b"n" * 32))
    assert ours[5:] == (key.public_key, b"n" * 32)


@pytest.mark.parametrize(
    "extra",
    [(b"k" * 32,), (b"k" * 31, b"n" * 32), (b"k" * 32, b"n" * 31), ("k" * 32, b"n" * 32), (b"k" * 32, None)],
    ids=["six-fields", "short-key", "short-nonce", "key-as-str", "no-nonce"],
)
def test_a_malformed_signed_handshake_is_refused(extra: tuple[Any, ...]) -> None:
    assert handshake.parse_handshake((*payload(), *extra)) is None


def test_a_signed_peer_is_refused_before_its_proof() -> None:
    key, other = NodeKey.generate(), NodeKey.generate()
    keyless = handshake.parse_handshake(payload(key.node_id, SIGNED.id))
    assert keyless is not None
    assert handshake.unproved(keyless, None)[1] == "unproved"  # type: ignore[index]
    impostor = handshake.parse_handshake(signed_payload(key, peer=other.node_id))
    assert impostor is not None
    assert handshake.unproved(impostor, None)[1] == "wrong_key"  # type: ignore[index]
    stranger = handshake.parse_handshake(signed_payload(key))
    assert stranger is not None
    assert handshake.unproved(stranger, frozenset([other.node_id]))[1] == "not_allowed"  # type: ignore[index]
    assert handshake.unproved(stranger, frozenset([key.node_id])) is None


def test_a_proof_holds_only_on_the_terms_it_was_made_for() -> None:
    """
    A proof names the network, the signer's role, both IDs, the signer's
    address, both nonces and the TLS binding: change any and it fails.
    """
    key, me = NodeKey.generate(), NodeKey.generate().node_id
    theirs, ours = b"t" * 32, b"o" * 32
    peer = handshake.parse_handshake(signed_payload(key, theirs))
    assert peer is not None
    terms = handshake.ProofTerms(
        SIGNED.id,
        signer_dialled=False,
        signer_id=key.node_id,
        checker_id=me,
        signer_address=("10.0.0.2", 5555),
        signer_nonce=theirs,
        checker_nonce=ours,
        binding=b"b" * 32,
    )
    proof = handshake.proof(key, terms)
    assert handshake.proof_holds(peer, proof, terms)
    for other in (
        {"protocol_id": MESH.id},  # another network
        {"signer_dialled": True},  # the other end's role: a proof sent back to its maker
        {"checker_id": NodeKey.generate().node_id},  # made for another node
        {"signer_address": ("192.0.2.66", 4444)},  # passed on under another address
        {"signer_address": None},
        {"checker_nonce": b"x" * 32},  # another connection
        {"binding": b"c" * 32},  # another TLS session
        {"binding": b""},
    ):
        assert not handshake.proof_holds(peer, proof, terms._replace(**other)), other
    stranger = handshake.parse_handshake(signed_payload(NodeKey.generate(), theirs))
    assert stranger is not None and not handshake.proof_holds(stranger, proof, terms)


def test_a_proof_is_read_from_its_renegotiation() -> None:
    assert handshake.read_renegotiation((flags.proof, b"s" * 64)) == (Word.PROOF, ())
    assert handshake.read_proof((flags.proof, b"s" * 64)) == b"s" * 64
    assert handshake.read_proof((flags.proof, b"s" * 63)) is None
    assert handshake.read_proof((flags.proof,)) is None


def test_refusals() -> None:
    read = handshake.parse_handshake(payload())
    assert read is not None
    assert handshake.refusal(read, new_node_id(MESH), None) is None
    assert handshake.refusal(read, new_node_id(MESH), PEER) is None
    itself = handshake.refusal(read, PEER, None)
    assert itself is not None and isinstance(itself[0], SelfConnection) and itself[1] == "self"
    other = handshake.refusal(read, new_node_id(MESH), "someone else")
    assert other is not None and type(other[0]) is HandshakeFailed and other[1] == "unexpected"


@pytest.mark.parametrize("peer_writes_str", [True, False])
def test_a_peer_that_speaks_first_hears_us_in_its_form(peer_writes_str: bool) -> None:
    form = handshake.answer_form(peer_writes_str, sent=False, as_bin=True, identified=False)
    assert form == IdForm(not peer_writes_str, False)


def test_a_str_peer_that_answers_our_bin_handshake_hears_it_again_and_sends_twice() -> None:
    assert handshake.answer_form(True, sent=True, as_bin=True, identified=False) == IdForm(False, True)


@pytest.mark.parametrize(
    ("peer_writes_str", "as_bin", "identified"),
    [(False, True, False), (True, False, False), (True, True, True), (False, False, True)],
)
def test_no_second_answer_in_a_form_the_peer_reads(peer_writes_str: bool, as_bin: bool, identified: bool) -> None:
    assert handshake.answer_form(peer_writes_str, sent=True, as_bin=as_bin, identified=identified) is None


@pytest.mark.parametrize(("encryption", "as_bin"), [("Plaintext", True), ("SSL", True), ("ws", False), ("wss", False)])
def test_a_silent_node_hears_us_in_the_form_it_most_likely_reads(encryption: str, as_bin: bool) -> None:
    assert handshake.unprompted_form(encryption) is as_bin


def test_compression_chosen_and_agreed() -> None:
    assert handshake.send_code(()) is None
    assert handshake.send_code((flags.zlib,)) == flags.zlib
    assert handshake.send_code((0x7F,)) is None
    assert handshake.agreed((0x7F, flags.zlib)) == [flags.zlib]
    assert handshake.offered() == list(_compression.SUPPORTED)
    assert handshake.offered() is not handshake.offered()


@pytest.mark.parametrize(
    ("words", "read"),
    [
        ((flags.compression, [flags.zlib, flags.zlib]), (Word.COMPRESSION, (flags.zlib,))),
        ((flags.compression, []), (Word.COMPRESSION, ())),
        ((flags.compression, "zlib"), (Word.MALFORMED, ())),
        ((flags.resend,), (Word.RESEND, ())),
        ((flags.resend, 1), (Word.OTHER, ())),
        (("something",), (Word.OTHER, ())),
        ((), (Word.OTHER, ())),
    ],
)
def test_renegotiation_words(words: tuple[Any, ...], read: tuple[Word, tuple[int, ...]]) -> None:
    assert handshake.read_renegotiation(words) == read
