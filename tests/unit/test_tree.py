"""
`.BroadcastTree`, lazy push, through `.MeshNode` with fake links and a fake
clock: which links are pruned, what is announced to them and when, what a
node asks for and what it answers.  ``test_simulation`` checks the tree a
whole mesh forms.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from tests.support import MESH
from tests.unit.node_support import START, FakeLink, add_link, again, broadcast, make_node
from twisted_mesh import flags
from twisted_mesh._core.kept import KEEP_FOR, KeptBroadcasts
from twisted_mesh._core.node import MeshNode
from twisted_mesh._core.seen import MESSAGE_LIFETIME
from twisted_mesh._core.tree import ANNOUNCE_DELAY, GRAFT_WAIT, MAX_KEYS_PER_FRAME
from twisted_mesh._frames import WireMessage
from twisted_mesh._ids import new_node_id
from twisted_mesh.limits import DEFAULT_LIMITS, Limits


def mesh_link(node: MeshNode) -> FakeLink:
    """A new peer that speaks lazy push (a twisted_mesh node)."""
    link = add_link(node)
    link.lazy_push = True
    return link


def entries(*msgs: WireMessage) -> list[list[object]]:
    """The stamps and keys of ``msgs``, as a peer's announcement or graft lists them."""
    return [[msg.time, msg.key] for msg in msgs]


def keys(msgs: list[WireMessage]) -> list[bytes]:
    """The keys of ``msgs`` (a graft is answered with the broadcast read again from the bytes kept)."""
    return [msg.key for msg in msgs]


def grafts(link: FakeLink) -> list[tuple[object, ...]]:
    """The grafts written to ``link``."""
    return [word for word in link.words if word[0] == flags.graft]


def prune(node: MeshNode, link: FakeLink) -> None:
    """``link``'s peer prunes its link."""
    node.tree_word_received(link, (flags.prune,))
    assert link in node.tree.lazy


def with_pruned_link(limits: Limits = DEFAULT_LIMITS) -> tuple[MeshNode, Clock, FakeLink, FakeLink]:
    """A node with ``limits``, its clock, and two peers that speak lazy push: one eager, one pruned."""
    node, clock, _ = make_node(limits=limits)
    eager, pruned = mesh_link(node), mesh_link(node)
    prune(node, pruned)
    return node, clock, eager, pruned


def test_a_repeat_prunes_a_link_that_speaks_lazy_push() -> None:
    """
    A peer that speaks lazy push sends a repeat in the turn the node's copy
    waits for it: the copy is withdrawn, the link pruned, and the peer told
    at once (it will get no repeat from the node); told again if it sends
    repeats still.
    """
    node, _, _ = make_node()
    a, b = mesh_link(node), mesh_link(node)
    msg = broadcast(new_node_id(MESH), "hello")
    node.message_received(a, msg)
    node.message_received(b, again(msg, True))
    assert b.words == [(flags.prune,)] and a.words == []
    assert node.tree.lazy == {b} and node.stats.pruned == 1
    second = broadcast(new_node_id(MESH), "again")
    node.message_received(a, second)
    assert b.take() == [], "sent to a pruned link"
    node.message_received(b, again(second, True))
    assert b.words == [(flags.prune,)] * 2


def test_a_peer_that_got_the_node_s_copy_is_not_told() -> None:
    """
    A repeat from a peer that the node's copy went to: the peer prunes the
    link on its own, when that copy reaches it as a repeat; it is told only
    if it sends a repeat again.
    """
    node, clock, _ = make_node()
    a, b = mesh_link(node), mesh_link(node)
    msg = broadcast(new_node_id(MESH), "hello")
    node.message_received(a, msg)
    clock.advance(0)  # the turn ends: the copy for b is written
    assert b.take() == [msg]
    node.message_received(b, again(msg, True))
    assert node.tree.lazy == {b} and b.words == []
    second = broadcast(new_node_id(MESH), "again")
    node.message_received(a, second)
    node.message_received(b, again(second, True))
    assert b.words == [(flags.prune,)]


