// Signed networks: keys and IDs, proofs and message signatures byte for byte
// as signed-vectors.json has them (made by Python's `cryptography`, see
// ../testing/make-signed-vectors.py), and a signed MeshSocket against a fake
// server node that proves its key and signs.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { codec, flags, hex, tm, unhex } from "../testing/bundle.mjs";
import { FakeWebSocket, now, settle } from "../testing/fake-server.mjs";

const vectors = JSON.parse(readFileSync(new URL("signed-vectors.json", import.meta.url), "utf8"));
const { signatures } = tm;
const enc = new TextEncoder();

/** A vector's payload as the codec reads it: {bin: hex} as bytes. */
const packets = (value) =>
  Array.isArray(value)
    ? value.map(packets)
    : value && typeof value === "object"
      ? "bin" in value
        ? unhex(value.bin)
        : Object.fromEntries(Object.entries(value).map(([k, v]) => [k, packets(v)]))
      : value;

test("IDs and keys as Python makes them", async () => {
  for (const v of vectors.protocol_ids) {
    assert.equal(new tm.Protocol(v.subnet, v.encryption, { signed: v.signed }).id, v.id);
    assert.equal(tm.protocolId(v.subnet, v.encryption, v.signed), v.id);
  }
  assert.notEqual(new tm.Protocol("mesh", "ws", { signed: true }).id, new tm.Protocol("mesh", "ws").id);
  assert.throws(() => new tm.Protocol("mesh", "ws", { signed: "yes" }), TypeError);
  const key = await tm.NodeKey.fromSeed(unhex(vectors.seed));
  assert.equal(hex(key.publicKey), vectors.public_key);
  assert.equal(key.id, vectors.node_id);
  assert.equal(tm.nodeIdOf(unhex(vectors.public_key)), vectors.node_id);
  assert.equal((await tm.NodeKey.fromSeed(unhex(vectors.peer.seed))).id, vectors.peer.node_id);
  // A fresh key: its private key stays inside WebCrypto.
  const fresh = await tm.NodeKey.generate();
  assert.equal(fresh.privateKey.extractable, false);
  assert.ok(fresh.id.length >= 64 && fresh.id.length <= 66);
  await assert.rejects(globalThis.crypto.subtle.exportKey("pkcs8", fresh.privateKey));
});

test("proofs and signed messages, byte for byte", async () => {
  const key = await tm.NodeKey.fromSeed(unhex(vectors.seed));
  const p = vectors.proof;
  const data = signatures.proofData({
    protocolId: p.protocol_id,
    signerDialled: p.role === "dialled",
    signerId: p.signer_id,
    checkerId: p.checker_id,
    signerAddress: p.signer_address,
    signerNonce: unhex(p.own_nonce),
    checkerNonce: unhex(p.peer_nonce),
  });
  assert.equal(hex(data), p.signed_data);
  assert.equal(hex(await key.sign(data)), p.signature);
  assert.equal(hex(codec.pack([signatures.PROOF, unhex(p.signature)])), p.frame_payload);

  for (const v of vectors.messages) {
    const payload = packets(v.payload);
    const msg = await signatures.signedMessage(key, v.subnet, v.msg_type, v.time, payload);
    if (!v.what.includes("as str")) assert.equal(hex(msg.frame()), v.frame, v.what);
    // What Python made verifies (as sent: its sender bin or str).
    const received = await codec.WireMessage.fromBody(unhex(v.frame).slice(4));
    assert.equal(hex(signatures.messageData(v.subnet, received.binSerial().slice(0, -64))), v.signed_data);
    assert.equal(await new signatures.Verifier(v.subnet).check(received), null, v.what);
    assert.deepEqual(received.payload, payload, "the key and signature are taken off");
    assert.equal(received.sender, vectors.node_id);
  }
});

