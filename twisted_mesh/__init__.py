"""
twisted_mesh: the p2p-today mesh socket on Twisted.

A node of a mesh network that speaks the wire protocol of py2p and js2p
(p2p-today 0.7) and meshes with both::

    from twisted_mesh import MeshSocket
    sock = MeshSocket('0.0.0.0', 4444)
"""

from twisted_mesh import flags
from twisted_mesh._ids import Network, Protocol
from twisted_mesh.errors import HandshakeFailed, MeshClosed, MeshError, ProtocolMismatch
from twisted_mesh.keys import NodeKey
from twisted_mesh.limits import Limits
from twisted_mesh.message import Connection, Message, SendResult
from twisted_mesh.service import MeshService
from twisted_mesh.socket import MeshSocket

__version__ = "0.1.0"

__all__ = [
    "Connection",
    "HandshakeFailed",
    "MeshClosed",
    "Limits",
    "MeshError",
    "MeshService",
    "MeshSocket",
    "Message",
    "Network",
    "NodeKey",
    "Protocol",
    "ProtocolMismatch",
    "SendResult",
    "flags",
]
