#!/usr/bin/env node
// Browser check of Tidegate: a real headless Chromium (Debian's /usr/bin/chromium, driven
// by playwright-core) opens pages served from one origin that connect to the gateway on
// another origin, over EventSource and WebSocket, as RIG frontends do.
//
//   node tests/browser/run.mjs          (TIDEGATE_BIN overrides ../../target/release/tidegate)
//
// Env: TIDEGATE_BIN, CHROMIUM_BIN (default /usr/bin/chromium), BROWSER_TEST_TIMEOUT_MS (60000).
// BROWSER_TEST_VERBOSE=1 prints every event each page received.
// Exit code 0 when every check passed, 1 otherwise (the failing check and the page state
// are printed), 2 when the run could not start. The gateway and the browser are always ended.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
// TIDEGATE_BIN is taken relative to the working directory; the default relative to this script.
const GATEWAY_BIN = process.env.TIDEGATE_BIN
  ? path.resolve(process.env.TIDEGATE_BIN)
  : path.resolve(here, '../../target/release/tidegate');
const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const OVERALL_MS = Number(process.env.BROWSER_TEST_TIMEOUT_MS || 60_000);
const STEP_MS = 10_000; // one wait inside a check
const GRACE_MS = 300; // how long an unwanted event gets to show up after the wanted one
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const EXTRACTORS = {
  greeting: { name: { stable_field_index: 0, event: { json_pointer: '/data/name' } } },
};
const SUBSCRIPTIONS = [{ eventType: 'greeting', oneOf: [{ name: 'john' }] }];

const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- resources and cleanup
const res = { gateway: null, gatewayOut: [], server: null, context: null, dirs: [] };
let cleaning = null;
let current = 'setup'; // the check under way, for the timeout message
let aborted = false; // set by the overall timeout: the checks stop reporting
const say = (...a) => aborted || console.log(...a);
const warn = (...a) => aborted || console.error(...a);

function killGateway() {
  const g = res.gateway;
  if (g && g.exitCode === null && g.signalCode === null) {
    try {
      g.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

async function cleanup() {
  if (cleaning) return cleaning;
  cleaning = (async () => {
    if (res.context) {
      await Promise.race([res.context.close().catch(() => {}), sleep(5_000)]);
    }
    const g = res.gateway;
    if (g && g.exitCode === null && g.signalCode === null) {
      const exited = new Promise((r) => g.once('exit', r));
      g.kill('SIGTERM');
      await Promise.race([exited, sleep(3_000)]);
      killGateway();
    }
    if (res.server) {
      res.server.closeAllConnections?.();
      await new Promise((r) => res.server.close(() => r()));
    }
    for (const d of res.dirs) rmSync(d, { recursive: true, force: true });
  })();
  return cleaning;
}

// Last resort if Node dies some other way: never leave the gateway behind
// (playwright ends its own browser on exit).
process.on('exit', killGateway);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    console.error(`\ninterrupted (${sig}), cleaning up`);
    await cleanup();
    process.exit(130);
  });
}

const overall = setTimeout(async () => {
  aborted = true;
  console.error(`\nFAIL: overall timeout of ${OVERALL_MS} ms exceeded (${elapsed()}) during: ${current}`);
  dumpGateway();
  await Promise.race([cleanup(), sleep(8_000)]);
  process.exit(1);
}, OVERALL_MS);

function dumpGateway() {
  const tail = res.gatewayOut.join('').split('\n').slice(-40).join('\n');
  if (tail.trim()) console.error(`--- gateway output (last lines)\n${tail}\n---`);
}

// ---------------------------------------------------------------- gateway
async function startGateway() {
  if (!existsSync(GATEWAY_BIN)) {
    throw new Error(
      `gateway binary not found at ${GATEWAY_BIN}; build it with \`cargo build -p tidegate --release\` or set TIDEGATE_BIN`,
    );
  }
  const logDir = mkdtempSync(path.join(tmpdir(), 'tidegate-browser-log-'));
  res.dirs.push(logDir);
  const child = spawn(GATEWAY_BIN, [], {
    env: {
      ...process.env,
      INBOUND_PORT: '0',
      API_HTTP_PORT: '0',
      TIDEGATE_INBOUND_HOST: '127.0.0.1',
      TIDEGATE_LOG_DIR: logDir,
      TIDEGATE_INTERNAL_TOKEN: randomBytes(16).toString('hex'),
      EXTRACTORS: JSON.stringify(EXTRACTORS),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  res.gateway = child;
  return await new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(
      () => reject(new Error('gateway did not print its "tidegate listening" line within 15 s')),
      15_000,
    );
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d) => res.gatewayOut.push(d));
    child.stdout.on('data', (d) => {
      res.gatewayOut.push(d);
      buf += d;
      const m = /tidegate listening inbound=(\S+) internal=(\S+)/.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve({ inbound: `http://${m[1]}`, internal: `http://${m[2]}` });
      }
    });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`could not start the gateway ${GATEWAY_BIN}: ${e.message}`));
    });
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited before listening (code ${code}, signal ${sig})`));
    });
  });
}

// ---------------------------------------------------------------- static pages
async function startStaticServer() {
  const pages = {
    '/sse.html': readFileSync(path.join(here, 'pages', 'sse.html')),
    '/ws.html': readFileSync(path.join(here, 'pages', 'ws.html')),
  };
  const server = http.createServer((req, resp) => {
    const pathname = new URL(req.url, 'http://x').pathname;
    if (pathname === '/favicon.ico') {
      resp.writeHead(204).end();
      return;
    }
    const page = pages[pathname];
    if (!page) {
      resp.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    resp.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    resp.end(page);
  });
  res.server = server;
  await new Promise((r, j) => server.listen(0, '127.0.0.1', r).once('error', j));
  return `http://127.0.0.1:${server.address().port}`;
}

