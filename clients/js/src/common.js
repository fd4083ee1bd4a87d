// Small helpers the transports share.

/** Whether a topic is a pattern (has a * or > segment). */
export function isPattern(topic) {
  return topic.split('.').some((s) => s === '*' || s === '>');
}

/**
 * A starting position in the API's form: a seq (events after it; 0 for all
 * retained), or a time (events at or after it) as an RFC 3339 string;
 * undefined for "from now".
 * @param {number | string | Date | undefined | null} since
 */
export function normalizeSince(since) {
  if (since === undefined || since === null) return undefined;
  if (typeof since === 'number') {
    if (!Number.isSafeInteger(since) || since < 0) throw new TypeError(`since must be a seq (an integer, 0 or more), got ${since}`);
    return since;
  }
  if (since instanceof Date) {
    if (Number.isNaN(since.getTime())) throw new TypeError('since is an invalid Date');
    return since.toISOString();
  }
  if (typeof since === 'string' && since !== '') return since;
  throw new TypeError('since must be a seq, a Date or an RFC 3339 time');
}

/** An Error for anything thrown. */
export function asError(e) {
  return e instanceof Error ? e : new Error(String(e));
}

/**
 * Calls a user's callback, if there is one, and hands what it throws (or
 * the rejection of the promise it returns) to onError: a failing callback
 * must not break the stream that called it.
 */
export function callHook(fn, onError, ...args) {
  if (typeof fn !== 'function') return;
  try {
    const r = fn(...args);
    if (r && typeof r.then === 'function') r.then(undefined, (e) => onError(asError(e)));
  } catch (e) {
    onError(asError(e));
  }
}
