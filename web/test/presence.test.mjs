// Unit tests of web/static/presence.js against a fake WebSocket: the
// heartbeat, silence detection, and the reconnect policy, with short real
// timers. The real-browser test (run.sh) covers the real socket.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  PresenceClient, decideReconnect, backoffDelay, parseDuration, closeCodeName, DEFAULT_BACKOFF,
} from '../static/presence.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// FakeWebSocket records what the client sends and lets a test play the
// server.
class FakeWebSocket {
  static sockets = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    FakeWebSocket.sockets.push(this);
  }
  send(data) { this.sent.push(JSON.parse(data)); }
  close(code, reason) { this.closedWith = { code, reason }; this.readyState = 2; }
  // Server side.
  open() { this.readyState = 1; this.onopen?.(); }
  frame(f) { this.onmessage?.({ data: JSON.stringify(f) }); }
  serverClose(code, reason = '') { this.readyState = 3; this.onclose?.({ code, reason }); }
}

function newClient(extra = {}) {
  FakeWebSocket.sockets = [];
  const states = [];
  const pushes = [];
  const c = new PresenceClient({
    uid: 'alice', token: 'tok', labels: { device: 'test' }, url: 'ws://x/v1/connect',
    WebSocket: FakeWebSocket,
    backoff: { min: 10, max: 40, multiplier: 2, resetAfter: 10000 },
    onState: (s, d) => states.push([s, d]),
    onPush: (p) => pushes.push(p),
    ...extra,
  });
  return { c, states, pushes, last: () => FakeWebSocket.sockets.at(-1) };
}

const identified = (interval = '0.020s', timeout = '5s') => ({
  identified: { sessionId: 'S1', uid: 'alice', heartbeatInterval: interval, heartbeatTimeout: timeout },
});

async function connected(t, opts) {
  const h = newClient(opts);
  h.c.connect();
  await sleep(0); // the token lookup is async
  h.last().open();
  h.last().frame(identified(...(opts?.beats ?? [])));
  assert.equal(h.c.state, 'connected');
  t.after(() => h.c.close());
  return h;
}

test('parseDuration reads protojson durations', () => {
  assert.equal(parseDuration('10s'), 10000);
  assert.equal(parseDuration('0.250s'), 250);
  assert.equal(parseDuration(undefined), undefined);
  assert.equal(parseDuration('soon'), undefined);
});

test('backoffDelay stays in [min, min(max, min*mult^(n+1))]', () => {
  const b = DEFAULT_BACKOFF;
  assert.equal(backoffDelay(0, b, () => 0), 500);
  assert.equal(backoffDelay(0, b, () => 1), 1000);
  assert.equal(backoffDelay(2, b, () => 1), 4000);
  assert.equal(backoffDelay(20, b, () => 1), 30000);
  for (let n = 0; n < 10; n++) {
    const d = backoffDelay(n, b);
    assert.ok(d >= 500 && d <= 30000, `attempt ${n}: ${d}`);
  }
});

test('decideReconnect follows the ending table', () => {
  const cases = [
    ['REPLACED never', { reason: 'GOODBYE_REASON_REPLACED', reconnect: true }, 4010, false],
    ['KICKED without the hint', { reason: 'GOODBYE_REASON_KICKED', reconnect: false }, 4010, false],
    ['KICKED with the hint', { reason: 'GOODBYE_REASON_KICKED', reconnect: true }, 4010, true],
    ['SHUTDOWN', { reason: 'GOODBYE_REASON_SHUTDOWN', reconnect: true, reconnectAfter: '2.500s' }, 4014, true, 2500],
    ['HEARTBEAT_TIMEOUT', { reason: 'GOODBYE_REASON_HEARTBEAT_TIMEOUT', reconnect: true }, 4014, true],
    ['SLOW_CONSUMER', { reason: 'GOODBYE_REASON_SLOW_CONSUMER' }, 4008, true],
    ['TOKEN_EXPIRED', { reason: 'GOODBYE_REASON_TOKEN_EXPIRED' }, 4016, true],
    ['unknown reason, flag says no', { reason: 'GOODBYE_REASON_NEW', reconnect: false }, 4014, false],
    ['connection lost', null, 1006, true],
    ['unavailable', null, 4014, true],
    ['bad token', null, 4016, false],
    ['bad frame', null, 4003, false],
    ['aborted, Goodbye lost', null, 4010, false],
    ['too big', null, 4008, true],
  ];
  for (const [name, gb, code, want, hint] of cases) {
    const got = decideReconnect(gb, code);
    assert.equal(got.reconnect, want, name);
    assert.equal(got.hint, hint, `${name}: hint`);
  }
  assert.equal(closeCodeName(4014), 'UNAVAILABLE (4014)');
  assert.equal(closeCodeName(1006), 'connection lost (1006)');
});

