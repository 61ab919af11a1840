// presence.js: the browser client for presence sessions over WebSocket.
// A plain ES module, no build step:
//
//   import { PresenceClient } from '/presence.js';
//   const c = new PresenceClient({
//     uid: 'alice', token: '...', labels: { device: 'browser' },
//     onPush: (push) => console.log(push.data),
//     onState: (state, detail) => console.log(state, detail),
//   });
//   c.connect();
//   ...
//   c.close();
//
// What it does, as the Go client does over gRPC (DESIGN.md, "The stream
// contract"):
//   - opens ws(s)://<page host>/v1/connect with subprotocol presence.v1.json
//     and sends Identify{uid, token, labels} first;
//   - once Identified, sends Ping every heartbeat_interval the server
//     announced;
//   - treats a server silent for heartbeat_timeout (no Pong, no frame at
//     all) as gone: drops the socket and reconnects;
//   - reconnects with exponential backoff and full jitter (500 ms doubling
//     up to 30 s; the count resets after a session that lasted 10 s), or
//     after Goodbye.reconnect_after when the server gave one;
//   - resumes: it remembers the last push handled (after onPush returns)
//     in each sequence and sends it in Identify.resume on every reconnect,
//     so the server replays what was missed; the 'connected' detail has
//     lost: true when the server's history could not cover the gap
//     (resync from your backend);
//   - acks a push that asks for it (push.ackRequired) once onPush returns;
//   - never reconnects after Goodbye REPLACED (two tabs would replace each
//     other forever), after KICKED only when Goodbye.reconnect says so, and
//     not after an ending a retry cannot fix (a bad frame, a bad token).
//
// States (onState): 'idle' (never connected), 'connecting' (socket open or
// opening, Identify sent), 'connected' (Identified), 'reconnecting' (waiting
// before the next attempt; detail.delay says how long), 'closed' (stopped:
// close() was called or the server said not to come back).
//
// Frames are protobuf JSON (protojson): lowerCamelCase names, uint64 as
// strings (push.seq is a string; use Number() or BigInt()), durations as
// "10s", timestamps as RFC 3339 strings. Unknown server frames are
// ignored, as the protocol asks.

export const SUBPROTOCOL_JSON = 'presence.v1.json';

// Close codes the bridge uses: 4000 + the gRPC status code the session
// ended with (wsbridge/doc.go).
export const CLOSE_CODE_BASE = 4000;

// gRPC codes, by name, for close codes.
export const GRPC = Object.freeze({
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5, ALREADY_EXISTS: 6, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9, ABORTED: 10, OUT_OF_RANGE: 11, UNIMPLEMENTED: 12,
  INTERNAL: 13, UNAVAILABLE: 14, DATA_LOSS: 15, UNAUTHENTICATED: 16,
});

const GRPC_NAMES = Object.fromEntries(Object.entries(GRPC).map(([k, v]) => [v, k]));

export const DEFAULT_BACKOFF = Object.freeze({
  min: 500, // ms: the shortest wait and the base of the ceiling
  max: 30000, // ms: the ceiling's cap
  multiplier: 2, // the ceiling grows by this per attempt
  resetAfter: 10000, // ms: a session this long resets the attempt count
});

// parseDuration turns a protojson Duration ("10s", "0.250s") into ms.
export function parseDuration(d) {
  if (typeof d === 'number') return d * 1000;
  if (typeof d !== 'string' || !d.endsWith('s')) return undefined;
  const s = Number(d.slice(0, -1));
  return Number.isFinite(s) ? s * 1000 : undefined;
}

// closeCodeName describes a close code: 'UNAVAILABLE (4014)'.
export function closeCodeName(code) {
  const g = code - CLOSE_CODE_BASE;
  if (g >= 0 && g in GRPC_NAMES) return `${GRPC_NAMES[g]} (${code})`;
  const ws = { 1000: 'normal', 1001: 'going away', 1002: 'protocol error', 1005: 'no status', 1006: 'connection lost', 1009: 'too big', 1011: 'server error' };
  return ws[code] ? `${ws[code]} (${code})` : String(code);
}

