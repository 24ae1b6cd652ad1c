"""
When a node dials its missing peers again (`.twisted_mesh._service.redial`), on a
fake clock: the delays, their jitter and their cap, and the bookkeeping of
each missing peer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
from twisted.internet.task import Clock

from twisted_mesh._service.redial import (
    FACTOR,
    FIRST_DELAY,
    JITTER,
    MAX_DELAY,
    SHORT_LIVED,
    MissingPeers,
    Retry,
    redial_delay,
)

#: A draw as close to 1 as random.random() comes: the shortest delay.
NEARLY_ONE = 1 - 2**-53


def shortest(failures: int) -> float:
    """The shortest delay after ``failures`` failed dials."""
    return redial_delay(failures, lambda: NEARLY_ONE)


def longest(failures: int) -> float:
    """The longest delay after ``failures`` failed dials."""
    return redial_delay(failures, lambda: 0.0)


def test_delays_double_up_to_the_cap() -> None:
    """Without jitter, the delays are 1, 2, 4... seconds, and never more than `.MAX_DELAY`."""
    assert [longest(failures) for failures in range(5)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert longest(8) == FIRST_DELAY * FACTOR**8 == 256.0
    assert longest(9) == longest(10) == longest(10**9) == MAX_DELAY


@pytest.mark.parametrize("failures", [0, 1, 2, 5, 8, 9, 100])
def test_jitter_takes_up_to_a_third(failures: int) -> None:
    """A delay is drawn between two thirds of the longest one and the longest one."""
    most = longest(failures)
    rng = random.Random(failures)
    delays = [redial_delay(failures, rng.random) for _ in range(2000)]
    assert all((1 - JITTER) * most <= delay <= most for delay in delays)
    # The draws spread over the whole range.
    assert min(delays) < (1 - 0.9 * JITTER) * most and max(delays) > (1 - 0.1 * JITTER) * most
    assert shortest(failures) == pytest.approx((1 - JITTER) * most)


def test_delays_grow_whatever_the_draws() -> None:
    """Below the cap, the shortest delay after a failure is longer than the longest before it."""
    failures = 0
    while longest(failures + 1) < MAX_DELAY:
        assert shortest(failures + 1) > longest(failures)
        failures += 1
    assert failures >= 6


@pytest.mark.parametrize("draw", [lambda: NEARLY_ONE, lambda: 0.0], ids=["shortest", "longest"])
def test_a_minute_after_a_peer_left(draw: Callable[[], float]) -> None:
    """
    A peer that stays away is dialled at most 8 times in the minute after it
    left, whatever the draws; and at least 5 times, the first within a
    second, so that a partition heals in seconds.
    """
    dials, failures, now = [], 0, redial_delay(0, draw)
    while now <= 60:
        dials.append(now)
        failures += 1
        now += redial_delay(failures, draw)
    assert dials[0] <= FIRST_DELAY
    assert 5 <= len(dials) <= 8, dials


def test_a_lost_peer_is_due_after_the_first_delay() -> None:
    """A peer that left is due after the first delay, and not before."""
    clock = Clock()
    missing: MissingPeers[str] = MissingPeers(clock, delay=longest)
    missing.lost("a")
    assert "a" in missing
    assert not missing.due("a")
    assert missing.next_due() == 1.0
    clock.advance(1.0)
    assert missing.due("a")
    assert missing.next_due() == math.inf  # due already: it waits for its dial


def test_a_peer_found_missing_is_due_at_once() -> None:
    """A peer that was never connected is missing from the first time it is asked about, and due at once."""
    clock = Clock()
    missing: MissingPeers[str] = MissingPeers(clock)
    assert "a" not in missing
    assert missing.due("a")
    assert "a" in missing


def test_failed_dials_push_the_next_one_back() -> None:
    """Each failed dial makes the peer due after the next, longer, delay; reaching it starts over."""
    clock = Clock()
    missing: MissingPeers[str] = MissingPeers(clock, delay=longest)
    missing.lost("a")
    clock.advance(1.0)
    assert missing.failed("a") == Retry(1, 2.0)
    assert missing.unreachable() == ["a"]
    assert missing.next_due() == 3.0
    clock.advance(2.0)
    assert missing.due("a")
    assert missing.failed("a") == Retry(2, 4.0)
    missing.reached("a")
    assert "a" not in missing and missing.unreachable() == []
    assert missing.failed("a") is None  # a dial that ends after the peer was reached
    missing.lost("a")
    clock.advance(1.0)
    assert missing.failed("a") == Retry(1, 2.0)


def test_links_that_do_not_last_go_on_growing_the_delays() -> None:
    """
    A peer reached, whose link lasts less than SHORT_LIVED seconds (it turns
    the node away), is due after a longer delay each time; its failures, for
    the warning of the first, start over; a link that lasts starts all over.
    """
    clock = Clock()
    missing: MissingPeers[str] = MissingPeers(clock, delay=longest)
    missing.lost("seed")
    assert missing.next_due() == 1.0
    delays = []
    for _ in range(4):
        clock.advance(missing.next_due() - clock.seconds())
        assert missing.due("seed")
        missing.reached("seed")
        missing.lost("seed", lasted=0.1)
        delays.append(missing.next_due() - clock.seconds())
    assert delays == [2.0, 4.0, 8.0, 16.0]
    assert missing.failed("seed") == Retry(1, 32.0)
    missing.reached("seed")
    missing.lost("seed", lasted=SHORT_LIVED)
    assert missing.next_due() - clock.seconds() == 1.0


def test_only_past_peers_are_forgotten() -> None:
    """With ``forget_after``, a peer missing that long is forgotten; without it, never."""
    clock = Clock()
    past: MissingPeers[str] = MissingPeers(clock, forget_after=3600.0, delay=lambda failures: MAX_DELAY)
    bootstrap: MissingPeers[str] = MissingPeers(clock, delay=lambda failures: MAX_DELAY)
    past.lost("a")
    bootstrap.lost("b")
    clock.advance(3000.0)
    past.lost("c")
    assert past.next_due() == 3300.0
    clock.advance(300.0)
    past.failed("a")
    past.failed("c")
    assert past.next_due() == 3600.0  # "a" is forgotten then
    clock.advance(299.0)
    assert past.forget_expired() == []
    clock.advance(1.0)
    assert past.forget_expired() == ["a"]
    assert "a" not in past and "c" in past
    clock.advance(10 * 3600.0)
    assert bootstrap.forget_expired() == []
    assert "b" in bootstrap


def test_unreachable_for_a_while() -> None:
    """The peers whose last dial failed, missing for some time or more."""
    clock = Clock()
    missing: MissingPeers[str] = MissingPeers(clock)
    missing.lost("a")
    missing.lost("never dialled")
    clock.advance(100.0)
    missing.lost("b")
    missing.failed("a")
    missing.failed("b")
    assert missing.unreachable() == ["a", "b"]
    assert missing.unreachable(100.0) == ["a"]
    assert missing.unreachable(101.0) == []


def test_retain_and_clear() -> None:
    """``retain`` keeps the peers named; ``clear`` forgets them all."""
    missing: MissingPeers[str] = MissingPeers(Clock())
    for peer in "abc":
        missing.lost(peer)
    missing.retain({"a", "c", "d"})
    assert ["a" in missing, "b" in missing, "c" in missing, "d" in missing] == [True, False, True, False]
    missing.clear()
    assert "a" not in missing and missing.next_due() == math.inf