// ---------------------------------------------------------------- helpers
async function publish(gateway, event) {
  const resp = await fetch(`${gateway}/_rig/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(event),
    signal: AbortSignal.timeout(STEP_MS),
  });
  const body = await resp.text();
  if (resp.status !== 202) {
    throw new Error(
      `POST /_rig/v1/events ${JSON.stringify(event)} -> ${resp.status} ${body} (expected 202)`,
    );
  }
  return body;
}

function greeting(id, name) {
  return { specversion: '1.0', id, source: 'tidegate-browser-test', type: 'greeting', data: { name } };
}

function check(cond, msg, extra) {
  if (!cond) {
    const e = new Error(msg);
    e.extra = extra;
    throw e;
  }
}

/** Waits until the page's window.tg satisfies `pred` (run in the page, with `arg`). */
async function waitPage(page, what, pred, arg) {
  try {
    await page.waitForFunction(pred, arg, { timeout: STEP_MS, polling: 50 });
  } catch (e) {
    const state = await page.evaluate(() => window.tg).catch(() => null);
    const err = new Error(`timed out after ${STEP_MS} ms waiting for ${what}`);
    err.extra = state;
    throw err;
  }
}

const pageEvents = (page, conn) =>
  page.evaluate((c) => window.tg.events.filter((e) => c === undefined || e.conn === c), conn);

async function openPage(context, url) {
  const page = await context.newPage();
  page.logs = [];
  page.on('console', (m) => page.logs.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => page.logs.push(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) => page.logs.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
  const resp = await page.goto(url, { timeout: STEP_MS });
  check(resp && resp.status() === 200, `page ${url} did not load (${resp && resp.status()})`);
  return page;
}

// Checks the two events every new connection gets first; returns them.
function checkOpening(events, label) {
  const [create, subsSet] = events;
  check(
    create && create.type === 'rig.connection.create',
    `${label}: first event is ${create && create.type}, expected rig.connection.create`,
    events,
  );
  const token = create.ce && create.ce.data && create.ce.data.connection_token;
  check(
    typeof token === 'string' && token.length > 0,
    `${label}: rig.connection.create has no data.connection_token`,
    create,
  );
  check(
    subsSet && subsSet.type === 'rig.subscriptions_set',
    `${label}: second event is ${subsSet && subsSet.type}, expected rig.subscriptions_set`,
    events,
  );
  check(
    JSON.stringify(subsSet.ce && subsSet.ce.data) === JSON.stringify(SUBSCRIPTIONS),
    `${label}: rig.subscriptions_set data is ${JSON.stringify(subsSet.ce && subsSet.ce.data)}, expected ${JSON.stringify(SUBSCRIPTIONS)}`,
    subsSet,
  );
  return { create, subsSet };
}

const HAS_SUBS_SET = (c) =>
  window.tg.events.some((e) => e.conn === c && e.type === 'rig.subscriptions_set');
const HAS_CE_ID = ([c, id]) =>
  window.tg.events.some((e) => e.conn === c && e.ce && e.ce.id === id);

// ---------------------------------------------------------------- the checks
function sseChecks(gw, origin) {
  const s = { page: null, lastId: null };
  return [
    [
      'SSE: cross-origin EventSource gets rig.connection.create, then rig.subscriptions_set',
      async (context) => {
        s.page = await openPage(context, `${origin}/sse.html?gw=${encodeURIComponent(gw)}`);
        const conn = await s.page.evaluate(() => window.tgOpen());
        await waitPage(s.page, 'rig.subscriptions_set on the EventSource', HAS_SUBS_SET, conn);
        const events = await pageEvents(s.page, conn);
        checkOpening(events, 'SSE');
      },
    ],
    [
      "SSE: john's greeting arrives with lastEventId = tidegatecursor, mike's does not",
      async () => {
        await publish(gw, greeting('sse-mike-1', 'mike'));
        await publish(gw, greeting('sse-john-1', 'john'));
        await waitPage(s.page, "john's greeting (sse-john-1)", HAS_CE_ID, [1, 'sse-john-1']);
        await sleep(GRACE_MS);
        const events = await pageEvents(s.page, 1);
        const john = events.find((e) => e.ce && e.ce.id === 'sse-john-1');
        check(john.type === 'greeting', `SSE event name is ${john.type}, expected greeting`, john);
        check(!john.parseError, `SSE data is not JSON: ${john.parseError}`, john);
        check(john.ce.data && john.ce.data.name === 'john', 'SSE data.data.name is not john', john);
        check(
          typeof john.lastEventId === 'string' && john.lastEventId.length > 0,
          'SSE lastEventId of the greeting is empty (no `id:` line)',
          john,
        );
        check(
          john.ce.tidegatecursor === john.lastEventId,
          `SSE lastEventId ${JSON.stringify(john.lastEventId)} != tidegatecursor ${JSON.stringify(john.ce.tidegatecursor)}`,
          john,
        );
        const mike = events.filter((e) => e.ce && e.ce.data && e.ce.data.name === 'mike');
        check(mike.length === 0, "SSE page received mike's greeting", mike);
        const dup = events.filter((e) => e.ce && e.ce.id === 'sse-john-1');
        check(dup.length === 1, `SSE page received sse-john-1 ${dup.length} times`, dup);
        s.lastId = john.lastEventId;
      },
    ],
    [
      'SSE: after close, a new EventSource with ?lastEventId=<last id> receives the missed event',
      async () => {
        check(s.lastId, 'no last event id from the previous check');
        const state = await s.page.evaluate(() => window.tgClose());
        check(state === 2, `EventSource readyState after close() is ${state}, expected 2 (CLOSED)`);
        await sleep(100); // let the gateway see the stream end before the next publish
        await publish(gw, greeting('sse-mike-2', 'mike'));
        await publish(gw, greeting('sse-john-2', 'john'));
        const conn = await s.page.evaluate((id) => window.tgOpen(id), s.lastId);
        check(conn === 2, `expected the second EventSource, got #${conn}`);
        await waitPage(s.page, 'the missed sse-john-2 on the resumed EventSource', HAS_CE_ID, [2, 'sse-john-2']);
        await sleep(GRACE_MS);
        const events = await pageEvents(s.page, 2);
        checkOpening(events, 'resumed SSE');
        const missed = events.find((e) => e.ce && e.ce.id === 'sse-john-2');
        check(missed.type === 'greeting', `resumed event name is ${missed.type}`, missed);
        check(
          missed.lastEventId && missed.lastEventId === missed.ce.tidegatecursor,
          `resumed lastEventId ${JSON.stringify(missed.lastEventId)} != tidegatecursor ${JSON.stringify(missed.ce.tidegatecursor)}`,
          missed,
        );
        check(missed.lastEventId !== s.lastId, 'resumed event has the same cursor as the one before', missed);
        const again = events.filter((e) => e.ce && e.ce.id === 'sse-john-1');
        check(again.length === 0, 'resumed EventSource replayed sse-john-1, which was at/before the cursor', again);
        const mike = events.filter((e) => e.ce && e.ce.data && e.ce.data.name === 'mike');
        check(mike.length === 0, "resumed EventSource received mike's greeting", mike);
        s.lastId = missed.lastEventId;
      },
    ],
    [
      'SSE: the page publishes cross-origin (preflighted fetch POST /_rig/v1/events -> 202) and receives it',
      async () => {
        const r = await s.page.evaluate((ev) => window.tgPublish(ev), greeting('sse-john-3', 'john'));
        check(r.status === 202, `fetch POST from the page -> ${r.status} ${r.body}, expected 202`, r);
        await waitPage(s.page, 'the page-published sse-john-3', HAS_CE_ID, [2, 'sse-john-3']);
        const errors = await s.page.evaluate(() => window.tg.errors);
        check(errors.length === 0, 'EventSource reported errors', errors);
      },
    ],
  ];
}

