"""
Frames: the length header, the checksum, and the sender's ID form (the
serial is `._serial`'s msgpack).

A frame on the wire is::

    uint32_be(len(body)) + body
    body   = compress(checksum + serial)
    serial = msgpack([msg_type, sender, time, *payload])

with ``checksum = sha256(serial)``.  Everything here is pure: no I/O, no
reactor, so a test can drive it byte by byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from hashlib import sha256
from struct import Struct
from typing import Any

from twisted_mesh import _compression
from twisted_mesh._ids import MAX_ID_LENGTH, id_text, is_node_id
from twisted_mesh._serial import MAX_DEPTH, MAX_ITEMS, pack, unpack

# (A frame that cannot be read is one whose serial cannot: the error is
# the serial's, and a reader of frames catches it here.)
from twisted_mesh._serial import FrameError as FrameError
from twisted_mesh.limits import Limits

_HEADER = Struct(">I")
_CHECKSUM_SIZE = 32

#: The default largest body a frame may announce, and a body may inflate to.
MAX_FRAME_SIZE = Limits.max_frame_size


class FrameTooLarge(FrameError):
    """A frame announced, or inflated to, more than the size limit."""


class ChecksumError(FrameError):
    """No reading of a frame's body has a checksum that holds."""


def _sender_start(serial: bytes) -> int:
    """
    Where the sender field starts in a serial that `.WireMessage.from_body`
    accepted (or that `.WireMessage.create` made): after the array's header
    (one, three or five bytes) and the one-byte msg_type.
    """
    lead = serial[0]
    return 2 if lead <= 0x9F else 4 if lead == 0xDC else 6


#: The types an ID field may have on the wire: bin or str.
_ID_TYPES = (bytes, str)


@lru_cache(maxsize=4096)
def _sender_forms(field: str | bytes) -> tuple[str, bytes] | None:
    """
    Read a sender field: the ID as text and the field's shortest msgpack
    form, or ``None`` when it is not a node ID.  Cached: a link brings
    the same few senders again and again.
    """
    sender = id_text(field)
    if sender is None or not is_node_id(sender):
        return None
    return sender, pack(field)


def _inflated(body: bytes, codes: Sequence[int], limit: int) -> tuple[bytes, int]:
    """
    The reading of a compressed body whose checksum holds, and its code.

    :raise ChecksumError: when no reading's checksum holds.
    :raise FrameTooLarge: when a reading would inflate past ``limit``.
    """
    try:
        for code, reading in _compression.inflations(codes, body, limit):
            if sha256(reading[_CHECKSUM_SIZE:]).digest() == reading[:_CHECKSUM_SIZE]:
                return reading, code
    except _compression.InflatedTooLarge as e:
        raise FrameTooLarge(str(e)) from None
    raise ChecksumError("checksum mismatch")