def test_a_repeat_from_the_sender_of_a_broadcast_tells_it() -> None:
    """The node sends no copy to the broadcast's sender: the sender, a peer, is told to prune."""
    node, _, _ = make_node()
    a, sender = mesh_link(node), mesh_link(node)
    assert sender.peer_id is not None
    msg = broadcast(sender.peer_id, "hello")
    node.message_received(a, msg)
    node.message_received(sender, again(msg, True))
    assert sender.words == [(flags.prune,)] and node.tree.lazy == {sender}


def test_a_repeat_from_a_reference_node_prunes_nothing() -> None:
    """py2p and js2p do not speak lazy push: their links carry every broadcast, whatever they repeat."""
    node, clock, _ = make_node()
    a, py2p = mesh_link(node), add_link(node)
    msg = broadcast(new_node_id(MESH), "hello")
    node.message_received(a, msg)
    clock.advance(0)
    node.message_received(py2p, again(msg, True))
    assert py2p.words == [] and not node.tree.lazy
    later = broadcast(new_node_id(MESH), "later")
    node.message_received(a, later)
    assert py2p.take() == [msg, later]


def test_a_pruned_link_is_announced_broadcasts_not_sent_them() -> None:
    """
    A broadcast goes whole to the eager links; to a pruned one, its stamp
    and key go ANNOUNCE_DELAY later, with those of the other broadcasts of
    that time, in one word; never to the link it came from.
    """
    node, clock, _ = make_node()
    a, eager, pruned = mesh_link(node), mesh_link(node), mesh_link(node)
    prune(node, pruned)
    prune(node, a)
    first, second = broadcast(new_node_id(MESH), "one"), broadcast(new_node_id(MESH), "two", time=START - 1)
    node.message_received(a, first)
    clock.advance(ANNOUNCE_DELAY / 2 - 0.01)
    node.message_received(eager, second)
    assert eager.take() == [first] and a.take() == [] and pruned.take() == []
    assert pruned.words == [] and a.words == []
    clock.advance(ANNOUNCE_DELAY / 2 + 0.01)
    assert pruned.words == [(flags.ihave, [(first.time, first.key), (second.time, second.key)])]
    assert a.words == [(flags.ihave, [(second.time, second.key)])]
    assert node.stats.announced == 3


def test_own_broadcasts_are_announced_to_pruned_links_and_reported_queued() -> None:
    """The node's own broadcast: sent to the eager links, announced to the pruned one; all three are queued."""
    node, clock, _ = make_node()
    a, b, pruned = mesh_link(node), mesh_link(node), mesh_link(node)
    prune(node, pruned)
    result = node.send(("mine",))
    assert sorted(result.queued) == sorted(link.peer_id for link in (a, b, pruned))
    (msg,) = a.take()
    assert b.take() == [msg] and pruned.take() == []
    clock.advance(ANNOUNCE_DELAY)
    assert pruned.words == [(flags.ihave, [(msg.time, msg.key)])]
    node.send(("a whisper",), flag=flags.whisper)
    assert len(pruned.take()) == 1, "a whisper goes to every peer"


def test_an_announced_broadcast_that_does_not_come_is_asked_for() -> None:
    """
    A broadcast two peers announced and that does not come: GRAFT_WAIT
    later the first is asked for it, and its link is eager again; still
    nothing after as long again, the second is asked.  Once it comes,
    nobody more is asked.
    """
    node, clock, _ = make_node()
    a, b, c = mesh_link(node), mesh_link(node), mesh_link(node)
    for link in (a, b, c):
        prune(node, link)
    msg = broadcast(new_node_id(MESH), "hello")
    entry = [(msg.time, msg.key)]
    node.tree_word_received(a, (flags.ihave, entries(msg)))
    node.tree_word_received(b, (flags.ihave, entries(msg)))
    clock.advance(GRAFT_WAIT - 0.01)
    assert a.words == b.words == []
    clock.advance(0.01)
    assert grafts(a) == [(flags.graft, entry)] and grafts(b) == []
    assert a not in node.tree.lazy and node.stats.grafted == 1
    clock.advance(GRAFT_WAIT)
    assert grafts(b) == [(flags.graft, entry)] and b not in node.tree.lazy
    node.message_received(b, msg)
    assert [m.packets for m in node.recv(10)] == [(flags.broadcast, "hello")]  # type: ignore[union-attr]
    assert a.take() == [msg], "relayed on the link eager again"
    clock.advance(GRAFT_WAIT * 4)
    assert grafts(c) == [] and not node.tree.missing


