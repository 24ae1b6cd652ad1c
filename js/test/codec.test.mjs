// The bundled client's codec and node logic, in Node without a browser:
// the frames of shared/vectors/p2p-0.7.json byte for byte, the frame reader,
// and a MeshSocket against a fake WebSocket.  Run with `npm test` in js/, or
// from tests/test_browser.py.  Both SHA-256 paths run: WebCrypto, and the
// bundled fallback (TWISTED_MESH_NO_WEBCRYPTO=1, or the second suite here).

import assert from "node:assert/strict";
import { readFileSync, existsSync } from "node:fs";
import { test, describe, beforeEach, afterEach } from "node:test";
import { fileURLToPath } from "node:url";
import vm from "node:vm";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const BUNDLE = here("../../twisted_mesh/web/static/twisted_mesh.js");
const VECTORS = [here("../../../shared/vectors/p2p-0.7.json"), process.env.TWISTED_MESH_VECTORS].find(
  (path) => path && existsSync(path),
);

// The bundle is a browser script: run it as one, it defines `twisted_mesh`.
vm.runInThisContext(readFileSync(BUNDLE, "utf8"), { filename: BUNDLE });
const tm = globalThis.twisted_mesh;
const { codec, flags } = tm;

const hex = (bytes) => codec.toHex(bytes);
const unhex = (text) => codec.fromHex(text);

for (const hashing of ["WebCrypto", "bundled SHA-256"]) {
  describe(`with ${hashing}`, () => {
    const realCrypto = Object.getOwnPropertyDescriptor(globalThis, "crypto");
    beforeEach(() => {
      if (hashing !== "WebCrypto") {
        const crypto = globalThis.crypto;
        Object.defineProperty(globalThis, "crypto", {
          value: { getRandomValues: (array) => crypto.getRandomValues(array) },
          configurable: true,
        });
      }
      assert.equal(codec.hasWebCrypto(), hashing === "WebCrypto");
    });
    afterEach(() => Object.defineProperty(globalThis, "crypto", realCrypto));

    test("protocol IDs", { skip: !VECTORS && "no shared/vectors" }, () => {
      const vectors = JSON.parse(readFileSync(VECTORS, "utf8"));
      const browser = vectors.protocol_ids.filter((v) => v.encryption === "ws" || v.encryption === "wss");
      assert.ok(browser.length >= 2);
      for (const v of browser) assert.equal(new tm.Protocol(v.subnet, v.encryption).id, v.id);
      for (const v of vectors.protocol_ids) assert.equal(tm.protocolId(v.subnet, v.encryption), v.id);
      assert.throws(() => new tm.Protocol("mesh", "Plaintext"), /WebSocket only/);
    });

    test("frames, byte for byte", { skip: !VECTORS && "no shared/vectors" }, async () => {
      const vectors = JSON.parse(readFileSync(VECTORS, "utf8"));
      const byName = Object.fromEntries(vectors.frames.map((v) => [v.name, v]));
      for (const v of vectors.frames) {
        const frame = unhex(v.frame_hex);
        const body = frame.slice(4);
        if (v.compression.length) {
          // This client agrees to no compression: a compressed body fails its
          // checksum, which makes a link ask for it again, uncompressed.
          await assert.rejects(codec.WireMessage.fromBody(body), codec.ChecksumError);
          continue;
        }
        const msg = await codec.WireMessage.fromBody(body);
        assert.equal(msg.msgType, v.msg_type, v.name);
        assert.equal(msg.sender, v.sender);
        assert.equal(msg.time, v.time);
        assert.equal(msg.senderIsBin, v.sender_form === "bin");
        assert.equal(hex(msg.checksum), v.message_id_hex);
        const again = await codec.WireMessage.create(msg.msgType, msg.sender, msg.time, msg.payload, msg.senderIsBin);
        assert.equal(hex(again.frame()), v.frame_hex, `${v.name}: re-encoded`);
        // The ID is that of the bin form, whichever form came.
        assert.equal(await msg.id(), v.sender_form === "bin" ? v.message_id_hex : byName.broadcast.message_id_hex);
      }
      const broadcast = await codec.WireMessage.fromBody(unhex(byName.broadcast.frame_hex).slice(4));
      assert.deepEqual(broadcast.payload, [0, "this is", "a test"]);
      const handshake = await codec.WireMessage.fromBody(unhex(byName.handshake.frame_hex).slice(4));
      assert.equal(handshake.payload[0], flags.handshake);
      assert.ok(handshake.payload[1] instanceof Uint8Array, "bin IDs stay bytes");
    });

    test("str and bin stay apart", async () => {
      const bytes = new Uint8Array([0, 1, 255]);
      const msg = await codec.WireMessage.create(flags.broadcast, tm.newNodeId(), 1700000000, [0, "text", bytes, { k: [1, -2, 3.5] }]);
      const back = await codec.WireMessage.fromBody(msg.frame().slice(4));
      assert.equal(typeof back.payload[1], "string");
      assert.ok(back.payload[2] instanceof Uint8Array);
      assert.deepEqual([...back.payload[2]], [0, 1, 255]);
      assert.deepEqual(back.payload[3], { k: [1, -2, 3.5] });
      assert.equal(back.senderIsBin, false);
      assert.throws(() => codec.checkPacket(new Date()), TypeError);
      assert.throws(() => codec.checkPacket(() => 1), TypeError);
      assert.deepEqual([...codec.checkPacket(new Uint16Array([258]).buffer)], [2, 1]);
    });

    test("a damaged body fails its checksum", async () => {
      const msg = await codec.WireMessage.create(flags.broadcast, tm.newNodeId(), 1700000000, [0, "x"]);
      const body = msg.frame().slice(4);
      body[body.length - 1] ^= 1;
      await assert.rejects(codec.WireMessage.fromBody(body), codec.ChecksumError);
    });
  });
}

