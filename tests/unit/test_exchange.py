"""
`.PeerExchange`, through `.MeshNode` with fake links and a fake clock:
peers messages, dialling, turning newcomers away and trimming.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from tests.support import MESH
from tests.unit.node_support import OUT_ADDR, FakeLink, add_link, arriving, make_node, next_port
from twisted_mesh import flags
from twisted_mesh._core import exchange
from twisted_mesh._core.exchange import PEERS_ANSWER_INTERVAL
from twisted_mesh._core.link import MAX_HOST_LENGTH, Address, parse_address
from twisted_mesh._core.node import MeshNode
from twisted_mesh._frames import WireMessage
from twisted_mesh._ids import id_text, new_node_id

# -- peer exchange -----------------------------------------------------------


def peers_message(sender: str, entries: Any, *, as_bin: bool = True) -> WireMessage:
    """A peers whisper listing ``entries``."""
    return arriving(flags.whisper, sender, (flags.peers, entries), as_bin=as_bin)


def entry(address: Address, peer_id: str, *, as_bin: bool = True) -> list[Any]:
    """One routing-table entry of a peers message."""
    return [list(address), peer_id.encode() if as_bin else peer_id]


def test_link_ready_sends_the_routing_table() -> None:
    """A new peer is sent the others' addresses, in its ID form."""
    node, _, _ = make_node()
    a = add_link(node)
    b = add_link(node, ids_as_bin=False)
    assert a.peer_id is not None and b.peer_id is not None
    assert a.peer_addr is not None and b.peer_addr is not None
    c = FakeLink(new_node_id(MESH), addr=("10.9.9.9", 9), ids_as_bin=False)
    node.link_ready(c)
    (peers,) = c.take()
    assert peers.msg_type == flags.whisper and not peers.sender_is_bin
    listed = [entry(a.peer_addr, a.peer_id, as_bin=False), entry(b.peer_addr, b.peer_id, as_bin=False)]
    assert peers.payload[0] == flags.peers and sorted(peers.payload[1]) == sorted(listed)


# -- how many peers: the connection manager ------------------------------------


def incoming_link(node: MeshNode, *, addr: Address | None = None) -> FakeLink:
    """A dialable newcomer that dialled the node; what it was sent is kept."""
    link = FakeLink(new_node_id(MESH), addr=addr or ("10.1.0.1", next_port()))
    node.link_ready(link)
    return link


def listed_peers(link: FakeLink) -> list[tuple[Address, str]]:
    """The entries of the peers messages the node sent on ``link``."""
    entries = [e for m in link.sent if m.payload[0] == flags.peers for e in m.payload[1]]
    return [((host, port), id_text(peer_id) or "") for (host, port), peer_id in entries]


def test_a_full_node_turns_a_newcomer_away_with_peers_to_dial() -> None:
    """
    Past max_incoming dialable peers that dialled it, a node answers a
    newcomer with peers to dial and closes its link, reading on; it never
    enters the routing table, the limit is counted, and the newcomer is
    remembered as a node with room, to tell others of.
    """
    node, _, _ = make_node()
    node.max_incoming = 3
    kept = [incoming_link(node) for _ in range(3)]
    newcomer = incoming_link(node)
    assert newcomer.peer_id not in node.routing_table and newcomer.closes and newcomer.closing
    assert "sent it others to dial" in newcomer.closes[0]
    assert {peer_id for _, peer_id in listed_peers(newcomer)} == {link.peer_id for link in kept}
    assert node.stats.limit_hits["max_incoming"] == 1
    assert newcomer.peer_addr is not None and (newcomer.peer_addr, "Plaintext") in node.exchange.newcomers
    later = incoming_link(node)
    assert newcomer.peer_id in {peer_id for _, peer_id in listed_peers(later)}


def test_links_the_node_dialled_and_undialable_peers_are_never_turned_away() -> None:
    """Outgoing links and peers that cannot be dialled (browsers) neither count nor are turned away."""
    node, _, _ = make_node()
    node.max_incoming = 1
    incoming_link(node)
    browser = FakeLink(new_node_id(MESH), addr=None)
    dialled = FakeLink(new_node_id(MESH), addr=("10.1.9.9", 1), outgoing=True)
    assert node.link_ready(browser) and node.link_ready(dialled)
    assert not browser.closes and not dialled.closes


