// The Herald client: REST calls, and the factories of the two stream
// transports, which share its URL, credentials and backoff.

import { ConnectionError, errorFromResponse } from './errors.js';
import { checkBackoff } from './backoff.js';
import { encodeBody, encodeBatchEvent } from './codec.js';
import { HeraldSocket } from './socket.js';
import { HeraldStream, HeraldUserStream } from './sse.js';

const seg = encodeURIComponent;

/** A Date or an RFC 3339 string, as Herald-Deliver-At takes it. */
function toRFC3339(t) {
  if (t instanceof Date) {
    if (Number.isNaN(t.getTime())) throw new TypeError('deliverAt is an invalid Date');
    return t.toISOString();
  }
  if (typeof t === 'string' && t !== '') return t;
  throw new TypeError('deliverAt must be a Date or an RFC 3339 string');
}

/** Milliseconds (a number) or a duration string ("90s", "15m"), as Herald-Delay takes it. */
function toDuration(d) {
  if (typeof d === 'number') {
    if (!Number.isFinite(d) || d < 0) throw new TypeError('delay must be 0 or more milliseconds');
    return `${Math.round(d)}ms`;
  }
  if (typeof d === 'string' && d !== '') return d;
  throw new TypeError('delay must be milliseconds or a duration string such as "15m"');
}

/**
 * A client of one Herald server. It holds no connection itself: REST calls
 * use fetch, and socket() and stream() open streams that each manage their
 * own. See index.d.ts for the contract of each member.
 */
export class Herald {
  #base;
  #key;
  #fetch;
  #transport;

