"""
The user's face of a node on loopback: the types its calls give (the
`.Connection` a handler sees, the results of ``reply()``), its events, its
context managers and ``async for``, and its arguments checked at the door.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.support import MeshNodes, wait_for, within
from twisted_mesh import Connection, Message, SendResult

# -- types ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_handler_gets_a_connection(mesh: MeshNodes) -> None:
    """A handler's second argument is a `.Connection`, with the peer's ID and address and the link's direction."""
    a, b = await mesh.line(2)  # b dials a
    seen: list[Connection] = []

    def handler(msg: Message, conn: Connection) -> bool:
        seen.append(conn)
        return True

    b.register_handler(handler)
    a.send("hello")
    await wait_for(lambda: seen)
    conn = seen[0]
    assert isinstance(conn, Connection)
    assert (conn.peer_id, conn.peer_addr, conn.outgoing, conn.encryption, conn.closing) == (
        a.id,
        a.out_addr,
        True,
        "Plaintext",
        False,
    )
    assert b.routing_table[a.id] is conn
    await within(b.disconnect(conn))
    assert conn.closing


@pytest_twisted.ensureDeferred
async def test_reply_returns_a_send_result(mesh: MeshNodes) -> None:
    """reply() says where the reply went, as send() does."""
    a, b = await mesh.line(2)
    sent = a.send("ping")
    assert isinstance(sent, SendResult) and sent.queued == [b.id]
    msg = await within(b.next_message())
    answer = msg.reply("pong")
    assert isinstance(answer, SendResult) and answer.queued == [a.id] and not answer.pending
    assert (await within(a.next_message())).packets == (2, "pong")


@pytest.mark.parametrize("register", ["on", "once"])
def test_an_unknown_event_is_refused(mesh: MeshNodes, register: str) -> None:
    """on("mesage", ...) is a ValueError naming the events, not a callback never called."""
    sock: Any = mesh()
    with pytest.raises(ValueError, match="the events are 'connect', 'disconnect', 'message'"):
        getattr(sock, register)("mesage", lambda s: None)
