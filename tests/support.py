"""
Helpers shared by the tests: waiting for conditions (`.wait_for`,
`.within`), reading captured logs, the nodes of the ``mesh`` fixture
(`.MeshNodes`), peers written by hand (`.RawPeer` speaks frames,
`.handshaken_socket` is a blocking socket that never reads unless told,
`.RawWebSocket` an HTTP upgrade), a link with no connection for a node's
routing table (`.GoneLink`), and a GET (`.http_get`).
"""

from __future__ import annotations

import base64
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import pytest
from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import LogEvent, formatEvent
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone

from twisted_mesh import MeshService, MeshSocket, flags
from twisted_mesh import _compression as compression
from twisted_mesh._frames import FrameError, FrameReader, WireMessage
from twisted_mesh._ids import Network, new_node_id
from twisted_mesh._link import handshake
from twisted_mesh._logs import SHORT_ID
from twisted_mesh._signing import Signer
from twisted_mesh.keys import NodeKey

#: The plaintext network most tests run on.
MESH = Network("mesh", "Plaintext")

#: An endpoint string to listen on: a free port of loopback.
LOOPBACK = "tcp:0:interface=127.0.0.1"

T = TypeVar("T")


async def wait_for(condition: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    """
    Poll ``condition`` until it is true; fail after ``timeout`` seconds.
    """
    from twisted.internet import reactor

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        await task.deferLater(reactor, 0.01)


def within(d: Deferred[T], seconds: float = 30.0) -> Deferred[T]:
    """``d``, failed with a timeout when it has not fired after ``seconds``."""
    from twisted.internet import reactor

    return d.addTimeout(seconds, reactor)


def unavailable(reason: str) -> NoReturn:
    """
    What a test does without a tool it needs: fail under CI (``CI`` set),
    where everything must be there; skip elsewhere.
    """
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run this test)")
    pytest.skip(reason)


def short(node_id: str) -> str:
    """A node ID as log text shows it (the events keep it whole)."""
    return node_id[:SHORT_ID]


def log_text(events: list[LogEvent]) -> str:
    """All captured log events, formatted, one per line."""
    return "\n".join(formatEvent(event) for event in events)


