// The signatures of a signed network: the handshake's proof of the key, and
// the signature every message carries at its end.  No I/O here.
//
//     proof     = sign(PROOF_CONTEXT + msgpack([protocol_id, role, signer_id, checker_id,
//                                             signer_address, signer_nonce, checker_nonce, binding]))
//     serial S  = msgpack([msg_type, sender (bin), time, *payload, public_key (bin 32), signature (bin 64)])
//     signature = sign(MESSAGE_CONTEXT + msgpack(subnet) + S[:-64])
//
// (msgpack(subnet): the subnet as a msgpack str.)  The signed serial has its sender as bin (py2p's form, which twisted_mesh
// keys its seen-set by): this node makes its messages in that form, so the
// bytes it sends are the bytes it signed, and reads a message whose sender
// came as str by rewriting it to bin (WireMessage.binSerial).

import { WireMessage, checkBodySize, concat, pack } from "./frames.js";
import { sha256, toHex } from "./hash.js";
import { nodeIdOf } from "./ids.js";

const ascii = new TextEncoder();

/** What a handshake's proof signs first. */
export const PROOF_CONTEXT = ascii.encode("twisted-mesh/0.7 handshake proof\x00");

/** What a message's signature signs first. */
export const MESSAGE_CONTEXT = ascii.encode("twisted-mesh/0.7 message\x00");

/** The sub-flag of a renegotiation that carries a handshake's proof. */
export const PROOF = 0x12;

/** Bytes in an Ed25519 public key, and in a handshake's nonce. */
export const KEY_SIZE = 32;

/** Bytes in an Ed25519 signature. */
export const SIGNATURE_SIZE = 64;

const ED25519 = { name: "Ed25519" };

/** Why a message's signature does not hold, by the reason it is counted under (as twisted_mesh counts it). */
export const UNVERIFIED = Object.freeze({
  unsigned: "it carries no key and signature where they go",
  wrong_key: "its key is not the sender's (the sender's ID is not that key's)",
  bad_signature: "its signature does not hold (forged, or altered on the way)",
});

/** Public keys imported for verifying, at most (the oldest go first). */
const KEY_CACHE_SIZE = 256;

/**
 * What a proof signs: the context, then in msgpack the terms of the link as
 * the node that signs sees it (twisted_mesh's ProofTerms): the protocol ID;
 * its role, "dialler" or "dialled"; its node ID and that of the node it
 * proves its key to; the address its handshake gave ([host, port], or null
 * for a node that cannot be dialled, as a browser); its nonce and the other
 * node's; and the TLS session's keying material a TLS link binds (empty: a
 * browser cannot export it, and binds nothing).  The checker finds its own
 * ID and nonce there, and the other role than its own.
 */
export function proofData({ protocolId, signerDialled, signerId, checkerId, signerAddress, signerNonce, checkerNonce }) {
  const role = signerDialled ? "dialled" : "dialler";
  const terms = [protocolId, role, signerId, checkerId, signerAddress, signerNonce, checkerNonce, new Uint8Array(0)];
  return concat(PROOF_CONTEXT, pack(terms));
}

/** What a message's signature signs, `unsigned` being its serial but the signature's 64 bytes. */
export function messageData(subnet, unsigned) {
  return concat(MESSAGE_CONTEXT, pack(subnet), unsigned);
}

/**
 * A new message of the node whose key is `key` (a NodeKey), signed for the
 * network `subnet`: a Promise of a WireMessage with its sender as bin.  It
 * fails with a RangeError when its body would be larger than `maxSize`
 * bytes (key and signature included).
 */
export async function signedMessage(key, subnet, msgType, time, payload, maxSize = Infinity) {
  const serial = pack([msgType, ascii.encode(key.id), time, ...payload, key.publicKey, new Uint8Array(SIGNATURE_SIZE)]);
  checkBodySize(serial, maxSize);
  const unsigned = serial.subarray(0, serial.length - SIGNATURE_SIZE);
  serial.set(await key.sign(messageData(subnet, unsigned)), unsigned.length);
  return new WireMessage(msgType, key.id, time, payload, serial, await sha256(serial), true);
}

/**
 * Checks the signatures of what one node receives: the proofs of its peers'
 * handshakes, and the signature of each message, with the public keys it
 * has seen imported once.
 */
export class Verifier {
  /** For a node of the network `subnet`. */
  constructor(subnet) {
    this.subnet = subnet;
    // hex of a public key -> {id, key: Promise of its CryptoKey}
    this._keys = new Map();
  }

  /** Whether `signature` is `publicKey`'s (32 bytes) over `data`: a Promise. */
  async verify(publicKey, signature, data) {
    const entry = this._entry(publicKey);
    try {
      return await globalThis.crypto.subtle.verify(ED25519, await entry.key, signature, data);
    } catch {
      // A key WebCrypto refuses (not a point of the curve) verifies nothing.
      return false;
    }
  }

  /** The node ID of `publicKey`, computed once. */
  idOf(publicKey) {
    return this._entry(publicKey).id;
  }

  _entry(publicKey) {
    const hex = toHex(publicKey);
    let entry = this._keys.get(hex);
    if (entry === undefined) {
      if (this._keys.size >= KEY_CACHE_SIZE) this._keys.delete(this._keys.keys().next().value);
      const key = globalThis.crypto.subtle.importKey("raw", publicKey, ED25519, false, ["verify"]);
      key.catch(() => {});
      entry = { id: nodeIdOf(publicKey), key };
      this._keys.set(hex, entry);
    }
    return entry;
  }

  /**
   * Check the signature at the end of `msg` (a WireMessage read off a
   * link): a Promise of null when it holds, with the key and signature then
   * taken off `msg.payload` (the user sees the payload as ever), else of why
   * not: "unsigned", "wrong_key" or "bad_signature" (see UNVERIFIED).
   */
  async check(msg) {
    const payload = msg.payload;
    if (payload.length < 2) return "unsigned";
    const [publicKey, signature] = payload.slice(-2);
    if (!(publicKey instanceof Uint8Array) || publicKey.length !== KEY_SIZE) return "unsigned";
    if (!(signature instanceof Uint8Array) || signature.length !== SIGNATURE_SIZE) return "unsigned";
    const serial = msg.binSerial();
    const end = serial.length - SIGNATURE_SIZE;
    // (The signature as bin 8, the serial's last 64 bytes.)
    if (serial[end - 2] !== 0xc4 || serial[end - 1] !== SIGNATURE_SIZE) return "unsigned";
    if (this.idOf(publicKey) !== msg.sender) return "wrong_key";
    if (!(await this.verify(publicKey, signature, messageData(this.subnet, serial.subarray(0, end))))) {
      return "bad_signature";
    }
    msg.payload = payload.slice(0, -2);
    return null;
  }
}
