// WebSocket streams against a real Herald, through drops, restarts and
// expiring tokens: every event comes once, in order.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Herald, HeraldError } from '../index.js';
import {
  needsHerald, needsControl, admin, topicName, waitFor, dropConnections, restartHerald, release, publishRange, seqs, url, backoff,
} from './helpers.js';

/** A socket that records what its hooks see, closed when the test ends. */
function recorder(t, h, options = {}) {
  const rec = { opens: 0, closes: [], errors: [] };
  rec.socket = h.socket({
    onOpen: () => rec.opens++,
    onClose: (info) => rec.closes.push(info),
    onError: (e) => rec.errors.push(e),
    ...options,
  });
  t.after(() => rec.socket.close());
  return rec;
}

test('live events on several subscriptions of one connection', { skip: needsHerald }, async (t) => {
  const h = admin();
  const a = topicName('live');
  const b = topicName('live');
  await h.putTopic(a);
  await h.putTopic(b);
  await h.publish(a, { n: 0 }); // history a live subscription does not get
  const rec = recorder(t, h);
  const gotA = [];
  const gotAll = [];
  const acks = [];
  const subA = rec.socket.subscribe(a, { onEvent: (e) => gotA.push(e), onSubscribed: (f) => acks.push(f) });
  const prefix = a.split('.').slice(0, -1).join('.');
  const subAll = rec.socket.subscribe(`${prefix}.*`, {
    filter: { types: ['test.*'] }, onEvent: (e) => gotAll.push(`${e.topic}#${e.seq}`), onSubscribed: (f) => acks.push(f),
  });
  await waitFor('both acknowledgements', () => acks.length === 2);
  assert.equal(rec.socket.state, 'open');
  assert.deepEqual([subA.state, subAll.state], ['active', 'active']);
  assert.deepEqual(subA.positions, { [a]: 1 }, 'a live subscription starts after the head');

  await h.publish(a, { n: 1 }, { type: 'test.n', key: 'k', headers: { Trace: 'x' } });
  await h.publish(b, 'text', { type: 'test.t' });
  await h.publish(b, { skipped: true }, { type: 'other' });
  await waitFor('the events', () => gotA.length === 1 && gotAll.length === 2);
  const e = gotA[0];
  assert.deepEqual([e.topic, e.seq, e.type, e.key, e.headers.Trace, e.content_type], [a, 2, 'test.n', 'k', 'x', 'application/json']);
  assert.deepEqual(e.data, { n: 1 });
  assert.ok(e.id && e.time && !('op' in e) && !('sub' in e));
  assert.deepEqual(gotAll, [`${a}#2`, `${b}#1`]);
  assert.deepEqual(subAll.positions, { [a]: 2, [b]: 1 });

  subA.unsubscribe();
  assert.equal(subA.state, 'closed');
  await h.publish(a, { n: 2 }, { type: 'test.n' });
  await waitFor('the pattern to get it', () => gotAll.length === 3);
  assert.equal(gotA.length, 1, 'no event after unsubscribe');
  assert.deepEqual(rec.errors, []);
});

test('since replays history, then goes live', { skip: needsHerald }, async (t) => {
  const h = admin();
  const topic = topicName('replay');
  await h.putTopic(topic);
  await publishRange(h, topic, 1, 5);
  const rec = recorder(t, h);
  const all = [];
  const fromThree = [];
  rec.socket.subscribe(topic, { since: 0, onEvent: (e) => all.push(e.seq) });
  rec.socket.subscribe(topic, { since: 3, onEvent: (e) => fromThree.push(e.seq) });
  await waitFor('the history', () => all.length === 5 && fromThree.length === 2);
  await h.publish(topic, { n: 6 });
  await waitFor('the live event', () => all.length === 6 && fromThree.length === 3);
  assert.deepEqual(all, seqs(6));
  assert.deepEqual(fromThree, [4, 5, 6]);
});

/**
 * Subscribes to a topic and a pattern over it, publishes, breaks the
 * connection with cut(), publishes more while the client reconnects, and
 * checks that each subscription got every event once, in order.
 */
