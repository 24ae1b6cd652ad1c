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


class NotMeshPeer(HandshakeFailed):
    """
    The other side did not speak the mesh protocol: what it sent first
    cannot start a mesh connection (a server's greeting, say), or it sent
    nothing of the mesh protocol within the handshake's time (an HTTP
    server, which waits for a request), so the connection was closed.

    :ivar first_bytes: the first bytes it sent (up to 32).
    """

    def __init__(self, first_bytes: bytes, why: str) -> None:
        sent = f"it sent {first_bytes!r}" if first_bytes else "it sent nothing"
        super().__init__(f"the peer did not speak the mesh protocol: {sent} ({why})")
        self.first_bytes = first_bytes


class MeshClosed(MeshError):
    """
    The node is not running: it was closed (or its service stopped), or its
    service has not started.  Raised by ``send()``, ``reply()`` and
    ``connect()``, and the error of a ``next_message()`` that was waiting
    when the node closed.
    """


class SelfConnection(HandshakeFailed):
    """The address dialled is this node's own."""
