"""
What the node core knows of a connection to a peer: the `.Link` interface,
and the `.Address` a peer may be dialled at.
"""

from __future__ import annotations

from typing import Any
from typing import Protocol as Interface

from twisted_mesh._frames import WireMessage
from twisted_mesh.message import Connection

#: A host and a port to dial.
Address = tuple[str, int]

#: The longest host name an address may have (the longest DNS name).
MAX_HOST_LENGTH = 253


def parse_address(value: object) -> Address | None:
    """
    Read an address field, ``[host, port]``, from the wire.

    :return: the address, or ``None`` when it has the wrong shape, or a host
        longer than `.MAX_HOST_LENGTH`.
    """
    if not isinstance(value, list) or len(value) != 2:
        return None
    host, port = value
    if isinstance(host, bytes) and len(host) <= MAX_HOST_LENGTH:
        host = host.decode("ascii", "replace")
    if not isinstance(host, str) or not 0 < len(host) <= MAX_HOST_LENGTH:
        return None
    if type(port) is not int or not 0 < port < 65536:
        return None
    return host, port


class Link(Connection, Interface):
    """
    What the node needs of a connection to a peer: a `.Connection` that
    it writes to and closes.

    :ivar ids_as_bin: whether the peer writes IDs as bin (else as str).
    :ivar lazy_push: whether the peer said it speaks lazy push (see
        `.twisted_mesh._core.tree`): only a twisted_mesh node does.
    """

    ids_as_bin: bool
    lazy_push: bool

    def dialler_port(self) -> int | None:
        """
        The port the dialling end connected from, which both ends see (the
        dialler as its own, the other end as its peer's), or ``None`` when
        the connection has no ports.
        """

    def send(self, msg: WireMessage) -> str | None:
        """
        Write ``msg`` to the peer, its sender field in the peer's form.

        :return: ``None`` when it was written; else why not.
        """

    def withdraw(self, msg: WireMessage) -> bool:
        """
        The peer has ``msg`` (it sent it): if it was sent to the peer in this
        turn of the reactor and waits to be written, it is not written.

        :return: whether it was withdrawn.
        """

    def renegotiate(self, *payload: Any) -> None:
        """Write a renegotiation word, ``payload``, to the peer."""

    def close(self, reason: str, *, error: bool = True, read_on: bool = False) -> None:
        """
        Close the connection, logging ``reason`` (as a warning if ``error``);
        with ``read_on``, still hand over what the peer sent before it saw
        the close.
        """

    def pause_reading(self) -> None:
        """Stop reading from the peer until `.resume_reading`."""

    def resume_reading(self) -> None:
        """Read from the peer again."""
