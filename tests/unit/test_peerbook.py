"""`.PeerBook`: the nodes a node heard of, drawn at random, with no reactor."""

from __future__ import annotations

import random

from twisted_mesh._core.peerbook import PeerBook


def test_the_latest_are_kept_and_drawn_by_transport() -> None:
    """Past its size a book forgets the node heard of longest ago; a draw keeps to one transport and leaves out IDs."""
    book = PeerBook(size=3, rng=random.Random(1))
    for port in range(4):
        book.heard_of(("10.0.0.1", port), "Plaintext", f"node{port}")
    book.heard_of(("10.0.0.2", 1), "SSL", "tls node")
    assert len(book) == 3 and (("10.0.0.1", 0), "Plaintext") not in book
    drawn = book.sample("Plaintext", 10, frozenset({"node3"}))
    assert sorted(drawn) == [(("10.0.0.1", 2), "node2")]
    book.heard_of(("10.0.0.1", 2), "Plaintext", "node2")  # heard of again: the latest
    book.heard_of(("10.0.0.9", 9), "Plaintext", "node9")
    assert (("10.0.0.1", 2), "Plaintext") in book and (("10.0.0.1", 3), "Plaintext") not in book
    book.forget(("10.0.0.1", 2), "Plaintext")
    assert (("10.0.0.1", 2), "Plaintext") not in book


def test_a_node_drawn_tell_limit_times_is_forgotten() -> None:
    """With a tell limit, each node is handed out that many times at most: then it is forgotten."""
    book = PeerBook(tell_limit=3, rng=random.Random(2))
    book.heard_of(("10.0.0.1", 1), "Plaintext", "newcomer")
    told = [book.sample("Plaintext", 5) for _ in range(5)]
    assert told == [[(("10.0.0.1", 1), "newcomer")]] * 3 + [[], []]
    assert len(book) == 0
