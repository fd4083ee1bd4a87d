// REST against a real Herald: publish (single, batch, CloudEvents), read
// with paging, topics, subscriptions, tokens, and the errors of each.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Herald, HeraldError, ConnectionError, eventBytes, eventText } from '../index.js';
import { needsHerald, admin, topicName, url } from './helpers.js';

test('publish and read back: JSON, text, bytes, metadata and dedup', { skip: needsHerald }, async () => {
  const h = admin();
  const topic = topicName('rest');
  const created = await h.putTopic(topic, { retention: '1d' });
  assert.equal(created.name, topic);
  assert.equal(created.retention, '1d');

  const first = await h.publish(topic, { order: 'A-1', total: 12.5 }, {
    type: 'order.created', key: 'A-1', idempotencyKey: 'order-A-1', headers: { 'X-Tenant': 'acme' },
  });
  assert.deepEqual([first.topic, first.seq, first.duplicate], [topic, 1, false]);
  const again = await h.publish(topic, { order: 'A-1', total: 12.5 }, { idempotencyKey: 'order-A-1' });
  assert.deepEqual([again.id, again.seq, again.duplicate], [first.id, 1, true]);
  await h.publish(topic, 'two\nlines');
  await h.publish(topic, new Uint8Array([0, 1, 0xff]));

  const page = await h.listEvents(topic);
  assert.equal(page.next_after_seq, 3);
  const [a, b, c] = page.events;
  assert.deepEqual(a.data, { order: 'A-1', total: 12.5 });
  assert.deepEqual([a.type, a.key, a.idempotency_key, a.headers['X-Tenant'], a.content_type],
    ['order.created', 'A-1', 'order-A-1', 'acme', 'application/json']);
  assert.equal(eventText(b), 'two\nlines');
  assert.equal(b.content_type, 'text/plain; charset=utf-8');
  assert.deepEqual(eventBytes(c), new Uint8Array([0, 1, 0xff]));
  assert.deepEqual(await h.getEvent(topic, a.id), a);
});

test('batch and CloudEvents publishes', { skip: needsHerald }, async () => {
  const h = admin();
  const topic = topicName('batch');
  await h.putTopic(topic);
  const results = await h.publishBatch(topic, [
    { data: { n: 1 }, type: 'n', key: 'k1', idempotencyKey: 'b-1' },
    { data: new Uint8Array([9, 8]), contentType: 'application/x-pair' },
    { data: 'plain', headers: { Source: 'batch' } },
  ]);
  assert.deepEqual(results.map((r) => [r.seq, r.duplicate]), [[1, false], [2, false], [3, false]]);
  const dup = await h.publishBatch(topic, [{ data: { n: 1 }, idempotencyKey: 'b-1' }]);
  assert.deepEqual([dup[0].id, dup[0].duplicate], [results[0].id, true]);

  const ce = await h.publishCloudEvent(topic, {
    specversion: '1.0', id: 'ce-1', source: '/billing', type: 'invoice.paid', data: { invoice: 7 },
  });
  assert.deepEqual([ce.id, ce.seq], ['ce-1', 4]);

  const events = [];
  for await (const e of h.events(topic, { pageSize: 3 })) events.push(e);
  assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4]);
  assert.deepEqual(events[0].data, { n: 1 });
  assert.deepEqual([events[1].content_type, eventBytes(events[1])], ['application/x-pair', new Uint8Array([9, 8])]);
  assert.deepEqual([eventText(events[2]), events[2].headers.Source], ['plain', 'batch']);
  assert.deepEqual([events[3].type, events[3].data], ['invoice.paid', { invoice: 7 }]);
  const after = [];
  for await (const e of h.events(topic, { afterSeq: 2, pageSize: 1 })) after.push(e.seq);
  assert.deepEqual(after, [3, 4]);
});

test('paging through a long topic', { skip: needsHerald }, async () => {
  const h = admin();
  const topic = topicName('paging');
  await h.putTopic(topic);
  for (let i = 0; i < 5; i++) {
    await h.publishBatch(topic, Array.from({ length: 50 }, (_, j) => ({ data: { n: i * 50 + j + 1 } })));
  }
  const p1 = await h.listEvents(topic, { limit: 100 });
  const p2 = await h.listEvents(topic, { afterSeq: p1.next_after_seq, limit: 100 });
  assert.deepEqual([p1.events.length, p1.next_after_seq, p2.events[0].seq], [100, 100, 101]);
  let count = 0;
  let last = 0;
  for await (const e of h.events(topic, { pageSize: 64 })) {
    assert.equal(e.seq, last + 1);
    assert.deepEqual(e.data, { n: e.seq });
    last = e.seq;
    count++;
  }
  assert.equal(count, 250);
});

