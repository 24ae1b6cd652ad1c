// The codec of the bundled client, in Node without a browser: the frames of
// shared/vectors/p2p-0.7.json byte for byte, msgpack as Python peers write
// and read it, IDs, and the frame reader.  Both SHA-256 paths run:
// WebCrypto, and the bundled fallback (the second suite here).

import assert from "node:assert/strict";
import { readFileSync, existsSync } from "node:fs";
import { test, describe, beforeEach, afterEach } from "node:test";
import { fileURLToPath } from "node:url";

import { codec, flags, hex, tm, unhex } from "../testing/bundle.mjs";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const VECTORS = [here("../../../shared/vectors/p2p-0.7.json"), process.env.TWISTED_MESH_VECTORS].find(
  (path) => path && existsSync(path),
);

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
