"""
Fuzzing the codec and the link with hypothesis.

Whatever bytes arrive, in whatever chunks, the frame reader and the message
decoder raise `.FrameError` (or a subclass) and nothing else; what they do
accept is well formed, and keeps its identity in either sender form.  A
`.LinkProtocol` fed any byte stream never raises out of ``dataReceived``, and
hands its node only well-formed messages from a peer whose handshake it
accepted.

All tests are derandomized, so a run is the same every time.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from hashlib import sha256
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tests.support import MESH
from twisted_mesh import _compression, flags
from twisted_mesh._core.link import Link
from twisted_mesh._core.node import MeshNode
from twisted_mesh._frames import FrameError, FrameReader, WireMessage
from twisted_mesh._ids import Network, b58encode_int, is_node_id
from twisted_mesh._link import LinkFactory
from twisted_mesh.limits import Limits

SUPPORTED = _compression.SUPPORTED

#: Small limits, so that the fuzzer reaches them often.
MAX_SIZE = 4096
MAX_DEPTH = 4

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# -- strategies --------------------------------------------------------------

#: Node IDs of every length a node accepts (32 digits and more).
node_ids = st.integers(58**31, 2**384).map(b58encode_int)
leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.binary(max_size=12)
)
keys = st.integers(-1000, 1000) | st.text(max_size=6) | st.binary(max_size=6)
values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=3),
    max_leaves=16,
)
#: Values with the extension types the decoder must refuse, here and there.
exts = st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)) | st.builds(
    msgpack.Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 999_999_999)
)
values_with_ext = st.recursive(
    leaves | exts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=3),
    max_leaves=16,
)
codes_lists = st.lists(st.sampled_from([*SUPPORTED, 0x00, 0x14, 0xFF]), max_size=6)
compression = st.none() | st.sampled_from(SUPPORTED)
mutations = st.lists(
    st.tuples(st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 2**20), st.integers(0, 255)),
    min_size=1,
    max_size=4,
)
cuts = st.lists(st.integers(0, 2**20), max_size=12)


def chunked(data: bytes, points: list[int]) -> Iterator[bytes]:
    """``data`` cut at ``points`` (taken modulo its length); empty chunks too."""
    at = 0
    for point in sorted(point % (len(data) + 1) for point in points):
        yield data[at:point]
        at = point
    yield data[at:]


def mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    """Flip, insert or delete bytes of ``data``."""
    out = bytearray(data)
    for op, where, value in edits:
        at = where % (len(out) + 1)
        if op == "insert":
            out.insert(at, value)
        elif out:
            at %= len(out)
            if op == "flip":
                out[at] ^= value or 0xFF
            else:
                del out[at]
    return bytes(out)


def frame_of(serial: bytes, code: int | None = None) -> bytes:
    """A whole frame around ``serial``, with a true checksum."""
    body = _compression.compress(code, sha256(serial).digest() + serial)
    return struct.pack(">I", len(body)) + body


def packed(fields: list[Any]) -> bytes:
    """``fields`` in msgpack, bin and str apart."""
    return msgpack.packb(fields, use_bin_type=True)  # type: ignore[no-any-return]


def positions_too_deep(value: Any, depth: int = 0) -> bool:
    """Whether a list or map of ``value`` sits at ``MAX_DEPTH`` or deeper (the message itself at 0)."""
    if isinstance(value, list):
        return depth >= MAX_DEPTH or any(positions_too_deep(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return depth >= MAX_DEPTH or any(
            positions_too_deep(item, depth + 1) for item in (*value.keys(), *value.values())
        )
    return False


def holds_ext(value: Any) -> bool:
    """Whether ``value`` holds an extension type anywhere."""
    if isinstance(value, (msgpack.ExtType, msgpack.Timestamp)):
        return True
    if isinstance(value, list):
        return any(holds_ext(item) for item in value)
    if isinstance(value, dict):
        return any(holds_ext(item) for item in (*value.keys(), *value.values()))
    return False


def assert_well_formed(msg: WireMessage) -> None:
    """The fields of an accepted message have the types and ranges the protocol gives them."""
    assert type(msg.msg_type) is int and 0 <= msg.msg_type <= 0x7F
    assert isinstance(msg.sender, str) and msg.sender and msg.sender.isascii()
    assert type(msg.time) is int
    assert isinstance(msg.payload, tuple) and msg.payload
    assert not holds_ext(list(msg.payload))
    assert len(msg.key) == 32


def decode(body: bytes, codes: list[int] | tuple[int, ...]) -> WireMessage | None:
    """Decode a body with the test limits: the message, or None for a FrameError."""
    try:
        msg = WireMessage.from_body(body, codes, MAX_SIZE, MAX_DEPTH)
    except FrameError:
        return None
    assert_well_formed(msg)
    return msg


def assert_round_trips(msg: WireMessage) -> None:
    """
    The message written in either sender form, compressed or not, reads back
    as the same message with the same identity.
    """
    for as_bin in (True, False):
        for code in (None, *SUPPORTED):
            again = WireMessage.from_body(msg.frame(as_bin, code)[4:], SUPPORTED, 2**24, MAX_DEPTH)
            assert again.sender_is_bin is as_bin
            assert (again.msg_type, again.sender, again.time) == (msg.msg_type, msg.sender, msg.time)
            assert packed(list(again.payload)) == packed(list(msg.payload))
            assert again.key == msg.key


# -- the frame reader and the decoder ----------------------------------------


@FUZZ
@given(data=st.binary(max_size=3 * MAX_SIZE), points=cuts, codes=codes_lists)
def test_any_bytes_in_any_chunks_raise_only_frame_errors(data: bytes, points: list[int], codes: list[int]) -> None:
    """Arbitrary bytes, cut anywhere: only FrameError escapes, and the reader's buffer stays bounded."""
    reader = FrameReader(MAX_SIZE)
    for chunk in chunked(data, points):
        try:
            bodies = reader.feed(chunk)
        except FrameError:
            return
        assert reader.buffered <= MAX_SIZE + 4
        for body in bodies:
            assert len(body) <= MAX_SIZE
            decode(body, codes)


