// twisted_mesh.js: a browser node of the p2p-today 0.7 mesh, for
// twisted_mesh server nodes.  The bundle exposes everything here as the
// global `twisted_mesh`.

export { flags } from "./flags.js";
export { Protocol, protocolId, newNodeId, nodeIdOf, b58encodeInt, b58decodeInt, PROTOCOL_VERSION } from "./ids.js";
export { NodeKey, loadNodeKey, KEY_STORE } from "./keys.js";
export { MeshSocket } from "./socket.js";
export { MAX_SEND_BUFFER, DRAINED_BUFFER } from "./outbox.js";
export { Message } from "./message.js";
export { ProtocolMismatch, HandshakeFailed, NotConnected, SendBufferFull, SignedUnsupported } from "./errors.js";
export { MESSAGE_LIFETIME } from "./seen.js";
export { HANDSHAKE_TIMEOUT } from "./link.js";

import * as frames from "./frames.js";
import * as hash from "./hash.js";
import * as signing from "./signing.js";

/** The frame codec, for tests and tools: no I/O. */
export const codec = Object.freeze({
  MAX_FRAME_SIZE: frames.MAX_FRAME_SIZE,
  MAX_DEPTH: frames.MAX_DEPTH,
  MAX_ITEMS: frames.MAX_ITEMS,
  FrameError: frames.FrameError,
  FrameTooLarge: frames.FrameTooLarge,
  ChecksumError: frames.ChecksumError,
  WireMessage: frames.WireMessage,
  FrameReader: frames.FrameReader,
  pack: frames.pack,
  unpack: frames.unpack,
  checkPacket: frames.checkPacket,
  senderSpan: frames.senderSpan,
  frameOf: frames.frameOf,
  sha256: hash.sha256,
  sha256Sync: hash.sha256Sync,
  hasWebCrypto: hash.hasWebCrypto,
  toHex: hash.toHex,
  fromHex: hash.fromHex,
});

/** The signatures of signed networks, for tests and tools: no I/O. */
export const signatures = Object.freeze({
  PROOF: signing.PROOF,
  PROOF_CONTEXT: signing.PROOF_CONTEXT,
  MESSAGE_CONTEXT: signing.MESSAGE_CONTEXT,
  proofData: signing.proofData,
  messageData: signing.messageData,
  signedMessage: signing.signedMessage,
  Verifier: signing.Verifier,
});

/** The version of this client. */
export const version = "0.1.0";
