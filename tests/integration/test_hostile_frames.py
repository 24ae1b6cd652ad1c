"""
Hostile frames against a live node (see `tests.integration.hostile`):
random bytes, length headers over the limit, bad checksums, bodies that are
not msgpack or not a message, ext types, deep nesting and compression bombs.
"""

from __future__ import annotations

import random
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

import msgpack

from tests.integration.hostile import (
    ANY_LINE,
    BAD_FRAME_LOG,
    CLOSED_EARLY,
    MALFORMED,
    MAX_FRAME,
    NOT_MESH,
    NOT_MESH_LOG,
    SIZE_LOG,
    TOO_LARGE,
    Arena,
    Case,
    catalogue_test,
    deep,
    deep_map,
    fields,
    frame_of_body,
    frame_of_serial,
    frames,
    head,
    matches,
    now,
)
from tests.support import RawPeer, wait_for
from twisted_mesh import Limits, flags
from twisted_mesh import _compression as compression
from twisted_mesh._frames import WireMessage
from twisted_mesh._link.negotiation import MAX_BAD_FRAMES


def bomb(code: int) -> Callable[[RawPeer], bytes]:
    """A small body that inflates, with ``code``, past the frame size limit."""

    def build(peer: RawPeer) -> bytes:
        zeros = b"\0" * (MAX_FRAME + 4096)
        if code == flags.zlib:
            body = zlib.compress(zeros, 9)
        elif code == flags.gzip:
            packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
            body = packer.compress(zeros) + packer.flush()
        else:
            body = compression.compress(code, zeros)
        assert len(body) < MAX_FRAME // 16
        return frame_of_body(body)

    return build


def random_bytes(peer: RawPeer) -> bytes:
    """64 KiB of seeded random bytes; their first four announce more than the limit."""
    data = random.Random(5).randbytes(65536)
    assert int.from_bytes(data[:4], "big") > MAX_FRAME
    return data


def random_frames(peer: RawPeer) -> bytes:
    """Frames with true length headers around seeded random bodies."""
    rng = random.Random(6)
    return b"".join(frame_of_body(rng.randbytes(rng.randrange(40, 400))) for _ in range(2 * MAX_BAD_FRAMES + 2))


def bad_checksums(peer: RawPeer) -> bytes:
    """MAX_BAD_FRAMES + 1 well-formed broadcasts whose checksum fails."""
    serial = WireMessage.create(flags.broadcast, peer.id, now(), (flags.broadcast, "bad sum")).body_in(True)[32:]
    return frame_of_serial(serial, corrupt=True) * (MAX_BAD_FRAMES + 1)


async def many_codes(peer: RawPeer, arena: Arena) -> None:
    """
    A handshake that lists zlib 2000 times, then one small frame that
    inflates to just under the limit and fails its checksum.
    """
    peer.codes = [flags.zlib] * 2000
    peer.handshake()
    await wait_for(lambda: peer.peers_messages() > 0 or peer.closed, 15)
    if peer.closed:
        return
    body = zlib.compress(b"\0" * (MAX_FRAME - 1024), 9)
    started = time.monotonic()
    peer.send_raw(frame_of_body(body))
    await peer.barrier()
    spent = time.monotonic() - started
    assert spent < 2.0, (
        f"one {len(body)}-byte frame kept the node busy for {spent:.1f} s: "
        "it was inflated once for each of the 2000 (repeated) codes of the handshake"
    )


