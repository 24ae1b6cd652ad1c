// The errors the node's Promises fail with (the codec's are in frames.js).

/** A peer of another network: another subnet or transport, or signed where this one is not (or the reverse). */
export class ProtocolMismatch extends Error {
  constructor(ours, theirs, url) {
    super(
      `the node at ${url} belongs to another network: its protocol ID is ${theirs}, ours is ${ours} ` +
        "(another subnet or transport, or one network signed and the other not)",
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

/**
 * A signed network needs what this browser lacks: WebCrypto (a secure
 * context: https, or http on localhost) with Ed25519.  Such a browser joins
 * an unsigned ws network only.
 */
export class SignedUnsupported extends Error {
  constructor(detail) {
    super(
      `this browser cannot join a signed network: ${detail}. A signed network needs WebCrypto with Ed25519 ` +
        "(Chrome/Edge 137+, Firefox 129+, Safari 17+, in a secure context: https, or http on localhost); " +
        "browsers without WebCrypto Ed25519 need an unsigned ws network",
    );
    this.name = "SignedUnsupported";
  }
}
