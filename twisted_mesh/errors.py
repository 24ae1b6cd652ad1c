"""
The errors a caller of twisted_mesh may see.
"""


class MeshError(Exception):
    """The base class of twisted_mesh's errors."""


class ProtocolMismatch(MeshError):
    """
    The peer belongs to another network: its protocol ID (subnet and
    transport) is not ours, so the connection was closed.
    """

    def __init__(self, ours: str, theirs: str) -> None:
        super().__init__(f"the peer speaks protocol {theirs}, not ours ({ours})")
        self.ours = ours
        self.theirs = theirs


class HandshakeFailed(MeshError):
    """The connection closed, or broke a rule, before its handshake ended."""


class MeshClosed(MeshError):
    """
    The node is not running: it was closed (or its service stopped), or its
    service has not started.  Raised by ``send()``, ``reply()`` and
    ``connect()``, and the error of a ``next_message()`` that was waiting
    when the node closed.
    """


class SelfConnection(HandshakeFailed):
    """The address dialled is this node's own."""
