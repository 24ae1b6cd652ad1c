"""
How a link writes: frames gathered and written in one go at the end of the
reactor's turn, and back-pressure from a transport whose write buffer is
full.

`.LinkWriter` is one link's: it gathers the frames written in one turn of
the reactor and writes them together; it is the producer its transport
pauses when the peer is slow to read, and it tells the node that the peer
is congested, and drops a peer that reads nothing for too long.
`.WriteBatch` is shared by the links of a node: it knows which of them
gathered frames in this turn, and has them write at its end.
"""

from __future__ import annotations

from typing import Protocol as Interface

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, ITransport
from twisted.logger import Logger
from zope.interface import implementer

from twisted_mesh._core.link import Link
from twisted_mesh._core.node import MeshNode
from twisted_mesh._link.tcp import write_now
from twisted_mesh._logs import LINK, logged
from twisted_mesh._stats import LinkStats

#: The most bytes of frames a link gathers before it writes them (see
#: `.LinkWriter.write`): as much as a TCP transport buffers before it tells
#: its producer to pause, so that a sender looking at that hears of a slow
#: peer in time.
MAX_GATHERED = 64 * 1024

_log = Logger(namespace=LINK)

#: How many of the last frames gathered for a peer `.LinkWriter.withdraw`
#: looks through.
WITHDRAW_WINDOW = 32


class WritingLink(Link, Interface):
    """What a writer needs of its link: a `.Link` that can be dropped."""

    def close(self, reason: str, *, error: bool = True, abort: bool = False, read_on: bool = False) -> None:
        """Close the connection; with ``abort``, drop it at once."""


class WriteBatch:
    """
    The links of a node that gathered frames in this turn of the reactor:
    each writes what it gathered in one go at the end of the turn, once
    every read the turn brought is handled.  The links of a node share one.
    """

    __slots__ = ("_clock", "_writers", "_call")

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._writers: list[LinkWriter] = []
        # The call at the end of the turn, while writers wait for it.
        self._call: IDelayedCall | None = None

    def add(self, writer: LinkWriter) -> None:
        """``writer`` gathered its first frame of the turn: it writes at the end of the turn."""
        self._writers.append(writer)
        if self._call is None:
            self._call = self._clock.callLater(0, self._end_of_turn)

    def _end_of_turn(self) -> None:
        self._call = None
        writers, self._writers = self._writers, []
        for writer in writers:
            try:
                writer.end_of_turn()
            except Exception:
                # (One link's failure is not the others': they write still.)
                _log.failure("writing at the end of the turn")


