"""
Basic usage: two nodes on this machine.  Bob dials Alice and broadcasts;
Alice receives the message and replies; Bob receives the reply.  Then both
close and the program ends.
"""

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from twisted_mesh import MeshSocket, Network, flags


def main(reactor: IReactorTime) -> defer.Deferred[None]:
    mesh = Network("mesh", "Plaintext")
    # Port 0: the system picks a free port; out_addr says which.
    alice = MeshSocket("127.0.0.1", 0, prot=mesh)
    bob = MeshSocket("127.0.0.1", 0, prot=mesh)
    done: defer.Deferred[None] = defer.Deferred()

    def alice_got_mail(sock: MeshSocket) -> None:
        msg = sock.recv()  # the oldest message, or None
        assert msg is not None
        print("Alice got", msg.packets)
        print("sent by Bob:", msg.sender == bob.id)
        msg.reply("yes", "I did")

    def bob_got_mail(sock: MeshSocket) -> None:
        msg = sock.recv()
        assert msg is not None
        print("Bob got", msg.packets)
        print("a whisper:", msg.packets[0] == flags.whisper)
        done.callback(None)

    alice.on("message", alice_got_mail)
    bob.on("message", bob_got_mail)

    def connected(peer_id: str) -> None:
        print("Bob's peer is Alice:", peer_id == alice.id)
        print("Bob has peers:", bool(bob.routing_table))
        bob.send("this is", "a test")

    d = bob.connect("127.0.0.1", alice.out_addr[1])
    d.addCallbacks(connected, done.errback)

    def close(result: object) -> defer.Deferred[object]:
        closed = defer.gatherResults([alice.close(), bob.close()])
        return closed.addCallback(lambda _: result)

    return done.addTimeout(30, reactor).addBoth(close)


task.react(main)