async function survives(t, cut) {
  const h = admin();
  const base = topicName('resume'); // the pattern covers this test's topics only
  const topic = `${base}.a`;
  await h.putTopic(topic);
  const rec = recorder(t, h);
  const one = [];
  const pattern = [];
  const acks = [];
  rec.socket.subscribe(topic, { onEvent: (e) => one.push(e.seq), onSubscribed: (f) => acks.push(f) });
  rec.socket.subscribe(`${base}.>`, { onEvent: (e) => pattern.push(e.seq), onSubscribed: (f) => acks.push(f) });
  await waitFor('the subscriptions', () => acks.length === 2);
  await publishRange(h, topic, 1, 10);
  await waitFor('the first events', () => one.length === 10 && pattern.length === 10);

  await cut();
  await publishRange(h, topic, 11, 20); // while the client is kept away
  assert.deepEqual([rec.opens, one.length], [1, 10]);
  await release();
  await waitFor('a reconnect', () => rec.opens >= 2);
  await publishRange(h, topic, 21, 25);
  await waitFor('every event', () => one.length >= 25 && pattern.length >= 25);
  // Events come in order: once the last is in, a duplicate would be too.
  assert.deepEqual(one, seqs(25));
  assert.deepEqual(pattern, seqs(25));
  assert.ok(rec.closes.some((c) => c.reconnect), 'the client saw the connection end');
  return rec;
}

test('a dropped connection resumes without gap or duplicate', { skip: needsControl }, async (t) => {
  const rec = await survives(t, async () => assert.ok((await dropConnections()) >= 1));
  assert.equal(rec.closes[0].code, 1006);
  assert.deepEqual(rec.errors, []);
});

test('a server restart is resumed without gap or duplicate', { skip: needsControl }, async (t) => {
  const rec = await survives(t, restartHerald);
  assert.equal(rec.closes[0].code, 1012);
  assert.match(rec.closes[0].reason, /server restart/);
  assert.deepEqual(rec.errors, []);
});

test('an expired token is refreshed through the callback, and the stream goes on', { skip: needsHerald }, async (t) => {
  const h = admin();
  const topic = topicName('token');
  await h.putTopic(topic);
  let calls = 0;
  // The first token lives two or three seconds; the next ones an hour.
  let openGate;
  const gate = new Promise((resolve) => (openGate = resolve));
  const token = async () => {
    const n = calls++;
    if (n === 1) await gate; // the refresh waits until the test has published
    return (await h.createToken({ scopes: [`read:${topic}`], ttl: n === 0 ? '3s' : '1h' })).token;
  };
  const browser = new Herald({ url, token, backoff });
  const rec = recorder(t, browser);
  const got = [];
  const acks = [];
  rec.socket.subscribe(topic, { onEvent: (e) => got.push(e.seq), onSubscribed: (f) => acks.push(f) });
  await waitFor('the subscription', () => acks.length === 1);
  await publishRange(h, topic, 1, 3);
  await waitFor('the token to expire and a new one to be asked for', () => calls === 2);
  assert.equal(rec.closes[0].code, 1008);
  assert.equal(rec.closes[0].delay, 0, 'a new token needs no backoff');
  assert.equal(rec.closes[0].error.status, 401);
  await publishRange(h, topic, 4, 6);
  assert.equal(got.length, 3);
  openGate();
  await waitFor('the events after the refresh', () => got.length >= 6);
  assert.deepEqual(got, seqs(6));
  assert.equal(calls, 2, 'the token callback is called once per connection');
  assert.equal(rec.opens, 2);
  assert.deepEqual(rec.errors, []);
});

