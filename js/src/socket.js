// The browser mesh node: MeshSocket, its WebSocket links, and Message.
//
// A browser cannot accept connections: it dials server nodes over
// WebSocket (`ws://host:port/`, each binary message carrying frames) and
// tells them it cannot be dialled (`["", 0]` in its handshake).  It writes
// IDs as msgpack str, as js2p does, and reads either form.  It lists no
// compression, so its peers send raw frames.  It relays broadcasts between
// its links when it has several.

import { Events } from "./events.js";
import { flags } from "./flags.js";
import {
  ChecksumError,
  FrameError,
  FrameReader,
  MAX_FRAME_SIZE,
  MAX_ITEMS,
  WireMessage,
  checkPacket,
  idText,
} from "./frames.js";
import { isBase58, newNodeId, Protocol } from "./ids.js";

/**
 * How long a broadcast stays new, in seconds: older ones are dropped, and
 * so are ones stamped further ahead (as twisted_mesh drops them).
 */
export const MESSAGE_LIFETIME = 60;

/** Milliseconds a peer has to send its handshake. */
export const HANDSHAKE_TIMEOUT = 30000;

/** Frames in a row that may fail their checksum before the link is closed. */
const MAX_BAD_FRAMES = 3;

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

/** Why a link that is closing took no message. */
const CLOSING = "the link is closing";

const OPEN = 1; // WebSocket.OPEN

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
   * (see MeshSocket._reply).
   */
  reply(packets) {
    return this._sock._reply(this.sender, packets);
  }

  toString() {
    return `Message(from ${this.sender.slice(0, 10)}…, ${JSON.stringify(this.packets)})`;
  }
}

/**
 * The broadcasts seen in the last MESSAGE_LIFETIME seconds, by ID.  Entries
 * are forgotten in the order they came, up to the first that has not
 * expired: that holds the others back no more than MESSAGE_LIFETIME seconds,
 * as a broadcast stamped further ahead is dropped before it gets here.
 */
class SeenSet {
  constructor() {
    this._expiries = new Map();
  }

  /** Record `key` (hex), a message stamped `time`; return whether it is new. */
  add(key, time, nowSeconds) {
    for (const [old, expiry] of this._expiries) {
      if (expiry >= nowSeconds) break;
      this._expiries.delete(old);
    }
    if (this._expiries.has(key)) return false;
    this._expiries.set(key, Math.max(time, nowSeconds) + MESSAGE_LIFETIME + 1);
    return true;
  }

  get size() {
    return this._expiries.size;
  }
}

function parseAddress(value) {
  if (!Array.isArray(value) || value.length !== 2) return null;
  let [host, port] = value;
  if (host instanceof Uint8Array) host = idText(host);
  if (typeof host !== "string" || !host || !Number.isInteger(port) || port <= 0 || port >= 65536) return null;
  return [host, port];
}

function parseCodes(value) {
  return Array.isArray(value) && value.every(Number.isInteger) ? value : null;
}

/**
 * One WebSocket link to a server node: framing, handshake, renegotiation.
 * Made by MeshSocket.connect; its `handshake` Promise fires with the peer's
 * ID once the peer's handshake is accepted.
 */
class Link {
  constructor(sock, url) {
    this.url = url;
    /** The peer's node ID, once its handshake came. */
    this.peer_id = null;
    /** The address the peer asks others to dial, or null. */
    this.peer_addr = null;
    /** The compression codes the peer listed (this node uses none). */
    this.peer_codes = [];
    /** Whether the peer wrote its handshake IDs as bin. */
    this.peer_ids_as_bin = false;
    this.stats = { frames_in: 0, frames_out: 0, bytes_in: 0, bytes_out: 0 };
    this._sock = sock;
    this._reader = new FrameReader(sock.options.maxFrameSize);
    this._inbox = Promise.resolve();
    this._closing = false;
    this._lastSent = null;
    this._badFrames = 0;
    // Renegotiations go out in the order they were made (see _renegotiate).
    this._renegotiations = Promise.resolve();
    this.fatal = null;
    this.handshake = new Promise((resolve, reject) => {
      this._handshakeDone = resolve;
      this._handshakeFailed = reject;
    });
    this.handshake.catch(() => {});
    this.closed = new Promise((resolve) => {
      this._closedDone = resolve;
    });
    const WebSocketImpl = sock.options.WebSocket;
    let ws;
    try {
      ws = this._ws = new WebSocketImpl(url);
    } catch (error) {
      this._refused(error);
      return;
    }
    this._timer = setTimeout(() => this._fail(new HandshakeFailed(`no handshake from ${url} within ${HANDSHAKE_TIMEOUT / 1000} s`)), HANDSHAKE_TIMEOUT);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => this._opened();
    ws.onmessage = (event) => this._data(event.data);
    ws.onclose = (event) => this._lost(event);
    ws.onerror = () => {}; // onclose follows, with the code
  }

