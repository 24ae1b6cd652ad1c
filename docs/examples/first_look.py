"""A first look: two nodes, a broadcast and its reply."""

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime

from twisted_mesh import MeshSocket


async def main(reactor: IReactorTime) -> None:
    alice = MeshSocket("127.0.0.1", 0)  # port 0: any free port
    bob = MeshSocket("127.0.0.1", 0)
    await bob.connect("127.0.0.1", alice.out_addr[1])

    bob.send("this is", "a test")  # a broadcast, to the whole mesh
    msg = await alice.next_message()
    print(msg.packets)
    msg.reply("yes", "I did")  # a whisper, back to Bob
    print((await bob.next_message()).packets)

    await alice.close()
    await bob.close()


task.react(main)
