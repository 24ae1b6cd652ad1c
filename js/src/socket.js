// The browser mesh node: MeshSocket, its API, its routing table and the URLs
// it dials.  What it receives is handled by its Inbox, what it sends by its
// Outbox.
//
// A browser cannot accept connections: it dials server nodes over
// WebSocket (`ws://host:port/`, each binary message carrying frames) and
// tells them it cannot be dialled (`["", 0]` in its handshake).  It writes
// IDs as msgpack str, as js2p does, and reads either form.  It lists no
// compression, so its peers send raw frames.  It relays broadcasts between
// its links when it has several.  On a signed network its ID is its key's,
// it proves its key in each handshake, signs what it sends and drops what
// it receives unless its signature holds.

import { Dialer } from "./dialer.js";
import { Events } from "./events.js";
import { flags } from "./flags.js";
import { MAX_FRAME_SIZE } from "./frames.js";
import { newNodeId, Protocol } from "./ids.js";
import { Inbox } from "./inbox.js";
import { KEY_STORE, NodeKey, loadNodeKey, requireWebCrypto } from "./keys.js";
import { MAX_SEND_BUFFER, Outbox } from "./outbox.js";
import { SeenSet } from "./seen.js";
import { Verifier } from "./signing.js";

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
 *
 * On a signed network (`new Protocol(subnet, encryption, {signed: true})`)
 * the node's ID is that of its Ed25519 key: `key` (a NodeKey) gives it;
 * else the page keeps one in IndexedDB, the database `keyStore` (default
 * "twisted_mesh-keys"; null: a fresh key, not kept), so that the page keeps
 * its ID across reloads (a page open at once in another tab takes another
 * key of the store).  The key loads asynchronously: `sock.id` is null until
 * `sock.ready` (a Promise of the ID) resolves; connect() waits for it.  A
 * signed network needs WebCrypto with Ed25519: without WebCrypto (not a
 * secure context) the constructor throws SignedUnsupported; without
 * Ed25519 `ready`, and connect(), fail with it.  Such a browser joins
 * unsigned ws networks only.
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
    /** This node's ID, in base58 (null on a signed network until `ready`). */
    this.id = null;
    this._key = null;
    this._verifier = null;
    this._releaseKey = () => {};
    /** A Promise of this node's ID, once it has its key on a signed network. */
    this.ready = this._identity();
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
    this._seen = new SeenSet();
    this._dialers = new Map();
    this._inbox = new Inbox(this);
    this._outbox = new Outbox(this);
  }

  // -- identity ----------------------------------------------------------------

  /** Set this node's ID (and on a signed network its key): `ready`. */
  _identity() {
    const { id, key, keyStore } = this.options;
    if (!this.protocol.signed) {
      this.id = id || newNodeId();
      return Promise.resolve(this.id);
    }
    if (id) throw new TypeError("on a signed network a node's ID is its key's: pass a key, not an id");
    if (key !== undefined && !(key instanceof NodeKey)) throw new TypeError("the key option must be a twisted_mesh.NodeKey");
    requireWebCrypto();
    if (key !== undefined) {
      this._keyed(key);
      return Promise.resolve(this.id);
    }
    const ready = (keyStore === null ? NodeKey.generate().then((fresh) => ({ key: fresh })) : loadNodeKey(keyStore || KEY_STORE)).then(
      ({ key: loaded, release, error }) => {
        if (error) this._log("warn", `could not keep this node's key in the page's storage (${error.message}): its ID lasts this page load only`);
        if (release) {
          if (this.closed) release();
          else this._releaseKey = release;
        }
        this._keyed(loaded);
        return this.id;
      },
    );
    ready.catch((error) => this._log("warn", error.message));
    return ready;
  }

  _keyed(key) {
    this._key = key;
    this.id = key.id;
    this._verifier = new Verifier(this.protocol.subnet);
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
    if (this.id === null) return this.ready.then(() => this.connect(url));
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
    this._releaseKey();
    for (const dialer of this._dialers.values()) dialer.stop();
    this._events.emit("status", this);
  }

  _linkReady(link) {
    const wasEmpty = this.routing_table.size === 0;
    this.routing_table.set(link.peer_id, link);
    this._log("info", `peer ${link.peer_id} joined from ${link.url}`);
    // Answer with peers, as every node does on a handshake.
    this._outbox.answer(link, [flags.peers, this._peerEntries(link)]);
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
    this._inbox.addHandler(handler);
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
    return this._outbox.send(packets, flag, type);
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
    return this._outbox.drained();
  }

  // The UTC second: what this node stamps its messages with, and judges
  // the age of a broadcast by.
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
    return `MeshSocket(${this.id ? this.id.slice(0, 10) + "…" : "?"}, ${this.routing_table.size} peers)`;
  }
}