// backoffDelay draws the wait before reconnect attempt n (from 0): uniform
// in [min, min(max, min * multiplier^(n+1))].
export function backoffDelay(n, b = DEFAULT_BACKOFF, random = Math.random) {
  const ceiling = Math.min(b.max, b.min * Math.pow(b.multiplier, n + 1));
  return Math.round(b.min + random() * Math.max(0, ceiling - b.min));
}

// Goodbye reasons, as protojson spells them.
const REPLACED = 'GOODBYE_REASON_REPLACED';
const KICKED = 'GOODBYE_REASON_KICKED';
const ALWAYS_RECONNECT = new Set([
  'GOODBYE_REASON_HEARTBEAT_TIMEOUT', 'GOODBYE_REASON_SLOW_CONSUMER',
  'GOODBYE_REASON_SHUTDOWN', 'GOODBYE_REASON_TOKEN_EXPIRED',
]);

// Endings a retry cannot fix: the client itself is wrong. ABORTED is here
// too: it means replaced or kicked, and without the Goodbye to say
// otherwise, not coming back is the safe side.
const PERMANENT = new Set([
  GRPC.INVALID_ARGUMENT, GRPC.PERMISSION_DENIED, GRPC.FAILED_PRECONDITION,
  GRPC.ABORTED, GRPC.UNIMPLEMENTED, GRPC.UNAUTHENTICATED,
]);

// decideReconnect says whether to connect again after a session ended with
// goodbye (the last Goodbye frame, or null) and the socket's close code,
// and the server's wait hint in ms (undefined: use the backoff).
export function decideReconnect(goodbye, code) {
  if (goodbye) {
    let reconnect;
    if (goodbye.reason === REPLACED) reconnect = false;
    else if (goodbye.reason === KICKED) reconnect = goodbye.reconnect === true;
    else if (ALWAYS_RECONNECT.has(goodbye.reason)) reconnect = true;
    else reconnect = goodbye.reconnect === true;
    const hint = reconnect ? parseDuration(goodbye.reconnectAfter) : undefined;
    return { reconnect, hint: hint !== undefined && hint >= 0 ? hint : undefined };
  }
  const g = code - CLOSE_CODE_BASE;
  if (g >= 0 && g <= GRPC.UNAUTHENTICATED) return { reconnect: !PERMANENT.has(g), hint: undefined };
  // 1006 (connection lost), 1001, 1011, a proxy's 1000: try again.
  return { reconnect: true, hint: undefined };
}

function defaultURL() {
  const l = globalThis.location;
  return `${l.protocol === 'https:' ? 'wss:' : 'ws:'}//${l.host}/v1/connect`;
}

const noop = () => {};

export class PresenceClient {
  // opts: uid (required); token (a string, or a function returning one or
  // a promise of one, called before each connect); labels (an object of
  // strings); url (default ws(s)://<page host>/v1/connect); onPush(push);
  // onState(state, detail); onFrame(frame) for every server frame;
  // backoff ({min, max, multiplier, resetAfter} in ms); connectTimeout (ms
  // to wait for Identified, default 10000); WebSocket (a constructor, for
  // tests).
  constructor(opts) {
    if (!opts || !opts.uid) throw new Error('PresenceClient: uid is required');
    this.uid = opts.uid;
    this.token = opts.token ?? '';
    this.labels = opts.labels ?? {};
    this.url = opts.url ?? defaultURL();
    this.onPush = opts.onPush ?? noop;
    this.onState = opts.onState ?? noop;
    this.onFrame = opts.onFrame ?? noop;
    this.backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    this.connectTimeout = opts.connectTimeout ?? 10000;
    this._WebSocket = opts.WebSocket ?? globalThis.WebSocket;

    this._state = 'idle';
    this._gen = 0; // counts attempts, so a stale async step can tell
    this._ws = null; // the current socket
    this._stopped = true; // close() was called or the server said stop
    this._attempt = 0; // reconnect attempts since the last stable session
    this._timers = {}; // by name: connect, ping, watchdog, retry
    this._session = null; // Identified of the current session
    this._goodbye = null; // last Goodbye on the current socket
    this._connectedAt = 0;
    this._lastPingAt = 0;
    this._seq = 0;
    this._pingSentAt = new Map(); // seq -> performance.now(), last few
    this.rtt = undefined; // ms, from the last Pong
    // The last push handled in each sequence, for Identify.resume.
    this._pos = { uidEpoch: '', uidSeq: '0', broadcastEpoch: '', broadcastSeq: '0' };
  }

