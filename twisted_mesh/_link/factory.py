"""
The factory of a node's links: one for each transport and direction, all
sharing the node's set of links and its `.WriteBatch`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory

from twisted_mesh._core.node import MeshNode
from twisted_mesh._link.protocol import LinkProtocol
from twisted_mesh._link.writer import WriteBatch
from twisted_mesh._logs import LoggedID


class LinkFactory(Factory):
    """
    Builds a `.LinkProtocol` for each connection made or accepted.

    :ivar connections: every live link of this node (shared by the node's
        listening and dialling factories).
    :ivar encryption: the transport of the links it builds (by default the
        node's main one).
    :ivar batch: the links written to while one of them handles a read
        (shared by the node's factories, so that a frame relayed from a
        link of one to a link of another is written with the read's other
        frames).
    """

    noisy = False

    def __init__(
        self,
        node: MeshNode,
        outgoing: bool,
        connections: set[LinkProtocol],
        encryption: str | None = None,
        *,
        batch: WriteBatch | None = None,
    ) -> None:
        self.node = node
        self.outgoing = outgoing
        self.encryption = encryption or node.protocol.encryption
        self.connections = connections
        self.batch = batch if batch is not None else WriteBatch(node.clock)

    def logPrefix(self) -> str:
        # Twisted's "... starting on 4444" as a port opens.
        return f"node {LoggedID(self.node.id)} links"

    def buildProtocol(self, addr: Any) -> LinkProtocol:
        return LinkProtocol(self)