def test_a_broadcast_that_comes_before_the_wait_ends_is_not_asked_for() -> None:
    """An announced broadcast that arrives by its tree link in time: nothing is asked."""
    node, clock, _ = make_node()
    eager, pruned = mesh_link(node), mesh_link(node)
    prune(node, pruned)
    msg = broadcast(new_node_id(MESH), "hello")
    node.tree_word_received(pruned, (flags.ihave, entries(msg)))
    assert msg.key in node.tree.missing
    node.message_received(eager, msg)
    assert not node.tree.missing
    clock.advance(GRAFT_WAIT * 4)
    assert grafts(pruned) == []


def test_announcements_of_what_the_node_has_or_cannot_accept_ask_for_nothing() -> None:
    """A broadcast seen already, one the node announced itself, and one out of its lifetime are not asked for."""
    node, clock, _ = make_node()
    eager, pruned = mesh_link(node), mesh_link(node)
    prune(node, pruned)
    seen = broadcast(new_node_id(MESH), "seen")
    node.message_received(eager, seen)
    own = node.send(("own",))
    assert own.queued
    old = broadcast(new_node_id(MESH), "old", time=START - MESSAGE_LIFETIME - 1)
    node.tree_word_received(pruned, (flags.ihave, entries(seen, old)))
    clock.advance(ANNOUNCE_DELAY)
    ((word, announced),) = pruned.words
    # The node's own broadcast, announced back to it.
    node.tree_word_received(pruned, (word, [list(entry) for entry in announced]))
    clock.advance(GRAFT_WAIT * 4)
    assert [word[0] for word in pruned.words] == [flags.ihave]
    assert not node.tree.missing


def test_a_graft_is_answered_and_makes_the_link_eager() -> None:
    """A peer asks for a broadcast announced to it: it is sent, and so are later ones."""
    node, clock, a, pruned = with_pruned_link()
    msg = broadcast(new_node_id(MESH), "hello")
    node.message_received(a, msg)
    clock.advance(ANNOUNCE_DELAY)
    node.tree_word_received(pruned, (flags.graft, entries(msg)))
    assert keys(pruned.take()) == [msg.key] and pruned not in node.tree.lazy
    later = broadcast(new_node_id(MESH), "later")
    node.message_received(a, later)
    assert pruned.take() == [later]


def test_a_broadcast_is_kept_for_grafts_for_a_while() -> None:
    """After KEEP_FOR seconds, a broadcast announced is no longer kept: a graft for it is counted, and gets nothing."""
    node, clock, a, pruned = with_pruned_link()
    msg = broadcast(new_node_id(MESH), "hello")
    node.message_received(a, msg)
    clock.advance(KEEP_FOR + ANNOUNCE_DELAY)
    node.tree_word_received(pruned, (flags.graft, entries(msg)))
    assert pruned.take() == []
    assert node.stats.dropped["graft_unknown"] == 1


def same_size(count: int, size: int = 1000) -> list[WireMessage]:
    """``count`` broadcasts of one sender, each of the same size."""
    sender = new_node_id(MESH)
    return [broadcast(sender, f"{i:04d}" + "x" * size) for i in range(count)]


def test_kept_broadcasts_are_bounded_in_bytes() -> None:
    """Past Limits.max_kept_bytes, the oldest broadcast kept goes first; the limit says so."""
    msgs = same_size(5)
    size = len(msgs[0].body_in(True))
    node, _, a, pruned = with_pruned_link(limits=Limits(max_kept_bytes=4 * size))
    for msg in msgs:
        node.message_received(a, msg)
    assert pruned.take() == []
    node.tree_word_received(pruned, (flags.graft, entries(*msgs)))
    assert keys(pruned.take()) == keys(msgs[1:])
    assert node.stats.limit_hits["max_kept_bytes"] == 1


