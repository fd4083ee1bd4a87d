// Server-Sent Events streams against a real Herald, through drops,
// restarts, expiring tokens and deleted topics.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Herald, HeraldError } from '../index.js';
import {
  needsHerald, needsControl, admin, topicName, waitFor, dropConnections, restartHerald, release, publishRange, seqs, url, backoff,
} from './helpers.js';

/** A stream that records what its hooks see, closed when the test ends. */
function recorder(t, h, topic, options = {}) {
  const rec = { opens: 0, closes: [], errors: [], events: [], gaps: [] };
  rec.stream = h.stream(topic, {
    onEvent: (e) => rec.events.push(e),
    onOpen: () => rec.opens++,
    onClose: (info) => rec.closes.push(info),
    onError: (e) => rec.errors.push(e),
    onGap: (g) => rec.gaps.push(g),
    ...options,
  });
  t.after(() => rec.stream.close());
  return rec;
}

test('live events with their metadata, and replay with since', { skip: needsHerald }, async (t) => {
  const h = admin();
  const topic = topicName('sse');
  await h.putTopic(topic);
  await h.publish(topic, { n: 1 });
  const live = recorder(t, h, topic);
  const all = recorder(t, h, topic, { since: 0 });
  const typed = recorder(t, h, topic, { since: 0, filter: { types: ['keep'] } });
  await waitFor('the starting position', () => live.stream.lastEventId === '1');
  assert.equal(live.stream.state, 'open');
  await h.publish(topic, new Uint8Array([1, 2]), { type: 'keep', key: 'k' });
  await h.publish(topic, 'line one\nline two', { type: 'drop' });
  await waitFor('the events', () => live.events.length === 2 && all.events.length === 3 && typed.events.length === 1);
  const [bin, text] = live.events;
  assert.deepEqual([bin.topic, bin.seq, bin.type, bin.key, bin.data_base64], [topic, 2, 'keep', 'k', 'AQI=']);
  assert.deepEqual([text.seq, text.content_type], [3, 'text/plain; charset=utf-8']);
  assert.deepEqual(all.events.map((e) => e.seq), [1, 2, 3]);
  assert.deepEqual(all.events[0].data, { n: 1 });
  assert.deepEqual(typed.events.map((e) => e.seq), [2]);
  assert.equal(live.stream.lastEventId, '3');
  assert.deepEqual([...live.errors, ...all.errors, ...typed.errors], []);
});

/**
 * Streams a topic and a pattern over it, publishes, breaks the connection
 * with cut(), publishes more while the client reconnects, and checks that
 * each stream got every event once, in order.
 */
async function survives(t, cut) {
  const h = admin();
  const base = topicName('resume');
  const topic = `${base}.a`;
  await h.putTopic(topic);
  const one = recorder(t, h, topic);
  const pattern = recorder(t, h, `${base}.*`);
  await waitFor('both streams', () => one.stream.lastEventId !== '' && pattern.stream.lastEventId !== '');
  await publishRange(h, topic, 1, 10);
  await waitFor('the first events', () => one.events.length === 10 && pattern.events.length === 10);

  await cut();
  await publishRange(h, topic, 11, 20); // while the client is kept away
  assert.deepEqual([one.opens, pattern.opens, one.events.length], [1, 1, 10]);
  await release();
  await waitFor('a reconnect', () => one.opens >= 2 && pattern.opens >= 2);
  await publishRange(h, topic, 21, 25);
  await waitFor('every event', () => one.events.length >= 25 && pattern.events.length >= 25);
  assert.deepEqual(one.events.map((e) => e.seq), seqs(25));
  assert.deepEqual(pattern.events.map((e) => e.seq), seqs(25));
  assert.match(pattern.stream.lastEventId, new RegExp(`^@\\d+,${base.replaceAll('.', '\\.')}\\.a=25$`));
  assert.deepEqual([...one.errors, ...pattern.errors], []);
  return [one, pattern];
}

test('a dropped stream resumes from its last event id', { skip: needsControl }, async (t) => {
  const recs = await survives(t, async () => assert.ok((await dropConnections()) >= 2));
  for (const r of recs) assert.ok(r.closes[0].reconnect && r.closes[0].error, JSON.stringify(r.closes[0]));
});

