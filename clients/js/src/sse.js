// The Server-Sent Events stream of one topic or pattern
// (GET /v1/topics/{topic}/stream), read with fetch so that it works the
// same in Node and in browsers, can send an API key, and reconnects under
// this client's control instead of EventSource's.

import { HeraldError, ConnectionError, PROBLEM_TYPE_BASE, errorFromResponse, isPermanent } from './errors.js';
import { backoffDelay, wait } from './backoff.js';
import { SSEParser } from './sseparser.js';
import { normalizeSince, asError, callHook } from './common.js';

/**
 * A stream of one topic or pattern over SSE. It connects at once; when the
 * response ends (network, server restart, slow consumer, expired token) it
 * connects again, after a backoff, sending the last event id it received
 * as Last-Event-ID, so the stream goes on after the last event delivered:
 * none skipped, none twice. See index.d.ts for the contract of each member.
 */
export class HeraldStream {
  #t;
  #hooks;
  #topic;
  #since;
  #filter;
  #lastEventId;
  #idleTimeout;
  #state = 'connecting';
  #attempt = 0;
  #stop = new AbortController();

  /** @internal Made by Herald.stream. */
  constructor(transport, topic, options = {}) {
    if (typeof topic !== 'string' || topic === '') throw new TypeError('stream needs a topic name or pattern');
    if (typeof options.onEvent !== 'function') throw new TypeError('stream needs an onEvent callback');
    this.#t = transport;
    this.#topic = topic;
    this.#hooks = options;
    this.#since = normalizeSince(options.since);
    this.#filter = options.filter;
    this.#lastEventId = options.lastEventId ?? '';
    this.#idleTimeout = options.idleTimeout ?? 45_000;
    const { signal } = options;
    if (signal) {
      if (signal.aborted) {
        this.#state = 'closed';
        this.#stop.abort();
        return;
      }
      signal.addEventListener('abort', () => this.close(), { once: true, signal: this.#stop.signal });
    }
    this.#run().catch((e) => this.#fail(asError(e), '', 'internal error of the client'));
  }

  get topic() {
    return this.#topic;
  }

  /** "connecting", "open", "reconnecting" or "closed". */
  get state() {
    return this.#state;
  }

  /** The id of the last event received: where a reconnect resumes. Opaque for patterns. */
  get lastEventId() {
    return this.#lastEventId;
  }

  close() {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#stop.abort();
    callHook(this.#hooks.onClose, this.#reportError, { code: 'closed', reason: 'closed by the client', reconnect: false });
  }

  #reportError = (err) => {
    if (typeof this.#hooks.onError === 'function') {
      try {
        this.#hooks.onError(err);
      } catch {
        // An error handler that fails has nowhere left to report to.
      }
    }
  };

  #fail(err, code, reason) {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#stop.abort();
    this.#reportError(err);
    callHook(this.#hooks.onClose, this.#reportError, { code, reason, reconnect: false, error: err });
  }

  async #run() {
    let retried401 = false;
    while (!this.#stop.signal.aborted) {
      const out = await this.#connectOnce();
      if (this.#stop.signal.aborted) return;
      const code = out.disconnect?.code ?? '';
      const reason = out.disconnect?.reason ?? '';
      let err = out.error;
      let now = false;
      if (out.tokenFailed) {
        this.#reportError(err);
      } else if (err instanceof HeraldError && !out.opened) {
        // Refused before the stream started. A fresh token may cure a 401, once.
        if (err.status === 401 && this.#t.refreshable && !retried401) now = retried401 = true;
        else if (isPermanent(err)) return this.#fail(err, err.code, err.detail);
      } else if (code === 'token-expired') {
        err = new HeraldError({ type: PROBLEM_TYPE_BASE + 'unauthorized', title: 'Unauthorized', status: 401, detail: reason });
        if (!this.#t.refreshable) return this.#fail(err, code, reason);
        now = true;
      } else if (code === 'not-found') {
        // The topic was deleted; the reconnect would be refused with 404.
        err = new HeraldError({ type: PROBLEM_TYPE_BASE + 'not-found', title: 'Not found', status: 404, detail: reason });
        return this.#fail(err, code, reason);
      }
      if (out.opened) retried401 = false;

      const delay = now ? 0 : backoffDelay(this.#attempt++, this.#t.backoff);
      this.#state = 'reconnecting';
      callHook(this.#hooks.onClose, this.#reportError, { code, reason, reconnect: true, delay, ...(err ? { error: err } : {}) });
      if (delay > 0) await wait(delay, this.#stop.signal);
      if (!this.#stop.signal.aborted) this.#state = 'connecting';
    }
  }

  /** One request, from asking for a token to the end of its response. */
  async #connectOnce() {
    let token;
    try {
      token = await this.#t.token?.();
    } catch (err) {
      return { opened: false, error: asError(err), tokenFailed: true };
    }
    if (this.#stop.signal.aborted) return { opened: false };
    const url = new URL(`${this.#t.httpBase}/v1/topics/${encodeURIComponent(this.#topic)}/stream`);
    url.searchParams.set('format', 'json');
    if (this.#since !== undefined && this.#lastEventId === '') url.searchParams.set('since', String(this.#since));
    if (this.#filter !== undefined) url.searchParams.set('filter', JSON.stringify(this.#filter));
    if (token) url.searchParams.set('token', token);
    const headers = { Accept: 'text/event-stream' };
    if (!token && this.#t.key) headers.Authorization = `Bearer ${this.#t.key}`;
    if (this.#lastEventId !== '') headers['Last-Event-ID'] = this.#lastEventId;

    const ctrl = new AbortController();
    const stop = () => ctrl.abort();
    this.#stop.signal.addEventListener('abort', stop);
    let idle;
    try {
      let res;
      try {
        res = await this.#t.fetch(url.href, { headers, signal: ctrl.signal, cache: 'no-store' });
      } catch (err) {
        return { opened: false, error: new ConnectionError(this.#t.httpBase, err) };
      }
      if (!res.ok) return { opened: false, error: await errorFromResponse(res) };
      if (!res.body) return { opened: false, error: new ConnectionError(this.#t.httpBase, 'the response has no body') };
      this.#state = 'open';
      callHook(this.#hooks.onOpen, this.#reportError);

      let disconnect = null;
      const parser = new SSEParser((m) => {
        const d = this.#message(m);
        if (d) disconnect = d;
      });
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let idled = false;
      const arm = () => {
        clearTimeout(idle);
        if (this.#idleTimeout > 0) {
          idle = setTimeout(() => {
            idled = true;
            ctrl.abort();
          }, this.#idleTimeout);
        }
      };
      arm();
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done || this.#stop.signal.aborted) break;
          arm();
          parser.push(value);
        }
      } catch (err) {
        if (disconnect || this.#stop.signal.aborted) return { opened: true, disconnect };
        const why = idled ? `no event or heartbeat for ${this.#idleTimeout} ms` : err;
        return { opened: true, error: new ConnectionError(this.#t.httpBase, why) };
      }
      return { opened: true, disconnect };
    } finally {
      clearTimeout(idle);
      ctrl.abort();
      this.#stop.signal.removeEventListener('abort', stop);
    }
  }

  /** Handles one SSE message; returns the data of herald.disconnect. */
  #message(m) {
    if (this.#stop.signal.aborted) return null;
    if (!m.hasData) {
      this.#lastEventId = m.id; // the starting position, before any event
      return null;
    }
    let data;
    try {
      data = JSON.parse(m.data);
    } catch {
      this.#reportError(new Error(`the server sent SSE data that is not JSON: ${m.data.slice(0, 100)}`));
      return null;
    }
    switch (m.event) {
      case 'herald.disconnect':
        return data;
      case 'herald.gap':
        callHook(this.#hooks.onGap, this.#reportError, data);
        return null;
      default:
        this.#lastEventId = m.id;
        this.#attempt = 0;
        callHook(this.#hooks.onEvent, this.#reportError, data);
        return null;
    }
  }
}
