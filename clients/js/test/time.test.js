// Delayed events, schedules and users' server-side subscriptions against a
// real Herald.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Herald } from '../index.js';
import { needsHerald, admin, topicName, url, backoff, waitFor } from './helpers.js';

test('delayed publish: pending, cancelled, then published with its id', { skip: needsHerald }, async () => {
  const h = admin();
  const topic = topicName('later');
  await h.putTopic(topic);
  const soon = await h.publish(topic, { n: 1 }, { delay: 1500 });
  assert.equal(soon.seq, 0);
  assert.ok(soon.deliver_at);
  const later = await h.publish(topic, { n: 2 }, { deliverAt: new Date(Date.now() + 3_600_000) });
  const [batchLater] = await h.publishBatch(topic, [{ data: { n: 3 }, delay: '1h' }]);
  assert.equal(batchLater.seq, 0);
  const pending = await h.listScheduled(topic);
  assert.deepEqual(pending.events.map((e) => e.id), [soon.id, later.id, batchLater.id]);
  await h.cancelScheduled(topic, later.id);
  await h.cancelScheduled(topic, batchLater.id);
  await assert.rejects(h.cancelScheduled(topic, later.id), (err) => err.status === 404);
  await waitFor('the delayed event in the log', async () => (await h.listEvents(topic)).events.length === 1);
  const [e] = (await h.listEvents(topic)).events;
  assert.deepEqual([e.id, e.seq, e.data], [soon.id, 1, { n: 1 }]);
  assert.ok(Date.parse(e.time) >= Date.parse(soon.deliver_at));
});

test('schedules: put, ticks, pause, delete', { skip: needsHerald }, async () => {
  const h = admin();
  const topic = topicName('ticks');
  await h.putTopic(topic);
  const name = topic.replaceAll('.', '-');
  const s = await h.putSchedule(name, { every: '1s', event: { topic, type: 'tick', data: { job: 'sync' } } });
  assert.deepEqual([s.name, s.every, s.missed, s.next_fire_times.length], [name, '1s', 'skip', 5]);
  await waitFor('two ticks', async () => (await h.listEvents(topic)).events.length >= 2);
  const ticks = (await h.listEvents(topic)).events.map((e) => e.headers['Herald-Tick']);
  assert.equal(new Set(ticks).size, ticks.length);
  assert.equal((await h.pauseSchedule(name)).paused, true);
  assert.ok((await h.listSchedules()).schedules.some((x) => x.name === name));
  await h.deleteSchedule(name);
  await assert.rejects(h.getSchedule(name), (err) => err.status === 404);
});

test("a user's socket gets its server-side subscriptions and resumes them", { skip: needsHerald }, async () => {
  const h = admin();
  const user = `u${process.pid}`;
  const topic = `accounts.${user}.balance`;
  await h.putTopic(topic);
  await h.putUserSubscription(user, topic);
  assert.deepEqual((await h.listUserSubscriptions(user)).map((s) => s.topic), [topic]);
  const { token, scopes } = await h.createToken({ user, scopes: ['read:accounts.{user}.>'] });
  assert.deepEqual(scopes, [`read:accounts.${user}.>`]);

  const got = [];
  const browser = new Herald({ url, token, backoff });
  let sock = browser.socket({ onUserEvent: (e) => got.push(e) });
  await waitFor('the connection counted', async () => (await h.userConnections(user)).connections === 1);
  await h.publish(topic, { balance: 1 });
  await waitFor('the first event', () => got.length === 1);
  assert.deepEqual([got[0].sub, got[0].data], [`user:${topic}`, { balance: 1 }]);

  // A new socket from the old one's positions gets what it missed, once.
  const positions = sock.userPositions;
  sock.close();
  await h.publish(topic, { balance: 2 });
  sock = browser.socket({ onUserEvent: (e) => got.push(e), userPositions: positions });
  await waitFor('the missed event', () => got.length === 2);
  assert.deepEqual(got.map((e) => e.data.balance), [1, 2]);
  sock.close();
  await h.deleteUserSubscription(user, topic);
});

test("a user's socket dropped before its first event resumes from where its subscription started", { skip: needsHerald }, async () => {
  const h = admin();
  const user = `v${process.pid}`;
  const topic = `accounts.${user}.balance`;
  await h.putTopic(topic);
  await h.publish(topic, { balance: 1 });
  await h.publish(topic, { balance: 2 });
  await h.putUserSubscription(user, topic);
  const { token } = await h.createToken({ user, scopes: ['read:accounts.{user}.>'] });

  const got = [];
  const started = [];
  const browser = new Herald({ url, token, backoff });
  let sock = browser.socket({ onUserEvent: (e) => got.push(e), onUserSubscribed: (f) => started.push(f) });
  await waitFor('the server-side subscription started', () => started.length === 1);
  assert.deepEqual([started[0].id, started[0].after_seq], [`user:${topic}`, 2]);
  // No event yet, and still a position: where the subscription started.
  const positions = sock.userPositions;
  assert.deepEqual(positions, { [topic]: 2 });
  sock.close();

  await h.publish(topic, { balance: 3 }); // while no socket is open
  sock = browser.socket({ onUserEvent: (e) => got.push(e), userPositions: positions });
  await waitFor('the event published while away', () => got.length === 1);
  assert.deepEqual(got.map((e) => [e.seq, e.data.balance]), [[3, 3]]);

  // Removed while connected: its position goes, and the hook (or onFrame) hears it.
  const frames = [];
  sock.close();
  sock = browser.socket({ onUserEvent: (e) => got.push(e), onFrame: (f) => frames.push(f), userPositions: sock.userPositions });
  await waitFor('the subscription restarted', () => frames.some((f) => f.op === 'subscribed'));
  await h.deleteUserSubscription(user, topic);
  await waitFor('the unsubscribed frame', () => frames.some((f) => f.op === 'unsubscribed' && f.id === `user:${topic}`));
  assert.deepEqual(sock.userPositions, {});
  sock.close();
});