  toString() {
    return `Link(${this.peer_id ? this.peer_id.slice(0, 10) + "…" : "?"} at ${this.url})`;
  }

  /**
   * The WebSocket constructor threw: a URL it refuses (one with a fragment;
   * ws:// from an https page; a blocked port).  The same URL would be refused
   * again, so the link fails for good: no timer, no dialling again.
   */
  _refused(error) {
    this._ws = null;
    this._closing = true;
    this.fatal = new HandshakeFailed(`${this.url}: cannot open a WebSocket: ${error.message}`);
    this._handshakeFailed(this.fatal);
    this._closedDone(this.fatal.message);
  }

  // -- the WebSocket's events ------------------------------------------------

  _opened() {
    const sock = this._sock;
    this._sock._log("debug", `WebSocket to ${this.url} open: sending the handshake`);
    // Str IDs (js2p's form); ["", 0]: this node cannot be dialled.
    sock
      ._make(flags.whisper, [flags.handshake, sock.id, sock.protocol.id, ["", 0], []])
      .then((msg) => this._write(msg.frame()))
      .catch((error) => this.close(`could not make the handshake: ${error.message}`));
  }

  _data(data) {
    if (this._closing) return;
    if (typeof data === "string") {
      this.close("a text message came: the mesh carries binary messages only");
      return;
    }
    const bytes = new Uint8Array(data);
    const sock = this._sock;
    this.stats.bytes_in += bytes.length;
    sock.stats.bytes_in += bytes.length;
    let bodies;
    try {
      bodies = this._reader.feed(bytes);
    } catch (error) {
      sock._drop("too_large");
      this.close(error.message);
      return;
    }
    for (const body of bodies) {
      this.stats.frames_in += 1;
      sock.stats.frames_in += 1;
      // Checksums may be computed asynchronously (WebCrypto): keep the order.
      this._inbox = this._inbox.then(() => this._body(body)).catch((error) => sock._report("a frame", error));
    }
  }

  _lost(event) {
    const wasClosing = this._closing;
    this._closing = true;
    clearTimeout(this._timer);
    const reason = this._closeReason || `WebSocket closed (code ${event.code}${event.reason ? ": " + event.reason : ""})`;
    this._handshakeFailed(new HandshakeFailed(`${this.url}: ${reason}`));
    this._sock._linkLost(this, reason, wasClosing);
    this._closedDone(reason);
  }

  // -- frames ----------------------------------------------------------------

  async _body(body) {
    if (this._closing) return;
    const sock = this._sock;
    let msg;
    try {
      msg = await WireMessage.fromBody(body);
    } catch (error) {
      if (error instanceof ChecksumError) {
        sock._drop("bad_checksum");
        this._checksumFailed();
      } else if (error instanceof FrameError) {
        sock._drop("malformed");
        this.close(`bad frame: ${error.message}`);
      } else {
        throw error;
      }
      return;
    }
    this._badFrames = 0;
    const payload = msg.payload;
    if (msg.msgType === flags.renegotiate) {
      this._renegotiated(payload);
    } else if (msg.msgType === flags.whisper && payload[0] === flags.handshake) {
      this._handshake(payload);
    } else if (this.peer_id === null) {
      this._fail(new HandshakeFailed(`${this.url}: a message came before the handshake`));
    } else {
      await sock._received(this, msg);
    }
  }

