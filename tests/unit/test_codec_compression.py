"""
The pure codec: compression, and the cap on what a body inflates to.  No
reactor.
"""

from __future__ import annotations

import lzma
import random
import tracemalloc
import zlib
from typing import Any

import pytest

from tests.unit.codec_vectors import BOMB_SIZE, SENDER, TIME, bomb, inflate, raw_bodies, stdlib_readable
from twisted_mesh import _compression, flags
from twisted_mesh._compression import (
    MIN_COMPRESSED_SIZE,
    PROBE_FROM,
    PROBE_SIZE,
    SUPPORTED,
    DecompressionError,
    InflatedTooLarge,
    choose,
    compress,
    mistaken_for_packed,
)
from twisted_mesh._frames import MAX_FRAME_SIZE, ChecksumError, FrameError, FrameTooLarge, WireMessage
from twisted_mesh._serial import pack, unpack

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