  get state() { return this._state; }
  // The current session's Identified frame (sessionId, uid, heartbeats).
  get session() { return this._session; }

  // connect starts (or restarts) the client; it keeps a session open until
  // close() or until the server says not to come back.
  connect() {
    this._teardown();
    this._stopped = false;
    this._attempt = 0;
    this._open();
  }

  // close ends the session (close code 1000) and stops reconnecting.
  close() {
    this._stopped = true;
    const ws = this._teardown();
    if (ws) {
      try { ws.close(1000, 'client closed'); } catch { /* already closing */ }
    }
    this._setState('closed', { by: 'client' });
  }

  _setState(state, detail = {}) {
    this._state = state;
    try { this.onState(state, detail); } catch (e) { console.error('presence onState:', e); }
  }

  // _timer (re)arms the timer called name.
  _timer(name, fn, ms) {
    clearTimeout(this._timers[name]);
    this._timers[name] = setTimeout(() => { delete this._timers[name]; fn(); }, ms);
  }

  _clearTimer(name) {
    clearTimeout(this._timers[name]);
    delete this._timers[name];
  }

  // _teardown stops every timer and detaches the current socket, which it
  // returns (still open, maybe).
  _teardown() {
    for (const name of Object.keys(this._timers)) this._clearTimer(name);
    const ws = this._ws;
    this._gen++;
    this._ws = null;
    this._session = null;
    this._pingSentAt.clear();
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    return ws;
  }

  async _open() {
    const gen = ++this._gen;
    this._goodbye = null;
    this._session = null;
    this._connectedAt = 0;
    this._setState('connecting', { attempt: this._attempt, url: this.url });
    let token;
    try {
      token = typeof this.token === 'function' ? await this.token() : this.token;
    } catch (e) {
      if (gen === this._gen) this._ended({ reason: `getting a token failed: ${e}` });
      return;
    }
    if (this._stopped || gen !== this._gen) return; // closed or restarted meanwhile
    let ws;
    try {
      ws = new this._WebSocket(this.url, [SUBPROTOCOL_JSON]);
    } catch (e) {
      this._ended({ reason: `opening the WebSocket failed: ${e}` });
      return;
    }
    this._ws = ws;
    // Give up on a server that does not answer Identify in time.
    this._timer('connect', () => this._drop(`no Identified within ${this.connectTimeout} ms`), this.connectTimeout);
    ws.onopen = () => {
      const identify = { uid: this.uid, labels: this.labels };
      if (token) identify.token = token;
      if (this._pos.uidEpoch || this._pos.broadcastEpoch) identify.resume = { ...this._pos };
      this._send({ identify });
    };
    ws.onmessage = (ev) => this._onMessage(ev);
    ws.onerror = noop; // onclose follows with the code
    ws.onclose = (ev) => {
      if (ws !== this._ws) return;
      const goodbye = this._goodbye;
      const session = this._session;
      this._teardown();
      this._ended({ code: ev.code, reason: ev.reason, goodbye, session });
    };
  }

  _send(frame) {
    if (this._ws && this._ws.readyState === 1) this._ws.send(JSON.stringify(frame));
  }

  _onMessage(ev) {
    // Any frame shows the server is alive: re-arm the silence watchdog.
    if (this._session) this._armWatchdog();
    let frame;
    try {
      frame = JSON.parse(ev.data);
    } catch {
      return; // not ours to fix: ignore
    }
    try { this.onFrame(frame); } catch (e) { console.error('presence onFrame:', e); }
    if (frame.identified) this._onIdentified(frame.identified);
    else if (frame.pong) this._onPong(frame.pong);
    else if (frame.push) {
      const p = frame.push;
      try { this.onPush(p); } catch (e) { console.error('presence onPush:', e); }
      this._advance(p);
      if (p.ackRequired) this._send({ ack: { pushId: p.id } });
    } else if (frame.goodbye) this._goodbye = frame.goodbye;
    // Anything else is a newer frame: ignored.
  }

