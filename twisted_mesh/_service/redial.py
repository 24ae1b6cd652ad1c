"""
When to dial again the peers a node misses: a past peer it lost, a
bootstrap peer it is not connected to.

Each missing peer has its own delays.  The first dial comes about
`.FIRST_DELAY` seconds after the peer left (at once for a peer that was
never connected); each dial that fails doubles the delay before the next,
up to `.MAX_DELAY`, and each delay is jittered so that nodes that lost the
same peer do not dial it all at once.  A peer that is reached again starts
over.  Nothing here does I/O: the time comes from a clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from twisted.internet.interfaces import IReactorTime

#: Seconds from a peer's leaving to the first dial to it (at most: see `.JITTER`).
FIRST_DELAY = 1.0

#: How much longer each delay is than the one before it.
FACTOR = 2.0

#: The longest delay, in seconds, between two dials to a missing peer.
MAX_DELAY = 300.0

#: A link to a peer that lasted less than this many seconds does not start
#: its delays over: the peer turned the node away (it has as many peers as
#: it keeps), or keeps dropping it, and the delays go on growing as after a
#: failed dial.
SHORT_LIVED = 10.0

#: The share of a delay left to chance: a delay of ``d`` seconds is drawn
#: between ``(1 - JITTER) * d`` and ``d``.  (So drawn, delays still grow from
#: one dial to the next, as ``(1 - JITTER) * FACTOR > 1``.)
JITTER = 1 / 3


def redial_delay(failures: int, chance: Callable[[], float] = random.random) -> float:
    """
    The seconds to wait before dialling a missing peer again.

    :param failures: how many dials to it failed since it was last
        connected: 0 right after it left.
    :param chance: draws a number from 0 up to (not including) 1, anew
        for each delay.
    :return: `.FIRST_DELAY` times `.FACTOR` to the power ``failures``, at
        most `.MAX_DELAY`, less a random share of up to `.JITTER` of it.
    """
    longest = min(FIRST_DELAY * FACTOR ** min(failures, 64), MAX_DELAY)
    return longest * (1 - JITTER * chance())


_Peer = TypeVar("_Peer", bound=Hashable)


class Retry(NamedTuple):
    """
    What a failed dial to a missing peer means for it.

    :ivar failures: the dials to it that failed since it was last connected,
        this one included: 1 the first time.
    :ivar delay: the seconds until it is due to be dialled again.
    """

    failures: int
    delay: float


@dataclass
class _Missing:
    """
    One missing peer: since when it is missing, when it is due, how many
    dials failed since it was last connected, and how far its delays grew
    (by those failures, and by links that did not last).
    """

    since: float
    due: float
    failures: int = 0
    backoff: int = 0


class MissingPeers(Generic[_Peer]):
    """
    The peers a node misses, each with when to dial it next.

    A peer is missing from when it is `.lost` (or found missing, by `.due`)
    until it is `.reached`, and, when the node forgets peers, until it has
    been missing for ``forget_after`` seconds (see `.forget_expired`).

    :param clock: where the time is read.
    :param forget_after: seconds after which a missing peer is forgotten;
        ``None``: never.
    :param delay: the delays between dials, by failures so far (see
        `.redial_delay`).
    """

    def __init__(
        self,
        clock: IReactorTime,
        forget_after: float | None = None,
        delay: Callable[[int], float] = redial_delay,
    ) -> None:
        self._clock = clock
        self._forget_after = forget_after
        self._delay = delay
        self._missing: dict[_Peer, _Missing] = {}
        # How far the delays of the peers reached grew, until their link lasts.
        self._backoff_before: dict[_Peer, int] = {}

    def __contains__(self, peer: object) -> bool:
        return peer in self._missing

    def lost(self, peer: _Peer, lasted: float = math.inf) -> None:
        """
        ``peer`` left after ``lasted`` seconds connected: it is due after the
        first delay, and its failures start over; unless its link was
        `.SHORT_LIVED`, which counts as one more failed dial.
        """
        now = self._clock.seconds()
        backoff = self._backoff_before.pop(peer, 0) + 1 if lasted < SHORT_LIVED else 0
        self._missing[peer] = _Missing(now, now + self._delay(backoff), backoff=backoff)

    def due(self, peer: _Peer) -> bool:
        """
        Whether to dial ``peer``, which is not connected, now.  A peer not
        missing until now is missing from now on, and due at once.
        """
        now = self._clock.seconds()
        missing = self._missing.get(peer)
        if missing is None:
            missing = self._missing[peer] = _Missing(now, now)
        return missing.due <= now

    def failed(self, peer: _Peer) -> Retry | None:
        """
        A dial to ``peer`` failed: it is due again after the next delay.

        :return: how many dials to it failed, and the delay; ``None`` when it
            is not missing (it was reached, or forgotten, meanwhile).
        """
        missing = self._missing.get(peer)
        if missing is None:
            return None
        missing.failures += 1
        missing.backoff += 1
        delay = self._delay(missing.backoff)
        missing.due = self._clock.seconds() + delay
        return Retry(missing.failures, delay)

    def reached(self, peer: _Peer) -> None:
        """``peer`` is connected: it is no longer missing (how far its delays grew stands until its link lasts)."""
        missing = self._missing.pop(peer, None)
        if missing is not None:
            self._backoff_before[peer] = missing.backoff

    def retain(self, peers: Collection[_Peer]) -> None:
        """Keep missing only the peers among ``peers``; the others are reached, or no longer wanted."""
        for peer in [peer for peer in self._missing if peer not in peers]:
            del self._missing[peer]

    def clear(self) -> None:
        """Forget every missing peer."""
        self._missing.clear()
        self._backoff_before.clear()

    def forget_expired(self) -> list[_Peer]:
        """
        Forget the peers missing for ``forget_after`` seconds or more.

        :return: those peers.
        """
        if self._forget_after is None:
            return []
        now = self._clock.seconds()
        expired = [peer for peer, missing in self._missing.items() if missing.since + self._forget_after <= now]
        for peer in expired:
            del self._missing[peer]
            self._backoff_before.pop(peer, None)
        return expired

    def next_due(self) -> float:
        """
        The next time, after now, that a missing peer is due or is to be
        forgotten; infinity when there is none.  (A peer due already waits
        for its dial to end, or for room to dial it.)
        """
        now = self._clock.seconds()
        times = [missing.due for missing in self._missing.values()]
        if self._forget_after is not None:
            times.extend(missing.since + self._forget_after for missing in self._missing.values())
        return min((time for time in times if time > now), default=math.inf)

    def unreachable(self, longer_than: float = 0.0) -> list[_Peer]:
        """The peers whose last dial failed, missing for ``longer_than`` seconds or more."""
        now = self._clock.seconds()
        return [
            peer for peer, missing in self._missing.items() if missing.failures and missing.since <= now - longer_than
        ]
