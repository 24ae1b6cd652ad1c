"""
`.SeenSet`: the broadcasts a node has seen, remembered for as long as a
repeat of one could still be accepted.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

from twisted_mesh.limits import Limits

#: How long a broadcast stays new, in seconds: older ones are dropped.
MESSAGE_LIFETIME = 60


class SeenSet:
    """
    The broadcasts seen in the last `.MESSAGE_LIFETIME` seconds.

    A key is kept until the message it names is too old to be accepted, or
    until more than ``max_size`` keys are held: then the oldest go first.
    Keys are kept by the whole second they expire in, and go when the clock
    reaches it: a key goes at most a second early, when its message is
    older than `.MESSAGE_LIFETIME` anyway.

    :ivar evicted: how many keys were forgotten early to stay in ``max_size``.
    """

    def __init__(self, max_size: int = Limits.max_seen, on_evict: Callable[[], None] | None = None) -> None:
        self.max_size = max_size
        self._on_evict = on_evict
        self.evicted = 0
        self._keys: set[bytes] = set()
        # The keys by the second they expire in, and those seconds as a heap.
        self._expiring: dict[int, deque[bytes]] = {}
        self._seconds: list[int] = []
        # Until the clock reaches the next whole second (``_turn``), nothing
        # expires, and a key stamped no later than now joins ``_current``, the
        # bucket of this second's keys (made with its first key).
        self._turn = 0
        self._current: deque[bytes] | None = None

    def add(self, key: bytes, time: int, now: float) -> bool:
        """
        Record ``key``, a message stamped ``time``, at ``now`` by the clock.

        :return: whether it is new.
        """
        if now >= self._turn:
            self._next_second(now)
        keys = self._keys
        size = len(keys)
        keys.add(key)  # one lookup, where "in" then "add" would make two
        if len(keys) == size:
            return False
        if time < self._turn:
            current = self._current
            if current is None:
                current = self._current = self._bucket(self._turn + MESSAGE_LIFETIME)
            current.append(key)
        else:
            # From a clock ahead of this one's: kept until its own stamp expires.
            self._bucket(time + MESSAGE_LIFETIME + 1).append(key)
        if size >= self.max_size:
            self._evict_oldest()
        return True

    def _next_second(self, now: float) -> None:
        """Forget the keys that expire by ``now``, and start a new second."""
        keys, seconds = self._keys, self._seconds
        while seconds and seconds[0] <= now:
            keys.difference_update(self._expiring.pop(heapq.heappop(seconds)))
        self._turn = int(now) + 1
        self._current = None

    def _bucket(self, second: int) -> deque[bytes]:
        bucket = self._expiring.get(second)
        if bucket is None:
            bucket = self._expiring[second] = deque()
            heapq.heappush(self._seconds, second)
        return bucket

    def _evict_oldest(self) -> None:
        oldest = self._expiring[self._seconds[0]]
        self._keys.discard(oldest.popleft())
        if not oldest:
            del self._expiring[heapq.heappop(self._seconds)]
            if oldest is self._current:
                self._current = None
        self.evicted += 1
        if self._on_evict is not None:
            self._on_evict()

    def __len__(self) -> int:
        return len(self._keys)
