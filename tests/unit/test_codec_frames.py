"""
The pure codec: frames, checked against the frames that the reference py2p
0.7.878 produces, and the bodies `.WireMessage.from_body` rejects.  No
reactor.
"""

from __future__ import annotations

from hashlib import sha256

import pytest

from tests.unit.codec_vectors import (
    ALL_VECTORS,
    BROADCAST,
    BROADCAST_STR,
    COMPRESSED,
    SENDER,
    TIME,
    UNCOMPRESSED,
    Vector,
    body_of,
    inflate,
    names,
    stdlib_readable,
)
from twisted_mesh import flags
from twisted_mesh._compression import SUPPORTED
from twisted_mesh._frames import (
    MAX_FRAME_SIZE,
    ChecksumError,
    FrameError,
    FrameReader,
    WireMessage,
    _sender_forms,
)
from twisted_mesh._ids import MAX_ID_LENGTH, MIN_NODE_ID_LENGTH
from twisted_mesh._serial import pack, unpack

# --- the reference frames ----------------------------------------------------------------


@pytest.mark.parametrize("vector", UNCOMPRESSED, ids=names(UNCOMPRESSED))
def test_vector_reproduced(vector: Vector) -> None:
    """A message made from a vector's fields is, byte for byte, py2p's frame."""
    message = WireMessage.create(vector.msg_type, SENDER, TIME, vector.payload, vector.sender_is_bin)
    assert message.frame(vector.sender_is_bin, None) == vector.frame
    assert message.body_in(vector.sender_is_bin)[:32] == vector.message_id


@pytest.mark.parametrize("vector", ALL_VECTORS, ids=names(ALL_VECTORS))
def test_vector_decodes(vector: Vector) -> None:
    """
    Every vector decodes, with the compression codes it names, to its
    fields; a bin-form message's key is its message ID.
    """
    message = WireMessage.from_body(vector.frame[4:], vector.compression)
    assert message.msg_type == vector.msg_type
    assert message.sender == SENDER
    assert message.time == TIME
    assert message.payload == vector.payload
    assert message.sender_is_bin is vector.sender_is_bin
    if vector.sender_is_bin:
        assert message.key == vector.message_id


@pytest.mark.parametrize("vector", ALL_VECTORS, ids=names(ALL_VECTORS))
def test_vector_decodes_with_every_code_listed(vector: Vector) -> None:
    """A peer that lists all our codes, in our order, is read just as well."""
    message = WireMessage.from_body(vector.frame[4:], SUPPORTED)
    assert message.payload == vector.payload


@pytest.mark.parametrize("vector", COMPRESSED, ids=names(COMPRESSED))
def test_compressed_vector_needs_its_code(vector: Vector) -> None:
    """
    A compressed vector is compressed with the code it names: read with
    none listed, or with every other code, its checksum does not hold.
    """
    others = [code for code in SUPPORTED if code not in vector.compression]
    # zlib and gzip share an inflater that reads both containers.
    if {*vector.compression} & {flags.zlib, flags.gzip}:
        others = [code for code in others if code not in (flags.zlib, flags.gzip)]
    for codes in ([], others):
        with pytest.raises(ChecksumError):
            WireMessage.from_body(vector.frame[4:], codes)


@pytest.mark.parametrize("vector", COMPRESSED, ids=names(COMPRESSED))
def test_compressed_vector_inflates(vector: Vector) -> None:
    """The readings of a compressed vector are the raw body and checksum + serial."""
    (code,) = vector.compression
    body = vector.frame[4:]
    serial = pack([vector.msg_type, SENDER.encode(), TIME, *vector.payload])
    assert sorted(inflate([code], body, MAX_FRAME_SIZE)) == sorted([body, body_of(serial)])
    assert body_of(serial)[:32] == vector.message_id


def test_vectors_through_the_frame_reader() -> None:
    """All the vectors, written back to back, come out of a reader as their bodies."""
    reader = FrameReader()
    assert reader.feed(b"".join(vector.frame for vector in ALL_VECTORS)) == [v.frame[4:] for v in ALL_VECTORS]
    assert reader.buffered == 0


