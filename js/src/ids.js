// Identifiers: base58, protocol IDs and node IDs (PROTOCOL.md, "Identifiers").

import { sha256Sync, sha384Sync, toHex } from "./hash.js";

const ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const DIGITS = new Map([...ALPHABET].map((char, value) => [char, BigInt(value)]));
const FIFTY_EIGHT = 58n;

/** The protocol version the IDs are made for. */
export const PROTOCOL_VERSION = "0.7";

/** The transports a browser can speak: WebSocket, plain or over TLS. */
export const BROWSER_TRANSPORTS = ["ws", "wss"];

/**
 * Write a non-negative integer (a BigInt) in base58, Bitcoin's alphabet,
 * with no padding: "1" for zero.
 */
export function b58encodeInt(number) {
  if (typeof number !== "bigint" || number < 0n) {
    throw new RangeError("base58 encodes non-negative BigInts only");
  }
  let digits = "";
  do {
    digits = ALPHABET[Number(number % FIFTY_EIGHT)] + digits;
    number /= FIFTY_EIGHT;
  } while (number > 0n);
  return digits;
}

/** Read base58 digits back into a BigInt. */
export function b58decodeInt(text) {
  if (!text) throw new RangeError("empty base58 string");
  let number = 0n;
  for (const char of text) {
    const digit = DIGITS.get(char);
    if (digit === undefined) throw new RangeError(`not a base58 character: ${JSON.stringify(char)}`);
    number = number * FIFTY_EIGHT + digit;
  }
  return number;
}

/** Whether `text` is a non-empty string of base58 digits. */
export function isBase58(text) {
  return typeof text === "string" && text.length > 0 && [...text].every((char) => DIGITS.has(char));
}

function bytesToBigInt(bytes) {
  return bytes.length ? BigInt("0x" + toHex(bytes)) : 0n;
}

/** What a signed network's protocol ID is made of, after the version. */
export const SIGNED_SUFFIX = "+signed";

/**
 * The protocol ID nodes compare in their handshakes:
 * base58(int(sha256(subnet + encryption + "0.7"))), with "+signed" after
 * the version for a signed network (whose nodes prove their keys).
 */
export function protocolId(subnet, encryption, signed = false) {
  const text = subnet + encryption + PROTOCOL_VERSION + (signed ? SIGNED_SUFFIX : "");
  return b58encodeInt(bytesToBigInt(sha256Sync(new TextEncoder().encode(text))));
}

/**
 * The node ID of an Ed25519 public key (its 32 raw bytes), on a signed
 * network: base58(int(sha384(key))), 64 to 66 characters.
 */
export function nodeIdOf(publicKey) {
  return b58encodeInt(bytesToBigInt(sha384Sync(publicKey)));
}

/**
 * A fresh node ID: base58 of 48 random bytes (64 to 66 characters, like the
 * references' SHA-384 IDs; the top bit is set so it is never shorter).
 */
export function newNodeId() {
  const bytes = new Uint8Array(48);
  globalThis.crypto.getRandomValues(bytes);
  bytes[0] |= 0x80;
  return b58encodeInt(bytesToBigInt(bytes));
}

/**
 * The network a node belongs to: an application's subnet, a transport, and
 * whether it is signed.  Only nodes with the same `id` talk.  A browser
 * speaks "ws" (pages served over http) or "wss" (https); the default follows
 * the page.  Options: `signed` (default false): the network's nodes hold
 * Ed25519 keys, their IDs are their keys' and every message is signed (a
 * twisted_mesh node's `Network(subnet, encryption, signed=True)`; see
 * MeshSocket for what a browser needs).
 */
export class Protocol {
  constructor(subnet, encryption, { signed = false } = {}) {
    if (typeof subnet !== "string") throw new TypeError("the subnet must be a string");
    if (encryption === undefined) {
      encryption = globalThis.location && globalThis.location.protocol === "https:" ? "wss" : "ws";
    }
    if (!BROWSER_TRANSPORTS.includes(encryption)) {
      throw new RangeError(
        `a browser node speaks WebSocket only: its encryption must be "ws" or "wss", not ${JSON.stringify(encryption)}`,
      );
    }
    if (typeof signed !== "boolean") throw new TypeError("the signed option must be true or false");
    this.subnet = subnet;
    this.encryption = encryption;
    this.signed = signed;
    this.id = protocolId(subnet, encryption, signed);
    Object.freeze(this);
  }

  toString() {
    const signed = this.signed ? ", {signed: true}" : "";
    return `Protocol(${JSON.stringify(this.subnet)}, ${JSON.stringify(this.encryption)}${signed})`;
  }
}
