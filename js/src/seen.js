// The seen-set: the broadcasts this node has handled, kept until they expire.

/**
 * How long a broadcast stays new, in seconds: older ones are dropped, and
 * so are ones stamped further ahead (as twisted_mesh drops them).
 */
export const MESSAGE_LIFETIME = 60;

/**
 * The broadcasts seen in the last MESSAGE_LIFETIME seconds, by ID.  Entries
 * are forgotten in the order they came, up to the first that has not
 * expired: that holds the others back no more than MESSAGE_LIFETIME seconds,
 * as a broadcast stamped further ahead is dropped before it gets here.
 */
export class SeenSet {
  constructor() {
    this._expiries = new Map();
  }

  /** Record `key` (hex), a message stamped `time`; return whether it is new. */
  add(key, time, nowSeconds) {
    if (this.has(key, nowSeconds)) return false;
    this._expiries.set(key, Math.max(time, nowSeconds) + MESSAGE_LIFETIME + 1);
    return true;
  }

  /**
   * Whether `key` (hex) is held at `nowSeconds`, without recording it: a
   * signed network's node records a broadcast only once its signature
   * holds, so that forged copies take no room.
   */
  has(key, nowSeconds) {
    for (const [old, expiry] of this._expiries) {
      if (expiry >= nowSeconds) break;
      this._expiries.delete(old);
    }
    return this._expiries.has(key);
  }

  /** How many broadcasts it holds. */
  get size() {
    return this._expiries.size;
  }
}
