// A user's Server-Sent Events stream (GET /v1/stream with a user token)
// against a real Herald: the server-side subscriptions the backend made,
// through a dropped connection and a restart, from an earlier stream's
// positions, and the refusal of a token that names no user.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Herald, HeraldError } from '../index.js';
import {
  needsHerald, needsControl, admin, waitFor, dropConnections, restartHerald, release, publishRange, url, backoff,
} from './helpers.js';

let users = 0;

/**
 * A user with a topic of its own the backend subscribed it to, and a
 * client in the user's browser holding a token of that user.
 */
async function endUser(h) {
  const user = `s${process.pid}x${++users}`;
  const topic = `accounts.${user}.balance`;
  await h.putTopic(topic);
  await h.putUserSubscription(user, topic);
  const { token } = await h.createToken({ user, scopes: ['read:accounts.{user}.>'] });
  return { user, topic, browser: new Herald({ url, token, backoff }) };
}

/** A user stream that records what its hooks see, closed when the test ends. */
function recorder(t, browser, options = {}) {
  const rec = { opens: 0, closes: [], errors: [], events: [], subscribed: [], unsubscribed: [], gaps: [] };
  rec.stream = browser.userStream({
    onUserEvent: (e) => rec.events.push(e),
    onOpen: () => rec.opens++,
    onClose: (info) => rec.closes.push(info),
    onError: (e) => rec.errors.push(e),
    onSubscribed: (f) => rec.subscribed.push(f),
    onUnsubscribed: (f) => rec.unsubscribed.push(f),
    onGap: (g) => rec.gaps.push(g),
    ...options,
  });
  t.after(() => rec.stream.close());
  return rec;
}

test("a user's stream carries its server-side subscriptions, added and removed live", { skip: needsHerald }, async (t) => {
  const h = admin();
  const { user, topic, browser } = await endUser(h);
  const rec = recorder(t, browser);
  await waitFor('the server-side subscription', () => rec.subscribed.length === 1);
  const [ack] = rec.subscribed;
  assert.deepEqual([ack.op, ack.id, ack.topic, ack.after_seq], ['subscribed', `user:${topic}`, topic, 0]);
  // Positions come with the acknowledgement, before any event.
  assert.deepEqual(rec.stream.userPositions, { [topic]: 0 });
  assert.equal(rec.stream.lastEventId, `${topic}=0`);
  assert.equal(rec.stream.state, 'open');
  await waitFor('the connection counted', async () => (await h.userConnections(user)).connections === 1);

  await h.publish(topic, { balance: 120 }, { type: 'account_balanceupdated', key: 'k1' });
  await waitFor('the event', () => rec.events.length === 1);
  const [e] = rec.events;
  assert.deepEqual([e.sub, e.topic, e.seq, e.type, e.key, e.data], [`user:${topic}`, topic, 1, 'account_balanceupdated', 'k1', { balance: 120 }]);
  assert.deepEqual(rec.stream.userPositions, { [topic]: 1 });

  // A second topic subscribed on the server while the user is connected.
  const other = `accounts.${user}.transactions`;
  await h.putTopic(other);
  await h.putUserSubscription(user, other);
  await waitFor('the new subscription', () => rec.subscribed.some((f) => f.topic === other));
  await h.publish(other, { amount: 5 }, { type: 'account_transactionadded' });
  await waitFor('its event', () => rec.events.length === 2);
  assert.deepEqual([rec.events[1].sub, rec.events[1].seq, rec.events[1].data], [`user:${other}`, 1, { amount: 5 }]);
  assert.deepEqual(rec.stream.userPositions, { [topic]: 1, [other]: 1 });

  await h.deleteUserSubscription(user, other);
  await waitFor('the removal', () => rec.unsubscribed.length === 1);
  assert.deepEqual([rec.unsubscribed[0].op, rec.unsubscribed[0].id], ['unsubscribed', `user:${other}`]);
  await h.publish(other, { amount: 6 });
  await h.publish(topic, { balance: 121 });
  await waitFor('the next event of the first topic', () => rec.events.length === 3);
  assert.deepEqual(rec.events.map((x) => x.topic), [topic, other, topic]);
  assert.equal(rec.opens, 1);
  assert.deepEqual(rec.errors, []);
});

