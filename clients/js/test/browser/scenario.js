// Run by cmd/herald's TestJSClientBrowser in headless Chromium: the client
// as an ES module, on the browser's own WebSocket and fetch, with
// connection tokens from a callback (the test's /_test/token plays the
// application's backend). Everything it sees is reported, in order, to
// /_test/report, where the Go test checks it.

import { Herald, HeraldError } from '../../index.js';
import { report } from './report.js';

const fail = (where) => (e) => report({ kind: 'error', msg: `${where}: ${e}` });

// No url: a page served by Herald's own origin talks to it.
const herald = new Herald({
  token: async () => {
    const r = await fetch('/_test/token');
    if (!r.ok) throw new Error(`token: ${r.status}`);
    return r.text();
  },
  backoff: { initial: 20, max: 200 },
});

const socket = herald.socket({
  onClose: (c) => report({ kind: 'ws-close', code: c.code, reason: c.reason }),
  onError: fail('socket'),
});
socket.subscribe('browser.ws', {
  since: 0,
  onSubscribed: () => report({ kind: 'ws-open' }),
  onEvent: (e) => report({ kind: 'ws', seq: e.seq, n: e.data.n }),
});
socket.subscribe('secret.topic', {
  onEvent: () => report({ kind: 'error', msg: 'an event of a topic outside the token' }),
  onError: (e) => report({
    kind: 'refused', name: e.name, typed: e instanceof HeraldError, status: e.status, code: e.code, field: e.field,
  }),
});

herald.stream('browser.sse', {
  since: 0,
  onOpen: () => report({ kind: 'sse-open' }),
  onClose: (c) => report({ kind: 'sse-close', code: c.code }),
  onEvent: (e) => report({ kind: 'sse', seq: e.seq, n: e.data.n }),
  onError: fail('stream'),
});
