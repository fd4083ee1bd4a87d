// Herald console: a small single-page app over the /v1 API. The operator
// console signs in to a session: the server keeps the key in a sealed
// HttpOnly cookie this script cannot read, and every change carries the
// session's CSRF token (X-CSRF-Token). The tenant portal, which may be
// framed by another site, keeps its link's token in this tab's
// sessionStorage and sends it in the Authorization header. Neither ever
// goes into a URL or a log. All text from the API goes into the page as
// text nodes, never as HTML.
'use strict';

const MODE = document.body.dataset.mode; // "operator" or "portal"
const SLOT = MODE === 'portal' ? 'herald.portal' : 'herald.key';

// A portal link carries its token in the fragment (#token=...), which the
// browser sends to no server. Keep it in this tab and drop it from the
// address bar and the history.
(function takePortalToken() {
  const m = /^#token=([^&]+)/.exec(location.hash);
  if (MODE === 'portal' && m) {
    sessionStorage.setItem(SLOT, decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + '#/subscriptions');
  }
})();

function key() { return sessionStorage.getItem(SLOT) || ''; }

// csrf is the operator session's CSRF token ('' when signed out), learnt
// at sign-in or from GET /console/session after a reload.
let csrf = '';
// oidc is the OpenID provider the console offers sign-in with
// ({name, url}), or null; subject names who signed in with it.
let oidc = null;
let subject = '';
function signedIn() { return MODE === 'portal' ? !!key() : !!csrf; }

// authHeaders are the credentials of a request: the portal's token, or
// for the operator's session its CSRF token on changes (the cookie goes
// by itself).
function authHeaders(method) {
  if (MODE === 'portal') return { 'Authorization': 'Bearer ' + key() };
  return ['GET', 'HEAD'].includes(method) ? {} : { 'X-CSRF-Token': csrf };
}
const CREDENTIALS = MODE === 'portal' ? 'omit' : 'same-origin';

async function loadSession() {
  if (MODE === 'portal') return;
  try {
    const r = await fetch('/console/session', { cache: 'no-store', credentials: 'same-origin' });
    const s = await r.json();
    csrf = s.signed_in ? s.csrf_token : '';
    oidc = s.oidc || null;
    subject = s.signed_in ? (s.subject || '') : '';
  } catch (e) { csrf = ''; }
}

async function signOut() {
  if (MODE === 'portal') { sessionStorage.removeItem(SLOT); return; }
  const t = csrf;
  csrf = '';
  subject = '';
  await fetch('/console/session', { method: 'DELETE', headers: { 'X-CSRF-Token': t }, credentials: 'same-origin' });
}

// ---- DOM helpers ----

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const view = () => document.getElementById('view');

function show(...nodes) {
  const v = view();
  v.replaceChildren(...nodes.flat());
}

function flash(msg, kind) {
  const f = document.getElementById('flash');
  if (!msg) { f.hidden = true; f.textContent = ''; return; }
  f.hidden = false;
  f.className = kind || 'error';
  f.textContent = msg;
}

function enc(s) { return encodeURIComponent(s); }

function fmtTime(t) { return t ? t.replace('T', ' ').replace(/\.\d+/, '').replace('Z', ' UTC') : ''; }

// ---- API ----

class APIError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || ('HTTP ' + status));
    this.status = status;
    this.problem = problem || {};
  }
}

async function api(method, path, body, opts) {
  opts = opts || {};
  const headers = Object.assign({ 'Accept': 'application/json' }, authHeaders(method));
  let payload;
  if (opts.raw !== undefined) {
    payload = opts.raw;
    headers['Content-Type'] = opts.contentType || 'application/json';
    Object.assign(headers, opts.headers || {});
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  }
  const r = await fetch(path, { method, headers, body: payload, cache: 'no-store', credentials: CREDENTIALS });
  const text = await r.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch (e) { data = { detail: text }; } }
  if (r.status === 401) {
    if (MODE === 'portal') sessionStorage.removeItem(SLOT); else csrf = '';
    route();
    throw new APIError(401, data);
  }
  if (!r.ok) throw new APIError(r.status, data);
  return data;
}

// run performs an action, reports its failure in the flash area, and
// re-renders the current page on success.
async function run(fn, okMsg) {
  flash('');
  try {
    await fn();
    if (okMsg) flash(okMsg, 'ok');
    await render();
  } catch (e) {
    flash(e.message + (e.problem && e.problem.field ? ' (field: ' + e.problem.field + ')' : ''));
  }
}

// firstArray returns the list in a list response, whatever its name.
function firstArray(obj) {
  for (const v of Object.values(obj || {})) if (Array.isArray(v)) return v;
  return [];
}

// ---- layout ----

const OPERATOR_NAV = [
  ['topics', 'Topics'], ['subscriptions', 'Subscriptions'], ['sources', 'Sources'], ['rules', 'Rules'],
  ['views', 'Views'], ['archives', 'Archives'], ['schedules', 'Schedules'], ['tenants', 'Tenants'],
  ['keys', 'Keys'], ['nodes', 'Nodes'], ['audit', 'Audit log'],
];
const PORTAL_NAV = [['subscriptions', 'Endpoints']];

function renderNav(signedIn, cur) {
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');
  if (!signedIn) { nav.replaceChildren(); who.replaceChildren(); return; }
  const items = MODE === 'portal' ? PORTAL_NAV : OPERATOR_NAV;
  nav.replaceChildren(...items.map(([k, label]) => h('a', { href: '#/' + k, class: k === cur ? 'current' : null }, label)));
  who.replaceChildren(subject ? h('span', { id: 'subject', class: 'subject' }, subject.replace(/^oidc:/, '')) : '', ' ',
    h('button', { id: 'refresh', type: 'button', title: 'Reload this page\'s data', onclick: () => run(() => null) }, 'Refresh'), ' ',
    h('button', { id: 'signout', type: 'button', onclick: async () => { stopTail(); await signOut(); location.hash = '#/'; route(); } }, 'Sign out'));
}

function table(cols, rows, opts) {
  opts = opts || {};
  return h('table', { id: opts.id, class: 'list' },
    h('thead', null, h('tr', null, cols.map(c => h('th', null, c.label || c)))),
    h('tbody', null, rows.length ? rows.map(r => h('tr', { 'data-id': opts.rowId ? opts.rowId(r) : null },
      cols.map(c => h('td', null, cell(c, r)))))
      : h('tr', null, h('td', { colspan: cols.length, class: 'empty' }, opts.empty || 'Nothing here yet.'))));
}

