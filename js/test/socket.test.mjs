// A MeshSocket against a fake server node: the handshake, what it reads
// and relays, and what it sends.

import assert from "node:assert/strict";
import { test } from "node:test";

import { codec, flags, hex, tm, unhex } from "../testing/bundle.mjs";
import { FakeWebSocket, linked, now, settle } from "../testing/fake-server.mjs";

test("a MeshSocket: handshake, messages, duplicates, renegotiation, reply", async () => {
  const protocol = new tm.Protocol("mesh", "ws");
  const sock = new tm.MeshSocket(protocol, { WebSocket: FakeWebSocket, reconnect: false });
  const server = tm.newNodeId();
  const connected = sock.connect("ws://127.0.0.1:1/");
  await settle();
  const ws = FakeWebSocket.last;
  const [hello] = await ws.received();
  assert.equal(hello.msgType, flags.whisper);
  assert.deepEqual(hello.payload, [flags.handshake, sock.id, protocol.id, ["", 0], []]);
  assert.equal(hello.senderIsBin, false, "a browser writes IDs as str");

  // The server's handshake in bin form, then restated in str form.
  const enc = new TextEncoder();
  const shake = async (asBin) =>
    (await codec.WireMessage.create(flags.whisper, server, now(), [
      flags.handshake,
      asBin ? enc.encode(server) : server,
      asBin ? enc.encode(protocol.id) : protocol.id,
      ["127.0.0.1", 1],
      [0x13, 0x11],
    ], asBin)).frame();
  let connects = 0;
  sock.on("connect", () => connects++);
  ws.push(await shake(true), await shake(false));
  assert.equal(await connected, server);
  await settle();
  assert.equal(connects, 1);
  assert.deepEqual([...sock.routing_table.keys()], [server]);
  const [, peers] = await ws.received();
  assert.deepEqual(peers.payload, [flags.peers, []]);

  // A broadcast from elsewhere in the mesh, twice, and an old one.
  const other = tm.newNodeId();
  const hi = await codec.WireMessage.create(flags.broadcast, other, now(), [flags.broadcast, "hi", new Uint8Array([1])], false);
  const old = await codec.WireMessage.create(flags.broadcast, other, now() - 120, [flags.broadcast, "old"], false);
  const messages = [];
  sock.on("message", (s) => messages.push(s.recv()));
  ws.push(hi.frame(), hi.frame(), old.frame());
  await settle();
  assert.equal(messages.length, 1);
  assert.equal(messages[0].sender, other);
  assert.equal(messages[0].packets[1], "hi");
  assert.ok(messages[0].packets[2] instanceof Uint8Array);
  assert.equal(messages[0].id, await hi.id());
  assert.equal(sock.stats.dropped.duplicate, 1);
  assert.equal(sock.stats.dropped.expired, 1);

  // Reply: to the server (a peer) it is a whisper; to others it fails.
  await assert.rejects(messages[0].reply(["nope"]), tm.NotConnected);
  const fromServer = await codec.WireMessage.create(flags.whisper, server, now(), [flags.whisper, "psst"], false);
  ws.push(fromServer.frame());
  await settle();
  await messages[1].reply(["back"]);
  const id = await sock.send(["to all", 7]);
  const sent = (await ws.received()).slice(2);
  assert.deepEqual(sent.map((m) => [m.msgType, m.payload]), [
    [flags.whisper, [flags.whisper, "back"]],
    [flags.broadcast, [flags.broadcast, "to all", 7]],
  ]);
  assert.equal(await sent[1].id(), id);

  // A compressed (unreadable) frame: ask for it raw, and resend on request.
  ws.sent.length = 0;
  ws.push(codec.frameOf(new Uint8Array(40).fill(7)));
  await settle();
  const asked = await ws.received();
  assert.deepEqual(asked.map((m) => [m.msgType, m.payload]), [
    [flags.renegotiate, [flags.compression, []]],
    [flags.renegotiate, [flags.resend]],
  ]);
  ws.sent.length = 0;
  ws.push((await codec.WireMessage.create(flags.renegotiate, server, now(), [flags.resend], false)).frame());
  await settle();
  assert.equal(hex((await ws.received())[0].checksum), hex(sent[1].checksum));

  let disconnects = 0;
  sock.on("disconnect", () => disconnects++);
  sock.close();
  await settle();
  assert.equal(disconnects, 1);
  assert.equal(sock.routing_table.size, 0);
  await assert.rejects(sock.send(["late"]), tm.NotConnected);
});

/** The body of a message whose payload is given as raw msgpack (what pack() would not write). */
async function rawBody(msgType, sender, time, ...rawPayload) {
  const parts = [new Uint8Array([0x90 + 3 + rawPayload.length]), codec.pack(msgType), codec.pack(sender), codec.pack(time), ...rawPayload];
  const serial = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    serial.set(part, at);
    at += part.length;
  }
  const body = new Uint8Array(32 + serial.length);
  body.set(await codec.sha256(serial));
  body.set(serial, 32);
  return body;
}

