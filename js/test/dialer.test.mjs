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

test("connect() fails, not throws, when the WebSocket refuses the URL", async (t) => {
  class Refusing extends FakeWebSocket {
    constructor(url) {
      if (url.includes("#")) throw new SyntaxError("The URL contains a fragment identifier");
      super(url);
    }
  }
  const sock = new tm.MeshSocket(new tm.Protocol("mesh", "ws"), { WebSocket: Refusing, minDelay: 10, log: () => {} });
  t.after(() => sock.close());
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

// -- dialling again, on a mock clock ------------------------------------------------------

/** A FakeWebSocket class that keeps each one made (one a dial) in `made`. */
function countingWebSocket(refuse = () => false) {
  const made = [];
  class Counting extends FakeWebSocket {
    constructor(url) {
      made.push(url);
      if (refuse(url)) throw new SyntaxError("The URL contains a fragment identifier");
      super(url);
    }
  }
  return { WebSocket: Counting, made };
}

/**
 * A MeshSocket on a mock clock (setTimeout and Date) dialling `url`, with
 * no jitter in its delays unless `random` says (by default Math.random()
 * is 0.5: each delay is its base); its WebSocket throws for the URLs
 * `refuse(url)` is true for.
 */
function onMockClock(t, { refuse, random = () => 0.5, ...options }, url) {
  t.mock.method(Math, "random", random);
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1700000000000 });
  const protocol = new tm.Protocol("mesh", "ws");
  const { WebSocket, made } = countingWebSocket(refuse);
  const sock = new tm.MeshSocket(protocol, { WebSocket, log: () => {}, ...options });
  const reconnecting = [];
  sock.on("reconnecting", (s, info) => reconnecting.push([info.attempt, info.delay]));
  const first = sock.connect(url);
  first.catch(() => {}); // each test says what it expects of it
  t.mock.timers.tick(0); // the WebSocket opens
  /** The server node at `url` goes away: the link is lost, then handled. */
  const lose = async () => {
    FakeWebSocket.last.close(1006);
    t.mock.timers.tick(0);
    await new Promise((resolve) => setImmediate(resolve));
  };
  return { sock, protocol, made, reconnecting, first, lose };
}

test("a lost link is dialled again after a delay growing by factor up to maxDelay", async (t) => {
  const url = "ws://127.0.0.1:21/";
  const { sock, protocol, made, reconnecting, lose } = onMockClock(t, { minDelay: 100, maxDelay: 1000, factor: 3 }, url);
  for (const delay of [100, 300, 900, 1000, 1000]) {
    await lose();
    const [link] = sock.links();
    assert.equal(link.state, "waiting");
    assert.equal(link.retryAt, Date.now() + delay);
    const dials = made.length;
    t.mock.timers.tick(delay - 1);
    assert.equal(made.length, dials, `not dialled before ${delay} ms`);
    t.mock.timers.tick(1);
    assert.equal(made.length, dials + 1, `dialled again after ${delay} ms`);
    assert.equal(sock.links()[0].state, "connecting");
    t.mock.timers.tick(0);
  }
  assert.deepEqual(reconnecting, [
    [1, 100],
    [2, 300],
    [3, 900],
    [4, 1000],
    [5, 1000],
  ]);
  // A handshake, and the next loss waits minDelay again.
  const server = tm.newNodeId();
  FakeWebSocket.last.push(await serverShake(server, protocol));
  assert.equal(await sock.connect(url), server);
  assert.deepEqual([sock.links()[0].state, sock.links()[0].attempt], ["connected", 0]);
  await lose();
  assert.deepEqual(reconnecting.at(-1), [1, 100]);
  sock.close();
});

test("each delay is spread by up to a quarter either way, so that nodes lost together dial apart", async (t) => {
  const url = "ws://127.0.0.1:26/";
  const randoms = [0, 0.999999];
  const { sock, reconnecting, lose } = onMockClock(t, { minDelay: 1000, maxDelay: 1000, random: () => randoms.shift() }, url);
  await lose();
  t.mock.timers.tick(750);
  t.mock.timers.tick(0);
  await lose();
  assert.deepEqual(reconnecting, [
    [1, 750],
    [2, 1250],
  ]);
  sock.close();
});

test("retryNow() dials a waiting URL at once, in place of its timer", async (t) => {
  const url = "ws://127.0.0.1:22/";
  const { sock, protocol, made, lose } = onMockClock(t, { minDelay: 10000, maxDelay: 10000 }, url);
  await lose();
  assert.equal(sock.links()[0].state, "waiting");
  sock.retryNow();
  assert.equal(made.length, 2, "dialled at once");
  assert.deepEqual([sock.links()[0].state, sock.links()[0].retryAt], ["connecting", null]);
  t.mock.timers.tick(0);
  t.mock.timers.tick(20000);
  assert.equal(made.length, 2, "the timer does not dial it again");
  // Connected, there is nothing to dial.
  const server = tm.newNodeId();
  FakeWebSocket.last.push(await serverShake(server, protocol));
  assert.equal(await sock.connect(url), server);
  sock.retryNow();
  assert.equal(made.length, 2);
  sock.close();
});

test("close() stops dialling: no dial after it, however long one waits", async (t) => {
  const url = "ws://127.0.0.1:23/";
  const { sock, made, reconnecting, first, lose } = onMockClock(t, { minDelay: 100, maxDelay: 100 }, url);
  await lose();
  await assert.rejects(first, tm.HandshakeFailed);
  assert.equal(sock.links()[0].state, "waiting");
  sock.close();
  assert.equal(sock.links()[0].state, "stopped");
  t.mock.timers.tick(60000);
  assert.equal(made.length, 1);
  assert.equal(reconnecting.length, 1);
});

test("close() while connected closes the link, which is not dialled again", async (t) => {
  const url = "ws://127.0.0.1:24/";
  const { sock, protocol, made, reconnecting } = onMockClock(t, { minDelay: 100, maxDelay: 100 }, url);
  const server = tm.newNodeId();
  FakeWebSocket.last.push(await serverShake(server, protocol));
  assert.equal(await sock.connect(url), server);
  sock.close();
  t.mock.timers.tick(0); // the WebSocket's close event
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(sock.routing_table.size, 0);
  t.mock.timers.tick(60000);
  assert.deepEqual([made.length, reconnecting.length, sock.links()[0].state], [1, 0, "stopped"]);
});

test("a URL the WebSocket refuses is dialled once, however long one waits", async (t) => {
  const url = "ws://127.0.0.1:25/#x";
  const errors = [];
  const { sock, made, reconnecting, first } = onMockClock(t, { minDelay: 100, maxDelay: 100, refuse: (u) => u.includes("#") }, url);
  sock.on("error", (s, error) => errors.push(error));
  await assert.rejects(first, (error) => error instanceof tm.HandshakeFailed && /fragment/.test(error.message));
  t.mock.timers.tick(60000);
  assert.deepEqual(made, [url]);
  assert.deepEqual(reconnecting, []);
  assert.equal(sock.links()[0].state, "stopped");
  assert.equal(errors.length, 1, "reported: it will not be dialled again");
  // Asked again, it is tried again, once: the page may have changed what it allows.
  await assert.rejects(sock.connect(url), tm.HandshakeFailed);
  t.mock.timers.tick(60000);
  assert.deepEqual(made, [url, url]);
  sock.close();
});
