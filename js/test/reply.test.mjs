// Replies: a message's reply() whispers to its sender when the sender is a
// peer, on that peer's link alone, and fails with NotConnected otherwise.

import assert from "node:assert/strict";
import { test } from "node:test";

import { codec, flags, tm } from "../testing/bundle.mjs";
import { FakeWebSocket, join, linked, nextEvent, now, settle } from "../testing/fake-server.mjs";

/** The next message `sock` delivers once `frames` arrive on `ws`. */
async function delivered(sock, ws, ...frames) {
  const message = nextEvent(sock, "message");
  ws.push(...frames);
  await message;
  return sock.recv();
}

test("a reply to a peer goes on that peer's link alone, as a whisper", async () => {
  const { sock, ws, server } = await linked();
  const second = await join(sock, "ws://127.0.0.1:18/");
  const psst = await codec.WireMessage.create(flags.whisper, second.server, now(), [flags.whisper, "psst"], false);
  const msg = await delivered(sock, second.ws, psst.frame());
  assert.equal(msg.sender, second.server);
  const id = await msg.reply(["back", 1]);
  const [reply] = await second.ws.received();
  assert.equal(reply.msgType, flags.whisper);
  assert.deepEqual(reply.payload, [flags.whisper, "back", 1]);
  assert.equal(reply.sender, sock.id);
  assert.equal(await reply.id(), id);
  assert.deepEqual(ws.sent, [], `nothing for ${server}`);
  // Checked as send() checks: nothing written.
  await assert.rejects(msg.reply("back"), TypeError);
  await assert.rejects(msg.reply([() => 1]), TypeError);
  assert.equal(second.ws.sent.length, 1);
  sock.close();
});

test("a reply to a node that is not a peer fails with NotConnected, and nothing is written", async () => {
  const { sock, ws } = await linked();
  const second = await join(sock, "ws://127.0.0.1:19/");
  const other = tm.newNodeId();
  const hi = await codec.WireMessage.create(flags.broadcast, other, now(), [flags.broadcast, "hi"], false);
  const msg = await delivered(sock, ws, hi.frame());
  second.ws.sent.length = 0; // the relayed broadcast
  await assert.rejects(msg.reply(["back"]), (error) => {
    assert.ok(error instanceof tm.NotConnected);
    assert.match(error.message, new RegExp(`not connected to ${other}: .*broadcast instead`));
    return true;
  });
  await settle();
  assert.deepEqual([ws.sent, second.ws.sent], [[], []]);
  sock.close();
});

test("a reply to a peer that has left fails with NotConnected", async () => {
  const { sock, ws, server } = await linked();
  const psst = await codec.WireMessage.create(flags.whisper, server, now(), [flags.whisper, "psst"], false);
  const msg = await delivered(sock, ws, psst.frame());
  ws.close(1006);
  await settle();
  assert.equal(sock.routing_table.size, 0);
  await assert.rejects(msg.reply(["too late"]), (error) => error instanceof tm.NotConnected && /not connected to/.test(error.message));
  sock.close();
});

test("a sender written as bin is the peer's ID as text: the reply finds its link, and says str", async () => {
  const protocol = new tm.Protocol("mesh", "ws");
  const sock = new tm.MeshSocket(protocol, { WebSocket: FakeWebSocket, reconnect: false, log: () => {} });
  const connected = sock.connect("ws://127.0.0.1:20/");
  await settle();
  const ws = FakeWebSocket.last;
  // A py2p-style server: every ID as bin, its handshake and its messages alike.
  const server = tm.newNodeId();
  const bin = (text) => new TextEncoder().encode(text);
  const shake = [flags.handshake, bin(server), bin(protocol.id), [bin("127.0.0.1"), 4444], []];
  ws.push((await codec.WireMessage.create(flags.whisper, server, now(), shake, true)).frame());
  assert.equal(await connected, server);
  assert.equal(sock.routing_table.get(server).peer_ids_as_bin, true);
  await settle();
  ws.sent.length = 0;
  const psst = await codec.WireMessage.create(flags.whisper, server, now(), [flags.whisper, "psst"], true);
  assert.equal(psst.senderIsBin, true);
  const msg = await delivered(sock, ws, psst.frame());
  assert.equal(typeof msg.sender, "string");
  assert.equal(msg.sender, server);
  await msg.reply(["back"]);
  const [reply] = await ws.received();
  assert.equal(reply.senderIsBin, false, "this node writes its own ID as str, as js2p does; twisted_mesh reads either");
  assert.equal(reply.sender, sock.id);
  assert.deepEqual(reply.payload, [flags.whisper, "back"]);
  sock.close();
});
