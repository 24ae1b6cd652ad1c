// Named events with callbacks, as the references' `on` and `once`.

/**
 * The callbacks of each event; `onError(event, error)` hears of one that
 * throws, which neither stops the others nor reaches the caller of emit().
 */
export class Events {
  constructor(onError) {
    this._callbacks = new Map();
    this._onError = onError;
  }

  /** Call `callback` each time `event` happens. */
  on(event, callback) {
    this._add(event, callback, false);
  }

  /** Call `callback` the next time `event` happens only. */
  once(event, callback) {
    this._add(event, callback, true);
  }

  /** Forget `callback` (every registration of it) for `event`. */
  off(event, callback) {
    const callbacks = this._callbacks.get(event);
    if (callbacks) this._callbacks.set(event, callbacks.filter((entry) => entry.callback !== callback));
  }

  /** Call the callbacks of `event` with `args`; one that throws is reported, not propagated. */
  emit(event, ...args) {
    const callbacks = this._callbacks.get(event);
    if (!callbacks || !callbacks.length) return;
    this._callbacks.set(event, callbacks.filter((entry) => !entry.once));
    for (const { callback } of callbacks) {
      try {
        callback(...args);
      } catch (error) {
        this._onError(event, error);
      }
    }
  }

  _add(event, callback, once) {
    if (typeof callback !== "function") throw new TypeError("the callback must be a function");
    if (!this._callbacks.has(event)) this._callbacks.set(event, []);
    this._callbacks.get(event).push({ callback, once });
  }
}
