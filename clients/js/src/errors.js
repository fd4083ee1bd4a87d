// Errors the client reports: the server's refusals as HeraldError, and
// failures to reach it at all as ConnectionError.

/** Starts the type URI of every problem Herald writes; the rest is its code. */
export const PROBLEM_TYPE_BASE = 'https://herald.dev/problems/';

/**
 * A refusal by the server: an RFC 9457 problem document, or, when the answer
 * was not one (a proxy's error page, say), a problem made from the HTTP
 * status whose detail says so.
 */
export class HeraldError extends Error {
  /**
   * @param {{type?: string, title?: string, status?: number, detail?: string, field?: string, request_id?: string}} problem
   * @param {{cause?: unknown}} [options]
   */
  constructor(problem, options) {
    const p = problem ?? {};
    const status = Number.isInteger(p.status) ? p.status : 0;
    super(describe(p, status), options);
    this.name = 'HeraldError';
    this.type = typeof p.type === 'string' && p.type ? p.type : 'about:blank';
    this.title = typeof p.title === 'string' ? p.title : '';
    this.status = status;
    this.detail = typeof p.detail === 'string' ? p.detail : '';
    this.field = typeof p.field === 'string' ? p.field : '';
    this.requestId = typeof p.request_id === 'string' ? p.request_id : '';
  }

  /** Herald's code for the problem ("not-found", "invalid", ...), or "" for a type of someone else's. */
  get code() {
    return this.type.startsWith(PROBLEM_TYPE_BASE) ? this.type.slice(PROBLEM_TYPE_BASE.length) : '';
  }
}

function describe(p, status) {
  const msg = p.detail || p.title || `HTTP status ${status}`;
  const parts = [];
  if (p.field) parts.push(`field: ${p.field}`);
  parts.push(`status ${status}`);
  if (p.type && p.type !== 'about:blank') parts.push(`type ${p.type}`);
  return `${msg} (${parts.join(', ')})`;
}

/** The server could not be reached, or the connection broke before an answer. */
export class ConnectionError extends Error {
  /**
   * @param {string} url
   * @param {unknown} cause
   */
  constructor(url, cause) {
    const why = cause instanceof Error ? cause.message : String(cause);
    super(`cannot reach Herald at ${url}: ${why}`, { cause });
    this.name = 'ConnectionError';
    this.url = url;
  }
}

/** Largest part of a non-problem error body quoted in a detail. */
const maxExcerpt = 200;

/**
 * Reads a failed response into a HeraldError.
 * @param {Response} res
 * @returns {Promise<HeraldError>}
 */
export async function errorFromResponse(res) {
  let text = '';
  try {
    text = await res.text();
  } catch {
    // The body broke off; the status still says what happened.
  }
  const ct = (res.headers.get('Content-Type') || '').toLowerCase();
  if (ct.includes('json')) {
    try {
      const p = JSON.parse(text);
      if (p && typeof p === 'object' && Number.isInteger(p.status)) return new HeraldError(p);
    } catch {
      // Not the problem document it claims to be: described below.
    }
  }
  let detail = `the server answered ${res.status} ${res.statusText}`.trim() + ' without a problem document';
  const excerpt = text.trim().slice(0, maxExcerpt);
  if (excerpt) detail += `: ${excerpt}`;
  return new HeraldError({ status: res.status, title: res.statusText, detail });
}

/**
 * A HeraldError from the problem object of a WebSocket "error" frame.
 * @param {unknown} problem
 */
export function errorFromFrame(problem) {
  if (problem && typeof problem === 'object' && Number.isInteger(/** @type {any} */ (problem).status)) {
    return new HeraldError(/** @type {any} */ (problem));
  }
  return new HeraldError({
    status: 500,
    title: 'Internal error',
    detail: `the server sent an error frame that is not a problem: ${JSON.stringify(problem)}`,
  });
}

/** Whether a refusal is for good: retrying the same request cannot succeed. */
export function isPermanent(err) {
  return err instanceof HeraldError && err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429;
}