def test_a_broadcast_too_large_to_keep_is_sent_whole() -> None:
    """A broadcast larger than a quarter of Limits.max_kept_bytes goes whole to the pruned links too."""
    (msg,) = same_size(1)
    node, clock, a, pruned = with_pruned_link(limits=Limits(max_kept_bytes=4 * len(msg.body_in(True)) - 4))
    node.message_received(a, msg)
    assert pruned.take() == [msg]
    clock.advance(ANNOUNCE_DELAY)
    assert pruned.words == []
    own = node.send(("y" * 2000,))
    assert pruned.peer_id in own.queued and len(pruned.take()) == 1


def test_a_graft_is_answered_once_per_peer() -> None:
    """A peer that asks for the same broadcast again, in one graft or the next, is sent it once."""
    node, clock, a, pruned = with_pruned_link()
    msg = broadcast(new_node_id(MESH), "hello")
    node.message_received(a, msg)
    clock.advance(ANNOUNCE_DELAY)
    node.tree_word_received(pruned, (flags.graft, entries(msg, msg)))
    node.tree_word_received(pruned, (flags.graft, entries(msg)))
    assert keys(pruned.take()) == [msg.key]
    assert node.stats.dropped["graft_repeated"] == 2
    assert node.stats.relayed == 1, "the copy asked for"


def test_words_from_a_link_not_in_the_routing_table_are_ignored() -> None:
    """A second link of a peer, not the one in the routing table, prunes nothing and is not answered."""
    node, clock, a, pruned = with_pruned_link()
    assert pruned.peer_id is not None
    twin = FakeLink(pruned.peer_id)
    twin.lazy_push = True
    msg = broadcast(new_node_id(MESH), "hello")
    node.message_received(a, msg)
    node.tree_word_received(twin, (flags.prune,))
    node.tree_word_received(twin, (flags.graft, entries(msg)))
    node.tree_word_received(twin, (flags.ihave, entries(broadcast(new_node_id(MESH), "other"))))
    assert twin not in node.tree.lazy and twin.take() == [] and not node.tree.missing


def test_nothing_is_announced_to_a_link_that_closed() -> None:
    """A pruned link that closes is forgotten: what waited to be announced to it is not written."""
    node, clock, a, pruned = with_pruned_link()
    node.message_received(a, broadcast(new_node_id(MESH), "hello"))
    pruned.closing = True
    node.link_lost(pruned)
    clock.advance(ANNOUNCE_DELAY)
    assert pruned.words == [] and not node.tree.lazy


def test_losing_a_link_of_the_tree_makes_the_pruned_links_eager() -> None:
    """
    A link of the tree (not pruned) closes: the tree may be cut there, so
    every pruned link is made eager again at both ends, with a graft that
    asks for nothing, and the next broadcast goes over each of them.
    """
    node, _, _ = make_node()
    tree_link, a, b, py2p = mesh_link(node), mesh_link(node), mesh_link(node), add_link(node)
    prune(node, a)
    prune(node, b)
    tree_link.closing = True
    node.link_lost(tree_link)
    assert a.words == b.words == [(flags.graft, [])] and py2p.words == []
    assert not node.tree.lazy
    msg = broadcast(new_node_id(MESH), "after the cut")
    node.message_received(py2p, msg)
    assert a.take() == b.take() == [msg]


def test_losing_a_pruned_link_or_a_twin_makes_nothing_eager() -> None:
    """A pruned link, or a second link to a peer, that closes cuts no tree: the other pruned links stay so."""
    node, _, eager, pruned = with_pruned_link()
    other = mesh_link(node)
    prune(node, other)
    pruned.closing = True
    node.link_lost(pruned)
    assert eager.peer_id is not None
    twin = FakeLink(eager.peer_id)
    twin.closing = True
    node.link_lost(twin)
    assert other.words == [] and node.tree.lazy == {other}


