// The debug console: connect as a uid, send to a uid or to everyone over
// the REST API, watch pushes and state changes, see who is online.
//
// URL parameters fill the form: ?uid=alice&labels=device=tab&connect=1
// connects on load.
import { PresenceClient, closeCodeName } from './presence.js';

const $ = (id) => document.getElementById(id);
const ONLINE_POLL_MS = 3000;
const LOG_MAX = 500;

let client = null;

// ---- log ----

function log(kind, text) {
  const li = document.createElement('li');
  li.className = `log-${kind}`;
  li.dataset.kind = kind;
  const t = document.createElement('time');
  t.textContent = new Date().toLocaleTimeString([], { hour12: false }) + '.' + String(Date.now() % 1000).padStart(3, '0');
  li.append(t, ' ', text);
  const ol = $('log');
  const atBottom = ol.scrollTop + ol.clientHeight >= ol.scrollHeight - 4;
  ol.append(li);
  while (ol.children.length > LOG_MAX) ol.firstElementChild.remove();
  if (atBottom) ol.scrollTop = ol.scrollHeight;
}

function describePush(p) {
  const payload = p.data !== undefined
    ? JSON.stringify(p.data)
    : `${p.binary?.contentType || 'binary'}, ${atob(p.binary?.data || '').length} bytes`;
  const scope = p.scope === 'PUSH_SCOPE_BROADCAST' ? 'broadcast' : 'uid';
  return `push ${scope} #${p.seq} ${payload}  (id ${p.id})`;
}

function describeEnd(d) {
  const parts = [];
  if (d.goodbye) {
    const g = d.goodbye;
    parts.push(`Goodbye ${String(g.reason).replace('GOODBYE_REASON_', '')}${g.message ? `: ${g.message}` : ''}`);
  }
  // The close reason repeats the Goodbye's message: say it once.
  const reason = d.reason && d.reason !== d.goodbye?.message ? `: ${d.reason}` : '';
  if (d.code !== undefined) parts.push(`closed ${closeCodeName(d.code)}${reason}`);
  else if (d.reason) parts.push(d.reason);
  return parts.join('; ');
}

// ---- state ----

function onState(state, d) {
  const badge = $('state');
  badge.textContent = state;
  badge.dataset.state = state;
  $('session').textContent = state === 'connected' ? d.sessionId : '';
  $('connect').disabled = state === 'connecting' || state === 'connected';
  $('disconnect').disabled = state === 'closed' || state === 'idle';
  if (state !== 'connected') $('rtt').textContent = '';
  switch (state) {
    case 'connecting':
      log('state', `connecting to ${d.url}${d.attempt ? ` (attempt ${d.attempt + 1})` : ''}`);
      break;
    case 'connected':
      log('state', `connected as ${d.uid}, session ${d.sessionId}; ping every ${d.heartbeatInterval / 1000}s, server timeout ${d.heartbeatTimeout / 1000}s`);
      break;
    case 'reconnecting':
      log('state', `disconnected: ${describeEnd(d) || 'connection lost'}; reconnecting in ${(d.delay / 1000).toFixed(1)}s${d.hinted ? ' (server hint)' : ''}`);
      break;
    case 'closed':
      log(d.by === 'client' ? 'state' : 'error', d.by === 'client' ? 'disconnected' : `closed by the server, not reconnecting: ${describeEnd(d)}`);
      break;
  }
  pollOnline();
}

function parseLabels(s) {
  const labels = {};
  for (const part of s.split(',')) {
    const i = part.indexOf('=');
    if (i > 0) labels[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return labels;
}

function connect() {
  const uid = $('uid').value.trim();
  if (!uid) { $('uid').focus(); return; }
  if (client) client.close();
  localStorage.setItem('presence.uid', uid);
  localStorage.setItem('presence.labels', $('labels').value);
  client = new PresenceClient({
    uid,
    token: () => $('token').value.trim(),
    labels: parseLabels($('labels').value),
    onState,
    onPush: (p) => log('push', describePush(p)),
    onFrame: (f) => {
      if (f.pong) {
        if (client?.rtt !== undefined) $('rtt').textContent = `rtt ${client.rtt.toFixed(1)} ms`;
        if ($('show-pongs').checked) log('pong', `pong #${f.pong.seq}`);
      }
    },
  });
  client.connect();
}

// ---- REST ----

function authHeaders() {
  const key = $('apikey').value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// payload sends JSON as typed ({...} or [...]) and anything else as
// {"text": ...}.
function payload(text) {
  const t = text.trim();
  if (t.startsWith('{') || t.startsWith('[')) {
    try { return JSON.parse(t); } catch { /* send it as text */ }
  }
  return { text };
}

async function post(path, body) {
  const res = await fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...authHeaders() },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${json?.message ?? text.trim()}`);
  return json;
}

async function send(ev) {
  ev.preventDefault();
  const to = $('to').value.trim();
  if (!to) { $('to').focus(); return; }
  try {
    const r = await post(`/v1/uids/${encodeURIComponent(to)}/messages`, { data: payload($('message').value) });
    log('info', `sent to ${to}: delivered to ${r.delivered ?? 0} session(s), seq ${r.seq}`);
  } catch (e) {
    log('error', `send to ${to} failed: ${e.message}`);
  }
}

async function broadcast() {
  try {
    const r = await post('/v1/broadcast', { data: payload($('message').value) });
    log('info', `broadcast: delivered to ${r.delivered ?? 0} session(s), seq ${r.seq}`);
  } catch (e) {
    log('error', `broadcast failed: ${e.message}`);
  }
}

// ---- who is online ----

let polling = false;

async function pollOnline() {
  if (polling) return;
  polling = true;
  const status = $('online-status');
  try {
    const res = await fetch('/v1/online?page_size=100', { headers: authHeaders() });
    if (res.status === 404 || res.status === 501) {
      status.textContent = 'presence queries not available';
      $('online').replaceChildren();
      return;
    }
    if (res.status === 401 || res.status === 403) {
      status.textContent = 'not authorized: set the API key';
      return;
    }
    if (!res.ok) {
      status.textContent = `HTTP ${res.status}`;
      return;
    }
    const body = await res.json();
    const uids = body.uids ?? [];
    const me = client?.state === 'connected' ? client.uid : null;
    $('online').replaceChildren(...uids.map((u) => {
      const li = document.createElement('li');
      li.textContent = u;
      if (u === me) li.className = 'me';
      return li;
    }));
    status.textContent = `${uids.length}${body.nextPageToken ? '+' : ''} uid(s)`;
  } catch (e) {
    status.textContent = `unreachable: ${e.message}`;
  } finally {
    polling = false;
  }
}

// ---- wiring ----

function init() {
  const q = new URLSearchParams(location.search);
  $('uid').value = q.get('uid') ?? localStorage.getItem('presence.uid') ?? '';
  $('labels').value = q.get('labels') ?? localStorage.getItem('presence.labels') ?? 'device=browser';
  $('to').value = q.get('to') ?? '';
  $('connect-form').addEventListener('submit', (ev) => { ev.preventDefault(); connect(); });
  $('disconnect').addEventListener('click', () => client?.close());
  $('send-form').addEventListener('submit', send);
  $('broadcast').addEventListener('click', broadcast);
  $('clear-log').addEventListener('click', () => $('log').replaceChildren());
  pollOnline();
  setInterval(pollOnline, ONLINE_POLL_MS);
  if (q.get('connect') === '1') connect();
}

init();
