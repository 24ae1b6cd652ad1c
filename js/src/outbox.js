// What the node sends: its messages checked against what a twisted_mesh node
// reads, made one after the other, and written to the links that have room
// for them; and drained(), for a producer that must not overrun the links.

import { NotConnected, SendBufferFull } from "./errors.js";
import { flags } from "./flags.js";
import { MAX_ITEMS, WireMessage, checkPacket } from "./frames.js";
import { CLOSING } from "./link.js";
import { signedMessage } from "./signing.js";

/**
 * The default of the `maxSendBuffer` option: bytes that may wait in a
 * link's WebSocket before it takes no new message of this node, as
 * twisted_mesh's `Limits.max_send_buffer`.
 */
export const MAX_SEND_BUFFER = 32 * 1024 * 1024;

/**
 * drained() waits until no link has more than this many bytes waiting: what
 * a twisted_mesh node's TCP transport buffers before it says it is full.
 */
export const DRAINED_BUFFER = 64 * 1024;

/**
 * Milliseconds between two looks at the links while drained() is awaited: a
 * WebSocket fires no event when its buffer empties.
 */
const DRAIN_POLL_INTERVAL = 15;

/** Milliseconds between two log lines about frames a full send buffer refused. */
const SEND_BUFFER_LOG_INTERVAL = 10000;

/**
 * The messages a MeshSocket makes: its user's (send(), reply()) and its
 * answers to its peers, written to the links of its routing table.
 */
export class Outbox {
  constructor(sock) {
    this._sock = sock;
    this._outgoing = Promise.resolve();
    // While drained() is awaited: the Promise its callers share.
    this._drainedPoll = null;
    // When a full send buffer was last logged, for relayed messages and own ones.
    this._sendBufferLogged = { relayed: -Infinity, own: -Infinity };
  }

  /** MeshSocket.send(), which says what it does and how it fails. */
  send(packets, flag, type) {
    let checked;
    try {
      checked = this.check(packets, type, "send()");
    } catch (error) {
      return Promise.reject(error);
    }
    const sock = this._sock;
    if (sock.closed) return Promise.reject(new NotConnected("the node is closed: nothing was sent"));
    if (sock.routing_table.size === 0) {
      return Promise.reject(new NotConnected("not connected to any node: nothing was sent"));
    }
    if (flag === flags.broadcast) return this.broadcast(checked);
    if (flag !== flags.whisper) return Promise.reject(new RangeError("the flag must be flags.broadcast or flags.whisper"));
    return this._whisper(checked, () => sock.routing_table.values());
  }

  /**
   * Whisper `packets` to the node `target` (see Message.reply).  This node
   * reaches only its own peers: a browser cannot dial the address a
   * `request` would bring back (a TCP node's), so a reply to a node that is
   * not a peer fails with NotConnected (as one does when the link to the
   * peer is closing), and with SendBufferFull when more than
   * `maxSendBuffer` bytes wait for it.  The packets are checked as send()
   * checks them.
   */
  reply(target, packets) {
    let checked;
    try {
      checked = this.check(packets, flags.whisper, "reply()");
    } catch (error) {
      return Promise.reject(error);
    }
    const link = this._sock.routing_table.get(target);
    if (!link) {
      return Promise.reject(
        new NotConnected(
          `not connected to ${target}: a browser node replies only to its direct peers (it cannot dial the ` +
            "TCP address a request for the sender would bring back); broadcast instead",
        ),
      );
    }
    return this._whisper(checked, () => [link]);
  }

  /**
   * The payload [subflag, ...packets] with each packet checked (see
   * checkPacket); `what` names the caller.  A message is an array too, of
   * msg_type, sender, time and the payload: it holds MAX_ITEMS at most.
   */
  check(packets, subflag, what) {
    if (!Array.isArray(packets)) throw new TypeError(`${what} takes an array of packets`);
    // (On a signed network a message ends with its key and signature too.)
    const fields = this._sock.protocol.signed ? 6 : 4;
    if (packets.length + fields > MAX_ITEMS) {
      throw new RangeError(`${packets.length} packets: twisted_mesh nodes read messages of at most ${MAX_ITEMS - fields}`);
    }
    // The message array is a list too.
    const budget = { left: MAX_ITEMS - 1 };
    return [subflag, ...packets.map((packet) => checkPacket(packet, 1, budget))];
  }

  /**
   * Broadcast `payload` to every peer, and count it as seen (a peer may
   * relay it back): a Promise of its ID, which fails as send() does.
   */
  broadcast(payload) {
    return this._serially(async () => {
      const msg = await this.make(flags.broadcast, payload);
      const id = await msg.id();
      this._sock._seen.add(id, msg.time, this._sock._now());
      this._writeNew(this._sock.routing_table.values(), msg.frame());
      return id;
    });
  }

