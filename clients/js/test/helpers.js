// Shared by the tests that need a Herald: cmd/herald's TestJSClient starts
// one behind a front door and sets HERALD_URL, HERALD_KEY and
// HERALD_CONTROL (the front door's control calls). Without them those tests
// skip; the others run anywhere with `npm test`.

import { Herald } from '../index.js';

export const url = process.env.HERALD_URL;
export const key = process.env.HERALD_KEY;
export const control = process.env.HERALD_CONTROL;

/** The reason to skip a test that needs a Herald, or false. */
export const needsHerald = url && key ? false : 'set HERALD_URL and HERALD_KEY (go test ./cmd/herald -run TestJSClient does)';
/** The reason to skip a test that needs the front door, or false. */
export const needsControl = needsHerald || (control ? false : 'set HERALD_CONTROL (go test ./cmd/herald -run TestJSClient does)');

/** Fast reconnects: the tests wait on what happens, not on time. */
export const backoff = { initial: 10, max: 100 };

/** An admin client of the Herald under test. */
export function admin(options = {}) {
  return new Herald({ url, key, backoff, ...options });
}

let n = 0;
/** A topic name no other test of this process uses. */
export function topicName(prefix = 't') {
  return `${prefix}.${process.pid}.${++n}`;
}

/**
 * Waits until cond() is true, checking every few milliseconds, or fails
 * after timeout ms saying what it waited for.
 */
export async function waitFor(what, cond, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Cuts every client connection to Herald, as a network failure does. New
 * streams are refused until release(), so that what is published meanwhile
 * can only reach a client through its resume.
 */
export async function dropConnections() {
  const res = await fetch(`${control}/drop?hold=1`, { method: 'POST' });
  if (!res.ok) throw new Error(`drop: ${res.status}`);
  return Number(await res.text());
}

/** Restarts Herald on the same data; resolves once it serves again. New streams are refused until release(). */
export async function restartHerald() {
  const res = await fetch(`${control}/restart?hold=1`, { method: 'POST' });
  if (!res.ok) throw new Error(`restart: ${res.status} ${await res.text()}`);
}

/** Lets streams in again after dropConnections or restartHerald. */
export async function release() {
  const res = await fetch(`${control}/release`, { method: 'POST' });
  if (!res.ok) throw new Error(`release: ${res.status}`);
}

/** Publishes JSON events {n} for each n in [from, to] to topic, one request each. */
export async function publishRange(h, topic, from, to) {
  for (let i = from; i <= to; i++) await h.publish(topic, { n: i }, { type: 'test.n' });
}

/** 1..n */
export function seqs(n) {
  return Array.from({ length: n }, (_, i) => i + 1);
}