class RawPeer(Protocol):
    """
    A peer written by hand for tests: it sends the frames (or bytes) it is
    told to and keeps every message it receives, with no relay or rules of
    its own.  What it cannot read is counted in ``unreadable``, not raised.

    On a signed network it has a key (by default a new one): its handshake
    carries the key, it proves it when the node's handshake comes (unless
    ``proves`` is false), and it signs what it sends.

    :ivar codes: the compression codes its handshake lists.
    :ivar connected_at: when the connection was made (`time.monotonic`).
    :ivar lost_at: when it was lost, or None while it is open.
    """

    def __init__(
        self,
        protocol: Network = MESH,
        *,
        ids_as_bin: bool = True,
        node_id: str | None = None,
        codes: Sequence[int] = (),
        key: NodeKey | None = None,
        proves: bool = True,
    ) -> None:
        self.protocol_id = protocol.id
        self.key = key or (NodeKey.generate() if protocol.signed else None)
        self.signer = Signer(self.key, protocol.subnet) if protocol.signed and self.key else None
        self.nonce = os.urandom(handshake.NONCE_SIZE)
        self.proves = proves
        self.port = 1
        self.id = node_id or (self.key.node_id if self.key else new_node_id(protocol))
        self.ids_as_bin = ids_as_bin
        self.codes = list(codes)
        self.received: list[WireMessage] = []
        self.unreadable = 0
        self.lost: Deferred[None] = Deferred()
        self.connected_at = 0.0
        self.lost_at: float | None = None
        self._reader = FrameReader(_READ_LIMIT)

    def connectionMade(self) -> None:
        self.connected_at = time.monotonic()

    def dataReceived(self, data: bytes) -> None:
        try:
            bodies = self._reader.feed(data)
        except FrameError:
            self.unreadable += 1
            return
        for body in bodies:
            try:
                msg = WireMessage.from_body(body, compression.SUPPORTED, _READ_LIMIT)
            except FrameError:
                self.unreadable += 1
                continue
            self.received.append(msg)
            if msg.payload[:1] == (flags.handshake,) and len(msg.payload) == 7 and self.key and self.proves:
                self.send(flags.renegotiate, flags.proof, self.proof(msg), signed=False)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost_at = time.monotonic()
        self.lost.callback(None)

    @property
    def closed(self) -> bool:
        """Whether the connection is closed."""
        return self.lost.called

    def proof(self, node_handshake: WireMessage, checker_id: str | None = None) -> bytes:
        """This peer's proof of its key, the dialler's, for the node whose handshake is ``node_handshake``."""
        assert self.key is not None
        terms = handshake.ProofTerms(
            self.protocol_id,
            signer_dialled=False,
            signer_id=self.id,
            checker_id=checker_id or node_handshake.sender,
            signer_address=("127.0.0.1", self.port),
            signer_nonce=self.nonce,
            checker_nonce=node_handshake.payload[6],
            binding=b"",
        )
        return handshake.proof(self.key, terms)

    def wire_id(self, node_id: str) -> str | bytes:
        """An ID in this peer's form."""
        return node_id.encode() if self.ids_as_bin else node_id

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are."""
        assert self.transport is not None
        self.transport.write(data)

    def send(
        self, msg_type: int, *payload: Any, sender: str | None = None, stamp: int | None = None, signed: bool = True
    ) -> WireMessage:
        """
        Write a well-formed message with this peer (or ``sender``) as its
        sender, stamped now (or ``stamp``); on a signed network signed,
        unless it names another ``sender`` or ``signed`` is false.
        """
        stamp = int(time.time()) if stamp is None else stamp
        if self.signer is not None and signed and sender is None:
            msg = self.signer.create(msg_type, stamp, payload)
        else:
            msg = WireMessage.create(msg_type, sender or self.id, stamp, payload, self.ids_as_bin)
        self.send_raw(msg.frame(self.ids_as_bin, None))
        return msg

    def handshake(self, *, port: int = 1, protocol_id: str | None = None, node_id: str | None = None) -> None:
        """Send a handshake: this peer's (or one naming ``node_id`` or ``protocol_id``), with its key if it has one."""
        proving = () if self.key is None else (self.key.public_key, self.nonce)
        self.port = port
        self.send(
            flags.whisper,
            flags.handshake,
            self.wire_id(node_id or self.id),
            self.wire_id(protocol_id or self.protocol_id),
            ["127.0.0.1", port],
            self.codes,
            *proving,
            signed=False,
        )

    def user_messages(self) -> list[WireMessage]:
        """The received broadcasts and whispers meant for a user."""
        return [
            msg
            for msg in self.received
            if msg.msg_type in (flags.broadcast, flags.whisper) and msg.payload[0] in (flags.broadcast, flags.whisper)
        ]

    def peers_messages(self) -> int:
        """How many peers messages the node sent us."""
        return sum(1 for msg in self.received if msg.msg_type == flags.whisper and msg.payload[0] == flags.peers)

    def requests(self) -> list[WireMessage]:
        """The broadcast requests for a node's address that reached us."""
        return [
            msg
            for msg in self.received
            if msg.msg_type == flags.broadcast and msg.payload[0] == flags.request and len(msg.payload) == 3
        ]

    async def join(self) -> None:
        """Handshake, and wait for the node's peers message that answers it."""
        self.handshake()
        await wait_for(lambda: self.peers_messages() > 0 or self.closed, 15, "the answer to a handshake")
        assert not self.closed, "the node closed a good handshake"

    async def barrier(self) -> bool:
        """
        Ask for peers and wait for the answer: once it is here, the node has
        read everything written before.

        :return: whether the connection is still open.
        """
        if self.closed:
            return False
        before = self.peers_messages()
        self.send(flags.whisper, flags.request, b"*")
        await wait_for(lambda: self.peers_messages() > before or self.closed, 15, "the answer to a request")
        return not self.closed


#: The most a `.RawPeer` reads in one frame: far more than any node sends.
_READ_LIMIT = 64 * 1024 * 1024


async def raw_peer(port: int, protocol: Network = MESH, **kwargs: Any) -> RawPeer:
    """Connect a `.RawPeer` to a node listening on ``port`` of loopback."""
    from twisted.internet import reactor

    peer = RawPeer(protocol, **kwargs)
    await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer))
    return peer


async def joined_raw_peers(node: MeshService, count: int, **kwargs: Any) -> list[RawPeer]:
    """``count`` raw peers connected to ``node`` and handshaken, once the node has them all."""
    peers = [await raw_peer(node.out_addr[1], **kwargs) for _ in range(count)]
    for peer in peers:
        peer.handshake()
    await wait_for(lambda: all(peer.id in node.routing_table for peer in peers), 15, "the raw peers' handshakes")
    return peers


