// Frames: the length header, the checksum, msgpack, and the sender's ID
// form (PROTOCOL.md, "Framing").  No I/O here.
//
//     frame  = uint32_be(len(body)) + body
//     body   = checksum + serial            (this client agrees to no compression)
//     serial = msgpack([msg_type, sender, time, ...payload])
//     checksum = sha256(serial)

import { Encoder } from "@msgpack/msgpack";

import { equalBytes, sha256, toHex } from "./hash.js";

/** The largest body a frame may announce, by default (as twisted_mesh's). */
export const MAX_FRAME_SIZE = 16 * 1024 * 1024;

/**
 * How deeply lists and maps may nest in a message that a twisted_mesh node
 * reads, by default (its Limits.max_depth): the message is at depth 0, the
 * payload's lists and maps at depth 1, and none may be at depth MAX_DEPTH.
 */
export const MAX_DEPTH = 32;

/** The most items one list or map of a message may hold (Limits.max_items). */
export const MAX_ITEMS = 1000000;

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

/**
 * Check that `value` is something the protocol carries, and return it with
 * ArrayBuffers turned into Uint8Arrays: null, booleans, numbers, strings
 * (msgpack str), byte arrays (msgpack bin), arrays, and plain objects with
 * string keys (msgpack maps).  `depth` is where `value` lies in the message
 * (a packet of the payload: 1).  Lists and maps must fit twisted_mesh's
 * default limits, or its nodes would close the link on the message: a
 * TypeError when they nest too deeply (MAX_DEPTH), a RangeError when one
 * holds more than MAX_ITEMS items, or when the message holds more than
 * MAX_ITEMS lists and maps in all (`budget.left` of them are left, for the
 * packets of one message).
 */
export function checkPacket(value, depth = 1, budget = { left: MAX_ITEMS - 1 }) {
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
  if (Array.isArray(value)) {
    checkContainer(value.length, depth, budget);
    return value.map((item) => checkPacket(item, depth + 1, budget));
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) {
    throw new TypeError(`a packet cannot hold a ${Object.prototype.toString.call(value)}: use arrays, plain objects, strings, numbers or bytes`);
  }
  const entries = Object.entries(value);
  checkContainer(entries.length, depth, budget);
  const copy = {};
  for (const [key, item] of entries) setEntry(copy, key, checkPacket(item, depth + 1, budget));
  return copy;
}

/** Refuse a list or map of `size` items at `depth` that a node would not read. */
function checkContainer(size, depth, budget) {
  budget.left -= 1;
  if (budget.left < 0) {
    throw new RangeError(`more than ${MAX_ITEMS} lists and maps in one message: twisted_mesh nodes read at most ${MAX_ITEMS}`);
  }
  if (depth >= MAX_DEPTH) {
    throw new TypeError(`packets nest too deeply: twisted_mesh nodes read lists and maps nested up to ${MAX_DEPTH - 1} deep in a message`);
  }
  if (size > MAX_ITEMS) {
    throw new RangeError(`a list or map of ${size} items: twisted_mesh nodes read at most ${MAX_ITEMS}`);
  }
}

/**
 * `object[key] = value`, where the key "__proto__" makes an own property (as
 * JSON.parse makes it) and never changes the object's prototype.
 */
function setEntry(object, key, value) {
  if (key === "__proto__") {
    Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
  } else {
    object[key] = value;
  }
}

/** msgpack with str and bin kept apart: strings as str, byte arrays as bin. */
export function pack(value) {
  return encoder.encode(value);
}

/**
 * Read one msgpack value: str as strings, bin as Uint8Arrays, ints and
 * floats as numbers, maps as plain objects.  Map keys are read as Python
 * peers read them (any scalar; they relay what they read), made strings: a
 * str as it is, a bin as UTF-8 text (bytes that are not UTF-8 as U+FFFD),
 * nil, a boolean or a number as `String(key)`; "__proto__" is an own
 * property.  Keys that become the same string keep the last value.  A
 * FrameError for what a Python peer would refuse too: malformed or trailing
 * data, a str that is not UTF-8, an extension type, an array or map as a
 * map key, or lists and maps nested deeper than msgpack for Python reads.
 */
export function unpack(bytes) {
  if (!(bytes instanceof Uint8Array)) bytes = new Uint8Array(bytes);
  const reader = new MsgpackReader(bytes);
  let value;
  try {
    value = reader.value(0);
  } catch (error) {
    if (error instanceof FrameError) throw error;
    throw new FrameError(`bad msgpack: ${error.message}`);
  }
  if (reader.at !== bytes.length) throw new FrameError(`bad msgpack: ${bytes.length - reader.at} bytes after the value`);
  return value;
}

// Not @msgpack/msgpack's Decoder: it refuses map keys other than strings and
// numbers, and the key "__proto__", all of which twisted_mesh reads
// (strict_map_key=False) and relays, so that one such message was a bad
// frame and closed the link.

/** How deeply msgpack for Python nests lists and maps (its C reader's stack). */
const MAX_READ_DEPTH = 1024;

// (ignoreBOM: a str that starts with U+FEFF keeps it, as Python keeps it.)
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const lenientUtf8 = new TextDecoder("utf-8", { ignoreBOM: true });