@FUZZ
@given(data=st.binary(max_size=2 * MAX_SIZE), codes=codes_lists)
def test_any_body_with_a_true_checksum_raises_only_frame_errors(data: bytes, codes: list[int]) -> None:
    """A body whose checksum holds over arbitrary bytes: the msgpack reader's errors are FrameErrors."""
    decode(sha256(data).digest() + data, codes)


@FUZZ
@given(bodies=st.lists(st.binary(max_size=300), max_size=8), points=cuts)
def test_reader_output_does_not_depend_on_the_chunks(bodies: list[bytes], points: list[int]) -> None:
    """The same stream cut differently gives the same bodies, in order."""
    stream = b"".join(struct.pack(">I", len(body)) + body for body in bodies)
    reader = FrameReader(MAX_SIZE)
    got = [body for chunk in chunked(stream, points) for body in reader.feed(chunk)]
    assert got == bodies
    assert reader.buffered == 0


@FUZZ
@given(
    msg_type=st.integers(0, 0x7F) | values,
    sender=node_ids | st.text(max_size=8) | st.binary(max_size=8) | values,
    time=st.integers(-(2**63), 2**64 - 1) | values,
    payload=st.lists(values_with_ext, min_size=0, max_size=4),
    code=compression,
)
def test_structured_messages_are_accepted_exactly_when_valid(
    msg_type: Any, sender: Any, time: Any, payload: list[Any], code: int | None
) -> None:
    """
    Any msgpack array as a message: accepted exactly when its fields have the
    right types and ranges, its payload holds no extension type and does not
    nest too deeply; what is accepted round-trips in both sender forms.
    """
    fields = [msg_type, sender, time, *payload]
    msg = decode(frame_of(packed(fields), code)[4:], SUPPORTED)
    valid = (
        type(msg_type) is int
        and 0 <= msg_type <= 0x7F
        and isinstance(sender, (str, bytes))
        and is_node_id(sender.decode("latin-1") if isinstance(sender, bytes) else sender)
        and type(time) is int
        and len(payload) > 0
        and not holds_ext(payload)
        and not positions_too_deep(fields)
    )
    assert (msg is not None) == valid, fields
    if msg is not None:
        assert msg.sender == (sender.decode("ascii") if isinstance(sender, bytes) else sender)
        assert msg.payload == tuple(payload)
        assert_round_trips(msg)


