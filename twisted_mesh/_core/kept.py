"""
`.KeptBroadcasts`: the broadcasts a node announced to pruned links (see
`.BroadcastTree`), kept a while for the peers that ask for them, and which
of them each link was sent already.

A broadcast is kept as the bytes it came as, not as the message read from
them (whose packets may take many times the room): the few that a peer
asks for are read again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from twisted.internet.interfaces import IReactorTime

from twisted_mesh._core.link import Link
from twisted_mesh._frames import WireMessage
from twisted_mesh.limits import Limits

#: Seconds a node keeps a broadcast it announced, for the peers that ask.
KEEP_FOR = 10.0


class KeptBroadcasts:
    """
    The broadcasts announced lately, by key: each for `.KEEP_FOR` seconds,
    and at most `.Limits.max_kept_bytes` of them (the oldest go first;
    ``hit`` is called, as `.NodeLog.hit` is, when that bites).

    :ivar largest: the largest broadcast kept (a quarter of the bound): a
        larger one is not announced but sent whole to every peer.
    """

    def __init__(self, clock: IReactorTime, limits: Limits, hit: Callable[..., None]) -> None:
        self._clock = clock
        self._limits = limits
        self._max_bytes = limits.max_kept_bytes
        self._hit = hit
        self.largest = self._max_bytes // 4
        # Each broadcast's body (checksum and serial), by key.
        self._kept: dict[bytes, bytes] = {}
        # When each broadcast goes, its key and its size, the oldest first.
        self._expiry: deque[tuple[float, bytes, int]] = deque()
        self._bytes = 0
        # The keys that each link's peer asked for and was sent.
        self._answered: dict[Link, set[bytes]] = {}

    def __contains__(self, key: bytes) -> bool:
        return key in self._kept

    def __bool__(self) -> bool:
        return bool(self._kept)

    def keep(self, msg: WireMessage) -> None:
        """Keep ``msg``, unless it is kept already."""
        if msg.key in self._kept:
            return
        body = msg.body_in(msg.sender_is_bin)
        size = len(body)
        self._kept[msg.key] = body
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
        Send the peer of ``link`` each of ``keys`` that is kept, once over
        this link however often it asks.

        :return: how many were sent, how many are not kept, and how many
            were sent over this link already.
        """
        kept, limits = self._kept, self._limits
        answered = self._answered.setdefault(link, set())
        sent = unknown = again = 0
        for key in keys:
            body = kept.get(key)
            if body is None:
                unknown += 1
            elif key in answered:
                again += 1
            else:
                msg = WireMessage.from_body(body, (), limits.max_frame_size, limits.max_depth, limits.max_items)
                if link.send(msg) is None:
                    answered.add(msg.key)
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

    def clear(self) -> None:
        """Forget every broadcast kept."""
        self._kept.clear()
        self._expiry.clear()
        self._bytes = 0
        self._answered.clear()

    def forget(self, link: Link) -> None:
        """``link`` closed: what its peer was sent is forgotten."""
        self._answered.pop(link, None)

    def _forget_oldest(self) -> None:
        """Forget the broadcast kept the longest."""
        _, key, size = self._expiry.popleft()
        del self._kept[key]
        self._bytes -= size