def test_peers_are_sent_at_random_from_peers_and_nodes_heard_of() -> None:
    """
    A peers message lists at most PEERS_SENT nodes, drawn from the routing
    table and the nodes heard of, never the receiver or the node itself.
    """
    node, _, _ = make_node()
    for i in range(40):
        node.peer_book.heard_of(("10.2.0.1", 1000 + i), "Plaintext", new_node_id(MESH))
    node.peer_book.heard_of(("10.2.0.2", 1), "SSL", new_node_id(MESH))
    node.peer_book.heard_of(OUT_ADDR, "Plaintext", node.id)
    first, second = incoming_link(node), incoming_link(node)
    listed = listed_peers(second)
    assert len(listed) == exchange.PEERS_SENT
    ids = [peer_id for _, peer_id in listed]
    assert len(set(ids)) == len(ids) and second.peer_id not in ids and node.id not in ids
    assert all(address[0] != "10.2.0.2" for address, _ in listed)
    draws = {frozenset(peer_id for _, peer_id in listed_peers(incoming_link(node))) for _ in range(5)}
    assert len(draws) > 1, "the same peers every time: not drawn at random"
    assert first.peer_id is not None


def test_entries_of_a_peers_message_are_heard_of() -> None:
    """The nodes a peers message lists are remembered, to dial or tell of later; the node itself is not."""
    node, _, _ = make_node(max_outgoing=0)
    link = add_link(node)
    listed = [[["10.3.0.1", 1], new_node_id(MESH)], [list(OUT_ADDR), node.id.encode()]]
    node.message_received(link, arriving(flags.whisper, link.peer_id or "", (flags.peers, listed)))
    assert (("10.3.0.1", 1), "Plaintext") in node.peer_book and (OUT_ADDR, "Plaintext") not in node.peer_book


def test_trimming_closes_the_most_redundant_and_never_a_peer_with_no_other() -> None:
    """
    A node that keeps more incoming peers than max_incoming (a link that
    won a conflict, say) closes the links of the peers that listed the
    most others, never one that listed fewer than two; and counts it.
    """
    node, _, _ = make_node()
    node.max_incoming = 2
    lonely, busy, busier = (incoming_link(node) for _ in range(3))
    assert busier.closes  # turned away: the node is full
    for link, count in ((lonely, 1), (busy, 5)):
        entries = [[["10.4.0.1", 100 + i], new_node_id(MESH)] for i in range(count)]
        node.message_received(link, arriving(flags.whisper, link.peer_id or "", (flags.peers, entries)))
    node.max_incoming = 1
    node.exchange.trim()
    assert busy.closes and "trimmed" in busy.closes[0]
    assert not lonely.closes and node.stats.trimmed == 1
    node.max_incoming = 0
    node.exchange.trim()
    assert not lonely.closes, "a peer that may have no other was trimmed"


