// Dialling: a MeshSocket's URLs, dialled again after a loss, and the
// outcome connect() gives for each.

import assert from "node:assert/strict";
import { test } from "node:test";

import { codec, flags, tm } from "../testing/bundle.mjs";
import { FakeWebSocket, activeTimers, nextEvent, now, serverShake, settle } from "../testing/fake-server.mjs";

test("a MeshSocket refuses a node of another network, and dials again after a loss", async (t) => {
  const protocol = new tm.Protocol("mesh", "ws");
  const sock = new tm.MeshSocket(protocol, { WebSocket: FakeWebSocket, minDelay: 10, maxDelay: 40 });
  t.after(() => sock.close()); // even when the test fails: else it dials for ever
  const errors = [];
  sock.on("error", (s, error) => errors.push(error));
  const failing = sock.connect("ws://127.0.0.1:2/");
  await settle();
  const server = tm.newNodeId();
  const other = new tm.Protocol("chat", "ws");
  FakeWebSocket.last.push(
    (await codec.WireMessage.create(flags.whisper, server, now(), [flags.handshake, server, other.id, ["h", 1], []])).frame(),
  );
  await assert.rejects(failing, tm.ProtocolMismatch);
  await settle();
  assert.equal(errors.length, 1);
  assert.equal(sock.links()[0].state, "stopped");

  const reconnecting = [];
  sock.on("reconnecting", (s, info) => reconnecting.push(info));
  const first = sock.connect("ws://127.0.0.1:3/");
  await settle();
  const shake = async () =>
    (await codec.WireMessage.create(flags.whisper, server, now(), [flags.handshake, server, protocol.id, ["h", 3], []])).frame();
  FakeWebSocket.last.push(await shake());
  assert.equal(await first, server);
  FakeWebSocket.last.close(1006);
  await settle();
  assert.equal(reconnecting.length, 1);
  await new Promise((resolve) => setTimeout(resolve, 80));
  FakeWebSocket.last.push(await shake());
  await settle();
  assert.equal(sock.links().find((l) => l.url === "ws://127.0.0.1:3/").state, "connected");
  assert.equal(sock.routing_table.size, 1);
  sock.close();
  await assert.rejects(sock.connect("ws://127.0.0.1:3/"));
  await assert.rejects(new tm.MeshSocket(protocol).connect("http://x/"), TypeError);
});

test("connect() during a redial gives the next handshake, not the first attempt's", async (t) => {
  const protocol = new tm.Protocol("mesh", "ws");
  const sock = new tm.MeshSocket(protocol, { WebSocket: FakeWebSocket, minDelay: 30, maxDelay: 30, log: () => {} });
  t.after(() => sock.close());
  const url = "ws://127.0.0.1:11/";
  const first = sock.connect(url);
  await settle();
  FakeWebSocket.last.close(1006); // the first attempt fails
  await assert.rejects(first, tm.HandshakeFailed);
  assert.equal(sock.links()[0].state, "waiting");
  const second = sock.connect(url);
  assert.equal(sock.connect(url), second, "one promise for the next attempt");
  await new Promise((resolve) => setTimeout(resolve, 60));
  const server = tm.newNodeId();
  FakeWebSocket.last.push(await serverShake(server, protocol));
  assert.equal(await second, server);
  assert.equal(await sock.connect(url), server, "connected: at once");

  // Connected, then lost: the next peer (another node at that URL), not the old one.
  const lost = nextEvent(sock, "reconnecting");
  FakeWebSocket.last.close(1006);
  await lost;
  assert.equal(sock.links()[0].state, "waiting");
  const third = sock.connect(url);
  await new Promise((resolve) => setTimeout(resolve, 60));
  const next = tm.newNodeId();
  FakeWebSocket.last.push(await serverShake(next, protocol));
  assert.equal(await third, next);

  // Waiting when the node closes: the promise fails.
  const lostAgain = nextEvent(sock, "reconnecting");
  FakeWebSocket.last.close(1006);
  await lostAgain;
  assert.equal(sock.links()[0].state, "waiting");
  const fourth = sock.connect(url);
  sock.close();
  await assert.rejects(fourth, tm.HandshakeFailed);
});

test("connect() fails, not throws, when the WebSocket refuses the URL", async () => {
  class Refusing extends FakeWebSocket {
    constructor(url) {
      if (url.includes("#")) throw new SyntaxError("The URL contains a fragment identifier");
      super(url);
    }
  }
  const sock = new tm.MeshSocket(new tm.Protocol("mesh", "ws"), { WebSocket: Refusing, minDelay: 10, log: () => {} });
  const errors = [];
  sock.on("error", (s, error) => errors.push(error));
  const before = activeTimers();
  const refused = sock.connect("ws://127.0.0.1:13/#x");
  // (Timers of earlier tests may end meanwhile: none may start.)
  assert.ok(activeTimers() <= before, "no handshake timer left running");
  await assert.rejects(refused, (error) => error instanceof tm.HandshakeFailed && /fragment/.test(error.message));
  await settle();
  assert.deepEqual(sock.links().map((l) => [l.url, l.state]), [["ws://127.0.0.1:13/#x", "stopped"]]);
  assert.equal(errors.length, 1, "not dialled again: reported");
  assert.ok(activeTimers() <= before, "no redial timer");
  sock.close();
});
