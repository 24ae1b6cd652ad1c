// One WebSocket link to a server node: framing, the handshake (and on a
// signed network the proof of the keys), the peer's ID form, renegotiation,
// and writing within the send buffer.  The link tells
// its node (a MeshSocket) what happens: _linkReady, _inbox.received and
// _linkLost; its node's _outbox makes its messages and counts what a full
// send buffer refuses.

import { deferred } from "./deferred.js";
import { HandshakeFailed, ProtocolMismatch } from "./errors.js";
import { flags } from "./flags.js";
import { ChecksumError, FrameError, FrameReader, WireMessage, idText, wireId } from "./frames.js";
import { isBase58 } from "./ids.js";
import { KEY_SIZE, PROOF, SIGNATURE_SIZE, proofData } from "./signing.js";

/** Milliseconds a peer has to send its handshake. */
export const HANDSHAKE_TIMEOUT = 30000;

/** Frames in a row that may fail their checksum before the link is closed. */
const MAX_BAD_FRAMES = 3;

/** Why a link that is closing took no message. */
export const CLOSING = "the link is closing";

const OPEN = 1; // WebSocket.OPEN

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

const isBytes = (value, size) => value instanceof Uint8Array && value.length === size;

/**
 * The fields of a handshake's payload, `[handshake, id, protocol_id,
 * address, compression]` and on a signed network `public_key, nonce` after
 * them, its IDs in either form: `{peerId, protocolId, address, codes,
 * idsAsBin, publicKey, nonce}`, `address` null for a node that cannot be
 * dialled (port 0), `publicKey` and `nonce` null in a handshake of 5 items;
 * null when the handshake is malformed.
 */
function readHandshake(payload) {
  const peerId = idText(payload[1]);
  const protocolId = idText(payload[2]);
  const codes = parseCodes(payload[4]);
  const undialable = Array.isArray(payload[3]) && payload[3].length === 2 && payload[3][1] === 0;
  const address = parseAddress(payload[3]);
  const signed = payload.length === 7;
  if (
    (payload.length !== 5 && !signed) ||
    (signed && !(isBytes(payload[5], KEY_SIZE) && isBytes(payload[6], KEY_SIZE))) ||
    !isBase58(peerId) ||
    protocolId === null ||
    codes === null ||
    (address === null && !undialable)
  ) {
    return null;
  }
  const [publicKey, nonce] = signed ? payload.slice(5) : [null, null];
  return { peerId, protocolId, address, codes, idsAsBin: payload[1] instanceof Uint8Array, publicKey, nonce };
}

/**
 * A link's side of renegotiation.  This node compresses nothing: it answers
 * a peer's list of compressions with the empty list, and asks for a frame
 * that failed its checksum (a compressed one, say) again, raw; after
 * MAX_BAD_FRAMES such frames in a row it closes the link.  A [resend] gets
 * the last whisper or broadcast written again.
 */
class Renegotiation {
  constructor(link) {
    this._link = link;
    this._badFrames = 0;
    // Renegotiations go out in the order they were made (see send).
    this._sent = Promise.resolve();
  }

  /** A frame passed its checksum: those that failed are no longer in a row. */
  frameRead() {
    this._badFrames = 0;
  }

  /** Answer the peer's renegotiation, `payload` (a Promise, for a proof). */
  received(payload) {
    const link = this._link;
    if (payload[0] === PROOF && link._sock.protocol.signed) {
      return link._proof(payload);
    }
    if (payload.length === 2 && payload[0] === flags.compression) {
      const codes = parseCodes(payload[1]);
      if (codes === null) {
        link.close("malformed compression renegotiation");
        return;
      }
      const changed = codes.length !== link.peer_codes.length || codes.some((code, i) => code !== link.peer_codes[i]);
      link.peer_codes = codes;
      // This node compresses nothing: the intersection is always empty.
      if (changed) this.send([flags.compression, []]);
    } else if (payload.length === 1 && payload[0] === flags.resend) {
      link._resend();
    }
    return undefined;
  }

  /** A frame failed its checksum: ask for it raw, or give up on the link. */
  checksumFailed() {
    const link = this._link;
    this._badFrames += 1;
    if (this._badFrames > MAX_BAD_FRAMES) {
      link.close(`${this._badFrames} frames in a row failed their checksum`);
      return;
    }
    link._sock._log("warn", `a frame from ${link.peer_id || link.url} failed its checksum: asking for it uncompressed`);
    this.send([flags.compression, []]);
    this.send([flags.resend]);
  }