function cell(c, r) {
  if (typeof c === 'string') return fmt(r[c]);
  if (c.render) return c.render(r);
  return fmt(r[c.key]);
}

function fmt(v) {
  if (v === undefined || v === null) return '';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

function section(title, ...body) { return h('section', null, h('h2', null, title), ...body); }

function field(label, input) { return h('label', { class: 'field' }, h('span', null, label), input); }

function pre(obj) { return h('pre', { class: 'json' }, JSON.stringify(obj, null, 2)); }

function button(label, onclick, props) {
  return h('button', Object.assign({ type: 'button', onclick }, props || {}), label);
}

function confirmThen(msg, fn) { return () => { if (window.confirm(msg)) fn(); }; }

// ---- sign in ----

function renderLogin(msg) {
  renderNav(false);
  if (MODE === 'portal') {
    show(h('section', { class: 'login' }, h('h1', null, 'Webhook portal'),
      h('p', null, msg || 'This portal opens from a link your provider gives you. The link has expired or was revoked: ask for a new one.')));
    return;
  }
  const input = h('input', { id: 'login-key', type: 'password', autocomplete: 'off', required: true, placeholder: 'hrld_...' });
  const form = h('form', {
    id: 'login', onsubmit: async (e) => {
      e.preventDefault();
      const k = input.value.trim();
      input.value = '';
      try {
        const r = await fetch('/console/session', { method: 'POST', headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ key: k }), cache: 'no-store', credentials: 'same-origin' });
        if (!r.ok) throw new Error(await r.text());
        csrf = (await r.json()).csrf_token;
        await api('GET', '/v1/topics?limit=1');
        flash('');
        if (!location.hash || location.hash === '#/') location.hash = '#/topics';
        route();
      } catch (err) {
        await signOut();
        flash(err.message);
      }
    },
  }, field('API key', input), h('button', { id: 'login-submit', type: 'submit' }, 'Sign in'));
  // Sign-in with the OpenID provider is a plain navigation: the server
  // sends the browser to the provider and takes it back.
  const provider = oidc ? h('p', { class: 'oidc' }, h('a', { id: 'login-oidc', class: 'button', href: oidc.url }, 'Sign in with ' + oidc.name)) : null;
  show(h('section', { class: 'login' }, h('h1', null, 'Sign in to Herald'), provider,
    provider ? h('p', null, 'Or with an API key:') : null,
    h('p', null, 'Paste an API key (the admin key from the first start, or one made from it). The server keeps it in a session cookie that scripts cannot read; signing out ends the session.'),
    msg ? h('p', { class: 'error' }, msg) : null, form));
}

// ---- router ----

let renderSeq = 0;
// nextFlash is shown after the next navigation (a secret shown once,
// after the page that shows it has loaded).
let nextFlash = null;

async function route() {
  flash(nextFlash || '', 'ok');
  nextFlash = null;
  await render();
}

async function render() {
  const seq = ++renderSeq;
  if (!signedIn()) { stopTail(); renderLogin(); return; }
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  let [page, id, sub] = parts;
  if (!page) page = MODE === 'portal' ? 'subscriptions' : 'topics';
  if (MODE === 'portal' && page !== 'subscriptions') page = 'subscriptions';
  renderNav(true, page);
  if (!(page === 'topics' && id)) stopTail();
  const pages = {
    topics: id ? () => topicPage(id) : topicsPage,
    subscriptions: id === 'new' ? newSubscriptionPage : id ? () => subscriptionPage(id) : subscriptionsPage,
    tenants: id ? () => tenantPage(id) : tenantsPage,
    keys: keysPage,
    nodes: nodesPage,
    audit: auditPage,
  };
  let fn = pages[page];
  if (!fn && RESOURCES[page]) fn = id ? () => resourcePage(page, id) : () => resourcesPage(page);
  if (!fn) { show(h('p', null, 'No such page.')); return; }
  try {
    const nodes = await fn(sub);
    if (seq === renderSeq) show(nodes);
  } catch (e) {
    if (seq === renderSeq && e.status !== 401) show(h('p', { class: 'error' }, e.message));
  }
}

window.addEventListener('hashchange', route);
document.addEventListener('DOMContentLoaded', async () => { await loadSession(); route(); });

// ---- topics ----

async function topicsPage() {
  const list = await api('GET', '/v1/topics?limit=1000');
  const name = h('input', { id: 'topic-name', placeholder: 'orders.created', required: true });
  const retention = h('input', { id: 'topic-retention', placeholder: '7d' });
  return [
    h('h1', null, 'Topics'),
    table([
      { label: 'name', render: t => h('a', { href: '#/topics/' + enc(t.name) }, t.name) },
      'head_seq', 'first_seq', 'event_count', 'retention', 'max_event_bytes', 'dedup_window',
    ], list.topics, { id: 'topics', rowId: t => t.name }),
    section('New topic', h('form', {
      onsubmit: e => {
        e.preventDefault();
        const body = {};
        if (retention.value) body.retention = retention.value;
        run(() => api('PUT', '/v1/topics/' + enc(name.value), body), 'Topic ' + name.value + ' saved.');
      },
    }, field('Name', name), field('Retention', retention), h('button', { id: 'topic-create', type: 'submit' }, 'Create'))),
  ];
}

