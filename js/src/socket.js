// The browser mesh node: MeshSocket, its routing table, relaying, sending,
// receiving and events.
//
// A browser cannot accept connections: it dials server nodes over
// WebSocket (`ws://host:port/`, each binary message carrying frames) and
// tells them it cannot be dialled (`["", 0]` in its handshake).  It writes
// IDs as msgpack str, as js2p does, and reads either form.  It lists no
// compression, so its peers send raw frames.  It relays broadcasts between
// its links when it has several.

import { Dialer } from "./dialer.js";
import { NotConnected, SendBufferFull } from "./errors.js";
import { Events } from "./events.js";
import { flags } from "./flags.js";
import { MAX_FRAME_SIZE, MAX_ITEMS, WireMessage, checkPacket, idText } from "./frames.js";
import { newNodeId, Protocol } from "./ids.js";
import { CLOSING } from "./link.js";
import { Message } from "./message.js";
import { MESSAGE_LIFETIME, SeenSet } from "./seen.js";

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

function defaultLog(level, text) {
  if (level === "warn") console.warn(`twisted_mesh: ${text}`);
}

/**
 * A mesh node in a browser, with the API of the references' MeshSocket:
 *
 *     const sock = new twisted_mesh.MeshSocket(new twisted_mesh.Protocol("mesh", "ws"));
 *     await sock.connect("ws://127.0.0.1:8080/");
 *     sock.on("message", (sock) => { const msg = sock.recv(); console.log(msg.packets); });
 *     sock.send(["this is", "a test"]);
 *
 * Options: `reconnect` (default true: dial a lost server again, after a
 * delay growing from `minDelay` to `maxDelay` ms by `factor`), `id` (this
 * node's ID; a fresh one by default), `WebSocket` (the WebSocket class),
 * `maxFrameSize` (the largest frame body read or sent; 16 MiB, twisted_mesh's
 * default), `maxSendBuffer` (bytes that may wait in a link's WebSocket before
 * it takes no new message; 32 MiB, twisted_mesh's default), `log(level,
 * text)` (default: warnings to the console).
 */
export class MeshSocket {
  constructor(protocol, options = {}) {
    if (!(protocol instanceof Protocol)) throw new TypeError("MeshSocket needs a twisted_mesh.Protocol");
    this.protocol = protocol;
    this.options = {
      reconnect: true,
      minDelay: 500,
      maxDelay: 30000,
      factor: 2,
      maxFrameSize: MAX_FRAME_SIZE,
      maxSendBuffer: MAX_SEND_BUFFER,
      WebSocket: globalThis.WebSocket,
      log: defaultLog,
      ...options,
    };
    /** This node's ID, in base58. */
    this.id = this.options.id || newNodeId();
    /** The connected peers, by node ID. */
    this.routing_table = new Map();
    /** The received messages not taken by recv() yet, oldest first. */
    this.queue = [];
    /** Whether close() was called. */
    this.closed = false;
    /**
     * Counters: frames and bytes in and out, messages delivered and relayed,
     * drops by reason (`send_buffer`: relayed broadcasts a link over its send
     * buffer did not take), and this node's own messages a link did not take
     * (`skipped.send_buffer`, one a link).
     */
    this.stats = { frames_in: 0, frames_out: 0, bytes_in: 0, bytes_out: 0, delivered: 0, relayed: 0, dropped: {}, skipped: {} };
    this._events = new Events((event, error) => this._report(`the ${event} callback`, error));
    this._handlers = [];
    this._seen = new SeenSet();
    this._dialers = new Map();
    this._outgoing = Promise.resolve();
    // While drained() is awaited: the Promise its callers share.
    this._drainedPoll = null;
    // When a full send buffer was last logged, for relayed messages and own ones.
    this._sendBufferLogged = { relayed: -Infinity, own: -Infinity };
  }

  // -- links -------------------------------------------------------------------

