"""
The seen-set (`twisted_mesh._core.seen.SeenSet`): exact answers whatever the order
of keys, stamps and time, and a packed form of about 32 bytes a key.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from hashlib import sha256

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twisted_mesh._core.seen import KEY_SIZE, MESSAGE_LIFETIME, SeenSet

START = 1_000_000


def key_of(index: int, stamp: int) -> bytes:
    """A message's checksum: the stamp is part of what it sums."""
    return sha256(b"%d/%d" % (index, stamp)).digest()


def pass_seconds(seen: SeenSet, now: float, seconds: int) -> float:
    """Let whole seconds pass, with a key (of a far stamp) in each, as a busy node sees them."""
    for _ in range(seconds):
        now += 1.0
        seen.add(os.urandom(KEY_SIZE), START + 1000, now)
    return now


class SeenModel:
    """
    What a seen-set must do, written plainly: each key under its stamp; a
    stamp is kept while a message with it could still be accepted; past
    ``max_size`` keys, the oldest stamps go whole, but not the one just added
    to (alone over the bound, it keeps only its newest key).
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.stamps: dict[int, list[bytes]] = {}
        self.evicted = 0

    def add(self, key: bytes, time: int, now: float) -> bool:
        self.stamps = {t: keys for t, keys in self.stamps.items() if t >= int(now) - MESSAGE_LIFETIME}
        if key in self.stamps.get(time, ()):
            return False
        self.stamps.setdefault(time, []).append(key)
        while sum(map(len, self.stamps.values())) > self.max_size:
            others = [t for t in self.stamps if t != time]
            if others:
                self.evicted += len(self.stamps.pop(min(others)))
            else:
                self.evicted += len(self.stamps[time]) - 1
                self.stamps[time] = [key]
        return True


STAMPS = [-70, -61, -60, -59, -1, 0, 1, 2, 30, 59, 60, 61, 62, 90, 120, 121]


@settings(max_examples=400, deadline=None)
@given(
    max_size=st.integers(1, 40),
    steps=st.lists(
        st.tuples(
            st.integers(0, 5),
            st.sampled_from(STAMPS),
            st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 1.0, 2.0, 7.0, 30.0]),
        ),
        max_size=120,
    ),
)
def test_seen_set_matches_its_model(max_size: int, steps: list[tuple[int, int, float]]) -> None:
    """
    Whatever the order of keys, stamps (from clocks behind and ahead, within
    the lifetime the node checks first), the
    passing of time (which packs idle stamps into runs) and the bound, the
    seen-set answers as its model does, and holds the same keys.
    """
    seen, model = SeenSet(max_size), SeenModel(max_size)
    now = float(START)
    for index, offset, elapsed in steps:
        now += elapsed
        stamp = START + offset
        if not now - MESSAGE_LIFETIME <= stamp <= now + MESSAGE_LIFETIME:
            continue  # refused by the node before it asks the seen-set
        key = key_of(index, stamp)
        assert seen.add(key, stamp, now) == model.add(key, stamp, now)
        assert len(seen) == sum(map(len, model.stamps.values()))
        for time, keys in model.stamps.items():
            assert all(not seen.add(held, time, now) for held in keys)  # each one is held
    assert seen.evicted == model.evicted


def test_a_repeat_is_known_once_its_stamp_is_packed() -> None:
    """Keys packed into runs (a second with none new) are still found, exactly."""
    seen = SeenSet()
    keys = [key_of(i, START) for i in range(1000)]
    assert all(seen.add(key, START, START) for key in keys)
    now = pass_seconds(seen, START, 2)  # a whole second with none new: packed
    assert START not in seen._coming and len(seen._runs[START]) == 1
    assert not any(seen.add(key, START, now) for key in keys)
    others = [key_of(i, START) for i in range(1000, 1100)]
    assert all(seen.add(key, START, now) for key in others)
    assert len(seen) == 1102


def test_holds_finds_a_key_without_recording_it() -> None:
    """`holds` answers as `add` would, coming or packed, and records nothing."""
    seen = SeenSet()
    key, other = key_of(1, START), key_of(2, START)
    assert not seen.holds(key, START) and len(seen) == 0
    seen.add(key, START, START)
    assert seen.holds(key, START) and not seen.holds(other, START) and not seen.holds(key, START + 1)
    pass_seconds(seen, START, 2)  # packed (with a key of a far stamp each second)
    assert START not in seen._coming
    held = len(seen)
    assert seen.holds(key, START) and not seen.holds(other, START)
    assert len(seen) == held


def test_runs_merge_as_a_stamp_keeps_coming() -> None:
    """A stamp that keeps getting keys in later seconds holds few runs, all searched."""
    seen = SeenSet()
    added: list[bytes] = []
    now = float(START)
    for burst in range(25):  # within a lifetime of START
        for _ in range(burst + 1):
            key = key_of(len(added), START)
            added.append(key)
            assert seen.add(key, START, now)
        now = pass_seconds(seen, now, 2)  # a second with none new: packed
        assert START not in seen._coming
    assert len(seen._runs[START]) <= 9  # 325 keys: log2 of it, at most
    assert not any(seen.add(key, START, now) for key in added)


def test_stamps_go_once_too_old_to_be_accepted() -> None:
    """A stamp goes when the clock passes it by more than the lifetime, not before."""
    seen = SeenSet()
    key = key_of(1, START)
    seen.add(key, START, START)
    seen.add(key_of(2, START + 30), START + 30, START + MESSAGE_LIFETIME + 0.9)
    assert not seen.add(key, START, START + MESSAGE_LIFETIME + 0.9)
    seen.add(key_of(3, START + 30), START + 30, START + MESSAGE_LIFETIME + 1)
    assert len(seen) == 2  # START's key is gone: a message stamped START is refused now


def test_keys_must_be_digests() -> None:
    """A key of another size cannot be packed: a clear error, not a wrong answer."""
    seen = SeenSet()
    seen.add(b"short", START, START)
    with pytest.raises(ValueError, match="32 bytes"):
        pass_seconds(seen, START, 2)


def test_a_packed_key_takes_at_most_64_bytes() -> None:
    """
    A minute of keys, 2,000 a second, most of them packed: at most 64 bytes
    of memory a key (Python's own accounting; the bench measures RSS).
    """
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        seen = SeenSet()
        for second in range(MESSAGE_LIFETIME):
            for _ in range(2000):
                seen.add(os.urandom(KEY_SIZE), START + second, START + second)
        gc.collect()
        per_key = (tracemalloc.get_traced_memory()[0] - before) / len(seen)
    finally:
        tracemalloc.stop()
    assert len(seen) == 120_000
    assert per_key <= 64, f"{per_key:.1f} B a key"


def test_a_clock_set_back_still_packs_and_forgets() -> None:
    """After the clock steps back, the seen-set goes on packing from the new second."""
    seen = SeenSet()
    pass_seconds(seen, float(START + 100), 1)
    keys = [key_of(i, START + 40) for i in range(50)]
    assert all(seen.add(key, START + 40, START + 40) for key in keys)  # set back by 61 s
    pass_seconds(seen, float(START + 40), 2)
    assert START + 40 in seen._runs and START + 40 not in seen._coming
    assert not any(seen.add(key, START + 40, START + 42.5) for key in keys)


def test_held_forgets_what_expired_without_a_new_key() -> None:
    """The count /status shows falls once the stamps expire, though no key comes."""
    seen = SeenSet()
    for i in range(10):
        seen.add(key_of(i, START), START, START)
    assert seen.held(START + MESSAGE_LIFETIME) == 10
    assert seen.held(START + MESSAGE_LIFETIME + 1) == 0
    assert len(seen) == 0
