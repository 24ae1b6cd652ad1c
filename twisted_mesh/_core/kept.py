"""
`.KeptBroadcasts`: the broadcasts a node announced to pruned links (see
`.BroadcastTree`), kept a while for the peers that ask for them, and which
of them each peer was sent already.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from twisted.internet.interfaces import IReactorTime

from twisted_mesh._core.link import Link
from twisted_mesh._frames import WireMessage

#: Seconds a node keeps a broadcast it announced, for the peers that ask.
KEEP_FOR = 10.0


class KeptBroadcasts:
    """
    The broadcasts announced lately, by key: each for `.KEEP_FOR` seconds,
    and at most ``max_bytes`` of them (the oldest go first; ``hit`` is
    called, as `.NodeLog.hit` is, when that bites).

    :ivar largest: the largest broadcast kept (a quarter of ``max_bytes``):
        a larger one is not announced but sent whole to every peer.
    """

    def __init__(self, clock: IReactorTime, max_bytes: int, hit: Callable[..., None]) -> None:
        self._clock = clock
        self._max_bytes = max_bytes
        self._hit = hit
        self.largest = max_bytes // 4
        self._kept: dict[bytes, WireMessage] = {}
        # When each broadcast goes, its key and its size, the oldest first.
        self._expiry: deque[tuple[float, bytes, int]] = deque()
        self._bytes = 0
        # The keys that each peer asked for and was sent.
        self._answered: dict[Link, set[bytes]] = {}

    def __contains__(self, key: bytes) -> bool:
        return key in self._kept

    def __bool__(self) -> bool:
        return bool(self._kept)

    def keep(self, msg: WireMessage) -> None:
        """Keep ``msg``, unless it is kept already."""
        if msg.key in self._kept:
            return
        size = len(msg.body_in(msg.sender_is_bin))
        self._kept[msg.key] = msg
        self._expiry.append((self._clock.seconds() + KEEP_FOR, msg.key, size))
        self._bytes += size
        if self._bytes > self._max_bytes:
            while self._bytes > self._max_bytes:
                self._forget_oldest()
            self._hit(
                "max_kept_bytes",
                "more than {most} bytes of broadcasts announced: the oldest are no longer kept for the peers that ask",
                most=self._max_bytes,
            )

    def answer(self, link: Link, keys: Iterable[bytes]) -> tuple[int, int, int]:
        """
        Send the peer of ``link`` each of ``keys`` that is kept, once
        however often it asks.

        :return: how many were sent, how many are not kept, and how many
            the peer was sent already.
        """
        kept = self._kept
        answered = self._answered.setdefault(link, set())
        sent = unknown = again = 0
        for key in keys:
            msg = kept.get(key)
            if msg is None:
                unknown += 1
            elif key in answered:
                again += 1
            elif link.send(msg) is None:
                answered.add(key)
                sent += 1
        if len(answered) > len(kept):
            answered.intersection_update(kept)
        return sent, unknown, again

    def expire(self) -> None:
        """Forget the broadcasts kept for `.KEEP_FOR` seconds."""
        now, expiry = self._clock.seconds(), self._expiry
        while expiry and expiry[0][0] <= now:
            self._forget_oldest()
        if not expiry:
            # Nothing kept: nothing asked for can be sent again.
            self._answered.clear()

    def forget(self, link: Link) -> None:
        """``link`` closed: what its peer was sent is forgotten."""
        self._answered.pop(link, None)

    def _forget_oldest(self) -> None:
        """Forget the broadcast kept the longest."""
        _, key, size = self._expiry.popleft()
        del self._kept[key]
        self._bytes -= size
