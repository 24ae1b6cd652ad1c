"""
A user's program, typed: it uses twisted_mesh's API as its docs show it, and
``mypy --strict`` (``tox -e mypy``, with tests/typed/mypy.ini) checks it
against twisted_mesh's annotations.  ``assert_type`` holds what each call is
typed as; a ``type: ignore`` marks a call that must stay a type error (an
ignore that is no longer needed fails the check).  It runs, too:
tests/integration/test_api.py runs it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from typing_extensions import assert_type

from twisted_mesh import Connection, Limits, MeshService, MeshSocket, Message, Network, SendResult
from twisted_mesh.message import Messages

MESH = Network("typed", "Plaintext")


def handler(msg: Message, conn: Connection) -> bool:
    """A handler sees the connection's documented attributes."""
    assert_type(conn.peer_id, "str | None")
    assert_type(conn.peer_addr, "tuple[str, int] | None")
    assert_type(conn.outgoing, bool)
    assert_type(conn.encryption, str)
    assert_type(conn.closing, bool)
    return bool(msg.packets[1] == "handled")


def mistakes(sock: MeshSocket) -> None:
    """What the types refuse (never called)."""
    sock.on("mesage", print)  # type: ignore[arg-type]
    print(sock.recv().packets)  # type: ignore[union-attr]
    print(sock.recv(2).packets)  # type: ignore[attr-defined]
    Network("mesh", "Plaintext", "yes")  # type: ignore[arg-type]


async def main(reactor: IReactorTime) -> None:
    async with MeshSocket("127.0.0.1", 0, MESH, limits=Limits(max_queue=100)) as alice:
        bob = MeshService(MESH, listen=["tcp:0:interface=127.0.0.1"])
        async with bob:
            alice.register_handler(handler)
            alice.on("connect", lambda sock: assert_type(sock, MeshSocket))
            alice.once("message", lambda sock: print("a message for", type(sock).__name__))
            read_from_a_file: Any = "mesage"  # a name the types cannot see
            try:
                alice.on(read_from_a_file, print)
            except ValueError as e:
                print("refused:", e)

            peer_id = await bob.connect(f"127.0.0.1:{alice.out_addr[1]}")
            assert_type(peer_id, str)
            sent = bob.send("handled")
            assert_type(sent, SendResult)
            bob.send("hello", "typed")
            msg = await alice.next_message()
            assert_type(msg, Message)
            answer = msg.reply("yes")
            assert_type(answer, SendResult)
            print("alice got", msg.packets, "and replied to", len(answer.queued), "peer")

            reply = await bob.next_message()
            print("bob got", reply.packets)
            one = bob.recv()
            assert_type(one, "Message | None")
            many = bob.recv(10)
            assert_type(many, "list[Message]")
            print("nothing more:", one is None and many == [])

            link = alice.routing_table[bob.id]
            assert_type(link, Connection)
            assert_type(bob.messages(), Messages)
            await alice.disconnect(link)
    async for late in alice.messages():
        assert_type(late, Message)
    print("closed:", not alice.running and not bob.running)


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
