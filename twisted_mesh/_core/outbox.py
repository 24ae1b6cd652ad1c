"""
`.Outbox`: the messages a node makes itself, checked as its peers will read
them, and sent to every peer or whispered to one.
"""

from __future__ import annotations

from typing import Any

from twisted_mesh import flags
from twisted_mesh._core.context import NodeContext
from twisted_mesh._core.link import Link
from twisted_mesh._core.routing import RoutingTable
from twisted_mesh._core.tree import BroadcastTree
from twisted_mesh._frames import FrameError, WireMessage
from twisted_mesh.message import SendResult

#: The types of packets a message may hold that need no look at its
#: structure before it is sent.
_SCALARS = frozenset((int, float, str, bytes, bool, type(None)))


class Outbox:
    """
    A node's own messages.

    :param node: the node's ID (each message's sender), its clock (the
        time a message is stamped with) and its limits (those its peers
        read messages with).
    :param routing: the peers to send to.
    :param tree: the links a broadcast is only announced to.
    """

    def __init__(self, node: NodeContext, routing: RoutingTable, tree: BroadcastTree) -> None:
        self._node = node
        self._routing = routing
        self._tree = tree

    def now(self) -> int:
        """The time to stamp a message with: whole UTC seconds."""
        return int(self._node.clock.seconds())

    def new_message(self, flag: int, payload: tuple[Any, ...]) -> WireMessage:
        """
        A new message of this node's.

        :raise TypeError: when the payload holds a value msgpack cannot write.
        :raise ValueError: when peers with this node's limits would refuse
            it: larger than a frame may be, lists and maps nested too deeply
            or too many of them.
        """
        msg = self._create(flag, payload, True)
        body, limits = msg.body_in(True), self._node.limits
        size, most = len(body), limits.max_frame_size
        if size > most:
            raise ValueError(f"the message takes {size} bytes, more than the frame limit of {most}")
        if size > limits.max_items or not _SCALARS.issuperset(map(type, payload)):
            # Read as a peer reads it (most messages hold no list to check).
            try:
                WireMessage.from_body(body, (), limits.max_frame_size, limits.max_depth, limits.max_items)
            except FrameError as e:
                raise ValueError(f"peers would refuse the message: {e}") from None
        return msg

    def send(self, flag: int, payload: tuple[Any, ...]) -> SendResult:
        """
        Write a new message of this node's to every peer; a broadcast is
        announced to the peers of pruned links (see `.BroadcastTree`), which
        get it by another way, or ask for it.

        :return: which peers it was queued (or announced) to, and which not
            and why.
        :raise TypeError: when the payload holds a value msgpack cannot write.
        :raise ValueError: when peers would refuse it (see `.new_message`).
        """
        msg = self.new_message(flag, payload)
        result = SendResult()
        lazy = self._tree.lazy_for(msg) if flag == flags.broadcast else ()
        announced = []
        for peer_id, link in self._routing.peers:
            if link in lazy and not link.closing:
                announced.append(link)
                result.queued.append(peer_id)
                continue
            refused = link.send(msg)
            if refused is None:
                result.queued.append(peer_id)
            else:
                result.skipped[peer_id] = refused
        if announced:
            self._tree.announce(msg, announced)
        return result

    def whisper(self, link: Link, payload: tuple[Any, ...]) -> str | None:
        """Whisper ``payload`` to one peer: ``None`` when it was queued, else why not."""
        return link.send(self._create(flags.whisper, payload, link.ids_as_bin))

    def _create(self, flag: int, payload: tuple[Any, ...], as_bin: bool) -> WireMessage:
        """A new message, signed on a signed network (its sender then as bin, whatever ``as_bin``)."""
        signer = self._node.signer
        if signer is not None:
            return signer.create(flag, self.now(), payload)
        return WireMessage.create(flag, self._node.id, self.now(), payload, as_bin)
