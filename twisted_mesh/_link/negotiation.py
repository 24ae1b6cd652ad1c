"""
One link's side of the handshake and of renegotiation: when our handshake
goes, and in which ID form; what the peer's handshake says; the compression
each side sends with; what a frame that failed its checksum asks for.

`.Negotiation` acts on its link and writes through the link's writer; what
it decides is `.handshake`'s (pure functions).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from typing import Protocol as Interface

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from twisted_mesh import flags
from twisted_mesh._admission import Slot
from twisted_mesh._core.link import Address
from twisted_mesh._core.node import MeshNode
from twisted_mesh._frames import WireMessage
from twisted_mesh._ids import protocol_id
from twisted_mesh._link import handshake
from twisted_mesh._link.handshake import Word
from twisted_mesh._link.writer import WritingLink
from twisted_mesh._logs import LINK, LoggedID, NodeLogger, logged
from twisted_mesh.errors import HandshakeFailed, NotMeshPeer

#: Frames in a row that may fail their checksum before the link is closed.
MAX_BAD_FRAMES = 3

#: The first bytes of a peer kept until it sends a mesh frame, to show what
#: it sent when it speaks something else (see `.NotMeshPeer`).
FIRST_BYTES_KEPT = 32

#: Seconds a dialler waits for the first word of the node dialled before it
#: sends its handshake all the same (see `.Negotiation.start`).
FIRST_WORD_WAIT = 1.0


class NegotiatingLink(WritingLink, Interface):
    """What a `.Negotiation` needs of its link (a `.LinkProtocol`)."""

    peer_codes: tuple[int, ...]
    expected_id: str | None
    slot: Slot | None
    handshake_done: Deferred[str]

    def resend_last(self) -> None:
        """Send the last message sent again, once."""

    def channel_binding(self) -> bytes:
        """What a proof on this link binds: its TLS session's keying material, or nothing without TLS."""


