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
from twisted_mesh._ids import new_node_id
from twisted_mesh._link import handshake
from twisted_mesh._link.handshake import IdForm, PeerHandshake, Word
from twisted_mesh.errors import HandshakeFailed, ProtocolMismatch, SelfConnection

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
    error = handshake.mismatch(read, MESH.id)
    assert isinstance(error, ProtocolMismatch) and (error.ours, error.theirs) == (MESH.id, "other")
    same = handshake.parse_handshake(payload())
    assert same is not None and handshake.mismatch(same, MESH.id) is None


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
