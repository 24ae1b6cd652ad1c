"""The frame reader, and whole messages through it, driven by hypothesis.

No reactor: a stream is a list of byte strings fed to a `.FrameReader`.
"""

from __future__ import annotations

from itertools import pairwise
from struct import pack as struct_pack
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twisted_mesh._compression import SUPPORTED
from twisted_mesh._frames import MAX_FRAME_SIZE, FrameReader, FrameTooLarge, WireMessage
from twisted_mesh._ids import MAX_ID_LENGTH, MIN_NODE_ID_LENGTH

# Deterministic and quick: the same examples every run, no example database.
FAST = settings(max_examples=200, deadline=None, derandomize=True, database=None)

BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def framed(body: bytes) -> bytes:
    """A frame: the 4-byte big-endian length of ``body``, then ``body``."""
    return struct_pack(">I", len(body)) + body


def cut(stream: bytes, points: set[int]) -> list[bytes]:
    """Split ``stream`` at ``points`` (offsets into it); empty chunks are kept out."""
    edges = [0, *sorted(point for point in points if 0 < point < len(stream)), len(stream)]
    return [stream[start:end] for start, end in pairwise(edges) if end > start]


def feed_all(reader: FrameReader, chunks: list[bytes], bodies: list[bytes]) -> list[bytes]:
    """
    Feed ``chunks`` to ``reader`` one by one, checking after each that
    exactly the frames complete so far have come out, and that ``buffered``
    holds the bytes of the incomplete one.

    :param bodies: the bodies the whole stream holds, in order.
    :return: every body the reader gave, in order.
    """
    ends = []
    offset = 0
    for body in bodies:
        offset += 4 + len(body)
        ends.append(offset)
    out: list[bytes] = []
    fed = 0
    for chunk in chunks:
        out += reader.feed(chunk)
        fed += len(chunk)
        complete = sum(1 for end in ends if end <= fed)
        assert len(out) == complete
        assert reader.buffered == fed - (ends[complete - 1] if complete else 0)
    return out


bodies_strategy = st.lists(st.binary(max_size=2000), max_size=12)


@FAST
@given(bodies=bodies_strategy, data=st.data())
def test_random_cuts(bodies: list[bytes], data: st.DataObject) -> None:
    """
    Frames cut anywhere (some cuts right after a header, some inside one)
    all come out once, in order, as soon as they are complete.
    """
    stream = b"".join(framed(body) for body in bodies)
    header_ends = set()
    offset = 0
    for body in bodies:
        header_ends.add(offset + 4)
        offset += 4 + len(body)
    points = data.draw(st.sets(st.integers(0, len(stream)), max_size=40), label="cuts")
    points |= data.draw(st.sets(st.sampled_from(sorted(header_ends))), label="after headers") if bodies else set()
    assert feed_all(FrameReader(), cut(stream, points), bodies) == bodies


@FAST
@given(bodies=bodies_strategy)
def test_after_every_header(bodies: list[bytes]) -> None:
    """A read that ends exactly after each 4-byte header (py2p's bug) loses nothing."""
    chunks = [piece for body in bodies for piece in (framed(body)[:4], body) if piece]
    assert feed_all(FrameReader(), chunks, bodies) == bodies


@FAST
@given(bodies=st.lists(st.binary(max_size=300), max_size=6))
def test_byte_by_byte(bodies: list[bytes]) -> None:
    """A stream fed one byte at a time gives every frame."""
    stream = b"".join(framed(body) for body in bodies)
    chunks = [stream[at : at + 1] for at in range(len(stream))]
    assert feed_all(FrameReader(), chunks, bodies) == bodies


@FAST
@given(bodies=bodies_strategy)
def test_all_at_once(bodies: list[bytes]) -> None:
    """The whole stream in one read gives every frame at once."""
    reader = FrameReader()
    assert reader.feed(b"".join(framed(body) for body in bodies)) == bodies
    assert reader.buffered == 0


def test_empty_feeds() -> None:
    """Feeding nothing gives nothing, whatever is buffered."""
    reader = FrameReader()
    assert reader.feed(b"") == []
    assert reader.feed(b"\x00\x00") == []
    assert reader.feed(b"") == []
    assert reader.buffered == 2
    assert reader.feed(b"\x00\x00") == [b""]
    assert reader.buffered == 0


