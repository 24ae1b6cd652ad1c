"""
A node inside an asyncio program: Twisted's reactor runs on the asyncio
event loop, and asyncio's coroutines await the node's Deferreds as futures.
"""

import asyncio

from twisted.internet import asyncioreactor

# First of all, before anything imports the reactor: Twisted on this loop.
loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
asyncioreactor.install(loop)

from twisted_mesh import MeshSocket, Message  # noqa: E402


async def echo(sock: MeshSocket) -> None:
    """Answer every message, until the node is closed."""
    async for msg in sock.messages():
        print("Alice got", msg.packets)
        msg.reply("got it", msg.packets[1])
    print("Alice is closed: no more messages")


async def main() -> None:
    async with MeshSocket("127.0.0.1", 0) as alice:
        async with MeshSocket("127.0.0.1", 0) as bob:
            echoing = asyncio.create_task(echo(alice))
            peer_id = await bob.connect("127.0.0.1", alice.out_addr[1]).asFuture(loop)
            print("Bob's peer is Alice:", peer_id == alice.id)
            for word in ("one", "two"):
                bob.send(word)
                answer: Message = await asyncio.wait_for(bob.next_message().asFuture(loop), timeout=10)
                print("Bob got", answer.packets)
    await echoing


loop.run_until_complete(main())
loop.close()