test('a server restart is resumed without gap or duplicate', { skip: needsControl }, async (t) => {
  const recs = await survives(t, restartHerald);
  for (const r of recs) assert.deepEqual([r.closes[0].code, r.closes[0].reconnect], ['shutdown', true]);
});

test('an expired token is refreshed through the callback', { skip: needsHerald }, async (t) => {
  const h = admin();
  const topic = topicName('token');
  await h.putTopic(topic);
  let calls = 0;
  let openGate;
  const gate = new Promise((resolve) => (openGate = resolve));
  const token = async () => {
    const n = calls++;
    if (n === 1) await gate; // the refresh waits until the test has published
    return (await h.createToken({ scopes: [`read:${topic}`], ttl: n === 0 ? '3s' : '1h' })).token;
  };
  const rec = recorder(t, new Herald({ url, token, backoff }), topic);
  await waitFor('the stream', () => rec.stream.lastEventId === '0');
  await publishRange(h, topic, 1, 3);
  await waitFor('the token to expire and a new one to be asked for', () => calls === 2);
  assert.deepEqual([rec.closes[0].code, rec.closes[0].delay, rec.closes[0].error.status], ['token-expired', 0, 401]);
  await publishRange(h, topic, 4, 6);
  assert.equal(rec.events.length, 3);
  openGate();
  await waitFor('the events after the refresh', () => rec.events.length >= 6);
  assert.deepEqual(rec.events.map((e) => e.seq), seqs(6));
  assert.equal(calls, 2, 'the token callback is called once per connection');
  assert.deepEqual(rec.errors, []);
});

test('refusals are typed errors that end the stream', { skip: needsHerald }, async (t) => {
  const h = admin();
  const topic = topicName('refused');
  await h.putTopic(topic);

  const unknown = recorder(t, h, `${topic}.missing`);
  await waitFor('the 404', () => unknown.stream.state === 'closed');
  assert.equal(unknown.errors.length, 1);
  assert.ok(unknown.errors[0] instanceof HeraldError);
  assert.deepEqual([unknown.errors[0].status, unknown.errors[0].code], [404, 'not-found']);
  assert.equal(unknown.closes.at(-1).reconnect, false);

  const badKey = recorder(t, new Herald({ url, key: 'hrld_wrong-key-0123456789', backoff }), topic);
  await waitFor('the 401', () => badKey.stream.state === 'closed');
  assert.deepEqual([badKey.errors[0].status, badKey.errors[0].code], [401, 'unauthorized']);

  const badFilter = recorder(t, h, topic, { filter: { types: 'not a list' } });
  await waitFor('the 400', () => badFilter.stream.state === 'closed');
  assert.deepEqual([badFilter.errors[0].status, badFilter.errors[0].code], [400, 'invalid']);
  assert.ok(badFilter.errors[0].field, 'the field at fault');

  // A deleted topic ends the stream (herald.disconnect "not-found").
  const live = recorder(t, h, topic);
  await waitFor('the stream', () => live.stream.lastEventId === '0');
  await h.deleteTopic(topic);
  await waitFor('the end', () => live.stream.state === 'closed');
  assert.deepEqual([live.errors[0].status, live.errors[0].code], [404, 'not-found']);
  assert.deepEqual([live.closes.at(-1).code, live.closes.at(-1).reconnect], ['not-found', false]);
});

test('close and AbortSignal end the stream', { skip: needsHerald }, async (t) => {
  const h = admin();
  const topic = topicName('close');
  await h.putTopic(topic);
  const ctrl = new AbortController();
  const rec = recorder(t, h, topic, { signal: ctrl.signal });
  await waitFor('the stream', () => rec.stream.state === 'open');
  ctrl.abort();
  assert.equal(rec.stream.state, 'closed');
  await h.publish(topic, { n: 1 });
  const after = recorder(t, h, topic, { since: 0 });
  await waitFor('another stream to see the event', () => after.events.length === 1);
  assert.deepEqual(rec.events, []);
  assert.deepEqual(rec.closes, [{ code: 'closed', reason: 'closed by the client', reconnect: false }]);
});