  /**
   * Dial the server node at `url` (ws://host:port/ or wss://...).  A
   * Promise of the peer's ID once its handshake is accepted; it fails with
   * ProtocolMismatch when the node belongs to another network, and with
   * HandshakeFailed when the link cannot be made (also when the WebSocket
   * refuses the URL: then it is not dialled again).  While `reconnect` is
   * on, the node keeps dialling the URL whenever the link is lost (or could
   * not be made), with a growing delay: watch the 'connect', 'disconnect'
   * and 'reconnecting' events.  Called again for a URL it is dialling, it
   * gives the peer's ID at once when connected, else the outcome of the
   * next handshake: that of the attempt under way, or of the next attempt
   * when waiting to dial again (retryNow() dials at once).
   */
  connect(url) {
    if (this.closed) return Promise.reject(new Error("the node is closed"));
    let scheme;
    try {
      scheme = new URL(url).protocol.slice(0, -1);
    } catch {
      return Promise.reject(new TypeError(`not a URL: ${url}`));
    }
    if (scheme !== this.protocol.encryption) {
      return Promise.reject(
        new TypeError(`a node of the ${this.protocol.encryption} transport dials ${this.protocol.encryption}:// URLs, not ${url}`),
      );
    }
    const existing = this._dialers.get(url);
    if (existing && existing.state !== "stopped") return existing.nextHandshake();
    const dialer = new Dialer(this, url);
    this._dialers.set(url, dialer);
    this._events.emit("status", this);
    return dialer.first;
  }

  /**
   * What each dialled URL is doing: `[{url, state, attempt, retryAt,
   * peer_id, lastError}]`, state being "connecting", "connected",
   * "waiting" or "stopped".
   */
  links() {
    return [...this._dialers.values()].map((dialer) => ({
      url: dialer.url,
      state: dialer.state,
      attempt: dialer.attempt,
      retryAt: dialer.retryAt,
      peer_id: dialer.link ? dialer.link.peer_id : null,
      lastError: dialer.lastError,
    }));
  }

  /** Dial at once every URL that is waiting to be dialled again. */
  retryNow() {
    for (const dialer of this._dialers.values()) dialer.retryNow();
  }

  /** Close every link and stop dialling. */
  close() {
    if (this.closed) return;
    this.closed = true;
    for (const dialer of this._dialers.values()) dialer.stop();
    this._events.emit("status", this);
  }

  _linkReady(link) {
    const wasEmpty = this.routing_table.size === 0;
    this.routing_table.set(link.peer_id, link);
    this._log("info", `peer ${link.peer_id} joined from ${link.url}`);
    // Answer with peers, as every node does on a handshake.
    this._whisper(link, [flags.peers, this._peerEntries(link)]);
    if (wasEmpty) this._events.emit("connect", this);
    this._events.emit("status", this);
  }

  _linkLost(link, reason) {
    if (link.peer_id !== null && this.routing_table.get(link.peer_id) === link) {
      this.routing_table.delete(link.peer_id);
      this._log("info", `peer ${link.peer_id} left: ${reason}`);
      if (this.routing_table.size === 0) this._events.emit("disconnect", this);
    }
    this._events.emit("status", this);
  }

  _peerEntries(except) {
    const entries = [];
    for (const [peerId, link] of this.routing_table) {
      if (link !== except && link.peer_addr !== null) entries.push([[...link.peer_addr], peerId]);
    }
    return entries;
  }

  // -- receiving ---------------------------------------------------------------

  async _received(link, msg) {
    if (msg.msgType === flags.broadcast) {
      const now = this._now();
      // As twisted_mesh drops them: stamped more than MESSAGE_LIFETIME
      // before now, or after (a clock far ahead), which the seen-set would
      // otherwise hold, and hold back the forgetting of the others, as long.
      if (msg.time < now - MESSAGE_LIFETIME || msg.time > now + MESSAGE_LIFETIME) {
        this._drop("expired");
        return;
      }
      const id = await msg.id();
      if (!this._seen.add(id, msg.time, now)) {
        this._drop("duplicate");
        return;
      }
      const origin = this.routing_table.get(msg.sender);
      // Relay between this node's links (as the frame arrived).
      let frame = null;
      for (const peer of this.routing_table.values()) {
        if (peer !== link && peer !== origin) {
          frame = frame || msg.frame();
          if (peer.send(frame, true) === null) this.stats.relayed += 1;
        }
      }
      this._handle(link, msg, id);
    } else {
      this._handle(link, msg, await msg.id());
    }
  }

  _handle(link, msg, id) {
    const payload = msg.payload;
    if (!payload.length) return;
    const subflag = payload[0];
    if (subflag === flags.peers && msg.msgType === flags.whisper) {
      // A browser cannot dial the TCP nodes listed; ws ones it could, but
      // it keeps to the servers it was told to dial.
      return;
    }
    if (subflag === flags.request) {
      this._request(link, msg);
      return;
    }
    if (subflag === flags.response) return; // this node sends no requests
    this._deliver(link, msg, id);
  }