@FUZZ
@given(
    sender=node_ids,
    payload=st.lists(values, min_size=1, max_size=4),
    as_bin=st.booleans(),
    code=compression,
    edits=mutations,
    rechecksum=st.booleans(),
    codes=codes_lists,
)
def test_mutated_frames_raise_only_frame_errors(
    sender: str,
    payload: list[Any],
    as_bin: bool,
    code: int | None,
    edits: list[tuple[str, int, int]],
    rechecksum: bool,
    codes: list[int],
) -> None:
    """
    A valid frame with bytes flipped, inserted or deleted (in the frame as
    sent, or in the serial with a checksum made anew): FrameError or a well
    formed message, never anything else.
    """
    msg = WireMessage.create(flags.broadcast, sender, 1_700_000_000, payload, as_bin)
    if rechecksum:
        serial = mutate(msg.body_in(as_bin)[32:], edits)
        stream = frame_of(serial, code)
    else:
        stream = mutate(msg.frame(as_bin, code), edits)
    reader = FrameReader(MAX_SIZE)
    try:
        bodies = reader.feed(stream)
    except FrameError:
        return
    for body in bodies:
        got = decode(body, [*codes, *([code] if code is not None else [])])
        if got is not None:
            assert_round_trips(got)


SENDER_TAGS = {
    "fixstr": lambda n: bytes([0xA0 | n]) if n < 32 else None,
    "str8": lambda n: bytes([0xD9, n]),
    "str16": lambda n: b"\xda" + n.to_bytes(2, "big"),
    "str32": lambda n: b"\xdb" + n.to_bytes(4, "big"),
    "bin8": lambda n: bytes([0xC4, n]),
    "bin16": lambda n: b"\xc5" + n.to_bytes(2, "big"),
    "bin32": lambda n: b"\xc6" + n.to_bytes(4, "big"),
}


@settings(FUZZ, max_examples=60)
@given(
    sender=node_ids,
    tag=st.sampled_from(sorted(SENDER_TAGS)),
    payload=st.lists(values, min_size=1, max_size=3),
)
def test_the_key_does_not_depend_on_how_the_sender_is_encoded(sender: str, tag: str, payload: list[Any]) -> None:
    """
    msgpack may write one value in several valid ways (bin8, bin16, str8...).
    A message's identity (the seen-set key) is the same whichever encoding of
    its sender field arrived, and in whichever form it is passed on: else one
    broadcast, arriving by two paths in two forms, is delivered twice.  The
    node refuses a sender field that is not in msgpack's shortest form, so a
    message it accepts has one identity.
    """
    header = SENDER_TAGS[tag](len(sender))
    if header is None:
        return
    # [msg_type, time, subflag, *payload], then the sender put in after msg_type.
    rest = packed([0, 1_700_000_000, flags.broadcast, *payload])
    assert rest[0] == 0x90 | (3 + len(payload))
    serial = bytes([rest[0] + 1]) + rest[1:2] + header + sender.encode() + rest[2:]
    canonical = WireMessage.create(flags.broadcast, sender, 1_700_000_000, (flags.broadcast, *payload), True)
    as_str = tag.startswith(("fixstr", "str"))
    if header != packed(sender if as_str else sender.encode())[: len(header)]:
        with pytest.raises(FrameError, match="shortest msgpack form"):
            WireMessage.from_body(sha256(serial).digest() + serial, ())
        return
    msg = WireMessage.from_body(sha256(serial).digest() + serial, ())
    assert msg.sender == sender
    assert msg.key == canonical.key, f"a {tag} sender field changes the message's identity"
    for as_bin in (True, False):
        assert WireMessage.from_body(msg.frame(as_bin, None)[4:], ()).key == canonical.key


# -- a link fed any stream ---------------------------------------------------


