// A connection that goes silent (a dead network path that no one closed)
// is given up and replaced: the SSE stream after idleTimeout without even
// a heartbeat, the WebSocket after its keep-alive ping goes unanswered.
// The server here answers the handshake, then says nothing.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createHash } from 'node:crypto';
import { Herald, ConnectionError } from '../index.js';
import { waitFor } from './helpers.js';

async function listen(t, server) {
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections?.();
    server.close();
  });
  return `http://127.0.0.1:${server.address().port}`;
}

test('an SSE stream silent for idleTimeout reconnects from its last event id', async (t) => {
  const requests = [];
  const sockets = [];
  const server = createServer((req, res) => {
    requests.push(req.headers['last-event-id'] ?? '');
    sockets.push(res.socket);
    res.writeHead(200, { 'Content-Type': 'text/event-stream' });
    res.write('retry: 2000\n\nid: 5\n\n'); // a starting position, then nothing
  });
  const url = await listen(t, server);
  const closes = [];
  const s = new Herald({ url, key: 'k', backoff: { initial: 1, max: 1 } })
    .stream('quiet', { onEvent: () => {}, onClose: (c) => closes.push(c), idleTimeout: 100 });
  t.after(() => s.close());
  await waitFor('a second request', () => requests.length >= 2);
  assert.deepEqual(requests.slice(0, 2), ['', '5']);
  assert.ok(closes[0].reconnect);
  assert.ok(closes[0].error instanceof ConnectionError);
  assert.match(closes[0].error.message, /no event or heartbeat for 100 ms/);
});

/** The text frames a client sent (masked, unfragmented, short, as ours are). */
function clientFrames(buf) {
  const out = [];
  let i = 0;
  while (i + 6 <= buf.length) {
    const len = buf[i + 1] & 0x7f;
    if (len >= 126 || i + 6 + len > buf.length) break;
    const mask = buf.subarray(i + 2, i + 6);
    const payload = buf.subarray(i + 6, i + 6 + len).map((b, j) => b ^ mask[j % 4]);
    if ((buf[i] & 0x0f) === 1) out.push(JSON.parse(Buffer.from(payload).toString()));
    i += 6 + len;
  }
  return out;
}

test('a WebSocket whose ping goes unanswered reconnects', { skip: typeof WebSocket !== 'function' && 'needs a global WebSocket (node --experimental-websocket)' }, async (t) => {
  const conns = [];
  const server = createServer();
  server.on('upgrade', (req, socket) => {
    const accept = createHash('sha1').update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
    const c = { auth: req.headers.authorization, data: Buffer.alloc(0) };
    socket.on('data', (d) => (c.data = Buffer.concat([c.data, d])));
    socket.on('error', () => {});
    conns.push(c);
    upgraded.push(socket);
  });
  const upgraded = [];
  t.after(() => upgraded.forEach((s) => s.destroy())); // the server no longer tracks them
  const url = await listen(t, server);
  const closes = [];
  const socket = new Herald({ url, key: 'k', backoff: { initial: 1, max: 1 } })
    .socket({ keepAlive: 100, onClose: (c) => closes.push(c) });
  t.after(() => socket.close());
  socket.subscribe('quiet', { onEvent: () => {} });
  await waitFor('a second connection', () => conns.length >= 2);
  const sent = clientFrames(conns[0].data);
  assert.deepEqual(sent.map((f) => f.op), ['subscribe', 'ping']);
  assert.equal(conns[0].auth, 'Bearer k');
  assert.ok(closes[0].reconnect);
  assert.match(closes[0].reason, /nothing from the server for \d+ ms, not even a pong/);
});
