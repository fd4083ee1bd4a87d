// The WebSocket stream: many subscriptions on one connection to
// GET /v1/stream, resumed from their positions after every reconnect.

import { HeraldError, ConnectionError, PROBLEM_TYPE_BASE, errorFromFrame, errorFromResponse } from './errors.js';
import { backoffDelay, wait } from './backoff.js';
import { normalizeSince, isPattern, asError, callHook } from './common.js';

/**
 * How far before a pattern subscription first went live its unseen topics
 * resume (the server stamps an event's time a little before its commit);
 * it can only add events that were never delivered.
 */
const resumeMargin = 10_000;

/** WebSocket close codes Herald uses. */
const closeTokenExpired = 1008;

/**
 * A WebSocket connection to Herald carrying any number of subscriptions.
 * It connects when the first subscription is added, and when the
 * connection drops (network, server restart, slow consumer, expired token)
 * it connects again, after a backoff, and resubscribes each subscription
 * from the last event it delivered: no event is skipped and none comes
 * twice. See index.d.ts for the contract of each member.
 */
export class HeraldSocket {
  #t;
  #hooks;
  #keepAlive;
  /** @type {Map<string, Subscription>} */
  #subs = new Map();
  #nextId = 0;
  /** @type {WebSocket | null} */
  #ws = null;
  #state = 'idle';
  #attempt = 0;
  #stop = new AbortController();
  #lastReceived = 0;
  #pingedAt = 0;
  #keepAliveTimer = undefined;
  /** Ends the current connection at once, without waiting for its close handshake. */
  #endConnection = null;
  /** The seq last delivered per topic of the user's server-side subscriptions. */
  #userPositions = {};