  _request(link, msg) {
    const payload = msg.payload;
    if (payload.length === 2 && idText(payload[1]) === "*") {
      this._whisper(link, [flags.peers, this._peerEntries(link)]);
      return;
    }
    if (payload.length !== 3 || msg.msgType !== flags.broadcast) return;
    const target = idText(payload[2]);
    const peer = target !== null ? this.routing_table.get(target) : undefined;
    if (peer && peer.peer_addr !== null) {
      // NotConnected: the links closed meanwhile, and the request with them.
      this._broadcastNew([flags.response, payload[1], [[...peer.peer_addr], payload[2]]]).catch(
        (error) => error instanceof NotConnected || this._report("a response", error),
      );
    }
  }

  _deliver(link, wire, id) {
    const message = new Message(wire, id, this, link);
    for (const handler of this._handlers) {
      try {
        if (handler(message, link)) return;
      } catch (error) {
        this._report("a handler", error);
      }
    }
    if (message.packets[0] !== flags.broadcast && message.packets[0] !== flags.whisper) return;
    this.stats.delivered += 1;
    this.queue.push(message);
    this._events.emit("message", this);
  }

  /**
   * Take received messages, oldest first: with no argument the next one
   * (undefined when there is none); with a number, an array of up to that
   * many.
   */
  recv(quantity) {
    if (quantity === undefined) return this.queue.shift();
    return this.queue.splice(0, Math.max(0, quantity));
  }

  /**
   * Offer each received message to `handler(msg, link)` before it is
   * queued; a handler that returns a true value takes it.
   */
  register_handler(handler) {
    if (typeof handler !== "function") throw new TypeError("the handler must be a function");
    this._handlers.push(handler);
  }

  /**
   * Call `callback(sock)` each time `event` happens: 'connect' when the node
   * gets its first peer, 'disconnect' when it loses its last one, 'message'
   * when a message is queued; also 'reconnecting' (sock, {url, attempt,
   * delay, reason}), 'error' (sock, error) for a link that will not be
   * dialled again (a protocol mismatch, a URL the WebSocket refuses, a node
   * reached by another link, or this node itself), and 'status' (sock)
   * whenever a link changes state.
   */
  on(event, callback) {
    this._events.on(event, callback);
  }

  /** Like `on`, for the next time `event` happens only. */
  once(event, callback) {
    this._events.once(event, callback);
  }

  /** Stop calling `callback` for `event`. */
  off(event, callback) {
    this._events.off(event, callback);
  }

  // -- sending -----------------------------------------------------------------

  /**
   * Send `packets` (an array) to the mesh; they arrive as [type, ...packets].
   * `flag` flags.broadcast (the default) reaches every node of the mesh;
   * flags.whisper this node's peers only.  A Promise of the message ID
   * (hex), once the message is written to at least one link.  It fails with
   * NotConnected when nothing was written: the node has no peer, its links
   * are closing, or it is closed; and with SendBufferFull when each link
   * that is not closing has more than `maxSendBuffer` bytes waiting (a link
   * that is over it while others take the message skips it: counted in
   * `stats.skipped.send_buffer`, and logged).  It fails with a TypeError
   * when a packet is not something the protocol carries, or nests lists
   * and maps deeper than twisted_mesh nodes read (31 levels in a packet:
   * MAX_DEPTH), and with a RangeError when the message is larger than they
   * read: a list or map of more than 1,000,000 items (MAX_ITEMS), or a body
   * of more than `maxFrameSize` bytes.  A node closes the link on such a
   * message, and what is sent after it is lost: the checks are made here
   * instead.
   */
  send(packets, flag = flags.broadcast, type = flags.broadcast) {
    let checked;
    try {
      checked = this._checked(packets, type, "send()");
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.closed) return Promise.reject(new NotConnected("the node is closed: nothing was sent"));
    if (this.routing_table.size === 0) {
      return Promise.reject(new NotConnected("not connected to any node: nothing was sent"));
    }
    if (flag === flags.broadcast) return this._broadcastNew(checked);
    if (flag !== flags.whisper) return Promise.reject(new RangeError("the flag must be flags.broadcast or flags.whisper"));
    return this._serially(async () => {
      const msg = await this._make(flags.whisper, checked);
      this._writeNew(this.routing_table.values(), msg.frame());
      return msg.id();
    });
  }

  /**
   * The payload [subflag, ...packets] with each packet checked (see
   * checkPacket); `what` names the caller.  A message is an array too, of
   * msg_type, sender, time and the payload: it holds MAX_ITEMS at most.
   */
  _checked(packets, subflag, what) {
    if (!Array.isArray(packets)) throw new TypeError(`${what} takes an array of packets`);
    if (packets.length + 4 > MAX_ITEMS) {
      throw new RangeError(`${packets.length} packets: twisted_mesh nodes read messages of at most ${MAX_ITEMS - 4}`);
    }
    // The message array is a list too.
    const budget = { left: MAX_ITEMS - 1 };
    return [subflag, ...packets.map((packet) => checkPacket(packet, 1, budget))];
  }