class WireMessage:
    """
    One message as it travels: its fields, and the bytes it arrived as.

    A relayed message is written out as the bytes it arrived as; the only
    change a hop makes is the sender field's form (bin or str), which it
    writes in the form the next peer speaks (see `.body_in`).

    :ivar msg_type: the main flag.
    :ivar sender: the originator's node ID, as text.
    :ivar time: the originator's UTC timestamp, in seconds.
    :ivar payload: the packets after the time field, sub-flag first.
    :ivar sender_is_bin: whether the sender field arrived as bin.
    :ivar key: the message's identity whatever the form of its sender
        field: the checksum of its bin form.  The seen-set keys on it.
    """

    __slots__ = (
        "msg_type",
        "sender",
        "time",
        "payload",
        "sender_is_bin",
        "key",
        "_body",
        "_other_body",
        "_frame",
        "_frames",
    )

    def __init__(
        self,
        msg_type: int,
        sender: str,
        time: int,
        payload: tuple[Any, ...],
        body: bytes,
        sender_is_bin: bool,
        checksum: bytes,
    ) -> None:
        """
        Hold a message's fields and its body; `.create` and `.from_body`
        are the ways to make one.

        :param body: the checksum and the serial.
        :param checksum: the checksum, the start of ``body``.
        """
        self.msg_type = msg_type
        self.sender = sender
        self.time = time
        self.payload = payload
        self.sender_is_bin = sender_is_bin
        # The body (checksum + serial) as it arrived, and in the other
        # sender form once a peer needs that.
        self._body = body
        self._other_body: bytes | None = None
        # The frame of the body as it is, and the others made so far, by
        # sender form and compression.
        self._frame: bytes | None = None
        self._frames: dict[tuple[bool, int | None], bytes] | None = None
        self.key = checksum if sender_is_bin else self.body_in(True)[:_CHECKSUM_SIZE]

    @classmethod
    def create(
        cls,
        msg_type: int,
        sender: str,
        time: int,
        payload: Sequence[Any],
        sender_is_bin: bool = True,
    ) -> WireMessage:
        """
        Make a new message from its fields.

        :raise TypeError: when the payload holds a value msgpack cannot write.
        """
        sender_field: str | bytes = sender.encode("ascii") if sender_is_bin else sender
        serial = pack([msg_type, sender_field, time, *payload])
        checksum = sha256(serial).digest()
        return cls(msg_type, sender, time, tuple(payload), checksum + serial, sender_is_bin, checksum)

    @classmethod
    def from_body(
        cls,
        body: bytes,
        codes: Sequence[int],
        limit: int = MAX_FRAME_SIZE,
        max_depth: int = MAX_DEPTH,
        max_items: int = MAX_ITEMS,
    ) -> WireMessage:
        """
        Read a received body: inflate it as the peer's codes allow, check
        its checksum, and decode it.

        :param body: the bytes after the length header.
        :param codes: the compression codes the sending peer listed.
        :param limit: the most bytes the body may inflate to.
        :param max_depth: how deeply lists and maps may nest in the message
            (the message itself is depth 0, the payload's lists depth 1).
        :param max_items: the most items one list or map may hold.
        :raise FrameError: when the body cannot be read (see its subclasses).
        """
        serial = body[_CHECKSUM_SIZE:]
        checksum = sha256(serial).digest()
        if body.startswith(checksum):  # never, for a body shorter than a checksum
            reading, code = body, None
        else:
            reading, code = _inflated(body, codes, limit)
            serial, checksum = reading[_CHECKSUM_SIZE:], reading[:_CHECKSUM_SIZE]
        fields = unpack(serial, max_depth, max_items)
        if type(fields) is not list or len(fields) < 4:
            raise FrameError("a message must be an array of at least 4 fields")
        msg_type, sender_field, time = fields[0], fields[1], fields[2]
        if type(msg_type) is not int or not 0 <= msg_type <= 0x7F:
            raise FrameError(f"bad message type {msg_type!r}")
        if type(time) is not int:
            raise FrameError("bad time field")
        # (Checked for length first: the cache keeps what it is given.)
        is_id = type(sender_field) in _ID_TYPES and len(sender_field) <= MAX_ID_LENGTH
        sender = _sender_forms(sender_field) if is_id else None
        if sender is None:
            raise FrameError("the sender must be a node ID: base58, 32 to 128 characters")
        # The relay rewrites the sender field in place, and the seen-set keys
        # on the bin form: both need the fields before the payload in
        # msgpack's shortest form (a one-byte msg_type, then the sender).
        if not serial.startswith(sender[1], _sender_start(serial)):
            raise FrameError("the sender field is not in its shortest msgpack form")
        del fields[:3]
        msg = cls(msg_type, sender[0], time, tuple(fields), reading, type(sender_field) is bytes, checksum)
        if code is None and len(body) >= _compression.MIN_COMPRESSED_SIZE:
            # The peer would have compressed it with this method, had that
            # made it smaller (see _compression.compress).
            code = _compression.choose(codes, _compression.SUPPORTED)
            if code is not None and _compression.mistaken_for_packed(code, body):
                code = None  # compressed for such peers all the same
        if code is not None:
            # Relayed as it came to a peer that reads the same method.
            msg._frames = {(msg.sender_is_bin, code): _HEADER.pack(len(body)) + body}
        return msg

    def body_in(self, sender_is_bin: bool) -> bytes:
        """
        The uncompressed body (checksum + serial) with the sender field in
        the given form; every other byte stays as the message arrived.
        """
        if sender_is_bin == self.sender_is_bin:
            return self._body
        if self._other_body is None:
            serial = self._body[_CHECKSUM_SIZE:]
            # The field is in its shortest form (see from_body): swap it for
            # the other form.
            as_bin, as_str = pack(self.sender.encode("ascii")), pack(self.sender)
            arrived, wanted = (as_bin, as_str) if self.sender_is_bin else (as_str, as_bin)
            start = _sender_start(serial)
            serial = serial[:start] + wanted + serial[start + len(arrived) :]
            self._other_body = sha256(serial).digest() + serial
        return self._other_body

    def frame(self, sender_is_bin: bool, code: int | None) -> bytes:
        """
        The whole frame for a peer that reads the sender in the given form,
        compressed with ``code`` (``None``: not compressed).  Made once per
        form and code, then reused for every peer that needs the same.
        """
        body = self._body
        if sender_is_bin == self.sender_is_bin and (code is None or _compression.kept_raw(code, body)):
            # The body as it is: what most peers get.
            frame = self._frame
            if frame is None:
                frame = self._frame = _HEADER.pack(len(body)) + body
            return frame
        frames = self._frames
        if frames is None:
            frames = self._frames = {}
        frame = frames.get((sender_is_bin, code))
        if frame is None:
            body = _compression.compress(code, self.body_in(sender_is_bin))
            frame = frames[sender_is_bin, code] = _HEADER.pack(len(body)) + body
        return frame


class FrameReader:
    """
    Cut a byte stream into frame bodies, whatever the chunks it arrives in.

    The length each header announces is checked against ``max_size`` before
    anything is buffered for it.
    """

    def __init__(self, max_size: int = MAX_FRAME_SIZE) -> None:
        self.max_size = max_size
        # The start of an incomplete frame, and how long it must grow before
        # there is something to read: its header, or all of it.
        self._buffer = bytearray()
        self._needed = 4

    def feed(self, data: bytes) -> list[bytes]:
        """
        Take the next bytes of the stream.

        :return: the bodies of the frames this completes, in order.
        :raise FrameTooLarge: when a header announces more than ``max_size``.
        """
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._needed:
                return []
            data = bytes(buffer)
            buffer.clear()
        bodies = []
        at, size = 0, len(data)
        while size - at >= 4:
            length = _HEADER.unpack_from(data, at)[0]
            if length > self.max_size:
                raise FrameTooLarge(f"a frame announced {length} bytes, more than the limit of {self.max_size}")
            end = at + 4 + length
            if end > size:
                self._needed = end - at
                break
            bodies.append(data[at + 4 : end])
            at = end
        else:
            self._needed = 4
        if at < size:
            buffer += memoryview(data)[at:]
        return bodies

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete frame are held."""
        return len(self._buffer)
