// Support for the end-to-end tests: the cluster scripts/browser-test started (its SB_CLUSTER_*
// variables), Chromium, tokens and accounts made with the node's own command line, each node's
// metrics, and waiting on conditions with a deadline instead of sleeping.

import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, '../..');

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run scripts/browser-test`);
  return value;
}

/** The cluster: HAProxy's URL, and each node's URL, metrics address and number. */
export const cluster = {
  get url() {
    return required('SB_CLUSTER_URL');
  },
  nodes: [1, 2, 3].map((n) => ({
    n,
    get url() {
      return required(`SB_CLUSTER_NODE${n}_URL`);
    },
    get metrics() {
      return required(`SB_CLUSTER_NODE${n}_METRICS`);
    },
  })),
};

export const artifacts = process.env.SB_E2E_ARTIFACTS ?? path.join(root, 'target/e2e');
mkdirSync(artifacts, { recursive: true });

/** Runs the node binary with the cluster's settings (its secret, its database). */
function switchboard(args, input) {
  // Only the cluster's settings: any other SWITCHBOARD_* variable would be refused as unknown.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SWITCHBOARD_')));
  const settings = execFileSync('bash', ['-c', 'set -a; . "$1"; set +a; env -0', '_', required('SB_CLUSTER_ENV_FILE')], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME ?? '/' },
  });
  for (const line of settings.toString().split('\0')) {
    const eq = line.indexOf('=');
    if (line.startsWith('SWITCHBOARD_') && eq > 0) env[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return execFileSync(required('SB_E2E_BIN'), args, { env, input, stdio: ['pipe', 'pipe', 'pipe'] })
    .toString()
    .trim();
}

/** An access token for `user`, signed with the cluster's secret. */
export function mintToken(user, name = user) {
  return switchboard(['token', 'mint', '--user', user, '--name', name, '--ttl', '1h']);
}

/** Creates an account that can log in with `password`. */
export function addUser(name, password) {
  switchboard(['user', 'add', `${name}:${password}`]);
}

/** Launches headless Chromium with WebRTC usable without devices or prompts. */
export async function launch() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // Fake camera and microphone, granted without a prompt.
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      // Host candidates as addresses, not mDNS names (both pages run on one machine).
      '--disable-features=WebRtcHideLocalIpsWithMdns',
    ],
  });
}

/** A new page at `url`, its console errors and page errors collected in `page.problems`. */
export async function open(browser, url) {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // A failed WebSocket attempt is logged by the browser itself (reconnects expect some), and
    // so is the browser's own guess at /favicon.ico, which no page asks for.
    const own = /WebSocket connection to .* failed/.test(m.text()) || m.location().url.endsWith('/favicon.ico');
    if (m.type() === 'error' && !own) {
      page.problems.push(`console: ${m.text()} (${m.location().url})`);
    }
  });
  page.on('response', (r) => {
    if (r.status() >= 400) page.problems.push(`${r.status()} ${r.url()}`);
  });
  await page.goto(url);
  return page;
}

/** Saves a screenshot of `page` as `name`.png among the artifacts. */
export async function screenshot(page, name) {
  await page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
}

/** The value of `series` (e.g. `switchboard_connections`) on node `node`'s metrics. */
export async function metric(node, series) {
  const text = await (await fetch(`http://${node.metrics}/metrics`)).text();
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return 0;
}

/** The numbers of the nodes whose authenticated connections number `count`. */
export async function nodesWith(count) {
  const found = [];
  for (const node of cluster.nodes) {
    if ((await metric(node, 'switchboard_connections')) === count) found.push(node.n);
  }
  return found;
}

/** Waits until `check()` returns a truthy value; returns it. */
export async function until(what, check, { timeout = 15000, every = 50 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((resolve) => setTimeout(resolve, every));
  }
}

/** `scripts/cluster ARGS...` on the running cluster. */
export function clusterCommand(...args) {
  return execFileSync(path.join(root, 'scripts/cluster'), [...args, required('SB_CLUSTER_DIR')], {
    // The nodes are of the build under test, not target/release's.
    env: { ...process.env, SWITCHBOARD_BIN: required('SB_E2E_BIN') },
    stdio: ['ignore', 'pipe', 'pipe'],
  }).toString();
}

/** The pid of node `n`, from its pid file. */
export function nodePid(n) {
  return Number(readFileSync(path.join(required('SB_CLUSTER_DIR'), `node${n}`, 'pid'), 'utf8').trim());
}