  /** Whisper `payload` to `link`, the protocol's answer to it: a failure is reported, not returned. */
  answer(link, payload) {
    this._serially(async () => {
      const msg = await this.make(flags.whisper, payload);
      link.send(msg.frame());
    }).catch((error) => this._sock._report("a whisper", error));
  }

  /**
   * A Promise of a new message of this node: signed, on a signed network.
   * One larger than a peer reads fails here (a RangeError), before it is
   * written: the peer would close the link on it.
   */
  make(msgType, payload) {
    const sock = this._sock;
    if (!sock.protocol.signed) return this.makeUnsigned(msgType, payload);
    return signedMessage(sock._key, sock.protocol.subnet, msgType, sock._now(), payload, sock.options.maxFrameSize);
  }

  /**
   * A Promise of a new message of this node that is never signed: a
   * handshake or a renegotiation.  Its sender is str, or bin on a signed
   * network (the form of all this node's messages there).
   */
  makeUnsigned(msgType, payload) {
    const sock = this._sock;
    return WireMessage.create(msgType, sock.id, sock._now(), payload, sock.protocol.signed, sock.options.maxFrameSize);
  }

  /**
   * Whisper `payload` (checked) to the links `links()` gives once the
   * message is made: a Promise of its ID, which fails as send() does.
   */
  _whisper(payload, links) {
    return this._serially(async () => {
      const msg = await this.make(flags.whisper, payload);
      this._writeNew(links(), msg.frame());
      return msg.id();
    });
  }

  /**
   * Write the frame of a new message to `links`: throw when none took it,
   * SendBufferFull when one was over its send buffer, else NotConnected
   * (each is closing: a link drops what it is given then).
   */
  _writeNew(links, frame) {
    const skipped = {};
    let written = 0;
    for (const link of links) {
      const refused = link.send(frame);
      if (refused === null) written += 1;
      else skipped[link.peer_id] = refused;
    }
    if (written > 0) return;
    if (Object.values(skipped).some((reason) => reason !== CLOSING)) throw new SendBufferFull(skipped);
    throw new NotConnected(this._sock.closed ? "the node is closed: nothing was sent" : "every link is closing: nothing was sent");
  }

  // Messages are made one after the other (a checksum may be computed
  // asynchronously), so they go out in the order they were sent.
  _serially(task) {
    const done = this._outgoing.then(task);
    this._outgoing = done.catch(() => {});
    return done;
  }

  // -- the send buffers --------------------------------------------------------

  /**
   * `link` refused a frame: more than `maxSendBuffer` bytes wait in its
   * WebSocket.  Count it (a relayed broadcast in `stats.dropped`, one of
   * this node's own in `stats.skipped`), log it at most every
   * SEND_BUFFER_LOG_INTERVAL ms for each kind, and return why.
   */
  refused(link, relayed) {
    const sock = this._sock;
    const counts = relayed ? sock.stats.dropped : sock.stats.skipped;
    counts.send_buffer = (counts.send_buffer || 0) + 1;
    const reason =
      `the send buffer is full: ${link.buffered} bytes wait for the peer, ` +
      `more than maxSendBuffer (${sock.options.maxSendBuffer})`;
    const kind = relayed ? "relayed" : "own";
    const now = Date.now();
    if (now - this._sendBufferLogged[kind] >= SEND_BUFFER_LOG_INTERVAL) {
      this._sendBufferLogged[kind] = now;
      const what = relayed ? "dropping the broadcasts relayed to it" : "not sending this node's messages to it";
      sock._log("warn", `peer ${link.peer_id}: ${reason}: ${what} (${counts.send_buffer} so far)`);
    }
    return reason;
  }

  /** MeshSocket.drained(): once what was sent is written, and the links have drained. */
  drained() {
    return this._outgoing.then(() => this._linksDrained());
  }

  _linksDrained() {
    if (this._isDrained()) return undefined;
    if (this._drainedPoll === null) {
      // One timer for every caller: browsers fire no event when a
      // WebSocket's buffer empties, so the links are looked at until it has.
      this._drainedPoll = new Promise((resolve) => {
        const timer = setInterval(() => {
          if (!this._isDrained()) return;
          clearInterval(timer);
          this._drainedPoll = null;
          resolve();
        }, DRAIN_POLL_INTERVAL);
      });
    }
    return this._drainedPoll;
  }

  _isDrained() {
    for (const link of this._sock.routing_table.values()) {
      if (link._open && link.buffered > DRAINED_BUFFER) return false;
    }
    return true;
  }
}
