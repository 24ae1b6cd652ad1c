"""
A producer faster than its peers read: it waits on drained() between
batches, so every message it sends is queued, and arrives.
"""

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from twisted_mesh import MeshSocket

MESSAGES = 20_000
BATCH = 500


async def main(reactor: IReactorTime) -> None:
    alice = MeshSocket("127.0.0.1", 0)
    bob = MeshSocket("127.0.0.1", 0)
    got: list[int] = []
    bob.on("message", lambda sock: got.extend(msg.packets[1] for msg in sock.recv(BATCH)))
    try:
        await bob.connect("127.0.0.1", alice.out_addr[1])
        skipped = 0
        for i in range(MESSAGES):
            result = alice.send(i, b"x" * 1000)
            skipped += len(result.skipped)
            if i % BATCH == BATCH - 1:
                # Wait until no peer has more waiting than its connection buffers.
                await alice.drained()
        while len(got) < MESSAGES:
            await task.deferLater(reactor, 0.01)
        print("Alice sent", MESSAGES, "messages; skipped for a full buffer:", skipped)
        print("Bob got all of them, in order:", got == list(range(MESSAGES)))
    finally:
        await defer.gatherResults([alice.close(), bob.close()])


task.react(main)