  // Timers and hidden tabs: Chrome runs a chain of timers in a tab hidden
  // for a while at most once a minute (intensive wake-up throttling),
  // which would let the server evict the session, but not a timer set
  // from an event such as an incoming message. So the next Ping is
  // scheduled when the Pong arrives, and the silence watchdog is re-armed
  // by every frame; the timer chain alone carries on only while the
  // server does not answer.
  // _advance moves the resume position past a handled push; a replayed
  // stored push may be older than the position, which never goes back. A
  // push with seq 0 is outside any sequence (sent by a cluster node cut off
  // from NATS) and does not move it.
  _advance(p) {
    const seq = p.seq ?? '0';
    if (seq === '0' || seq === 0) return;
    const [e, s] = p.scope === 'PUSH_SCOPE_BROADCAST' ? ['broadcastEpoch', 'broadcastSeq'] : ['uidEpoch', 'uidSeq'];
    if (p.epoch !== this._pos[e] || BigInt(seq) > BigInt(this._pos[s])) {
      this._pos[e] = p.epoch ?? '';
      this._pos[s] = seq;
    }
  }

  _onIdentified(id) {
    this._clearTimer('connect');
    // Where nothing was resumed (a first connect, or history lost), carry
    // on from where the server is now.
    const RESUMED = 'RESUME_RESULT_RESUMED';
    if (id.uidResume !== RESUMED) Object.assign(this._pos, { uidEpoch: id.uidEpoch ?? '', uidSeq: id.uidSeq ?? '0' });
    if (id.broadcastResume !== RESUMED) {
      Object.assign(this._pos, { broadcastEpoch: id.broadcastEpoch ?? '', broadcastSeq: id.broadcastSeq ?? '0' });
    }
    const lost = id.uidResume === 'RESUME_RESULT_LOST' || id.broadcastResume === 'RESUME_RESULT_LOST';
    this._session = id;
    this._connectedAt = Date.now();
    this._interval = parseDuration(id.heartbeatInterval) ?? 10000;
    this._timeout = parseDuration(id.heartbeatTimeout) ?? 40000;
    this._armWatchdog();
    this._lastPingAt = Date.now();
    this._schedulePing(this._interval);
    this._setState('connected', {
      sessionId: id.sessionId, uid: id.uid, heartbeatInterval: this._interval, heartbeatTimeout: this._timeout,
      lost, replayed: id.replayed ?? 0,
    });
  }

  // _armWatchdog drops the socket once the server has been silent for
  // heartbeat_timeout.
  _armWatchdog() {
    this._timer('watchdog', () => this._drop(`no frame from the server for ${this._timeout} ms`), this._timeout);
  }

  _schedulePing(ms) {
    this._timer('ping', () => {
      this._ping();
      this._schedulePing(this._interval);
    }, Math.max(0, ms));
  }

  _ping() {
    const seq = ++this._seq;
    this._lastPingAt = Date.now();
    this._pingSentAt.set(seq, performance.now());
    if (this._pingSentAt.size > 8) this._pingSentAt.delete(this._pingSentAt.keys().next().value);
    this._send({ ping: { seq: String(seq) } });
  }

  _onPong(pong) {
    const seq = Number(pong.seq);
    const sent = this._pingSentAt.get(seq);
    if (sent !== undefined) {
      this.rtt = performance.now() - sent;
      this._pingSentAt.delete(seq);
    }
    // Re-arm from this event (see above): the next Ping is still one
    // interval after the last.
    this._schedulePing(this._lastPingAt + this._interval - Date.now());
  }

  // _drop gives up on the current socket without waiting for a close
  // handshake a dead server would never finish, and reconnects.
  _drop(why) {
    const session = this._session;
    const ws = this._teardown();
    if (ws) {
      try { ws.close(4000, 'client gave up'); } catch { /* ignore */ }
    }
    this._ended({ reason: why, session, dropped: true });
  }

  // _ended decides what follows a session's end.
  _ended(info) {
    if (this._stopped) return;
    const { reconnect, hint } = decideReconnect(info.goodbye, info.code ?? 1006);
    if (!reconnect) {
      this._stopped = true;
      this._setState('closed', { ...info, by: 'server' });
      return;
    }
    if (this._connectedAt && Date.now() - this._connectedAt >= this.backoff.resetAfter) this._attempt = 0;
    const delay = hint ?? backoffDelay(this._attempt, this.backoff);
    this._attempt++;
    this._setState('reconnecting', { ...info, delay, attempt: this._attempt, hinted: hint !== undefined });
    this._timer('retry', () => this._open(), delay);
  }
}
