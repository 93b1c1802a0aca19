import { test } from 'node:test';
import assert from 'node:assert/strict';

import { normalizeIce } from '../switchboard.js';
import { fakeFetch, harness, record } from './support/fakes.mjs';

const NOW_S = 1_700_000_000; // the fake clock's start, in seconds

function turn(expiry, credential) {
  return [
    { urls: ['stun:stun.test:3478'] },
    { urls: ['turn:turn.test:3478?transport=udp'], username: `${expiry}:u1`, credential },
  ];
}

test('ice_servers from auth_success are used, and refreshed before the TURN username expires', async () => {
  const first = turn(NOW_S + 1000, 'cred-1');
  const second = turn(NOW_S + 3000, 'cred-2');
  const fetch = fakeFetch({
    'GET /api/webrtc/ice-servers': () => ({ status: 200, body: { iceServers: second } }),
  });
  const { clock, server, make } = await harness({ server: { iceServers: first } });
  server.grant('t', 'u1');
  const client = make({ token: 't', clientId: 'c1', fetch, iceServers: undefined });
  const updates = record(client, 'iceservers');
  await Promise.all([client.connect(), clock.advance(0)]);
  assert.deepEqual(client.iceServers(), first);
  assert.equal(fetch.calls.length, 0, 'nothing fetched: auth_success had them');
  assert.equal(updates[0].expiresAt, (NOW_S + 1000) * 1000);

  await clock.advance(799_999); // 80% of the 1000 s left
  assert.equal(fetch.calls.length, 0);
  await clock.advance(1);
  assert.equal(fetch.calls.length, 1);
  assert.equal(fetch.calls[0].headers.Authorization, 'Bearer t');
  assert.deepEqual(client.iceServers(), second);
  assert.equal(updates.length, 2);

  // The next refresh: 80% of what is left of the new credentials (3000 - 800 = 2200 s).
  await clock.advance(1_759_999);
  assert.equal(fetch.calls.length, 1);
  await clock.advance(1);
  assert.equal(fetch.calls.length, 2);
  client.close();
});

test('without ice_servers in auth_success the list is fetched', async () => {
  const list = turn(NOW_S + 600, 'c');
  const fetch = fakeFetch({
    'GET /api/webrtc/ice-servers': () => ({ status: 200, body: { iceServers: list } }),
  });
  const { clock, server, make } = await harness();
  server.grant('t', 'u1');
  const client = make({ token: 't', fetch, iceServers: undefined });
  await Promise.all([client.connect(), clock.advance(0)]);
  assert.equal(fetch.calls.length, 1);
  assert.equal(fetch.calls[0].url, 'https://sb.test/api/webrtc/ice-servers');
  assert.deepEqual(client.iceServers(), list);
  client.close();
});

test("seed 001's /auth/turn-credentials: refreshed at 80% of its ttl", async () => {
  let n = 0;
  const fetch = fakeFetch({
    'GET /auth/turn-credentials': () => {
      n += 1;
      return {
        status: 200,
        body: {
          username: `${NOW_S + 600}:u1`,
          credential: `cred-${n}`,
          urls: ['turn:t.test:3478'],
          ttl: 600,
        },
      };
    },
  });
  const { clock, server, make } = await harness();
  server.grant('t', 'u1');
  const client = make({
    token: 't',
    fetch,
    iceServers: undefined,
    iceEndpoint: '/auth/turn-credentials',
  });
  await Promise.all([client.connect(), clock.advance(0)]);
  assert.deepEqual(client.iceServers(), [
    { urls: ['turn:t.test:3478'], username: `${NOW_S + 600}:u1`, credential: 'cred-1' },
  ]);
  await clock.advance(479_999);
  assert.equal(n, 1);
  await clock.advance(1);
  assert.equal(n, 2);
  assert.equal(client.iceServers()[0].credential, 'cred-2');
  client.close();
});

test('turn_not_configured means no TURN: an empty list, no error, no refresh', async () => {
  const fetch = fakeFetch({
    'GET /api/webrtc/turn-credentials': () => ({
      status: 503,
      body: { code: 'turn_not_configured', detail: 'no' },
    }),
  });
  const { clock, server, make } = await harness();
  server.grant('t', 'u1');
  const client = make({
    token: 't',
    fetch,
    iceServers: undefined,
    iceEndpoint: '/api/webrtc/turn-credentials',
  });
  const errors = record(client, 'ice_error');
  await Promise.all([client.connect(), clock.advance(0)]);
  assert.deepEqual(client.iceServers(), []);
  assert.deepEqual(errors, []);
  assert.deepEqual(
    clock.pending().filter((d) => d > 30_000),
    [],
    'no refresh timer',
  );
  client.close();
});

test('fixed iceServers are used as given and nothing is fetched', async () => {
  const fixed = [{ urls: 'stun:mine.test' }];
  const fetch = fakeFetch({});
  const { clock, server, make } = await harness({ server: { iceServers: turn(NOW_S + 60, 'x') } });
  server.grant('t', 'u1');
  const client = make({ token: 't', fetch, iceServers: fixed });
  await Promise.all([client.connect(), clock.advance(0)]);
  assert.deepEqual(client.iceServers(), fixed);
  assert.equal(fetch.calls.length, 0);
  client.close();
});

test('refreshed credentials reach the calls in progress', async () => {
  const fetch = fakeFetch({
    'GET /api/webrtc/ice-servers': () => ({
      status: 200,
      body: { iceServers: turn(NOW_S + 5000, 'new') },
    }),
  });
  const { clock, server, make, webrtc } = await harness({
    server: { iceServers: turn(NOW_S + 100, 'old') },
  });
  server.grant('ta', 'ua');
  server.grant('tb', 'ub');
  const a = make({ token: 'ta', clientId: 'ca', fetch, iceServers: undefined });
  const b = make({ token: 'tb', clientId: 'cb', fetch, iceServers: undefined });
  await Promise.all([a.connect(), b.connect(), clock.advance(0)]);
  const call = await a.call('ub');
  await clock.advance(0);
  assert.equal(call.pc.getConfiguration().iceServers[1].credential, 'old');
  await clock.advance(80_000);
  assert.equal(call.pc.getConfiguration().iceServers[1].credential, 'new');
  assert.equal(webrtc.instances[0].configurations.length, 2);
  a.close();
  b.close();
});

test('normalizeIce understands the three answers of a node', () => {
  assert.deepEqual(normalizeIce({ iceServers: [] }), { servers: [], ttl: null });
  assert.deepEqual(normalizeIce({ username: 'u', credential: 'c', urls: ['turn:x'], ttl: 60 }), {
    servers: [{ urls: ['turn:x'], username: 'u', credential: 'c' }],
    ttl: 60,
  });
  assert.deepEqual(
    normalizeIce({ username: 'u', credential: 'c', password: 'c', uris: ['turn:y'], ttl: 9 }),
    {
      servers: [{ urls: ['turn:y'], username: 'u', credential: 'c' }],
      ttl: 9,
    },
  );
  assert.throws(
    () => normalizeIce({}),
    (e) => e.code === 'invalid_response',
  );
});