class RecordingNode(MeshNode):
    """A node that keeps what its links hand it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handed: list[tuple[Link, WireMessage]] = []
        self.joined: list[Link] = []
        relay = self.message_received

        def message_received(link: Link, msg: WireMessage) -> None:
            """Record, then handle."""
            self.handed.append((link, msg))
            relay(link, msg)

        self.message_received = message_received

    def link_ready(self, link: Link) -> bool:
        """Record, then enter the routing table."""
        self.joined.append(link)
        return super().link_ready(link)


def stream_items(peer: str) -> st.SearchStrategy[bytes]:
    """Pieces of a stream from the peer ``peer``: good frames, bad frames, garbage."""
    now = 1_700_000_000
    wire = st.sampled_from([peer.encode(), peer])
    handshakes = st.builds(
        lambda sid, pid, addr, codes, as_bin: WireMessage.create(
            flags.whisper, peer, now, (flags.handshake, sid, pid, addr, codes), as_bin
        ).frame(as_bin, None),
        wire | values,
        st.sampled_from([MESH.id.encode(), MESH.id, Network("other").id]) | values,
        st.just(["10.0.0.2", 5555]) | st.just(["", 0]) | values,
        codes_lists | values,
        st.booleans(),
    )
    subflags = st.integers(0, 0x12)
    user = st.builds(
        lambda msg_type, subflag, rest, sender, time, as_bin, code: WireMessage.create(
            msg_type, sender, time, (subflag, *rest), as_bin
        ).frame(as_bin, code),
        st.sampled_from([flags.broadcast, flags.whisper, flags.renegotiate, flags.ping, 0x7F]),
        subflags,
        st.lists(values, max_size=3),
        st.just(peer) | node_ids | st.text(alphabet="0OIl !~abc", min_size=1, max_size=8),
        st.just(now) | st.integers(0, 2 * now),
        st.booleans(),
        compression,
    )
    raw = st.builds(
        lambda fields, code: frame_of(packed(fields), code), st.lists(values_with_ext, max_size=6), compression
    )
    garbage = st.binary(max_size=64)
    header_only = st.integers(0, 2**32 - 1).map(lambda n: struct.pack(">I", n))
    # Mostly messages a peer may send, so that the stream gets past the handshake.
    return st.one_of(user, user, user, handshakes, raw, garbage, header_only)


@settings(FUZZ, max_examples=200)
@given(data=st.data(), peer=node_ids, points=cuts, first_handshake=st.booleans())
def test_a_link_fed_any_stream_never_raises(
    data: st.DataObject, peer: str, points: list[int], first_handshake: bool
) -> None:
    """
    A LinkProtocol on a StringTransport, fed a stream of good frames, bad
    frames and garbage in arbitrary chunks, with the clock moving: nothing
    raises out of dataReceived or connectionLost, the node is handed only
    well-formed messages from a peer whose handshake was accepted, and every
    frame the link writes can be read back.
    """
    clock = task.Clock()
    clock.advance(1_700_000_000)
    node = RecordingNode(MESH, clock, out_addr=("127.0.0.1", 4444), limits=Limits(max_frame_size=MAX_SIZE))
    proto = LinkFactory(node, False, set()).buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    items = data.draw(st.lists(stream_items(peer), min_size=1, max_size=12))
    if first_handshake:
        hello = (flags.handshake, peer.encode(), MESH.id.encode(), ["10.0.0.2", 5555], list(SUPPORTED))
        items.insert(0, WireMessage.create(flags.whisper, peer, 1_700_000_000, hello).frame(True, None))
    for chunk in chunked(b"".join(items), points):
        if transport.disconnecting:
            break
        proto.dataReceived(chunk)
        clock.advance(data.draw(st.sampled_from([0, 0, 1, 40])))
    proto.connectionLost(Failure(ConnectionError("the fuzzer hung up")))
    clock.advance(3600)

    for link, msg in node.handed:
        assert link is proto
        assert link.peer_id is not None and is_node_id(link.peer_id)
        assert_well_formed(msg)
        assert msg.msg_type != flags.renegotiate
        assert not (msg.msg_type == flags.whisper and msg.payload[0] == flags.handshake)
        assert is_node_id(msg.sender), f"a message from the non-node-ID sender {msg.sender!r} was handed to the node"
    for link in node.joined:
        assert link.peer_id is not None and is_node_id(link.peer_id)
    assert node.routing_table == {}

    reader = FrameReader(2**24)
    for body in reader.feed(transport.value()):
        WireMessage.from_body(body, SUPPORTED, 2**24)
    assert reader.buffered == 0