  _handshake(payload) {
    const sock = this._sock;
    const peerId = idText(payload[1]);
    const theirs = idText(payload[2]);
    const codes = parseCodes(payload[4]);
    const undialable = Array.isArray(payload[3]) && payload[3].length === 2 && payload[3][1] === 0;
    const address = parseAddress(payload[3]);
    if (payload.length !== 5 || !isBase58(peerId) || theirs === null || codes === null || (address === null && !undialable)) {
      this._fail(new HandshakeFailed(`${this.url}: malformed handshake`));
      return;
    }
    if (theirs !== sock.protocol.id) {
      this._fail(new ProtocolMismatch(sock.protocol.id, theirs, this.url), true);
      return;
    }
    if (this.peer_id !== null) {
      // A second handshake: the peer restates itself (in our ID form, say).
      if (peerId !== this.peer_id) this.close("the peer changed its ID");
      return;
    }
    if (peerId === sock.id) {
      this._fail(new HandshakeFailed(`${this.url}: connected to itself`), true);
      return;
    }
    if (sock.routing_table.has(peerId)) {
      this._fail(new HandshakeFailed(`${this.url}: already connected to node ${peerId} by another link`), true);
      return;
    }
    clearTimeout(this._timer);
    this.peer_id = peerId;
    this.peer_addr = address;
    this.peer_codes = codes;
    this.peer_ids_as_bin = payload[1] instanceof Uint8Array;
    sock._linkReady(this);
    this._handshakeDone(peerId);
  }

  _renegotiated(payload) {
    if (payload.length === 2 && payload[0] === flags.compression) {
      const codes = parseCodes(payload[1]);
      if (codes === null) {
        this.close("malformed compression renegotiation");
        return;
      }
      const changed = codes.length !== this.peer_codes.length || codes.some((code, i) => code !== this.peer_codes[i]);
      this.peer_codes = codes;
      // This node compresses nothing: the intersection is always empty.
      if (changed) this._renegotiate([flags.compression, []]);
    } else if (payload.length === 1 && payload[0] === flags.resend) {
      if (this._lastSent !== null) this._write(this._lastSent);
    }
  }

  _renegotiate(payload) {
    // Each message is made asynchronously (its checksum): written in order,
    // so that a [resend] never overtakes the [compression, []] before it.
    const made = this._sock._make(flags.renegotiate, payload);
    this._renegotiations = this._renegotiations
      .then(() => made)
      .then((msg) => this._write(msg.frame()))
      .catch((error) => this._sock._report("a renegotiation", error));
  }

  _checksumFailed() {
    this._badFrames += 1;
    if (this._badFrames > MAX_BAD_FRAMES) {
      this.close(`${this._badFrames} frames in a row failed their checksum`);
      return;
    }
    this._sock._log("warn", `a frame from ${this.peer_id || this.url} failed its checksum: asking for it uncompressed`);
    this._renegotiate([flags.compression, []]);
    this._renegotiate([flags.resend]);
  }

  // -- writing and closing ---------------------------------------------------

  /**
   * The bytes written to the WebSocket that the network has not taken yet
   * (0 for a WebSocket class that does not tell).
   */
  get buffered() {
    return this._ws.bufferedAmount ?? 0;
  }

  /**
   * Write a frame of a whisper or broadcast (kept for a resend request),
   * `relayed` (another node's broadcast) or not: null when it was written,
   * else why not: the link is closing, or more than `maxSendBuffer` bytes
   * wait in its WebSocket (see MeshSocket._sendBufferFull).
   */
  send(frame, relayed = false) {
    if (!this._open) return CLOSING;
    if (this.buffered > this._sock.options.maxSendBuffer) return this._sock._sendBufferFull(this, relayed);
    this._write(frame);
    this._lastSent = frame;
    return null;
  }

  get _open() {
    return !this._closing && this._ws.readyState === OPEN;
  }

  /** Write a frame, unless the link is closing: return whether it was written. */
  _write(frame) {
    if (!this._open) return false;
    this.stats.frames_out += 1;
    this.stats.bytes_out += frame.length;
    this._sock.stats.frames_out += 1;
    this._sock.stats.bytes_out += frame.length;
    this._ws.send(frame);
    return true;
  }

