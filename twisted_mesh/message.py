"""
`.Message`: a message as the user receives it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted_mesh._frames import WireMessage
    from twisted_mesh._node import MeshNode, SendResult


class Message:
    """
    A message this node received for its user: a broadcast or a whisper,
    most often.

    :ivar packets: the payload, sub-flag first: a broadcast of
        ``send("this is", "a test")`` arrives as ``(0, "this is", "a test")``.
    :ivar sender: the node ID of the node that sent it.
    :ivar id: the message ID: 32 bytes, the same on every node.
    :ivar time: the UTC second the sender stamped it with.
    :ivar msg_type: its main flag (most often `.flags.broadcast` or
        `.flags.whisper`).
    """

    __slots__ = ("packets", "sender", "id", "time", "msg_type", "_node")

    def __init__(self, wire: WireMessage, node: MeshNode) -> None:
        self.packets: tuple[Any, ...] = wire.payload
        self.sender: str = wire.sender
        self.id: bytes = wire.key
        self.time: int = wire.time
        self.msg_type: int = wire.msg_type
        self._node = node

    def reply(self, *packets: Any) -> SendResult:
        """
        Whisper ``packets`` back to the sender: they arrive as
        ``(flags.whisper, *packets)``.

        When this node is not connected to the sender, it asks the mesh for
        the sender's address, dials it and sends the reply once connected.

        :return: whether the reply was queued to the sender, or skipped and
            why; when the sender is not a peer, the sender is in ``pending``
            until it is reached or given up (``settled()`` tells when).
        :raise TypeError: when a packet is not something msgpack can write.
        :raise ValueError: when the reply is larger than a frame may be.
        :raise MeshClosed: when the node is closed.
        """
        return self._node.reply(self.sender, packets)

    def __repr__(self) -> str:
        return f"<Message from {self.sender[:10]}... packets={self.packets!r}>"
