#!/usr/bin/env node
// A presence client in Node.js, built from proto/ at run time (no generated
// code): it opens PresenceService.Connect, identifies, sends Ping every
// heartbeat interval the server announces, prints every push as one JSON line
// on stdout, and reconnects with capped exponential backoff and jitter.
//
// stdout carries one JSON object per line, one per event:
//   {"event":"connecting","addr":...,"connection":N}   N counts connections since start
//   {"event":"identified","sessionId":...,"uid":...,"heartbeatIntervalMs":...,"heartbeatTimeoutMs":...}
//   {"event":"pong","seq":"N","rttMs":...}
//   {"event":"push","id":...,"scope":"PUSH_SCOPE_UID","seq":"N","epoch":...,"sentAt":...,"data":<JSON>}
//      (a binary payload prints "binary":{"contentType":...,"data":<base64>} instead of "data")
//   {"event":"goodbye","reason":...,"message":...,"reconnect":bool,"reconnectAfterMs":N|null}
//   {"event":"dead","silentMs":N}             no server frame for heartbeat_timeout
//   {"event":"ended","code":N,"status":"UNAVAILABLE","details":...}
//   {"event":"reconnecting","delayMs":N,"retry":N,"why":...}  retry counts since the last stable session
//   {"event":"stopped","signal":"SIGINT"}     then exit 0
//   {"event":"error","why":...}               a problem that does not end the client
//   {"event":"fatal","why":...}               then exit 1: retrying cannot help
//                                             (REPLACED, bad token, bad uid, ...),
//                                             or exit 3 with --no-reconnect
// Field names follow protobuf's JSON mapping (lowerCamelCase); 64-bit numbers
// (seq) are strings, as in protojson.
//
// Run `node client.js --help` for the options.
'use strict';

const path = require('node:path');
const fs = require('node:fs');
const { parseArgs } = require('node:util');
let grpc;
let protoLoader;
try {
  grpc = require('@grpc/grpc-js');
  protoLoader = require('@grpc/proto-loader');
} catch (err) {
  process.stdout.write(JSON.stringify({ event: 'fatal', why: `${err.message.split('\n')[0]}: run npm ci in ${__dirname}` }) + '\n');
  process.exit(1);
}

const REPO = path.resolve(__dirname, '..', '..');

const HELP = `Usage: node client.js [options]

Connects to a presence server's Connect stream and prints one JSON line per
event on stdout (see the top of client.js). Every option also reads the
environment variable in brackets.

  --addr HOST:PORT        gRPC address of presenced [PRESENCE_ADDR] (default 127.0.0.1:9090)
  --uid UID               user id to identify as [PRESENCE_UID] (required unless a
                          token is given: its subject is then the uid)
  --token JWT             token proving the uid, when the server needs one [PRESENCE_TOKEN]
  --token-file FILE       read the token from FILE on every connection attempt, so a
                          renewed token is picked up on reconnect (after Goodbye
                          TOKEN_EXPIRED); replace the file atomically (write, then
                          rename) [PRESENCE_TOKEN_FILE]
  --label KEY=VALUE       a session label; repeat for more [PRESENCE_LABELS="k=v,k2=v2"]
  --proto-dir DIR         folder holding presence/v1/presence.proto [PRESENCE_PROTO_DIR]
                          (default: <repo>/proto)
  --googleapis-dir DIR    folder holding google/api/annotations.proto [PRESENCE_GOOGLEAPIS_DIR]
                          (default: <repo>/third_party/googleapis, filled by
                          scripts/fetch-googleapis.sh)
  --connect-timeout-ms N  end an attempt that got no Identified this long, and retry
                          [PRESENCE_CONNECT_TIMEOUT_MS] (default 15000)
  --backoff-initial-ms N  first reconnect delay [PRESENCE_BACKOFF_INITIAL_MS] (default 500)
  --backoff-max-ms N      cap on the reconnect delay [PRESENCE_BACKOFF_MAX_MS] (default 30000)
  --no-reconnect          exit (status 3) when a stream ends instead of reconnecting
                          [PRESENCE_NO_RECONNECT=1]
  -h, --help              this text
`;

// ---------------------------------------------------------------- options