test("a message with odd map keys is delivered, and the link stays up", async () => {
  const { sock, ws, server } = await linked();
  const other = tm.newNodeId();
  const messages = [];
  sock.on("message", (s) => messages.push(s.recv()));
  // {b"key": 1, None: 2, True: 3, "__proto__": {"polluted": True}}
  const odd = "84 c4036b657901 c002 c303 a95f5f70726f746f5f5f 81 a8706f6c6c75746564 c3".replace(/ /g, "");
  const body = await rawBody(flags.broadcast, other, now(), codec.pack(flags.broadcast), unhex(odd));
  const after = await codec.WireMessage.create(flags.broadcast, other, now(), [flags.broadcast, "after"], false);
  ws.push(codec.frameOf(body), after.frame());
  await settle();
  assert.equal(sock.routing_table.size, 1, "the link stays");
  assert.deepEqual(sock.stats.dropped, {});
  assert.equal(messages.length, 2);
  const map = messages[0].packets[1];
  assert.deepEqual(Object.keys(map), ["key", "null", "true", "__proto__"]);
  assert.equal(map.polluted, undefined);
  assert.equal({}.polluted, undefined);
  assert.equal(messages[1].packets[1], "after");
  // Relayed to another link as the bytes it arrived as (see the main test); here, sent on.
  await sock.send([map]);
  const [sent] = await ws.received();
  assert.deepEqual(Object.keys(sent.payload[1]), ["key", "null", "true", "__proto__"]);
  assert.ok(server);
  sock.close();
});

test("send() refuses what a twisted_mesh node would not read, before writing it", async () => {
  const { sock, ws } = await linked({ maxFrameSize: 4096 });
  const nest = (depth, wrap) => {
    let value = "x";
    for (let i = 0; i < depth; i++) value = wrap(value);
    return value;
  };
  // The message is depth 0, a packet depth 1: lists and maps up to depth 31.
  assert.equal(codec.MAX_DEPTH, 32);
  await sock.send([nest(31, (v) => [v])]);
  await sock.send([nest(31, (v) => ({ k: v }))]);
  await assert.rejects(sock.send([nest(32, (v) => [v])]), TypeError);
  await assert.rejects(sock.send([nest(32, (v) => ({ k: v }))]), TypeError);
  await assert.rejects(sock.send(["a", [1, nest(31, (v) => [v])]]), TypeError);
  const cyclic = [];
  cyclic.push(cyclic);
  await assert.rejects(sock.send([cyclic]), TypeError);
  // Items: 1,000,000 per list or map, the message's own array included.
  assert.equal(codec.MAX_ITEMS, 1000000);
  await assert.rejects(sock.send([new Array(codec.MAX_ITEMS + 1).fill(0)]), RangeError);
  await assert.rejects(sock.send(new Array(codec.MAX_ITEMS - 3).fill(0)), RangeError);
  const many = {};
  for (let i = 0; i <= codec.MAX_ITEMS; i++) many[i] = 0;
  await assert.rejects(sock.send([many]), RangeError);
  // Lists and maps: MAX_ITEMS in the whole message, its own array included.
  const lists = (count) => Array.from({ length: count }, () => []);
  const fill = (total) => Array.from({ length: total / 1000 }, () => lists(1000));
  await assert.rejects(sock.send(fill(codec.MAX_ITEMS)), /more than 1000000 lists and maps/);
  // (The message's array, the packet's list, and the lists in it.)
  sock._outbox.check([lists(codec.MAX_ITEMS - 2)], 0, "send()");
  assert.throws(() => sock._outbox.check([lists(codec.MAX_ITEMS - 1)], 0, "send()"), /more than 1000000 lists and maps/);
  // The frame size: the body (checksum and serial) fits maxFrameSize.
  await assert.rejects(sock.send([new Uint8Array(4096)]), RangeError);
  await assert.rejects(sock.send([new Uint8Array(4096)], flags.whisper), RangeError);
  const fits = 4096 - 32 - (await codec.WireMessage.create(flags.broadcast, sock.id, now(), [0, new Uint8Array(0)])).serial.length;
  await sock.send([new Uint8Array(fits - 1)]); // bin16, not bin8: a byte more
  await assert.rejects(sock.send([new Uint8Array(fits)]), RangeError);
  const received = await ws.received();
  assert.equal(received.length, 3, "only what fits was written");
  assert.equal(received[2].frame().length - 4, 4096);
  assert.equal(sock.routing_table.size, 1);
  // The default is twisted_mesh's.
  const big = await linked({}, "ws://127.0.0.1:10/");
  await assert.rejects(big.sock.send([new Uint8Array(codec.MAX_FRAME_SIZE)]), RangeError);
  assert.equal(big.ws.sent.length, 0);
  sock.close();
  big.sock.close();
});

test("send() fails with NotConnected when nothing was written", async () => {
  const { sock, ws, server } = await linked();
  const messages = [];
  sock.on("message", (s) => messages.push(s.recv()));
  ws.push((await codec.WireMessage.create(flags.whisper, server, now(), [flags.whisper, "hi"], false)).frame());
  await settle();
  // The link is closing (its WebSocket not closed yet): every send drops.
  sock.routing_table.get(server).close("a test");
  assert.equal(sock.routing_table.size, 1);
  await assert.rejects(sock.send(["lost"]), tm.NotConnected);
  await assert.rejects(sock.send(["lost"], flags.whisper), tm.NotConnected);
  await assert.rejects(messages[0].reply(["lost"]), tm.NotConnected);
  assert.equal(ws.sent.length, 0);
  await settle();

  // Closed: at once, with or without links.
  const other = await linked({}, "ws://127.0.0.1:12/");
  const queued = other.sock.send(["queued before close()"]);
  other.sock.close();
  await assert.rejects(queued, tm.NotConnected);
  await assert.rejects(other.sock.send(["after close()"]), /closed/);
  assert.equal(other.ws.sent.length, 0);
  sock.close();
});
