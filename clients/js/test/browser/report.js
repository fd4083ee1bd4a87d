// What the browser pages report to the Go test: each object, in order, to
// /_test/report, resent until it is taken; page errors and unhandled
// rejections as {kind: 'error'}.

const queue = [];
let sending = false;

export function report(obj) {
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
