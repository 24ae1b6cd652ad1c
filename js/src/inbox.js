// What the node receives: broadcasts out of their lifetime or seen before
// are dropped, and on a signed network messages whose signature does not
// hold; new broadcasts are relayed to the other links; requests are
// answered; the rest goes to the handlers, then to the user's queue.

import { NotConnected } from "./errors.js";
import { flags } from "./flags.js";
import { idText } from "./frames.js";
import { Message } from "./message.js";
import { MESSAGE_LIFETIME } from "./seen.js";
import { UNVERIFIED } from "./signing.js";

/** Milliseconds between two log lines about messages whose signature did not hold. */
const SIGNATURE_LOG_INTERVAL = 10000;

/** The messages that a MeshSocket's links read after their handshake. */
export class Inbox {
  constructor(sock) {
    this._sock = sock;
    this._handlers = [];
    this._signatureLogged = -Infinity;
    this._unverified = 0;
  }

  /** MeshSocket.register_handler(), which says what a handler does. */
  addHandler(handler) {
    if (typeof handler !== "function") throw new TypeError("the handler must be a function");
    this._handlers.push(handler);
  }

  /** Handle `msg`, a message that `link` read. */
  async received(link, msg) {
    const sock = this._sock;
    if (msg.msgType === flags.broadcast) {
      const now = sock._now();
      // As twisted_mesh drops them: stamped more than MESSAGE_LIFETIME
      // before now, or after (a clock far ahead), which the seen-set would
      // otherwise hold, and hold back the forgetting of the others, as long.
      if (msg.time < now - MESSAGE_LIFETIME || msg.time > now + MESSAGE_LIFETIME) {
        sock._drop("expired");
        return;
      }
      const id = await msg.id();
      // A repeat is dropped unverified, and a broadcast is recorded once its
      // signature holds (forged copies take no room), as twisted_mesh does.
      if (sock._seen.has(id, now)) {
        sock._drop("duplicate");
        return;
      }
      if (!(await this._verified(link, msg))) return;
      // (Another copy may have been recorded while this one was checked.)
      if (!sock._seen.add(id, msg.time, sock._now())) {
        sock._drop("duplicate");
        return;
      }
      const origin = sock.routing_table.get(msg.sender);
      // Relay between this node's links (as the frame arrived).
      let frame = null;
      for (const peer of sock.routing_table.values()) {
        if (peer !== link && peer !== origin) {
          frame = frame || msg.frame();
          if (peer.send(frame, true) === null) sock.stats.relayed += 1;
        }
      }
      this._handle(link, msg, id);
    } else if (await this._verified(link, msg)) {
      this._handle(link, msg, await msg.id());
    }
  }

  /**
   * Whether `msg` may be handled: on a signed network, whether its
   * signature holds (then its key and signature are taken off its
   * payload).  One that does not hold is dropped, counted in
   * `stats.dropped` by why (`unsigned`, `wrong_key`, `bad_signature`), and
   * logged (a warning, at most every SIGNATURE_LOG_INTERVAL ms): it is
   * never delivered or relayed.
   */
  async _verified(link, msg) {
    const sock = this._sock;
    if (!sock.protocol.signed) return true;
    const reason = await sock._verifier.check(msg);
    if (reason === null) return true;
    sock._drop(reason);
    this._unverified += 1;
    const now = Date.now();
    if (now - this._signatureLogged >= SIGNATURE_LOG_INTERVAL) {
      this._signatureLogged = now;
      sock._log(
        "warn",
        `dropped a message of ${msg.sender} from ${link.peer_id}: ${UNVERIFIED[reason]} ` +
          `(${this._unverified} dropped so far whose signature did not hold)`,
      );
    }
    return false;
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
    const sock = this._sock;
    const payload = msg.payload;
    if (payload.length === 2 && idText(payload[1]) === "*") {
      sock._outbox.answer(link, [flags.peers, sock._peerEntries(link)]);
      return;
    }
    if (payload.length !== 3 || msg.msgType !== flags.broadcast) return;
    const target = idText(payload[2]);
    const peer = target !== null ? sock.routing_table.get(target) : undefined;
    if (peer && peer.peer_addr !== null) {
      // NotConnected: the links closed meanwhile, and the request with them.
      sock._outbox
        .broadcast([flags.response, payload[1], [[...peer.peer_addr], payload[2]]])
        .catch((error) => error instanceof NotConnected || sock._report("a response", error));
    }
  }

  _deliver(link, wire, id) {
    const sock = this._sock;
    const message = new Message(wire, id, sock, link);
    for (const handler of this._handlers) {
      try {
        if (handler(message, link)) return;
      } catch (error) {
        sock._report("a handler", error);
      }
    }
    if (message.packets[0] !== flags.broadcast && message.packets[0] !== flags.whisper) return;
    sock.stats.delivered += 1;
    sock.queue.push(message);
    sock._events.emit("message", sock);
  }
}
