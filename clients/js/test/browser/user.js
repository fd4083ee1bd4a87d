// Run by cmd/herald's TestJSClientBrowserUser in headless Chromium: the
// page of one end user (u42). Its token comes from the application's
// backend (the test's /_test/token?user=u42), which names the user and
// limits it to read:accounts.{user}.>. The socket subscribes to nothing
// itself: it receives the user's server-side subscriptions, and after a
// reconnect resumes them from the positions the client kept. Everything
// it sees is reported, in order, to /_test/report.

import { Herald } from '../../index.js';

const queue = [];
let sending = false;
function report(obj) {
  queue.push(obj);
  void pump();
}
async function pump() {
  if (sending) return;
  sending = true;
  while (queue.length) {
    const batch = queue.slice();
    try {
      const r = await fetch('/_test/report', { method: 'POST', body: JSON.stringify(batch) });
      if (!r.ok) throw new Error(`status ${r.status}`);
      queue.splice(0, batch.length);
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  sending = false;
}
window.addEventListener('error', (e) => report({ kind: 'error', msg: String(e.message) }));
window.addEventListener('unhandledrejection', (e) => report({ kind: 'error', msg: String(e.reason) }));

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
