// Dialling: one URL kept connected, dialled again after a growing delay.

import { deferred } from "./deferred.js";
import { HandshakeFailed } from "./errors.js";
import { Link } from "./link.js";

/**
 * Keeps one URL connected: dials it, and dials again after a growing,
 * jittered delay when the link is lost or cannot be made.
 */
export class Dialer {
  constructor(sock, url) {
    this.url = url;
    /** "connecting", "connected", "waiting" (to dial again) or "stopped". */
    this.state = "connecting";
    /** The dials that failed or were lost since the last handshake. */
    this.attempt = 0;
    /** When the next dial is due (ms since the epoch), while waiting. */
    this.retryAt = null;
    /** Why the last link closed. */
    this.lastError = null;
    /** The link being made, or made; null while there is none. */
    this.link = null;
    this._sock = sock;
    this._timer = null;
    this._first = deferred();
    /** The outcome of the first handshake: what connect() gave out. */
    this.first = this._first.promise;
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
    if (this._next === null) this._next = deferred();
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
        this._first.resolve(peerId);
      },
      this._first.reject,
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

  /** Stop dialling, close the link, and fail what connect() gave out. */
  stop() {
    this.state = "stopped";
    clearTimeout(this._timer);
    this._timer = null;
    if (this.link) this.link.close("the node is closing");
    const error = new HandshakeFailed(`${this.url}: the node closed`);
    this._first.reject(error);
    this._noNext(error);
  }
}