  /**
   * Send a renegotiation of `payload` (or of the Promise of one): a Promise
   * that it is written.
   */
  send(payload) {
    // Each message is made asynchronously (its checksum): written in order,
    // so that a [resend] never overtakes the [compression, []] before it.
    const link = this._link;
    const made = Promise.resolve(payload).then((fields) => link._sock._outbox.makeUnsigned(flags.renegotiate, fields));
    this._sent = this._sent
      .then(() => made)
      .then((msg) => link._write(msg.frame()))
      .catch((error) => link._sock._report("a renegotiation", error));
    return this._sent;
  }
}

/**
 * One WebSocket link to a server node: framing, handshake, writing.
 * Made by a Dialer; its `handshake` Promise fires with the peer's
 * ID once the peer's handshake is accepted.
 */
export class Link {
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
    /** Frames and bytes read and written on this link. */
    this.stats = { frames_in: 0, frames_out: 0, bytes_in: 0, bytes_out: 0 };
    this._sock = sock;
    this._reader = new FrameReader(sock.options.maxFrameSize);
    this._reading = Promise.resolve();
    this._closing = false;
    this._lastSent = null;
    this._renegotiation = new Renegotiation(this);
    // A signed network's: this node's nonce, the peer's handshake until its
    // proof holds, and the Promise that this node's proof is written.
    this._nonce = null;
    this._pending = null;
    this._proofSent = null;
    /** Why the URL is not to be dialled again, once the link failed so. */
    this.fatal = null;
    this._handshakeResult = deferred();
    /** The peer's ID once its handshake is accepted; fails when the link closes first. */
    this.handshake = this._handshakeResult.promise;
    this.handshake.catch(() => {});
    this._closedResult = deferred();
    /** Why the link closed, once it has. */
    this.closed = this._closedResult.promise;
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
    this._handshakeResult.reject(this.fatal);
    this._closedResult.resolve(this.fatal.message);
  }

  // -- the WebSocket's events ------------------------------------------------

  _opened() {
    const sock = this._sock;
    this._sock._log("debug", `WebSocket to ${this.url} open: sending the handshake`);
    // Str IDs (js2p's form), or bin on a signed network (which js2p never
    // joins: the form its messages are signed in); ["", 0]: this node
    // cannot be dialled.  A signed network's handshake adds the key and a
    // nonce for the peer's proof to sign.
    const signed = sock.protocol.signed;
    const fields = [flags.handshake, wireId(sock.id, signed), wireId(sock.protocol.id, signed), ["", 0], []];
    if (signed) {
      this._nonce = globalThis.crypto.getRandomValues(new Uint8Array(KEY_SIZE));
      fields.push(sock._key.publicKey, this._nonce);
    }
    sock._outbox
      .makeUnsigned(flags.whisper, fields)
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
      this._reading = this._reading.then(() => this._body(body)).catch((error) => sock._report("a frame", error));
    }
  }

  _lost(event) {
    this._closing = true;
    clearTimeout(this._timer);
    const reason = this._closeReason || `WebSocket closed (code ${event.code}${event.reason ? ": " + event.reason : ""})`;
    this._handshakeResult.reject(new HandshakeFailed(`${this.url}: ${reason}`));
    this._sock._linkLost(this, reason);
    this._closedResult.resolve(reason);
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
        this._renegotiation.checksumFailed();
      } else if (error instanceof FrameError) {
        sock._drop("malformed");
        this.close(`bad frame: ${error.message}`);
      } else {
        throw error;
      }
      return;
    }
    this._renegotiation.frameRead();
    const payload = msg.payload;
    if (msg.msgType === flags.renegotiate) {
      await this._renegotiation.received(payload);
    } else if (msg.msgType === flags.whisper && payload[0] === flags.handshake) {
      this._handshake(payload);
    } else if (this.peer_id === null) {
      const before = this._pending === null ? "the handshake" : "the proof of the peer's key";
      this._fail(new HandshakeFailed(`${this.url}: a message came before ${before}`));
    } else {
      await sock._inbox.received(this, msg);
    }
  }

  _handshake(payload) {
    const sock = this._sock;
    const shake = readHandshake(payload);
    if (shake === null) {
      this._fail(new HandshakeFailed(`${this.url}: malformed handshake`));
      return;
    }
    const peerId = shake.peerId;
    if (shake.protocolId !== sock.protocol.id) {
      this._fail(new ProtocolMismatch(sock.protocol.id, shake.protocolId, this.url), true);
      return;
    }
    const signed = sock.protocol.signed;
    if (signed !== (shake.publicKey !== null)) {
      this._fail(new HandshakeFailed(`${this.url}: a handshake of ${payload.length} items on ${signed ? "a" : "an un"}signed network`));
      return;
    }
    const known = this.peer_id !== null ? this.peer_id : this._pending && this._pending.peerId;
    if (known) {
      // A second handshake: the peer restates itself (in our ID form, say).
      if (peerId !== known) this.close("the peer changed its ID");
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
    if (!signed) {
      this._identified(shake);
      return;
    }
    if (sock._verifier.idOf(shake.publicKey) !== peerId) {
      this._fail(new HandshakeFailed(`${this.url}: the peer's node ID is not that of the key in its handshake`));
      return;
    }
    // Identified once its proof holds; this node proves its own key meanwhile.
    this._pending = shake;
    const signature = sock._key.sign(
      proofData({
        protocolId: sock.protocol.id,
        signerDialled: false, // this browser dialled
        signerId: sock.id,
        checkerId: peerId,
        signerAddress: null, // its handshake's ["", 0]: it cannot be dialled
        signerNonce: this._nonce,
        checkerNonce: shake.nonce,
      }),
    );
    this._proofSent = this._renegotiation.send(signature.then((proof) => [PROOF, proof]));
  }

  /** The peer's proof, `[PROOF, signature]`, of the key of its handshake: a Promise. */
  async _proof(payload) {
    if (this.peer_id !== null) return; // proven already
    const shake = this._pending;
    if (shake === null) {
      this._fail(new HandshakeFailed(`${this.url}: a proof came before the handshake`));
      return;
    }
    const sock = this._sock;
    const signature = payload[1];
    const proven =
      payload.length === 2 &&
      isBytes(signature, SIGNATURE_SIZE) &&
      (await sock._verifier.verify(
        shake.publicKey,
        signature,
        proofData({
          protocolId: sock.protocol.id,
          signerDialled: true,
          signerId: shake.peerId,
          checkerId: sock.id,
          signerAddress: shake.address,
          signerNonce: shake.nonce,
          checkerNonce: this._nonce,
        }),
      ));
    if (!proven) {
      this._fail(new HandshakeFailed(`${this.url}: the peer's proof of its key does not hold`));
      return;
    }
    // The peer takes no message of this node before this node's proof.
    await this._proofSent;
    if (!this._closing) this._identified(shake);
  }

  /** The peer's handshake (and on a signed network its proof) is accepted. */
  _identified(shake) {
    clearTimeout(this._timer);
    this.peer_id = shake.peerId;
    this.peer_addr = shake.address;
    this.peer_codes = shake.codes;
    this.peer_ids_as_bin = shake.idsAsBin;
    this._sock._linkReady(this);
    this._handshakeResult.resolve(shake.peerId);
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
   * wait in its WebSocket (see Outbox.refused).
   */
  send(frame, relayed = false) {
    if (!this._open) return CLOSING;
    if (this.buffered > this._sock.options.maxSendBuffer) return this._sock._outbox.refused(this, relayed);
    this._write(frame);
    this._lastSent = frame;
    return null;
  }

  get _open() {
    return !this._closing && this._ws.readyState === OPEN;
  }

  /** Write the last whisper or broadcast again: the peer asked for it (a [resend]). */
  _resend() {
    if (this._lastSent !== null) this._write(this._lastSent);
  }

  /** Write a frame, unless the link is closing. */
  _write(frame) {
    if (!this._open) return;
    this.stats.frames_out += 1;
    this.stats.bytes_out += frame.length;
    this._sock.stats.frames_out += 1;
    this._sock.stats.bytes_out += frame.length;
    this._ws.send(frame);
  }

  _fail(error, fatal = false) {
    if (this._closing) return;
    if (fatal) this.fatal = error;
    this._handshakeResult.reject(error);
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
