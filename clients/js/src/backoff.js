// Reconnection delays: exponential backoff with full jitter and a cap.

/** Default backoff: the first retry within 100 ms, never more than 5 s. */
export const DEFAULT_BACKOFF = Object.freeze({ initial: 100, max: 5000 });

/**
 * The wait before reconnection attempt number `attempt` (0 for the first
 * retry after a connection ended): a uniformly random time between 0 and
 * min(max, initial * 2^attempt) milliseconds ("full jitter"), so that many
 * clients cut off together do not all come back together.
 * @param {number} attempt
 * @param {{initial?: number, max?: number}} [options]
 * @param {() => number} [random] a source in [0, 1); Math.random by default
 */
export function backoffDelay(attempt, options, random = Math.random) {
  const initial = options?.initial ?? DEFAULT_BACKOFF.initial;
  const max = options?.max ?? DEFAULT_BACKOFF.max;
  // 2^attempt overflows to Infinity long after min() has capped it.
  const ceiling = Math.min(max, initial * 2 ** Math.min(attempt, 52));
  return Math.floor(random() * ceiling);
}

/** Checks backoff options, throwing a TypeError naming the bad one. */
export function checkBackoff(options) {
  if (options === undefined) return DEFAULT_BACKOFF;
  const b = { ...DEFAULT_BACKOFF, ...options };
  for (const k of ['initial', 'max']) {
    if (typeof b[k] !== 'number' || !(b[k] >= 0) || !Number.isFinite(b[k])) {
      throw new TypeError(`backoff.${k} must be a number of milliseconds (0 or more), got ${b[k]}`);
    }
  }
  return b;
}

/**
 * Resolves after ms milliseconds, or at once when the signal aborts
 * (the caller checks why it woke).
 * @param {number} ms
 * @param {AbortSignal} signal
 */
export function wait(ms, signal) {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
