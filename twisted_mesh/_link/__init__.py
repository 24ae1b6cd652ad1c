"""
The link: one connection to a peer, over any stream transport.

- `.handshake`: the handshake and what is negotiated with the peer (pure);
- `.writer`: write batching and back-pressure;
- `.protocol`: `.LinkProtocol`, the `.Link` the node sees;
- `.factory`: `.LinkFactory`, which builds them;
- `.tcp`: the socket options of a TCP link.
"""

from twisted_mesh._link.factory import LinkFactory
from twisted_mesh._link.protocol import LinkProtocol
from twisted_mesh._link.writer import WriteBatch

__all__ = ["LinkFactory", "LinkProtocol", "WriteBatch"]