def test_a_graft_that_asks_for_nothing_makes_the_link_eager() -> None:
    """A peer that lost a link of its tree sends ``[graft, []]``: the link is eager again, and nothing is sent."""
    node, _, a, pruned = with_pruned_link()
    node.tree_word_received(pruned, (flags.graft, []))
    assert not node.tree.lazy and pruned.take() == [] and node.stats.dropped == {}
    msg = broadcast(new_node_id(MESH), "hello")
    node.message_received(a, msg)
    assert pruned.take() == [msg]


def test_a_closed_node_makes_nothing_eager() -> None:
    """A node that closes loses every link: none of that is a cut tree to mend."""
    node, _, eager, pruned = with_pruned_link()
    node.close("closed by the test")
    eager.closing = True
    node.link_lost(eager)
    assert pruned.words == []


def test_many_keys_go_in_several_words() -> None:
    """More keys than MAX_KEYS_PER_FRAME are announced in several words."""
    node, clock, a, pruned = with_pruned_link()
    for i in range(MAX_KEYS_PER_FRAME + 1):
        node.message_received(a, broadcast(new_node_id(MESH), i))
    clock.advance(ANNOUNCE_DELAY)
    assert [len(word[1]) for word in pruned.words] == [MAX_KEYS_PER_FRAME, 1]


@pytest.mark.parametrize(
    "payload",
    [
        (flags.prune, 1),
        (flags.ihave,),
        (flags.ihave, [[START]]),
        (flags.ihave, [[START, b"short"]]),
        (flags.ihave, [["now", b"k" * 32]]),
        (flags.graft, "keys"),
        (flags.graft, [[START, b"k" * 32]] * (MAX_KEYS_PER_FRAME + 1)),
    ],
)
def test_a_malformed_word_closes_the_link(payload: tuple[object, ...]) -> None:
    """A prune, announcement or graft of the wrong shape closes the link, saying what it was."""
    node, _, _ = make_node()
    link = mesh_link(node)
    node.tree_word_received(link, payload)
    assert len(link.closes) == 1 and link.closes[0].startswith("malformed")


def test_one_peer_announces_at_most_its_share_of_missing_broadcasts() -> None:
    """
    A peer that announces more broadcasts the node has not got than
    Limits.max_missing_per_peer: those past it are dropped, counted, and the
    limit says so; another peer's announcements are still waited for, and
    once those of the first come, it has room again.  A peer that announces
    the same one twice is asked once.
    """
    node, clock, _ = make_node(limits=Limits(max_missing_per_peer=2))
    flooder, honest, eager = mesh_link(node), mesh_link(node), mesh_link(node)
    prune(node, flooder)
    prune(node, honest)
    msgs = [broadcast(new_node_id(MESH), i) for i in range(5)]
    node.tree_word_received(flooder, (flags.ihave, entries(*msgs[:3])))
    node.tree_word_received(flooder, (flags.ihave, entries(msgs[0])))
    node.tree_word_received(honest, (flags.ihave, entries(msgs[3])))
    assert set(node.tree.missing) == {msgs[0].key, msgs[1].key, msgs[3].key}
    assert node.stats.dropped["announcement_overflow"] == 1
    assert node.stats.limit_hits["max_missing_per_peer"] == 1
    node.message_received(eager, msgs[0])
    node.tree_word_received(flooder, (flags.ihave, entries(msgs[4])))
    assert msgs[4].key in node.tree.missing
    clock.advance(GRAFT_WAIT)
    asked = [entry for _, listed in grafts(flooder) for entry in listed]  # type: ignore[attr-defined]
    assert asked == [(msg.time, msg.key) for msg in (msgs[1], msgs[4])]
    assert grafts(honest) == [(flags.graft, [(msgs[3].time, msgs[3].key)])]
    clock.advance(GRAFT_WAIT)
    assert not node.tree.missing and len(grafts(flooder)) == 2


def test_a_repeat_of_a_broadcast_too_large_to_keep_prunes_nothing() -> None:
    """
    A broadcast too large to keep crosses pruned links too: when it comes
    first over one, its copy from the tree is a repeat that must not prune
    the tree's link.
    """
    (msg,) = same_size(1)
    node, _, eager, pruned = with_pruned_link(limits=Limits(max_kept_bytes=4 * len(msg.body_in(True)) - 4))
    node.message_received(pruned, msg)
    node.message_received(eager, again(msg, True))
    assert node.tree.lazy == {pruned} and eager.words == []


