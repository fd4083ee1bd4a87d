// The parts that need no server: backoff, the SSE parser, payload
// encodings, errors, and the WebSocket frame dispatch (with a scripted
// WebSocket standing in for the connection).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Herald, HeraldError, backoffDelay, DEFAULT_BACKOFF, eventBytes, eventText } from '../index.js';
import { SSEParser } from '../src/sseparser.js';
import { encodeBody, encodeBatchEvent } from '../src/codec.js';
import { errorFromResponse } from '../src/errors.js';
import { waitFor } from './helpers.js';

test('backoff grows exponentially under a cap, with full jitter', () => {
  const opts = { initial: 100, max: 1000 };
  // The ceiling: the delay with a random source just below 1.
  const top = (a) => backoffDelay(a, opts, () => 0.999999) + 1;
  assert.deepEqual([0, 1, 2, 3, 4, 5, 60, 5000].map(top), [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
  assert.equal(backoffDelay(3, opts, () => 0), 0, 'full jitter starts at zero');
  assert.equal(backoffDelay(2, opts, () => 0.5), 200);
  for (let i = 0; i < 1000; i++) {
    const d = backoffDelay(i % 12, DEFAULT_BACKOFF);
    assert.ok(d >= 0 && d < DEFAULT_BACKOFF.max, `delay ${d}`);
  }
  assert.throws(() => new Herald({ url: 'http://x', backoff: { initial: -1 } }), /backoff.initial/);
});

test('the SSE parser handles any chunking and every line ending', () => {
  const stream = '\ufeffretry: 2000\n\nid: 41\n\n: heartbeat\r\nid: 42\r\nevent: order.created\r\ndata: {"a":1}\r\n\r\n' +
    'id: 43\rdata: line one\rdata: line two\r\rdata:no space\ndata\n\n';
  const want = [
    { event: 'message', data: '', id: '', hasData: false },
    { event: 'message', data: '', id: '41', hasData: false },
    { event: 'order.created', data: '{"a":1}', id: '42', hasData: true },
    { event: 'message', data: 'line one\nline two', id: '43', hasData: true },
    { event: 'message', data: 'no space\n', id: '43', hasData: true },
  ];
  for (let size = 1; size <= stream.length; size++) {
    const got = [];
    const p = new SSEParser((m) => got.push(m));
    for (let i = 0; i < stream.length; i += size) p.push(stream.slice(i, i + size));
    assert.deepEqual(got, want, `chunks of ${size}`);
  }
});

test('publish bodies: bytes, text and JSON, with the guessed content type', () => {
  assert.deepEqual(encodeBody({ a: 1 }), { body: '{"a":1}', contentType: 'application/json' });
  assert.deepEqual(encodeBody('hi'), { body: 'hi', contentType: 'text/plain; charset=utf-8' });
  assert.deepEqual(encodeBody('{"a":1}', 'application/json'), { body: '{"a":1}', contentType: 'application/json' });
  const bytes = new Uint8Array([0, 255]);
  assert.equal(encodeBody(bytes).contentType, 'application/octet-stream');
  assert.deepEqual(encodeBody(bytes.buffer).body, bytes);
  assert.deepEqual(encodeBatchEvent({ data: { a: 1 }, type: 't', idempotencyKey: 'i', headers: { H: 'v' } }),
    { type: 't', idempotency_key: 'i', headers: { H: 'v' }, data: { a: 1 } });
  assert.deepEqual(encodeBatchEvent({ data: bytes }), { data_base64: 'AP8=', content_type: 'application/octet-stream' });
  assert.deepEqual(encodeBatchEvent({ data: 'é', contentType: 'text/x' }), { data_base64: 'w6k=', content_type: 'text/x' });
  assert.deepEqual(eventBytes({ data_base64: 'AP8=' }), bytes);
  assert.equal(eventText({ data: { a: [1] } }), '{"a":[1]}');
  assert.equal(eventText({ data_base64: 'w6k=' }), 'é');
  const big = new Uint8Array(100_000).map((_, i) => i % 256);
  assert.deepEqual(eventBytes({ data_base64: encodeBatchEvent({ data: big }).data_base64 }), big);
});

test('problem documents become HeraldErrors; other error pages too', async () => {
  const problem = {
    type: 'https://herald.dev/problems/invalid', title: 'Invalid', status: 400,
    detail: 'retention must be a duration', field: 'retention', request_id: 'r1',
  };
  const e = await errorFromResponse(new Response(JSON.stringify(problem), {
    status: 400, headers: { 'Content-Type': 'application/problem+json' },
  }));
  assert.ok(e instanceof HeraldError && e instanceof Error);
  assert.equal(e.name, 'HeraldError');
  assert.deepEqual([e.status, e.code, e.field, e.detail, e.requestId], [400, 'invalid', 'retention', 'retention must be a duration', 'r1']);
  assert.match(e.message, /retention must be a duration \(field: retention, status 400/);
  const proxy = await errorFromResponse(new Response('<h1>Bad gateway</h1>', { status: 502, statusText: 'Bad Gateway' }));
  assert.deepEqual([proxy.status, proxy.type, proxy.code], [502, 'about:blank', '']);
  assert.match(proxy.detail, /502 Bad Gateway without a problem document: <h1>Bad gateway<\/h1>/);
});

/** A WebSocket whose server side the test plays. */
class ScriptedWebSocket {
  static all = [];
  constructor(url, init) {
    this.url = url;
    this.init = init;
    this.readyState = 0;
    this.sent = [];
    ScriptedWebSocket.all.push(this);
    queueMicrotask(() => {
      this.readyState = 1;
      this.onopen?.({});
    });
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.serverClose(1000, '');
  }
  serverSend(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  serverClose(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

test('frame dispatch: resume positions, unknown frames and foreign events go to onFrame', async (t) => {
  ScriptedWebSocket.all = [];
  const h = new Herald({ url: 'http://herald.test', key: 'k', WebSocket: ScriptedWebSocket, backoff: { initial: 0, max: 0 } });
  const frames = [];
  const errors = [];
  const socket = h.socket({ onFrame: (f) => frames.push(f), onError: (e) => errors.push(e) });
  t.after(() => socket.close());
  const one = [];
  const pat = [];
  socket.subscribe('orders.eu', { id: 'eu', onEvent: (e) => one.push(e) });
  const sub2 = socket.subscribe('orders.*', { id: 'all', positions: { 'orders.us': 7 }, onEvent: (e) => pat.push(e) });
  await waitFor('the first connection', () => ScriptedWebSocket.all.length === 1 && ScriptedWebSocket.all[0].sent.length === 2);
  const ws = ScriptedWebSocket.all[0];
  assert.equal(ws.url, 'ws://herald.test/v1/stream');
  assert.deepEqual(ws.init, { headers: { Authorization: 'Bearer k' } });
  assert.deepEqual(ws.sent, [
    { op: 'subscribe', id: 'eu', topic: 'orders.eu' },
    { op: 'subscribe', id: 'all', topic: 'orders.*', positions: { 'orders.us': 7 } },
  ]);
  ws.serverSend({ op: 'subscribed', id: 'eu', topic: 'orders.eu', recovered: true, after_seq: 41, time: '2026-01-01T00:00:00.000Z' });
  ws.serverSend({ op: 'subscribed', id: 'all', topic: 'orders.*', recovered: true, time: '2026-01-01T00:00:30.000Z' });
  ws.serverSend({ op: 'event', sub: 'all', topic: 'orders.us', seq: 8, id: 'e8', time: 't', data: { x: 1 } });
  ws.serverSend({ op: 'user.subscribed', topic: 'accounts.42' }); // a frame of a later server
  ws.serverSend({ op: 'event', sub: 'server-side', topic: 'accounts.42', seq: 3, id: 'a3', time: 't', data: {} });
  assert.deepEqual(pat, [{ topic: 'orders.us', seq: 8, id: 'e8', time: 't', data: { x: 1 } }]);
  assert.deepEqual(frames.map((f) => f.op), ['user.subscribed', 'event']);
  assert.equal(frames[1].sub, 'server-side');

  ws.serverClose(1012, 'server restart: reconnect and resume from your last seq');
  await waitFor('the second connection', () => ScriptedWebSocket.all.length === 2 && ScriptedWebSocket.all[1].sent.length === 2);
  // The single topic resumes after the seq it was acknowledged at; the
  // pattern resumes its topics, and the others from when it went live,
  // less the margin.
  assert.deepEqual(ScriptedWebSocket.all[1].sent, [
    { op: 'subscribe', id: 'eu', topic: 'orders.eu', since: 41 },
    { op: 'subscribe', id: 'all', topic: 'orders.*', positions: { 'orders.us': 8 }, since: '2026-01-01T00:00:20.000Z' },
  ]);
  assert.deepEqual(sub2.positions, { 'orders.us': 8 });
  assert.deepEqual(errors, []);
  socket.close();
  assert.equal(socket.state, 'closed');
  assert.equal(ScriptedWebSocket.all.length, 2);
});

test('a callback that throws is reported and the stream goes on', async (t) => {
  ScriptedWebSocket.all = [];
  const h = new Herald({ url: 'http://herald.test', token: 'tok', WebSocket: ScriptedWebSocket });
  const errors = [];
  const got = [];
  const socket = h.socket({ onError: (e) => errors.push(e) });
  t.after(() => socket.close());
  socket.subscribe('a', {
    onEvent: (e) => {
      got.push(e.seq);
      if (e.seq === 1) throw new Error('boom');
    },
  });
  await waitFor('the connection', () => ScriptedWebSocket.all[0]?.sent.length === 1);
  const ws = ScriptedWebSocket.all[0];
  assert.equal(ws.url, 'ws://herald.test/v1/stream?token=tok');
  const id = ws.sent[0].id;
  ws.serverSend({ op: 'event', sub: id, topic: 'a', seq: 1, id: 'x', time: 't' });
  ws.serverSend({ op: 'event', sub: id, topic: 'a', seq: 2, id: 'y', time: 't' });
  assert.deepEqual(got, [1, 2]);
  assert.deepEqual(errors.map((e) => e.message), ['boom']);
  socket.close();
});

test('a socket without a WebSocket implementation says what to do', () => {
  const h = new Herald({ url: 'http://herald.test', WebSocket: null });
  assert.throws(() => h.socket(), /no WebSocket implementation.*--experimental-websocket/);
});

test('a subscription made in onOpen is sent once, and resubscribed once after a reconnect', async (t) => {
  ScriptedWebSocket.all = [];
  const h = new Herald({ url: 'http://herald.test', token: 'tok', WebSocket: ScriptedWebSocket, backoff: { initial: 0, max: 0 } });
  let opens = 0;
  const socket = h.socket({
    onOpen: () => {
      if (opens++ === 0) socket.subscribe('late', { id: 'late', onEvent: () => {} });
    },
  });
  t.after(() => socket.close());
  socket.subscribe('first', { id: 'first', onEvent: () => {} });
  await waitFor('the first connection', () => ScriptedWebSocket.all[0]?.sent.length >= 2);
  assert.deepEqual(ScriptedWebSocket.all[0].sent.map((f) => f.id), ['first', 'late']);
  ScriptedWebSocket.all[0].serverClose(1006, '');
  await waitFor('the second connection', () => ScriptedWebSocket.all[1]?.sent.length === 2);
  assert.deepEqual(ScriptedWebSocket.all[1].sent.map((f) => f.id), ['first', 'late']);
  socket.close();
});