test('identifies, pings at the announced interval, delivers pushes', async (t) => {
  const { c, pushes, last } = await connected(t);
  const ws = last();
  assert.deepEqual(ws.protocols, ['presence.v1.json']);
  assert.deepEqual(ws.sent[0], { identify: { uid: 'alice', token: 'tok', labels: { device: 'test' } } });
  await sleep(110);
  const pings = ws.sent.filter((f) => f.ping);
  assert.ok(pings.length >= 2 && pings.length <= 6, `${pings.length} pings in 110 ms at a 20 ms interval`);
  assert.deepEqual(pings.map((p) => p.ping.seq).slice(0, 2), ['1', '2']);
  ws.frame({ pong: { seq: '1' } });
  assert.ok(c.rtt >= 0);
  ws.frame({ push: { id: 'P', seq: '1', data: { text: 'hi' } } });
  ws.frame({ somethingNew: {} }); // ignored
  assert.deepEqual(pushes.map((p) => p.data.text), ['hi']);
});

test('Goodbye SHUTDOWN: reconnects after the hint', async (t) => {
  const { c, states, last } = await connected(t);
  const first = last();
  first.frame({ goodbye: { reason: 'GOODBYE_REASON_SHUTDOWN', reconnect: true, reconnectAfter: '0.030s' } });
  first.serverClose(4014, 'the server is shutting down');
  const [state, d] = states.at(-1);
  assert.equal(state, 'reconnecting');
  assert.equal(d.delay, 30);
  assert.equal(d.hinted, true);
  assert.equal(d.code, 4014);
  assert.equal(FakeWebSocket.sockets.length, 1);
  await sleep(100);
  assert.equal(FakeWebSocket.sockets.length, 2, 'a new socket after the hint');
  assert.equal(c.state, 'connecting');
});

test('Goodbye REPLACED and KICKED without the hint: no reconnect', async (t) => {
  for (const gb of [{ reason: 'GOODBYE_REASON_REPLACED' }, { reason: 'GOODBYE_REASON_KICKED', reconnect: false }]) {
    const { c, last } = await connected(t);
    last().frame({ goodbye: gb });
    last().serverClose(4010, 'aborted');
    assert.equal(c.state, 'closed', gb.reason);
    await sleep(30);
    assert.equal(FakeWebSocket.sockets.length, 1, `${gb.reason}: no new socket`);
  }
});

test('a silent server is dropped and the client reconnects with backoff', async (t) => {
  const { c, states, last } = await connected(t, { beats: ['1s', '0.100s'] });
  const ws = last();
  await sleep(250);
  assert.deepEqual(ws.closedWith, { code: 4000, reason: 'client gave up' });
  const rec = states.find(([s]) => s === 'reconnecting');
  assert.ok(rec, 'went to reconnecting');
  assert.match(rec[1].reason, /no frame from the server/);
  assert.ok(rec[1].delay >= 10 && rec[1].delay <= 20, `first delay ${rec[1].delay} in [10, 20]`);
  assert.ok(FakeWebSocket.sockets.length >= 2, 'opened a new socket');
  assert.notEqual(c.state, 'closed');
});

test('a lost connection reconnects; a refused token stops', async (t) => {
  const { c, last } = await connected(t);
  last().serverClose(1006);
  assert.equal(c.state, 'reconnecting');
  await sleep(80);
  assert.equal(FakeWebSocket.sockets.length, 2);
  last().open();
  last().serverClose(4016, 'token expired');
  assert.equal(c.state, 'closed');
});

test('no Identified within the connect timeout: retry', async (t) => {
  const { c, last } = newClient({ connectTimeout: 30 });
  t.after(() => c.close());
  c.connect();
  await sleep(0);
  last().open();
  await sleep(50);
  assert.ok(last().closedWith || FakeWebSocket.sockets.length > 1);
  assert.ok(['reconnecting', 'connecting'].includes(c.state), c.state);
});