test("node IDs", () => {
  const ids = new Set(Array.from({ length: 50 }, () => tm.newNodeId()));
  assert.equal(ids.size, 50);
  for (const id of ids) {
    assert.match(id, /^[1-9A-HJ-NP-Za-km-z]{64,66}$/);
    assert.equal(tm.b58encodeInt(tm.b58decodeInt(id)), id);
  }
  assert.equal(tm.b58encodeInt(0n), "1");
  assert.equal(tm.b58encodeInt(57n), "z");
  assert.equal(tm.b58encodeInt(58n), "21");
});

test("the frame reader cuts a stream however it arrives", async () => {
  const frames = [];
  for (let i = 0; i < 5; i++) {
    frames.push((await codec.WireMessage.create(0, tm.newNodeId(), 1700000000, [0, "m" + i, "x".repeat(i * 100)])).frame());
  }
  const stream = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let at = 0;
  for (const f of frames) {
    stream.set(f, at);
    at += f.length;
  }
  for (const size of [1, 3, 4, 5, 97, stream.length]) {
    const reader = new codec.FrameReader();
    const bodies = [];
    for (let i = 0; i < stream.length; i += size) bodies.push(...reader.feed(stream.slice(i, i + size)));
    assert.equal(bodies.length, 5, `chunks of ${size}`);
    assert.deepEqual(bodies.map(hex), frames.map((f) => hex(f.slice(4))));
    assert.equal(reader.buffered, 0);
  }
  const reader = new codec.FrameReader(1000);
  assert.throws(() => reader.feed(new Uint8Array([0, 0, 3, 233])), codec.FrameTooLarge);
});

// -- MeshSocket against a fake WebSocket ------------------------------------------------

class FakeWebSocket {
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
  async received() {
    const out = [];
    for (const frame of this.sent) out.push(await codec.WireMessage.fromBody(frame.slice(4)));
    return out;
  }
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 20));
const now = () => Math.floor(Date.now() / 1000);

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