  _broadcastNew(payload) {
    return this._serially(async () => {
      const msg = await this._make(flags.broadcast, payload);
      const id = await msg.id();
      this._seen.add(id, msg.time, this._now());
      this._writeNew(this.routing_table.values(), msg.frame());
      return id;
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
    throw new NotConnected(this.closed ? "the node is closed: nothing was sent" : "every link is closing: nothing was sent");
  }

  /**
   * `link` refused a frame: more than `maxSendBuffer` bytes wait in its
   * WebSocket.  Count it (a relayed broadcast in `stats.dropped`, one of
   * this node's own in `stats.skipped`), log it at most every
   * SEND_BUFFER_LOG_INTERVAL ms for each kind, and return why.
   */
  _sendBufferFull(link, relayed) {
    const counts = relayed ? this.stats.dropped : this.stats.skipped;
    counts.send_buffer = (counts.send_buffer || 0) + 1;
    const reason =
      `the send buffer is full: ${link.buffered} bytes wait for the peer, ` +
      `more than maxSendBuffer (${this.options.maxSendBuffer})`;
    const kind = relayed ? "relayed" : "own";
    const now = Date.now();
    if (now - this._sendBufferLogged[kind] >= SEND_BUFFER_LOG_INTERVAL) {
      this._sendBufferLogged[kind] = now;
      const what = relayed ? "dropping the broadcasts relayed to it" : "not sending this node's messages to it";
      this._log("warn", `peer ${link.peer_id}: ${reason}: ${what} (${counts.send_buffer} so far)`);
    }
    return reason;
  }

  /**
   * A Promise that resolves once what was sent so far is on its way: every
   * message sent before the call is written, and no link has more than
   * DRAINED_BUFFER (64 KiB) waiting in its WebSocket; at once when that is
   * so already.  A link that closes is not waited for.  A producer awaits
   * it between batches, and so never meets SendBufferFull while a batch is
   * smaller than `maxSendBuffer` less 64 KiB:
   *
   *     for (let i = 0; i < count; i++) {
   *       sock.send([i]);
   *       if (i % 500 === 499) await sock.drained();
   *     }
   */
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
    for (const link of this.routing_table.values()) {
      if (link._open && link.buffered > DRAINED_BUFFER) return false;
    }
    return true;
  }

  _whisper(link, payload) {
    this._serially(async () => {
      const msg = await this._make(flags.whisper, payload);
      link.send(msg.frame());
    }).catch((error) => this._report("a whisper", error));
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
  _reply(target, packets) {
    let checked;
    try {
      checked = this._checked(packets, flags.whisper, "reply()");
    } catch (error) {
      return Promise.reject(error);
    }
    const link = this.routing_table.get(target);
    if (!link) {
      return Promise.reject(
        new NotConnected(
          `not connected to ${target}: a browser node replies only to its direct peers (it cannot dial the ` +
            "TCP address a request for the sender would bring back); broadcast instead",
        ),
      );
    }
    return this._serially(async () => {
      const msg = await this._make(flags.whisper, checked);
      this._writeNew([link], msg.frame());
      return msg.id();
    });
  }

  // Messages are made one after the other (a checksum may be computed
  // asynchronously), so they go out in the order they were sent.
  _serially(task) {
    const done = this._outgoing.then(task);
    this._outgoing = done.catch(() => {});
    return done;
  }

  // A message larger than a peer reads fails here (a RangeError), before it
  // is written: the peer would close the link on it.
  _make(msgType, payload) {
    return WireMessage.create(msgType, this.id, this._now(), payload, false, this.options.maxFrameSize);
  }

  _now() {
    return Math.floor(Date.now() / 1000);
  }

  // -- reporting ---------------------------------------------------------------

  _drop(reason) {
    this.stats.dropped[reason] = (this.stats.dropped[reason] || 0) + 1;
  }

  _log(level, text) {
    try {
      this.options.log(level, text);
    } catch {
      // a logger that throws is not our problem to report
    }
  }

  _report(what, error) {
    console.error(`twisted_mesh: ${what} failed:`, error);
  }

  toString() {
    return `MeshSocket(${this.id.slice(0, 10)}…, ${this.routing_table.size} peers)`;
  }
}

