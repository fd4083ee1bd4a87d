// Run by cmd/herald's TestJSClientBrowserUser in headless Chromium: the
// page of one end user (u42). Its token comes from the application's
// backend (the test's /_test/token?user=u42), which names the user and
// limits it to read:accounts.{user}.>. A socket and an SSE user stream
// subscribe to nothing themselves: each receives the user's server-side
// subscriptions, and after a reconnect resumes them from the positions
// the client kept. Everything they see is reported, in order, to
// /_test/report.

import { Herald } from '../../index.js';
import { report } from './report.js';

const herald = new Herald({
  token: async () => {
    const r = await fetch('/_test/token?user=u42');
    if (!r.ok) throw new Error(`token: ${r.status}`);
    return r.text();
  },
  backoff: { initial: 20, max: 200 },
});

herald.socket({
  onOpen: () => report({ kind: 'user-open' }),
  onClose: (c) => report({ kind: 'user-close', code: c.code }),
  onError: (e) => report({ kind: 'error', msg: `socket: ${e}` }),
  onUserEvent: (e) => report({ kind: 'user', sub: e.sub, topic: e.topic, seq: e.seq, n: e.data.n }),
});

herald.userStream({
  onOpen: () => report({ kind: 'user-sse-open' }),
  onClose: (c) => report({ kind: 'user-sse-close', code: c.code }),
  onError: (e) => report({ kind: 'error', msg: `user stream: ${e}` }),
  onUserEvent: (e) => report({ kind: 'user-sse', sub: e.sub, topic: e.topic, seq: e.seq, n: e.data.n }),
});