test("a MeshSocket refuses a node of another network, and dials again after a loss", async () => {
  const protocol = new tm.Protocol("mesh", "ws");
  const sock = new tm.MeshSocket(protocol, { WebSocket: FakeWebSocket, minDelay: 10, maxDelay: 40 });
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

// -- what Python peers send and read ----------------------------------------------------

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

/** A MeshSocket linked to a fake server node: the socket, the fake WebSocket, the server's ID. */
async function linked(options = {}, url = "ws://127.0.0.1:9/") {
  const protocol = new tm.Protocol("mesh", "ws");
  const sock = new tm.MeshSocket(protocol, { WebSocket: FakeWebSocket, reconnect: false, log: () => {}, ...options });
  return { sock, protocol, ...(await join(sock, url)) };
}

/** Link `sock` to another fake server node at `url`: its fake WebSocket and ID. */
async function join(sock, url) {
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

async function serverShake(server, protocol) {
  return (await codec.WireMessage.create(flags.whisper, server, now(), [flags.handshake, server, protocol.id, ["h", 9], []])).frame();
}

test("map keys are read as Python peers read them: bin, nil, bool, numbers, __proto__", () => {
  const read = (text) => codec.unpack(unhex(text.replace(/ /g, "")));
  // {b"key": 1}, {None: 1}, {True: 1}, {False: 1}, {7: 1}, {-1: 1}, {1.5: 1}
  assert.deepEqual(read("81 c4 03 6b6579 01"), { key: 1 });
  assert.deepEqual(read("81 c0 01"), { null: 1 });
  assert.deepEqual(read("81 c3 01"), { true: 1 });
  assert.deepEqual(read("81 c2 01"), { false: 1 });
  assert.deepEqual(read("81 07 01"), { 7: 1 });
  assert.deepEqual(read("81 ff 01"), { "-1": 1 });
  assert.deepEqual(read("81 cb 3ff8000000000000 01"), { "1.5": 1 });
  // Bytes that are not UTF-8: U+FFFD.
  assert.deepEqual(read("81 c4 01 ff 01"), { "\ufffd": 1 });
  // "__proto__" is an own key, as JSON.parse makes it: no prototype changes.
  const proto = read("82 a9 5f5f70726f746f5f5f 81 a1 78 01 a1 79 02");
  assert.equal(Object.getPrototypeOf(proto), Object.prototype);
  assert.deepEqual(Object.keys(proto), ["__proto__", "y"]);
  assert.deepEqual(Object.getOwnPropertyDescriptor(proto, "__proto__").value, { x: 1 });
  assert.equal(proto.x, undefined);
  assert.equal({}.x, undefined);
  // ... and it is sent back as it came.
  assert.equal(hex(codec.pack(codec.checkPacket(proto))), "82a95f5f70726f746f5f5f81a17801a17902");
  // What Python refuses too: an array as a key, an extension, trailing data, bad UTF-8.
  assert.throws(() => read("81 91 01 01"), codec.FrameError);
  assert.throws(() => read("d6 ff 00000000"), /extension type -1/);
  assert.throws(() => read("c7 01 05 00"), /extension type 5/);
  assert.throws(() => read("01 01"), codec.FrameError);
  assert.throws(() => read("a1 ff"), codec.FrameError);
  assert.throws(() => read("92 01"), codec.FrameError);
  assert.throws(() => read("dd ffffffff"), codec.FrameError);
  assert.throws(() => read("c1"), codec.FrameError);
  // Nesting: as deep as msgpack for Python reads (1024), and no deeper.
  assert.ok(Array.isArray(codec.unpack(new Uint8Array([...new Array(1024).fill(0x91), 0x01]))));
  assert.throws(() => codec.unpack(new Uint8Array([...new Array(1025).fill(0x91), 0x01])), codec.FrameError);
  // A leading U+FEFF is kept, in a str, a str key and a bin key, as Python keeps it.
  assert.equal(read("a5 efbbbf 6869"), "\ufeffhi");
  assert.deepEqual(read("82 a5efbbbf6869 01 a26869 02"), { "\ufeffhi": 1, hi: 2 });
  assert.deepEqual(read("81 c405efbbbf6869 01"), { "\ufeffhi": 1 });
  assert.equal(hex(codec.pack(read("a5 efbbbf 6869"))), "a5efbbbf6869");
  // Bytes of another kind than a Uint8Array are read too.
  assert.deepEqual(codec.unpack(unhex("9201a161").buffer), [1, "a"]);
  assert.deepEqual(codec.unpack([0x92, 0x01, 0xa1, 0x61]), [1, "a"]);
  // Every other type, at its limits.
  assert.deepEqual(read("99 cc ff cd ffff ce ffffffff cf 0000000100000000 d0 80 d1 8000 d2 80000000 d3 ffffffffffffffff ca 3fc00000"), [
    255, 65535, 4294967295, 2 ** 32, -128, -32768, -(2 ** 31), -1, 1.5,
  ]);
});

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

test("connect() during a redial gives the next handshake, not the first attempt's", async () => {
  const protocol = new tm.Protocol("mesh", "ws");
  const sock = new tm.MeshSocket(protocol, { WebSocket: FakeWebSocket, minDelay: 30, maxDelay: 30, log: () => {} });
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
  FakeWebSocket.last.close(1006);
  await settle();
  assert.equal(sock.links()[0].state, "waiting");
  const third = sock.connect(url);
  await new Promise((resolve) => setTimeout(resolve, 60));
  const next = tm.newNodeId();
  FakeWebSocket.last.push(await serverShake(next, protocol));
  assert.equal(await third, next);

  // Waiting when the node closes: the promise fails.
  FakeWebSocket.last.close(1006);
  await settle();
  const fourth = sock.connect(url);
  sock.close();
  await assert.rejects(fourth, tm.HandshakeFailed);
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
  const timers = () => process.getActiveResourcesInfo().filter((kind) => kind === "Timeout").length;
  const before = timers();
  const refused = sock.connect("ws://127.0.0.1:13/#x");
  // (Timers of earlier tests may end meanwhile: none may start.)
  assert.ok(timers() <= before, "no handshake timer left running");
  await assert.rejects(refused, (error) => error instanceof tm.HandshakeFailed && /fragment/.test(error.message));
  await settle();
  assert.deepEqual(sock.links().map((l) => [l.url, l.state]), [["ws://127.0.0.1:13/#x", "stopped"]]);
  assert.equal(errors.length, 1, "not dialled again: reported");
  assert.ok(timers() <= before, "no redial timer");
  sock.close();
});

test("a time field written as a float is refused, as twisted_mesh refuses it", async () => {
  const other = tm.newNodeId();
  const sender = codec.pack(other);
  const serial = (time) => new Uint8Array([0x94, flags.broadcast, ...sender, ...unhex(time.replace(/ /g, "")), flags.broadcast]);
  const body = async (time) => new Uint8Array([...(await codec.sha256(serial(time))), ...serial(time)]);
  const ok = await codec.WireMessage.fromBody(await body("ce 65 53 f1 00"));
  assert.equal(ok.time, 0x6553f100);
  for (const float of ["cb 41d954fc40000000", "ca 4ecaa7e2"]) {
    await assert.rejects(codec.WireMessage.fromBody(await body(float)), /bad time field/);
  }
});

test("broadcasts stamped more than MESSAGE_LIFETIME ahead are dropped, as twisted_mesh drops them", async () => {
  const { sock, ws } = await linked();
  const other = tm.newNodeId();
  const messages = [];
  sock.on("message", (s) => messages.push(s.recv()));
  const at = async (time, text) => (await codec.WireMessage.create(flags.broadcast, other, time, [flags.broadcast, text], false)).frame();
  ws.push(
    await at(now() + tm.MESSAGE_LIFETIME + 5, "an hour ahead"),
    await at(Number.MAX_SAFE_INTEGER, "far ahead"),
    await at(now() + 30, "a little ahead"),
    await at(now() - 30, "a little behind"),
  );
  await settle();
  assert.deepEqual(messages.map((m) => m.packets[1]), ["a little ahead", "a little behind"]);
  assert.equal(sock.stats.dropped.expired, 2);
  assert.equal(sock.routing_table.size, 1);
  sock.close();
});

// -- the send buffer ------------------------------------------------------------------------

/** A FakeWebSocket whose frames wait in bufferedAmount until the test's network takes them. */
class BufferingWebSocket extends FakeWebSocket {
  send(frame) {
    super.send(frame);
    this.bufferedAmount += frame.length;
  }
}

/** Whether `promise` has settled by now (after the callbacks due before a timer). */
async function settled(promise) {
  let done = false;
  promise.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((resolve) => setTimeout(resolve, 0));
  return done;
}

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
  const timers = () => process.getActiveResourcesInfo().filter((kind) => kind === "Timeout").length;
  sock.send([new Uint8Array(tm.DRAINED_BUFFER)]);
  const first = sock.drained();
  const second = sock.drained();
  await settle();
  assert.equal(ws.sent.length, 1, "the message sent before drained() is written");
  assert.ok(!(await settled(first)) && !(await settled(second)));
  const polling = timers();
  ws.bufferedAmount = tm.DRAINED_BUFFER + 1;
  await settle();
  assert.ok(!(await settled(first)));
  ws.bufferedAmount = tm.DRAINED_BUFFER;
  await Promise.all([first, second]);
  assert.ok(timers() < polling, "the poll stopped");
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
