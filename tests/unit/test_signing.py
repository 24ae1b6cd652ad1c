"""
Signed messages (`twisted_mesh._signing`): signed once, read back by any
node of the subnet, refused when anything of them changed.
"""

from __future__ import annotations

from hashlib import sha256
from typing import Any

import pytest

from twisted_mesh import flags
from twisted_mesh._frames import WireMessage
from twisted_mesh._serial import pack
from twisted_mesh._signing import Signer, Verifier
from twisted_mesh.keys import NodeKey

KEY = NodeKey.generate()
OTHER = NodeKey.generate()


def received(msg: WireMessage, sender_is_bin: bool = True) -> WireMessage:
    """``msg`` as a peer reads it off the wire, its sender in the given form."""
    return WireMessage.from_body(msg.body_in(sender_is_bin), ())


def from_fields(fields: list[Any]) -> WireMessage:
    """A message of these fields as they are (sender as bin), with a good checksum."""
    serial = pack(fields)
    return WireMessage.from_body(sha256(serial).digest() + serial, ())


@pytest.mark.parametrize("sender_is_bin", [True, False], ids=["bin", "str"])
def test_a_signed_message_holds_in_either_sender_form(sender_is_bin: bool) -> None:
    msg = Signer(KEY, "mesh").create(flags.broadcast, 1000, (flags.broadcast, "hello", b"\x00"))
    assert msg.sender == KEY.node_id and msg.payload == (flags.broadcast, "hello", b"\x00")
    read = received(msg, sender_is_bin)
    assert read.key == msg.key
    assert Verifier("mesh").check(read) is None
    assert read.payload == (flags.broadcast, "hello", b"\x00")


def test_a_signature_is_for_its_subnet_only() -> None:
    msg = Signer(KEY, "mesh").create(flags.whisper, 1000, (flags.whisper, "hi"))
    assert Verifier("another").check(received(msg)) == "bad_signature"


def test_an_altered_packet_breaks_the_signature() -> None:
    msg = Signer(KEY, "mesh").create(flags.broadcast, 1000, (flags.broadcast, "pay 10"))
    fields = [flags.broadcast, KEY.node_id.encode(), 1000, flags.broadcast, "pay 99", *received(msg).payload[-2:]]
    altered = from_fields(fields)
    assert altered.key != msg.key
    assert Verifier("mesh").check(altered) == "bad_signature"


def test_an_altered_time_breaks_the_signature() -> None:
    msg = Signer(KEY, "mesh").create(flags.broadcast, 1000, (flags.broadcast, "x"))
    fields = [flags.broadcast, KEY.node_id.encode(), 1001, flags.broadcast, "x", *received(msg).payload[-2:]]
    assert Verifier("mesh").check(from_fields(fields)) == "bad_signature"


def test_a_message_signed_with_a_key_not_the_senders_is_refused() -> None:
    # OTHER signs a message that says it is KEY's.
    msg = Signer(OTHER, "mesh").create(flags.broadcast, 1000, (flags.broadcast, "x"))
    public_key, signature = received(msg).payload[-2:]
    forged = from_fields([flags.broadcast, KEY.node_id.encode(), 1000, flags.broadcast, "x", public_key, signature])
    assert Verifier("mesh").check(forged) == "wrong_key"


@pytest.mark.parametrize(
    "tail",
    [
        (flags.broadcast,),
        ("x", "y"),
        (b"k" * 32,),
        (b"k" * 31, b"s" * 64),
        (b"k" * 32, b"s" * 63),
        ("k" * 32, b"s" * 64),
    ],
    ids=["subflag-only", "two-packets", "key-only", "short-key", "short-signature", "key-as-str"],
)
def test_a_message_without_its_key_and_signature_is_unsigned(tail: tuple[Any, ...]) -> None:
    msg = from_fields([flags.broadcast, KEY.node_id.encode(), 1000, *tail])
    assert Verifier("mesh").check(msg) == "unsigned"


def test_a_signature_written_in_a_longer_form_is_unsigned() -> None:
    msg = Signer(KEY, "mesh").create(flags.broadcast, 1000, (flags.broadcast, "x"))
    serial = received(msg).body_in(True)[32:]
    # The signature as bin 16 (c5 00 40) in place of bin 8 (c4 40): the
    # same fields, other bytes.
    serial = serial[:-66] + b"\xc5\x00\x40" + serial[-64:]
    read = WireMessage.from_body(sha256(serial).digest() + serial, ())
    assert read.payload[-1] == received(msg).payload[-1]
    assert Verifier("mesh").check(read) == "unsigned"


def test_a_signed_message_is_signed_once() -> None:
    calls = []

    class CountingKey:
        node_id, public_key = KEY.node_id, KEY.public_key

        def sign(self, data: bytes) -> bytes:
            calls.append(data)
            return KEY.sign(data)

    msg = Signer(CountingKey(), "mesh").create(flags.broadcast, 1000, (flags.broadcast, "x"))  # type: ignore[arg-type]
    for sender_is_bin in (True, False):
        for code in (None, flags.zlib):
            msg.frame(sender_is_bin, code)
    assert len(calls) == 1
