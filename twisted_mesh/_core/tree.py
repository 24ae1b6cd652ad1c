"""
`.BroadcastTree`: lazy push between twisted_mesh nodes, so that a broadcast
crosses most links as a key of a few bytes, not as a whole frame.

A flood sends each broadcast over every link, most of them both ways, and
every node but one drops all copies but the first.  Between two
twisted_mesh nodes that both speak lazy push (each says so once, with
`.flags.lazy_push`, after the first words), a link that brings a broadcast
the node had already is *pruned*: the node sends no more broadcasts over
it, and neither does the peer, which got the node's copy as a repeat of
its own, or else is told at once (`.flags.prune`: a peer told later would
go on sending, and the repeats that brought would prune the links of the
tree); both ends instead announce, a while later and a batch at a time,
the keys of those they got (`.flags.ihave`).  The first
broadcast prunes every link but those that brought it first: the links
left *eager* form a tree that spans the mesh, and later broadcasts cross
each link once.

A node that hears of a broadcast it has not got waits `.GRAFT_WAIT` seconds
for it, then asks a peer that announced it (`.flags.graft`): the peer sends
it, and the link is eager again, both ends.  If it still does not come, the
next peer that announced it is asked, and so on.  And a node that loses a
link of the tree makes its pruned links eager again (a graft that asks for
nothing), so that a tree cut by a link that closed mends itself at once:
the next broadcast prunes what is not needed.  Links to py2p, js2p or a
web page never say they speak lazy push, and carry every broadcast, both
ways, as before.

This is the Plumtree of Leitão, Pereira and Rodrigues ("Epidemic Broadcast
Trees", SRDS 2007), with one tree shared by all senders.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.interfaces import IDelayedCall

from twisted_mesh import flags
from twisted_mesh._core.context import NodeContext
from twisted_mesh._core.kept import KeptBroadcasts
from twisted_mesh._core.link import Link
from twisted_mesh._core.routing import RoutingTable
from twisted_mesh._core.seen import KEY_SIZE, MESSAGE_LIFETIME, SeenSet
from twisted_mesh._frames import WireMessage
from twisted_mesh._logs import NODE, NodeLogger, logged

#: The most seconds a node gathers the keys it announces to a pruned link
#: before it writes them, in one frame: one frame of keys, not one per
#: broadcast.  Each time, it waits a random time between half this and this,
#: so that the nodes that heard of the same broadcast do not all write
#: their announcements in the same instant.  Every pruned link carries such
#: a frame each time, so this sets what the announcements cost (at 1,000
#: nodes of degree 10, one second made them more frames than the
#: broadcasts), and how long a broadcast on its way when a link of the tree
#: closed takes to come: under churn, four seconds made it later than three
#: seconds for hundreds of deliveries.
ANNOUNCE_DELAY = 2.0

#: Seconds a node waits for a broadcast it was told of before it asks a
#: peer that announced it (and then the next one, after as long again).
GRAFT_WAIT = 0.5

#: The most keys in one announcement or one request.
MAX_KEYS_PER_FRAME = 1024

#: A key as it is announced: the broadcast's stamp, and its checksum.
Entry = tuple[int, bytes]


def read_entries(payload: tuple[Any, ...]) -> list[Entry] | None:
    """
    Read ``[word, [[time, key], ...]]``: the stamps and keys it lists, or
    ``None`` when it has another shape.
    """
    if len(payload) != 2 or not isinstance(payload[1], list) or len(payload[1]) > MAX_KEYS_PER_FRAME:
        return None
    entries = []
    for item in payload[1]:
        if not isinstance(item, list) or len(item) != 2:
            return None
        time, key = item
        if type(time) is not int or type(key) is not bytes or len(key) != KEY_SIZE:
            return None
        entries.append((time, key))
    return entries


class _Missing:
    """
    A broadcast announced to the node that it has not got: its stamp, the
    peer that announced it first (whose share of `.Limits.max_missing_per_peer`
    it takes), and the peers left to ask.
    """

    __slots__ = ("time", "first", "announcers", "asked")

    def __init__(self, time: int, announcer: Link) -> None:
        self.time = time
        self.first = announcer
        self.announcers = [announcer]
        self.asked: set[Link] = set()


class BroadcastTree:
    """
    Which peers a node sends its broadcasts to, and which it announces them
    to; what it was told of and still waits for.

    :ivar lazy: the links that are pruned: broadcasts are announced to their
        peers, not sent.
    :ivar missing: the broadcasts announced to the node and not got yet, by
        key (the relay calls `.arrived` for each one that comes).
    """

    def __init__(self, node: NodeContext, routing: RoutingTable, seen: SeenSet) -> None:
        self._log = NodeLogger(NODE, node.id, self)
        self._clock = node.clock
        self._stats = node.stats
        self._hit = node.log.hit
        self._table = routing.table
        self._seen = seen
        limits = node.limits
        self._max_missing = limits.max_missing_per_peer
        self.lazy: set[Link] = set()
        self.missing: dict[bytes, _Missing] = {}
        # How many of the missing ones each peer announced first.
        self._missing_from: dict[Link, int] = {}
        # The keys waiting to be announced, by link; the broadcasts
        # announced, for the peers that ask.
        self._pending: dict[Link, list[Entry]] = {}
        self._kept = KeptBroadcasts(node.clock, limits, node.log.hit)
        self._announcing: IDelayedCall | None = None

    # -- what the relay and the outbox call ---------------------------------

    def too_large(self, msg: WireMessage) -> bool:
        """
        Whether broadcast ``msg`` is too large to be kept for the peers
        that ask (a quarter of `.Limits.max_kept_bytes`): it goes whole to
        every peer, pruned links too, and a repeat of it prunes nothing.
        """
        return len(msg.body_in(msg.sender_is_bin)) > self._kept.largest

    def lazy_for(self, msg: WireMessage) -> set[Link] | tuple[()]:
        """The links that broadcast ``msg`` is announced to, not sent: the pruned ones, unless it is `too_large`."""
        return () if self.too_large(msg) else self.lazy

    def announce(self, msg: WireMessage, links: list[Link]) -> None:
        """Announce broadcast ``msg`` to the pruned ``links``, with the next batch; keep it for them to ask."""
        entry, pending = (msg.time, msg.key), self._pending
        for link in links:
            entries = pending.get(link)
            if entries is None:
                pending[link] = [entry]
            else:
                entries.append(entry)
        self._kept.keep(msg)
        if self._announcing is None:
            self._announce_later()

    def arrived(self, key: bytes) -> None:
        """The broadcast ``key`` came: it is missing no more."""
        known = self.missing.pop(key, None)
        if known is not None:
            self._release(known.first)

    def repeat(self, link: Link, *, has_ours: bool) -> None:
        """
        ``link`` brought a broadcast the node had already: if its peer
        speaks lazy push, the link is pruned.

        :param has_ours: whether the peer gets the node's copy of it, and so
            a repeat of its own, which prunes the link at its end: it is
            told only when it does not, or when it sends repeats still.
        """
        if not link.lazy_push:
            return
        lazy = self.lazy
        if link in lazy:
            link.renegotiate(flags.prune)
            return
        lazy.add(link)
        self._stats.pruned += 1
        if not has_ours:
            link.renegotiate(flags.prune)

    def close(self) -> None:
        """The node closes: nothing more is announced, kept, waited for or made eager again."""
        if self._announcing is not None and self._announcing.active():
            self._announcing.cancel()
        self._announcing = None
        self.lazy.clear()
        self._pending.clear()
        self.missing.clear()
        self._missing_from.clear()
        self._kept.clear()

    def forget(self, link: Link) -> None:
        """
        ``link`` closed: nothing more is announced to it, nor asked of it.
        When it was a link of the tree (its peer's link, not pruned), the
        tree may be cut there: every pruned link is made eager again, at
        both ends (a graft that asks for nothing), so that the next
        broadcasts cross the cut at once, and their repeats prune the links
        that are not needed, as the first broadcast did.  Only what was on
        its way when the link closed waits for an announcement.
        """
        lazy = self.lazy
        of_the_tree = link not in lazy and link.peer_id is not None and self._table.get(link.peer_id) is link
        lazy.discard(link)
        self._pending.pop(link, None)
        self._kept.forget(link)
        if of_the_tree and lazy:
            self._log.debug(
                "{peer}, a link of the tree, left: {count} pruned links eager again",
                peer=logged(link.peer_id),
                count=len(lazy),
            )
            for pruned in lazy:
                pruned.renegotiate(flags.graft, [])
            lazy.clear()

    # -- what the peer says -------------------------------------------------

    def word_received(self, link: Link, payload: tuple[Any, ...]) -> None:
        """
        The identified peer of ``link``, which said it speaks lazy push,
        sent a word of it: `.flags.prune`, `.flags.ihave` or `.flags.graft`.
        A malformed one closes the link; one from a link that is not the
        peer's in the routing table (a second link, closing) is ignored.
        """
        if link.peer_id is None or self._table.get(link.peer_id) is not link:
            return
        word = payload[0]
        if word == flags.prune:
            if len(payload) != 1:
                link.close("malformed prune")
                return
            self.lazy.add(link)
            return
        entries = read_entries(payload)
        if entries is None:
            link.close("malformed " + ("announcement" if word == flags.ihave else "graft"))
        elif word == flags.ihave:
            self._announced(link, entries)
        else:
            self._grafted(link, entries)

    def _announced(self, link: Link, entries: list[Entry]) -> None:
        """``link``'s peer announced ``entries``: those the node has not seen, it waits for."""
        now, kept, missing, seen = self._clock.seconds(), self._kept, self.missing, self._seen
        share = self._missing_from.get(link, 0)
        waiting, dropped = [], 0
        for time, key in entries:
            if key in kept or not now - MESSAGE_LIFETIME <= time <= now + MESSAGE_LIFETIME:
                continue
            if seen.holds(key, time):
                continue
            known = missing.get(key)
            if known is not None:
                if link not in known.announcers and link not in known.asked:
                    known.announcers.append(link)
            elif share < self._max_missing:
                missing[key] = _Missing(time, link)
                waiting.append(key)
                share += 1
            else:
                dropped += 1
        if share:
            self._missing_from[link] = share
        if dropped:
            self._stats.dropped["announcement_overflow"] += dropped
            self._hit(
                "max_missing_per_peer",
                "{peer} announced more broadcasts than the node waits for from one peer ({most}): {dropped} dropped",
                peer=logged(link.peer_id),
                most=self._max_missing,
                dropped=dropped,
            )
        if waiting:
            self._clock.callLater(GRAFT_WAIT, self._ask, waiting)

    def _ask(self, keys: list[bytes]) -> None:
        """Ask for each of ``keys`` still missing, of the next peer that announced it."""
        missing, table = self.missing, self._table
        oldest = self._clock.seconds() - MESSAGE_LIFETIME
        asks: dict[Link, list[Entry]] = {}
        again = []
        for key in keys:
            known = missing.get(key)
            if known is None:
                continue
            announcers = known.announcers
            while announcers and known.time >= oldest:
                link = announcers.pop(0)
                if not link.closing and table.get(link.peer_id or "") is link:
                    known.asked.add(link)
                    asks.setdefault(link, []).append((known.time, key))
                    again.append(key)
                    break
            else:
                # No peer left to ask (each one asked sent nothing, or left),
                # or too old to be taken now: forgotten.
                del missing[key]
                self._release(known.first)
        for link, entries in asks.items():
            self.lazy.discard(link)
            self._stats.grafted += len(entries)
            for start in range(0, len(entries), MAX_KEYS_PER_FRAME):
                link.renegotiate(flags.graft, entries[start : start + MAX_KEYS_PER_FRAME])
        if again:
            self._clock.callLater(GRAFT_WAIT, self._ask, again)

    def _release(self, link: Link) -> None:
        """One broadcast that ``link``'s peer announced first is missing no more."""
        share = self._missing_from.get(link, 0) - 1
        if share > 0:
            self._missing_from[link] = share
        else:
            self._missing_from.pop(link, None)

    def _grafted(self, link: Link, entries: list[Entry]) -> None:
        """
        ``link``'s peer asked for ``entries``: the link is eager again, and
        each one kept is sent, once to a peer however often it asks.
        """
        self.lazy.discard(link)
        sent, unknown, again = self._kept.answer(link, (key for _, key in entries))
        stats = self._stats
        stats.relayed += sent
        if unknown:
            stats.dropped["graft_unknown"] += unknown
            self._log.debug(
                "{peer} asked for {count} broadcasts no longer kept", peer=logged(link.peer_id), count=unknown
            )
        if again:
            stats.dropped["graft_repeated"] += again
            self._log.debug("{peer} asked again for {count} broadcasts", peer=logged(link.peer_id), count=again)

    # -- announcing ---------------------------------------------------------

    def _write_announcements(self) -> None:
        """Write to each pruned link the keys gathered for it; forget the broadcasts kept long enough."""
        self._announcing = None
        pending, self._pending = self._pending, {}
        for link, entries in pending.items():
            if not link.closing:
                self._write(link, entries)
        self._kept.expire()
        if self._kept:
            # Nothing more announced yet: still forget what expires.
            self._announce_later()

    def _write(self, link: Link, entries: list[Entry]) -> None:
        """Announce ``entries`` to ``link``'s peer, `.MAX_KEYS_PER_FRAME` to a word."""
        self._stats.announced += len(entries)
        for start in range(0, len(entries), MAX_KEYS_PER_FRAME):
            link.renegotiate(flags.ihave, entries[start : start + MAX_KEYS_PER_FRAME])

    def _announce_later(self) -> None:
        """Write the announcements in a random time between half `.ANNOUNCE_DELAY` and all of it."""
        delay = ANNOUNCE_DELAY * (1 + random.random()) / 2
        self._announcing = self._clock.callLater(delay, self._write_announcements)
