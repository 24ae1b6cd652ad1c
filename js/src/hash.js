// SHA-256: WebCrypto where the page has it (secure contexts: https, or
// http on localhost), else a bundled implementation (@noble/hashes), so a
// page served over plain http on a LAN works too.  SHA-384, for the node IDs
// of signed networks, is the bundled one: a few bytes, at once.

import { sha256 as nobleSha256, sha384 as nobleSha384 } from "@noble/hashes/sha2.js";

/** SHA-256 of `bytes`, at once, with the bundled implementation. */
export function sha256Sync(bytes) {
  return nobleSha256(bytes);
}

/** SHA-384 of `bytes`, at once, with the bundled implementation. */
export function sha384Sync(bytes) {
  return nobleSha384(bytes);
}

/** Whether checksums are computed with WebCrypto (else with the bundled code). */
export function hasWebCrypto() {
  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  return Boolean(subtle && typeof subtle.digest === "function");
}

/** SHA-256 of `bytes`: a Promise of 32 bytes. */
export async function sha256(bytes) {
  if (hasWebCrypto()) {
    return new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", bytes));
  }
  return sha256Sync(bytes);
}

/** Lower-case hex of some bytes. */
export function toHex(bytes) {
  let text = "";
  for (const byte of bytes) text += byte.toString(16).padStart(2, "0");
  return text;
}

/** Bytes from hex. */
export function fromHex(text) {
  if (text.length % 2) throw new RangeError("odd-length hex");
  const bytes = new Uint8Array(text.length / 2);
  for (let i = 0; i < bytes.length; i++) {
    const byte = Number.parseInt(text.slice(2 * i, 2 * i + 2), 16);
    if (Number.isNaN(byte)) throw new RangeError("not hex");
    bytes[i] = byte;
  }
  return bytes;
}

/** Whether two byte arrays hold the same bytes. */
export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}
