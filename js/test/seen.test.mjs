// The lifetime of a broadcast and the seen-set: what a MeshSocket drops as
// too old, too far ahead, or seen before.  The seen-set's own tests import
// it from js/src (the bundle does not export it; it has no imports).

import assert from "node:assert/strict";
import { test } from "node:test";

import { SeenSet, MESSAGE_LIFETIME } from "../src/seen.js";
import { codec, flags, tm } from "../testing/bundle.mjs";
import { join, linked, now, settle } from "../testing/fake-server.mjs";

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

// -- the seen-set alone (js/src/seen.js: the bundle does not export it) -------------------

test("the seen-set: a key is new once, then a duplicate until it expires", () => {
  const seen = new SeenSet();
  assert.equal(seen.add("a", 1000, 1000), true);
  assert.equal(seen.add("a", 1000, 1000), false);
  assert.equal(seen.add("b", 1000, 1000), true);
  assert.equal(seen.size, 2);
  // Kept MESSAGE_LIFETIME + 1 s from the later of its stamp and its arrival:
  // a broadcast is accepted up to MESSAGE_LIFETIME s old, so a copy that
  // comes later still is dropped as expired before it gets here.
  const kept = 1000 + MESSAGE_LIFETIME + 1;
  assert.equal(seen.add("a", 1000, kept), false);
  assert.equal(seen.add("a", 1000, kept + 1), true, "forgotten, then new again");
  assert.equal(seen.size, 1, "b went with it");
});

test("the seen-set keeps a key stamped ahead until its own stamp expires", () => {
  const seen = new SeenSet();
  seen.add("ahead", 1030, 1000);
  seen.add("now", 1000, 1000);
  assert.equal(seen.add("ahead", 1030, 1000 + MESSAGE_LIFETIME + 2), false, "stamped 30 s ahead: 30 s longer");
  assert.equal(seen.add("ahead", 1030, 1030 + MESSAGE_LIFETIME + 2), true);
  assert.equal(seen.size, 1, "the one stamped at its arrival went too");
});

// -- the seen-set in a node ---------------------------------------------------------------

test("a broadcast is taken up to MESSAGE_LIFETIME s old or ahead, and no further", async (t) => {
  const { sock, ws } = await linked();
  const second = 1700000000;
  t.mock.method(Date, "now", () => second * 1000 + 999);
  const other = tm.newNodeId();
  const messages = [];
  sock.on("message", (s) => messages.push(s.recv()));
  const stamped = async (offset) =>
    (await codec.WireMessage.create(flags.broadcast, other, second + offset, [flags.broadcast, offset], false)).frame();
  const life = tm.MESSAGE_LIFETIME;
  ws.push(await stamped(-life - 1), await stamped(-life), await stamped(0), await stamped(life), await stamped(life + 1));
  await settle();
  assert.deepEqual(messages.map((m) => m.packets[1]), [-life, 0, life]);
  assert.deepEqual(sock.stats.dropped, { expired: 2 });
  sock.close();
});

test("a broadcast is seen once, whichever form its sender field has", async () => {
  const { sock, ws } = await linked();
  const other = tm.newNodeId();
  const messages = [];
  sock.on("message", (s) => messages.push(s.recv()));
  const time = now();
  const asStr = await codec.WireMessage.create(flags.broadcast, other, time, [flags.broadcast, "once"], false);
  const asBin = await codec.WireMessage.create(flags.broadcast, other, time, [flags.broadcast, "once"], true);
  assert.notEqual(codec.toHex(asStr.checksum), codec.toHex(asBin.checksum), "two frames");
  ws.push(asStr.frame(), asBin.frame());
  await settle();
  assert.equal(messages.length, 1);
  assert.equal(messages[0].id, await asBin.id(), "the ID of the bin form, as twisted_mesh keys it");
  assert.deepEqual(sock.stats.dropped, { duplicate: 1 });
  sock.close();
});

test("a broadcast is relayed once, and a node's own broadcast relayed back is dropped", async () => {
  const { sock, ws } = await linked();
  const second = await join(sock, "ws://127.0.0.1:17/");
  const messages = [];
  sock.on("message", (s) => messages.push(s.recv()));
  const other = tm.newNodeId();
  const hi = await codec.WireMessage.create(flags.broadcast, other, now(), [flags.broadcast, "hi"], false);
  ws.push(hi.frame());
  await settle();
  second.ws.push(hi.frame()); // the mesh brings it by the other way too
  await settle();
  assert.deepEqual((await second.ws.received()).map((m) => m.payload), [[flags.broadcast, "hi"]], "relayed to the other link");
  assert.deepEqual(ws.sent, [], "not relayed back");
  assert.equal(messages.length, 1);
  assert.equal(sock.stats.relayed, 1);

  const id = await sock.send(["mine"]);
  const [mine] = await ws.received();
  assert.equal(await mine.id(), id);
  second.ws.push(mine.frame());
  await settle();
  assert.equal(messages.length, 1, "not delivered to itself");
  assert.equal(sock.stats.relayed, 1, "nor relayed");
  assert.deepEqual(sock.stats.dropped, { duplicate: 2 });
  sock.close();
});