/** A reader of one msgpack value, `at` the offset of the next byte. */
class MsgpackReader {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.at = 0;
  }

  /** Pass the next `size` bytes: return their offset. */
  take(size) {
    const at = this.at;
    if (size > this.bytes.length - at) throw new FrameError("bad msgpack: the data ends too soon");
    this.at = at + size;
    return at;
  }

  u8() {
    return this.bytes[this.take(1)];
  }

  u16() {
    return this.view.getUint16(this.take(2));
  }

  u32() {
    return this.view.getUint32(this.take(4));
  }

  /** The next value, inside `depth` lists and maps. */
  value(depth) {
    const tag = this.u8();
    if (tag <= 0x7f) return tag;
    if (tag >= 0xe0) return tag - 0x100;
    if (tag <= 0x8f) return this.map(tag & 0x0f, depth);
    if (tag <= 0x9f) return this.array(tag & 0x0f, depth);
    if (tag <= 0xbf) return this.str(tag & 0x1f);
    const view = this.view;
    switch (tag) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return this.bin(this.u8());
      case 0xc5:
        return this.bin(this.u16());
      case 0xc6:
        return this.bin(this.u32());
      case 0xca:
        return view.getFloat32(this.take(4));
      case 0xcb:
        return view.getFloat64(this.take(8));
      case 0xcc:
        return this.u8();
      case 0xcd:
        return this.u16();
      case 0xce:
        return this.u32();
      case 0xcf: {
        // Beyond 2 ** 53 a number is the nearest double, as @msgpack/msgpack reads it.
        const at = this.take(8);
        return view.getUint32(at) * 2 ** 32 + view.getUint32(at + 4);
      }
      case 0xd0:
        return view.getInt8(this.take(1));
      case 0xd1:
        return view.getInt16(this.take(2));
      case 0xd2:
        return view.getInt32(this.take(4));
      case 0xd3: {
        const at = this.take(8);
        return view.getInt32(at) * 2 ** 32 + view.getUint32(at + 4);
      }
      case 0xd9:
        return this.str(this.u8());
      case 0xda:
        return this.str(this.u16());
      case 0xdb:
        return this.str(this.u32());
      case 0xdc:
        return this.array(this.u16(), depth);
      case 0xdd:
        return this.array(this.u32(), depth);
      case 0xde:
        return this.map(this.u16(), depth);
      case 0xdf:
        return this.map(this.u32(), depth);
      case 0xc1:
        throw new FrameError("bad msgpack: the unused type byte 0xc1");
      default:
        throw new FrameError(`msgpack extension type ${this.extType(tag)} is not allowed`);
    }
  }

  str(size) {
    const at = this.take(size);
    return strictUtf8.decode(this.bytes.subarray(at, at + size));
  }

  bin(size) {
    const at = this.take(size);
    return this.bytes.slice(at, at + size);
  }

  /** The type of an extension (fixext 0xd4-0xd8, ext 0xc7-0xc9). */
  extType(tag) {
    if (tag === 0xc7) this.u8();
    else if (tag === 0xc8) this.u16();
    else if (tag === 0xc9) this.u32();
    return this.view.getInt8(this.take(1));
  }

  /** Enter a list or map of `items` values; each takes one byte at least. */
  enter(items, depth) {
    if (depth >= MAX_READ_DEPTH) throw new FrameError(`bad msgpack: lists and maps nest deeper than ${MAX_READ_DEPTH}`);
    if (items > this.bytes.length - this.at) throw new FrameError("bad msgpack: the data ends too soon");
  }

  array(size, depth) {
    this.enter(size, depth);
    const array = new Array(size);
    for (let i = 0; i < size; i++) array[i] = this.value(depth + 1);
    return array;
  }

  map(size, depth) {
    this.enter(2 * size, depth);
    const map = {};
    for (let i = 0; i < size; i++) {
      const key = this.key(depth + 1);
      setEntry(map, key, this.value(depth + 1));
    }
    return map;
  }

  /** A map key, as a string (see unpack). */
  key(depth) {
    const key = this.value(depth);
    if (typeof key === "string") return key;
    if (key instanceof Uint8Array) return lenientUtf8.decode(key);
    // Python refuses these too: a list or dict cannot be a dict's key.
    if (key !== null && typeof key === "object") throw new FrameError("bad msgpack: an array or a map as a map key");
    return String(key);
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

/**
 * Throw a RangeError when a body of `serial` (its checksum and it) would be
 * larger than `maxSize` bytes: a peer would close the link on such a frame.
 */
export function checkBodySize(serial, maxSize) {
  const size = CHECKSUM_SIZE + serial.length;
  if (size > maxSize) {
    throw new RangeError(`a message of ${size} bytes: peers read frame bodies of at most ${maxSize} bytes`);
  }
}

/** The bytes of `parts` (Uint8Arrays), one after the other. */
export function concat(...parts) {
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

  /**
   * Make a new message: a Promise of a WireMessage.  It fails with a
   * RangeError when the body (checksum and serial) would be larger than
   * `maxSize` bytes: a peer would close the link on such a frame.
   */
  static async create(msgType, sender, time, payload, senderIsBin = false, maxSize = Infinity) {
    const serial = pack([msgType, wireId(sender, senderIsBin), time, ...payload]);
    checkBodySize(serial, maxSize);
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
    const [, senderEnd] = senderSpan(serial);
    // (An integer, as Python nodes read it: not a float, even a whole one.)
    if (!Number.isInteger(time) || serial[senderEnd] === 0xca || serial[senderEnd] === 0xcb) {
      throw new FrameError("bad time field");
    }
    return new WireMessage(msgType, sender, time, payload, serial, checksum, senderField instanceof Uint8Array);
  }

  /**
   * The message's identity whatever the form of its sender field: the
   * checksum of its bin form (as twisted_mesh's seen-set keys it).  A
   * Promise of 32 bytes.
   */
  async key() {
    if (this._key === null) this._key = await sha256(this.binSerial());
    return this._key;
  }

  /** The serial with the sender field as bin: the form that is signed, and keyed. */
  binSerial() {
    if (this.senderIsBin) return this.serial;
    const [start, end] = senderSpan(this.serial);
    return concat(this.serial.subarray(0, start), pack(ascii.encode(this.sender)), this.serial.subarray(end));
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