def test_str_and_bin_vectors_have_one_key() -> None:
    """The str-form and bin-form broadcasts are one message, with one key."""
    as_bin = WireMessage.from_body(BROADCAST.frame[4:], [])
    as_str = WireMessage.from_body(BROADCAST_STR.frame[4:], [])
    assert as_bin.key == as_str.key == BROADCAST.message_id
    made = [WireMessage.create(0, SENDER, TIME, BROADCAST.payload, form) for form in (True, False)]
    assert made[0].key == made[1].key == BROADCAST.message_id


@pytest.mark.parametrize(("source", "target"), [(BROADCAST, BROADCAST_STR), (BROADCAST_STR, BROADCAST)])
def test_translation_gives_the_other_vector(source: Vector, target: Vector) -> None:
    """
    A message read in one form and written in the other is exactly the
    other vector's frame; written in its own form, it is the frame it
    arrived as.
    """
    received = WireMessage.from_body(source.frame[4:], [])
    assert received.frame(not source.sender_is_bin, None) == target.frame
    assert received.frame(source.sender_is_bin, None) == source.frame
    made = WireMessage.create(0, SENDER, TIME, source.payload, source.sender_is_bin)
    assert made.frame(not source.sender_is_bin, None) == target.frame


@pytest.mark.parametrize("length", [MIN_NODE_ID_LENGTH, 66, MAX_ID_LENGTH])
def test_translation_any_sender_length(length: int) -> None:
    """
    Senders of every length a node ID may have translate both ways, keep one
    key, and keep the body's size.
    """
    sender = ("123456789ABCDEFGH" * (length // 17 + 1))[:length]
    as_bin = WireMessage.create(0, sender, TIME, (0, "p"), True)
    as_str = WireMessage.create(0, sender, TIME, (0, "p"), False)
    assert as_bin.key == as_str.key
    assert as_bin.frame(False, None) == as_str.frame(False, None)
    assert as_str.frame(True, None) == as_bin.frame(True, None)
    assert len(as_bin.body_in(True)) == len(as_bin.body_in(False))
    for form, frame in ((True, as_bin.frame(True, None)), (False, as_str.frame(False, None))):
        received = WireMessage.from_body(frame[4:], [])
        assert received.sender == sender
        assert received.sender_is_bin is form
        assert received.key == as_bin.key


@pytest.mark.parametrize("form", [True, False])
@pytest.mark.parametrize("length", [1, MIN_NODE_ID_LENGTH - 1])
def test_sender_shorter_than_a_node_id_is_refused(form: bool, length: int) -> None:
    """
    A sender field shorter than a node ID is refused: its str form is shorter
    than its bin form, so relayed in the other form it would grow past the
    size limit it came within.
    """
    sender = ("123456789ABCDEFGH" * 2)[:length]
    frame = WireMessage.create(0, sender, TIME, (0, "p"), form).frame(form, None)
    with pytest.raises(FrameError, match="node ID"):
        WireMessage.from_body(frame[4:], [])


@pytest.mark.parametrize("form", [True, False])
@pytest.mark.parametrize("length", [MAX_ID_LENGTH + 1, 256, 65536])
def test_sender_longer_than_an_id_is_refused(form: bool, length: int) -> None:
    """A sender field longer than any ID is refused, and not kept in the sender cache."""
    sender = ("123456789ABCDEFGH" * (length // 17 + 1))[:length]
    frame = WireMessage.create(0, sender, TIME, (0, "p"), form).frame(form, None)
    cached = _sender_forms.cache_info().currsize
    with pytest.raises(FrameError, match="node ID"):
        WireMessage.from_body(frame[4:], [])
    assert _sender_forms.cache_info().currsize == cached


def test_relay_keeps_the_bytes_as_they_arrived() -> None:
    """
    A message encoded in a way our packer would not choose (an array16,
    an int as uint32, a uint8 where a fixint would do) is written out as
    it arrived; the other form differs only in the sender's tag byte.
    """
    sender = "a" * 40
    serial = b"\xdc\x00\x05\x00\xd9\x28" + sender.encode() + b"\xce\x65\x53\xf1\x00\xcc\x05\xdc\x00\x01\xcc\x07"
    assert unpack(serial) == [0, sender, TIME, 5, [7]]
    body = body_of(serial)
    received = WireMessage.from_body(body, [])
    assert received.payload == (5, [7])
    assert received.frame(False, None) == len(body).to_bytes(4, "big") + body
    translated = received.body_in(True)
    assert translated[32:] == serial[:4] + b"\xc4" + serial[5:]
    assert translated[:32] == sha256(translated[32:]).digest() == received.key


def test_frame_is_compressed_with_the_code() -> None:
    """``frame(form, code)`` compresses the body with ``code`` and announces its length."""
    message = WireMessage.create(0, SENDER, TIME, (0, "x" * 2000))
    for code in SUPPORTED:
        frame = message.frame(True, code)
        assert int.from_bytes(frame[:4], "big") == len(frame) - 4 < 2000
        assert stdlib_readable(code, frame[4:]) == message.body_in(True)
        assert WireMessage.from_body(frame[4:], [code]).payload == (0, "x" * 2000)


# --- from_body rejects -------------------------------------------------------------------


def test_from_body_rejects_bad_checksum() -> None:
    """A changed byte, in the checksum or the serial, fails the checksum."""
    body = BROADCAST.frame[4:]
    for at in (0, 31, 32, len(body) - 1):
        changed = bytearray(body)
        changed[at] ^= 0x01
        with pytest.raises(ChecksumError):
            WireMessage.from_body(bytes(changed), [])


@pytest.mark.parametrize("body", [b"", b"\x00" * 31, sha256(b"").digest()[:31]])
def test_from_body_rejects_short_body(body: bytes) -> None:
    """A body too short to hold a checksum fails the checksum."""
    with pytest.raises(ChecksumError):
        WireMessage.from_body(body, [])


def test_from_body_rejects_empty_serial() -> None:
    """A checksum of nothing, followed by nothing, is not a message."""
    with pytest.raises(FrameError):
        WireMessage.from_body(body_of(b""), [])


@pytest.mark.parametrize(
    "fields",
    [
        {"a": 1},
        "a message",
        b"a message",
        5,
        None,
        [],
        [0],
        [0, b"sender"],
        [0, b"sender", TIME],
        [0, b"sender", "1700000000", 0],
        [0, b"sender", 1700000000.0, 0],
        [0, b"sender", True, 0],
        [0, b"sender", None, 0],
        [0, 5, TIME, 0],
        [0, None, TIME, 0],
        [0, b"", TIME, 0],
        [0, "", TIME, 0],
        [0, b"\xff" * 40, TIME, 0],
        [0, [b"sender"], TIME, 0],
        [-1, b"sender", TIME, 0],
        [128, b"sender", TIME, 0],
        ["0", b"sender", TIME, 0],
        [True, b"sender", TIME, 0],
        [None, b"sender", TIME, 0],
    ],
)
def test_from_body_rejects_bad_fields(fields: object) -> None:
    """
    Non-arrays, fewer than 4 fields, a bad message type, sender or time
    raise `.FrameError` (and not `.ChecksumError`: the checksum holds).
    """
    with pytest.raises(FrameError) as caught:
        WireMessage.from_body(body_of(pack(fields)), [])
    assert caught.type is FrameError


def test_from_body_minimal_message() -> None:
    """Four fields is enough: a message with one packet."""
    message = WireMessage.from_body(body_of(pack([3, "abc" * 11, 0, 3])), [])
    assert (message.msg_type, message.sender, message.time, message.payload) == (3, "abc" * 11, 0, (3,))
    assert message.sender_is_bin is False


@pytest.mark.parametrize(
    "serial",
    [
        pack([0, "é" * 40, TIME, 0]),  # a non-ASCII str sender
        b"\x94\xcc\x00" + pack("a" * 40) + pack(TIME) + pack(0),  # msg_type as uint8, not fixint
    ],
    ids=["non-ascii-str-sender", "msg_type-uint8"],
)
def test_accepted_message_can_be_keyed_and_relayed(serial: bytes) -> None:
    """
    Whatever `.WireMessage.from_body` accepts, the node can then take its
    key and write it in both forms: a body that cannot be should raise
    `.FrameError` in ``from_body``, not later in the relay.
    """
    try:
        message = WireMessage.from_body(body_of(serial), [])
    except FrameError:
        return
    assert len(message.key) == 32
    for form in (True, False):
        assert WireMessage.from_body(message.frame(form, None)[4:], []).payload == message.payload