def _cases() -> dict[str, Case]:
    c: dict[str, Case] = {}
    # -- before any handshake --
    # Junk before any frame of the protocol: another protocol, not a limit.
    c["random-bytes"] = Case(frames(random_bytes), counters=NOT_MESH, log=NOT_MESH_LOG, handshake=False)
    c["random-frames"] = Case(
        frames(random_frames),
        counters={"dropped.bad_checksum": MAX_BAD_FRAMES + 1, **CLOSED_EARLY},
        log=matches("checksum"),
        handshake=False,
    )
    c["header-4GiB-before-handshake"] = Case(
        frames(lambda p: struct.pack(">I", 2**32 - 1)), counters=NOT_MESH, log=NOT_MESH_LOG, handshake=False
    )

    # -- after a good handshake: frames --
    c["header-over-limit"] = Case(frames(lambda p: struct.pack(">I", MAX_FRAME + 1)), counters=TOO_LARGE, log=SIZE_LOG)
    c["truncated-frame-then-hang-up"] = Case(
        frames(lambda p: struct.pack(">I", 1000) + b"\0" * 500), counters={}, log=matches("left"), hang_up=True
    )
    c["bad-checksum-repeated"] = Case(
        frames(bad_checksums), counters={"dropped.bad_checksum": MAX_BAD_FRAMES + 1}, log=matches("checksum")
    )
    c["not-msgpack"] = Case(
        frames(lambda p: frame_of_serial(b"\xc1\xc1\xc1\xc1")), counters=MALFORMED, log=BAD_FRAME_LOG
    )
    c["msgpack-trailing-bytes"] = Case(
        frames(lambda p: frame_of_serial(msgpack.packb([0, p.id.encode(), now(), 0, "x"]) + b"\x00")),
        counters=MALFORMED,
        log=BAD_FRAME_LOG,
    )
    c["msgpack-truncated"] = Case(
        frames(lambda p: frame_of_serial(msgpack.packb([0, p.id.encode(), now(), 0, "x" * 40])[:-5])),
        counters=MALFORMED,
        log=BAD_FRAME_LOG,
    )
    c["msgpack-bad-utf8"] = Case(
        frames(lambda p: frame_of_serial(b"\x95\x00\xa3\xff\xfe\xfd\x01\x00\xa1x")),
        counters=MALFORMED,
        log=BAD_FRAME_LOG,
    )
    c["not-an-array-map"] = Case(fields(lambda p: {"msg_type": 0}), counters=MALFORMED, log=BAD_FRAME_LOG)
    c["not-an-array-int"] = Case(fields(lambda p: 5), counters=MALFORMED, log=BAD_FRAME_LOG)
    c["not-an-array-str"] = Case(fields(lambda p: "hello"), counters=MALFORMED, log=BAD_FRAME_LOG)
    c["array-empty"] = Case(fields(lambda p: []), counters=MALFORMED, log=BAD_FRAME_LOG)
    c["array-too-short"] = Case(fields(lambda p: [0, p.id.encode(), now()]), counters=MALFORMED, log=BAD_FRAME_LOG)
    for name, msg_type in {"str": "0", "negative": -1, "128": 128, "float": 0.0, "bool": False, "none": None,
                           "bin": b"\x00", "list": [0]}.items():  # fmt: skip
        c[f"msg-type-{name}"] = Case(
            fields(lambda p, t=msg_type: [t, p.id.encode(), now(), 0, "x"]), counters=MALFORMED, log=BAD_FRAME_LOG
        )
    for name, sender in {"int": 5, "none": None, "empty-bin": b"", "empty-str": "", "list": [b"x"], "map": {1: 2},
                         "float": 1.5, "non-ascii-str": "\u00e9" * 40,
                         "non-ascii-bin": "\u00e9".encode() * 20}.items():  # fmt: skip
        c[f"sender-{name}"] = Case(
            fields(lambda p, s=sender: [0, s, now(), 0, "x"]), counters=MALFORMED, log=BAD_FRAME_LOG
        )
    for name, stamp in {"str": "now", "float": 1.5, "none": None, "bool": True, "bin": b"1", "list": [1]}.items():
        c[f"time-{name}"] = Case(
            fields(lambda p, t=stamp: [0, p.id.encode(), t, 0, "x"]), counters=MALFORMED, log=BAD_FRAME_LOG
        )
    exts: dict[str, Callable[[RawPeer], Any]] = {
        "payload": lambda p: [0, p.id.encode(), now(), 0, msgpack.ExtType(5, b"x")],
        "timestamp-payload": lambda p: [0, p.id.encode(), now(), 0, msgpack.Timestamp(now())],
        "timestamp-time": lambda p: [0, p.id.encode(), msgpack.Timestamp(now()), 0, "x"],
        "timestamp-map-key": lambda p: [0, p.id.encode(), now(), 0, {msgpack.Timestamp(1): 1}],
        "sender": lambda p: [0, msgpack.ExtType(1, p.id.encode()), now(), 0, "x"],
        "deep": lambda p: [0, p.id.encode(), now(), 0, deep(5, msgpack.ExtType(3, b""))],
    }
    for name, build in exts.items():
        c[f"ext-{name}"] = Case(fields(build), counters=MALFORMED, log=BAD_FRAME_LOG)
    c["ext-reserved-negative-code"] = Case(
        # msgpack's own ExtType refuses codes below 0: fixext1 with code -100 by hand.
        frames(lambda p: frame_of_serial(head(p) + b"\xd4" + struct.pack("b", -100) + b"x")),
        counters=MALFORMED,
        log=BAD_FRAME_LOG,
    )
    depth = Limits.max_depth
    c["nested-lists-too-deep"] = Case(
        fields(lambda p: [0, p.id.encode(), now(), 0, deep(depth + 8)]), counters=MALFORMED, log=BAD_FRAME_LOG
    )
    c["nested-maps-too-deep"] = Case(
        fields(lambda p: [0, p.id.encode(), now(), 0, deep_map(depth + 8)]), counters=MALFORMED, log=BAD_FRAME_LOG
    )
    c["nested-lists-thousands-deep"] = Case(
        # Deeper than msgpack's own packer goes: written by hand.
        frames(lambda p: frame_of_serial(head(p) + b"\x91" * 5000 + b"\x00")),
        counters=MALFORMED,
        log=BAD_FRAME_LOG,
    )
    for code in (flags.zlib, flags.gzip, flags.bz2, flags.lzma):
        # Counted as a dropped frame (limits.py), not as a limit hit.
        c[f"bomb-{compression.NAMES[code]}"] = Case(
            frames(bomb(code)), counters={"dropped.too_large": 1}, log=SIZE_LOG, codes=(code,)
        )
    c["bomb-not-listed"] = Case(
        # zlib is not in the peer's list: the body is read raw, and fails its checksum.
        frames(bomb(flags.zlib)),
        closed=False,
        counters={"dropped.bad_checksum": 1},
        log=matches("checksum"),
    )
    c["many-repeated-codes"] = Case(many_codes, closed=None, log=ANY_LINE, handshake=False)
    return c


CASES = _cases()


#: The node refuses each of the bad frames and goes on, as `.hostile_input` says.
test_hostile_frame = catalogue_test(CASES)
