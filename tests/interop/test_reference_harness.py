"""The reference-node harness itself: py2p and js2p nodes meshing with their own kind.

These use no twisted_mesh code; they show that tests/reference drives the references.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.reference import ENCRYPTIONS, ReferenceNode, ReferenceNodeError

Factory = Callable[..., Awaitable[ReferenceNode]]

TRANSPORTS = [(kind, enc) for kind, encs in ENCRYPTIONS.items() for enc in encs]
PACKETS = ("hello", b"\x00raw\xff", 5, -7, [1, "x", b"y"], {"k": b"v"})
EXPECTED = [0, "hello", b"\x00raw\xff", 5, -7, [1, "x", b"y"], {"k": b"v"}]


async def pair(reference: Factory, kind: str, encryption: str) -> tuple[ReferenceNode, ...]:
    """Two nodes of one kind, the second dialled into the first, both with their peer."""
    a = await reference(kind, encryption=encryption)
    b = await reference(kind, encryption=encryption)
    assert await b.connect("127.0.0.1", a.port)
    assert await a.wait_for_peers(1) == [b.id]
    assert await b.wait_for_peers(1) == [a.id]
    return a, b


@pytest.mark.parametrize(("kind", "encryption"), TRANSPORTS)
@pytest_twisted.ensureDeferred
async def test_broadcast_crosses(reference: Factory, kind: str, encryption: str) -> None:
    a, b = await pair(reference, kind, encryption)
    assert a.id != b.id and len(a.id) > 40 and a.id.isalnum()
    await a.send(*PACKETS)
    msg = await b.next_message()
    assert msg["packets"] == EXPECTED
    assert msg["sender"] == a.id
    # py2p writes IDs as msgpack bin, js2p as str.
    id_type = bytes if kind == "py2p" else str
    assert type(msg["raw_sender"]) is id_type
    assert [type(key) for key in await b.routing_table()] == [id_type]
    assert len(bytes.fromhex(msg["id"])) == 32
    b.send("back", 1)
    assert (await a.next_message())["packets"] == [0, "back", 1]


@pytest.mark.parametrize("kind", ENCRYPTIONS)
@pytest_twisted.ensureDeferred
async def test_messages_arrive_in_order(reference: Factory, kind: str) -> None:
    a, b = await pair(reference, kind, "Plaintext")
    for i in range(20):
        a.send("n", i)
        # Spaced out: py2p's frame reader can break on a burst (see PROTOCOL.md).
        await deferLater(reactor, 0.02, lambda: None)
    got = [(await b.next_message())["packets"] for _ in range(20)]
    assert got == [[0, "n", i] for i in range(20)]
    assert b.pending_messages() == 0


@pytest.mark.parametrize("kind", ENCRYPTIONS)
@pytest_twisted.ensureDeferred
async def test_reply(reference: Factory, kind: str) -> None:
    a, b = await pair(reference, kind, "Plaintext")
    a.send("question")
    question = await b.next_message()
    await b.reply("answer", b"\x01")
    answer = await a.next_message()
    assert answer["packets"] == [2, "answer", b"\x01"]
    assert answer["sender"] == b.id
    assert question["sender"] == a.id


@pytest.mark.parametrize("kind", ENCRYPTIONS)
@pytest_twisted.ensureDeferred
async def test_relay_through_middle_node(reference: Factory, kind: str) -> None:
    a, b = await pair(reference, kind, "Plaintext")
    c = await reference(kind)
    await c.connect("127.0.0.1", b.port)
    await c.wait_for_peers(1)
    await b.wait_for_peers(2)
    a.send("relayed")
    msg = await c.next_message()
    assert msg["packets"] == [0, "relayed"]
    assert msg["sender"] == a.id


@pytest.mark.parametrize("kind", ENCRYPTIONS)
@pytest_twisted.ensureDeferred
async def test_failed_dial_raises(reference: Factory, kind: str) -> None:
    a = await reference(kind)
    b = await reference(kind)
    port = b.port
    await b.stop()
    with pytest.raises(ReferenceNodeError):
        await a.connect("127.0.0.1", port)
    assert await a.peers() == []


def gone(pid: int) -> bool:
    """Whether no process ``pid`` exists (Twisted reaps its children)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("kind", ENCRYPTIONS)
@pytest_twisted.ensureDeferred
async def test_stop_leaves_no_process(reference: Factory, kind: str) -> None:
    a, b = await pair(reference, kind, "Plaintext")
    pid = a.pid
    assert pid is not None and not gone(pid)
    await a.stop()
    assert not a.running and gone(pid)
    await a.stop()  # again: nothing to do
    with pytest.raises(ReferenceNodeError):
        await a.peers()
    for _ in range(300):  # b notices that a is gone
        if await b.peers() == []:
            break
        await deferLater(reactor, 0.1, lambda: None)
    assert await b.peers() == []


@pytest.mark.parametrize("kind", ENCRYPTIONS)
@pytest_twisted.ensureDeferred
async def test_child_exits_when_stdin_closes(reference: Factory, kind: str) -> None:
    node = await reference(kind)
    pid = node.pid
    assert pid is not None
    node._protocol.close_stdin()
    await node._protocol.when_ended()
    assert not node.running and gone(pid)
