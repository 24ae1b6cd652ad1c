"""
`.LinkProtocol`, one link: renegotiation (compression, resend) and the
compression chosen from the handshake.
"""

from __future__ import annotations

import pytest

from tests.support import MESH
from tests.unit.link_rig import (
    SUPPORTED,
    Rig,
    assert_compressed_with,
    connected,
    handshake,
    large,
    message,
    renegotiate,
)
from twisted_mesh import _compression, flags
from twisted_mesh._frames import WireMessage
from twisted_mesh._ids import new_node_id

# -- renegotiation ------------------------------------------------------------


def test_renegotiate_compression_changes_what_we_compress_with() -> None:
    """[compression, codes] switches our method; [] sends raw."""
    side = connected(codes=[flags.zlib])
    peer_id = side.proto.peer_id
    assert peer_id is not None
    msg = large(side.proto._node.id)
    side.proto.send(msg)
    (body,) = side.bodies()
    assert_compressed_with(body, flags.zlib, msg)

    side.feed(renegotiate(peer_id, flags.compression, [flags.bz2, flags.gzip]))
    (answer,) = side.messages()
    assert (answer.msg_type, answer.payload) == (flags.renegotiate, (flags.compression, [flags.gzip, flags.bz2]))
    assert side.proto.peer_codes == (flags.bz2, flags.gzip)
    side.proto.send(msg)
    (body,) = side.bodies()
    assert_compressed_with(body, flags.gzip, msg)

    side.feed(renegotiate(peer_id, flags.compression, []))
    (answer,) = side.messages()
    assert answer.payload == (flags.compression, [])
    side.proto.send(msg)
    (body,) = side.bodies()
    assert_compressed_with(body, None, msg)


def test_renegotiate_answers_only_a_change() -> None:
    """The same list again is not answered: no ping-pong."""
    side = connected(codes=[flags.zlib, flags.gzip])
    peer_id = side.proto.peer_id
    assert peer_id is not None
    side.feed(renegotiate(peer_id, flags.compression, [flags.zlib, flags.gzip]))
    assert side.bodies() == []
    side.feed(renegotiate(peer_id, flags.compression, [flags.gzip]))
    assert [m.payload for m in side.messages()] == [(flags.compression, [flags.gzip])]
    side.feed(renegotiate(peer_id, flags.compression, [flags.gzip]))
    assert side.bodies() == []


def test_renegotiate_unknown_codes_give_an_empty_intersection() -> None:
    """Codes we do not support are left out of the answer, and we send raw."""
    side = connected(codes=[flags.zlib])
    peer_id = side.proto.peer_id
    assert peer_id is not None
    side.feed(renegotiate(peer_id, flags.compression, [0x7E]))
    assert [m.payload for m in side.messages()] == [(flags.compression, [])]
    msg = large(side.proto._node.id)
    side.proto.send(msg)
    (body,) = side.bodies()
    assert_compressed_with(body, None, msg)


def test_malformed_renegotiate_compression_closes() -> None:
    """[compression, not-a-list-of-ints] closes the link."""
    side = connected()
    peer_id = side.proto.peer_id
    assert peer_id is not None
    side.feed(renegotiate(peer_id, flags.compression, ["zlib"]))
    assert side.closed


def test_renegotiate_resend_writes_the_last_message_again() -> None:
    """
    [resend] writes the last message sent again, once: asking again, even
    many times in one read, writes nothing more until another message is sent.
    """
    side = connected(codes=[])
    peer_id = side.proto.peer_id
    assert peer_id is not None
    first = message(side.proto._node.id, flags.whisper, flags.whisper, "first")
    last = message(side.proto._node.id, flags.whisper, flags.whisper, "last")
    side.proto.send(first)
    side.proto.send(last)
    side.clear()
    resend = renegotiate(peer_id, flags.resend).frame(True, None)
    side.proto.dataReceived(resend * 100)
    assert side.bodies() == [last.body_in(True)]
    side.proto.dataReceived(resend)
    assert side.bodies() == []
    side.proto.send(first)
    side.clear()
    side.proto.dataReceived(resend * 2)
    assert side.bodies() == [first.body_in(True)]
    assert not side.closed


def test_renegotiate_resend_with_nothing_sent_is_ignored() -> None:
    """[resend] before we sent anything writes nothing."""
    side = Rig().link()
    side.clear()
    side.feed(renegotiate(new_node_id(MESH), flags.resend))
    assert side.bodies() == []
    assert not side.closed


