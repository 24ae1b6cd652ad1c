"""
Events: 'connect' when a node gets its first peer, 'message' for each
message queued, 'disconnect' when it loses its last peer; on() for every
time, once() for the next time only.
"""

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from twisted_mesh import MeshSocket


def main(reactor: IReactorTime) -> defer.Deferred[object]:
    alice = MeshSocket("127.0.0.1", 0)
    bob = MeshSocket("127.0.0.1", 0)
    done: defer.Deferred[str] = defer.Deferred()

    # Each callback is given the socket whose event it is.
    alice.on("connect", lambda sock: print("Alice has her first peer"))
    alice.once("message", lambda sock: print("Alice's first message is here"))

    def every_message(sock: MeshSocket) -> None:
        msg = sock.recv()
        assert msg is not None
        print("Alice got", msg.packets)
        if msg.packets[-1] == "bye":
            bob.close()

    alice.on("message", every_message)
    alice.on("disconnect", lambda sock: done.callback("Alice has no peers left"))

    def connected(peer_id: str) -> None:
        for text in ("hello", "how are you", "bye"):
            bob.send(text)

    d = bob.connect("127.0.0.1", alice.out_addr[1])
    d.addCallbacks(connected, done.errback)
    done.addCallback(print)

    def close(result: object) -> defer.Deferred[object]:
        return alice.close().addCallback(lambda _: result)

    return done.addTimeout(30, reactor).addBoth(close)


task.react(main)
