"""
`.LinkProtocol`, one link: reading frames, their size limits, bad frames
and checksums, and what arrives once the link closes.
"""

from __future__ import annotations

import struct
import zlib
from hashlib import sha256
from typing import Any

import msgpack
import pytest
from twisted.internet.testing import StringTransport
from twisted.logger import Logger

from tests.support import MESH
from tests.unit.link_rig import Rig, connected, handshake, large, message, renegotiate
from twisted_mesh import _compression, flags
from twisted_mesh._frames import WireMessage
from twisted_mesh._ids import new_node_id
from twisted_mesh._link import LinkFactory
from twisted_mesh._link.negotiation import MAX_BAD_FRAMES
from twisted_mesh._link.reader import MAX_UNIDENTIFIED_BUFFER

# -- size limits and bad frames ----------------------------------------------


def test_oversized_frame_closes_at_its_header() -> None:
    """A header announcing more than max_frame_size closes at once."""
    rig = Rig()
    side = rig.link(max_frame_size=1024)
    side.proto.dataReceived((1025).to_bytes(4, "big"))
    assert side.closed


def test_frame_at_the_limit_is_awaited() -> None:
    """A header announcing exactly max_frame_size waits for its body."""
    rig = Rig()
    side = rig.link(max_frame_size=1024)
    side.proto.dataReceived((1024).to_bytes(4, "big") + b"\0" * 100)
    assert not side.closed


def test_body_inflating_past_the_limit_closes() -> None:
    """A small compressed body that inflates past max_frame_size closes the link."""
    rig = Rig()
    side = rig.link(max_frame_size=4096)
    peer_id = new_node_id(MESH)
    side.feed(handshake(peer_id, codes=[flags.zlib]))
    big = message(peer_id, flags.broadcast, flags.broadcast, "x" * 100_000)
    body = zlib.compress(big.body_in(True))
    assert len(body) < 4096
    side.proto.dataReceived(len(body).to_bytes(4, "big") + body)
    assert side.closed
    assert rig.delivered == []


def corrupt(msg: WireMessage) -> bytes:
    """``msg``'s frame with its last byte changed: the checksum fails."""
    frame = bytearray(msg.frame(True, None))
    frame[-1] ^= 0x01
    return bytes(frame)


def test_bad_checksums_are_told_and_renegotiated_once() -> None:
    """
    Bad frames between good ones (which keep the link open): the warning and
    [compression, []] come once, a [resend] for each.
    """
    rig = Rig()
    side = connected(rig)
    peer_id = side.proto.peer_id
    assert peer_id is not None
    events: list[Any] = []
    side.proto._negotiation._log = Logger(observer=events.append)  # type: ignore[arg-type]
    for n in range(5):
        side.proto.dataReceived(corrupt(message(peer_id, flags.broadcast, flags.broadcast, "bad", n)))
        side.feed(message(peer_id, flags.broadcast, flags.broadcast, "good", n))
    assert not side.closed and len(rig.delivered) == 5
    payloads = [m.payload for m in side.messages() if m.msg_type == flags.renegotiate]
    assert payloads == [(flags.compression, []), *[(flags.resend,)] * 5]
    warnings = [event for event in events if event["log_level"].name == "warn"]
    assert len(warnings) == 1


def test_bad_checksum_asks_for_a_resend() -> None:
    """A frame failing its checksum: renegotiate [compression, []] and [resend] go out."""
    side = connected()
    peer_id = side.proto.peer_id
    assert peer_id is not None
    mine = message(side.proto._node.id, flags.broadcast, flags.broadcast, "mine")
    side.proto.send(mine)
    side.clear()
    side.proto.dataReceived(corrupt(message(peer_id, flags.broadcast, flags.broadcast, "hi")))
    assert not side.closed
    compression, resend = side.messages()
    assert (compression.msg_type, compression.payload) == (flags.renegotiate, (flags.compression, []))
    assert (resend.msg_type, resend.payload) == (flags.renegotiate, (flags.resend,))
    assert not side.proto._node.queue
    # What the peer should resend to us is not our renegotiation: asked to
    # resend, we write our last real message.
    side.feed(renegotiate(peer_id, flags.resend))
    assert side.bodies() == [mine.body_in(True)]


@pytest.mark.parametrize("read_on", [True, False])
def test_what_arrives_after_a_close(read_on: bool) -> None:
    """
    A link closed to read on (a second connection to the same peer) still
    hands over what its peer sent before it saw the close; any other closed
    link throws it away.
    """
    rig = Rig()
    side = connected(rig)
    peer_id = side.proto.peer_id
    assert peer_id is not None
    side.proto.close("going", error=False, read_on=read_on)
    assert side.closed
    side.feed(message(peer_id, flags.broadcast, flags.broadcast, "late"))
    assert [msg.packets for msg, _ in rig.delivered] == ([(flags.broadcast, "late")] if read_on else [])


class HalfClosing(StringTransport):
    """A transport that can close its writing side only (as TCP can)."""

    half_closed = False

    def loseWriteConnection(self) -> None:
        self.half_closed = True


