"""
Handlers: Alice answers Bob's pings herself, with a handler, and only his
other messages reach her queue.
"""

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from twisted_mesh import Connection, MeshSocket, Message, flags

# An application's own sub-flag: 0x00-0x2F are the protocol's.
PING = 0x30
assert PING not in flags.reserved


def answer_pings(msg: Message, conn: Connection) -> bool:
    """Reply to pings, and take them: they are not queued."""
    if msg.packets[0] == PING:
        msg.reply("pong", *msg.packets[1:])
        return True
    return False


def main(reactor: IReactorTime) -> defer.Deferred[None]:
    alice = MeshSocket("127.0.0.1", 0)
    bob = MeshSocket("127.0.0.1", 0)
    done: defer.Deferred[None] = defer.Deferred()

    def log(msg: Message, conn: Connection) -> None:
        # conn is the connection the message came over, from a peer of
        # Alice's (for a relayed broadcast, not the node that sent it).
        print("seen from peer", conn.peer_id == bob.id)

    alice.register_handler(log)  # returns None: the message goes on
    alice.register_handler(answer_pings)

    def queued(sock: MeshSocket) -> None:
        msg = sock.recv()
        assert msg is not None  # 'message' comes once a message is queued
        print("Alice's queue got", msg.packets)

    alice.on("message", queued)

    def bob_got_mail(sock: MeshSocket) -> None:
        msg = sock.recv()
        assert msg is not None
        print("Bob got", msg.packets)
        done.callback(None)

    bob.on("message", bob_got_mail)

    def connected(peer_id: str) -> None:
        bob.send("just saying")
        bob.send(1, type=PING)

    d = bob.connect("127.0.0.1", alice.out_addr[1])
    d.addCallbacks(connected, done.errback)

    def close(result: object) -> defer.Deferred[object]:
        closed = defer.gatherResults([alice.close(), bob.close()])
        return closed.addCallback(lambda _: result)

    return done.addTimeout(30, reactor).addBoth(close)


task.react(main)
