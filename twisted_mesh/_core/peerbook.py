"""
`.PeerBook`: the nodes a node has heard of and may dial, or tell others to
dial: those that handshook with it (kept as peers or turned away) and the
entries of the peers messages it received.

Peer exchange draws from it at random, so that the nodes a seed turns away
spread over the whole mesh instead of all dialling its oldest peers.
Nothing here does I/O.
"""

from __future__ import annotations

import random

#: The most nodes a book remembers; past it the one heard of longest ago goes.
MAX_HEARD_OF = 256


class _Entry:
    """A node heard of: its ID, and how many times it was drawn."""

    __slots__ = ("node_id", "told")

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.told = 0


class PeerBook:
    """
    The latest nodes heard of, by address and transport, with their IDs;
    the oldest are forgotten past ``size``.

    :param size: the most nodes remembered.
    :param tell_limit: when given, a node drawn (told of) this many times
        is forgotten: a book of nodes with room for peers hands each out no
        more often than its room is likely to take.
    :param rng: where random choices come from.
    """

    def __init__(
        self, size: int = MAX_HEARD_OF, tell_limit: int | None = None, rng: random.Random | None = None
    ) -> None:
        self._size = size
        self._tell_limit = tell_limit
        self._rng = rng or random.Random()
        # The nodes by ((host, port), transport), the latest heard of last,
        # with their IDs and how many times they were drawn.
        self._nodes: dict[tuple[tuple[str, int], str], _Entry] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, entry: object) -> bool:
        return entry in self._nodes

    def heard_of(self, address: tuple[str, int], encryption: str, node_id: str) -> None:
        """Remember the node ``node_id`` at ``address``, over ``encryption``, as the latest heard of."""
        key = (address, encryption)
        self._nodes.pop(key, None)
        self._nodes[key] = _Entry(node_id)
        if len(self._nodes) > self._size:
            del self._nodes[next(iter(self._nodes))]

    def forget(self, address: tuple[str, int], encryption: str) -> None:
        """Forget the node at ``address`` (it could not be dialled, say)."""
        self._nodes.pop((address, encryption), None)

    def sample(
        self, encryption: str, count: int, leave_out: frozenset[str] = frozenset()
    ) -> list[tuple[tuple[str, int], str]]:
        """
        Up to ``count`` nodes of the transport ``encryption``, drawn at random,
        none of those whose IDs are in ``leave_out``.

        :return: ``(address, node_id)`` pairs.
        """
        nodes = [
            (address, entry)
            for (address, transport), entry in self._nodes.items()
            if transport == encryption and entry.node_id not in leave_out
        ]
        drawn = self._rng.sample(nodes, min(count, len(nodes)))
        if self._tell_limit is not None:
            for address, entry in drawn:
                entry.told += 1
                if entry.told >= self._tell_limit:
                    del self._nodes[address, encryption]
        return [(address, entry.node_id) for address, entry in drawn]