def test_a_peer_asked_once_is_not_asked_again_and_the_first_has_room_again() -> None:
    """
    A peer asked for a broadcast that sent nothing is not asked again when
    it announces it again; once no peer is left to ask, the broadcast is
    forgotten, and the share of the peer that announced it first is free.
    """
    node, clock, _ = make_node(limits=Limits(max_missing_per_peer=1))
    first, other = mesh_link(node), mesh_link(node)
    prune(node, first)
    prune(node, other)
    msg = broadcast(new_node_id(MESH), "never sent")
    node.tree_word_received(first, (flags.ihave, entries(msg)))
    clock.advance(GRAFT_WAIT)
    assert len(grafts(first)) == 1
    node.tree_word_received(first, (flags.ihave, entries(msg)))
    node.tree_word_received(other, (flags.ihave, entries(msg)))
    clock.advance(GRAFT_WAIT)
    assert len(grafts(first)) == 1 and len(grafts(other)) == 1
    clock.advance(GRAFT_WAIT)
    assert not node.tree.missing
    later = broadcast(new_node_id(MESH), "later")
    node.tree_word_received(first, (flags.ihave, entries(later)))
    assert later.key in node.tree.missing and node.stats.dropped["announcement_overflow"] == 0


def test_a_broadcast_waited_for_past_its_lifetime_is_forgotten() -> None:
    """A broadcast announced again and again, never sent, is forgotten once it is too old to be taken."""
    node, clock, _ = make_node()
    links = [mesh_link(node) for _ in range(3)]
    for link in links:
        prune(node, link)
    msg = broadcast(new_node_id(MESH), "old", time=START - MESSAGE_LIFETIME + 1)
    node.tree_word_received(links[0], (flags.ihave, entries(msg)))
    node.tree_word_received(links[1], (flags.ihave, entries(msg)))
    clock.advance(1.0)
    node.tree_word_received(links[2], (flags.ihave, entries(msg)))
    clock.advance(GRAFT_WAIT * 4)
    assert not node.tree.missing
    assert grafts(links[2]) == []


def test_kept_broadcasts_answer_each_link_once_and_forget() -> None:
    """
    What a link was sent is kept no longer than the broadcasts themselves:
    forgotten when the link closes, and when nothing is kept any more.
    """
    clock = Clock()
    kept = KeptBroadcasts(clock, Limits(), lambda *args, **kwargs: None)
    msgs = [broadcast(new_node_id(MESH), i) for i in range(2)]
    for msg in msgs:
        kept.keep(msg)
    link = FakeLink(new_node_id(MESH))
    assert kept.answer(link, [msg.key for msg in msgs]) == (2, 0, 0)
    assert kept.answer(link, [msgs[0].key]) == (0, 0, 1)
    kept.forget(link)
    assert kept.answer(link, [msgs[0].key]) == (1, 0, 0)
    clock.advance(KEEP_FOR)
    kept.expire()
    assert not kept and msgs[0].key not in kept
    assert kept.answer(link, [msgs[0].key]) == (0, 1, 0)
    kept.keep(msgs[0])
    assert kept.answer(link, [msgs[0].key]) == (1, 0, 0), "what was sent before the broadcast went is forgotten"
    assert keys(link.take()) == [msgs[0].key, msgs[1].key, msgs[0].key, msgs[0].key]


def test_a_closed_node_keeps_nothing_and_announces_nothing() -> None:
    """Closing the node cancels the announcements and forgets what was kept and what was waited for."""
    node, clock, a, pruned = with_pruned_link()
    node.message_received(a, broadcast(new_node_id(MESH), "hello"))
    node.tree_word_received(pruned, (flags.ihave, entries(broadcast(new_node_id(MESH), "missing"))))
    node.close("closing")
    assert not node.tree.missing
    clock.advance(ANNOUNCE_DELAY + KEEP_FOR)
    assert [word[0] for word in pruned.words] == []
