// Frames: the length header, the checksum, msgpack, and the sender's ID
// form (PROTOCOL.md, "Framing").  No I/O here.
//
//     frame  = uint32_be(len(body)) + body
//     body   = checksum + serial            (this client agrees to no compression)
//     serial = msgpack([msg_type, sender, time, ...payload])
//     checksum = sha256(serial)

import { Decoder, Encoder } from "@msgpack/msgpack";

import { equalBytes, sha256, toHex } from "./hash.js";

/** The largest body a frame may announce, by default (as twisted_mesh's). */
export const MAX_FRAME_SIZE = 16 * 1024 * 1024;

const CHECKSUM_SIZE = 32;
const HEADER_SIZE = 4;

/** A frame that cannot be accepted: its message says why. */
export class FrameError extends Error {
  constructor(message) {
    super(message);
    this.name = "FrameError";
  }
}

/** A frame that announced more than the size limit. */
export class FrameTooLarge extends FrameError {
  constructor(message) {
    super(message);
    this.name = "FrameTooLarge";
  }
}

/** A body whose checksum does not hold (compressed, or damaged). */
export class ChecksumError extends FrameError {
  constructor(message) {
    super(message);
    this.name = "ChecksumError";
  }
}

// Extension types are not part of the protocol: twisted_mesh drops frames
// that carry one, so this client neither writes nor reads them.
const noExtensions = {
  tryToEncode() {
    return null;
  },
  decode(data, type) {
    throw new FrameError(`msgpack extension type ${type} is not allowed`);
  },
};

const encoder = new Encoder({ extensionCodec: noExtensions });
const decoder = new Decoder({ extensionCodec: noExtensions });

/**
 * Check that `value` is something the protocol carries, and return it with
 * ArrayBuffers turned into Uint8Arrays: null, booleans, numbers, strings
 * (msgpack str), byte arrays (msgpack bin), arrays, and plain objects with
 * string keys (msgpack maps).
 */
export function checkPacket(value, depth = 0) {
  if (depth > 100) throw new TypeError("packets nest too deeply");
  if (value === null || value === undefined) return null;
  switch (typeof value) {
    case "boolean":
    case "number":
    case "string":
      return value;
    case "object":
      break;
    default:
      throw new TypeError(`a packet cannot hold a ${typeof value}`);
  }
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) {
    return value instanceof Uint8Array ? value : new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (Array.isArray(value)) return value.map((item) => checkPacket(item, depth + 1));
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) {
    throw new TypeError(`a packet cannot hold a ${Object.prototype.toString.call(value)}: use arrays, plain objects, strings, numbers or bytes`);
  }
  const copy = {};
  for (const [key, item] of Object.entries(value)) copy[key] = checkPacket(item, depth + 1);
  return copy;
}

/** msgpack with str and bin kept apart: strings as str, byte arrays as bin. */
export function pack(value) {
  return encoder.encode(value);
}

/** Read one msgpack value: str as strings, bin as Uint8Arrays. */
export function unpack(bytes) {
  try {
    return decoder.decode(bytes);
  } catch (error) {
    if (error instanceof FrameError) throw error;
    throw new FrameError(`bad msgpack: ${error.message}`);
  }
}

const ascii = new TextEncoder();
const asciiDecoder = new TextDecoder("utf-8", { fatal: false });

/** An ID field (bin or str) as text, or null when it is neither. */
export function idText(value) {
  if (typeof value === "string") return value.length && /^[\x00-\x7f]+$/.test(value) ? value : null;
  if (value instanceof Uint8Array) {
    if (!value.length || value.some((byte) => byte > 0x7f)) return null;
    return asciiDecoder.decode(value);
  }
  return null;
}

/** An ID in the wire form a peer speaks: bin (Uint8Array) or str. */
export function wireId(id, asBin) {
  return asBin ? ascii.encode(id) : id;
}

/**
 * Where the sender field lies in a serial: the offset of its msgpack tag and
 * the offset just past it.
 */