test('errors are HeraldErrors with type, status, detail and field', { skip: needsHerald }, async () => {
  const h = admin();
  const missing = await h.publish('no.such.topic', { x: 1 }).catch((e) => e);
  assert.ok(missing instanceof HeraldError, String(missing));
  assert.deepEqual([missing.status, missing.code, missing.type], [404, 'not-found', 'https://herald.dev/problems/not-found']);
  assert.match(missing.detail, /no\.such\.topic/);
  assert.ok(missing.requestId);

  const bad = await h.putTopic('bad..name').catch((e) => e);
  assert.deepEqual([bad.status, bad.code, bad.field], [400, 'invalid', 'topic']);

  const badRetention = await h.putTopic(topicName('x'), { retention: 'forever' }).catch((e) => e);
  assert.deepEqual([badRetention.status, badRetention.field], [400, 'retention']);

  const topic = topicName('small');
  await h.putTopic(topic, { max_event_bytes: 4 });
  const tooLarge = await h.publish(topic, 'too large').catch((e) => e);
  assert.deepEqual([tooLarge.status, tooLarge.code], [413, 'too-large']);
  const batchField = await h.publishBatch(topic, [{ data: 'ok' }, { data: 'far too large' }]).catch((e) => e);
  assert.deepEqual([batchField.status, batchField.field], [413, 'events[1].data_base64']);

  const nobody = await new Herald({ url, key: 'hrld_wrong-key-0123456789' }).listTopics().catch((e) => e);
  assert.deepEqual([nobody.status, nobody.code], [401, 'unauthorized']);
});

test('a key without the scope gets 403', { skip: needsHerald }, async () => {
  const h = admin();
  const topic = topicName('scoped');
  await h.putTopic(topic);
  // Keys are the administrator's business, not this client's: made over plain fetch.
  const res = await fetch(`${url}/v1/keys`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${process.env.HERALD_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'reader', scopes: [`read:${topic}`] }),
  });
  assert.equal(res.status, 201);
  const { secret } = await res.json();
  const reader = new Herald({ url, key: secret });
  const err = await reader.publish(topic, { x: 1 }).catch((e) => e);
  assert.deepEqual([err.status, err.code], [403, 'forbidden']);
  assert.deepEqual((await reader.listEvents(topic)).events, []);
});

test('an unreachable server is a ConnectionError; an aborted call rejects with the reason', { skip: needsHerald }, async () => {
  // A port that was just free: nothing listens there.
  const { createServer } = await import('node:net');
  const srv = createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const port = srv.address().port;
  await new Promise((r) => srv.close(r));
  const down = new Herald({ url: `http://127.0.0.1:${port}`, key: 'k' });
  const err = await down.listTopics().catch((e) => e);
  assert.ok(err instanceof ConnectionError, String(err));
  assert.match(err.message, /cannot reach Herald/);

  const ctrl = new AbortController();
  const why = new Error('the user navigated away');
  ctrl.abort(why);
  const aborted = await admin().listTopics({ signal: ctrl.signal }).catch((e) => e);
  assert.equal(aborted, why);
});

test('topics, subscriptions and tokens', { skip: needsHerald }, async () => {
  const h = admin();
  const topic = topicName('manage');
  await h.putTopic(topic, { retention: '2d' });
  const got = await h.getTopic(topic);
  assert.deepEqual([got.name, got.retention], [topic, '2d']);
  const names = [];
  let cursor;
  do {
    const page = await h.listTopics({ cursor, limit: 2 });
    names.push(...page.topics.map((t) => t.name));
    cursor = page.next_cursor;
  } while (cursor);
  assert.ok(names.includes(topic), `${topic} in ${names}`);

  const sub = await h.createSubscription({ topic, url: 'https://hooks.example.com/herald', description: 'js client' });
  assert.equal(sub.topic, topic);
  assert.equal((await h.getSubscription(sub.id)).id, sub.id);
  const listed = await h.listSubscriptions({ topic });
  assert.deepEqual(listed.subscriptions.map((s) => s.id), [sub.id]);
  assert.equal((await h.pauseSubscription(sub.id)).state, 'paused');
  assert.equal((await h.resumeSubscription(sub.id)).state, 'pending'); // never verified: asked again
  const updated = await h.updateSubscription(sub.id, { description: 'renamed' });
  assert.equal(updated.description, 'renamed');
  await h.deleteSubscription(sub.id);
  const gone = await h.getSubscription(sub.id).catch((e) => e);
  assert.equal(gone.status, 404);

  const tok = await h.createToken({ scopes: [`read:${topic}`], ttl: '5m' });
  assert.ok(tok.token && tok.expires_at);
  assert.deepEqual(tok.scopes, [`read:${topic}`]);
  const refused = await h.createToken({ scopes: [`publish:${topic}`] }).catch((e) => e);
  assert.deepEqual([refused.status, refused.field], [400, 'scopes']);

  await h.deleteTopic(topic);
  assert.equal((await h.getTopic(topic).catch((e) => e)).status, 404);
});
