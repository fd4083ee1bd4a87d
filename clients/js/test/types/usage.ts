// Compiled (not run) by cmd/herald's TestJSClientTypes: the README's
// examples, written against index.d.ts with strict TypeScript. Lines
// marked @ts-expect-error must stay errors.

import {
  Herald, HeraldError, ConnectionError, eventText, eventBytes, backoffDelay,
  type HeraldEvent, type CloseInfo, type Gap, type PublishResult, type Subscription,
} from '../../index.js';

export async function service(): Promise<void> {
  const herald = new Herald({ url: 'http://127.0.0.1:8480', key: 'hrld_...' });
  const r: PublishResult = await herald.publish('orders.eu', { order: 'A-17', total: 129.5 }, {
    type: 'order.created', key: 'A-17', idempotencyKey: 'order-A-17', headers: { 'X-Tenant': 'acme' },
  });
  const seq: number = r.seq;
  const batch = await herald.publishBatch('orders.eu', [{ data: { n: 1 } }, { data: new Uint8Array([1]), contentType: 'application/x' }]);
  const dup: boolean = batch[0]!.duplicate;
  await herald.publishCloudEvent('orders.eu', { specversion: '1.0', id: 'x', source: '/s', type: 't', data: {} });
  for await (const e of herald.events('orders.eu', { afterSeq: seq, pageSize: 50 })) {
    const text: string = eventText(e);
    const bytes: Uint8Array = eventBytes(e);
    void text, bytes, e.idempotency_key;
  }
  const page = await herald.listEvents('orders.eu', { limit: 10, signal: AbortSignal.timeout(5000) });
  const next: number = page.next_after_seq;
  const topic = await herald.putTopic('orders.eu', { retention: '7d' });
  const head: number = topic.head_seq;
  const { token, expires_at } = await herald.createToken({ scopes: ['read:orders.eu.>'], ttl: '15m' });
  void dup, next, head, token, expires_at;
  try {
    await herald.publish('orders.eu', 'text');
  } catch (err) {
    if (err instanceof HeraldError) {
      const s: number = err.status;
      const parts: string[] = [err.type, err.code, err.detail, err.field, err.requestId, err.title];
      void s, parts;
    } else if (err instanceof ConnectionError) {
      const u: string = err.url;
      void u;
    }
  }
  // @ts-expect-error: a topic name is a string
  await herald.publish(42, {});
  // @ts-expect-error: idempotencyKey is camelCase in options
  await herald.publish('t', {}, { idempotency_key: 'x' });
}

export function browser(): () => void {
  const herald = new Herald({
    token: async () => (await fetch('/herald-token')).text(),
    backoff: { initial: 250, max: 10_000 },
  });
  const socket = herald.socket({
    onOpen: () => {},
    onClose: (info: CloseInfo<number>) => void info.code,
    onError: (err) => console.error(err.message),
    onFrame: (f) => void f.op,
    keepAlive: 20_000,
  });
  const sub: Subscription = socket.subscribe('orders.*', {
    since: new Date(Date.now() - 60_000),
    positions: { 'orders.eu': 42 },
    filter: { types: ['order.*'] },
    onEvent: (e: HeraldEvent) => console.log(e.topic, e.seq, e.type, e.data),
    onGap: (g: Gap) => console.warn(g.missed_from, g.missed_to),
    onSubscribed: (f) => void f.after_seq,
    onError: (err: HeraldError) => void err.status,
  });
  const positions: Record<string, number> = sub.positions;
  void positions;
  const ctrl = new AbortController();
  const sse = herald.stream('orders.eu', {
    since: 0,
    signal: ctrl.signal,
    onEvent: (e) => void e.data_base64,
    onClose: (info) => {
      const code: string = info.code;
      if (!info.reconnect) console.log(code, info.error);
    },
  });
  const last: string = sse.lastEventId;
  void last, backoffDelay(3);
  // @ts-expect-error: onEvent is required
  herald.stream('orders.eu', {});
  // @ts-expect-error: the socket's state is read-only
  socket.state = 'open';
  const mine = herald.userStream({
    userPositions: { 'accounts.u42.balance': 16 },
    onUserEvent: (e) => void [e.sub, e.topic, e.seq, e.data],
    onSubscribed: (f) => void f.after_seq,
    onUnsubscribed: (f) => void f.id,
    onGap: (g) => void [g.sub, g.missed_from],
    onClose: (info: CloseInfo<string>) => void info.reconnect,
    idleTimeout: 30_000,
  });
  const resume: Record<string, number> = mine.userPositions;
  const id: string = mine.lastEventId;
  void resume, id;
  // @ts-expect-error: onUserEvent is required
  herald.userStream({});
  return () => {
    sub.unsubscribe();
    socket.close();
    sse.close();
    mine.close();
  };
}