test('close stops for good', async (t) => {
  const { c, states, last } = await connected(t);
  const ws = last();
  c.close();
  assert.deepEqual(ws.closedWith, { code: 1000, reason: 'client closed' });
  ws.serverClose(1000); // late close event: ignored
  assert.equal(c.state, 'closed');
  assert.equal(states.at(-1)[1].by, 'client');
  await sleep(30);
  assert.equal(FakeWebSocket.sockets.length, 1);
});

test('token may be a function, called per connect', async (t) => {
  let calls = 0;
  const { c, last } = newClient({ token: async () => `t${++calls}` });
  t.after(() => c.close());
  c.connect();
  await sleep(0);
  last().open();
  assert.equal(last().sent[0].identify.token, 't1');
  last().serverClose(1006);
  await sleep(80);
  last().open();
  assert.equal(last().sent[0].identify.token, 't2');
});

test('any server frame keeps the silence watchdog quiet', async (t) => {
  const { c, last } = await connected(t, { beats: ['1s', '0.100s'] });
  const ws = last();
  for (let i = 0; i < 6; i++) {
    await sleep(40);
    ws.frame({ push: { id: `P${i}`, seq: String(i + 1), data: i } });
  }
  assert.equal(ws.closedWith, null, 'not dropped while pushes arrive');
  assert.equal(c.state, 'connected');
  await sleep(200);
  assert.deepEqual(ws.closedWith, { code: 4000, reason: 'client gave up' }, 'dropped once silent');
});

test('the next Ping is scheduled from the Pong, one interval after the last Ping', async (t) => {
  const { last } = await connected(t, { beats: ['0.200s', '5s'] });
  const ws = last();
  const pings = () => ws.sent.filter((f) => f.ping).length;
  await sleep(260); // ping 1 at ~200 ms
  assert.equal(pings(), 1);
  ws.frame({ pong: { seq: '1' } }); // re-arms: ping 2 at ~400 ms
  await sleep(60);
  assert.equal(pings(), 1, 'not early');
  await sleep(160);
  assert.equal(pings(), 2, 'one interval after the first');
});

test('resumes from the last push handled, acks pushes that ask, reports lost', async (t) => {
  const { c, states, pushes, last } = newClient();
  t.after(() => c.close());
  c.connect();
  await sleep(5);
  let ws = last();
  ws.open();
  assert.equal(ws.sent[0].identify.resume, undefined, 'a first connect has nothing to resume');
  ws.frame({ identified: { sessionId: 'S1', uid: 'alice', heartbeatInterval: '1s', heartbeatTimeout: '3s', uidEpoch: 'UE', broadcastEpoch: 'BE', broadcastSeq: '7' } });
  ws.frame({ push: { id: 'P1', scope: 'PUSH_SCOPE_UID', seq: '1', epoch: 'UE', ackRequired: true, data: 1 } });
  ws.frame({ push: { id: 'P2', scope: 'PUSH_SCOPE_BROADCAST', seq: '8', epoch: 'BE', data: 2 } });
  // Outside any sequence (a cluster node cut off from NATS): delivered, no position.
  ws.frame({ push: { id: 'P3', scope: 'PUSH_SCOPE_UID', data: 3 } });
  assert.deepEqual(ws.sent.filter((f) => f.ack), [{ ack: { pushId: 'P1' } }], 'acks only the push that asked');
  assert.equal(pushes.length, 3);
  ws.serverClose(1006);
  await sleep(80);
  ws = last();
  ws.open();
  assert.deepEqual(ws.sent[0].identify.resume, { uidEpoch: 'UE', uidSeq: '1', broadcastEpoch: 'BE', broadcastSeq: '8' });
  ws.frame({ identified: { sessionId: 'S2', uid: 'alice', heartbeatInterval: '1s', heartbeatTimeout: '3s', uidEpoch: 'UE2', uidSeq: '4', uidResume: 'RESUME_RESULT_LOST', broadcastEpoch: 'BE', broadcastSeq: '8', broadcastResume: 'RESUME_RESULT_RESUMED' } });
  const [state, detail] = states.at(-1);
  assert.equal(state, 'connected');
  assert.equal(detail.lost, true);
  ws.serverClose(1006);
  await sleep(80);
  last().open();
  assert.deepEqual(last().sent[0].identify.resume, { uidEpoch: 'UE2', uidSeq: '4', broadcastEpoch: 'BE', broadcastSeq: '8' }, 'after LOST it carries on from Identified');
});
