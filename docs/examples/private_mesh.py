"""
A private, authenticated mesh: node keys kept in files, a signed network
over TLS, and an allow-list.  A stranger with a key of its own is turned
away, and so is a node of the unsigned network (py2p, js2p).
"""

import tempfile
from pathlib import Path

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from twisted_mesh import HandshakeFailed, MeshSocket, Network, NodeKey, ProtocolMismatch

TEAM = Network("team", "SSL", signed=True)


async def main(reactor: IReactorTime) -> None:
    with tempfile.TemporaryDirectory() as folder:
        # Each member's key, made once and kept (mode 0600): its ID is the key's.
        keys = {name: NodeKey.load_or_create(Path(folder) / f"{name}.pem")[0] for name in ("alice", "bob")}
        again, made = NodeKey.load_or_create(Path(folder) / "alice.pem")
        print("alice's key read back:", "same ID" if again.node_id == keys["alice"].node_id else "another ID")
        members = [key.node_id for key in keys.values()]

        alice = MeshSocket("127.0.0.1", 0, TEAM, key=keys["alice"], allow=members)
        bob = MeshSocket("127.0.0.1", 0, TEAM, key=keys["bob"], allow=members)
        await bob.connect("127.0.0.1", alice.out_addr[1])
        alice.send("hello, team")
        msg = await bob.next_message()
        print("bob got", msg.packets, "from", "alice" if msg.sender == keys["alice"].node_id else "someone else")

        # A signed node whose ID is not on the list.
        mallory = MeshSocket("127.0.0.1", 0, TEAM)
        try:
            await mallory.connect("127.0.0.1", alice.out_addr[1])
        except HandshakeFailed:
            print("mallory was refused")
        # A node of the same subnet that does not sign.
        plain = MeshSocket("127.0.0.1", 0, Network("team", "SSL"))
        try:
            await plain.connect("127.0.0.1", alice.out_addr[1])
        except ProtocolMismatch:
            print("an unsigned node is on another network")
        print("alice refused:", dict(sorted(alice.status()["handshake_failures"].items())))

        for sock in (alice, bob, mallory, plain):
            await sock.close()


task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