class Wrapping(StringTransport):
    """
    A transport that hands on the attributes it lacks from the one it wraps,
    as Twisted's TLS does: closing its writing side only is not its own.
    """

    def __init__(self, wrapped: HalfClosing) -> None:
        super().__init__()
        self.wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def test_read_on_closes_only_our_side_of_a_transport_that_can() -> None:
    """
    Closed to read on, a link over TCP closes its writing side only (TCP
    stops reading once it closes); over TLS, which reads on until the peer
    answers its close, it closes the TLS, not the TCP under it.
    """
    rig = Rig()
    for transport in (HalfClosing(), Wrapping(HalfClosing())):
        proto = LinkFactory(rig.node, False, rig.connections, batch=rig.batch).buildProtocol(None)
        proto.makeConnection(transport)
        proto.close("going", error=False, read_on=True)
        if isinstance(transport, Wrapping):
            assert transport.disconnecting and not transport.wrapped.half_closed
        else:
            assert transport.half_closed and not transport.disconnecting


def after_bad_frames() -> tuple[Any, bytes]:
    """A connected link that has read MAX_BAD_FRAMES bad frames in a row, and such a frame."""
    side = connected()
    peer_id = side.proto.peer_id
    assert peer_id is not None
    bad = corrupt(message(peer_id, flags.broadcast, flags.broadcast, "hi"))
    for _ in range(MAX_BAD_FRAMES):
        side.proto.dataReceived(bad)
    return side, bad


def test_too_many_bad_frames_in_a_row_close() -> None:
    """More than MAX_BAD_FRAMES failing frames in a row close the link."""
    side, bad = after_bad_frames()
    assert not side.closed
    side.proto.dataReceived(bad)
    assert side.closed


def test_after_a_bad_checksum_nothing_is_inflated(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Once a frame failed its checksum (and the peer was asked for raw frames),
    the peer's bodies are no longer inflated: a body may inflate to the frame
    limit, at some cost, and fail all the same.  Raw frames are read on.
    """
    rig = Rig()
    side = connected(rig, codes=[flags.zlib])
    peer_id = side.proto.peer_id
    assert peer_id is not None
    inflated: list[int] = []
    real = _compression.inflations

    def counting(codes: Any, data: bytes, limit: int) -> Any:
        if codes:  # (with none, nothing is tried)
            inflated.append(len(data))
        return real(codes, data, limit)

    monkeypatch.setattr(_compression, "inflations", counting)
    side.feed(large(peer_id), code=flags.zlib)
    assert len(rig.delivered) == 1 and len(inflated) == 1
    side.proto.dataReceived(corrupt(message(peer_id, flags.broadcast, flags.broadcast, "bad")))
    inflated.clear()
    side.feed(message(peer_id, flags.broadcast, flags.broadcast, "zlib again", "x" * 2000), code=flags.zlib)
    assert inflated == [] and len(rig.delivered) == 1
    side.feed(message(peer_id, flags.broadcast, flags.broadcast, "raw"))
    assert rig.delivered[-1][0].packets == (flags.broadcast, "raw")


def test_a_good_frame_resets_the_bad_frame_count() -> None:
    """Bad frames must come in a row to close the link."""
    side, bad = after_bad_frames()
    side.feed(message(side.proto.peer_id, flags.whisper, flags.whisper, "fine"))
    for _ in range(MAX_BAD_FRAMES):
        side.proto.dataReceived(bad)
    assert not side.closed


def test_a_large_frame_before_the_handshake_is_not_held() -> None:
    """
    A peer that has not sent its handshake may not have the node hold more
    than MAX_UNIDENTIFIED_BUFFER bytes of a frame; once it has, it may send
    frames up to the limit, even in the read that brings its handshake.
    """
    rig = Rig()
    side = rig.link()
    side.proto.dataReceived(struct.pack(">I", 1 << 20) + b"x" * (MAX_UNIDENTIFIED_BUFFER - 4))
    assert not side.closed
    side.proto.dataReceived(b"x")
    assert side.closed
    assert rig.node.stats.dropped["too_large"] == rig.node.stats.handshake_failures["not_mesh"] == 1

    rig = Rig()
    side = rig.link()
    peer_id = new_node_id(MESH)
    big = message(peer_id, flags.broadcast, flags.broadcast, "x" * (2 * MAX_UNIDENTIFIED_BUFFER))
    frame = big.frame(True, None)
    side.proto.dataReceived(handshake(peer_id).frame(True, None) + frame[: len(frame) // 2])
    side.proto.dataReceived(frame[len(frame) // 2 :])
    assert not side.closed
    assert [msg.packets for msg, _ in rig.delivered] == [(flags.broadcast, "x" * (2 * MAX_UNIDENTIFIED_BUFFER))]


def test_undecodable_frame_closes() -> None:
    """A frame whose checksum holds but is not a message closes the link."""
    side = connected()
    serial = msgpack.packb([1, 2])
    body = sha256(serial).digest() + serial
    side.proto.dataReceived(len(body).to_bytes(4, "big") + body)
    assert side.closed
