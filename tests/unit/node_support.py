"""
Fakes and helpers for the tests of the node core: fake links and dialers,
a node on a fake clock, and messages as links hand them over.
"""

from __future__ import annotations

import itertools
from typing import Any, cast

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogEvent, Logger

from tests.support import MESH
from twisted_mesh import flags
from twisted_mesh._core.link import Address
from twisted_mesh._core.node import MeshNode
from twisted_mesh._frames import WireMessage
from twisted_mesh._ids import new_node_id
from twisted_mesh.limits import DEFAULT_LIMITS, Limits

OUT_ADDR = ("127.0.0.1", 4444)
START = 1_000_000


class FakeLink:
    """A link that records what the node sends and closes."""

    def __init__(
        self,
        peer_id: str,
        *,
        addr: Address | None = None,
        outgoing: bool = False,
        ids_as_bin: bool = True,
        encryption: str = "Plaintext",
    ) -> None:
        self.peer_id: str | None = peer_id
        self.peer_addr = addr
        self.outgoing = outgoing
        self.ids_as_bin = ids_as_bin
        self.encryption = encryption
        #: Whether the peer speaks lazy push (a twisted_mesh node).
        self.lazy_push = False
        self.sent: list[WireMessage] = []
        #: The renegotiation words written to the peer.
        self.words: list[tuple[Any, ...]] = []
        #: The messages sent that the node withdrew (see `.Link.withdraw`).
        self.withdrawn: list[WireMessage] = []
        self.closes: list[str] = []
        #: Why the link refuses to send, if it does.
        self.refusal: str | None = None
        self.closing = False
        #: The port the dialling end connected from, as both ends see it.
        self.port: int | None = None
        #: Whether the node lets the link read from its peer.
        self.reading = True

    def send(self, msg: WireMessage) -> str | None:
        """Record ``msg``, unless the link refuses it."""
        if self.refusal is None:
            self.sent.append(msg)
        return self.refusal

    def renegotiate(self, *payload: Any) -> None:
        """Record a renegotiation word."""
        self.words.append(payload)

    def withdraw(self, msg: WireMessage) -> bool:
        """Take ``msg`` back from what was sent, if it is there."""
        if msg not in self.sent:
            return False
        self.sent.remove(msg)
        self.withdrawn.append(msg)
        return True

    def close(self, reason: str, *, error: bool = True, read_on: bool = False) -> None:
        """Record that the node closed this link."""
        self.closes.append(reason)
        self.closing = True

    def dialler_port(self) -> int | None:
        """The port the test gave the connection."""
        return self.port

    def pause_reading(self) -> None:
        """Stop reading."""
        self.reading = False

    def resume_reading(self) -> None:
        """Read again."""
        self.reading = True

    def take(self) -> list[WireMessage]:
        """What was sent since the last call."""
        sent, self.sent = self.sent, []
        return sent

    def __repr__(self) -> str:
        return f"<FakeLink {self.peer_id and self.peer_id[:6]}>"


class FakeDialer:
    """A dialer whose Deferreds the test fires."""

    def __init__(self) -> None:
        self.calls: list[Address] = []
        self.transports: list[str] = []
        self.pending: dict[Address, Deferred[str]] = {}

    def __call__(self, host: str, port: int, encryption: str) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        self.calls.append((host, port))
        self.transports.append(encryption)
        self.pending[host, port] = d
        return d


def make_node(
    *, node_id: str | None = None, max_outgoing: int = 4, limits: Limits = DEFAULT_LIMITS
) -> tuple[MeshNode, task.Clock, FakeDialer]:
    """A node on a fake clock, with a fake dialer."""
    clock = task.Clock()
    clock.advance(START)
    node = MeshNode(MESH, clock, out_addr=OUT_ADDR, node_id=node_id, max_outgoing=max_outgoing, limits=limits)
    dialer = FakeDialer()
    node.dialer = dialer
    return node, clock, dialer


_ports = itertools.count(20001)


def next_port() -> int:
    """A port no fake link of these tests had."""
    return next(_ports)


def add_link(
    node: MeshNode, *, outgoing: bool = False, ids_as_bin: bool = True, peer_id: str | None = None
) -> FakeLink:
    """A new peer entered through link_ready; what it was sent is cleared."""
    link = FakeLink(
        peer_id or new_node_id(MESH), addr=("10.0.0.1", next_port()), outgoing=outgoing, ids_as_bin=ids_as_bin
    )
    assert node.link_ready(link)
    link.take()
    return link


def arriving(
    msg_type: int, sender: str, payload: tuple[Any, ...], *, time: int = START, as_bin: bool = True
) -> WireMessage:
    """A message as a link hands it over: decoded from the bytes of a frame."""
    made = WireMessage.create(msg_type, sender, time, payload, as_bin)
    return WireMessage.from_body(made.body_in(as_bin), ())


def again(msg: WireMessage, as_bin: bool) -> WireMessage:
    """``msg`` as it would arrive again, its sender in the given form."""
    return WireMessage.from_body(msg.body_in(as_bin), ())


def broadcast(sender: str, *packets: Any, time: int = START, as_bin: bool = True) -> WireMessage:
    """A user broadcast from ``sender``."""
    return arriving(flags.broadcast, sender, (flags.broadcast, *packets), time=time, as_bin=as_bin)


def whisper(sender: str, *packets: Any, as_bin: bool = True) -> WireMessage:
    """A user whisper from ``sender``."""
    return arriving(flags.whisper, sender, (flags.whisper, *packets), as_bin=as_bin)


def capture(node: MeshNode) -> list[LogEvent]:
    """The node's and its events' log events, from now on."""
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    for part in (node.node_log, node.relay, node.routing, node.exchange, node.replies, node.inbox, node.events):
        part._log = Logger(observer=observer)
    return events
