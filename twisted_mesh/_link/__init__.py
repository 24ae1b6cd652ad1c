"""
The link: one connection to a peer, over any stream transport.

- `.handshake`: the handshake and what is negotiated with the peer (pure);
- `.negotiation`: one link's side of the handshake and renegotiation;
- `.reader`: frames read, decoded and handed on;
- `.writer`: write batching and back-pressure;
- `.protocol`: `.LinkProtocol`, the `.Link` the node sees, which joins them;
- `.factory`: `.LinkFactory`, which builds them;
- `.tcp`: the socket options of a TCP link.
"""

from twisted_mesh._link.factory import LinkFactory
from twisted_mesh._link.protocol import LinkProtocol
from twisted_mesh._link.writer import WriteBatch

__all__ = ["LinkFactory", "LinkProtocol", "WriteBatch"]
