"""
`.Limits`: what a node accepts from its peers, and how much it holds for them.

When a limit bites, the node logs it (the first time, then at most once
every ten seconds per limit) and counts it: in the ``mesh_limit_hits_total``
metric under the limit's name, except ``max_depth``, ``max_items`` and a body
that inflates
past ``max_frame_size`` (``mesh_dropped_total``, reasons ``malformed`` and
``too_large``) and ``handshake_timeout`` (``mesh_handshake_failures_total``,
reason ``timeout``).  ``forget_lost_peer_after`` is logged, at info level,
for each peer it forgets.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Limits:
    """
    A node's limits.  The defaults suit a node on the internet.

    :ivar max_frame_size: the largest frame body a header may announce, and
        the most bytes a compressed body may inflate to.
    :ivar max_depth: how deeply lists and maps may nest in a message.
    :ivar max_items: the most items one list or map of a message may hold,
        and the most lists and maps a message may hold in all.
    :ivar max_connections: open connections, accepted and dialled, with or
        without a handshake.  When there are as many, a new one takes the
        place of the oldest accepted connection whose handshake has not
        come; when all are peers, it is closed at once.
    :ivar max_pending: accepted connections whose handshake has not come
        (from all addresses); one more takes the place of the oldest, which
        is closed.  Connections this node dials are not counted.
    :ivar max_pending_per_address: the same, from one IP address, of
        those that have said nothing yet: one more takes the place of the
        oldest from that address.
    :ivar handshake_timeout: seconds a new connection has to send its
        handshake; and a connection to a WebSocket listener, to open its
        WebSocket first.
    :ivar max_peers_per_message: entries of one peers message that are
        considered; the rest are ignored.
    :ivar max_pending_replies: replies waiting for the address of a node this
        node is not connected to; the oldest is given up (its ``SendResult``
        says so).
    :ivar max_seen: broadcasts remembered to drop repeats; past it the oldest
        are forgotten early.
    :ivar max_queue: received messages waiting for ``recv()``; past it the
        oldest is dropped.
    :ivar max_queue_bytes: bytes (as the messages came, uncompressed) that
        messages waiting for ``recv()`` may take; past it the oldest are
        dropped.
    :ivar max_send_buffer: bytes that may wait for a slow peer.  While a
        peer's transport holds more than its own buffer size (64 KiB for
        TCP), what is sent to the peer waits in its link, and the node stops
        reading from its other peers.  Past this, messages are not queued to
        the peer: ``send()`` reports it in ``skipped``, and a relayed
        broadcast is not written to it.
    :ivar congestion_timeout: seconds a slow peer may read nothing (its
        transport's buffer does not drain once) while it keeps the node from
        reading, before it is disconnected.  A peer that reads, however
        slowly, is kept.
    :ivar forget_lost_peer_after: seconds a past peer the node lost (not a
        bootstrap peer) may stay away: past it, the node no longer dials it,
        and forgets its address.
    :ivar max_missing_per_peer: broadcasts that one peer announced (lazy
        push, between twisted_mesh nodes), that the node has not got and
        waits for; past it, that peer's announcements are dropped.
    :ivar max_kept_bytes: bytes of the broadcasts announced to peers (lazy
        push) that the node keeps, as they came (uncompressed), for 10
        seconds, for the peers that ask for them; past it, the oldest go.  A broadcast larger than a
        quarter of it is sent whole to every peer, not announced.
    :raise TypeError: when a limit is not a number (an ``int`` for those
        that count).
    :raise ValueError: when a limit is negative.
    """

    max_frame_size: int = 16 * 1024 * 1024
    max_depth: int = 32
    max_items: int = 1_000_000
    max_connections: int = 256
    max_pending: int = 64
    max_pending_per_address: int = 32
    handshake_timeout: float = 10.0
    max_peers_per_message: int = 64
    max_pending_replies: int = 256
    max_seen: int = 1_000_000
    max_queue: int = 100_000
    max_queue_bytes: int = 256 * 1024 * 1024
    max_send_buffer: int = 32 * 1024 * 1024
    congestion_timeout: float = 30.0
    forget_lost_peer_after: float = 3600.0
    max_missing_per_peer: int = 4096
    max_kept_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            kinds = (int,) if field.type == "int" else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds):
                kind = "an int" if field.type == "int" else "a number"
                raise TypeError(f"Limits: {field.name} must be {kind}, not {value!r}")
            if value < 0:
                raise ValueError(f"Limits: {field.name} must not be negative, not {value!r}")


#: The limits of a node made without limits of its own.
DEFAULT_LIMITS = Limits()