async function topicPage(name) {
  const t = await api('GET', '/v1/topics/' + enc(name));
  let schema = null;
  try { schema = await api('GET', '/v1/topics/' + enc(name) + '/schema'); } catch (e) { /* none */ }
  const events = await api('GET', '/v1/topics/' + enc(name) + '/events?limit=20&order=desc').catch(() => ({ events: [] }));
  const body = h('textarea', { id: 'publish-body', rows: 4 }, '{"hello": "world"}');
  const ctype = h('input', { id: 'publish-type', value: 'application/json' });
  const evType = h('input', { id: 'publish-event-type', placeholder: 'test' });
  const tailBox = h('ol', { id: 'tail', class: 'tail' });
  const tailBtn = button(tail ? 'Stop live tail' : 'Start live tail', () => {
    if (tail) { stopTail(); tailBtn.textContent = 'Start live tail'; } else { startTail(name, tailBox); tailBtn.textContent = 'Stop live tail'; }
  }, { id: 'tail-toggle' });
  if (tail && tail.topic === name) tail.box = tailBox;
  const settings = h('textarea', { id: 'topic-settings', rows: 4 }, JSON.stringify({ retention: t.retention, max_event_bytes: t.max_event_bytes, dedup_window: t.dedup_window }, null, 2));
  const schemaEditor = h('textarea', { id: 'schema-editor', rows: 6 }, schema ? JSON.stringify(Object.fromEntries(Object.entries(schema).filter(([k]) => ['type', 'schema', 'proto', 'descriptor_set', 'message'].includes(k))), null, 2) : '{"type": "json_schema", "schema": {"type": "object"}}');
  return [
    h('h1', null, 'Topic ', h('code', null, name)),
    pre(t),
    h('div', { class: 'actions' },
      button('Delete topic', confirmThen('Delete topic ' + name + ' and its events?', () =>
        run(async () => { await api('DELETE', '/v1/topics/' + enc(name)); location.hash = '#/topics'; })), { class: 'danger' })),
    section('Publish a test event', h('form', {
      onsubmit: e => {
        e.preventDefault();
        const headers = {};
        if (evType.value) headers['Herald-Event-Type'] = evType.value;
        run(() => api('POST', '/v1/topics/' + enc(name) + '/events', undefined, { raw: body.value, contentType: ctype.value, headers }), 'Published.');
      },
    }, field('Body', body), field('Content-Type', ctype), field('Event type', evType), h('button', { id: 'publish', type: 'submit' }, 'Publish'))),
    section('Live tail', tailBtn, tailBox),
    section('Latest events', table(['seq', 'id', 'type', 'key', 'time', { label: 'data', render: ev => truncateText(fmt(ev.data !== undefined ? ev.data : ev.payload), 200) }],
      events.events || [], { id: 'events' })),
    section('Settings', h('form', {
      onsubmit: e => { e.preventDefault(); run(() => api('PUT', '/v1/topics/' + enc(name), JSON.parse(settings.value)), 'Saved.'); },
    }, settings, h('button', { id: 'topic-save', type: 'submit' }, 'Save'))),
    section('Schema', schema ? pre(schema) : h('p', null, 'No schema.'),
      h('form', {
        onsubmit: e => { e.preventDefault(); run(() => api('PUT', '/v1/topics/' + enc(name) + '/schema', JSON.parse(schemaEditor.value)), 'Schema saved.'); },
      }, field('New version (JSON: type, schema; the body of PUT /v1/topics/{topic}/schema)', schemaEditor), h('button', { id: 'schema-save', type: 'submit' }, 'Save schema')),
      schema ? button('Remove schema', confirmThen('Remove the schema of ' + name + '?', () => run(() => api('DELETE', '/v1/topics/' + enc(name) + '/schema'), 'Schema removed.')), { class: 'danger' }) : null),
  ];
}

function truncateText(s, n) { return s.length > n ? s.slice(0, n) + '…' : s; }

// The live tail reads the topic's SSE stream with fetch, so the key goes
// in a header rather than in the stream's URL.
let tail = null;

function stopTail() {
  if (tail) { tail.ctrl.abort(); tail = null; }
}

async function startTail(topic, box) {
  stopTail();
  const ctrl = new AbortController();
  tail = { topic, ctrl, box };
  const mine = tail;
  try {
    const r = await fetch('/v1/topics/' + enc(topic) + '/stream', {
      headers: Object.assign({ 'Accept': 'text/event-stream' }, authHeaders('GET')), signal: ctrl.signal, cache: 'no-store', credentials: CREDENTIALS,
    });
    if (!r.ok) throw new Error('stream: HTTP ' + r.status);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i); buf = buf.slice(i + 2);
        const ev = { id: '', event: 'message', data: [] };
        for (const line of block.split('\n')) {
          const [k, ...rest] = line.split(':');
          const v = rest.join(':').replace(/^ /, '');
          if (k === 'id') ev.id = v; else if (k === 'event') ev.event = v; else if (k === 'data') ev.data.push(v);
        }
        if (!ev.data.length) continue;
        mine.box.prepend(h('li', null, h('code', null, '#' + ev.id), ' ', h('b', null, ev.event), ' ', ev.data.join('\n')));
        while (mine.box.children.length > 200) mine.box.lastChild.remove();
      }
    }
  } catch (e) {
    if (e.name !== 'AbortError') flash('Live tail stopped: ' + e.message);
  }
}

// ---- subscriptions ----

async function subscriptionsPage() {
  const list = await api('GET', '/v1/subscriptions?limit=500');
  return [
    h('h1', null, MODE === 'portal' ? 'Your endpoints' : 'Subscriptions'),
    h('p', null, h('a', { id: 'new-subscription', class: 'button', href: '#/subscriptions/new' }, 'New subscription')),
    table([
      { label: 'id', render: s => h('a', { href: '#/subscriptions/' + enc(s.id) }, s.id) },
      'topic', 'channel', { label: 'destination', render: s => s.url || fmt(s.config) },
      { label: 'state', render: s => h('span', { class: 'state ' + s.state }, s.state) }, 'state_reason', 'description',
      ...(MODE === 'portal' ? [] : ['tenant']),
    ], list.subscriptions, { id: 'subscriptions', rowId: s => s.id }),
  ];
}

const CHANNELS = ['webhook', 'kafka', 'nats', 'amqp', 'mqtt', 'redis', 'email', 'sms', 'archive', 'rule', 'view'];

