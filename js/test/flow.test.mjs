// Flow control: a link over maxSendBuffer takes no new message, and
// drained() waits until the links have room again.

import assert from "node:assert/strict";
import { test } from "node:test";

import { codec, flags, tm } from "../testing/bundle.mjs";
import { BufferingWebSocket, activeTimers, join, linked, now, settle, settled } from "../testing/fake-server.mjs";

test("a link over maxSendBuffer takes no new message: SendBufferFull when none took it", async () => {
  const logged = [];
  const { sock, ws, server } = await linked({ maxSendBuffer: 1000, log: (level, text) => logged.push([level, text]) });
  const messages = [];
  sock.on("message", (s) => messages.push(s.recv()));
  ws.push((await codec.WireMessage.create(flags.whisper, server, now(), [flags.whisper, "hi"], false)).frame());
  await settle();
  ws.bufferedAmount = 1000; // at the limit: taken
  await sock.send(["at the limit"]);
  ws.bufferedAmount = 1001;
  for (const refused of [sock.send(["over"]), sock.send(["over"], flags.whisper), messages[0].reply(["over"])]) {
    await assert.rejects(refused, (error) => {
      assert.ok(error instanceof tm.SendBufferFull && !(error instanceof tm.NotConnected));
      assert.match(error.message, /send buffer is full: 1001 bytes wait for the peer, more than maxSendBuffer \(1000\)/);
      assert.match(error.message, /await sock.drained\(\)/);
      assert.deepEqual(Object.keys(error.skipped), [server]);
      return true;
    });
  }
  assert.equal((await ws.received()).length, 1, "only the message at the limit was written");
  assert.deepEqual(sock.stats.skipped, { send_buffer: 3 });
  assert.equal(logged.filter(([level]) => level === "warn").length, 1, "logged once in 10 s");
  assert.equal(tm.MAX_SEND_BUFFER, 32 * 1024 * 1024);
  assert.equal(new tm.MeshSocket(new tm.Protocol("mesh", "ws")).options.maxSendBuffer, tm.MAX_SEND_BUFFER);

  // Another link that takes it: send() resolves; the full one skips it, counted.
  const other = await join(sock, "ws://127.0.0.1:14/");
  await sock.send(["to the other"]);
  assert.deepEqual((await other.ws.received()).map((m) => m.payload), [[flags.broadcast, "to the other"]]);
  assert.equal((await ws.received()).length, 1);
  assert.deepEqual(sock.stats.skipped, { send_buffer: 4 });
  // The other closing (its close event yet to come), the full one is why
  // nothing was sent: SendBufferFull still.
  other.ws.readyState = 2;
  await assert.rejects(sock.send(["over"]), (error) => {
    assert.ok(error instanceof tm.SendBufferFull);
    assert.deepEqual(error.skipped, {
      [server]: "the send buffer is full: 1001 bytes wait for the peer, more than maxSendBuffer (1000)",
      [other.server]: "the link is closing",
    });
    return true;
  });
  sock.close();
});

test("a relayed broadcast is dropped for a link over maxSendBuffer, counted and logged", async () => {
  const logged = [];
  const { sock, ws } = await linked({ maxSendBuffer: 1000, log: (level, text) => logged.push([level, text]) });
  const full = await join(sock, "ws://127.0.0.1:15/");
  full.ws.bufferedAmount = 5000;
  const messages = [];
  sock.on("message", (s) => messages.push(s.recv()));
  const other = tm.newNodeId();
  for (const text of ["first", "second"]) {
    ws.push((await codec.WireMessage.create(flags.broadcast, other, now(), [flags.broadcast, text], false)).frame());
  }
  await settle();
  assert.deepEqual(messages.map((m) => m.packets[1]), ["first", "second"], "delivered here all the same");
  assert.equal(full.ws.sent.length, 0);
  assert.equal(sock.stats.relayed, 0);
  assert.deepEqual(sock.stats.dropped, { send_buffer: 2 });
  const warnings = logged.filter(([level]) => level === "warn").map(([, text]) => text);
  assert.equal(warnings.length, 1, "logged once in 10 s");
  assert.match(warnings[0], new RegExp(`peer ${full.server}: the send buffer is full: 5000 bytes .*dropping the broadcasts relayed`));
  // Drained, it relays again.
  full.ws.bufferedAmount = 0;
  ws.push((await codec.WireMessage.create(flags.broadcast, other, now(), [flags.broadcast, "third"], false)).frame());
  await settle();
  assert.deepEqual((await full.ws.received()).map((m) => m.payload[1]), ["third"]);
  assert.equal(sock.stats.relayed, 1);
  sock.close();
});

test("drained() resolves at once when no link holds more than 64 KiB", async () => {
  const { sock, ws } = await linked();
  assert.equal(tm.DRAINED_BUFFER, 64 * 1024);
  ws.bufferedAmount = tm.DRAINED_BUFFER;
  assert.ok(await settled(sock.drained()), "before any timer");
  sock.close();
  assert.ok(await settled(sock.drained()), "closed");
  assert.ok(await settled(new tm.MeshSocket(new tm.Protocol("mesh", "ws")).drained()), "no link");
});

test("drained() waits for the messages sent before it, then for the buffers to drain", async () => {
  const { sock, ws } = await linked({ WebSocket: BufferingWebSocket });
  sock.send([new Uint8Array(tm.DRAINED_BUFFER)]);
  const first = sock.drained();
  const second = sock.drained();
  await settle();
  assert.equal(ws.sent.length, 1, "the message sent before drained() is written");
  assert.ok(!(await settled(first)) && !(await settled(second)));
  const polling = activeTimers();
  ws.bufferedAmount = tm.DRAINED_BUFFER + 1;
  await settle();
  assert.ok(!(await settled(first)));
  ws.bufferedAmount = tm.DRAINED_BUFFER;
  await Promise.all([first, second]);
  assert.ok(activeTimers() < polling, "the poll stopped");
  sock.close();
});

test("drained() resolves when the full link closes", async () => {
  const { sock, ws } = await linked();
  const other = await join(sock, "ws://127.0.0.1:16/");
  ws.bufferedAmount = 10 * 1024 * 1024;
  const waiting = sock.drained();
  await settle();
  assert.ok(!(await settled(waiting)));
  ws.close(1006); // the peer went away: what waits for it will not be read
  await settle();
  assert.ok(await settled(waiting));
  assert.ok(other.ws.readyState === 1 && sock.routing_table.size === 1);

  // A link this node closes is not waited for either.
  other.ws.bufferedAmount = 10 * 1024 * 1024;
  const again = sock.drained();
  await settle();
  assert.ok(!(await settled(again)));
  sock.routing_table.get(other.server).close("a test");
  await settle();
  assert.ok(await settled(again));
  sock.close();
});

test("a producer that awaits drained() between batches loses nothing", async () => {
  const { sock, ws } = await linked({ WebSocket: BufferingWebSocket, maxSendBuffer: 200 * 1024 });
  // The network takes 16 KiB every 2 ms.
  const network = setInterval(() => (ws.bufferedAmount = Math.max(0, ws.bufferedAmount - 16 * 1024)), 2);
  const sends = [];
  try {
    for (let i = 0; i < 2000; i++) {
      sends.push(sock.send([i, "x".repeat(1000)]));
      if (i % 100 === 99) await sock.drained();
    }
    await Promise.all(sends);
  } finally {
    clearInterval(network);
  }
  assert.deepEqual((await ws.received()).map((m) => m.payload[1]), Array.from({ length: 2000 }, (_, i) => i));
  assert.deepEqual(sock.stats.skipped, {});
  sock.close();
});
