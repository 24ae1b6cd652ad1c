"""
`.NodeContext`: what every part of a node shares.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from twisted_mesh._signing import Signer
from twisted_mesh._stats import NodeLog, NodeStats
from twisted_mesh.limits import Limits


@dataclass(frozen=True, slots=True)
class NodeContext:
    """
    A node's ID, clock, limits, counters and log, which its parts share.

    :ivar id: the node's ID.
    :ivar clock: where the node reads the time and schedules timeouts.
    :ivar limits: what the node accepts and holds.
    :ivar stats: counters of what the node and its links did.
    :ivar log: the limits that bit and the malformed messages dropped.
    :ivar signer: on a signed network, what makes the node's messages.
    """

    id: str
    clock: IReactorTime
    limits: Limits
    stats: NodeStats
    log: NodeLog
    signer: Signer | None = None