class Negotiation:
    """
    The handshake and renegotiation of one link.

    :ivar send_code: the compression the link sends with, if any.
    :ivar inflating: whether the peer's frames are inflated (no more once
        one failed its checksum: the peer was asked for raw frames).
    :ivar sends_twice: whether the peer holds the link under two IDs (see
        `.handshake.answer_form`), and so writes each of its whispers to it
        twice.
    :ivar bad_frames: the frames in a row that failed their checksum.
    :ivar first_bytes: the first bytes the peer sent (up to
        `.FIRST_BYTES_KEPT`), until its first handshake or renegotiation
        comes; then ``None``.
    """

    def __init__(self, link: NegotiatingLink, node: MeshNode, write: Callable[[bytes], None]) -> None:
        self._log = NodeLogger(LINK, node.id, self)
        self._link = link
        self._node = node
        self._write = write
        self._limits = node.limits
        self._protocol_id = protocol_id(node.protocol.subnet, link.encryption, node.protocol.signed)
        # On a signed network: what the peer's proof signs with its own
        # nonce, and the peer's handshake until its proof comes.
        self._nonce = os.urandom(handshake.NONCE_SIZE) if node.protocol.signed else None
        self._unproved: handshake.PeerHandshake | None = None
        self._sent_address: Address | None = None
        self.send_code: int | None = None
        self.inflating = True
        self.sends_twice = False
        self.bad_frames = 0
        self.first_bytes: bytes | None = b""
        self._handshake_sent = False
        self._answered_first_word = False
        self._first_word: IDelayedCall | None = None
        self._timeout: IDelayedCall | None = None

    @property
    def proving(self) -> bool:
        """Whether the peer's handshake came, and its proof (on a signed network) is awaited."""
        return self._unproved is not None

    def start(self) -> None:
        """
        The connection is made: the peer has `.Limits.handshake_timeout`
        seconds to send its handshake.  A dialler's handshake goes out once,
        in the form of the IDs of the node dialled (js2p, told our ID in
        both forms, keys the connection twice and writes to it twice):
        after the first word of that node.  py2p and js2p send their
        handshake as soon as they accept a connection (js2p over WebSocket
        only once it has ours); a twisted_mesh node waits for the
        dialler's, and answers this renegotiation (which states what our
        handshake will) with one of its own.
        """
        clock = self._node.clock
        self._timeout = clock.callLater(self._limits.handshake_timeout, self._timed_out)
        if self._link.outgoing:
            self.renegotiate(flags.compression, handshake.offered())
            self._first_word = clock.callLater(FIRST_WORD_WAIT, self._no_first_word)

    def stop(self) -> None:
        """The link closes: no timeout of the handshake, no first word."""
        for timer in (self._timeout, self._first_word):
            if timer is not None and timer.active():
                timer.cancel()

    def stop_waiting(self) -> None:
        """The handshake will never come: it does not time out."""
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()

    def fail(self, error: Exception, reason: str) -> None:
        """The handshake failed: count ``reason``, close the link, fail `.handshake_done` with ``error``."""
        link = self._link
        self._node.stats.handshake_failures[reason] += 1
        link.close(str(error))
        if not link.handshake_done.called:
            link.handshake_done.errback(error)

    def heard(self, data: bytes) -> None:
        """The peer sent ``data``: kept, if it is among its first bytes."""
        first = self.first_bytes
        if first is not None and len(first) < FIRST_BYTES_KEPT:
            self.first_bytes = first + data[: FIRST_BYTES_KEPT - len(first)]

    def not_mesh(self, why: str) -> bool:
        """
        Fail the handshake with `.NotMeshPeer` (``why`` saying what gave it
        away) if the peer has sent nothing of the mesh protocol yet.

        :return: whether it did.
        """
        if self.first_bytes is None:
            return False
        self.fail(NotMeshPeer(self.first_bytes, why), "not_mesh")
        return True

    def _timed_out(self) -> None:
        timeout = self._limits.handshake_timeout
        why, first = f"no handshake within {timeout:g} s", self.first_bytes
        # Nothing of the mesh protocol came: some other protocol, such as
        # HTTP's, whose server waits for a request.
        self.fail(HandshakeFailed(why) if first is None else NotMeshPeer(first, why), "timeout")

    def _send_handshake(self) -> None:
        self._handshake_sent = True
        if self._first_word is not None and self._first_word.active():
            self._first_word.cancel()
        self._first_word = None
        node, link = self._node, self._link
        address: Address = node.out_addr_for(link.encryption)
        # (What our proof says we gave: no address, for a node that cannot
        # be dialled, as the peer reads port 0.)
        self._sent_address = None if address[1] == 0 else address
        proving = None if self._nonce is None or node.key is None else (node.key.public_key, self._nonce)
        payload = handshake.handshake_payload(node.id, self._protocol_id, address, link.ids_as_bin, proving)
        msg = WireMessage.create(flags.whisper, node.id, node.now(), payload, link.ids_as_bin)
        self._write(msg.frame(link.ids_as_bin, None))

    def on_handshake(self, payload: tuple[Any, ...]) -> None:
        """The peer's handshake came (again)."""
        self.first_bytes = None
        link, node = self._link, self._node
        shake = handshake.parse_handshake(payload)
        if shake is None:
            self.fail(HandshakeFailed("malformed handshake"), "malformed")
            return
        form = handshake.answer_form(
            shake.writes_str, sent=self._handshake_sent, as_bin=link.ids_as_bin, identified=link.peer_id is not None
        )
        if form is not None:
            link.ids_as_bin = form.as_bin
            self.sends_twice = self.sends_twice or form.sends_twice
            self._send_handshake()
        protocol = node.protocol
        mismatch = handshake.mismatch(shake, protocol.subnet, link.encryption, protocol.signed)
        if mismatch is not None:
            self.fail(mismatch, "protocol_mismatch")
            return
        known = self._unproved.peer_id if self._unproved is not None else link.peer_id
        if known is not None:
            # A second handshake: the peer restates itself.
            if shake.peer_id != known:
                link.close("the peer changed its ID")
            return
        refused = handshake.refusal(shake, node.id, link.expected_id)
        if refused is None and self._nonce is not None:
            refused = handshake.unproved(shake, node.allowed)
        if refused is not None:
            self.fail(*refused)
            return
        if self._nonce is None:
            self._identified(shake)
            return
        # Signed: the peer is identified once its proof holds.  The dialler
        # proves its key first; the node dialled proves its own once the
        # dialler's holds, so that a dialler that has the node's proof knows
        # that it is in the node's routing table (as a dialler that has the
        # node's handshake knows on an unsigned network).
        self._unproved = shake
        if link.outgoing:
            self._send_proof(shake)

    def _send_proof(self, shake: handshake.PeerHandshake) -> None:
        """Prove our key to the peer of ``shake``."""
        node, link = self._node, self._link
        assert node.key is not None and self._nonce is not None and shake.nonce is not None
        terms = handshake.ProofTerms(
            self._protocol_id,
            signer_dialled=not link.outgoing,
            signer_id=node.id,
            checker_id=shake.peer_id,
            signer_address=self._sent_address,
            signer_nonce=self._nonce,
            checker_nonce=shake.nonce,
            binding=link.channel_binding(),
        )
        self.renegotiate(flags.proof, handshake.proof(node.key, terms))

    def _peer_terms(self, shake: handshake.PeerHandshake) -> handshake.ProofTerms:
        """What the proof of the peer of ``shake`` must sign, as we see the link."""
        assert self._nonce is not None and shake.nonce is not None
        return handshake.ProofTerms(
            self._protocol_id,
            signer_dialled=self._link.outgoing,
            signer_id=shake.peer_id,
            checker_id=self._node.id,
            signer_address=shake.address,
            signer_nonce=shake.nonce,
            checker_nonce=self._nonce,
            binding=self._link.channel_binding(),
        )

    def _on_proof(self, payload: tuple[Any, ...]) -> None:
        """A signed network's peer sent its proof: it is identified if the proof holds."""
        shake, signature = self._unproved, handshake.read_proof(payload)
        if shake is None or self._nonce is None or self._link.peer_id is not None:
            self.fail(HandshakeFailed("a proof came before the handshake, or twice"), "malformed")
        elif signature is None or not handshake.proof_holds(shake, signature, self._peer_terms(shake)):
            self.fail(HandshakeFailed(f"the peer {shake.peer_id} did not prove that it holds its key"), "bad_proof")
        else:
            self._unproved = None
            if not self._link.outgoing:
                self._send_proof(shake)
            self._identified(shake)

    def _identified(self, shake: handshake.PeerHandshake) -> None:
        """The peer is who its handshake says: enter it in the routing table."""
        link, node = self._link, self._node
        link.peer_id, link.peer_addr, link.peer_codes = shake.peer_id, shake.address, shake.codes
        if link.slot is not None:
            node.admission.handshaken(link.slot)
        self.send_code = handshake.send_code(shake.codes)
        self.stop_waiting()
        if node.link_ready(link):
            address = shake.address
            where = "it cannot be dialled" if address is None else f"at {address[0]}:{address[1]}"
            self._log.info("peer {peer} joined ({where})", peer=LoggedID(shake.peer_id), where=where, address=address)
        link.handshake_done.callback(shake.peer_id)

    def on_renegotiate(self, msg: WireMessage) -> None:
        """The peer renegotiated: its compression codes, or a resend."""
        self.first_bytes = None
        link = self._link
        word, codes = handshake.read_renegotiation(msg.payload)
        if word is Word.COMPRESSION:
            if not self._handshake_sent:
                self._before_handshakes(msg)
            changed = codes != link.peer_codes
            link.peer_codes = codes
            self.send_code = handshake.send_code(codes)
            if changed and link.peer_id is not None:
                self.renegotiate(flags.compression, handshake.agreed(codes))
        elif word is Word.RESEND:
            # Once per message sent: asking again gets nothing more.
            link.resend_last()
        elif word is Word.PROOF and self._nonce is not None:
            self._on_proof(msg.payload)
        elif word is Word.LAZY_PUSH:
            link.lazy_push = True
        elif word is Word.TREE and link.lazy_push and not link.closing:
            self._node.tree_word_received(link, msg.payload)
        elif word is Word.MALFORMED:
            link.close("malformed compression renegotiation")
        else:
            self._log.debug("ignored a renegotiate message {payload!r}", payload=msg.payload)

    def _before_handshakes(self, msg: WireMessage) -> None:
        """A renegotiation before any handshake: a twisted_mesh node's first word (see `.start`)."""
        link = self._link
        if link.outgoing:
            # The node dialled is a twisted_mesh node: it waits for our
            # handshake, and this is the form of its IDs.
            link.ids_as_bin = msg.sender_is_bin
            self.renegotiate(flags.lazy_push)
            self._send_handshake()
        elif not self._answered_first_word:
            # A twisted_mesh node dialled us, and waits for a word of ours:
            # no silent stranger.
            self._answered_first_word = True
            if link.slot is not None:
                self._node.admission.spoke(link.slot)
            self.renegotiate(flags.compression, handshake.offered())
            self.renegotiate(flags.lazy_push)

    def _no_first_word(self) -> None:
        """The node dialled says nothing: speak first, in the form it most likely reads."""
        self._first_word = None
        link = self._link
        if not self._handshake_sent and not link.closing:
            link.ids_as_bin = handshake.unprompted_form(link.encryption)
            self._send_handshake()

    def renegotiate(self, *payload: Any) -> None:
        """Write a renegotiation (never what a peer asks to have resent)."""
        node, as_bin = self._node, self._link.ids_as_bin
        msg = WireMessage.create(flags.renegotiate, node.id, node.now(), payload, as_bin)
        self._write(msg.frame(as_bin, self.send_code))

    def checksum_failed(self) -> None:
        """A frame failed its checksum: ask for it again (raw, the first time), or give up on the peer."""
        self.bad_frames += 1
        if self.bad_frames > MAX_BAD_FRAMES:
            self._link.close(f"{self.bad_frames} frames in a row failed their checksum")
            return
        peer = logged(self._link.peer_id)
        if self.inflating:
            # The first time: said once, and asked once.
            self.inflating = False
            self._log.warn("a frame from {peer} failed its checksum: asking for it uncompressed", peer=peer)
            self.renegotiate(flags.compression, [])
        else:
            self._log.debug("a frame from {peer} failed its checksum: asking for it again", peer=peer)
        self.renegotiate(flags.resend)
