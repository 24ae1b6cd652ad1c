// The lifetime of a broadcast and the seen-set: what a MeshSocket drops as
// too old, too far ahead, or seen before.

import assert from "node:assert/strict";
import { test } from "node:test";

import { codec, flags, tm } from "../testing/bundle.mjs";
import { linked, now, settle } from "../testing/fake-server.mjs";

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
