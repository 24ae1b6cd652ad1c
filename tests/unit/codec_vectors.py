"""
The frames and protocol IDs that the reference py2p 0.7.878 produces, and
helpers the codec tests share.

The vectors are those of the shared ``vectors/p2p-0.7.json`` beside
PROTOCOL.md, copied in here so that the suite needs nothing outside the
checkout.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import lzma
import zlib
from hashlib import sha256
from typing import Any, NamedTuple

from twisted_mesh import flags
from twisted_mesh._compression import compress, inflations
from twisted_mesh._frames import WireMessage


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