test("a signature that does not hold", async () => {
  const key = await tm.NodeKey.generate();
  const other = await tm.NodeKey.generate();
  const verifier = new signatures.Verifier("mesh");
  const make = (subnet, type = flags.broadcast) => signatures.signedMessage(key, subnet, type, now(), [type, "hi", 1]);
  const check = async (msg) => verifier.check(await codec.WireMessage.fromBody(msg.frame().slice(4)));
  assert.equal(await check(await make("mesh")), null);
  assert.equal(await check(await make("mesh", flags.whisper)), null);
  // Another network.
  assert.equal(await check(await make("chat")), "bad_signature");
  // Tampered: one byte of the payload (with a good checksum).
  const good = await make("mesh");
  const serial = good.serial.slice();
  const hi = serial.findIndex((byte, i) => byte === 0xa2 && serial[i + 1] === 0x68 && serial[i + 2] === 0x69);
  serial[hi + 2] = 0x6f; // the str "hi" made "ho"
  const body = new Uint8Array([...(await codec.sha256(serial)), ...serial]);
  assert.equal(await verifier.check(await codec.WireMessage.fromBody(body)), "bad_signature");
  // Another node's key, and none.
  const stolen = await codec.WireMessage.create(flags.broadcast, other.id, now(), [0, "x", key.publicKey, new Uint8Array(64)], true);
  assert.equal(await verifier.check(stolen), "wrong_key");
  const bare = await codec.WireMessage.create(flags.broadcast, key.id, now(), [0, "x"], true);
  assert.equal(await verifier.check(bare), "unsigned");
  // A key that is not a point of the curve verifies nothing.
  assert.equal(await verifier.verify(new Uint8Array(32).fill(0xff), new Uint8Array(64), new Uint8Array(1)), false);
});

/** A fake signed server node: its key, and the frames it sends. */
async function signedServer(protocol) {
  const key = await tm.NodeKey.generate();
  const nonce = globalThis.crypto.getRandomValues(new Uint8Array(32));
  return {
    key,
    nonce,
    id: key.id,
    async handshake() {
      const fields = [flags.handshake, key.id, protocol.id, ["h", 9], [], key.publicKey, nonce];
      return (await codec.WireMessage.create(flags.whisper, key.id, now(), fields)).frame();
    },
    async proof(browserNonce, browserId, signer = key) {
      const terms = {
        protocolId: protocol.id,
        signerDialled: true,
        signerId: key.id,
        checkerId: browserId,
        signerAddress: ["h", 9],
        signerNonce: nonce,
        checkerNonce: browserNonce,
      };
      const signature = await signer.sign(signatures.proofData(terms));
      return (await codec.WireMessage.create(flags.renegotiate, key.id, now(), [signatures.PROOF, signature])).frame();
    },
  };
}

/** A signed MeshSocket dialling a fake server: up to the server's handshake read. */
async function dialSigned(options = {}) {
  const protocol = new tm.Protocol("mesh", "ws", { signed: true });
  const key = await tm.NodeKey.generate();
  const sock = new tm.MeshSocket(protocol, { WebSocket: FakeWebSocket, reconnect: false, log: () => {}, key, ...options });
  const server = await signedServer(protocol);
  const connected = sock.connect("ws://127.0.0.1:9/");
  await settle();
  const ws = FakeWebSocket.last;
  const [hello] = await ws.received();
  ws.push(await server.handshake());
  await settle();
  return { sock, protocol, key, server, ws, hello, connected };
}

