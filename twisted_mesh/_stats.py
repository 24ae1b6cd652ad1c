"""
Counters of what a node and each of its links did, for /status and /metrics.
"""

from __future__ import annotations

from collections import Counter


class LinkStats:
    """What crossed one link."""

    __slots__ = ("frames_in", "frames_out", "bytes_in", "bytes_out")

    def __init__(self) -> None:
        self.frames_in = 0
        self.frames_out = 0
        self.bytes_in = 0
        self.bytes_out = 0


class NodeStats(LinkStats):
    """
    What crossed all of a node's links, and what the node did with it.

    :ivar relayed: frames written to relay a broadcast to a peer.
    :ivar delivered: messages for the user: offered to the handlers, then
        queued.
    :ivar dropped: frames or messages dropped, by reason.
    :ivar connections: connections made, by direction (``in``, ``out``).
    :ivar handshake_failures: handshakes that failed, by reason.
    :ivar limit_hits: times each limit bit, by limit.
    :ivar failed_dials: dials the node made on its own (to its bootstrap
        peers, its past peers, and the peers peer exchange told of) that
        failed.
    :ivar trimmed: links closed because the node had more peers that
        dialled it than it keeps (see `.twisted_mesh.MeshService`'s
        ``max_incoming``).
    """

    __slots__ = (
        "relayed",
        "delivered",
        "dropped",
        "connections",
        "handshake_failures",
        "limit_hits",
        "failed_dials",
        "trimmed",
    )

    def __init__(self) -> None:
        super().__init__()
        self.relayed = 0
        self.delivered = 0
        self.dropped: Counter[str] = Counter()
        self.connections: Counter[str] = Counter()
        self.handshake_failures: Counter[str] = Counter()
        self.limit_hits: Counter[str] = Counter()
        self.failed_dials = 0
        self.trimmed = 0