export function senderSpan(serial) {
  const lead = serial[0];
  let at;
  if (lead >= 0x90 && lead <= 0x9f) at = 1;
  else if (lead === 0xdc) at = 3;
  else if (lead === 0xdd) at = 5;
  else throw new FrameError("a message must be a msgpack array");
  if (serial[at] > 0x7f) throw new FrameError("bad message type");
  const start = at + 1;
  const tag = serial[start];
  const view = new DataView(serial.buffer, serial.byteOffset, serial.byteLength);
  if (tag >= 0xa0 && tag <= 0xbf) return [start, start + 1 + (tag & 0x1f)];
  if (tag === 0xc4 || tag === 0xd9) return [start, start + 2 + serial[start + 1]];
  if (tag === 0xc5 || tag === 0xda) return [start, start + 3 + view.getUint16(start + 1)];
  if (tag === 0xc6 || tag === 0xdb) return [start, start + 5 + view.getUint32(start + 1)];
  throw new FrameError("the sender must be bin or str");
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** `uint32_be(len(body)) + body`. */
export function frameOf(body) {
  const frame = new Uint8Array(HEADER_SIZE + body.length);
  new DataView(frame.buffer).setUint32(0, body.length);
  frame.set(body, HEADER_SIZE);
  return frame;
}

/**
 * One message as it travels: its fields, and the bytes it arrived as (or
 * was made as).  Build one with `WireMessage.create` or `WireMessage.fromBody`.
 */
export class WireMessage {
  constructor(msgType, sender, time, payload, serial, checksum, senderIsBin) {
    /** The main flag. */
    this.msgType = msgType;
    /** The originator's node ID, as text. */
    this.sender = sender;
    /** The originator's UTC timestamp, in whole seconds. */
    this.time = time;
    /** The packets after the time field, sub-flag first. */
    this.payload = payload;
    /** Whether the sender field is bin (py2p's form) rather than str. */
    this.senderIsBin = senderIsBin;
    /** The serial, as made or received. */
    this.serial = serial;
    /** sha256(serial). */
    this.checksum = checksum;
    this._key = senderIsBin ? checksum : null;
  }

  /** Make a new message: a Promise of a WireMessage. */
  static async create(msgType, sender, time, payload, senderIsBin = false) {
    const serial = pack([msgType, wireId(sender, senderIsBin), time, ...payload]);
    return new WireMessage(msgType, sender, time, payload, serial, await sha256(serial), senderIsBin);
  }

  /**
   * Read a received body (the bytes after the length header): check its
   * checksum and decode it.  A Promise; it fails with a ChecksumError when
   * the checksum does not hold (a compressed body, say), and with a
   * FrameError when the message is malformed.
   */
  static async fromBody(body) {
    if (body.length < CHECKSUM_SIZE + 1) throw new ChecksumError("a body shorter than its checksum");
    const checksum = body.slice(0, CHECKSUM_SIZE);
    const serial = body.slice(CHECKSUM_SIZE);
    if (!equalBytes(await sha256(serial), checksum)) throw new ChecksumError("checksum mismatch");
    const fields = unpack(serial);
    if (!Array.isArray(fields) || fields.length < 4) throw new FrameError("a message must be an array of at least 4 fields");
    const [msgType, senderField, time, ...payload] = fields;
    if (!Number.isInteger(msgType) || msgType < 0 || msgType > 0x7f) throw new FrameError(`bad message type ${msgType}`);
    const sender = idText(senderField);
    if (sender === null) throw new FrameError("bad sender field");
    if (!Number.isInteger(time)) throw new FrameError("bad time field");
    senderSpan(serial);
    return new WireMessage(msgType, sender, time, payload, serial, checksum, senderField instanceof Uint8Array);
  }

  /**
   * The message's identity whatever the form of its sender field: the
   * checksum of its bin form (as twisted_mesh's seen-set keys it).  A
   * Promise of 32 bytes.
   */
  async key() {
    if (this._key === null) {
      const [start, end] = senderSpan(this.serial);
      const bin = concat(this.serial.subarray(0, start), pack(ascii.encode(this.sender)), this.serial.subarray(end));
      this._key = await sha256(bin);
    }
    return this._key;
  }

  /** The message ID as hex: the same on every node. */
  async id() {
    return toHex(await this.key());
  }

  /** The whole frame, as made or received (never compressed). */
  frame() {
    return frameOf(concat(this.checksum, this.serial));
  }
}

/**
 * Cut a byte stream into frame bodies, whatever the chunks it arrives in;
 * a header that announces more than `maxSize` throws FrameTooLarge before
 * anything is buffered for it.
 */
export class FrameReader {
  constructor(maxSize = MAX_FRAME_SIZE) {
    this.maxSize = maxSize;
    this._buffer = new Uint8Array(0);
  }

  /** Take the next bytes of the stream; return the bodies they complete. */
  feed(data) {
    const buffer = this._buffer.length ? concat(this._buffer, data) : data;
    const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    const bodies = [];
    let at = 0;
    while (buffer.length - at >= HEADER_SIZE) {
      const length = view.getUint32(at);
      if (length > this.maxSize) {
        throw new FrameTooLarge(`a frame announced ${length} bytes, more than the limit of ${this.maxSize}`);
      }
      const end = at + HEADER_SIZE + length;
      if (end > buffer.length) break;
      bodies.push(buffer.slice(at + HEADER_SIZE, end));
      at = end;
    }
    this._buffer = buffer.slice(at);
    return bodies;
  }

  /** How many bytes of an incomplete frame are held. */
  get buffered() {
    return this._buffer.length;
  }
}
