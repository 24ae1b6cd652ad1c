// What the user receives: Message, with reply().

/** A broadcast or whisper this node received. */
export class Message {
  constructor(wire, id, sock, link) {
    /** The payload, sub-flag first: a broadcast of ["hi"] arrives as [0, "hi"]. */
    this.packets = wire.payload;
    /** The node ID of the node that sent it. */
    this.sender = wire.sender;
    /** The message ID, as hex: the same on every node. */
    this.id = id;
    /** The UTC second the sender stamped it with. */
    this.time = wire.time;
    /** Its main flag: flags.broadcast or flags.whisper. */
    this.msg_type = wire.msgType;
    this._sock = sock;
    this._link = link;
  }

  /**
   * Whisper `packets` (an array) back to the sender: they arrive as
   * [flags.whisper, ...packets].  A Promise of the message ID; it fails
   * with NotConnected when the sender is not a peer of this node, or its
   * link is closing, with SendBufferFull when more than `maxSendBuffer`
   * bytes wait for it, and with a TypeError or RangeError as send() does
   * (see Outbox.reply).
   */
  reply(packets) {
    return this._sock._outbox.reply(this.sender, packets);
  }

  toString() {
    return `Message(from ${this.sender.slice(0, 10)}…, ${JSON.stringify(this.packets)})`;
  }
}