function parseOptions(argv, env) {
  const { values } = parseArgs({
    args: argv,
    options: {
      addr: { type: 'string' },
      uid: { type: 'string' },
      token: { type: 'string' },
      'token-file': { type: 'string' },
      label: { type: 'string', multiple: true },
      'proto-dir': { type: 'string' },
      'googleapis-dir': { type: 'string' },
      'connect-timeout-ms': { type: 'string' },
      'backoff-initial-ms': { type: 'string' },
      'backoff-max-ms': { type: 'string' },
      'no-reconnect': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    process.exit(0);
  }
  const num = (name, envName, def) => {
    const raw = values[name] ?? env[envName];
    if (raw === undefined || raw === '') return def;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a number of milliseconds, got ${JSON.stringify(raw)}`);
    return n;
  };
  const labels = {};
  const labelArgs = values.label ?? (env.PRESENCE_LABELS ? env.PRESENCE_LABELS.split(',') : []);
  for (const kv of labelArgs) {
    if (kv === '') continue;
    const i = kv.indexOf('=');
    if (i <= 0) throw new Error(`--label wants KEY=VALUE, got ${JSON.stringify(kv)}`);
    labels[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const opts = {
    addr: values.addr ?? env.PRESENCE_ADDR ?? '127.0.0.1:9090',
    uid: values.uid ?? env.PRESENCE_UID ?? '',
    token: values.token ?? env.PRESENCE_TOKEN ?? '',
    tokenFile: values['token-file'] ?? env.PRESENCE_TOKEN_FILE ?? '',
    labels,
    protoDir: values['proto-dir'] ?? env.PRESENCE_PROTO_DIR ?? path.join(REPO, 'proto'),
    googleapisDir: values['googleapis-dir'] ?? env.PRESENCE_GOOGLEAPIS_DIR ?? path.join(REPO, 'third_party', 'googleapis'),
    connectTimeoutMs: num('connect-timeout-ms', 'PRESENCE_CONNECT_TIMEOUT_MS', 15000),
    backoffInitialMs: num('backoff-initial-ms', 'PRESENCE_BACKOFF_INITIAL_MS', 500),
    backoffMaxMs: num('backoff-max-ms', 'PRESENCE_BACKOFF_MAX_MS', 30000),
    reconnect: !(values['no-reconnect'] || ['1', 'true', 'yes'].includes(env.PRESENCE_NO_RECONNECT ?? '')),
  };
  if (!opts.uid && !opts.token && !opts.tokenFile) throw new Error('--uid (or PRESENCE_UID) is required, unless a token names the uid');
  return opts;
}

// ---------------------------------------------------------------- proto

function loadService(opts) {
  const annotations = path.join(opts.googleapisDir, 'google', 'api', 'annotations.proto');
  if (!fs.existsSync(annotations)) {
    throw new Error(`${annotations} is missing: presence.proto imports it. ` +
      'Run scripts/fetch-googleapis.sh from the repository root, or pass --googleapis-dir.');
  }
  // keepCase:false: fields are lowerCamelCase (sessionId, heartbeatInterval),
  // as in protobuf's JSON mapping. longs:String keeps uint64 seq exact.
  // oneofs:true adds a virtual field naming the member that is set
  // (frame: 'push', kind: 'structValue'). google/protobuf/*.proto come
  // bundled with protobufjs.
  const def = protoLoader.loadSync('presence/v1/presence.proto', {
    includeDirs: [opts.protoDir, opts.googleapisDir],
    keepCase: false,
    longs: String,
    enums: String,
    bytes: String, // base64
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(def).presence.v1.PresenceService;
}

// ---------------------------------------------------------------- conversions

// google.protobuf.Value as proto-loader decodes it
// ({kind:'structValue', structValue:{fields:{...}}}) to plain JSON.
function valueToJSON(v) {
  if (v === null || v === undefined) return null;
  switch (v.kind) {
    case 'nullValue': return null;
    case 'numberValue': return v.numberValue;
    case 'stringValue': return v.stringValue;
    case 'boolValue': return v.boolValue;
    case 'structValue': return structToJSON(v.structValue);
    case 'listValue': return ((v.listValue && v.listValue.values) || []).map(valueToJSON);
    default: return null; // a Value with no kind set
  }
}

function structToJSON(s) {
  const out = {};
  for (const [k, v] of Object.entries((s && s.fields) || {})) out[k] = valueToJSON(v);
  return out;
}

// google.protobuf.Duration ({seconds:'10', nanos:0}) to milliseconds.
function durationMs(d) {
  if (!d) return null;
  return Number(d.seconds || 0) * 1000 + Math.round(Number(d.nanos || 0) / 1e6);
}

// google.protobuf.Timestamp to an RFC 3339 string (millisecond precision).
function timestampISO(t) {
  if (!t) return null;
  return new Date(Number(t.seconds || 0) * 1000 + Math.floor(Number(t.nanos || 0) / 1e6)).toISOString();
}

// ---------------------------------------------------------------- output

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// ---------------------------------------------------------------- policy

// What to do after a stream ends, from the Goodbye (if one came) and the
// status; see GoodbyeReason in the proto and "How a stream ends" in
// DESIGN.md (the Go SDK, client/reconnect.go, decides the same way):
//   - a Goodbye decides where the server sent one: never reconnect after
//     REPLACED (two devices would replace each other forever), after KICKED
//     only if the server says so, always after HEARTBEAT_TIMEOUT,
//     SLOW_CONSUMER, SHUTDOWN and TOKEN_EXPIRED (a new token can fix that:
//     see --token-file); for a reason this client does not know, the
//     Goodbye's reconnect flag decides;
//   - otherwise a status a retry cannot fix stops the client, and anything
//     else (UNAVAILABLE, a dead connection, ...) is retried.
// Returns {reconnect:false, why} or {reconnect:true, afterMs, why}, afterMs
// being the server's hint or null for our own backoff.
function decide(goodbye, status) {
  if (goodbye) {
    let reconnect;
    switch (goodbye.reason) {
      case 'GOODBYE_REASON_REPLACED':
        return { reconnect: false, why: 'replaced by a newer session of this uid: not reconnecting (two devices would replace each other forever)' };
      case 'GOODBYE_REASON_HEARTBEAT_TIMEOUT':
      case 'GOODBYE_REASON_SLOW_CONSUMER':
      case 'GOODBYE_REASON_SHUTDOWN':
      case 'GOODBYE_REASON_TOKEN_EXPIRED':
        reconnect = true;
        break;
      default: // KICKED, and reasons newer than this client
        reconnect = goodbye.reconnect;
    }
    if (!reconnect) return { reconnect: false, why: `goodbye ${goodbye.reason} without a reconnect hint: not reconnecting` };
    const hint = durationMs(goodbye.reconnectAfter);
    return { reconnect: true, afterMs: hint > 0 ? hint : null, why: `goodbye ${goodbye.reason}` };
  }
  const C = grpc.status;
  switch (status.code) {
    case C.UNAUTHENTICATED:
    case C.PERMISSION_DENIED:
    case C.INVALID_ARGUMENT:
    case C.FAILED_PRECONDITION:
    case C.UNIMPLEMENTED:
      return { reconnect: false, why: `status ${statusName(status.code)} (${status.details}): retrying cannot fix this; check --uid and --token` };
    default:
      return { reconnect: true, afterMs: null, why: `status ${statusName(status.code)}` };
  }
}

function statusName(code) {
  return Object.keys(grpc.status).find((k) => grpc.status[k] === code) || String(code);
}

// A session that stayed identified this long resets the backoff, so a
// server that accepts and at once ends sessions still sees growing delays.
const BACKOFF_RESET_AFTER_MS = 10000;

// Capped exponential backoff with jitter: retry n (from 0) waits a
// random time in [d/2, d], d = min(max, initial * 2^n).
function backoffMs(opts, retry) {
  const d = Math.min(opts.backoffMaxMs, opts.backoffInitialMs * 2 ** Math.min(retry, 30));
  return Math.round(d / 2 + Math.random() * (d / 2));
}

// ---------------------------------------------------------------- session

// runSession runs one Connect stream and resolves, once it has ended, with
// {goodbye, status, upMs} (how long it was identified).
function runSession(Service, opts, connection, ctl) {
  return new Promise((resolve) => {
    emit({ event: 'connecting', addr: opts.addr, connection });
    // A fresh channel per attempt: a connection that went silent is never
    // reused. Transport keepalive also catches a dead TCP peer; presenced
    // accepts pings every 5 s or slower (--keepalive-min-time).
    const client = new Service(opts.addr, grpc.credentials.createInsecure(), {
      'grpc.keepalive_time_ms': 30000,
      'grpc.keepalive_timeout_ms': 10000,
    });
    const call = client.Connect();
    let goodbye = null;
    let identifiedAt = 0;
    let pingTimer = null;
    let deadTimer = null;
    let pingSeq = 0;
    const pingSentAt = new Map();
    let silentLimitMs = opts.connectTimeoutMs; // until Identified tells us heartbeat_timeout
    let lastFrameAt = Date.now();
    let done = false;

    const armDeadTimer = () => {
      clearTimeout(deadTimer);
      deadTimer = setTimeout(() => {
        emit({ event: 'dead', silentMs: Date.now() - lastFrameAt });
        call.cancel(); // ends with CANCELLED; the policy reconnects
      }, silentLimitMs);
    };
    const finish = (status) => {
      if (done) return;
      done = true;
      clearInterval(pingTimer);
      clearTimeout(deadTimer);
      ctl.current = null;
      client.close();
      resolve({ goodbye, status, upMs: identifiedAt ? Date.now() - identifiedAt : 0 });
    };
    ctl.current = {
      // Graceful stop: half-close (the server ends the session as
      // client_closed), then cancel if the server does not end it quickly.
      stop() {
        call.end();
        setTimeout(() => call.cancel(), 1000).unref();
      },
    };

    armDeadTimer();

    call.on('data', (msg) => {
      lastFrameAt = Date.now();
      armDeadTimer();
      switch (msg.frame) {
        case 'identified': {
          const f = msg.identified;
          const intervalMs = durationMs(f.heartbeatInterval);
          const timeoutMs = durationMs(f.heartbeatTimeout);
          identifiedAt = Date.now();
          emit({ event: 'identified', sessionId: f.sessionId, uid: f.uid, heartbeatIntervalMs: intervalMs, heartbeatTimeoutMs: timeoutMs });
          if (timeoutMs > 0) {
            silentLimitMs = timeoutMs;
            armDeadTimer();
          }
          if (intervalMs > 0) {
            pingTimer = setInterval(() => {
              pingSeq += 1;
              pingSentAt.set(String(pingSeq), Date.now());
              call.write({ ping: { seq: pingSeq } });
            }, intervalMs);
          }
          break;
        }
        case 'pong': {
          const sent = pingSentAt.get(msg.pong.seq);
          pingSentAt.delete(msg.pong.seq);
          emit({ event: 'pong', seq: msg.pong.seq, rttMs: sent === undefined ? null : Date.now() - sent });
          break;
        }
        case 'push': {
          const p = msg.push;
          const out = { event: 'push', id: p.id, scope: p.scope, seq: p.seq, epoch: p.epoch, sentAt: timestampISO(p.sentAt) };
          if (p.payload === 'binary') out.binary = { contentType: p.binary.contentType, data: p.binary.data };
          else out.data = valueToJSON(p.data);
          emit(out);
          break;
        }
        case 'goodbye': {
          const g = msg.goodbye;
          goodbye = g;
          emit({ event: 'goodbye', reason: g.reason, message: g.message, reconnect: g.reconnect, reconnectAfterMs: durationMs(g.reconnectAfter) });
          break;
        }
        default:
          break; // a frame this client does not know: ignore it (forward compatibility)
      }
    });
    // The status comes last, after every message; errors arrive as 'error'
    // with the same status, so listen to 'status' only.
    call.on('error', () => {});
    call.on('status', (status) => {
      emit({ event: 'ended', code: status.code, status: statusName(status.code), details: status.details });
      finish(status);
    });

    let token = opts.token;
    if (opts.tokenFile) {
      try {
        token = fs.readFileSync(opts.tokenFile, 'utf8').trim();
      } catch (err) {
        emit({ event: 'error', why: `reading --token-file: ${err.message}` });
      }
    }
    call.write({ identify: { uid: opts.uid, token, labels: opts.labels } });
  });
}

// ---------------------------------------------------------------- main

async function main() {
  let opts;
  let Service;
  try {
    opts = parseOptions(process.argv.slice(2), process.env);
    Service = loadService(opts);
  } catch (err) {
    emit({ event: 'fatal', why: err.message });
    process.exit(1);
  }

  const ctl = { current: null };
  let stopping = null;
  let wakeSleep = null;
  const onSignal = (signal) => {
    if (stopping) return;
    stopping = signal;
    if (ctl.current) ctl.current.stop();
    if (wakeSleep) wakeSleep();
    setTimeout(() => { emit({ event: 'stopped', signal, forced: true }); process.exit(0); }, 3000).unref();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const sleep = (ms) => new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    wakeSleep = () => { clearTimeout(t); resolve(); };
  });

  let retry = 0; // reconnects since the last session that stayed up BACKOFF_RESET_AFTER_MS
  for (let connection = 1; ; connection++) {
    const { goodbye, status, upMs } = await runSession(Service, opts, connection, ctl);
    if (stopping) break;
    if (upMs >= BACKOFF_RESET_AFTER_MS) retry = 0;
    const d = decide(goodbye, status);
    if (!d.reconnect) {
      emit({ event: 'fatal', why: d.why });
      process.exit(1);
    }
    if (!opts.reconnect) {
      emit({ event: 'fatal', why: `stream ended (${d.why}) and --no-reconnect is set` });
      process.exit(3);
    }
    const delayMs = d.afterMs !== null && d.afterMs > 0 ? d.afterMs : backoffMs(opts, retry);
    retry += 1;
    emit({ event: 'reconnecting', delayMs, retry, why: d.why });
    await sleep(delayMs);
    if (stopping) break;
  }
  emit({ event: 'stopped', signal: stopping });
  process.exit(0);
}

if (require.main === module) main();

module.exports = { valueToJSON, structToJSON, durationMs, timestampISO, decide, backoffMs };