def test_resend_after_compression_renegotiation_resends_the_last_message() -> None:
    """
    A peer that cannot read our frame sends [compression, []] then
    [resend] (as this link does itself): the resend must be the message it
    could not read, uncompressed now, not our answer to its renegotiation.
    """
    side = connected(codes=[flags.zlib])
    peer_id = side.proto.peer_id
    assert peer_id is not None
    msg = large(side.proto._node.id)
    side.proto.send(msg)
    side.clear()
    side.feed(renegotiate(peer_id, flags.compression, []))
    side.feed(renegotiate(peer_id, flags.resend))
    answer, resent = side.bodies()
    assert WireMessage.from_body(answer, SUPPORTED).payload == (flags.compression, [])
    assert resent == msg.body_in(True)


def test_renegotiation_is_not_shown_to_the_node() -> None:
    """Renegotiate messages and handshakes never reach the node's handlers."""
    rig = Rig()
    side = connected(rig)
    peer_id = side.proto.peer_id
    assert peer_id is not None
    side.feed(renegotiate(peer_id, flags.compression, [flags.zlib]))
    side.feed(renegotiate(peer_id, flags.resend))
    side.feed(renegotiate(peer_id, flags.broadcast, "not for the user"))
    side.feed(handshake(peer_id))
    assert rig.delivered == [] and not rig.node.queue
    assert not side.closed


@pytest.mark.parametrize("word", [[1, 2], {"a": 1}, "prune", None])
def test_a_renegotiation_whose_word_is_not_a_number_is_ignored(word: object) -> None:
    """A renegotiation that starts with a list, a map, a str or nil is ignored: no error, the link stays."""
    rig = Rig()
    side = connected(rig)
    peer_id = side.proto.peer_id
    assert peer_id is not None
    side.feed(renegotiate(peer_id, word))
    assert not side.closed


def test_words_of_lazy_push_count_only_from_a_peer_that_speaks_it() -> None:
    """
    A prune from a peer that never said lazy_push is ignored; once it said
    it, a prune prunes its link, and a malformed announcement closes it.
    """
    rig = Rig()
    side = connected(rig)
    peer_id = side.proto.peer_id
    assert peer_id is not None
    side.feed(renegotiate(peer_id, flags.prune))
    assert not rig.node.tree.lazy
    side.feed(renegotiate(peer_id, flags.lazy_push))
    assert side.proto.lazy_push
    side.feed(renegotiate(peer_id, flags.prune))
    assert rig.node.tree.lazy == {side.proto}
    side.feed(renegotiate(peer_id, flags.ihave, [[1, b"not a key"]]))
    assert side.closed


# -- compression chosen from the handshake -----------------------------------


@pytest.mark.parametrize(
    "codes",
    [
        [flags.zlib, flags.gzip],  # js2p
        [flags.zlib, flags.gzip, flags.bz2, flags.lzma],  # py2p
        [flags.lzma, flags.bz2],
        [flags.bz2, 0x7E],
        [flags.gzip],
        list(SUPPORTED),
        [],
        [0x7E],
    ],
)
def test_compression_from_the_handshake(codes: list[int]) -> None:
    """
    Large bodies go out with the first of our methods the peer lists, but
    never bz2 or lzma (too slow to compress every message with); small ones
    raw.
    """
    side = connected(codes=codes)
    expected = next((code for code in SUPPORTED if code in codes and code not in (flags.bz2, flags.lzma)), None)
    msg = large(side.proto._node.id)
    side.proto.send(msg)
    (body,) = side.bodies()
    assert_compressed_with(body, expected, msg)

    small = message(side.proto._node.id, flags.broadcast, flags.broadcast, "small")
    assert len(small.body_in(True)) < _compression.MIN_COMPRESSED_SIZE
    side.proto.send(small)
    # (Raw, unless js2p's zlib would take it for zlib output.)
    assert side.bodies() == [_compression.compress(expected, small.body_in(True))]


@pytest.mark.parametrize("code", [code for code in SUPPORTED])
def test_compressed_frames_from_the_peer_are_read(code: int) -> None:
    """A large frame the peer compressed with any code it listed is read."""
    rig = Rig()
    side = connected(rig, codes=[code])
    peer_id = side.proto.peer_id
    assert peer_id is not None
    msg = large(peer_id)
    side.feed(msg, code=code)
    assert not side.closed
    assert [m.id for m, _ in rig.delivered] == [msg.key]