test("a signed MeshSocket proves its key, and the server's", async () => {
  const logs = [];
  const log = (level, text) => level === "warn" && logs.push(text);
  const { sock, protocol, key, server, ws, hello, connected } = await dialSigned({ log });
  assert.equal(sock.id, key.id);
  assert.equal(await sock.ready, key.id);
  // The handshake: IDs as bin, the key and a nonce.
  assert.equal(hello.senderIsBin, true);
  const [flag, id, pid, addr, codes, publicKey, nonce] = hello.payload;
  assert.deepEqual([flag, id, pid, addr, codes], [flags.handshake, enc.encode(sock.id), enc.encode(protocol.id), ["", 0], []]);
  assert.equal(hex(publicKey), hex(key.publicKey));
  assert.equal(nonce.length, 32);
  // Its proof, over its nonce then the server's; not identified yet.
  const [, proof] = await ws.received();
  assert.equal(proof.msgType, flags.renegotiate);
  assert.equal(proof.payload[0], signatures.PROOF);
  const verifier = new signatures.Verifier("mesh");
  const terms = {
    protocolId: protocol.id,
    signerDialled: false,
    signerId: sock.id,
    checkerId: server.id,
    signerAddress: null,
    signerNonce: nonce,
    checkerNonce: server.nonce,
  };
  assert.ok(await verifier.verify(key.publicKey, proof.payload[1], signatures.proofData(terms)));
  // A proof names its checker and the signer's role: not another node's, nor the other end's.
  for (const other of [{ checkerId: key.id }, { signerDialled: true }, { signerAddress: ["h", 9] }]) {
    assert.equal(await verifier.verify(key.publicKey, proof.payload[1], signatures.proofData({ ...terms, ...other })), false);
  }
  assert.equal(sock.routing_table.size, 0);
  // A renegotiation before the proof is fine; the proof identifies the server.
  ws.push((await codec.WireMessage.create(flags.renegotiate, server.id, now(), [flags.compression, []])).frame());
  ws.push(await server.proof(nonce, sock.id));
  assert.equal(await connected, server.id);
  await settle();
  // Its peers whisper is signed.
  const [peers] = (await ws.received()).slice(2);
  assert.equal(await verifier.check(peers), null);
  assert.deepEqual(peers.payload, [flags.peers, []]);

  // Received: signed broadcasts are delivered without key and signature,
  // in order; forged ones are dropped.
  const messages = [];
  sock.on("message", (s) => messages.push(s.recv()));
  const third = await tm.NodeKey.generate();
  const sign = (type, payload) => signatures.signedMessage(third, "mesh", type, now(), payload);
  const frames = [];
  for (let i = 0; i < 20; i++) frames.push((await sign(flags.broadcast, [flags.broadcast, i])).frame());
  // A signature's last byte changed (under a checksum that holds).
  const serial = (await sign(flags.broadcast, [flags.broadcast, "forged"])).serial;
  serial[serial.length - 1] ^= 1;
  const forged = codec.frameOf(new Uint8Array([...(await codec.sha256(serial)), ...serial]));
  // A signed broadcast written with its sender as str, as a node may relay it.
  const asStr = await signatures.signedMessage(third, "mesh", flags.broadcast, now(), [flags.broadcast, "str"]);
  const strFields = [...asStr.payload, third.publicKey, asStr.serial.slice(-64)];
  const strFrame = (await codec.WireMessage.create(flags.broadcast, third.id, asStr.time, strFields)).frame();
  const whisper = (await signatures.signedMessage(server.key, "mesh", flags.whisper, now(), [flags.whisper, "me"])).frame();
  // Signed for another subnet.
  const otherNet = (await signatures.signedMessage(third, "chat", flags.broadcast, now(), [flags.broadcast, "chat"])).frame();
  ws.push(...frames, forged, strFrame, whisper, otherNet);
  await settle();
  assert.deepEqual(
    messages.map((m) => m.packets),
    [...frames.map((_, i) => [flags.broadcast, i]), [flags.broadcast, "str"], [flags.whisper, "me"]],
  );
  assert.equal(messages[0].sender, third.id);
  assert.deepEqual(sock.stats.dropped, { bad_signature: 2 });
  // Said once (at most every 10 s), with the count.
  assert.equal(logs.length, 1);
  assert.match(logs[0], new RegExp(`^dropped a message of ${third.id} from ${server.id}: its signature does not hold .*\\(1 dropped`));

  // Sent: signed, in order.
  ws.sent.length = 0;
  const sends = [];
  for (let i = 0; i < 20; i++) sends.push(sock.send(["out", i]));
  const ids = await Promise.all(sends);
  sends.push(messages.at(-1).reply(["back"]));
  await sends.at(-1);
  const sent = await ws.received();
  const anyone = new signatures.Verifier("mesh");
  for (const msg of sent) assert.equal(await anyone.check(msg), null);
  assert.deepEqual(sent.map((m) => m.payload), [...ids.map((_, i) => [flags.broadcast, "out", i]), [flags.whisper, "back"]]);
  assert.deepEqual(await Promise.all(sent.slice(0, 20).map((m) => m.id())), ids);
  sock.close();
});

