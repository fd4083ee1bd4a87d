// The Server-Sent Events streams: of one topic or pattern
// (GET /v1/topics/{topic}/stream), and of an end user's server-side
// subscriptions (GET /v1/stream with a user token). Both are read with
// fetch so that they work the same in Node and in browsers, can send an
// API key, and reconnect under this client's control instead of
// EventSource's.

import { HeraldError, ConnectionError, PROBLEM_TYPE_BASE, errorFromFrame, errorFromResponse, isPermanent } from './errors.js';
import { backoffDelay, wait } from './backoff.js';
import { SSEParser } from './sseparser.js';
import { normalizeSince, asError, callHook } from './common.js';

/**
 * What both SSE streams share: one request at a time, read to its end,
 * then another after a backoff (at once with a fresh token after a token
 * expired), until closed or refused for good. A subclass says what to
 * ask for (_request) and what each message means (_message), and calls
 * _start at the end of its constructor.
 */
class SSEConnection {
  #t;
  #hooks;
  #idleTimeout;
  #state = 'connecting';
  #attempt = 0;
  #stop = new AbortController();

  constructor(transport, options) {
    this.#t = transport;
    this.#hooks = options;
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
  }

  /** @internal Connects; called last by the subclass's constructor. */
  _start() {
    if (this.#state === 'closed') return;
    this.#run().catch((e) => this.#fail(asError(e), '', 'internal error of the client'));
  }

  /** "connecting", "open", "reconnecting" or "closed". */
  get state() {
    return this.#state;
  }

  close() {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#stop.abort();
    callHook(this.#hooks.onClose, this._reportError, { code: 'closed', reason: 'closed by the client', reconnect: false });
  }

  /** @internal The options the stream was made with. */
  get _hooks() {
    return this.#hooks;
  }

  /** @internal Whether the stream was closed: no callback may run after. */
  get _closed() {
    return this.#stop.signal.aborted;
  }

  /** @internal An event was delivered: the next drop reconnects without waiting long. */
  _delivered() {
    this.#attempt = 0;
  }

  /** @internal */
  _reportError = (err) => {
    if (typeof this.#hooks.onError === 'function') {
      try {
        this.#hooks.onError(err);
      } catch {
        // An error handler that fails has nowhere left to report to.
      }
    }
  };

  /** @internal Whether a herald.disconnect with this code ends the stream for good (subclasses say). */
  _endsStream(code) {
    return false;
  }

  #fail(err, code, reason) {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#stop.abort();
    this._reportError(err);
    callHook(this.#hooks.onClose, this._reportError, { code, reason, reconnect: false, error: err });
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
        this._reportError(err);
      } else if (err instanceof HeraldError && !out.opened) {
        // Refused before the stream started. A fresh token may cure a 401, once.
        if (err.status === 401 && this.#t.refreshable && !retried401) now = retried401 = true;
        else if (isPermanent(err)) return this.#fail(err, err.code, err.detail);
      } else if (code === 'token-expired') {
        err = new HeraldError({ type: PROBLEM_TYPE_BASE + 'unauthorized', title: 'Unauthorized', status: 401, detail: reason });
        if (!this.#t.refreshable) return this.#fail(err, code, reason);
        now = true;
      } else if (this._endsStream(code)) {
        err = new HeraldError({ type: PROBLEM_TYPE_BASE + code, title: 'Not found', status: 404, detail: reason });
        return this.#fail(err, code, reason);
      }
      if (out.opened) retried401 = false;

      const delay = now ? 0 : backoffDelay(this.#attempt++, this.#t.backoff);
      this.#state = 'reconnecting';
      callHook(this.#hooks.onClose, this._reportError, { code, reason, reconnect: true, delay, ...(err ? { error: err } : {}) });
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
    const { url, headers: extra } = this._request(token);
    const headers = { Accept: 'text/event-stream', ...extra };
    if (!token && this.#t.key) headers.Authorization = `Bearer ${this.#t.key}`;

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
      callHook(this.#hooks.onOpen, this._reportError);

      let disconnect = null;
      const parser = new SSEParser((m) => {
        if (this.#stop.signal.aborted) return;
        const d = this._message(m);
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

  /** @internal The JSON data of a message, or undefined (reported) when it is not JSON. */
  _json(m) {
    try {
      return JSON.parse(m.data);
    } catch {
      this._reportError(new Error(`the server sent SSE data that is not JSON: ${m.data.slice(0, 100)}`));
      return undefined;
    }
  }
}

/**
 * A stream of one topic or pattern over SSE. It connects at once; when the
 * response ends (network, server restart, slow consumer, expired token) it
 * connects again, after a backoff, sending the last event id it received
 * as Last-Event-ID, so the stream goes on after the last event delivered:
 * none skipped, none twice. See index.d.ts for the contract of each member.
 */
export class HeraldStream extends SSEConnection {
  #t;
  #topic;
  #since;
  #filter;
  #lastEventId;

  /** @internal Made by Herald.stream. */
  constructor(transport, topic, options = {}) {
    if (typeof topic !== 'string' || topic === '') throw new TypeError('stream needs a topic name or pattern');
    if (typeof options.onEvent !== 'function') throw new TypeError('stream needs an onEvent callback');
    super(transport, options);
    this.#t = transport;
    this.#topic = topic;
    this.#since = normalizeSince(options.since);
    this.#filter = options.filter;
    this.#lastEventId = options.lastEventId ?? '';
    this._start();
  }

  get topic() {
    return this.#topic;
  }

  /** The id of the last event received: where a reconnect resumes. Opaque for patterns. */
  get lastEventId() {
    return this.#lastEventId;
  }

  /** @internal A deleted topic: the reconnect would be refused with 404. */
  _endsStream(code) {
    return code === 'not-found';
  }

  /** @internal */
  _request(token) {
    const url = new URL(`${this.#t.httpBase}/v1/topics/${encodeURIComponent(this.#topic)}/stream`);
    url.searchParams.set('format', 'json');
    if (this.#since !== undefined && this.#lastEventId === '') url.searchParams.set('since', String(this.#since));
    if (this.#filter !== undefined) url.searchParams.set('filter', JSON.stringify(this.#filter));
    if (token) url.searchParams.set('token', token);
    const headers = {};
    if (this.#lastEventId !== '') headers['Last-Event-ID'] = this.#lastEventId;
    return { url, headers };
  }

  /** @internal Handles one SSE message; returns the data of herald.disconnect. */
  _message(m) {
    if (!m.hasData) {
      this.#lastEventId = m.id; // the starting position, before any event
      return null;
    }
    const data = this._json(m);
    if (data === undefined) return null;
    switch (m.event) {
      case 'herald.disconnect':
        return data;
      case 'herald.gap':
        callHook(this._hooks.onGap, this._reportError, data);
        return null;
      default:
        this.#lastEventId = m.id;
        this._delivered();
        callHook(this._hooks.onEvent, this._reportError, data);
        return null;
    }
  }
}

/** The frames a user's SSE stream carries as "herald.<op>" messages (besides herald.disconnect). */
const userControl = new Set(['subscribed', 'unsubscribed', 'gap', 'error']);

/**
 * The SSE stream of an end user's server-side subscriptions
 * (GET /v1/stream with the user's token): what a HeraldSocket given
 * onUserEvent receives, over plain HTTP. It connects at once; when the
 * response ends it connects again, after a backoff, with the stream's last
 * id as Last-Event-ID (a position per topic), so each subscription goes on
 * after the last event delivered: none skipped, none twice. See index.d.ts
 * for the contract of each member.
 */
export class HeraldUserStream extends SSEConnection {
  #t;
  #lastEventId = '';
  /** The seq last delivered (or started after) per topic of the user's server-side subscriptions. */
  #userPositions = {};

  /** @internal Made by Herald.userStream. */
  constructor(transport, options = {}) {
    if (typeof options.onUserEvent !== 'function') throw new TypeError('userStream needs an onUserEvent callback');
    const positions = {};
    for (const [t, seq] of Object.entries(options.userPositions ?? {})) {
      if (!Number.isSafeInteger(seq) || seq < 0) throw new TypeError(`userPositions[${JSON.stringify(t)}] must be a seq (an integer, 0 or more)`);
      positions[t] = seq;
    }
    super(transport, options);
    this.#t = transport;
    this.#userPositions = positions;
    this._start();
  }

  /** The seq last delivered per topic of the user's server-side subscriptions (a copy). */
  get userPositions() {
    return { ...this.#userPositions };
  }

  /** The stream's last id: the positions a reconnect resumes from, as the server wrote them. */
  get lastEventId() {
    return this.#lastEventId;
  }

  /** @internal */
  _request(token) {
    const url = new URL(`${this.#t.httpBase}/v1/stream`);
    if (token) url.searchParams.set('token', token);
    const headers = {};
    // Resume where the last connection got to; before it said anything,
    // from the positions the stream was given.
    if (this.#lastEventId !== '') headers['Last-Event-ID'] = this.#lastEventId;
    else if (Object.keys(this.#userPositions).length > 0) url.searchParams.set('positions', JSON.stringify(this.#userPositions));
    return { url, headers };
  }

  /** @internal Handles one SSE message; returns the data of herald.disconnect. */
  _message(m) {
    if (!m.hasData) return null; // "retry:", and heartbeats
    const data = this._json(m);
    if (data === undefined || !data || typeof data !== 'object') return null;
    // Every message the server writes carries the positions of the user's
    // topics (id "<topic>=<seq>,..."): they are where a reconnect resumes.
    this.#track(m.id);
    if (m.event === 'herald.disconnect') return data; // {code, reason}: the server ends the stream
    const op = m.event.startsWith('herald.') ? m.event.slice('herald.'.length) : '';
    if (userControl.has(op) && data.op === op) {
      switch (op) {
        case 'subscribed':
          callHook(this._hooks.onSubscribed, this._reportError, data);
          return null;
        case 'unsubscribed':
          callHook(this._hooks.onUnsubscribed, this._reportError, data);
          return null;
        case 'gap': {
          const { op: _, ...gap } = data;
          callHook(this._hooks.onGap, this._reportError, gap);
          return null;
        }
        case 'error':
          // One subscription failed (its topic was deleted, say); the
          // stream goes on with the others, as a socket's does.
          this._reportError(errorFromFrame(data.error));
          return null;
      }
    }
    if (typeof data.topic !== 'string' || !Number.isSafeInteger(data.seq)) return null;
    this._delivered();
    callHook(this._hooks.onUserEvent, this._reportError, { sub: `user:${data.topic}`, ...data });
    return null;
  }

  /** Takes the positions of the id the server wrote. */
  #track(id) {
    if (id === this.#lastEventId) return;
    const pos = {};
    for (const part of id === '' ? [] : id.split(',')) {
      const eq = part.lastIndexOf('=');
      const seq = Number(part.slice(eq + 1));
      if (eq <= 0 || !Number.isSafeInteger(seq) || seq < 0) {
        this._reportError(new Error(`the server sent a stream id that is not "<topic>=<seq>,...": ${id.slice(0, 100)}`));
        return;
      }
      pos[part.slice(0, eq)] = seq;
    }
    this.#lastEventId = id;
    this.#userPositions = pos;
  }
}