test('a refused handshake: a refreshed token gets one more try, a bad one ends the socket', { skip: needsHerald }, async (t) => {
  const h = admin();
  const topic = topicName('refused');
  await h.putTopic(topic);
  const good = (await h.createToken({ scopes: [`read:${topic}`] })).token;
  let calls = 0;
  const once = new Herald({ url, backoff, token: () => (calls++ === 0 ? 'not-a-token' : good) });
  const rec = recorder(t, once);
  const acks = [];
  rec.socket.subscribe(topic, { onEvent: () => {}, onSubscribed: (f) => acks.push(f) });
  await waitFor('the subscription with the second token', () => acks.length === 1);
  assert.equal(calls, 2);
  assert.equal(rec.closes[0].error.status, 401);
  assert.deepEqual(rec.errors, []);

  const bad = recorder(t, new Herald({ url, backoff, token: 'not-a-token' }));
  bad.socket.subscribe(topic, { onEvent: () => {} });
  await waitFor('the socket to give up', () => bad.socket.state === 'closed');
  assert.equal(bad.errors.length, 1);
  const err = bad.errors[0];
  assert.ok(err instanceof HeraldError);
  assert.deepEqual([err.status, err.code], [401, 'unauthorized']);
  assert.match(err.detail, /token/);
  assert.deepEqual(bad.closes.at(-1), { code: 1006, reason: '', reconnect: false, error: err });
});

test('a refused subscription is a typed error; the others go on', { skip: needsHerald }, async (t) => {
  const h = admin();
  const topic = topicName('allowed');
  const other = topicName('secret');
  await h.putTopic(topic);
  await h.putTopic(other);
  const token = (await h.createToken({ scopes: [`read:${topic}`, `read:${topic}.>`] })).token;
  const rec = recorder(t, new Herald({ url, token, backoff }));
  const got = [];
  const subErrors = [];
  const ok = rec.socket.subscribe(topic, { onEvent: (e) => got.push(e.seq) });
  const refused = rec.socket.subscribe(other, { onEvent: () => {}, onError: (e) => subErrors.push(e) });
  const unknown = rec.socket.subscribe(`${topic}.missing`, { onEvent: () => {} });
  await waitFor('the refusals', () => subErrors.length === 1 && rec.errors.length === 1);
  assert.deepEqual([subErrors[0].status, subErrors[0].code, subErrors[0].field], [403, 'forbidden', 'topic']);
  assert.deepEqual([rec.errors[0].status, rec.errors[0].code], [404, 'not-found']); // no onError of its own: the socket's
  assert.deepEqual([refused.state, unknown.state], ['closed', 'closed']);
  await waitFor('the allowed subscription', () => ok.state === 'active');
  await h.publish(topic, { n: 1 });
  await waitFor('its event', () => got.length === 1);

  // Deleting a topic ends its subscriptions with a 404.
  const deleted = [];
  const s = rec.socket.subscribe(topic, { id: 'doomed', onEvent: () => {}, onError: (e) => deleted.push(e) });
  await waitFor('the second subscription', () => s.state === 'active');
  await h.deleteTopic(topic);
  await waitFor('the deletion', () => deleted.length === 1);
  assert.deepEqual([deleted[0].status, deleted[0].code], [404, 'not-found']);
  assert.equal(rec.socket.state, 'open', 'the connection goes on');
});

test('close and AbortSignal end the socket for good', { skip: needsHerald }, async (t) => {
  const h = admin();
  const topic = topicName('close');
  await h.putTopic(topic);
  const ctrl = new AbortController();
  const rec = recorder(t, h, { signal: ctrl.signal });
  const acks = [];
  rec.socket.subscribe(topic, { onEvent: () => {}, onSubscribed: (f) => acks.push(f) });
  await waitFor('the subscription', () => acks.length === 1);
  ctrl.abort();
  assert.equal(rec.socket.state, 'closed');
  assert.deepEqual(rec.closes, [{ code: 1000, reason: 'closed by the client', reconnect: false }]);
  assert.throws(() => rec.socket.subscribe(topic, { onEvent: () => {} }), /closed/);
  rec.socket.close(); // twice is fine
  assert.equal(rec.closes.length, 1);
  const pre = new AbortController();
  pre.abort();
  assert.equal(h.socket({ signal: pre.signal }).state, 'closed');
});