@implementer(IPushProducer)
class LinkWriter:
    """
    Writes one link's frames to its transport, and is the producer the
    transport pauses while its write buffer is full.

    :ivar unwritten: the frames not written to the transport yet (gathered
        in this turn, or held while the transport is full).
    :ivar unwritten_size: their size in bytes.
    """

    _transport: ITransport  # once started
    _tcp: FileDescriptor | None  # once started

    def __init__(self, link: WritingLink, node: MeshNode, batch: WriteBatch, stats: LinkStats) -> None:
        self._link = link
        self._node = node
        self._batch = batch
        self._stats = stats
        self._limits = node.limits
        self.unwritten: list[bytes] = []
        self.unwritten_size = 0
        # Whether the transport asked for no more writes (its buffer is full).
        self._transport_full = False
        # Whether the connection under the transport may hold bytes written
        # to it, unsent: the next frames must not go straight to its socket.
        self._held = False
        # While the peer is congested (see pauseProducing), the call that
        # cuts it off unless it makes progress first.
        self._congestion: IDelayedCall | None = None

    def start(self, transport: ITransport, tcp: FileDescriptor | None) -> None:
        """
        Write to ``transport`` from now on, which tells this producer when
        its write buffer is full; ``tcp`` is the TCP connection that what is
        written reaches at once, if any: it sends at the end of a turn.
        """
        self._transport = transport
        self._tcp = tcp
        transport.registerProducer(self, True)  # type: ignore[attr-defined]

    def write(self, frame: bytes) -> None:
        """
        Write ``frame`` to the peer, with the others written in the same
        turn of the reactor: in one go at the end of the turn, once every
        read it brought is handled (the frames relayed from many reads, or
        a node's user sending many messages at once, make one write); or
        once `.MAX_GATHERED` bytes are gathered.  While the transport is full,
        frames wait here until it asks for more (`.resumeProducing`).
        """
        unwritten = self.unwritten
        unwritten.append(frame)
        self.unwritten_size += len(frame)
        if self._transport_full:
            return
        if self.unwritten_size >= MAX_GATHERED:
            self.flush()
        elif len(unwritten) == 1:
            self._batch.add(self)

    def withdraw(self, frame: bytes) -> bool:
        """
        Do not write ``frame`` after all, if it is still gathered here
        (looked for among the last `.WITHDRAW_WINDOW` frames): the peer has
        its message already.

        :return: whether it was withdrawn.
        """
        unwritten = self.unwritten
        try:
            index = unwritten.index(frame, max(0, len(unwritten) - WITHDRAW_WINDOW))
        except ValueError:
            return False
        del unwritten[index]
        self.unwritten_size -= len(frame)
        return True

    def end_of_turn(self) -> None:
        """
        The turn of the reactor ends: write what was gathered, and have the
        TCP connection send it now rather than at the reactor's next look
        at the socket (see `.write_now`).
        """
        self.flush(now=not self._link.closing)

    def flush(self, *, now: bool = False) -> None:
        """
        Write the frames gathered so far, as far as the transport takes
        them: in one go, or (after the transport was full) in writes of
        about `.MAX_GATHERED` bytes until it is full again.

        :param now: have the TCP connection send them now, if there is one
            that what is written reaches at once: only when they are
            written in one go (the writes of a longer backlog are left to
            the reactor, so that no send asks for more frames in between).
        """
        if self._transport_full or not self.unwritten:
            return
        if self.unwritten_size <= MAX_GATHERED:
            frames, self.unwritten, self.unwritten_size = self.unwritten, [], 0
            self._write_frames(frames, now)
            return
        frames, self.unwritten = self.unwritten, []
        start = 0
        while start < len(frames) and not self._transport_full:
            end, size = start, 0
            while end < len(frames) and size < MAX_GATHERED:
                size += len(frames[end])
                end += 1
            self.unwritten_size -= size
            self._write_frames(frames[start:end])
            start = end
        # (What was gathered while writing, if anything, comes after the rest.)
        self.unwritten[:0] = frames[start:]

    def _write_frames(self, frames: list[bytes], now: bool = False) -> None:
        """Write ``frames`` to the transport in one write, and count them; ``now``: see `.flush`."""
        data = b"".join(frames)
        stats, totals = self._stats, self._node.stats
        stats.frames_out += len(frames)
        totals.frames_out += len(frames)
        stats.bytes_out += len(data)
        totals.bytes_out += len(data)
        if now and self._tcp is not None:
            self._held = write_now(self._transport, self._tcp, data, held=self._held)
        else:
            self._transport.write(data)
            self._held = True

    def finish(self, *, abort: bool) -> None:
        """
        The link closes: what was gathered goes first, unless the connection
        is dropped (the transport writes it before it closes, or the close
        times out; it may fill the transport's buffer, and so make the link
        congested, which the close then ends).
        """
        frames, self.unwritten, self.unwritten_size = self.unwritten, [], 0
        if frames and not abort:
            self._write_frames(frames)
        if self._congestion is not None:
            # Whatever waits for this peer will never be read: the other
            # peers need not wait for it any more.
            if self._congestion.active():
                self._congestion.cancel()
            self._congestion = None
            self._node.link_drained(self._link)

    def detach(self) -> None:
        """The transport hears of this producer no more (TLS closes only then)."""
        self._transport.unregisterProducer()  # type: ignore[attr-defined]

    def stop(self) -> None:
        """The connection is lost: nothing more is written."""
        if self._congestion is not None and self._congestion.active():
            self._congestion.cancel()
        self.unwritten, self.unwritten_size = [], 0  # never to be written

    # -- IPushProducer: the transport's write buffer -------------------------

    def pauseProducing(self) -> None:
        """
        The transport has a full write buffer: the peer is slow to read.
        Frames wait here until the transport asks for more, and the node
        hears that the peer is congested.  When this comes while the link
        writes what waited, the peer did read: it made progress.  (Before
        the handshake, TLS pauses its producer until it is secure: that is
        not a slow peer.)
        """
        link = self._link
        if link.closing or link.peer_id is None:
            return
        self._transport_full = True
        timeout = self._limits.congestion_timeout
        if self._congestion is None:
            self._congestion = self._node.clock.callLater(timeout, self._congestion_timed_out)
            self._node.link_congested(link)
        elif self._congestion.active():
            self._congestion.reset(timeout)

    def resumeProducing(self) -> None:
        """
        The transport wrote all it held: write what waited, and if that
        does not fill it again, the peer caught up.
        """
        if not self._transport_full:
            return
        # (The transport asks only once it sent all it held.)
        self._transport_full = self._held = False
        self.flush()
        if self._transport_full or self._congestion is None:
            return
        if self._congestion.active():
            self._congestion.cancel()
        self._congestion = None
        self._node.link_drained(self._link)

    def stopProducing(self) -> None:
        """The transport is going away; the link's ``connectionLost`` follows."""

    def _congestion_timed_out(self) -> None:
        timeout = self._limits.congestion_timeout
        text = "{peer} read nothing for {timeout:g} s"
        self._node.limit_hit("congestion_timeout", text, peer=logged(self._link.peer_id), timeout=timeout)
        self._link.close(f"the peer read nothing for {timeout:g} s: dropping what waits for it", abort=True)