/**
 * Publishes to a user's topic, breaks the stream with cut(), publishes
 * more while the client is kept away, and checks that the stream got
 * every event once, in order.
 */
async function survives(t, cut) {
  const h = admin();
  const { topic, browser } = await endUser(h);
  const rec = recorder(t, browser);
  await waitFor('the server-side subscription', () => rec.subscribed.length === 1);
  await publishRange(h, topic, 1, 5);
  await waitFor('the first events', () => rec.events.length === 5);

  await cut();
  await publishRange(h, topic, 6, 12); // only the resume can bring these
  assert.deepEqual([rec.opens, rec.events.length], [1, 5]);
  await release();
  await waitFor('a reconnect', () => rec.opens >= 2);
  await publishRange(h, topic, 13, 15);
  await waitFor('every event', () => rec.events.length >= 15);
  assert.deepEqual(rec.events.map((e) => e.seq), Array.from({ length: 15 }, (_, i) => i + 1));
  assert.deepEqual(rec.events.map((e) => e.data.n), Array.from({ length: 15 }, (_, i) => i + 1));
  assert.deepEqual(rec.stream.userPositions, { [topic]: 15 });
  assert.ok(rec.closes.length >= 1 && rec.closes.every((c) => c.reconnect), 'every connection that ended was followed by a reconnect');
  assert.deepEqual(rec.errors, []);
  return rec;
}

test("a dropped user stream resumes each subscription from its last event", { skip: needsControl }, async (t) => {
  await survives(t, async () => assert.ok((await dropConnections()) >= 1));
});

test('a user stream resumes after a restart of Herald, told why it ended', { skip: needsControl }, async (t) => {
  const rec = await survives(t, restartHerald);
  assert.equal(rec.closes[0].code, 'shutdown');
});

test("a new stream goes on from an earlier one's userPositions", { skip: needsHerald }, async (t) => {
  const h = admin();
  const { topic, browser } = await endUser(h);
  const first = recorder(t, browser);
  await waitFor('the server-side subscription', () => first.subscribed.length === 1);
  await publishRange(h, topic, 1, 2);
  await waitFor('the first events', () => first.events.length === 2);
  const positions = first.stream.userPositions;
  first.stream.close();
  assert.equal(first.stream.state, 'closed');
  assert.deepEqual(first.closes.at(-1), { code: 'closed', reason: 'closed by the client', reconnect: false });
  await publishRange(h, topic, 3, 4); // while no stream is open

  const second = recorder(t, browser, { userPositions: positions });
  await waitFor('the missed events', () => second.events.length === 2);
  assert.deepEqual(second.events.map((e) => e.seq), [3, 4]);
  assert.equal(second.subscribed[0].after_seq, 2);
  assert.deepEqual(first.events.length, 2, 'a closed stream delivers nothing more');
  assert.throws(() => browser.userStream({ onUserEvent() {}, userPositions: { [topic]: -1 } }), TypeError);
  assert.throws(() => browser.userStream({}), TypeError);
});

test('a token that names no user is refused for good', { skip: needsHerald }, async (t) => {
  const h = admin();
  const { token } = await h.createToken({ scopes: ['read:accounts.>'] });
  const rec = recorder(t, new Herald({ url, token, backoff }));
  await waitFor('the refusal', () => rec.stream.state === 'closed');
  assert.equal(rec.errors.length, 1);
  const [err] = rec.errors;
  assert.ok(err instanceof HeraldError);
  assert.deepEqual([err.status, err.code], [400, 'invalid']);
  assert.match(err.detail, /user token/);
  assert.deepEqual([rec.opens, rec.closes.length, rec.closes[0].reconnect], [0, 1, false]);
});

test('a closed signal ends the user stream before it connects', { skip: needsHerald }, async () => {
  const ctrl = new AbortController();
  ctrl.abort();
  const h = admin();
  const { browser } = await endUser(h);
  const s = browser.userStream({ onUserEvent() {}, signal: ctrl.signal });
  assert.equal(s.state, 'closed');
});
