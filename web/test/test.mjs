// The real-browser test, driven by run.sh (which starts the server and
// cleans up). Headless Debian chromium opens the debug console, connects
// as browser-alice, and must: show the state connected; stay connected
// past two heartbeat timeouts (its Pings work); show a push sent
// with curl; reconnect by itself after the server restarts gracefully
// (Goodbye SHUTDOWN with a hint), after it is killed (the connection just
// drops) and after it is frozen (SIGSTOP: silent past heartbeat_timeout,
// so the page must notice by itself), each time receiving the next curl
// push; send to itself through the page's own form (REST from the
// page); list itself in the online panel (GET /v1/online); disconnect.
//
// Env: BASE_URL, SERVER_CTL (server.sh), STATE_DIR (fresh profile dir),
// ARTIFACTS (screenshots), CHROMIUM (default /usr/bin/chromium).
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const BASE_URL = process.env.BASE_URL;
const SERVER_CTL = process.env.SERVER_CTL;
const ARTIFACTS = process.env.ARTIFACTS;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const UID = 'browser-alice';
const started = Date.now();

const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
const step = (msg) => console.log(`[${elapsed()}] ${msg}`);

function curlPush(uid, text) {
  const out = execFileSync('curl', [
    '-sS', '--fail-with-body', '--max-time', '5', '-X', 'POST',
    '-H', 'Content-Type: application/json',
    '-d', JSON.stringify({ data: { text } }),
    `${BASE_URL}/v1/uids/${uid}/messages`,
  ], { encoding: 'utf8' });
  const r = JSON.parse(out);
  if (r.delivered !== 1) throw new Error(`curl push to ${uid}: delivered ${r.delivered}; want 1 (${out})`);
  step(`curl pushed "${text}" (push ${r.pushId}, seq ${r.seq})`);
}

function server(cmd) {
  const t = Date.now();
  execFileSync('bash', [SERVER_CTL, cmd], { stdio: 'inherit' });
  step(`server ${cmd} took ${Date.now() - t} ms`);
}

const profile = mkdtempSync(join(process.env.STATE_DIR, 'profile-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1200, height: 900 },
});
const page = context.pages()[0] ?? await context.newPage();
// Uncaught exceptions fail the test; console errors too, except the
// network errors the server restarts cause on purpose (kept in
// console.txt).
const pageErrors = [];
const consoleLines = [];
const expectedNoise = /^(Failed to load resource|WebSocket connection to .* failed)/;
page.on('pageerror', (e) => pageErrors.push(String(e)));
page.on('console', (m) => {
  consoleLines.push(`[${elapsed()}] ${m.type()}: ${m.text()}`);
  if (m.type() === 'error' && !expectedNoise.test(m.text())) pageErrors.push(`console: ${m.text()}`);
});

const shot = async (name) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
const state = () => page.locator('#state').getAttribute('data-state');
const sessionId = () => page.locator('#session').textContent();
const logText = () => page.locator('#log').innerText();

// waitConnected waits for state connected with a session other than
// notSession.
async function waitConnected(notSession, timeout) {
  await page.waitForFunction(([old]) => {
    const s = document.getElementById('state').dataset.state;
    const id = document.getElementById('session').textContent;
    return s === 'connected' && id !== '' && id !== old;
  }, [notSession], { timeout, polling: 50 });
  const id = await sessionId();
  step(`state connected, session ${id}`);
  return id;
}

async function waitLog(text, timeout = 10000) {
  await page.locator('#log li', { hasText: text }).first().waitFor({ timeout });
  step(`page log shows "${text}"`);
}

let ok = false;
try {
  const run = Math.random().toString(36).slice(2, 8);
  step(`chromium ${context.browser()?.version() ?? ''} opening ${BASE_URL}/`);
  await page.goto(`${BASE_URL}/`);
  await shot('01-page');

  await page.fill('#uid', UID);
  await page.fill('#labels', 'device=headless');
  await page.click('#connect');
  let id = await waitConnected('', 10000);
  await shot('02-connected');

  // The online panel (polling GET /v1/online) lists this session's uid.
  await page.waitForFunction((uid) => (
    [...document.querySelectorAll('#online li')].some((li) => li.textContent === uid)
  ), UID, { timeout: 10000 }).catch(async (e) => {
    throw new Error(`the online panel does not list ${UID}; it says "${await page.locator('#online-status').textContent()}": ${e.message}`);
  });
  step(`online panel: ${await page.locator('#online-status').textContent()}`);

  // Pings keep the session: wait past two heartbeat timeouts (1.5 s with
  // run.sh's presenced) and the session must be the same.
  await page.waitForTimeout(3500);
  if ((await state()) !== 'connected' || (await sessionId()) !== id) {
    throw new Error(`after 3.5 s the session is ${await state()} ${await sessionId()}; want ${id} still connected (are Pings sent?)`);
  }
  step(`still connected after 3.5 s, ${await page.locator('#rtt').textContent()}`);

  curlPush(UID, `hello-1-${run}`);
  await waitLog(`hello-1-${run}`);
  await shot('03-push');

  step('restarting the server gracefully (SIGTERM)');
  server('restart');
  await waitLog('Goodbye SHUTDOWN', 5000);
  id = await waitConnected(id, 30000);
  curlPush(UID, `hello-2-${run}`);
  await waitLog(`hello-2-${run}`);
  await shot('04-reconnected-after-graceful-restart');

  step('killing the server (SIGKILL) and starting it again');
  server('kill-restart');
  id = await waitConnected(id, 30000);
  curlPush(UID, `hello-3-${run}`);
  await waitLog(`hello-3-${run}`);
  await shot('05-reconnected-after-kill');

  step('freezing the server (SIGSTOP): no frame, no close');
  server('freeze');
  const frozenAt = Date.now();
  await waitLog('no frame from the server', 10000).catch((e) => {
    throw new Error(`the page did not notice the frozen server within 10 s; the server's heartbeat timeout must be short (run.sh's presenced: 1.5 s): ${e.message}`);
  });
  const detected = Date.now() - frozenAt;
  await page.waitForTimeout(500); // the page's next attempt hangs on the frozen server
  server('thaw');
  step(`silence detected after ${detected} ms; thawed`);
  id = await waitConnected(id, 30000);
  curlPush(UID, `hello-4-${run}`);
  await waitLog(`hello-4-${run}`);
  await shot('06-reconnected-after-freeze');

  // The page's own REST call, to itself.
  await page.fill('#to', UID);
  await page.fill('#message', `from-page-${run}`);
  await page.click('#send');
  await waitLog(`sent to ${UID}: delivered to 1 session`);
  await waitLog(`from-page-${run}`);

  await page.click('#disconnect');
  await page.waitForFunction(() => document.getElementById('state').dataset.state === 'closed', null, { timeout: 5000 });
  step('disconnected');
  await shot('07-disconnected');

  if (pageErrors.length) throw new Error(`page errors:\n  ${pageErrors.join('\n  ')}`);
  ok = true;
} catch (e) {
  console.error(`[${elapsed()}] FAILED: ${e.stack || e}`);
  step(`state ${await state().catch(() => '?')}`);
  await shot('failure').catch(() => {});
} finally {
  const text = await logText().catch(() => '(page log unavailable)');
  writeFileSync(join(ARTIFACTS, 'page-log.txt'), text + '\n');
  writeFileSync(join(ARTIFACTS, 'console.txt'), consoleLines.join('\n') + '\n');
  if (!ok) console.error(`page log:\n${text}`);
  await context.close();
}
process.exit(ok ? 0 : 1);