  /** @internal Made by Herald.socket. */
  constructor(transport, options = {}) {
    if (typeof transport.WebSocket !== 'function') {
      throw new TypeError(
        'no WebSocket implementation: pass the WebSocket option (Node 20: run with --experimental-websocket, ' +
          "or use the ws package's WebSocket; Node 22 and browsers have one)",
      );
    }
    this.#t = transport;
    this.#hooks = options;
    this.#keepAlive = options.keepAlive ?? 30_000;
    for (const [t, seq] of Object.entries(options.userPositions ?? {})) {
      if (!Number.isSafeInteger(seq) || seq < 0) throw new TypeError(`userPositions[${JSON.stringify(t)}] must be a seq (an integer, 0 or more)`);
      this.#userPositions[t] = seq;
    }
    const { signal } = options;
    if (signal) {
      if (signal.aborted) this.close();
      else signal.addEventListener('abort', () => this.close(), { once: true, signal: this.#stop.signal });
    }
    // A user's socket has its subscriptions on the server: connect now.
    if (typeof options.onUserEvent === 'function' && this.#state === 'idle') {
      this.#run().catch((e) => this.#fail(asError(e), { code: 1006, reason: 'internal error of the client' }));
    }
  }

  /** The seq last delivered per topic of the user's server-side subscriptions (a copy). */
  get userPositions() {
    return { ...this.#userPositions };
  }

  /** "idle" (no subscription yet), "connecting", "open", "reconnecting" or "closed". */
  get state() {
    return this.#state;
  }

  subscribe(topic, options = {}) {
    if (this.#state === 'closed') throw new Error('the socket is closed');
    if (typeof topic !== 'string' || topic === '') throw new TypeError('subscribe needs a topic name or pattern');
    if (typeof options.onEvent !== 'function') throw new TypeError('subscribe needs an onEvent callback');
    const id = options.id ?? `s${++this.#nextId}`;
    const existing = this.#subs.get(id);
    if (existing && existing.state !== 'closed') {
      throw new TypeError(`the subscription id ${JSON.stringify(id)} is in use on this socket`);
    }
    const sub = new Subscription(this, id, topic, options);
    this.#subs.set(id, sub);
    if (this.#state === 'idle') {
      this.#run().catch((e) => this.#fail(asError(e), { code: 1006, reason: 'internal error of the client' }));
    }
    else if (this.#state === 'open') this.#send(sub._op());
    return sub;
  }

  close() {
    if (this.#state === 'closed') return;
    const wasRunning = this.#state !== 'idle';
    this.#finish();
    if (wasRunning) callHook(this.#hooks.onClose, this.#reportError, { code: 1000, reason: 'closed by the client', reconnect: false });
  }

  /** Stops everything: no reconnect, no timer, no subscription left. */
  #finish() {
    this.#state = 'closed';
    this.#stop.abort();
    this.#stopKeepAlive();
    for (const sub of this.#subs.values()) sub.state = 'closed';
    this.#subs.clear();
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      try {
        ws.close(1000);
      } catch {
        // Already closing.
      }
    }
    this.#endConnection?.({ code: 1000, reason: 'closed by the client' });
  }

  #fail(err, info) {
    if (this.#state === 'closed') return;
    this.#finish();
    this.#reportError(err);
    callHook(this.#hooks.onClose, this.#reportError, { ...info, reconnect: false, error: err });
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

  /** @internal */
  _unsubscribe(sub) {
    if (sub.state === 'closed') return;
    sub.state = 'closed';
    if (this.#state === 'open' && this.#send({ op: 'unsubscribe', id: sub.id })) {
      sub._closing = true; // forgotten at "unsubscribed"; its id is free before
    } else {
      this.#subs.delete(sub.id); // a new connection will not subscribe it
    }
  }

  /** @internal */
  _callbackError(err) {
    this.#reportError(err);
  }

  #send(frame) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  /** Connects, and connects again, until closed or refused for good. */
  async #run() {
    this.#state = 'connecting';
    let retried401 = false;
    while (!this.#stop.signal.aborted) {
      const out = await this.#connectOnce();
      if (this.#stop.signal.aborted) return;
      let err = out.error;
      if (out.fatal) return this.#fail(err, { code: 1006, reason: '' });
      if (!out.opened && !err) {
        err = (await this.#probe(out.token)) ?? new ConnectionError(this.#t.wsBase, 'the WebSocket handshake failed');
      }
      if (this.#stop.signal.aborted) return;

      let now = false;
      if (!out.opened && err instanceof HeraldError && (err.status === 401 || err.status === 403)) {
        // Refused at the handshake. A fresh token may cure a 401, once.
        if (err.status === 401 && this.#t.refreshable && !retried401) now = retried401 = true;
        else return this.#fail(err, { code: out.code ?? 1006, reason: out.reason ?? '' });
      } else if (out.opened && out.code === closeTokenExpired) {
        const expired = new HeraldError({
          type: PROBLEM_TYPE_BASE + 'unauthorized', title: 'Unauthorized', status: 401,
          detail: out.reason || 'the connection token expired',
        });
        if (!this.#t.refreshable) return this.#fail(expired, { code: out.code, reason: out.reason });
        err = expired;
        now = true;
      }
      if (out.opened) retried401 = false;
      if (out.tokenFailed) this.#reportError(err);

      const delay = now ? 0 : backoffDelay(this.#attempt++, this.#t.backoff);
      this.#state = 'reconnecting';
      callHook(this.#hooks.onClose, this.#reportError,
        { code: out.code ?? 1006, reason: out.reason ?? '', reconnect: true, delay, ...(err ? { error: err } : {}) });
      if (delay > 0) await wait(delay, this.#stop.signal);
      if (!this.#stop.signal.aborted) this.#state = 'connecting';
    }
  }

  /**
   * One connection, from asking for a token to its end. It resolves with
   * how it ended: opened or not, the close code and reason, an error, and
   * whether that error is fatal.
   */
  async #connectOnce() {
    let token;
    try {
      token = await this.#t.token?.();
    } catch (err) {
      return { opened: false, error: asError(err), tokenFailed: true };
    }
    if (this.#stop.signal.aborted) return { opened: false };
    const url = this.#t.wsBase + '/v1/stream';
    const q = new URLSearchParams();
    if (token) q.set('token', token);
    // The user's server-side subscriptions resume from what was delivered.
    if (Object.keys(this.#userPositions).length > 0) q.set('positions', JSON.stringify(this.#userPositions));
    const full = q.size > 0 ? `${url}?${q}` : url;
    let ws;
    try {
      if (token) ws = new this.#t.WebSocket(full);
      else if (this.#t.key) ws = new this.#t.WebSocket(full, { headers: { Authorization: `Bearer ${this.#t.key}` } });
      else ws = new this.#t.WebSocket(full);
    } catch (err) {
      const why = this.#t.key && !token
        ? 'this WebSocket cannot send an API key (browsers cannot): give the client a connection token'
        : `cannot open a WebSocket to ${url}`;
      return { opened: false, fatal: true, error: new TypeError(why, { cause: err }) };
    }
    this.#ws = ws;
    return new Promise((resolve) => {
      let opened = false;
      const end = (how) => {
        if (this.#endConnection !== end) return;
        this.#endConnection = null;
        if (this.#ws === ws) this.#ws = null;
        this.#stopKeepAlive();
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        resolve({ opened, token, ...how });
      };
      this.#endConnection = end;
      ws.onopen = () => {
        opened = true;
        this.#opened();
      };
      ws.onmessage = (m) => this.#onMessage(m.data);
      // A close event follows an error, with its code; but a failed
      // handshake ends at the error in some implementations (Node 20's).
      ws.onerror = () => {
        if (!opened) end({ code: 1006, reason: '' });
      };
      ws.onclose = (e) => end({ code: e.code, reason: e.reason });
    });
  }

  #opened() {
    this.#state = 'open';
    this.#lastReceived = Date.now();
    this.#startKeepAlive();
    for (const sub of [...this.#subs.values()]) {
      if (sub._closing) {
        this.#subs.delete(sub.id); // the old connection's server side forgot it
        continue;
      }
      sub.state = 'pending';
      this.#send(sub._op());
    }
    // After the resubscriptions: what onOpen subscribes is sent once, by subscribe.
    callHook(this.#hooks.onOpen, this.#reportError);
  }

  /**
   * Asks why a WebSocket handshake failed, which neither browsers nor Node
   * tell: the SSE endpoint authenticates the same credentials and answers
   * refusals with a problem. Only what explains a handshake failure is
   * returned: a 401 (credentials), a 403 that is not about the topic (the
   * origin), a 429 (too many connections).
   */
  async #probe(token) {
    const sub = [...this.#subs.values()].find((s) => s.state !== 'closed');
    if (!sub) return null;
    const url = new URL(`${this.#t.httpBase}/v1/topics/${encodeURIComponent(sub.topic)}/stream`);
    if (token) url.searchParams.set('token', token);
    const headers = { Accept: 'text/event-stream' };
    if (!token && this.#t.key) headers.Authorization = `Bearer ${this.#t.key}`;
    const ctrl = new AbortController();
    const stop = () => ctrl.abort();
    this.#stop.signal.addEventListener('abort', stop);
    try {
      const res = await this.#t.fetch(url.href, { headers, signal: ctrl.signal, cache: 'no-store' });
      if (res.ok) return null;
      const err = await errorFromResponse(res);
      if (err.status === 401 || err.status === 429 || (err.status === 403 && err.field !== 'topic')) return err;
      return null;
    } catch {
      return null; // unreachable: the handshake failed for that reason
    } finally {
      ctrl.abort();
      this.#stop.signal.removeEventListener('abort', stop);
    }
  }

  #onMessage(data) {
    this.#lastReceived = Date.now();
    if (typeof data !== 'string') return; // Herald sends text frames only
    let f;
    try {
      f = JSON.parse(data);
    } catch {
      this.#reportError(new Error(`the server sent a frame that is not JSON: ${data.slice(0, 100)}`));
      return;
    }
    if (!f || typeof f !== 'object') return;
    switch (f.op) {
      case 'event': {
        const sub = this.#subs.get(f.sub);
        this.#attempt = 0;
        if (sub) sub._event(f);
        else if (typeof f.sub === 'string' && f.sub.startsWith('user:') && typeof f.topic === 'string') {
          if (Number.isSafeInteger(f.seq)) this.#userPositions[f.topic] = f.seq;
          if (typeof this.#hooks.onUserEvent === 'function') callHook(this.#hooks.onUserEvent, this.#reportError, f);
          else this.#other(f);
        } else this.#other(f);
        return;
      }
      case 'subscribed':
        this.#attempt = 0;
        if (this.#subs.has(f.id)) this.#subs.get(f.id)._subscribed(f);
        else if (userTopic(f.id) !== undefined) {
          // Where a server-side subscription starts: a reconnect before
          // its first event resumes from here, not live.
          const t = userTopic(f.id);
          if (this.#userPositions[t] === undefined && Number.isSafeInteger(f.after_seq)) this.#userPositions[t] = f.after_seq;
          this.#userHook(this.#hooks.onUserSubscribed, f);
        } else this.#other(f);
        return;
      case 'gap':
        if (this.#subs.has(f.sub)) this.#subs.get(f.sub)._gap(f);
        else if (userTopic(f.sub) !== undefined) {
          // What the gap skipped is gone: resume after it.
          if (Number.isSafeInteger(f.first_seq) && f.first_seq > 0) this.#userPositions[userTopic(f.sub)] = f.first_seq - 1;
          this.#userHook(this.#hooks.onUserGap, f);
        } else this.#other(f);
        return;
      case 'unsubscribed': {
        const sub = this.#subs.get(f.id);
        if (sub?._closing) this.#subs.delete(f.id);
        else if (!sub && userTopic(f.id) !== undefined) {
          delete this.#userPositions[userTopic(f.id)];
          this.#userHook(this.#hooks.onUserUnsubscribed, f);
        }
        return;
      }
      case 'error':
        return this.#onErrorFrame(f);
      case 'pong':
        return;
      default:
        this.#other(f);
    }
  }

  /** A control frame of a server-side subscription goes to its hook, or else to onFrame. */
  #userHook(hook, f) {
    if (typeof hook === 'function') callHook(hook, this.#reportError, f);
    else this.#other(f);
  }

  /** Frames this client does not know, or events of subscriptions it did not make, go to onFrame. */
  #other(f) {
    callHook(this.#hooks.onFrame, this.#reportError, f);
  }

  #onErrorFrame(f) {
    const err = errorFromFrame(f.error);
    const sub = typeof f.id === 'string' ? this.#subs.get(f.id) : undefined;
    if (!sub) return this.#reportError(err);
    if (sub.state === 'closed') return;
    if (err.status >= 500) {
      // The server could not serve it now (it could not read its log, say):
      // a new connection resubscribes everything after a backoff.
      this.#reportError(err);
      const ws = this.#ws;
      this.#endConnection?.({ code: 1011, reason: 'resubscribing after a server error', error: err });
      try {
        ws?.close(1000);
      } catch {
        // Already closing.
      }
      return;
    }
    sub.state = 'closed';
    this.#subs.delete(sub.id);
    if (typeof sub._hooks.onError === 'function') callHook(sub._hooks.onError, this.#reportError, err);
    else this.#reportError(err);
  }

  #startKeepAlive() {
    const ka = this.#keepAlive;
    if (!(ka > 0)) return;
    this.#keepAliveTimer = setInterval(() => {
      const idle = Date.now() - this.#lastReceived;
      if (idle >= 2 * ka) {
        const ws = this.#ws;
        this.#endConnection?.({ code: 1006, reason: `nothing from the server for ${idle} ms, not even a pong` });
        try {
          ws?.close(1000);
        } catch {
          // Already closing.
        }
      } else if (idle >= ka && this.#pingedAt < this.#lastReceived) {
        this.#pingedAt = Date.now(); // once per silence
        this.#send({ op: 'ping' });
      }
    }, ka / 2);
  }

  #stopKeepAlive() {
    clearInterval(this.#keepAliveTimer);
    this.#keepAliveTimer = undefined;
  }
}

/** One subscription of a HeraldSocket. */
export class Subscription {
  #socket;
  #positions;
  #since;
  #filter;
  #pattern;
  /** When the subscription first went live (ms), for a pattern that started from now. */
  #liveFrom = null;

  /** @internal */
  constructor(socket, id, topic, options) {
    this.#socket = socket;
    this.id = id;
    this.topic = topic;
    /** "pending" until the server acknowledges it, "active", or "closed". */
    this.state = 'pending';
    this._hooks = options;
    this._closing = false;
    this.#pattern = isPattern(topic);
    this.#since = normalizeSince(options.since);
    this.#filter = options.filter;
    this.#positions = {};
    for (const [t, seq] of Object.entries(options.positions ?? {})) {
      if (!Number.isSafeInteger(seq) || seq < 0) throw new TypeError(`positions[${JSON.stringify(t)}] must be a seq (an integer, 0 or more)`);
      this.#positions[t] = seq;
    }
  }

  /** The seq of the last event delivered per topic (for a single topic, also where it started). */
  get positions() {
    return { ...this.#positions };
  }

  unsubscribe() {
    this.#socket._unsubscribe(this);
  }

  /** @internal The subscribe message for where the subscription stands. */
  _op() {
    const op = { op: 'subscribe', id: this.id, topic: this.topic };
    if (this.#filter !== undefined) op.filter = this.#filter;
    if (!this.#pattern && this.#positions[this.topic] !== undefined) {
      op.since = this.#positions[this.topic];
      return op;
    }
    if (Object.keys(this.#positions).length > 0) op.positions = { ...this.#positions };
    if (this.#since !== undefined) op.since = this.#since;
    else if (this.#liveFrom !== null) op.since = new Date(this.#liveFrom - resumeMargin).toISOString();
    return op;
  }

  /** @internal */
  _subscribed(f) {
    if (this.state === 'closed') return;
    if (!this.#pattern && this.#positions[this.topic] === undefined && Number.isSafeInteger(f.after_seq)) {
      this.#positions[this.topic] = f.after_seq;
    }
    if (this.#pattern && this.#liveFrom === null && this.#since === undefined) {
      const t = Date.parse(f.time);
      if (!Number.isNaN(t)) this.#liveFrom = t;
    }
    this.state = 'active';
    callHook(this._hooks.onSubscribed, (e) => this.#socket._callbackError(e), f);
  }

  /** @internal */
  _event(f) {
    if (this.state === 'closed') return;
    const { op, sub, ...event } = f;
    this.#positions[event.topic] = event.seq;
    callHook(this._hooks.onEvent, (e) => this.#socket._callbackError(e), event);
  }

  /** @internal */
  _gap(f) {
    if (this.state === 'closed') return;
    const { op, sub, ...gap } = f;
    callHook(this._hooks.onGap, (e) => this.#socket._callbackError(e), gap);
  }
}

/** The topic of a frame about one of the user's server-side subscriptions ("user:<topic>"), or undefined. */
function userTopic(id) {
  return typeof id === 'string' && id.startsWith('user:') && id.length > 5 ? id.slice(5) : undefined;
}
