"""
How a link reads: the peer's bytes cut into frames, each decoded and handed
to the link's `.Negotiation` (handshakes, renegotiations) or to the node.
"""

from __future__ import annotations

from twisted_mesh import flags
from twisted_mesh._core.node import MeshNode
from twisted_mesh._frames import ChecksumError, FrameError, FrameReader, FrameTooLarge, WireMessage
from twisted_mesh._link.negotiation import NegotiatingLink, Negotiation
from twisted_mesh._logs import logged
from twisted_mesh._stats import LinkStats
from twisted_mesh.errors import HandshakeFailed

#: Bytes of an incomplete frame held for a peer whose handshake has not come
#: (a handshake takes a few hundred): past it the connection is closed, so
#: that unidentified connections cannot hold a frame limit's worth each.
MAX_UNIDENTIFIED_BUFFER = 64 * 1024


class LinkReader:
    """
    Reads one link's frames, counts them, and hands each on; closes the
    link on a frame too large or malformed, and drops the second copy of a
    whisper from a peer that writes each twice (see
    `.Negotiation.sends_twice`).

    Before the peer's first handshake or renegotiation, what cannot be a
    mesh frame (a header announcing more than the size limit, a frame that
    does not decode, more than a handshake's worth of one frame) is taken
    for another protocol (see `.Negotiation.not_mesh`).

    :ivar discarding: whether what still arrives is thrown away: once the
        link closes, unless it was closed to read on.
    """

    def __init__(self, link: NegotiatingLink, node: MeshNode, negotiation: Negotiation, stats: LinkStats) -> None:
        self._link = link
        self._node = node
        self._negotiation = negotiation
        self._stats = stats
        self._limits = node.limits
        self._frames = FrameReader(node.limits.max_frame_size)
        self.discarding = False
        # The key of the whisper the peer sent last, if that was its last frame.
        self._last_whisper: bytes | None = None

    def feed(self, data: bytes) -> None:
        """Read ``data``, the next bytes from the peer."""
        stats, totals = self._stats, self._node.stats
        stats.bytes_in += len(data)
        totals.bytes_in += len(data)
        negotiation = self._negotiation
        if negotiation.first_bytes is not None:
            negotiation.heard(data)
        try:
            bodies = self._frames.feed(data)
        except FrameTooLarge as e:
            totals.dropped["too_large"] += 1
            if not negotiation.not_mesh(str(e)):
                self._node.limit_hit("max_frame_size", "{peer}: {error}", peer=logged(self._link.peer_id), error=str(e))
                self._link.close(str(e))
            return
        stats.frames_in += len(bodies)
        totals.frames_in += len(bodies)
        self._read(bodies)

    def _read(self, bodies: list[bytes]) -> None:
        link, node, totals, limits = self._link, self._node, self._node.stats, self._limits
        max_size, max_depth, max_items = limits.max_frame_size, limits.max_depth, limits.max_items
        negotiation = self._negotiation
        for body in bodies:
            if self.discarding:
                return
            # (Once a frame failed its checksum, the peer was asked to send
            # raw frames: nothing of its is inflated any more, for a body
            # may inflate to max_frame_size, at some cost, and still fail.)
            codes = link.peer_codes if negotiation.inflating else ()
            try:
                msg = WireMessage.from_body(body, codes, max_size, max_depth, max_items)
            except ChecksumError:
                totals.dropped["bad_checksum"] += 1
                negotiation.checksum_failed()
                continue
            except FrameError as e:
                totals.dropped["too_large" if isinstance(e, FrameTooLarge) else "malformed"] += 1
                if link.peer_id is not None:
                    link.close(f"bad frame: {e}")
                elif not negotiation.not_mesh(f"bad frame: {e}"):
                    negotiation.fail(HandshakeFailed(f"bad frame: {e}"), "malformed")
                return
            negotiation.bad_frames = 0
            # What the link handles itself, then what the node does.
            msg_type, payload = msg.msg_type, msg.payload
            if msg_type == flags.renegotiate:
                negotiation.on_renegotiate(msg)
            elif msg_type == flags.whisper and payload and payload[0] == flags.handshake:
                negotiation.on_handshake(payload)
            elif link.peer_id is None:
                before = "the proof of the peer's key" if negotiation.proving else "the handshake"
                negotiation.fail(HandshakeFailed(f"a message came before {before}"), "malformed")
            elif negotiation.sends_twice and self._second_copy(msg):
                totals.dropped["duplicate"] += 1
            else:
                node.message_received(link, msg)
        if link.peer_id is None and self._frames.buffered > MAX_UNIDENTIFIED_BUFFER and not link.closing:
            # A frame far larger than a handshake, from a peer that sent none.
            totals.dropped["too_large"] += 1
            error = f"more than {MAX_UNIDENTIFIED_BUFFER} bytes of a frame before the handshake"
            if not negotiation.not_mesh(error):
                negotiation.fail(HandshakeFailed(error), "malformed")

    def _second_copy(self, msg: WireMessage) -> bool:
        """Whether ``msg`` is the copy of the whisper the peer wrote just before it."""
        key = msg.key if msg.msg_type == flags.whisper else None
        if key is not None and key == self._last_whisper:
            self._last_whisper = None
            return True
        self._last_whisper = key
        return False