function wsChecks(gw, origin) {
  const s = { page: null, cursor: null };
  return [
    [
      'WS: cross-origin WebSocket gets rig.connection.create, then rig.subscriptions_set',
      async (context) => {
        s.page = await openPage(context, `${origin}/ws.html?gw=${encodeURIComponent(gw)}`);
        const conn = await s.page.evaluate(() => window.tgOpen());
        await waitPage(s.page, 'rig.subscriptions_set on the WebSocket', HAS_SUBS_SET, conn);
        const events = await pageEvents(s.page, conn);
        check(events.every((e) => !e.binary), 'WebSocket delivered binary frames', events);
        checkOpening(events, 'WS');
      },
    ],
    [
      "WS: john's greeting arrives as a text frame with tidegatecursor, mike's does not",
      async () => {
        await publish(gw, greeting('ws-mike-1', 'mike'));
        await publish(gw, greeting('ws-john-1', 'john'));
        await waitPage(s.page, "john's greeting (ws-john-1)", HAS_CE_ID, [1, 'ws-john-1']);
        await sleep(GRACE_MS);
        const events = await pageEvents(s.page, 1);
        const john = events.find((e) => e.ce && e.ce.id === 'ws-john-1');
        check(john.type === 'greeting', `WS frame type is ${john.type}`, john);
        check(john.ce.data && john.ce.data.name === 'john', 'WS frame data.name is not john', john);
        check(
          typeof john.cursor === 'string' && john.cursor.length > 0,
          'WS frame has no tidegatecursor attribute',
          john,
        );
        const mike = events.filter((e) => e.ce && e.ce.data && e.ce.data.name === 'mike');
        check(mike.length === 0, "WS page received mike's greeting", mike);
        s.cursor = john.cursor;
      },
    ],
    [
      'WS: after close, a new WebSocket with ?lastEventId=<tidegatecursor> receives the missed event',
      async () => {
        check(s.cursor, 'no cursor from the previous check');
        await s.page.evaluate(() => window.tgClose());
        await waitPage(s.page, 'the WebSocket close event', () => window.tg.closes.some((c) => c.conn === 1));
        await sleep(100);
        await publish(gw, greeting('ws-john-2', 'john'));
        const conn = await s.page.evaluate((id) => window.tgOpen(id), s.cursor);
        await waitPage(s.page, 'the missed ws-john-2 on the resumed WebSocket', HAS_CE_ID, [conn, 'ws-john-2']);
        await sleep(GRACE_MS);
        const events = await pageEvents(s.page, conn);
        checkOpening(events, 'resumed WS');
        const again = events.filter((e) => e.ce && e.ce.id === 'ws-john-1');
        check(again.length === 0, 'resumed WebSocket replayed ws-john-1, which was at/before the cursor', again);
        const errors = await s.page.evaluate(() => window.tg.errors);
        check(errors.length === 0, 'WebSocket reported errors', errors);
      },
    ],
  ];
}

