"""
`.PeerExchange`: how a node finds peers and keeps a bounded number of them:
it tells peers of nodes to dial, dials those it is told of, turns away a
newcomer it has no room for, and trims redundant peers.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from twisted_mesh import flags
from twisted_mesh._core.context import NodeContext
from twisted_mesh._core.link import Address, Link, parse_address
from twisted_mesh._core.outbox import Outbox
from twisted_mesh._core.peerbook import PeerBook
from twisted_mesh._core.routing import RoutingTable
from twisted_mesh._ids import id_text
from twisted_mesh._logs import NODE, LoggedText, NodeLogger, logged

#: The least seconds between two answers to one peer's requests for peers.
PEERS_ANSWER_INTERVAL = 1.0

#: How many connections peer exchange dials, unless a node is told
#: otherwise.  py2p and js2p dial 4.  A seed that every node dials first
#: keeps a few of them and turns the others away, so each joiner makes about
#: one connection more than the ``max_outgoing`` it keeps: with 4, one
#: connection made in five was closed; with 5, one in six.
DEFAULT_MAX_OUTGOING = 5

#: How many dialable peers that dialled it a node keeps, at least, whatever
#: its ``max_outgoing``: see `.PeerExchange.max_incoming`.
MIN_INCOMING = 12

#: The most newcomers a node turned away that it remembers, as nodes with
#: room for peers; and how many peers messages may name each before it is
#: forgotten (a newcomer named in a peers message is dialled about one time
#: in four: it then has about half its room taken).
MAX_NEWCOMERS = 64
NEWCOMER_TELLS = 24

#: The least seconds between two requests for peers a node that keeps too
#: many peers sends, to learn which of its links are redundant.
TRIM_ASK_INTERVAL = 5.0

#: The most entries of a peers message this node sends: a random choice of
#: its peers and of the nodes it heard of; and the fewest it makes up with
#: those when it names newcomers first (see `.PeerExchange.send_peers`).
PEERS_SENT = 16
MIN_PEERS_SENT = 4

Dialer = Callable[[str, int, str], "Deferred[str]"]


class PeerExchange:
    """
    A node's peer exchange.

    :ivar out_addr: the address this node tells peers of its main transport
        to dial.
    :ivar out_addrs: the addresses for peers of other transports, by
        transport.
    :ivar max_outgoing: how many connections peer exchange may dial.
    :ivar max_incoming: how many dialable peers that dialled this node it
        keeps: past it, a newcomer gets this node's handshake and peers to
        dial, and its link is closed (it is turned away); a node that keeps
        more (a js2p node is never turned away, see `.is_full_for`; a link
        settled by a conflict) closes the most redundant ones.  Peers that
        cannot be dialled (browsers) do not count, nor are they turned away.
    :ivar peer_book: the nodes heard of, that peer exchange tells peers to
        dial.
    :ivar newcomers: the nodes turned away: nodes with room for peers.
    :ivar dialer: called with ``(host, port, encryption)`` to dial a peer;
        its Deferred fires with the peer's ID once the handshake is over.
    :ivar dial_failed: called with ``(failure, address, encryption)`` when a
        dial to a peer that peer exchange told of fails; by default, the
        failure is logged.
    :ivar dialing: the addresses being dialled, with the ID of the node
        expected there when it is known.
    """

    def __init__(
        self,
        node: NodeContext,
        routing: RoutingTable,
        outbox: Outbox,
        *,
        encryption: str,
        out_addr: Address,
        max_outgoing: int,
        max_incoming: int | None,
    ) -> None:
        self._log = NodeLogger(NODE, node.id, self)
        self._node = node
        self._routing = routing
        self._outbox = outbox
        self._encryption = encryption
        self.out_addr = out_addr
        self.out_addrs: dict[str, Address] = {}
        self.max_outgoing = max_outgoing
        self.max_incoming = max(3 * max_outgoing, MIN_INCOMING) if max_incoming is None else max_incoming
        self.peer_book = PeerBook()
        self.newcomers = PeerBook(MAX_NEWCOMERS, tell_limit=NEWCOMER_TELLS)
        self.dialer: Dialer | None = None
        self.dial_failed: Callable[[Failure, Address, str], None] = self._dial_failed
        self.dialing: dict[Address, str | None] = {}
        # When each link's last request for peers was answered.
        self._peers_answered: dict[Link, float] = {}
        # How many peers each peer listed in its last peers message, and
        # when the node last asked for them to learn which are redundant.
        self.listed: dict[Link, int] = {}
        self._asked_for_peers = -TRIM_ASK_INTERVAL
        # Who waits for each link's next peers message (see `.ask`).
        self._asking: dict[Link, list[Deferred[list[tuple[Address, str]]]]] = {}

    def out_addr_for(self, encryption: str) -> Address:
        """The address this node tells peers of the transport ``encryption`` to dial."""
        return self.out_addrs.get(encryption, self.out_addr)

    def forget(self, link: Link) -> None:
        """Forget what is known of a link that closed."""
        self._peers_answered.pop(link, None)
        self.listed.pop(link, None)
        for waiter in self._asking.pop(link, []):
            waiter.errback(ConnectionLost("the peer left before it told of its peers"))

    # -- telling peers of nodes ---------------------------------------------

    def send_peers(self, link: Link, *, newcomers_first: bool = False) -> None:
        """
        Tell a peer of up to `.PEERS_SENT` nodes to dial, drawn at random
        from this node's peers and the nodes it heard of (so that the nodes
        told of a seed spread over the mesh, not all over its oldest peers);
        only nodes the peer can dial: of its link's transport.

        :param newcomers_first: name the newcomers this node turned away
            (nodes with room for peers, unlike a full node's own), and the
            others only when there are too few of them: for a newcomer that
            is turned away in turn.
        """
        encryption = link.encryption
        peers = {
            peer_id: peer.peer_addr
            for peer_id, peer in self._routing.table.items()
            if peer.peer_addr is not None and peer is not link and peer.encryption == encryption
        }
        leave_out = frozenset((*peers, self._node.id, link.peer_id or ""))
        chosen = self.newcomers.sample(encryption, PEERS_SENT, leave_out) if newcomers_first else []
        if len(chosen) < MIN_PEERS_SENT:
            leave_out |= {peer_id for _, peer_id in chosen}
            choice = [(address, peer_id) for peer_id, address in peers.items()]
            choice += self.peer_book.sample(encryption, PEERS_SENT, leave_out)
            chosen += random.sample(choice, min(PEERS_SENT - len(chosen), len(choice)))
        as_bin = link.ids_as_bin
        entries = [[list(address), peer_id.encode("ascii") if as_bin else peer_id] for address, peer_id in chosen]
        self._outbox.whisper(link, (flags.peers, entries))

    def answer_request(self, link: Link) -> None:
        """A peer asked for this node's peers: answer, at most every `.PEERS_ANSWER_INTERVAL` seconds."""
        now = self._node.clock.seconds()
        if now - self._peers_answered.get(link, -PEERS_ANSWER_INTERVAL) >= PEERS_ANSWER_INTERVAL:
            self._peers_answered[link] = now
            self.send_peers(link)

    def request_peers(self) -> None:
        """Ask every peer for its routing table."""
        for link in list(self._routing.table.values()):
            self._outbox.whisper(link, (flags.request, b"*" if link.ids_as_bin else "*"))

    def ask(self, link: Link) -> Deferred[list[tuple[Address, str]]]:
        """
        Ask one peer for its peers: a Deferred that fires with the entries
        of the next peers message it sends, ``(address, node ID)`` each (the
        nodes it tells others to dial), or fails with `.ConnectionLost` when
        the link closes first.
        """
        waiters = self._asking.setdefault(link, [])
        d: Deferred[list[tuple[Address, str]]] = Deferred(waiters.remove)
        waiters.append(d)
        self._outbox.whisper(link, (flags.request, b"*" if link.ids_as_bin else "*"))
        return d

    # -- dialling the nodes peers tell of -----------------------------------

    def on_peers(self, link: Link, payload: tuple[Any, ...]) -> None:
        """A peer told of nodes: remember them, trim, and dial some while there is room."""
        peers = []
        entries = payload[1] if len(payload) == 2 else None
        if not isinstance(entries, list):
            self._node.log.malformed(link.peer_id, "peers message")
            return
        most = self._node.limits.max_peers_per_message
        if len(entries) > most:
            self._node.log.hit(
                "max_peers_per_message",
                "{peer} sent {entries} peers; considering the first {most}",
                peer=logged(link.peer_id),
                entries=len(entries),
                most=most,
            )
            entries = entries[:most]
        for entry in entries:
            if not isinstance(entry, list) or len(entry) != 2:
                address, peer_id = None, None
            else:
                address, peer_id = parse_address(entry[0]), id_text(entry[1])
            if address is None or peer_id is None:
                self._node.log.malformed(link.peer_id, "peers message")
                return
            peers.append((address, peer_id))
        self.listed[link] = len(peers)
        for waiter in self._asking.pop(link, []):
            waiter.callback(list(peers))
        for address, peer_id in peers:
            if peer_id != self._node.id:
                self.peer_book.heard_of(address, link.encryption, peer_id)
        table = self._routing.table
        if not link.outgoing and link.peer_id is not None and table.get(link.peer_id) is link:
            self.trim()
        # In random order: other nodes list their peers oldest first, and
        # dialling them in that order would make the oldest nodes hubs.
        random.shuffle(peers)
        for address, peer_id in peers:
            if self.outgoing_count() >= self.max_outgoing:
                break
            if peer_id != self._node.id and peer_id not in table:
                d = self.dial(address, peer_id, link.encryption)
                if d is not None:
                    d.addErrback(self.dial_failed, address, link.encryption)

    def dial(self, address: Address, peer_id: str | None = None, encryption: str | None = None) -> Deferred[str] | None:
        """
        Dial ``address`` over ``encryption`` (by default the main transport)
        unless it, or the peer ``peer_id``, is connected or being dialled
        already.

        :return: the dialler's Deferred, or ``None`` when nothing was dialled.
        """
        if self.dialer is None or address in self.dialing or address in {self.out_addr, *self.out_addrs.values()}:
            return None
        if peer_id is not None and (peer_id in self._routing.table or peer_id in self.dialing.values()):
            return None
        self.dialing[address] = peer_id
        # (A dialer may raise at once, on an address its endpoint refuses.)
        d: Deferred[str] = maybeDeferred(self.dialer, *address, encryption or self._encryption)

        def done(result: str | Failure) -> str | Failure:
            del self.dialing[address]
            return result

        return d.addBoth(done)

    def _dial_failed(self, failure: Failure, address: Address, encryption: str) -> None:
        self._log.info(
            "could not connect to {address}: {error}", address=address, error=LoggedText(failure.getErrorMessage())
        )

    def outgoing_count(self) -> int:
        """The connections this node dialled or is dialling."""
        return sum(1 for link in self._routing.table.values() if link.outgoing) + len(self.dialing)

    # -- how many peers -----------------------------------------------------

    def _incoming(self) -> list[Link]:
        """The dialable peers that dialled this node (those `.max_incoming` counts)."""
        return [
            link
            for link in self._routing.table.values()
            if not link.outgoing and link.peer_addr is not None and not link.closing
        ]

    def is_full_for(self, link: Link) -> bool:
        """
        Whether ``link``, a new peer's, is one incoming peer too many to keep.
        A js2p node (the one kind that writes IDs as str) is kept all the
        same, and a redundant link trimmed instead: on one host, it dials
        none of the peers it is given (it takes each for one it has, as
        they share its host), and would stay alone.
        """
        if link.outgoing or link.peer_addr is None or not link.ids_as_bin:
            return False
        return len(self._incoming()) >= self.max_incoming

    def turn_away(self, link: Link) -> None:
        """
        Answer a newcomer that is one peer too many with peers to dial, and
        let it go; it is a node with room for peers, to tell others of.
        What it sent before it saw the close is still read.
        """
        assert link.peer_addr is not None and link.peer_id is not None
        self.send_peers(link, newcomers_first=True)
        self.newcomers.heard_of(link.peer_addr, link.encryption, link.peer_id)
        self._node.log.hit(
            "max_incoming",
            "{peer} dialled this node, which keeps {most} peers that dialled it: sent it others to dial",
            warn=False,
            peer=link.peer_id,
            most=self.max_incoming,
        )
        link.close("this node has as many peers as it keeps: sent it others to dial", error=False, read_on=True)

    def trim(self) -> None:
        """
        Close links of peers that dialled this node while it keeps more
        than `.max_incoming`: those of the peers that listed the most other
        peers (the most redundant), never one of a peer that listed fewer
        than two, which might have no other.  When too few are known to
        have others, ask those peers for their peers (at most every
        `.TRIM_ASK_INTERVAL` seconds): their answers trim again.
        """
        incoming = self._incoming()
        excess = len(incoming) - self.max_incoming
        if excess <= 0:
            return
        # (Not a js2p node's: it would dial none of its peers' peers again.)
        trimmable = [link for link in incoming if link.ids_as_bin]
        redundant = [link for link in trimmable if self.listed.get(link, 0) >= 2]
        now = self._node.clock.seconds()
        if len(redundant) < excess and now - self._asked_for_peers >= TRIM_ASK_INTERVAL:
            self._asked_for_peers = now
            for link in trimmable:
                if link not in redundant:
                    self._outbox.whisper(link, (flags.request, b"*"))
        redundant.sort(key=lambda link: self.listed[link], reverse=True)
        for link in redundant[:excess]:
            self._node.stats.trimmed += 1
            self._log.info(
                "closing the link of {peer}, which has {others} other peers: this node keeps {most} that dialled it",
                peer=logged(link.peer_id),
                others=self.listed[link],
                most=self.max_incoming,
            )
            link.close("trimmed: the peer has others, and this node keeps fewer", error=False, read_on=True)
