"""The pure codec: identifiers, msgpack, compression and frames, checked
against the frames and protocol IDs that the reference py2p 0.7.878 produces.

The vectors are those of the shared ``vectors/p2p-0.7.json`` beside
PROTOCOL.md, copied in here so that the suite needs nothing outside the
checkout.  No reactor.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import lzma
import random
import tracemalloc
import zlib
from hashlib import sha256, sha384
from typing import Any, NamedTuple

import msgpack
import pytest

from twisted_mesh import _compression, _ids, flags
from twisted_mesh._compression import (
    MIN_COMPRESSED_SIZE,
    PROBE_FROM,
    PROBE_SIZE,
    SUPPORTED,
    DecompressionError,
    InflatedTooLarge,
    choose,
    compress,
    inflations,
    mistaken_for_packed,
)
from twisted_mesh._frames import (
    MAX_FRAME_SIZE,
    ChecksumError,
    FrameError,
    FrameReader,
    FrameTooLarge,
    WireMessage,
    _sender_forms,
    pack,
    unpack,
)
from twisted_mesh._ids import (
    MAX_ID_LENGTH,
    MIN_NODE_ID_LENGTH,
    Protocol,
    b58decode_int,
    b58encode_int,
    id_text,
    new_node_id,
    protocol_id,
)


def inflate(codes: Any, data: bytes, limit: int) -> list[bytes]:
    """
    Every reading of a body that a receiver checks, in its order: the raw
    body, then its inflations.
    """
    return [data, *(reading for _, reading in inflations(codes, data, limit))]


# --- the reference vectors ---------------------------------------------------------------

PROTOCOL_IDS = [
    ("", "Plaintext", "3soAb1XFyvZYyqgFNTxcXvzEBU6p8n821ifyVVANipvt"),
    ("mesh", "Plaintext", "EpAmyZWv9rZUKmjQgU3FTUD4GrJHvVEXizmghVBc8eGD"),
    ("mesh", "SSL", "EkE9cS4dwjZ8uo8H1pxYe7WrJ3wXgaHfozHQUkb99eHm"),
    ("mesh", "ws", "57pLfYoGgbS8ntjsL3HTnzhHYs9Pq8pTiLiCYr6yfU7A"),
    ("chat", "wss", "9aDELNeTAvtjRzeT4uxnppjKBsfmr2WKK74PfUChGoMi"),
    ("A string which describes your application", "SSL", "6diuhmdhfKSFFUsFerXi1rkx7MGwAyzM8QCzok3ttFGP"),
]

SENDER = "8vu4oLsvVBsnnH6N83z6y6RZqrMKRrVHr44xRwXCFaU9qcyYsjJDzVfKwmdGp51K4d"
TIME = 1700000000


class Vector(NamedTuple):
    """One frame written by py2p, with the fields it was made from."""

    name: str
    msg_type: int
    sender_is_bin: bool
    compression: list[int]
    message_id: bytes
    frame: bytes
    payload: tuple[Any, ...]


def _vector(
    name: str,
    msg_type: int,
    sender_form: str,
    compression: list[int],
    message_id: str,
    frame: str,
    payload: tuple[Any, ...],
) -> Vector:
    """Build a `.Vector` from the hex strings of the JSON file."""
    return Vector(
        name, msg_type, sender_form == "bin", compression, bytes.fromhex(message_id), bytes.fromhex(frame), payload
    )


BROADCAST = _vector(
    "broadcast",
    0,
    "bin",
    [],
    "ba2e03c8d0d41855db6bfab5aacd4713cf0d6acaf96c12d3a409ba0a1b6412a3",
    "0000007bba2e03c8d0d41855db6bfab5aacd4713cf0d6acaf96c12d3a409ba0a1b6412a39600c442387675346f4c7376"
    "5642736e6e48364e38337a367936525a71724d4b5272564872343478527758434661553971637959736a4a447a56664b"
    "776d64477035314b3464ce6553f10000a774686973206973a6612074657374",
    (0, "this is", "a test"),
)
WHISPER_REPLY = _vector(
    "whisper reply",
    2,
    "bin",
    [],
    "f4ff4abc151fc15104cd8ad765751c4e5ab84ac54e909fbd4f77af0725b57907",
    "00000076f4ff4abc151fc15104cd8ad765751c4e5ab84ac54e909fbd4f77af0725b579079602c442387675346f4c7376"
    "5642736e6e48364e38337a367936525a71724d4b5272564872343478527758434661553971637959736a4a447a56664b"
    "776d64477035314b3464ce6553f10002a3596573a54920646964",
    (2, "Yes", "I did"),
)
HANDSHAKE = _vector(
    "handshake",
    2,
    "bin",
    [],
    "9e9cb1ed522882221e78d80d7ecaad18f0f048c2246ee04dfe61e0f50e15d1c9",
    "000000f19e9cb1ed522882221e78d80d7ecaad18f0f048c2246ee04dfe61e0f50e15d1c99802c442387675346f4c7376"
    "5642736e6e48364e38337a367936525a71724d4b5272564872343478527758434661553971637959736a4a447a56664b"
    "776d64477035314b3464ce6553f10005c442387675346f4c73765642736e6e48364e38337a367936525a71724d4b5272"
    "564872343478527758434661553971637959736a4a447a56664b776d64477035314b3464c42c4570416d795a57763972"
    "5a554b6d6a51675533465455443447724a4876564558697a6d67685642633865474492a93132372e302e302e31cd115c"
    "9413111012",
    (
        flags.handshake,
        SENDER.encode(),
        b"EpAmyZWv9rZUKmjQgU3FTUD4GrJHvVEXizmghVBc8eGD",
        ["127.0.0.1", 4444],
        [0x13, 0x11, 0x10, 0x12],
    ),
)
BROADCAST_STR = _vector(
    "broadcast, sender as str (the form js2p writes)",
    0,
    "str",
    [],
    "de4b6f11f405cba8ce8d759e5ceeadb0c361ea93d2d0a036878fbcde9c62574a",
    "0000007bde4b6f11f405cba8ce8d759e5ceeadb0c361ea93d2d0a036878fbcde9c62574a9600d942387675346f4c7376"
    "5642736e6e48364e38337a367936525a71724d4b5272564872343478527758434661553971637959736a4a447a56664b"
    "776d64477035314b3464ce6553f10000a774686973206973a6612074657374",
    (0, "this is", "a test"),
)

UNCOMPRESSED = [BROADCAST, WHISPER_REPLY, HANDSHAKE, BROADCAST_STR]

COMPRESSED = [
    _vector(
        "zlib",
        0,
        "bin",
        [0x13],
        "4e200a96b135e1bbcf8489f46db43ef6076434d36a6e9b0353afd53cde99537e",
        "0000007b789cf353e09ab6d1f4e1eef32d9d5f72b7d87d634f31b99c95379b3978fd559b7b3383eba6321c71b2282b35"
        "c9f7292e0b732acecbf330f3b330ae32ab340b8a2a2cf2f50e2a0af3283231a9082a8f70764b0cb52c4cae8c2ccef272"
        "a90a4bf32ecf4d712f3035f4364939971afc9181e1e6898a610200aed68a32",
        (0, "x" * 200),
    ),
    _vector(
        "gzip",
        0,
        "bin",
        [0x11],
        "429bab91a54376a168c7a01b15768a045e5fc56bf1dd7851da620f19e0e43dc5",
        "0000009a1f8b08000000000000030183007cff429bab91a54376a168c7a01b15768a045e5fc56bf1dd7851da620f19e0"
        "e43dc59800c442387675346f4c73765642736e6e48364e38337a367936525a71724d4b52725648723434785277584346"
        "61553971637959736a4a447a56664b776d64477035314b3464ce6553f10000c40700016279746573cd30399301020381"
        "a4686572650a752bd21283000000",
        (0, b"\x00\x01bytes", 12345, [1, 2, 3], {"here": 10}),
    ),
    _vector(
        "bz2",
        0,
        "bin",
        [0x10],
        "3450cacc68cc7bb491a0169fadee16f8f337cd502bfa09474e07037478394180",
        "000000bf425a68393141592653594f3541e00000067fffc8a0010000082fe03ddf5b706f53fff840002200c002040004"
        "1700200001285020007231326130862302069813464621a1840c9ea790c4f534d0d06d41a347a4da40d3406834d94369"
        "92066a27900b0bf1e8186f4500c8d44f78912119b63def76fd6f8f9957269e11f6143b67103234524b5dc3bb1d2ea632"
        "594b699ac080be0cc782d04faa52e1b30d573cb2ecd8d57cc86d147c47d003dd61fe0c85042240578bb9229c2848279a"
        "a0f000",
        (0, "y" * 100),
    ),
    _vector(
        "lzma",
        0,
        "bin",
        [0x12],
        "73bfe9ce243e5f2a1e60d730c6c33747f9953b58717fde399874994ece983e92",
        "000000b8fd377a585a000004e6d6b4460200210116000000742fe5a3e000d100785d0039afd92ce12a089764871b73b2"
        "472d1ddf71f4840adab18f1da1f6513ab7f59d2a1e64ca644e021b0346efd234a2556d127f185c33a6e5d6564327b8f3"
        "5a1418389c5af0a97f51d61ea6e1a31ad43373b459375519bcd01439bc0ed590fef52570cbc7154c9255bd860886c17b"
        "388177964802af85cbc300001a5967f6ddac229f00019401d20100001db25df5b1c467fb020000000004595a",
        (0, "z" * 100),
    ),
]

ALL_VECTORS = UNCOMPRESSED + COMPRESSED


def names(vectors: list[Vector]) -> list[str]:
    """Test IDs for a list of vectors: their names."""
    return [vector.name for vector in vectors]


# --- helpers -----------------------------------------------------------------------------


def body_of(serial: bytes) -> bytes:
    """An uncompressed body: the checksum of ``serial``, then ``serial``."""
    return sha256(serial).digest() + serial


def raw_bodies(count: int) -> list[bytes]:
    """``count`` distinct short (so never compressed) bodies, the same every run."""
    return [WireMessage.create(flags.broadcast, "abc" * 12, when, (0, "x")).body_in(True) for when in range(count)]


BOMB_SIZE = 32 * 1024 * 1024


@functools.cache
def bomb(code: int) -> bytes:
    """A body that compresses ``BOMB_SIZE`` zeros with ``code`` (made once per code)."""
    return compress(code, bytes(BOMB_SIZE))


def stdlib_readable(code: int, data: bytes) -> bytes:
    """Inflate ``data`` as the references do, with the standard libraries."""
    if code in (flags.zlib, flags.gzip):
        # Each in its own container, and both read as the references read them.
        own = zlib.decompress(data) if code == flags.zlib else gzip.decompress(data)
        assert zlib.decompress(data, zlib.MAX_WBITS | 32) == own
        return own
    if code == flags.bz2:
        return bz2.decompress(data)
    if code == flags.lzma:
        return lzma.decompress(data)
    import snappy  # only reached when snappy is in SUPPORTED, so installed

    return bytes(snappy.uncompress(data))


# --- identifiers -------------------------------------------------------------------------


@pytest.mark.parametrize(("subnet", "encryption", "expected"), PROTOCOL_IDS)
def test_protocol_ids(subnet: str, encryption: str, expected: str) -> None:
    """Every protocol ID that py2p computes comes out the same here."""
    assert protocol_id(subnet, encryption) == expected
    assert Protocol(subnet, encryption).id == expected


def test_protocol_defaults_to_plaintext() -> None:
    """A `.Protocol` without a transport is the plain TCP one."""
    assert Protocol("mesh").encryption == "Plaintext"
    assert Protocol("mesh").id == "EpAmyZWv9rZUKmjQgU3FTUD4GrJHvVEXizmghVBc8eGD"


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (0, "1"),
        (1, "2"),
        (57, "z"),
        (58, "21"),
        (58 * 58 - 1, "zz"),
        (58**10, "21111111111"),
        (2**64 - 1, "jpXCZedGfVQ"),
        (int.from_bytes(b"hello world", "big"), "StV1DL6CwTryKyV"),
    ],
)
def test_base58_known_values(number: int, text: str) -> None:
    """Known base58 numbers (Bitcoin's alphabet) read and write both ways."""
    assert b58encode_int(number) == text
    assert b58decode_int(text) == number


@pytest.mark.parametrize(
    "number",
    [0, 1, 57, 58, 59, 2**32, 2**256 - 1, 2**384 - 1, 2**1000 + 12345]
    + [random.Random(seed).getrandbits(seed * 13) for seed in range(1, 40)],
)
def test_base58_round_trips(number: int) -> None:
    """Any non-negative integer survives writing and reading, without padding."""
    text = b58encode_int(number)
    assert b58decode_int(text) == number
    assert set(text) <= set(_ids._ALPHABET)
    assert number == 0 or not text.startswith("1")


@pytest.mark.parametrize("text", ["", "0", "O", "I", "l", "1O", "abc0", "+", " 2", "2 ", "é", "２"])
def test_base58_rejects_non_base58(text: str) -> None:
    """Empty text and the characters outside Bitcoin's alphabet raise `.ValueError`."""
    with pytest.raises(ValueError):
        b58decode_int(text)


def test_base58_rejects_negative() -> None:
    """Only non-negative integers have a base58 form."""
    with pytest.raises(ValueError):
        b58encode_int(-1)


def test_new_node_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A node ID is base58 of the SHA-384 of the protocol ID and 32 random
    bytes: the same salt gives the same ID, and it is a 384-bit number.
    """
    protocol = Protocol("mesh", "SSL")
    salt = bytes(range(32))
    monkeypatch.setattr(_ids.os, "urandom", lambda size: salt[:size])
    node_id = new_node_id(protocol)
    digest = sha384(protocol.id.encode("ascii") + salt).digest()
    assert node_id == b58encode_int(int.from_bytes(digest, "big"))
    assert len(node_id) <= 66
    monkeypatch.undo()
    assert new_node_id(protocol) != new_node_id(protocol)


@pytest.mark.parametrize(("value", "expected"), [(b"abc", "abc"), ("abc", "abc"), (SENDER.encode(), SENDER)])
def test_id_text_reads_either_form(value: bytes | str, expected: str) -> None:
    """An ID field reads the same as bin or as str."""
    assert id_text(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        *(b"", "", b"\xff", b"abc\x80", "é".encode(), None, 5, 1.5, True, ["abc"], bytearray(b"abc"), {"a": 1}),
        *(b"a" * (MAX_ID_LENGTH + 1), "a" * (MAX_ID_LENGTH + 1)),
    ],
)
def test_id_text_rejects(value: object) -> None:
    """Empty or overlong IDs, non-ASCII bin and anything but bin or str are not IDs."""
    assert id_text(value) is None


def test_id_text_takes_the_longest_id() -> None:
    """An ID of `.MAX_ID_LENGTH` characters is read, in either form."""
    assert id_text(b"a" * MAX_ID_LENGTH) == id_text("a" * MAX_ID_LENGTH) == "a" * MAX_ID_LENGTH


# --- flags -------------------------------------------------------------------------------


def test_flags() -> None:
    """The flags carry the values PROTOCOL.md gives them."""
    main = [flags.broadcast, flags.renegotiate, flags.whisper, flags.ping, flags.pong]
    assert main == [0, 1, 2, 3, 4]
    sub = [
        flags.compression,
        flags.handshake,
        flags.notify,
        flags.peers,
        flags.request,
        flags.resend,
        flags.response,
        flags.store,
        flags.retrieve,
        flags.retrieved,
        flags.forward,
        flags.new_paths,
        flags.revoke_paths,
        flags.delta,
    ]
    assert sub == [0x01] + list(range(0x05, 0x12))
    assert (flags.bz2, flags.gzip, flags.lzma, flags.zlib, flags.snappy) == (0x10, 0x11, 0x12, 0x13, 0x20)
    assert flags.reserved == tuple(range(0x30))


# --- msgpack -----------------------------------------------------------------------------


def test_msgpack_keeps_bin_and_str_apart() -> None:
    """``bytes`` goes out as bin and ``str`` as str, and each comes back as it went."""
    assert pack(b"x") == b"\xc4\x01x"
    assert pack("x") == b"\xa1x"
    value = unpack(pack([b"x", "x", {b"k": "v", "k": b"v"}]))
    assert value == [b"x", "x", {b"k": "v", "k": b"v"}]
    assert [type(item) for item in value[:2]] == [bytes, str]
    assert {type(key) for key in value[2]} == {bytes, str}


def test_msgpack_tuples_are_arrays() -> None:
    """Tuples and lists are both arrays; arrays read back as lists."""
    assert pack((1, 2)) == pack([1, 2]) == b"\x92\x01\x02"
    assert unpack(pack((1, (2, 3)))) == [1, [2, 3]]


@pytest.mark.parametrize(
    "data",
    [
        msgpack.packb(msgpack.ExtType(5, b"ab")),
        msgpack.packb([1, msgpack.ExtType(0, b"")]),
        b"\xc7\x03\x07abc",  # ext 8, type 7
        b"\xd6\xff\x00\x00\x00\x01",  # fixext 4, type -1 (timestamp 32)
        b"\xd7\xff" + bytes(8),  # fixext 8, type -1 (timestamp 64)
        b"\xc7\x0c\xff" + bytes(12),  # ext 8, type -1 (timestamp 96)
    ],
    ids=["fixext", "nested", "ext8", "timestamp32", "timestamp64", "timestamp96"],
)
def test_msgpack_rejects_ext_types(data: bytes) -> None:
    """No extension type is read, the predefined timestamp (-1) included."""
    with pytest.raises(FrameError):
        unpack(data)


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", b"\x01\x02", b"\xa3ab", b"\x81\x91\x01\x02"])
def test_msgpack_rejects_malformed(data: bytes) -> None:
    """Empty, truncated, trailing and unreadable data raise `.FrameError`."""
    with pytest.raises(FrameError):
        unpack(data)


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


# --- compression -------------------------------------------------------------------------


def test_supported_codes() -> None:
    """
    The standard-library methods are always there, in py2p's order;
    snappy leads when it is installed.
    """
    stdlib = (flags.zlib, flags.gzip, flags.bz2, flags.lzma)
    assert tuple(code for code in SUPPORTED if code != flags.snappy) == stdlib
    try:
        import snappy  # noqa: F401
    except ImportError:
        assert flags.snappy not in SUPPORTED
    else:
        assert SUPPORTED[0] == flags.snappy


COMPRESSIBLE = b"".join(b"packet %d of the mesh; " % (n % 97) for n in range(400))


@pytest.mark.parametrize("code", SUPPORTED)
def test_compression_round_trips(code: int) -> None:
    """Each code compresses data its ``inflate`` (and the standard library) reads back."""
    packed = compress(code, COMPRESSIBLE)
    assert len(packed) < len(COMPRESSIBLE)
    assert stdlib_readable(code, packed) == COMPRESSIBLE
    assert sorted(inflate([code], packed, len(COMPRESSIBLE))) == sorted([COMPRESSIBLE, packed])
    assert COMPRESSIBLE in list(inflate(SUPPORTED, packed, MAX_FRAME_SIZE))


@pytest.mark.parametrize("code", SUPPORTED)
def test_compression_of_random_data(code: int) -> None:
    """Incompressible data round-trips as well."""
    data = random.Random(code).randbytes(5000)
    assert data in list(inflate([code], compress(code, data), 5000))


@pytest.mark.parametrize("code", SUPPORTED)
def test_short_bodies_stay_raw(code: int) -> None:
    """
    Bodies under `.MIN_COMPRESSED_SIZE` go out as they are; from that size
    on they are compressed.  No code leaves every body as it is.
    """
    assert compress(code, COMPRESSIBLE[: MIN_COMPRESSED_SIZE - 1]) == COMPRESSIBLE[: MIN_COMPRESSED_SIZE - 1]
    assert compress(code, b"") == b""
    assert compress(code, COMPRESSIBLE[:MIN_COMPRESSED_SIZE]) != COMPRESSIBLE[:MIN_COMPRESSED_SIZE]
    assert compress(None, COMPRESSIBLE) == COMPRESSIBLE


def mistaken_message(size: int) -> WireMessage:
    """A broadcast whose bin-form body starts with a zlib header (its checksum's first two bytes)."""
    for n in range(100_000):
        msg = WireMessage.create(0, SENDER, TIME, (0, n, random.Random(n).randbytes(size)))
        if mistaken_for_packed(flags.zlib, msg.body_in(True)):
            return msg
    raise AssertionError("no body with a zlib header")


@pytest.mark.parametrize("size", [10, 2000])
def test_a_raw_body_that_reads_as_zlib_is_compressed(size: int) -> None:
    """
    js2p tries zlib on every body, and takes a raw one whose first two bytes
    make a zlib header for zlib output (and loses it): such a body goes out
    compressed to a peer that reads zlib, whatever its size, and raw to
    others.
    """
    msg = mistaken_message(size)
    body = msg.body_in(True)
    frame = msg.frame(True, flags.zlib)
    assert frame[4:] != body and zlib.decompress(frame[4:]) == body
    assert WireMessage.from_body(frame[4:], [flags.zlib]).key == msg.key
    other = next(code for code in SUPPORTED if code != flags.zlib) if len(SUPPORTED) > 1 else None
    assert msg.frame(True, None)[4:] == body
    if size == 10 and other is not None:
        assert msg.frame(True, other)[4:] == body
    # Relayed: what arrived raw is compressed for a peer that reads zlib.
    received = WireMessage.from_body(body, [flags.zlib])
    assert zlib.decompress(received.frame(True, flags.zlib)[4:]) == body
    assert not mistaken_for_packed(flags.gzip, body)


@pytest.mark.parametrize("code", SUPPORTED)
def test_large_incompressible_bodies_are_probed(code: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    From `.PROBE_FROM` bytes on, a body whose middle does not compress goes
    out as it is, without the whole body being compressed; a body that
    compresses is compressed whole.
    """
    noise = random.Random(code).randbytes(PROBE_FROM * 2)
    compressed: list[int] = []
    pack_with, *rest = _compression._METHODS[code]

    def counted(data: bytes) -> bytes:
        compressed.append(len(data))
        return pack_with(data)

    monkeypatch.setitem(_compression._METHODS, code, (counted, *rest))
    assert compress(code, noise) is noise
    assert compressed == [PROBE_SIZE]
    del compressed[:]
    text = COMPRESSIBLE * (PROBE_FROM // len(COMPRESSIBLE) + 1)
    packed = compress(code, text)
    assert len(packed) < len(text) and compressed == [PROBE_SIZE, len(text)]
    assert text in inflate([code], packed, len(text))
    # Under PROBE_FROM, the whole body is tried at once.
    del compressed[:]
    assert compress(code, noise[: PROBE_FROM - 1]) == noise[: PROBE_FROM - 1]
    assert compressed == [PROBE_FROM - 1]


def assert_capped(code: int, body: bytes, limit: int) -> None:
    """
    Check that ``body``, which ``code`` inflates past ``limit``, is refused:
    `.InflatedTooLarge` from ``inflate`` and `.FrameTooLarge` from
    ``from_body``.  Snappy has no magic number, so a snappy length past the
    limit may instead be taken for "not snappy": then no reading past the
    limit is made, and ``from_body`` finds no checksum that holds.
    """
    if code == flags.snappy:
        try:
            readings = list(inflate([code], body, limit))
        except InflatedTooLarge:
            pass
        else:
            assert readings == [body]
        with pytest.raises((FrameTooLarge, ChecksumError)):
            WireMessage.from_body(body, [code], limit)
        return
    with pytest.raises(InflatedTooLarge):
        list(inflate([code], body, limit))
    with pytest.raises(FrameTooLarge):
        WireMessage.from_body(body, [code], limit)


@pytest.mark.parametrize("code", SUPPORTED)
def test_inflate_limit_is_exact(code: int) -> None:
    """A body may inflate to exactly the limit, and not one byte more."""
    packed = compress(code, COMPRESSIBLE)
    assert COMPRESSIBLE in list(inflate([code], packed, len(COMPRESSIBLE)))
    assert_capped(code, packed, len(COMPRESSIBLE) - 1)


@pytest.mark.parametrize("code", SUPPORTED)
def test_zip_bomb(code: int) -> None:
    """
    A small body that inflates to 32 MiB, with a 1 MiB limit, is refused
    (see `.assert_capped`) without ever holding anything near 32 MiB.
    """
    body = bomb(code)
    if code != flags.snappy:  # snappy cannot compress more than ~20:1
        assert len(body) < 64 * 1024
    tracemalloc.start()
    try:
        assert_capped(code, body, 1024 * 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < BOMB_SIZE // 2


def test_lzma_header_cannot_demand_a_huge_dictionary() -> None:
    """
    An xz body of a few dozen bytes can declare a 1.5 GiB dictionary: the
    decoder must not allocate it (a memory limit, say, rejects the body).
    """
    body = lzma.compress(b"x" * 600, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1536 << 20, "preset": 0}])
    assert len(body) < 100
    tracemalloc.start()
    try:
        try:
            list(inflate([flags.lzma], body, MAX_FRAME_SIZE))
        except DecompressionError:
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024


@pytest.mark.parametrize("codes", [[code] for code in SUPPORTED] + [list(SUPPORTED), list(reversed(SUPPORTED))])
def test_raw_fallback(codes: list[int]) -> None:
    """
    A peer that listed codes may still send a short body raw (it is under
    `.MIN_COMPRESSED_SIZE`): it decodes, whatever the codes listed.
    """
    for when, body in enumerate(raw_bodies(64)):
        assert body in list(inflate(codes, body, MAX_FRAME_SIZE))
        assert WireMessage.from_body(body, codes).time == when


def test_raw_fallback_past_a_lookalike() -> None:
    """A raw body whose checksum starts like a zlib stream still decodes raw."""
    body = next(body for body in raw_bodies(5000) if body.startswith(b"\x78"))
    assert list(inflate([flags.zlib], body, MAX_FRAME_SIZE)) == [body]
    assert WireMessage.from_body(body, [flags.zlib]).payload == (0, "x")


def test_inflate_skips_other_codes() -> None:
    """Codes this node lacks, and codes whose output the body cannot be, are skipped."""
    data = COMPRESSIBLE
    packed = zlib.compress(data)
    assert sorted(inflate([0x99, flags.gzip, flags.zlib], packed, len(data))) == sorted([data, packed])
    assert list(inflate([], packed, len(data))) == [packed]
    assert list(inflate(iter([flags.bz2, flags.lzma]), packed, len(data))) == [packed]


@pytest.mark.parametrize("code", SUPPORTED)
def test_inflate_skips_a_broken_body(code: int) -> None:
    """A truncated compressed body is not a reading: only the raw body is left."""
    packed = compress(code, COMPRESSIBLE)
    broken = packed[: len(packed) // 2]
    assert list(inflate([code], broken, MAX_FRAME_SIZE)) == [broken]


@pytest.mark.parametrize(
    ("ours", "theirs", "expected"),
    [
        ([0x13, 0x11, 0x10, 0x12], [0x12, 0x10, 0x11], 0x11),
        ([0x11, 0x13], [0x13, 0x11], 0x11),
        ([0x13, 0x11], [0x11, 0x13], 0x13),
        ([0x20, 0x13, 0x11, 0x10, 0x12], [0x13, 0x11], 0x13),
        ([0x13, 0x11], [0x20, 0x10], None),
        ([0x13], [], None),
        ([], [0x13], None),
    ],
)
def test_choose_follows_the_senders_order(ours: list[int], theirs: list[int], expected: int | None) -> None:
    """The sender uses the first code of its own list that the peer lists."""
    assert choose(ours, theirs) == expected
    assert choose(tuple(ours), iter(theirs)) == expected


def test_snappy_round_trips() -> None:
    """With python-snappy installed, snappy (0x20) is supported and round-trips."""
    snappy = pytest.importorskip("snappy")
    assert flags.snappy in SUPPORTED
    packed = compress(flags.snappy, COMPRESSIBLE)
    assert len(packed) < len(COMPRESSIBLE)
    assert bytes(snappy.uncompress(packed)) == COMPRESSIBLE
    assert sorted(inflate([flags.snappy], packed, len(COMPRESSIBLE))) == sorted([COMPRESSIBLE, packed])
    # A body as py2p compresses it: snappy.compress of checksum + serial.
    message = WireMessage.create(0, SENDER, TIME, (0, "s" * 1000))
    body = bytes(snappy.compress(message.body_in(True)))
    assert WireMessage.from_body(body, [flags.snappy]).payload == (0, "s" * 1000)
    assert choose(SUPPORTED, [0x13, 0x20]) == flags.snappy


def test_msgpack_refuses_more_items_than_the_limit() -> None:
    """A list or map with more items than max_items is refused before it is built."""
    from twisted_mesh._frames import unpack

    assert unpack(pack([0] * 10), max_items=10) == [0] * 10
    with pytest.raises(FrameError):
        unpack(pack([0] * 11), max_items=10)
    with pytest.raises(FrameError):
        unpack(pack({str(n): n for n in range(11)}), max_items=10)


def test_msgpack_refuses_more_lists_and_maps_than_the_limit() -> None:
    """
    A message may hold at most max_items lists and maps in all, however they
    are spread (each could be one byte that becomes an object of some 80).
    """
    from twisted_mesh._frames import unpack

    def spread(count: int) -> list[Any]:
        # Lists of at most 5 empty lists, in a list of at most 10 items.
        return [[[] for _ in range(min(5, count - start))] for start in range(0, count, 5)]

    within = [spread(30), "x" * 20]  # 30 + 6 + 1 + 1 lists, in more than 40 bytes
    assert len(pack(within)) > 40
    assert unpack(pack(within), max_items=40) == within
    with pytest.raises(FrameError, match="more than 40 lists and maps"):
        unpack(pack(spread(40)), max_items=40)
    with pytest.raises(FrameError, match="more than 40 lists and maps"):
        unpack(pack([{} for _ in range(8)] * 5), max_items=40)
    # A value shorter than max_items bytes cannot hold more.
    assert unpack(pack(spread(10)), max_items=1000) == spread(10)
