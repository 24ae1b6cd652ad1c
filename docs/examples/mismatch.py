"""
A peer of another network is refused, and both nodes say why: the dialler's
connect() fails with ProtocolMismatch, and each node logs the reason.
"""

import sys

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.python.failure import Failure

from twisted_mesh import MeshSocket, Network, ProtocolMismatch


def main(reactor: IReactorTime) -> defer.Deferred[list[None]]:
    log = textFileLogObserver(sys.stdout)
    globalLogBeginner.beginLoggingTo([log], redirectStandardIO=False)
    ours = MeshSocket("127.0.0.1", 0, prot=Network("chat", "Plaintext"))
    theirs = MeshSocket("127.0.0.1", 0, prot=Network("chat2", "Plaintext"))

    def refused(failure: Failure) -> None:
        failure.trap(ProtocolMismatch)
        print("connect() failed:", failure.value)
        print("routing table empty:", not ours.routing_table)

    d = ours.connect("127.0.0.1", theirs.out_addr[1])
    checked = d.addCallbacks(lambda peer_id: print("unexpected peer", peer_id), refused)
    return checked.addBoth(lambda _: defer.gatherResults([ours.close(), theirs.close()]))


task.react(main)
