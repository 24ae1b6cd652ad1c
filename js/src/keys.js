// A node's Ed25519 key on a signed network (WebCrypto), and the page storage
// that keeps it across reloads.
//
// Where the key is kept: IndexedDB, as a CryptoKey pair whose private key is
// not extractable.  IndexedDB stores CryptoKeys as they are (structured
// clone), so the page signs with a key that its own script cannot read out:
// a script injected into the page may sign while the page is open, but
// cannot carry the key away.  localStorage holds strings only, so it would
// need the private key exported, readable by any script of the origin.
//
// One key for each slot of a store: a page takes the first slot no other
// page of the origin holds (a Web Lock held while it lives), so two tabs
// never speak with one ID, and a page that reloads takes its slot, and its
// ID, again.

import { SignedUnsupported } from "./errors.js";
import { nodeIdOf } from "./ids.js";

/** The default name of the IndexedDB database that keeps a page's keys. */
export const KEY_STORE = "twisted_mesh-keys";

/** The most slots a store has: pages open at once with a kept ID each. */
const MAX_SLOTS = 16;

const ED25519 = { name: "Ed25519" };

// PKCS#8 of an Ed25519 private key, before its 32-byte seed (RFC 8410).
const PKCS8_PREFIX = new Uint8Array([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]);

function subtle() {
  const crypto = globalThis.crypto;
  if (!crypto || !crypto.subtle) {
    throw new SignedUnsupported(
      "WebCrypto (crypto.subtle) is missing: the page is not a secure context (plain http from a host other than localhost)",
    );
  }
  return crypto.subtle;
}

function base64UrlBytes(text) {
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(binary, (char) => char.charCodeAt(0));
}

/** Throw SignedUnsupported when the page has no WebCrypto (not a secure context). */
export function requireWebCrypto() {
  subtle();
}

/** WebCrypto's Ed25519 key pair: fails with SignedUnsupported when the browser has no Ed25519. */
async function generatePair() {
  try {
    return await subtle().generateKey(ED25519, false, ["sign", "verify"]);
  } catch (error) {
    if (error instanceof SignedUnsupported) throw error;
    throw new SignedUnsupported(`its WebCrypto has no Ed25519 (${error.name}: ${error.message})`);
  }
}

/**
 * A node's Ed25519 key: its private key (a CryptoKey) and its public key
 * (32 raw bytes), and the node ID they give.  Build one with
 * `NodeKey.generate()`, `NodeKey.fromSeed(seed)`, `NodeKey.fromCryptoKeyPair(pair)`
 * or `loadNodeKey(store)`.
 */
export class NodeKey {
  constructor(privateKey, publicKey) {
    /** The private key: a WebCrypto CryptoKey, for signing. */
    this.privateKey = privateKey;
    /** The public key: 32 bytes. */
    this.publicKey = publicKey;
    /** The node ID the key gives: base58(int(sha384(publicKey))). */
    this.id = nodeIdOf(publicKey);
    Object.freeze(this);
  }

  /** A fresh key whose private key cannot be exported: a Promise. */
  static async generate() {
    return NodeKey.fromCryptoKeyPair(await generatePair());
  }

  /**
   * The key of a 32-byte Ed25519 seed (the private key's raw bytes, as
   * `cryptography`'s `private_bytes_raw()` gives them): a Promise.
   */
  static async fromSeed(seed) {
    if (!(seed instanceof Uint8Array) || seed.length !== 32) throw new TypeError("an Ed25519 seed is 32 bytes");
    const pkcs8 = new Uint8Array(PKCS8_PREFIX.length + 32);
    pkcs8.set(PKCS8_PREFIX);
    pkcs8.set(seed, PKCS8_PREFIX.length);
    let jwk, privateKey;
    try {
      // Imported once to read the public key off it, once to keep.
      jwk = await subtle().exportKey("jwk", await subtle().importKey("pkcs8", pkcs8, ED25519, true, ["sign"]));
      privateKey = await subtle().importKey("pkcs8", pkcs8, ED25519, false, ["sign"]);
    } catch (error) {
      if (error instanceof SignedUnsupported) throw error;
      throw new SignedUnsupported(`its WebCrypto has no Ed25519 (${error.name}: ${error.message})`);
    }
    return new NodeKey(privateKey, base64UrlBytes(jwk.x));
  }

  /** The key of a WebCrypto Ed25519 key pair (`{privateKey, publicKey}`): a Promise. */
  static async fromCryptoKeyPair(pair) {
    return new NodeKey(pair.privateKey, new Uint8Array(await subtle().exportKey("raw", pair.publicKey)));
  }

  /** The Ed25519 signature of `data`: a Promise of 64 bytes. */
  async sign(data) {
    return new Uint8Array(await subtle().sign(ED25519, this.privateKey, data));
  }

  toString() {
    return `NodeKey(${this.id.slice(0, 10)}…)`;
  }
}

// -- the page's storage ----------------------------------------------------

function requested(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function openDatabase(name) {
  const request = globalThis.indexedDB.open(name, 1);
  request.onupgradeneeded = () => request.result.createObjectStore("keys");
  return requested(request);
}

/**
 * Take the first free slot of the store `name`: a Web Lock held until
 * `release()` (or until the page goes).  `{slot, release}`, slot 0 where
 * the browser has no Web Locks; null when every slot is held.
 */
async function claimSlot(name) {
  const locks = globalThis.navigator && globalThis.navigator.locks;
  if (!locks) return { slot: 0, release() {} };
  for (let slot = 0; slot < MAX_SLOTS; slot++) {
    let release;
    const held = new Promise((resolve) => (release = resolve));
    const taken = await new Promise((resolve, reject) => {
      locks
        .request(`${name}/${slot}`, { ifAvailable: true }, (lock) => {
          resolve(lock !== null);
          return lock === null ? undefined : held;
        })
        .catch(reject);
    });
    if (taken) return { slot, release };
  }
  return null;
}

/**
 * The key the page keeps in the IndexedDB database `name`, made and kept
 * the first time: a Promise of `{key, release, kept}`.  `release()` lets
 * another page take the key's slot; `kept` is false when the key is a fresh
 * one that is not kept (no IndexedDB, as in Node; every slot held; or a
 * storage that fails, as in some private windows).
 */
export async function loadNodeKey(name = KEY_STORE) {
  if (!globalThis.indexedDB) return { key: await NodeKey.generate(), release() {}, kept: false };
  let claim = null;
  try {
    claim = await claimSlot(name);
    if (claim === null) return { key: await NodeKey.generate(), release() {}, kept: false };
    const db = await openDatabase(name);
    try {
      let pair = await requested(db.transaction("keys").objectStore("keys").get(claim.slot));
      if (!pair) {
        const fresh = await generatePair();
        // Another page may have kept one meanwhile: the first kept wins.
        const store = db.transaction("keys", "readwrite").objectStore("keys");
        pair = (await requested(store.get(claim.slot))) || fresh;
        if (pair === fresh) await requested(store.add(fresh, claim.slot));
      }
      return { key: await NodeKey.fromCryptoKeyPair(pair), release: claim.release, kept: true };
    } finally {
      db.close();
    }
  } catch (error) {
    if (claim !== null) claim.release();
    if (error instanceof SignedUnsupported) throw error;
    return { key: await NodeKey.generate(), release() {}, kept: false, error };
  }
}