// ---------------------------------------------------------------- main
async function main() {
  let gw;
  let origin;
  try {
    ({ inbound: gw } = await startGateway());
    origin = await startStaticServer();
    check(existsSync(CHROMIUM_BIN), `Chromium not found at ${CHROMIUM_BIN} (apt-get install -y chromium)`);
    const profile = mkdtempSync(path.join(tmpdir(), 'tidegate-browser-profile-'));
    res.dirs.push(profile);
    res.context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM_BIN,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 20_000,
    });
  } catch (e) {
    warn(`FAIL: setup: ${e.message}`);
    dumpGateway();
    return 2;
  }
  say(`# gateway ${gw}, pages ${origin}, chromium ${res.context.browser()?.version() ?? ''} (${elapsed()})`);

  let passed = 0;
  let failed = 0;
  for (const group of [sseChecks(gw, origin), wsChecks(gw, origin)]) {
    let broken = null;
    let page = null;
    for (const [name, fn] of group) {
      if (aborted) break;
      if (broken) {
        say(`not ok - ${name} (skipped: an earlier check of this page failed)`);
        failed++;
        continue;
      }
      current = name;
      try {
        await fn(res.context);
        say(`ok - ${name} (${elapsed()})`);
        passed++;
      } catch (e) {
        failed++;
        broken = e;
        say(`not ok - ${name}`);
        warn(`  FAIL: ${e.message}`);
        if (e.extra !== undefined) warn(`  detail: ${JSON.stringify(e.extra, null, 1)}`);
      }
      page = res.context.pages().at(-1);
    }
    if (broken && page?.logs?.length) warn(`  page log:\n    ${page.logs.join('\n    ')}`);
  }
  if (failed && !aborted) dumpGateway();
  if (process.env.BROWSER_TEST_VERBOSE) {
    for (const p of res.context.pages()) {
      const tg = await p.evaluate(() => window.tg).catch(() => null);
      if (tg) say(`# ${p.url()}\n${JSON.stringify(tg.events.map(({ ce, ...e }) => e), null, 1)}`);
    }
  }
  say(`browser: ${passed} passed, ${failed} failed (${elapsed()})`);
  return failed ? 1 : 0;
}

let code = 1;
try {
  code = await main();
} catch (e) {
  warn(`FAIL: ${e.stack || e}`);
  if (!aborted) dumpGateway();
  code = 1;
}
if (aborted) await new Promise(() => {}); // the timeout handler cleans up and exits
clearTimeout(overall);
await Promise.race([cleanup(), sleep(10_000)]);
process.exit(code);
