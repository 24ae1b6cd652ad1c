"""
The compression methods a link may agree on, with a cap on what they inflate.

Pure functions: no I/O, no reactor.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from twisted_mesh import flags

try:  # pragma: no cover - depends on what is installed
    import snappy as _snappy
except ImportError:  # pragma: no cover
    _snappy = None


class DecompressionError(ValueError):
    """A body did not decompress with the method tried."""


class InflatedTooLarge(DecompressionError):
    """A body would inflate past the size limit."""


def _zlib_compress(data: bytes) -> bytes:
    return zlib.compress(data)


def _gzip_compress(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
    return packer.compress(data) + packer.flush()


#: The memory an xz header may make the decoder take: enough for any preset,
#: too little for a crafted header that names a huge dictionary.
LZMA_MEMORY_LIMIT = 80 * 1024 * 1024


def _inflater(make: Callable[[], Any], errors: tuple[type[Exception], ...]) -> Callable[[bytes, int], bytes]:
    """
    Inflate with a fresh decompressor from ``make``, never past ``limit``
    bytes: its output is capped at ``limit + 1``, which tells too much.
    """

    def inflate(data: bytes, limit: int) -> bytes:
        inflater = make()
        try:
            out: bytes = inflater.decompress(data, limit + 1)
        except errors as e:
            raise DecompressionError(str(e)) from None
        if len(out) > limit:
            raise InflatedTooLarge(f"decompressed body exceeds {limit} bytes")
        if not inflater.eof:
            raise DecompressionError("truncated compressed body")
        return out

    return inflate


# MAX_WBITS | 32 reads both the zlib and the gzip container, as the
# references do.
_inflate_zlib_or_gzip = _inflater(lambda: zlib.decompressobj(zlib.MAX_WBITS | 32), (zlib.error,))
_inflate_bz2 = _inflater(bz2.BZ2Decompressor, (OSError, ValueError))
_inflate_lzma = _inflater(lambda: lzma.LZMADecompressor(memlimit=LZMA_MEMORY_LIMIT), (lzma.LZMAError,))


def _snappy_compress(data: bytes) -> bytes:  # pragma: no cover
    return bytes(_snappy.compress(data))


def _inflate_snappy(data: bytes, limit: int) -> bytes:  # pragma: no cover
    # A snappy body starts with its inflated length: check it before inflating.
    length, shift = 0, 0
    for byte in data[:5]:
        length |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    if length > limit:
        # Snappy has no magic number: this may not be a snappy body at all.
        raise DecompressionError(f"snappy body claims {length} bytes")
    try:
        return bytes(_snappy.uncompress(data))
    except Exception as e:
        raise DecompressionError(str(e)) from None


_Compress = Callable[[bytes], bytes]
_Inflate = Callable[[bytes, int], bytes]

_METHODS: dict[int, tuple[_Compress, _Inflate, bytes]] = {
    # code: (compress, inflate with a cap, leading bytes of its output)
    flags.zlib: (_zlib_compress, _inflate_zlib_or_gzip, b"\x78"),
    flags.gzip: (_gzip_compress, _inflate_zlib_or_gzip, b"\x1f\x8b"),
    flags.bz2: (bz2.compress, _inflate_bz2, b"BZh"),
    flags.lzma: (lzma.compress, _inflate_lzma, b"\xfd7zXZ\x00"),
}
if _snappy is not None:  # pragma: no cover
    _METHODS[flags.snappy] = (_snappy_compress, _inflate_snappy, b"")

#: The name of each compression code.
NAMES = {flags.zlib: "zlib", flags.gzip: "gzip", flags.bz2: "bz2", flags.lzma: "lzma", flags.snappy: "snappy"}

#: The codes this node supports, in its order of preference.
SUPPORTED: tuple[int, ...] = tuple(
    code for code in (flags.snappy, flags.zlib, flags.gzip, flags.bz2, flags.lzma) if code in _METHODS
)


#: The codes this node compresses with, in its order of preference: it reads
#: bz2 and lzma, but sends neither (they take tens of times zlib's time, for
#: each large message relayed to a peer that asks for nothing else).
SENT: tuple[int, ...] = tuple(code for code in SUPPORTED if code not in (flags.bz2, flags.lzma))


def choose(ours: Sequence[int], theirs: Iterable[int]) -> int | None:
    """
    Pick the code a sender uses towards a peer.

    :param ours: the sender's list, in its order of preference.
    :param theirs: the codes the peer listed.
    :return: the first of ``ours`` that the peer also lists, or ``None``.
    """
    listed = set(theirs)
    for code in ours:
        if code in listed:
            return code
    return None


#: Bodies shorter than this go out uncompressed whatever was agreed: the
#: references, like this node, read a body that does not inflate as raw
#: (but see `.mistaken_for_packed`).
MIN_COMPRESSED_SIZE = 512


def mistaken_for_packed(code: int, data: bytes) -> bool:
    """
    Whether a reader of the method ``code`` could take ``data``, sent as it
    is, for that method's output.  js2p tries the agreed methods on every
    body, and its zlib skips the final check: a raw body whose first two
    bytes make a zlib header (about one in 500; it then fails one in 13 or
    so) inflates to garbage there and is lost.  Such a body is compressed.
    """
    return code == flags.zlib and len(data) > 1 and data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0


def kept_raw(code: int | None, data: bytes) -> bool:
    """
    Whether ``data`` goes out as it is to a peer that reads ``code``, without
    an attempt to compress it: no method, or shorter than
    `.MIN_COMPRESSED_SIZE` (and not `.mistaken_for_packed`).
    """
    return code is None or (len(data) < MIN_COMPRESSED_SIZE and not mistaken_for_packed(code, data))


#: Bodies of this size and more are probed before they are compressed: a
#: slice of `.PROBE_SIZE` bytes from their middle is compressed first, and
#: when it does not shrink (random, encrypted or already compressed data),
#: the body goes out as it is.  Trying the whole body would cost as much as
#: compressing it, for nothing.
PROBE_FROM = 16 * 1024
PROBE_SIZE = 2048


def compress(code: int | None, data: bytes) -> bytes:
    """
    Compress ``data`` with the method ``code``.

    Data `.kept_raw`, and data that the method does not make smaller
    (already compressed, encrypted, random; from `.PROBE_FROM` bytes on, as
    a probe of it tells) are left as they are: a receiver reads such a body
    as raw, at once, where it would first hash the compressed bytes and then
    inflate them.  Data `.mistaken_for_packed` is always compressed.
    """
    if kept_raw(code, data):
        return data
    assert code is not None
    method = _METHODS[code][0]
    mistaken = mistaken_for_packed(code, data)
    if len(data) >= PROBE_FROM and not mistaken:
        middle = len(data) // 2
        probe = data[middle : middle + PROBE_SIZE]
        if len(method(probe)) >= len(probe):
            return data
    packed = method(data)
    return packed if len(packed) < len(data) or mistaken else data


def inflations(codes: Iterable[int], data: bytes, limit: int) -> Iterator[tuple[int, bytes]]:
    """
    Yield the readings of a compressed body worth checking, each with the
    code it was inflated with.

    These are the output of each code of the peer's list that this node
    supports, in the peer's order, that ``data`` could be the output of.  The
    caller checks the raw body first (a sender may leave a body
    uncompressed, and checking it costs one hash of bytes at hand), then
    takes the first of these whose checksum holds.

    :param codes: the codes the sending peer listed.
    :param data: the body as it arrived.
    :param limit: the most bytes a decompressed body may hold.
    :raise InflatedTooLarge: when a method's output would exceed ``limit``.
    """
    for code in codes:
        method = _METHODS.get(code)
        if method is None or not data.startswith(method[2]):
            continue
        try:
            reading = method[1](data, limit)
        except InflatedTooLarge:
            raise
        except DecompressionError:
            continue
        yield code, reading