def handshaken_socket(port: int, rcvbuf: int = 4096, node_id: str | None = None) -> tuple[socket.socket, str]:
    """
    A blocking socket with a small receive buffer (``rcvbuf`` bytes),
    connected to the node listening on ``port`` of loopback and handshaken
    with it (as ``node_id``, by default a new ID of `.MESH`): it and its ID.
    """
    node_id = node_id or new_node_id(MESH)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    payload = (flags.handshake, node_id.encode(), MESH.id.encode(), ["127.0.0.1", 1], [])
    sock.sendall(WireMessage.create(flags.whisper, node_id, int(time.time()), payload).frame(True, None))
    return sock, node_id


class MeshNodes:
    """
    A factory of mesh nodes on loopback, by default on port 0 of
    ``127.0.0.1`` and the `.MESH` network; the ``mesh`` fixture closes them
    all at teardown.  ``mesh(**kwargs)`` makes a `.MeshSocket` (the
    arguments are MeshSocket's, with defaults), ``mesh.service(**kwargs)`` a
    started `.MeshService`.
    """

    def __init__(self) -> None:
        self.made: list[MeshService] = []

    def __call__(self, addr: str = "127.0.0.1", port: int = 0, prot: Network = MESH, **kwargs: Any) -> MeshSocket:
        sock = MeshSocket(addr, port, prot, **kwargs)
        self.made.append(sock)
        return sock

    def service(self, prot: Network = MESH, **kwargs: Any) -> MeshService:
        """A started `.MeshService`; by default it listens on no endpoint."""
        service = MeshService(prot, **kwargs)
        self.made.append(service)
        service.startService()
        return service

    async def line(self, count: int = 3, prot: Network = MESH, **kwargs: Any) -> list[MeshSocket]:
        """``count`` MeshSockets joined in a line, each dialling the one before; no peer exchange."""
        nodes = [self(prot=prot, max_outgoing=0, **kwargs) for _ in range(count)]
        for before, after in zip(nodes, nodes[1:], strict=False):
            await within(after.connect("127.0.0.1", before.out_addr[1]))
        return nodes

    async def close(self) -> None:
        """Stop every node still running."""
        await defer.gatherResults([node.stopService() for node in self.made if node.running])


class GoneLink:
    """
    A peer's link for a node's routing table, with no connection behind it:
    it writes nothing, and only has to enter the table and leave it.
    """

    closing = False
    lazy_push = False

    def __init__(self, peer_id: str, peer_addr: tuple[str, int], encryption: str = "Plaintext") -> None:
        self.peer_id = peer_id
        self.peer_addr = peer_addr
        self.outgoing = True
        self.ids_as_bin = True
        self.encryption = encryption

    def dialler_port(self) -> None:
        return None

    def send(self, msg: object) -> None:
        return None

    def withdraw(self, msg: object) -> bool:
        return False

    def renegotiate(self, *payload: object) -> None:
        pass

    def close(self, reason: str, *, error: bool = True, read_on: bool = False) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connected_components(tables: dict[str, set[str]]) -> list[set[str]]:
    """
    The groups of nodes that reach each other, from each node's routing
    table (by node ID): a link counts when either end lists it.
    """
    edges: dict[str, set[str]] = {node_id: set() for node_id in tables}
    for node_id, peers in tables.items():
        for peer in peers & edges.keys():
            edges[node_id].add(peer)
            edges[peer].add(node_id)
    left, parts = set(edges), []
    while left:
        todo, part = [left.pop()], set()
        while todo:
            node_id = todo.pop()
            part.add(node_id)
            todo.extend(edges[node_id] & left)
            left -= edges[node_id]
        parts.append(part)
    return parts


class _Body(Protocol):
    """Collects a response body (readBody warns about Agent's transports)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone):
            self.done.callback(bytes(self.data))
        else:
            self.done.errback(reason)


async def http_get(url: str) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    """GET ``url``: its code, headers (lower-case names) and body."""
    from twisted.internet import reactor

    response = await within(Agent(reactor).request(b"GET", url.encode()))
    body = _Body()
    response.deliverBody(body)
    data = await within(body.done)
    headers = {name.lower(): values for name, values in response.headers.getAllRawHeaders()}
    return response.code, headers, data


class RawWebSocket(Protocol):
    """
    A WebSocket client written by hand: it asks to upgrade when told to
    (`.upgrade`), keeps what it receives, and never answers a close.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[None] = Deferred()

    def upgrade(self) -> None:
        """Send the opening handshake."""
        assert self.transport is not None
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)
