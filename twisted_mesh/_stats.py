"""
Counters of what a node and each of its links did, for /status and /metrics,
and the log of limits that bit and of malformed messages.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.interfaces import IReactorTime

from twisted_mesh._logs import NODE, LoggedID, NodeLogger, logged

#: The least seconds between two log lines about one limit.
LIMIT_LOG_INTERVAL = 10.0


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
    :ivar pruned: links the node pruned, for they brought broadcasts it had
        already (see `.twisted_mesh._core.tree`).
    :ivar announced: keys of broadcasts announced to pruned links.
    :ivar grafted: broadcasts asked for, once announced, of the peers that
        announced them.
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
        "pruned",
        "announced",
        "grafted",
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
        self.pruned = 0
        self.announced = 0
        self.grafted = 0


class NodeLog:
    """
    What a node met that is worth a log line: the limits that bit (counted
    in `.NodeStats.limit_hits`) and the malformed messages it dropped.

    :param stats: where they are counted.
    :param clock: where the time between two log lines is read.
    :param node_id: the node's ID, which each line carries.
    """

    def __init__(self, stats: NodeStats, clock: IReactorTime, node_id: str) -> None:
        self._log = NodeLogger(NODE, node_id, self)
        self._stats = stats
        self._clock = clock
        self._logged: dict[str, float] = {}

    def hit(self, limit: str, text: str, *, warn: bool = True, **fields: Any) -> None:
        """
        Count a limit that bit, and log it (as a warning, or as information
        for one that bites in the node's normal work): the first time, then
        at most once every `.LIMIT_LOG_INTERVAL` seconds per limit.
        """
        self._stats.limit_hits[limit] += 1
        now = self._clock.seconds()
        if now - self._logged.get(limit, -LIMIT_LOG_INTERVAL) >= LIMIT_LOG_INTERVAL:
            self._logged[limit] = now
            count = self._stats.limit_hits[limit]
            log = self._log.warn if warn else self._log.info
            log("limit {limit} ({count} so far): " + text, limit=limit, count=count, **fields)

    def unverified(self, peer: str | None, sender: str, reason: str) -> None:
        """
        Count a message whose signature failed (see `.Verifier.check`) under
        ``reason``, and log it: the first time, then at most once every
        `.LIMIT_LOG_INTERVAL` seconds per reason.
        """
        self._stats.dropped[reason] += 1
        now = self._clock.seconds()
        if now - self._logged.get(reason, -LIMIT_LOG_INTERVAL) >= LIMIT_LOG_INTERVAL:
            self._logged[reason] = now
            self._log.warn(
                "dropped a message from {peer} that says it is {sender}'s: {reason} ({count} so far)",
                peer=logged(peer),
                sender=LoggedID(sender),
                reason=reason,
                count=self._stats.dropped[reason],
            )

    def malformed(self, peer: str | None, what: str) -> None:
        """Count and log a malformed message, ``what``, from ``peer``, which is dropped."""
        self._stats.dropped["malformed"] += 1
        self._log.warn("dropped a malformed {what} from {peer}", what=what, peer=logged(peer))
