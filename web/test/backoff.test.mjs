import { test } from 'node:test';
import assert from 'node:assert/strict';

import { backoffDelay } from '../switchboard.js';
import { harness, record, sequence } from './support/fakes.mjs';

const limits = { initialDelayMs: 500, maxDelayMs: 30_000 };

test('backoffDelay: the ceiling doubles from initialDelayMs and stops at maxDelayMs', () => {
  const top = () => 0.999999999;
  const delays = Array.from({ length: 10 }, (_, n) => backoffDelay(n, limits, top));
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
});

test('backoffDelay: full jitter picks uniformly in [0, ceiling]', () => {
  assert.equal(
    backoffDelay(3, limits, () => 0),
    0,
  );
  assert.equal(
    backoffDelay(3, limits, () => 0.5),
    2000,
  );
  assert.equal(
    backoffDelay(3, limits, () => 0.25),
    1000,
  );
  assert.equal(
    backoffDelay(20, limits, () => 0.5),
    15000,
  );
  // Huge attempt numbers neither overflow nor exceed the cap.
  assert.equal(
    backoffDelay(5000, limits, () => 0.999999999),
    30000,
  );
  for (let n = 0; n < 12; n += 1) {
    for (const r of [0, 0.1, 0.37, 0.5, 0.93, 0.999999]) {
      const d = backoffDelay(n, limits, () => r);
      const ceiling = Math.min(30000, 500 * 2 ** n);
      assert.ok(d >= 0 && d <= ceiling, `attempt ${n}, r ${r}: ${d} not in [0, ${ceiling}]`);
    }
  }
});

test('a client that cannot connect retries with growing, capped, jittered delays', async () => {
  const { clock, server, make } = await harness();
  server.grant('t', 'u1');
  server.down = true;
  const client = make({
    token: 't',
    random: () => 0.999999999,
    initialDelayMs: 100,
    maxDelayMs: 1000,
  });
  const states = record(client, 'state');
  client.connect().catch(() => {});
  await clock.advance(10_000);
  const delays = states.filter((s) => s.state === 'reconnecting').map((s) => s.delayMs);
  assert.deepEqual(delays.slice(0, 8), [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
  // Every attempt opened a socket, and each waited the delay announced before it.
  const attempts = states.filter((s) => s.state === 'connecting').length;
  assert.equal(server.sockets.length, attempts);
  client.close();
});

test('jittered delays stay within [0, ceiling] for each attempt', async () => {
  const { clock, server, make } = await harness();
  server.grant('t', 'u1');
  server.down = true;
  const picks = [0.3, 0.9, 0.05, 0.6, 0.75, 0.2];
  const client = make({
    token: 't',
    clientId: 'c1',
    random: sequence(...picks),
    initialDelayMs: 1000,
    maxDelayMs: 8000,
  });
  const states = record(client, 'state');
  client.connect().catch(() => {});
  await clock.advance(60_000);
  const delays = states
    .filter((s) => s.state === 'reconnecting')
    .map((s) => s.delayMs)
    .slice(0, 6);
  const ceilings = [1000, 2000, 4000, 8000, 8000, 8000];
  assert.deepEqual(
    delays,
    picks.map((r, i) => Math.floor(r * (ceilings[i] + 1))),
  );
  client.close();
});

test('maxAttempts: the client gives up and connect() rejects', async () => {
  const { clock, server, make } = await harness();
  server.grant('t', 'u1');
  server.down = true;
  const client = make({ token: 't', maxAttempts: 3, initialDelayMs: 10 });
  const states = record(client, 'state');
  const outcome = client.connect().then(
    () => 'opened',
    (e) => e.code,
  );
  await clock.advance(5_000);
  assert.equal(await outcome, 'max_attempts');
  assert.equal(server.sockets.length, 4, 'the first try and three retries');
  assert.equal(client.state, 'closed');
  assert.equal(states.at(-1).state, 'closed');
  assert.deepEqual(clock.pending(), [], 'no timer left behind');
});

test('a successful connection resets the backoff', async () => {
  const { clock, server, make } = await harness();
  server.grant('t', 'u1');
  server.down = true;
  const client = make({ token: 't', random: () => 0.999999999, initialDelayMs: 100 });
  const states = record(client, 'state');
  client.connect();
  await clock.advance(100 + 200 + 400 - 1); // three failures, the fourth retry pending
  server.down = false;
  await clock.advance(1000);
  assert.equal(client.state, 'open');
  server.close(server.conns[0], 1011, 'internal error');
  await clock.advance(0);
  const last = states.filter((s) => s.state === 'reconnecting').at(-1);
  assert.equal(last.delayMs, 100, 'back to the first delay after an open connection');
  assert.equal(last.code, 1011);
  client.close();
});
