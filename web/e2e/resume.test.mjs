// A page whose connection dies under it (reset, as when a phone changes network) keeps its
// session: the library reconnects to the node that held it and resumes, gets every signal sent
// to it meanwhile, once and in order, and its peer, on another node, never sees it leave.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, test } from 'node:test';

import { cluster, launch, mintToken, open, until } from './support.mjs';

let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

async function clientPage(node, user, room) {
  const page = await open(browser, `${node.url}/demo/index.html`);
  const token = mintToken(user);
  page.me = await page.evaluate(
    async ({ token, room }) => {
      const { SwitchboardClient } = await import('./switchboard.js');
      const client = new SwitchboardClient({ token, initialDelayMs: 100, maxDelayMs: 500 });
      window.e2e = { client, signals: [], left: [], events: [] };
      client.on('signal', (frame) => window.e2e.signals.push(frame.data.n));
      client.on('user_left', (frame) => window.e2e.left.push(frame.client_id));
      client.on('state', (d) => window.e2e.events.push({ type: 'state', state: d.state }));
      for (const type of ['resumed', 'resume_failed']) {
        client.on(type, (d) => window.e2e.events.push({ type, reason: d.reason }));
      }
      const hello = await client.connect();
      await client.join(room);
      return { clientId: hello.clientId };
    },
    { token, room },
  );
  return page;
}

/** Resets every TCP connection to `node`'s public port, as a network change does. */
function resetConnectionsTo(node) {
  const port = new URL(node.url).port;
  execFileSync('ss', ['-K', 'dst', '127.0.0.1', 'dport', '=', `:${port}`], { stdio: 'ignore' });
}

test('a page whose connection is reset resumes its session and misses nothing', async () => {
  const [one, two] = cluster.nodes;
  const alice = await clientPage(two, 'e2e-resume-alice', 'e2e-resume');
  const bob = await clientPage(one, 'e2e-resume-bob', 'e2e-resume');
  await until('alice to see bob', () =>
    alice.evaluate((id) => window.e2e.client.members('e2e-resume').some((m) => m.client_id === id), bob.me.clientId),
  );
  const send = (n) =>
    alice.evaluate(({ to, n }) => window.e2e.client.send(to, 'signal', { data: { n } }), { to: bob.me.clientId, n });

  await send(1);
  await until('signal 1', () => bob.evaluate(() => window.e2e.signals.includes(1)));
  resetConnectionsTo(one);
  for (let n = 2; n <= 40; n += 1) await send(n);
  await until('bob to resume', () => bob.evaluate(() => window.e2e.events.some((e) => e.type === 'resumed')));
  await send(41);
  await until('every signal', () => bob.evaluate(() => window.e2e.signals.length >= 41));
  const expected = Array.from({ length: 41 }, (_, i) => i + 1);
  assert.deepEqual(await bob.evaluate(() => window.e2e.signals), expected);
  const events = await bob.evaluate(() => window.e2e.events.filter((e) => e.type !== 'state'));
  assert.deepEqual(events, [{ type: 'resumed', reason: undefined }]);
  assert.equal(await bob.evaluate(() => window.e2e.client.clientId), bob.me.clientId);
  assert.deepEqual(await alice.evaluate(() => window.e2e.left), [], 'alice never saw bob leave');
  for (const page of [alice, bob]) {
    assert.deepEqual(page.problems, [], 'no page errors');
    await page.evaluate(() => window.e2e.client.close());
    await page.context().close();
  }
});