@FAST
@given(max_size=st.integers(0, 2**32 - 2), data=st.data())
def test_too_large_header(max_size: int, data: st.DataObject) -> None:
    """
    A header that announces more than ``max_size`` raises `.FrameTooLarge`
    as soon as its 4 bytes are in, before any of the body; one that
    announces exactly ``max_size`` is waited for.
    """
    length = data.draw(st.integers(max_size + 1, 2**32 - 1), label="announced")
    with pytest.raises(FrameTooLarge):
        FrameReader(max_size).feed(struct_pack(">I", length))
    split = FrameReader(max_size)
    assert split.feed(struct_pack(">I", length)[:2]) == []
    with pytest.raises(FrameTooLarge):
        split.feed(struct_pack(">I", length)[2:])
    fits = FrameReader(max_size)
    assert fits.feed(struct_pack(">I", max_size)) == ([b""] if max_size == 0 else [])
    assert fits.buffered == (0 if max_size == 0 else 4)


def test_too_large_after_good_frames() -> None:
    """A bad header after good frames in one read still raises."""
    reader = FrameReader(10)
    assert reader.feed(framed(b"0123456789")) == [b"0123456789"]
    with pytest.raises(FrameTooLarge):
        reader.feed(framed(b"ok") + struct_pack(">I", 11))


@pytest.mark.parametrize("length", [MAX_FRAME_SIZE + 1, 2**32 - 1])
def test_default_limit(length: int) -> None:
    """The default limit is `.MAX_FRAME_SIZE`: a 4 GiB announcement is refused."""
    reader = FrameReader()
    assert reader.max_size == MAX_FRAME_SIZE
    with pytest.raises(FrameTooLarge):
        reader.feed(struct_pack(">I", length))
    assert FrameReader().feed(struct_pack(">I", MAX_FRAME_SIZE)) == []


@FAST
@given(body=st.binary(min_size=1, max_size=500), data=st.data())
def test_buffered(body: bytes, data: st.DataObject) -> None:
    """``buffered`` counts the bytes of an incomplete frame, its header included."""
    frame = framed(body)
    fed = data.draw(st.integers(0, len(frame) - 1), label="fed")
    reader = FrameReader()
    assert reader.feed(frame[:fed]) == []
    assert reader.buffered == fed
    assert reader.feed(frame[fed:] + frame[:fed]) == [body]
    assert reader.buffered == fed


# --- whole messages ----------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
keys = st.text(max_size=10) | st.binary(max_size=10) | st.integers(-(2**63), 2**64 - 1)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=20,
)
# The first packet is the sub-flag; a long filler now and then makes the
# body long enough to be compressed.
payloads = st.builds(
    lambda subflag, rest, filler: [subflag, *rest, *filler],
    st.integers(0, 255),
    st.lists(values, max_size=6),
    st.lists(st.text(alphabet="mesh ", min_size=400, max_size=1500), max_size=1),
)
senders = st.text(alphabet=BASE58, min_size=MIN_NODE_ID_LENGTH, max_size=MAX_ID_LENGTH)
codes = st.sampled_from([*SUPPORTED, None])


@FAST
@given(
    msg_type=st.integers(0, 0x7F),
    sender=senders,
    time=st.integers(-(2**63), 2**64 - 1),
    payload=payloads,
    sender_is_bin=st.booleans(),
    code=codes,
)
def test_message_round_trip(
    msg_type: int, sender: str, time: int, payload: list[Any], sender_is_bin: bool, code: int | None
) -> None:
    """
    A message framed in either form, with any code or none, comes out of a
    reader and ``from_body`` (the peer listing all our codes) with its
    fields; its key is the same in both forms, and it is relayed as the
    bytes it arrived as.
    """
    sent = WireMessage.create(msg_type, sender, time, payload, sender_is_bin)
    frame = sent.frame(sender_is_bin, code)
    (body,) = FrameReader().feed(frame)
    received = WireMessage.from_body(body, SUPPORTED)
    assert (received.msg_type, received.sender, received.time) == (msg_type, sender, time)
    assert received.payload == tuple(payload)
    assert received.sender_is_bin is sender_is_bin
    assert received.key == sent.key
    assert received.frame(sender_is_bin, None) == sent.frame(sender_is_bin, None)

    other = WireMessage.create(msg_type, sender, time, payload, not sender_is_bin)
    assert other.key == sent.key
    assert received.frame(not sender_is_bin, None) == other.frame(not sender_is_bin, None)
    assert sent.frame(not sender_is_bin, None) == other.frame(not sender_is_bin, None)


@FAST
@given(sender=senders, payload=payloads, code=codes)
def test_message_round_trip_codes(sender: str, payload: list[Any], code: int | None) -> None:
    """The peer listing just the code it used (or none) reads the message too."""
    frame = WireMessage.create(0, sender, 0, payload).frame(True, code)
    received = WireMessage.from_body(frame[4:], [] if code is None else [code])
    assert received.payload == tuple(payload)
