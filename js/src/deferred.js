// A Promise settled from outside, for what happens later: a link's handshake
// and close, a dialer's first and next handshakes.

/** A new Promise and the functions that settle it: `{promise, resolve, reject}`. */
export function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((resolvePromise, rejectPromise) => {
    resolve = resolvePromise;
    reject = rejectPromise;
  });
  return { promise, resolve, reject };
}