@pytest.fixture
def peers_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Peers messages are taken in the order listed, not shuffled."""
    monkeypatch.setattr(exchange.random, "shuffle", lambda peers: None)


@pytest.mark.usefixtures("peers_in_order")
def test_peers_dials_unknown_peers_only() -> None:
    """Not itself, not its own address, not connected IDs, not an address being dialled."""
    node, _, dialer = make_node(max_outgoing=10)
    a = add_link(node)
    assert a.peer_id is not None and a.peer_addr is not None
    new1, new2, new3 = (new_node_id(MESH) for _ in range(3))
    entries = [
        entry(("10.1.0.1", 1), node.id),  # itself
        entry(OUT_ADDR, new_node_id(MESH)),  # its own address
        entry(a.peer_addr, a.peer_id),  # connected
        entry(("10.1.0.2", 2), a.peer_id, as_bin=False),  # connected, str form
        entry(("10.1.0.3", 3), new1),
        entry(("10.1.0.4", 4), new2, as_bin=False),
        entry(("10.1.0.3", 3), new3),  # an address being dialled
        entry(("10.1.0.5", 5), new1),  # an ID being dialled
    ]
    node.message_received(a, peers_message(a.peer_id, entries))
    assert dialer.calls == [("10.1.0.3", 3), ("10.1.0.4", 4)]
    # A second peers message while these are pending dials nothing again.
    node.message_received(a, peers_message(a.peer_id, entries))
    assert len(dialer.calls) == 2
    assert not node.queue and a.take() == []


@pytest.mark.usefixtures("peers_in_order")
def test_peers_stops_at_max_outgoing() -> None:
    """Dialling stops at max_outgoing, counting outgoing links and pending dials."""
    node, _, dialer = make_node(max_outgoing=4)
    add_link(node, outgoing=True)
    add_link(node, outgoing=False)
    b = add_link(node, outgoing=False)
    assert b.peer_id is not None
    entries = [entry(("10.2.0.1", i), new_node_id(MESH)) for i in range(1, 7)]
    node.message_received(b, peers_message(b.peer_id, entries))
    assert dialer.calls == [("10.2.0.1", 1), ("10.2.0.1", 2), ("10.2.0.1", 3)]
    assert node.outgoing_count() == 4
    node.message_received(b, peers_message(b.peer_id, entries))
    assert len(dialer.calls) == 3

    # A failed dial frees its place: the next peers message dials one more.
    dialer.pending["10.2.0.1", 1].errback(ConnectionError("refused"))
    assert node.outgoing_count() == 3
    node.message_received(b, peers_message(b.peer_id, entries))
    assert dialer.calls[3:] == [("10.2.0.1", 1)]


def test_peers_are_dialled_in_random_order() -> None:
    """
    Nodes that get the same peers list do not all dial its first entries
    (which would make the oldest nodes of a mesh its hubs).
    """
    entries = [entry(("10.3.0.1", i), new_node_id(MESH)) for i in range(1, 9)]
    first_dialled = set()
    for _ in range(20):
        node, _, dialer = make_node(max_outgoing=1)
        b = add_link(node, outgoing=False)
        assert b.peer_id is not None
        node.message_received(b, peers_message(b.peer_id, entries))
        assert len(dialer.calls) == 1
        first_dialled.add(dialer.calls[0])
    # Twenty nodes all picking the same one of eight: one chance in 8**19.
    assert len(first_dialled) > 1


def test_peers_with_no_dialer_does_nothing() -> None:
    """A node without a dialer dials nothing."""
    node, _, _ = make_node()
    node.dialer = None
    a = add_link(node)
    assert a.peer_id is not None
    node.message_received(a, peers_message(a.peer_id, [entry(("10.3.0.1", 1), new_node_id(MESH))]))
    assert node.outgoing_count() == 0


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param([["10.4.0.9", 9]], id="entry-short"),
        pytest.param([["10.4.0.9", 9], b"ID", 1], id="entry-long"),
        pytest.param("10.4.0.9:9", id="entry-str"),
        pytest.param([["10.4.0.9", 70000], b"ID"], id="port-out-of-range"),
        pytest.param([["10.4.0.9", 0], b"ID"], id="port-0"),
        pytest.param([["10.4.0.9", "9"], b"ID"], id="port-str"),
        pytest.param([["10.4.0.9"], b"ID"], id="address-short"),
        pytest.param(["10.4.0.9:9", b"ID"], id="address-str"),
        pytest.param([["10.4.0.9", 9], b""], id="id-empty"),
        pytest.param([["10.4.0.9", 9], b"\xff\xfe"], id="id-non-ascii"),
        pytest.param([["10.4.0.9", 9], 7], id="id-int"),
    ],
)
@pytest.mark.parametrize("where", [0, 1, 2])
def test_malformed_peers_entry_rejects_the_message(bad: Any, where: int) -> None:
    """One malformed entry anywhere: nothing is dialled at all."""
    node, _, dialer = make_node(max_outgoing=10)
    a = add_link(node)
    assert a.peer_id is not None
    entries: list[Any] = [entry(("10.4.0.1", 1), new_node_id(MESH)), entry(("10.4.0.2", 2), new_node_id(MESH))]
    entries.insert(where, bad)
    node.message_received(a, peers_message(a.peer_id, entries))
    assert dialer.calls == []


@pytest.mark.parametrize("entries", [b"not a list", {"a": 1}, None])
def test_malformed_peers_list_is_ignored(entries: Any) -> None:
    """A peers message whose table is not a list is ignored."""
    node, _, dialer = make_node()
    a = add_link(node)
    assert a.peer_id is not None
    node.message_received(a, peers_message(a.peer_id, entries))
    assert dialer.calls == [] and not node.queue


def test_request_peers_in_each_links_form() -> None:
    """request_peers() whispers [request, b'*'] to bin links, [request, '*'] to str ones."""
    node, _, _ = make_node()
    bin_link = add_link(node)
    str_link = add_link(node, ids_as_bin=False)
    node.request_peers()
    (to_bin,) = bin_link.take()
    (to_str,) = str_link.take()
    assert to_bin.msg_type == to_str.msg_type == flags.whisper
    assert to_bin.payload == (flags.request, b"*") and to_bin.sender_is_bin
    assert to_str.payload == (flags.request, "*") and not to_str.sender_is_bin
    assert type(to_str.payload[1]) is str


@pytest.mark.parametrize("star", [b"*", "*"])
def test_request_for_peers_is_answered(star: str | bytes) -> None:
    """A [request, '*'] whisper is answered with the routing table."""
    node, _, _ = make_node()
    a = add_link(node)
    b = add_link(node)
    assert a.peer_id is not None and b.peer_id is not None and b.peer_addr is not None
    node.message_received(a, arriving(flags.whisper, a.peer_id, (flags.request, star)))
    (answer,) = a.take()
    assert answer.msg_type == flags.whisper
    assert answer.payload == (flags.peers, [entry(b.peer_addr, b.peer_id)])
    assert b.take() == [] and not node.queue


def test_requests_for_peers_are_answered_once_a_second() -> None:
    """A link's requests for peers get one answer a second, however many come."""
    node, clock, _ = make_node()
    a = add_link(node)
    add_link(node)
    assert a.peer_id is not None
    for _ in range(50):
        node.message_received(a, arriving(flags.whisper, a.peer_id, (flags.request, b"*")))
    assert [m.payload[0] for m in a.take()] == [flags.peers]
    clock.advance(PEERS_ANSWER_INTERVAL)
    node.message_received(a, arriving(flags.whisper, a.peer_id, (flags.request, b"*")))
    assert [m.payload[0] for m in a.take()] == [flags.peers]