  _fail(error, fatal = false) {
    if (this._closing) return;
    if (fatal) this.fatal = error;
    this._handshakeFailed(error);
    this.close(error.message);
  }

  /** Close the link, saying why. */
  close(reason) {
    if (this._closing) return;
    this._closing = true;
    this._closeReason = reason;
    this._sock._log("info", `closing the link to ${this.peer_id || this.url}: ${reason}`);
    try {
      this._ws.close(1000);
    } catch {
      // already closing
    }
  }
}

/**
 * Keeps one URL connected: dials it, and dials again after a growing,
 * jittered delay when the link is lost or cannot be made.
 */
class Dialer {
  constructor(sock, url) {
    this.url = url;
    /** "connecting", "connected", "waiting" (to dial again) or "stopped". */
    this.state = "connecting";
    this.attempt = 0;
    /** When the next dial is due (ms since the epoch), while waiting. */
    this.retryAt = null;
    /** Why the last link closed. */
    this.lastError = null;
    this.link = null;
    this._sock = sock;
    this._timer = null;
    this.first = new Promise((resolve, reject) => {
      this._resolveFirst = resolve;
      this._rejectFirst = reject;
    });
    // What connect() gave out while no link was being made: settled by the
    // next link's handshake.
    this._next = null;
    this._dial();
  }

  /**
   * A Promise of the peer's ID: at once when connected; else the outcome of
   * the handshake of the link being made, or (while waiting to dial again,
   * or while the link closes) of the next link dialled.
   */
  nextHandshake() {
    const link = this.link;
    if (link && !link._closing) return link.handshake;
    if (this._next === null) {
      let settle;
      const promise = new Promise((resolve, reject) => {
        settle = { resolve, reject };
      });
      this._next = { promise, ...settle };
    }
    return this._next.promise;
  }

  _dial() {
    this._timer = null;
    this.retryAt = null;
    this.state = "connecting";
    const link = (this.link = new Link(this._sock, this.url));
    link.handshake.then(
      (peerId) => {
        this.attempt = 0;
        this.state = "connected";
        this.lastError = null;
        this._resolveFirst(peerId);
      },
      (error) => this._rejectFirst(error),
    );
    if (this._next !== null) {
      link.handshake.then(this._next.resolve, this._next.reject);
      this._next = null;
    }
    link.closed.then((reason) => this._closed(link, reason));
  }

  /** Fail what connect() gave out for a next link, when none will be dialled. */
  _noNext(error) {
    if (this._next === null) return;
    this._next.reject(error);
    this._next = null;
  }

  _closed(link, reason) {
    if (this.link !== link) return;
    this.link = null;
    this.lastError = link.fatal ? link.fatal.message : reason;
    const sock = this._sock;
    if (this.state === "stopped") return;
    if (link.fatal || sock.closed || !sock.options.reconnect) {
      this.state = "stopped";
      this._noNext(link.fatal || new HandshakeFailed(`${this.url}: ${reason} (not dialled again)`));
      if (link.fatal) sock._events.emit("error", sock, link.fatal);
      sock._events.emit("status", sock);
      return;
    }
    const { minDelay, maxDelay, factor } = sock.options;
    const base = Math.min(maxDelay, minDelay * factor ** this.attempt);
    const delay = Math.round(base * (0.75 + Math.random() / 2));
    this.attempt += 1;
    this.state = "waiting";
    this.retryAt = Date.now() + delay;
    this._timer = setTimeout(() => this._dial(), delay);
    sock._log("info", `lost ${this.url} (${reason}): dialling again in ${(delay / 1000).toFixed(1)} s`);
    sock._events.emit("reconnecting", sock, { url: this.url, attempt: this.attempt, delay, reason });
    sock._events.emit("status", sock);
  }

  /** Dial now, when waiting to dial again. */
  retryNow() {
    if (this.state !== "waiting") return;
    clearTimeout(this._timer);
    this._dial();
  }

  stop() {
    this.state = "stopped";
    clearTimeout(this._timer);
    this._timer = null;
    if (this.link) this.link.close("the node is closing");
    const error = new HandshakeFailed(`${this.url}: the node closed`);
    this._rejectFirst(error);
    this._noNext(error);
  }
}

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

