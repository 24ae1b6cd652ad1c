"""
The errors a caller of twisted_mesh may see.
"""


class MeshError(Exception):
    """The base class of twisted_mesh's errors."""


class ProtocolMismatch(MeshError):
    """
    The peer belongs to another network: its protocol ID (subnet,
    transport, signed or not) is not ours, so the connection was closed.

    :ivar note: what is known of the peer's network, if anything (for
        instance, that it is the unsigned network of our signed subnet).
    """

    def __init__(self, ours: str, theirs: str, note: str = "") -> None:
        text = f"the peer speaks protocol {theirs}, not ours ({ours})"
        super().__init__(f"{text}: {note}" if note else text)
        self.ours = ours
        self.theirs = theirs
        self.note = note


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
