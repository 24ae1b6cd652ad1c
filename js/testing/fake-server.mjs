// A fake server node for the tests in js/test/: a MeshSocket dials it through
// a fake WebSocket, whose frames the test reads (`sent`) and writes (`push`),
// and which the test opens, fills and closes at will.

import assert from "node:assert/strict";

import { codec, flags, tm } from "./bundle.mjs";

/**
 * A WebSocket that opens on the next turn of the event loop and talks to
 * the test: `FakeWebSocket.last` is the latest made.
 */
export class FakeWebSocket {
  static last = null;
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    // What a browser has not handed to the network yet: set by the tests.
    this.bufferedAmount = 0;
    FakeWebSocket.last = this;
    setTimeout(() => {
      this.readyState = 1;
      this.onopen();
    }, 0);
  }
  send(frame) {
    this.sent.push(new Uint8Array(frame));
  }
  close(code) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    setTimeout(() => this.onclose({ code: code ?? 1006, reason: "" }), 0);
  }
  /** Deliver frames from the server, in one binary message. */
  push(...frames) {
    const size = frames.reduce((n, f) => n + f.length, 0);
    const data = new Uint8Array(size);
    let at = 0;
    for (const f of frames) {
      data.set(f, at);
      at += f.length;
    }
    this.onmessage({ data: data.buffer });
  }
  /** The messages the node wrote to this WebSocket, decoded. */
  async received() {
    const out = [];
    for (const frame of this.sent) out.push(await codec.WireMessage.fromBody(frame.slice(4)));
    return out;
  }
}

/** A FakeWebSocket whose frames wait in bufferedAmount until the test's network takes them. */
export class BufferingWebSocket extends FakeWebSocket {
  send(frame) {
    super.send(frame);
    this.bufferedAmount += frame.length;
  }
}

// WebCrypto computes checksums and signatures on a thread pool, which a
// loaded machine may leave waiting longer than any fixed time: settle()
// counts them.
let hashing = 0;
let hashed = 0;
const subtle = globalThis.crypto.subtle;
for (const name of ["digest", "sign", "verify", "importKey", "exportKey", "generateKey"]) {
  const operation = subtle[name].bind(subtle);
  subtle[name] = (...args) => {
    hashing += 1;
    return operation(...args).finally(() => {
      hashing -= 1;
      hashed += 1;
    });
  };
}

/**
 * Wait until the node and the fake WebSockets are done with what they were
 * given (opening, reading, writing, closing): 20 ms in which no checksum
 * was being computed.
 */
export async function settle() {
  // (At most 2 s: a node that never stops hashing is for the test to find.)
  for (let wait = 0; wait < 2000; wait += 20) {
    const before = hashed;
    await new Promise((resolve) => setTimeout(resolve, 20));
    if (hashing === 0 && hashed === before) return;
  }
}

/** The arguments of the next `event` of `sock`. */
export const nextEvent = (sock, event) => new Promise((resolve) => sock.once(event, (...args) => resolve(args)));

/** The UTC second, as nodes stamp messages. */
export const now = () => Math.floor(Date.now() / 1000);

/** How many timers are running in this process. */
export const activeTimers = () => process.getActiveResourcesInfo().filter((kind) => kind === "Timeout").length;

/** Whether `promise` has settled by now (after the callbacks due before a timer). */
export async function settled(promise) {
  let done = false;
  promise.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((resolve) => setTimeout(resolve, 0));
  return done;
}

/** The frame of the handshake of the server node `server`, of the network `protocol`. */
export async function serverShake(server, protocol) {
  return (await codec.WireMessage.create(flags.whisper, server, now(), [flags.handshake, server, protocol.id, ["h", 9], []])).frame();
}

/** A MeshSocket linked to a fake server node: the socket, the fake WebSocket, the server's ID. */
export async function linked(options = {}, url = "ws://127.0.0.1:9/") {
  const protocol = new tm.Protocol("mesh", "ws");
  const sock = new tm.MeshSocket(protocol, { WebSocket: FakeWebSocket, reconnect: false, log: () => {}, ...options });
  return { sock, protocol, ...(await join(sock, url)) };
}

/** Link `sock` to another fake server node at `url`: its fake WebSocket and ID. */
export async function join(sock, url) {
  const server = tm.newNodeId();
  const connected = sock.connect(url);
  await settle();
  const ws = FakeWebSocket.last;
  ws.push(await serverShake(server, sock.protocol));
  assert.equal(await connected, server);
  await settle();
  ws.sent.length = 0;
  return { ws, server };
}
