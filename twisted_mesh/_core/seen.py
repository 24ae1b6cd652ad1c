"""
`.SeenSet`: the broadcasts a node has seen, remembered for as long as a
repeat of one could still be accepted.

A key is a message's checksum, a sha256 digest, and a message's stamp is
part of what it sums: the same key always comes with the same stamp.  So
the keys are filed by stamp, and a key is looked for only among the keys of
its own stamp.  A stamp's keys come in over about a second (the second its
senders' clocks show it, plus the time to cross the mesh); while they come
they are held in a `set`, and once the set has not grown from one whole
second of the clock to the next (as the first key of each second finds it), it
is packed into a sorted run of whole keys, 32 bytes each, that is
searched by bisection.  A node keeps a minute of keys and most of them are
in runs: about 32 bytes a key there, against about 200 in a set.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from twisted_mesh.limits import Limits

#: How long a broadcast stays new, in seconds: older ones are dropped.
MESSAGE_LIFETIME = 60

#: The size of a key: a sha256 digest.
KEY_SIZE = 32


class SeenSet:
    """
    The broadcasts seen that could still be accepted again.

    A node accepts a broadcast stamped within `.MESSAGE_LIFETIME` seconds of
    its clock, so the keys stamped ``time`` are kept while the clock shows at
    most ``time + MESSAGE_LIFETIME``, and go at the first `add` after that.
    When more than ``max_size`` keys are held, whole stamps go, the oldest
    first, but never the stamp of the key just added: of that one, if it is
    left alone over the bound, only the new key stays.  ``on_evict`` is called
    once for each such forgetting.

    :ivar evicted: how many keys were forgotten early to stay in ``max_size``.
    """

    def __init__(self, max_size: int = Limits.max_seen, on_evict: Callable[[], None] | None = None) -> None:
        self.max_size = max_size
        self._on_evict = on_evict
        self.evicted = 0
        self._size = 0
        # The keys of the stamps still coming in, by stamp; the sizes those
        # sets had at the last whole second (a set that has not grown since
        # is packed); the packed runs of each stamp, largest first; and the
        # stamps held, as a heap, the oldest first.
        self._coming: dict[int, set[bytes]] = {}
        self._sizes: dict[int, int] = {}
        self._runs: dict[int, list[bytes]] = {}
        self._stamps: list[int] = []
        # Nothing is forgotten or packed until the clock reaches this second.
        self._turn = 0

    def add(self, key: bytes, time: int, now: float) -> bool:
        """
        Record ``key``, the checksum of a message stamped ``time``, at
        ``now`` by the clock.  ``time`` is within `.MESSAGE_LIFETIME` of
        ``now``: the node refuses other messages before it asks.

        :return: whether it is new.
        """
        if now >= self._turn or now < self._turn - 1:  # (or the clock was set back)
            self._next_second(now)
        runs = self._runs.get(time)
        if runs is not None and any(_in_run(run, key) for run in runs):
            return False
        keys = self._coming.get(time)
        if keys is None:
            keys = self._open(time)
        size = len(keys)
        keys.add(key)  # one lookup, where "in" then "add" would make two
        if len(keys) == size:
            return False
        self._size += 1
        if self._size > self.max_size:
            self._evict(time, key)
        return True

    def holds(self, key: bytes, time: int) -> bool:
        """
        Whether ``key``, of a message stamped ``time``, is held; it is not
        recorded (see `add`): a signed network's node records a broadcast
        only once its signature holds, so that a forged copy keeps no room
        and hides no real one.
        """
        runs = self._runs.get(time)
        if runs is not None and any(_in_run(run, key) for run in runs):
            return True
        keys = self._coming.get(time)
        return keys is not None and key in keys

    def held(self, now: float) -> int:
        """
        How many keys are held at ``now``, once those of stamps too old to be
        accepted are forgotten (`add` forgets them too, but a node that
        receives nothing does not call it).
        """
        if now >= self._turn or now < self._turn - 1:
            self._next_second(now)
        return self._size

    def _open(self, time: int) -> set[bytes]:
        """Start taking keys stamped ``time``."""
        keys: set[bytes] = set()
        self._coming[time] = keys
        if time not in self._runs:
            heapq.heappush(self._stamps, time)
        return keys

    def _next_second(self, now: float) -> None:
        """Forget the stamps too old to be accepted, and pack the idle sets."""
        second = int(now)
        self._turn = second + 1
        stamps = self._stamps
        while stamps and stamps[0] < second - MESSAGE_LIFETIME:
            self._size -= self._drop(heapq.heappop(stamps))
        for time, keys in list(self._coming.items()):
            if self._sizes.get(time) == len(keys):
                self._pack(time, keys)
            else:
                self._sizes[time] = len(keys)

    def _pack(self, time: int, keys: set[bytes]) -> None:
        """Move the keys of ``time`` from their set (never empty) into a sorted run."""
        if sum(map(len, keys)) != KEY_SIZE * len(keys):
            raise ValueError(f"seen-set keys must be {KEY_SIZE} bytes")
        del self._coming[time], self._sizes[time]
        chunks = sorted(keys)
        runs = self._runs.setdefault(time, [])
        # Runs merge as a binary counter's digits carry: a stamp has at most
        # log2(keys) runs, and each key is merged that many times at most.
        while runs and len(runs[-1]) <= 2 * KEY_SIZE * len(chunks):
            chunks = sorted([*_chunks(runs.pop()), *chunks])  # two sorted runs: a linear merge
        runs.append(b"".join(chunks))

    def _drop(self, time: int) -> int:
        """Forget every key stamped ``time``; return how many there were."""
        keys = self._coming.pop(time, ())
        self._sizes.pop(time, None)
        return len(keys) + sum(len(run) for run in self._runs.pop(time, ())) // KEY_SIZE

    def _evict(self, time: int, key: bytes) -> None:
        """
        Forget the oldest stamps but ``time`` (that of ``key``, just added)
        until at most ``max_size`` keys are held; then, if need be, all of
        ``time``'s keys but ``key``.
        """
        stamps = self._stamps
        dropped = 0
        while self._size - dropped > self.max_size and (stamps[0] != time or len(stamps) > 1):
            oldest = heapq.heappop(stamps)
            if oldest == time:
                dropped += self._drop(heapq.heapreplace(stamps, time))
            else:
                dropped += self._drop(oldest)
        if self._size - dropped > self.max_size:
            dropped += self._drop(time) - 1
            self._coming[time] = {key}
        self._size -= dropped
        self.evicted += dropped
        if self._on_evict is not None:
            self._on_evict()

    def __len__(self) -> int:
        return self._size


def _chunks(run: bytes) -> list[bytes]:
    """The keys of a packed run."""
    return [run[at : at + KEY_SIZE] for at in range(0, len(run), KEY_SIZE)]


def _in_run(run: bytes, key: bytes) -> bool:
    """Whether ``key`` is in ``run``, a sorted run of keys: a bisection."""
    low, high = 0, len(run) // KEY_SIZE
    while low < high:
        middle = (low + high) // 2
        at = middle * KEY_SIZE
        if run[at : at + KEY_SIZE] < key:
            low = middle + 1
        else:
            high = middle
    at = low * KEY_SIZE
    return run[at : at + KEY_SIZE] == key