@pytest.mark.parametrize("host", ["h" * (MAX_HOST_LENGTH + 1), b"h" * (MAX_HOST_LENGTH + 1), "", b""])
def test_parse_address_refuses_bad_hosts(host: str | bytes) -> None:
    """A host that is empty or longer than any DNS name is not an address."""
    assert parse_address([host, 4444]) is None


def test_parse_address_takes_the_longest_host() -> None:
    """A host of MAX_HOST_LENGTH characters, as str or bin, is read."""
    host = "h" * MAX_HOST_LENGTH
    assert parse_address([host, 4444]) == parse_address([host.encode(), 4444]) == (host, 4444)


def test_dialer_that_raises_fails_the_dial() -> None:
    """
    A dialer that raises at once (an address its endpoint refuses) fails the
    dial's Deferred; the address is not left marked as being dialled.
    """
    node, _, _ = make_node()

    def refusing(host: str, port: int, encryption: str) -> Deferred[str]:
        raise ValueError(f"bad host {host!r}")

    node.dialer = refusing
    failures: list[Failure] = []
    d = node.dial(("a#b", 4444))
    assert d is not None
    d.addErrback(failures.append)
    assert failures and failures[0].check(ValueError)
    assert node.outgoing_count() == 0
    again = node.dial(("a#b", 4444))
    assert again is not None
    again.addErrback(failures.append)
    assert len(failures) == 2


def test_asking_one_peer_for_its_peers() -> None:
    """ask_peers(link) whispers a request to that link, and fires with the entries of its next peers message."""
    node, _, _ = make_node(max_outgoing=0)
    a = add_link(node)
    b = add_link(node, ids_as_bin=False)
    assert a.peer_id is not None and b.peer_id is not None
    a.take()
    asked = node.ask_peers(a)
    (request,) = a.take()
    assert request.payload == (flags.request, b"*") and b.take() == []
    told: list[Any] = []
    asked.addCallback(told.append)
    node.message_received(b, peers_message(b.peer_id, [entry(("10.4.0.1", 1), new_node_id(MESH))]))
    assert told == []
    other = new_node_id(MESH)
    node.message_received(a, peers_message(a.peer_id, [entry(("10.4.0.2", 2), other)]))
    assert told == [[(("10.4.0.2", 2), other)]]


def test_asking_a_peer_that_leaves_fails() -> None:
    """The answer of a peer whose link closes first never comes: the Deferred fails with ConnectionLost."""
    node, _, _ = make_node(max_outgoing=0)
    a = add_link(node)
    asked = node.ask_peers(a)
    failures: list[Failure] = []
    asked.addErrback(failures.append)
    node.link_lost(a)
    (failure,) = failures
    assert failure.check(ConnectionLost)