test("a server whose proof does not hold, or that speaks before it", async () => {
  const wrong = await dialSigned();
  const impostor = await tm.NodeKey.generate();
  wrong.ws.push(await wrong.server.proof(wrong.hello.payload[6], wrong.sock.id, impostor));
  await assert.rejects(wrong.connected, /proof of its key does not hold/);

  // A proof the server made for another node (relayed by a node in the middle).
  const relayed = await dialSigned();
  relayed.ws.push(await relayed.server.proof(relayed.hello.payload[6], (await tm.NodeKey.generate()).id));
  await assert.rejects(relayed.connected, /proof of its key does not hold/);

  const early = await dialSigned();
  const msg = await signatures.signedMessage(early.server.key, "mesh", flags.broadcast, now(), [0, "early"]);
  early.ws.push(msg.frame());
  await assert.rejects(early.connected, /before the proof of the peer's key/);

  const liar = await dialSigned();
  liar.connected.catch(() => {});
  // A handshake whose key does not give its ID.
  const protocol = liar.protocol;
  const sock = new tm.MeshSocket(protocol, { WebSocket: FakeWebSocket, reconnect: false, log: () => {}, key: liar.key });
  const connected = sock.connect("ws://127.0.0.1:10/");
  await settle();
  const fields = [flags.handshake, liar.server.id, protocol.id, ["h", 9], [], impostor.publicKey, new Uint8Array(32)];
  FakeWebSocket.last.push((await codec.WireMessage.create(flags.whisper, liar.server.id, now(), fields)).frame());
  await assert.rejects(connected, /not that of the key/);

  // An unsigned server on a signed network: another protocol ID.
  const plain = new tm.MeshSocket(protocol, { WebSocket: FakeWebSocket, reconnect: false, log: () => {}, key: liar.key });
  const refused = plain.connect("ws://127.0.0.1:11/");
  await settle();
  const server = tm.newNodeId();
  const unsigned = new tm.Protocol("mesh", "ws");
  FakeWebSocket.last.push((await codec.WireMessage.create(flags.whisper, server, now(), [flags.handshake, server, unsigned.id, ["h", 9], []])).frame());
  await assert.rejects(refused, tm.ProtocolMismatch);
  for (const s of [wrong.sock, early.sock, liar.sock, sock, plain]) s.close();
});

test("a browser without Ed25519 in WebCrypto gets a clear error", async () => {
  const protocol = new tm.Protocol("mesh", "ws", { signed: true });
  const subtle = globalThis.crypto.subtle;
  const generateKey = subtle.generateKey;
  subtle.generateKey = () => Promise.reject(new DOMException("Unrecognized name.", "NotSupportedError"));
  try {
    const sock = new tm.MeshSocket(protocol, { WebSocket: FakeWebSocket, log: () => {}, keyStore: null });
    assert.equal(sock.id, null);
    await assert.rejects(sock.ready, tm.SignedUnsupported);
    await assert.rejects(sock.connect("ws://127.0.0.1:9/"), /need an unsigned ws network/);
    await assert.rejects(tm.NodeKey.generate(), tm.SignedUnsupported);
    sock.close();
  } finally {
    subtle.generateKey = generateKey;
  }
  const realCrypto = Object.getOwnPropertyDescriptor(globalThis, "crypto");
  const crypto = globalThis.crypto;
  Object.defineProperty(globalThis, "crypto", { value: { getRandomValues: (a) => crypto.getRandomValues(a) }, configurable: true });
  try {
    assert.throws(() => new tm.MeshSocket(protocol, { log: () => {} }), /not a secure context/);
    // An unsigned network needs no WebCrypto.
    new tm.MeshSocket(new tm.Protocol("mesh", "ws"), { log: () => {} }).close();
  } finally {
    Object.defineProperty(globalThis, "crypto", realCrypto);
  }
  assert.throws(() => new tm.MeshSocket(protocol, { id: tm.newNodeId() }), /pass a key, not an id/);
});

test("without IndexedDB or with keyStore null, a fresh key", async () => {
  const protocol = new tm.Protocol("mesh", "ws", { signed: true });
  const a = new tm.MeshSocket(protocol, { log: () => {} });
  const b = new tm.MeshSocket(protocol, { log: () => {}, keyStore: null });
  assert.notEqual(await a.ready, await b.ready);
  assert.equal(a.id, await a.ready);
  a.close();
  b.close();
});