async function newSubscriptionPage() {
  const topic = h('input', { id: 'sub-topic', required: true, placeholder: 'orders.>' });
  const channel = h('select', { id: 'sub-channel' }, (MODE === 'portal' ? ['webhook'] : CHANNELS).map(c => h('option', { value: c }, c)));
  const url = h('input', { id: 'sub-url', type: 'url', placeholder: 'https://example.com/hooks' });
  const desc = h('input', { id: 'sub-description' });
  const verification = h('select', { id: 'sub-verification' }, ['challenge', 'none'].map(c => h('option', { value: c }, c)));
  const tenant = h('input', { id: 'sub-tenant', placeholder: '(none)' });
  const extra = h('textarea', { id: 'sub-extra', rows: 6, placeholder: '{"config": {...}, "filter": {...}, "retry": {...}}' });
  return [
    h('h1', null, 'New subscription'),
    h('form', {
      id: 'sub-form', onsubmit: e => {
        e.preventDefault();
        run(async () => {
          let body = {};
          if (extra.value.trim()) body = JSON.parse(extra.value);
          body.topic = topic.value;
          body.channel = channel.value;
          if (channel.value === 'webhook' && url.value) body.url = url.value;
          if (desc.value) body.description = desc.value;
          if (channel.value === 'webhook') body.verification = verification.value;
          if (tenant.value) body.tenant = tenant.value;
          const created = await api('POST', '/v1/subscriptions', body);
          if (created.secret) nextFlash = 'Signing secret (shown once): ' + created.secret;
          location.hash = '#/subscriptions/' + enc(created.id);
        });
      },
    },
    field('Topic or pattern', topic), field('Channel', channel), field('Webhook URL', url), field('Description', desc),
    field('Verification (webhooks)', verification),
    MODE === 'portal' ? null : field('Tenant', tenant),
    field('More settings (JSON, merged)', extra),
    h('button', { id: 'sub-create', type: 'submit' }, 'Create')),
  ];
}

// autoRefresh re-renders the current page every few seconds while it is
// the one shown and the tab is visible, and no form field has focus.
let autoTimer = null;
function autoRefresh() {
  clearTimeout(autoTimer);
  const at = location.hash;
  autoTimer = setTimeout(() => {
    if (location.hash !== at || !signedIn()) return;
    const busy = document.activeElement && ['INPUT', 'TEXTAREA', 'SELECT'].includes(document.activeElement.tagName);
    if (document.hidden || busy) { autoRefresh(); return; }
    render();
  }, 5000);
}

async function subscriptionPage(id) {
  autoRefresh();
  const base = '/v1/subscriptions/' + enc(id);
  const s = await api('GET', base);
  const [attempts, dead] = await Promise.all([
    api('GET', base + '/attempts?limit=200').catch(() => ({ attempts: [] })),
    api('GET', base + '/dead-letters?limit=200').catch(() => ({ dead_letters: [] })),
  ]);
  const act = (path, msg) => () => run(() => api('POST', base + path), msg);
  const patch = h('textarea', { id: 'sub-patch', rows: 5 }, JSON.stringify({ description: s.description, url: s.url || undefined }, null, 2));
  const fromSeq = h('input', { id: 'replay-from-seq', type: 'number', min: 1, placeholder: '1' });
  const fromTime = h('input', { id: 'replay-from-time', placeholder: '2026-01-01T00:00:00Z' });
  return [
    h('h1', null, 'Subscription ', h('code', null, s.id)),
    h('p', null, 'State: ', h('span', { id: 'sub-state', class: 'state ' + s.state }, s.state),
      s.state_reason ? h('span', { id: 'sub-state-reason' }, ' — ' + s.state_reason) : null),
    h('div', { class: 'actions' },
      s.state === 'paused' ? button('Resume', act('/resume', 'Resumed.'), { id: 'sub-resume' }) : button('Pause', act('/pause', 'Paused.'), { id: 'sub-pause' }),
      s.state === 'pending' ? button('Retry verification', act('/verify', 'Verification sent.'), { id: 'sub-verify' }) : null,
      button('Send test event', act('/test', 'Test event sent.'), { id: 'sub-test' }),
      s.channel === 'webhook' ? button('Rotate secret', () => run(async () => {
        const r = await api('POST', base + '/secret:rotate');
        setTimeout(() => flash('New signing secret (shown once): ' + (r.secret || ''), 'ok'));
      }), { id: 'sub-rotate' }) : null,
      button('Delete', confirmThen('Delete this subscription?', () => run(async () => { await api('DELETE', base); location.hash = '#/subscriptions'; })), { id: 'sub-delete', class: 'danger' })),
    s.stats ? section('Delivery', pre(s.stats)) : null,
    section('Deliveries over the last hour', chart(attempts.attempts)),
    section('Attempts', table(['time', 'seq', 'event_id', 'attempt', { label: 'outcome', render: a => h('span', { class: 'outcome ' + a.outcome }, a.outcome) },
      'status_code', 'latency_ms', 'error', { label: 'response', render: a => truncateText(a.response || '', 200) }],
    attempts.attempts, { id: 'attempts', rowId: a => a.event_id })),
    section('Dead letters',
      h('div', { class: 'actions' },
        button('Redrive all', act('/dead-letters/redrive', 'Dead letters redriven.'), { id: 'dead-redrive', disabled: dead.dead_letters.length === 0 }),
        button('Discard all', confirmThen('Discard every dead letter?', () => run(() => api('DELETE', base + '/dead-letters'), 'Discarded.')), { class: 'danger', disabled: dead.dead_letters.length === 0 })),
      table(['dead_at', 'topic', 'seq', 'event_id', 'attempts', 'last_error',
        { label: '', render: d => button('Redrive', () => run(() => api('POST', base + '/dead-letters/redrive', { event_ids: [d.event_id] }), 'Redriven.')) }],
      dead.dead_letters, { id: 'dead-letters', rowId: d => d.event_id, empty: 'No dead letters.' })),
    section('Replay', h('form', {
      onsubmit: e => {
        e.preventDefault();
        const body = {};
        if (fromSeq.value) body.from_seq = Number(fromSeq.value);
        if (fromTime.value) body.from_time = fromTime.value;
        run(() => api('POST', base + '/replay', body), 'Replay started.');
      },
    }, field('From seq', fromSeq), field('or from time', fromTime), h('button', { id: 'replay', type: 'submit' }, 'Replay'))),
    section('Edit', h('form', {
      onsubmit: e => { e.preventDefault(); run(() => api('PATCH', base, JSON.parse(patch.value)), 'Saved.'); },
    }, field('Changes (JSON merge of the subscription\'s settings)', patch), h('button', { id: 'sub-save', type: 'submit' }, 'Save'))),
    section('Settings', pre(s)),
  ];
}

