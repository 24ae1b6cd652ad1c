// The errors the node's Promises fail with (the codec's are in frames.js).

/** A peer of another network: another subnet, or another transport. */
export class ProtocolMismatch extends Error {
  constructor(ours, theirs, url) {
    super(
      `the node at ${url} belongs to another network: its protocol ID is ${theirs}, ours is ${ours} ` +
        "(another subnet, or another transport)",
    );
    this.name = "ProtocolMismatch";
    this.ours = ours;
    this.theirs = theirs;
  }
}

/** The connection closed, or failed, before the peer's handshake. */
export class HandshakeFailed extends Error {
  constructor(message) {
    super(message);
    this.name = "HandshakeFailed";
  }
}

/** The node has no link to the node a message was meant for. */
export class NotConnected extends Error {
  constructor(message) {
    super(message);
    this.name = "NotConnected";
  }
}

/**
 * No link took a new message: more than `maxSendBuffer` bytes wait in the
 * WebSocket of each (the others, if any, are closing).  Nothing was sent;
 * await sock.drained() and send it again.  `skipped` maps each peer's ID to
 * why its link did not take it.
 */
export class SendBufferFull extends Error {
  constructor(skipped) {
    const reasons = Object.entries(skipped).map(([peerId, reason]) => `${peerId.slice(0, 10)}…: ${reason}`);
    super(`nothing was sent (${reasons.join("; ")}): await sock.drained() before sending more`);
    this.name = "SendBufferFull";
    this.skipped = skipped;
  }
}
