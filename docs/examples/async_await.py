"""
async/await: the Deferreds of connect() and next_message() awaited in a
coroutine, with a timeout and the error of a peer of another network.
"""

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from twisted_mesh import MeshSocket, Network, ProtocolMismatch


async def main(reactor: IReactorTime) -> None:
    alice = MeshSocket("127.0.0.1", 0)
    bob = MeshSocket("127.0.0.1", 0)
    stranger = MeshSocket("127.0.0.1", 0, prot=Network("another subnet", "Plaintext"))
    try:
        peer_id = await bob.connect("127.0.0.1", alice.out_addr[1])
        print("Bob's peer is Alice:", peer_id == alice.id)

        bob.send("this is", "a test")
        msg = await alice.next_message()
        print("Alice got", msg.packets)
        msg.reply("yes", "I did")
        answer = await bob.next_message().addTimeout(10, reactor)
        print("Bob got", answer.packets)

        # Nothing more comes: the timeout cancels the wait.
        try:
            await bob.next_message().addTimeout(0.5, reactor)
        except defer.TimeoutError:
            print("no more messages")

        # A node of another subnet (or transport) is refused, and told so.
        try:
            await bob.connect("127.0.0.1", stranger.out_addr[1])
        except ProtocolMismatch as e:
            print("refused:", type(e).__name__)
        print("Bob's peers:", len(bob.routing_table))
    finally:
        await defer.gatherResults([alice.close(), bob.close(), stranger.close()])


task.react(main)