  /** @param {import('../index.js').HeraldOptions} [options] */
  constructor(options = {}) {
    const url = options.url ?? globalThis.location?.origin;
    if (typeof url !== 'string' || url === '') throw new TypeError('Herald needs the server URL (url option)');
    let base;
    try {
      base = new URL(url, globalThis.location?.href);
    } catch {
      throw new TypeError(`the url option is not a URL: ${JSON.stringify(url)}`);
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') {
      throw new TypeError(`the url option must be http: or https:, got ${JSON.stringify(url)}`);
    }
    this.#base = base.href.replace(/\/+$/, '');
    this.#key = options.key || undefined;
    const f = options.fetch ?? globalThis.fetch;
    if (typeof f !== 'function') throw new TypeError('no fetch: pass the fetch option');
    this.#fetch = (input, init) => f(input, init); // called unbound, as browsers require
    const token = options.token;
    if (token !== undefined && typeof token !== 'string' && typeof token !== 'function') {
      throw new TypeError('the token option must be a string or a function returning one');
    }
    this.#transport = Object.freeze({
      httpBase: this.#base,
      wsBase: this.#base.replace(/^http/, 'ws'),
      key: this.#key,
      token: token === undefined || token === '' ? undefined : typeof token === 'function' ? async () => token() : async () => token,
      refreshable: typeof token === 'function',
      fetch: this.#fetch,
      WebSocket: 'WebSocket' in options ? options.WebSocket : globalThis.WebSocket,
      backoff: checkBackoff(options.backoff),
    });
  }

  /** The server's base URL, without a trailing slash. */
  get url() {
    return this.#base;
  }

  async #request(method, path, { query, body, headers = {}, signal } = {}) {
    let url = this.#base + path;
    if (query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) q.set(k, String(v));
      const s = q.toString();
      if (s) url += '?' + s;
    }
    const h = { Accept: 'application/json', ...headers };
    if (this.#key) h.Authorization = `Bearer ${this.#key}`;
    let res;
    try {
      res = await this.#fetch(url, { method, headers: h, body, signal });
    } catch (err) {
      if (signal?.aborted) throw signal.reason ?? err;
      throw new ConnectionError(this.#base, err);
    }
    if (!res.ok) throw await errorFromResponse(res);
    if (res.status === 204) return undefined;
    try {
      return await res.json();
    } catch (err) {
      if (signal?.aborted) throw signal.reason ?? err;
      throw new ConnectionError(this.#base, err);
    }
  }

  #json(method, path, value, signal) {
    return this.#request(method, path, {
      body: value === undefined ? undefined : JSON.stringify(value),
      headers: value === undefined ? {} : { 'Content-Type': 'application/json' },
      signal,
    });
  }

  // Publishing

  async publish(topic, data, options = {}) {
    const { body, contentType } = encodeBody(data, options.contentType);
    const headers = { 'Content-Type': contentType };
    if (options.id !== undefined) headers['Herald-Event-Id'] = options.id;
    if (options.type !== undefined) headers['Herald-Event-Type'] = options.type;
    if (options.key !== undefined) headers['Herald-Event-Key'] = options.key;
    if (options.idempotencyKey !== undefined) headers['Idempotency-Key'] = options.idempotencyKey;
    if (options.deliverAt !== undefined) headers['Herald-Deliver-At'] = toRFC3339(options.deliverAt);
    if (options.delay !== undefined) headers['Herald-Delay'] = toDuration(options.delay);
    for (const [name, value] of Object.entries(options.headers ?? {})) headers[`Herald-Header-${name}`] = value;
    return this.#request('POST', `/v1/topics/${seg(topic)}/events`, { body, headers, signal: options.signal });
  }

  // Delayed events

  listScheduled(topic, options = {}) {
    return this.#request('GET', `/v1/topics/${seg(topic)}/scheduled`, {
      query: { cursor: options.cursor, limit: options.limit },
      signal: options.signal,
    });
  }

  cancelScheduled(topic, id, options = {}) {
    return this.#request('DELETE', `/v1/topics/${seg(topic)}/scheduled/${seg(id)}`, { signal: options.signal });
  }

  // Schedules

  putSchedule(name, schedule, options = {}) {
    return this.#json('PUT', `/v1/schedules/${seg(name)}`, schedule, options.signal);
  }

  getSchedule(name, options = {}) {
    return this.#request('GET', `/v1/schedules/${seg(name)}`, { signal: options.signal });
  }

  listSchedules(options = {}) {
    return this.#request('GET', '/v1/schedules', { query: { cursor: options.cursor, limit: options.limit }, signal: options.signal });
  }

  deleteSchedule(name, options = {}) {
    return this.#request('DELETE', `/v1/schedules/${seg(name)}`, { signal: options.signal });
  }

  pauseSchedule(name, options = {}) {
    return this.#request('POST', `/v1/schedules/${seg(name)}/pause`, { signal: options.signal });
  }

  resumeSchedule(name, options = {}) {
    return this.#request('POST', `/v1/schedules/${seg(name)}/resume`, { signal: options.signal });
  }

  // End users' server-side subscriptions

  putUserSubscription(user, topic, options = {}) {
    return this.#request('PUT', `/v1/users/${seg(user)}/subscriptions/${seg(topic)}`, { signal: options.signal });
  }

  deleteUserSubscription(user, topic, options = {}) {
    return this.#request('DELETE', `/v1/users/${seg(user)}/subscriptions/${seg(topic)}`, { signal: options.signal });
  }

  async listUserSubscriptions(user, options = {}) {
    const out = await this.#request('GET', `/v1/users/${seg(user)}/subscriptions`, { signal: options.signal });
    return out.subscriptions;
  }

  userConnections(user, options = {}) {
    return this.#request('GET', `/v1/users/${seg(user)}/connections`, { signal: options.signal });
  }

  async publishBatch(topic, events, options = {}) {
    if (!Array.isArray(events)) throw new TypeError('publishBatch takes an array of events');
    const out = await this.#json('POST', `/v1/topics/${seg(topic)}/events:batch`,
      { events: events.map(encodeBatchEvent) }, options.signal);
    return out.events;
  }

  async publishCloudEvent(topic, event, options = {}) {
    return this.#request('POST', `/v1/topics/${seg(topic)}/events`, {
      body: JSON.stringify(event),
      headers: { 'Content-Type': 'application/cloudevents+json' },
      signal: options.signal,
    });
  }

  // Reading

  listEvents(topic, options = {}) {
    return this.#request('GET', `/v1/topics/${seg(topic)}/events`, {
      query: { after_seq: options.afterSeq, limit: options.limit },
      signal: options.signal,
    });
  }

  async *events(topic, options = {}) {
    let after = options.afterSeq ?? 0;
    const limit = options.pageSize ?? 100;
    for (;;) {
      const page = await this.listEvents(topic, { afterSeq: after, limit, signal: options.signal });
      yield* page.events;
      if (page.events.length < limit) return;
      after = page.next_after_seq;
    }
  }

  getEvent(topic, id, options = {}) {
    return this.#request('GET', `/v1/topics/${seg(topic)}/events/${seg(id)}`, { signal: options.signal });
  }

  // Topics

  listTopics(options = {}) {
    return this.#request('GET', '/v1/topics', { query: { cursor: options.cursor, limit: options.limit }, signal: options.signal });
  }

  getTopic(name, options = {}) {
    return this.#request('GET', `/v1/topics/${seg(name)}`, { signal: options.signal });
  }

  putTopic(name, settings = {}, options = {}) {
    return this.#json('PUT', `/v1/topics/${seg(name)}`, settings, options.signal);
  }

  deleteTopic(name, options = {}) {
    return this.#request('DELETE', `/v1/topics/${seg(name)}`, { signal: options.signal });
  }

  // Webhook and other subscriptions

  createSubscription(spec, options = {}) {
    return this.#json('POST', '/v1/subscriptions', spec, options.signal);
  }

  listSubscriptions(options = {}) {
    const { cursor, limit, state, topic } = options;
    return this.#request('GET', '/v1/subscriptions', { query: { cursor, limit, state, topic }, signal: options.signal });
  }

  getSubscription(id, options = {}) {
    return this.#request('GET', `/v1/subscriptions/${seg(id)}`, { signal: options.signal });
  }

  updateSubscription(id, patch, options = {}) {
    return this.#json('PATCH', `/v1/subscriptions/${seg(id)}`, patch, options.signal);
  }

  deleteSubscription(id, options = {}) {
    return this.#request('DELETE', `/v1/subscriptions/${seg(id)}`, { signal: options.signal });
  }

  pauseSubscription(id, options = {}) {
    return this.#request('POST', `/v1/subscriptions/${seg(id)}/pause`, { signal: options.signal });
  }

  resumeSubscription(id, options = {}) {
    return this.#request('POST', `/v1/subscriptions/${seg(id)}/resume`, { signal: options.signal });
  }

  // Streams

  createToken(request, options = {}) {
    return this.#json('POST', '/v1/tokens', request, options.signal);
  }

  socket(options = {}) {
    return new HeraldSocket(this.#transport, options);
  }

  stream(topic, options) {
    return new HeraldStream(this.#transport, topic, options);
  }

  userStream(options) {
    return new HeraldUserStream(this.#transport, options);
  }
}