// chart draws delivered and failed attempts per minute over the last hour
// from the attempt log Herald keeps, with the mean latency as a line.
function chart(attempts) {
  const NS = 'http://www.w3.org/2000/svg';
  const now = Date.now(), W = 600, H = 120, buckets = 60;
  const ok = new Array(buckets).fill(0), bad = new Array(buckets).fill(0), lat = new Array(buckets).fill(0);
  for (const a of attempts || []) {
    const age = (now - Date.parse(a.time)) / 60000;
    if (!(age >= 0 && age < buckets)) continue;
    const i = buckets - 1 - Math.floor(age);
    if (a.outcome === 'success') ok[i]++; else bad[i]++;
    lat[i] += a.latency_ms || 0;
  }
  const max = Math.max(1, ...ok.map((v, i) => v + bad[i]));
  const maxLat = Math.max(1, ...lat.map((v, i) => (ok[i] + bad[i]) ? v / (ok[i] + bad[i]) : 0));
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H + 20}`);
  svg.setAttribute('class', 'chart');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', 'attempts per minute, last hour');
  const bw = W / buckets;
  const rect = (x, y, w, hh, cls) => { const r = document.createElementNS(NS, 'rect'); r.setAttribute('x', x); r.setAttribute('y', y); r.setAttribute('width', w); r.setAttribute('height', hh); r.setAttribute('class', cls); svg.append(r); };
  let points = '';
  for (let i = 0; i < buckets; i++) {
    const ho = ok[i] / max * H, hb = bad[i] / max * H;
    if (ho) rect(i * bw + 1, H - ho, bw - 2, ho, 'ok');
    if (hb) rect(i * bw + 1, H - ho - hb, bw - 2, hb, 'bad');
    const n = ok[i] + bad[i];
    if (n) points += `${i * bw + bw / 2},${H - (lat[i] / n) / maxLat * H} `;
  }
  if (points) { const pl = document.createElementNS(NS, 'polyline'); pl.setAttribute('points', points.trim()); pl.setAttribute('class', 'latency'); svg.append(pl); }
  const label = document.createElementNS(NS, 'text');
  label.setAttribute('x', 0); label.setAttribute('y', H + 15);
  label.textContent = `per minute: max ${max} attempts; line: mean latency, max ${Math.round(maxLat)} ms (from the latest ${(attempts || []).length} attempts)`;
  svg.append(label);
  return svg;
}

// ---- tenants and portal links ----

async function tenantsPage() {
  const list = await api('GET', '/v1/tenants?limit=1000');
  const id = h('input', { id: 'tenant-id', required: true, placeholder: 'acme' });
  const name = h('input', { id: 'tenant-name' });
  const prefix = h('input', { id: 'tenant-prefix', placeholder: 'tenants.acme.>' });
  return [
    h('h1', null, 'Tenants'),
    table([{ label: 'id', render: t => h('a', { href: '#/tenants/' + enc(t.id) }, t.id) }, 'name', 'topic_prefix', 'limits', 'created_at'],
      list.tenants, { id: 'tenants', rowId: t => t.id }),
    section('New tenant', h('form', {
      onsubmit: e => {
        e.preventDefault();
        const body = { name: name.value };
        if (prefix.value) body.topic_prefix = prefix.value;
        run(() => api('PUT', '/v1/tenants/' + enc(id.value), body), 'Tenant ' + id.value + ' saved.');
      },
    }, field('Id', id), field('Name', name), field('Topic prefix', prefix), h('button', { id: 'tenant-create', type: 'submit' }, 'Save'))),
  ];
}

async function tenantPage(id) {
  const base = '/v1/tenants/' + enc(id);
  const [t, links, subs] = await Promise.all([
    api('GET', base), api('GET', base + '/portal-links'), api('GET', '/v1/subscriptions?limit=500&tenant=' + enc(id)),
  ]);
  const editable = { name: t.name, metadata: t.metadata, topic_prefix: t.topic_prefix, limits: t.limits };
  const editor = h('textarea', { id: 'tenant-editor', rows: 8 }, JSON.stringify(editable, null, 2));
  const ttl = h('input', { id: 'portal-ttl', value: '1h' });
  const out = h('div', { id: 'portal-link-out' });
  return [
    h('h1', null, 'Tenant ', h('code', null, t.id)),
    section('Portal link', h('p', null, 'A link that opens this tenant\'s own endpoints, and nothing else, until it expires or you revoke it.'),
      h('form', {
        onsubmit: e => {
          e.preventDefault();
          flash('');
          api('POST', base + '/portal-links', { expires_in: ttl.value }).then(l => {
            out.replaceChildren(field('Link (shown once; send it to the tenant)', h('input', { id: 'portal-url', readonly: true, value: l.url, size: 80 })),
              h('p', null, 'Expires ' + fmtTime(l.expires_at)));
          }, err => flash(err.message));
        },
      }, field('Expires in', ttl), h('button', { id: 'portal-mint', type: 'submit' }, 'Create link')), out,
      table(['id', 'created_at', 'expires_at', 'scopes', { label: '', render: l => button('Revoke', () => run(() => api('DELETE', base + '/portal-links/' + enc(l.id)), 'Revoked.')) }],
        links.portal_links, { id: 'portal-links', rowId: l => l.id, empty: 'No live links.' })),
    section('Subscriptions', table([{ label: 'id', render: s => h('a', { href: '#/subscriptions/' + enc(s.id) }, s.id) }, 'topic', 'channel', 'state'], subs.subscriptions)),
    section('Edit', h('form', { onsubmit: e => { e.preventDefault(); run(() => api('PUT', base, JSON.parse(editor.value)), 'Saved.'); } },
      editor, h('button', { type: 'submit' }, 'Save'))),
    h('div', { class: 'actions' }, button('Delete tenant', confirmThen('Delete tenant ' + id + ' with its subscriptions and keys?', () =>
      run(async () => { await api('DELETE', base); location.hash = '#/tenants'; })), { class: 'danger' })),
  ];
}

// ---- keys ----

async function keysPage() {
  const list = await api('GET', '/v1/keys');
  const name = h('input', { id: 'key-name', required: true });
  const scopes = h('input', { id: 'key-scopes', required: true, placeholder: 'publish:orders.> read:orders.>' });
  const tenant = h('input', { id: 'key-tenant', placeholder: '(none)' });
  const expires = h('input', { id: 'key-expires', placeholder: '90d' });
  const out = h('div', { id: 'key-out' });
  return [
    h('h1', null, 'API keys'),
    table(['id', 'name', 'prefix', 'scopes', 'tenant', 'portal', 'created_at', 'expires_at',
      { label: '', render: k => button('Delete', confirmThen('Delete key ' + k.name + '? Its holders are refused at once.', () => run(() => api('DELETE', '/v1/keys/' + enc(k.id)), 'Deleted.')), { class: 'danger' }) }],
    list.keys, { id: 'keys', rowId: k => k.id }),
    section('New key', h('form', {
      onsubmit: e => {
        e.preventDefault();
        flash('');
        const body = { name: name.value, scopes: scopes.value.split(/[\s,]+/).filter(Boolean) };
        if (tenant.value) body.tenant = tenant.value;
        if (expires.value) body.expires_in = expires.value;
        api('POST', '/v1/keys', body).then(k => {
          out.replaceChildren(field('Secret (shown once)', h('input', { id: 'key-secret', readonly: true, value: k.secret, size: 60 })));
        }, err => flash(err.message));
      },
    }, field('Name', name), field('Scopes', scopes), field('Tenant', tenant), field('Expires in', expires),
    h('button', { id: 'key-create', type: 'submit' }, 'Create')), out),
  ];
}

// ---- nodes ----

async function nodesPage() {
  const data = await api('GET', '/v1/cluster/nodes');
  return [
    h('h1', null, 'Nodes'),
    h('p', null, 'The nodes serving this Herald: the cluster\'s live members on PostgreSQL, or this one alone. Subscriptions are spread over them under leases; a node that stops heartbeating loses its share within seconds.'),
    table(['id', 'addr', 'started_at', 'heartbeat_at', { label: 'self', render: n => n.self ? 'this node' : '' }, 'dispatching'], data.nodes, { id: 'nodes', rowId: n => n.id }),
  ];
}

// ---- audit log ----

async function auditPage() {
  const q = new URLSearchParams(location.hash.split('?')[1] || '');
  q.set('limit', '100');
  const data = await api('GET', '/v1/audit?' + q.toString());
  const principal = h('input', { id: 'audit-principal', value: q.get('principal') || '' });
  const object = h('input', { id: 'audit-object', value: q.get('object') || '' });
  return [
    h('h1', null, 'Audit log'),
    h('form', {
      onsubmit: e => {
        e.preventDefault();
        const p = new URLSearchParams();
        if (principal.value) p.set('principal', principal.value);
        if (object.value) p.set('object', object.value);
        location.hash = '#/audit?' + p.toString();
      },
    }, field('Who', principal), field('Object', object), h('button', { type: 'submit' }, 'Filter')),
    table(['time', 'principal', 'tenant', 'method', 'route', 'object', 'status', 'remote', { label: 'changes', render: e => fmt(e.changes) }],
      data.entries || firstArray(data), { id: 'audit' }),
  ];
}

// ---- sources, rules, views, archives, schedules ----
//
// Each kind has a form of its own: one input per member of its definition
// (dotted paths for nested members), filled from the stored object to
// edit it. When the server refuses a definition, its problem names the
// member at fault (field, or each of errors[]), and the message goes next
// to that input. "Edit as JSON" keeps the whole definition at hand for
// what the form does not cover.

const AGG_OPS = ['count', 'sum', 'min', 'max', 'avg', 'distinct_count', 'latest'];

const RESOURCES = {
  sources: { title: 'Sources', one: 'Source', base: '/v1/sources', id: 'id', create: 'post', edit: 'PATCH', actions: ['pause', 'resume'],
    cols: ['id', 'kind', 'topic', 'state', 'description'],
    fields: [
      { path: 'kind', label: 'Kind', createOnly: true, required: true, placeholder: 'webhook', help: 'webhook, kafka, nats, amqp, mqtt, redis, outbox, ...' },
      { path: 'topic', label: 'Topic', required: true, placeholder: 'orders.{topic}', help: 'may use {topic}, {header.x}, {payload.x}' },
      { path: 'description', label: 'Description' },
      { path: 'shards', label: 'Shards', type: 'number', placeholder: '1' },
      { path: 'tenant', label: 'Tenant', createOnly: true, placeholder: '(none)' },
      { path: 'config', label: 'Config (JSON object; secrets are kept when left out)', type: 'json', rows: 5, placeholder: '{"verify": "github", "secret": "..."}' },
      { path: 'mapping', label: 'Mapping (JSON object)', type: 'json', rows: 3, placeholder: '{"key": "{payload.id}"}' },
    ] },
  rules: { title: 'Rules', one: 'Rule', base: '/v1/rules', id: 'name', create: 'put', edit: 'PUT', actions: ['pause', 'resume', 'rebuild'],
    cols: ['name', 'input', 'state', 'state_reason'],
    fields: [
      { path: 'input', label: 'Input topic', required: true, placeholder: 'payments.settled' },
      { path: 'filter', label: 'Filter (JSON: a filter object or a CEL string)', type: 'json', rows: 2 },
      { path: 'key', label: 'Key (payload field; empty: the event key)', placeholder: 'wallet_id' },
      { path: 'time', label: 'Time field (empty: the event time)' },
      { path: 'window.kind', label: 'Window', type: 'select', options: ['', 'sliding', 'tumbling', 'session'] },
      { path: 'window.size', label: 'Window size', placeholder: '10m' },
      { path: 'window.gap', label: 'Session gap', placeholder: '5m' },
      { path: 'aggregate.op', label: 'Aggregate', type: 'select', options: AGG_OPS, required: true },
      { path: 'aggregate.field', label: 'Aggregate field', placeholder: 'amount' },
      { path: 'when', label: 'When (CEL condition)', required: true, placeholder: 'value > 3' },
      { path: 'emit.topic', label: 'Emit topic', required: true, placeholder: 'alerts.fraud' },
      { path: 'emit.type', label: 'Emit type' },
      { path: 'emit.fields', label: 'Emit fields (JSON: name -> CEL)', type: 'json', rows: 2 },
      { path: 'partitions', label: 'Partitions', type: 'number' },
      { path: 'max_keys', label: 'Max keys', type: 'number' },
    ] },
  views: { title: 'Views', one: 'View', base: '/v1/views', id: 'name', create: 'put', edit: 'PUT', actions: ['pause', 'resume', 'rebuild'],
    cols: ['name', 'input', 'state', 'state_reason'],
    fields: [
      { path: 'input', label: 'Input topic', required: true, placeholder: 'customers.updated' },
      { path: 'filter', label: 'Filter (JSON)', type: 'json', rows: 2 },
      { path: 'key', label: 'Key (payload field; empty: the event key)' },
      { path: 'aggregate.op', label: 'Aggregate (empty: the latest payload)', type: 'select', options: [''].concat(AGG_OPS) },
      { path: 'aggregate.field', label: 'Aggregate field' },
      { path: 'max_keys', label: 'Max keys', type: 'number' },
    ] },
  archives: { title: 'Archives', one: 'Archive', base: '/v1/archives', id: 'name', create: 'put', edit: 'PUT', actions: ['pause', 'resume'],
    cols: ['name', 'topics', 'format', 'state', 'state_reason'],
    fields: [
      { path: 'topics', label: 'Topics', required: true, placeholder: 'logs.>' },
      { path: 'description', label: 'Description' },
      { path: 'filter', label: 'Filter (JSON)', type: 'json', rows: 2 },
      { path: 'format', label: 'Format', type: 'select', options: ['jsonl', 'parquet'] },
      { path: 'compression', label: 'Compression', type: 'select', options: ['', 'zstd', 'gzip'] },
      { path: 'partition', label: 'Partition (JSON array of {key, field, default})', type: 'json', rows: 3 },
      { path: 'flush.max_bytes', label: 'Flush at bytes', type: 'number' },
      { path: 'flush.max_events', label: 'Flush at events', type: 'number' },
      { path: 'flush.max_age', label: 'Flush after', placeholder: '5m' },
      { path: 'destination', label: 'Destination (JSON)', type: 'json', rows: 3, required: true, placeholder: '{"type": "local", "path": "logs"}' },
      { path: 'max_hold', label: 'Max hold', placeholder: '7d' },
      { path: 'start', label: 'Start (now, earliest or a time)', createOnly: true, placeholder: 'now' },
    ] },
  schedules: { title: 'Schedules', one: 'Schedule', base: '/v1/schedules', id: 'name', create: 'put', edit: 'PUT', actions: ['pause', 'resume'],
    cols: ['name', 'cron', 'every', 'paused', 'next_fire_times'],
    fields: [
      { path: 'cron', label: 'Cron', placeholder: '0 9 * * MON-FRI' },
      { path: 'every', label: 'or every', placeholder: '15m' },
      { path: 'time_zone', label: 'Time zone', placeholder: 'UTC' },
      { path: 'event.topic', label: 'Event topic', required: true, placeholder: 'reports.daily' },
      { path: 'event.type', label: 'Event type' },
      { path: 'event.key', label: 'Event key' },
      { path: 'event.data', label: 'Event data (JSON)', type: 'json', rows: 3 },
      { path: 'start_at', label: 'Start at (RFC 3339)' },
      { path: 'end_at', label: 'End at (RFC 3339)' },
      { path: 'missed', label: 'Missed ticks', type: 'select', options: ['', 'skip', 'once', 'all'] },
      { path: 'max_missed', label: 'Max missed', type: 'number' },
      { path: 'paused', label: 'Paused', type: 'checkbox' },
    ] },
};

function getPath(o, path) {
  let cur = o;
  for (const p of path.split('.')) { if (cur === null || typeof cur !== 'object') return undefined; cur = cur[p]; }
  return cur;
}

function setPath(o, path, v) {
  const parts = path.split('.');
  let cur = o;
  for (const p of parts.slice(0, -1)) { if (typeof cur[p] !== 'object' || cur[p] === null) cur[p] = {}; cur = cur[p]; }
  cur[parts[parts.length - 1]] = v;
}

function fieldID(kind, path) { return kind + '-f-' + path.replace(/\./g, '-'); }

// problemErrors lists the members a problem blames: each of errors[]
// ({field or pointer, detail}) or its one field.
function problemErrors(e) {
  const p = (e && e.problem) || {};
  if (Array.isArray(p.errors) && p.errors.length) {
    return p.errors.map(x => ({ field: (x.field || (x.pointer || '').replace(/^\//, '').replace(/\//g, '.')), detail: x.detail || x.message || e.message }));
  }
  return p.field ? [{ field: p.field, detail: e.message }] : [];
}

// resourceForm builds a kind's form; obj fills it for an edit. submit gets
// the body and returns a promise; a refusal's messages go next to their
// inputs.
function resourceForm(kind, obj, submit) {
  const R = RESOURCES[kind];
  const editing = !!obj;
  const inputs = {};
  const errs = {};
  const initial = {};
  const rows = [];
  for (const f of R.fields) {
    if (editing && f.createOnly) continue;
    const id = fieldID(kind, f.path);
    let el;
    if (f.type === 'select') {
      el = h('select', { id }, f.options.map(o => h('option', { value: o }, o === '' ? '(none)' : o)));
    } else if (f.type === 'json') {
      el = h('textarea', { id, rows: f.rows || 3, placeholder: f.placeholder, class: 'json-field' });
    } else if (f.type === 'checkbox') {
      el = h('input', { id, type: 'checkbox' });
    } else {
      el = h('input', { id, type: f.type === 'number' ? 'number' : 'text', placeholder: f.placeholder });
    }
    const v = obj ? getPath(obj, f.path) : undefined;
    if (f.type === 'checkbox') el.checked = !!v;
    else if (f.type === 'json') el.value = v === undefined || v === null ? '' : JSON.stringify(v, null, 2);
    else el.value = v === undefined || v === null ? (f.type === 'select' ? f.options[0] : '') : String(v);
    initial[f.path] = f.type === 'checkbox' ? el.checked : el.value;
    inputs[f.path] = el;
    errs[f.path] = h('span', { id: id + '-error', class: 'field-error', role: 'alert' });
    rows.push(h('label', { class: 'field' + (f.type === 'json' ? ' wide' : '') }, h('span', null, f.label + (f.required ? ' *' : '')), el,
      f.help ? h('small', null, f.help) : null, errs[f.path]));
  }
  const clear = () => {
    for (const [p, e] of Object.entries(errs)) { e.textContent = ''; inputs[p].removeAttribute('aria-invalid'); }
  };
  const blame = (field, detail) => {
    // The input of the member, or of the nearest enclosing member, or the
    // first inside it.
    let best = null;
    for (const p of Object.keys(inputs)) {
      if (p === field || field.startsWith(p + '.')) { if (!best || p.length > best.length) best = p; }
    }
    if (!best) best = Object.keys(inputs).find(p => p.startsWith(field + '.')) || null;
    if (!best) return false;
    errs[best].textContent = (errs[best].textContent ? errs[best].textContent + ' ' : '') + detail;
    inputs[best].setAttribute('aria-invalid', 'true');
    return true;
  };
  // body reads the form; on an edit with PATCH, only what changed.
  const body = () => {
    const out = {};
    const bad = [];
    for (const f of R.fields) {
      const el = inputs[f.path];
      if (!el) continue;
      const cur = f.type === 'checkbox' ? el.checked : el.value;
      if (editing && R.edit === 'PATCH' && cur === initial[f.path]) continue;
      if (f.type === 'checkbox') { setPath(out, f.path, el.checked); continue; }
      const raw = el.value.trim();
      if (raw === '') { if (editing && R.edit === 'PATCH') setPath(out, f.path, null); continue; }
      if (f.type === 'number') {
        const n = Number(raw);
        if (!Number.isFinite(n)) { bad.push([f.path, 'a number is needed here']); continue; }
        setPath(out, f.path, n);
      } else if (f.type === 'json') {
        try { setPath(out, f.path, JSON.parse(raw)); } catch (e) { bad.push([f.path, 'this is not JSON: ' + e.message]); }
      } else {
        setPath(out, f.path, raw);
      }
    }
    return { out, bad };
  };
  const form = h('form', {
    id: kind + (editing ? '-edit' : '-new') + '-form', class: 'resource', novalidate: true,
    onsubmit: async e => {
      e.preventDefault();
      flash('');
      clear();
      const { out, bad } = body();
      if (bad.length) { for (const [p, d] of bad) blame(p, d); flash('Fix the marked fields.'); return; }
      try {
        await submit(out);
      } catch (err) {
        const list = problemErrors(err);
        const placed = list.filter(x => blame(x.field, x.detail));
        flash(err.message + (placed.length ? '' : list.length ? ' (field: ' + list.map(x => x.field).join(', ') + ')' : ''));
      }
    },
  }, rows, h('button', { id: kind + (editing ? '-save' : '-create'), type: 'submit' }, editing ? 'Save' : 'Create'));
  return { form, body };
}

// rawEditor is the escape hatch: the whole definition as JSON.
function rawEditor(kind, start, submit) {
  const editor = h('textarea', { id: kind + '-raw', rows: 12 }, JSON.stringify(start, null, 2));
  return h('details', { class: 'raw' }, h('summary', null, 'Edit as JSON'),
    h('form', { onsubmit: e => { e.preventDefault(); run(async () => { let b; try { b = JSON.parse(editor.value); } catch (err) { throw new Error('This is not JSON: ' + err.message); } await submit(b); }); } },
      editor, h('button', { id: kind + '-raw-submit', type: 'submit' }, 'Send JSON')));
}

async function resourcesPage(kind) {
  const R = RESOURCES[kind];
  const list = await api('GET', R.base + '?limit=500');
  const name = h('input', { id: kind + '-name', placeholder: 'name' });
  const nameErr = h('span', { id: kind + '-name-error', class: 'field-error', role: 'alert' });
  const create = async body => {
    nameErr.textContent = '';
    if (R.create === 'put' && !name.value.trim()) { nameErr.textContent = 'a name is required'; throw new APIError(400, { detail: 'A name is required.', field: 'name' }); }
    const o = R.create === 'post' ? await api('POST', R.base, body) : await api('PUT', R.base + '/' + enc(name.value.trim()), body);
    flash(R.one + ' ' + (o[R.id] || name.value) + ' created.', 'ok');
    location.hash = '#/' + kind + '/' + enc(o[R.id] || name.value.trim());
  };
  const { form } = resourceForm(kind, null, async body => {
    try { await create(body); } catch (err) {
      if (problemErrors(err).some(x => x.field === 'name')) nameErr.textContent = err.message;
      throw err;
    }
  });
  if (R.create === 'put') form.prepend(h('label', { class: 'field' }, h('span', null, 'Name *'), name, nameErr));
  return [
    h('h1', null, R.title),
    table(R.cols.map((c, i) => i === 0 ? { label: c, render: o => h('a', { href: '#/' + kind + '/' + enc(o[R.id]) }, o[R.id]) } : c),
      firstArray(list), { id: kind, rowId: o => o[R.id] }),
    section('New ' + R.one.toLowerCase(), form, rawEditor(kind, {}, create)),
  ];
}

// Members a GET shows that a PUT or PATCH does not take.
const READ_ONLY = ['id', 'name', 'created_at', 'updated_at', 'state', 'state_reason', 'state_reason_detail', 'stats', 'shard_status',
  'next_fire_times', 'last_fired_at', 'last_tick', 'tenant', 'lag', 'status', 'cursor', 'files', 'last_error', 'last_error_at', 'inbound_path', 'shards_status', 'position'];

async function resourcePage(kind, id) {
  const R = RESOURCES[kind];
  const path = R.base + '/' + enc(id);
  const o = await api('GET', path);
  const save = async body => { await api(R.edit, path, body); setTimeout(() => flash('Saved.', 'ok')); await render(); };
  const { form } = resourceForm(kind, o, save);
  const editable = Object.fromEntries(Object.entries(o).filter(([k]) => !READ_ONLY.includes(k)));
  return [
    h('h1', null, R.one, ' ', h('code', null, id)),
    o.state ? h('p', null, 'State: ', h('span', { id: kind + '-state', class: 'state ' + o.state }, o.state), o.state_reason ? ' — ' + o.state_reason : '') : null,
    h('div', { class: 'actions' },
      R.actions.map(a => button(a[0].toUpperCase() + a.slice(1), () => run(() => api('POST', path + '/' + a), a + ': done.'), { id: kind + '-' + a })),
      button('Delete', confirmThen('Delete ' + id + '?', () => run(async () => { await api('DELETE', path); location.hash = '#/' + kind; })), { id: kind + '-delete', class: 'danger' })),
    section('Edit', form, rawEditor(kind, editable, save)),
    section('As stored', pre(o)),
  ];
}
