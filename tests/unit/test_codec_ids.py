"""
The pure codec: identifiers (base58, node and protocol IDs), flags and
msgpack, checked against what the reference py2p 0.7.878 produces.  No
reactor.
"""

from __future__ import annotations

import random
from hashlib import sha384

import msgpack
import pytest

from tests.unit.codec_vectors import PROTOCOL_IDS, SENDER
from twisted_mesh import _ids, flags
from twisted_mesh._frames import FrameError
from twisted_mesh._ids import MAX_ID_LENGTH, Network, b58decode_int, b58encode_int, id_text, new_node_id, protocol_id
from twisted_mesh._serial import pack, unpack

# --- identifiers -------------------------------------------------------------------------


@pytest.mark.parametrize(("subnet", "encryption", "expected"), PROTOCOL_IDS)
def test_protocol_ids(subnet: str, encryption: str, expected: str) -> None:
    """Every protocol ID that py2p computes comes out the same here (a Network's subnet is never empty)."""
    assert protocol_id(subnet, encryption) == expected
    if subnet:
        assert Network(subnet, encryption).id == expected


def test_protocol_is_the_network_by_the_references_name() -> None:
    """``Protocol``, py2p's and js2p's name, is `.Network` itself: same IDs, same class."""
    from twisted_mesh import Network as public_network
    from twisted_mesh import Protocol

    assert Protocol is Network is public_network
    assert Protocol("mesh", "SSL").id == Network("mesh", "SSL").id


def test_protocol_defaults_to_plaintext() -> None:
    """A `.Network` without a transport is the plain TCP one."""
    assert Network("mesh").encryption == "Plaintext"
    assert Network("mesh").id == "EpAmyZWv9rZUKmjQgU3FTUD4GrJHvVEXizmghVBc8eGD"


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
    protocol = Network("mesh", "SSL")
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
