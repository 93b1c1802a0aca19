import { test } from 'node:test';
import assert from 'node:assert/strict';

import { fakeFetch, harness, record } from './support/fakes.mjs';

/** An /auth API handing out access-1, access-2, ... with refresh-1, refresh-2, ... */
function authApi({ expiresIn = 3600 } = {}) {
  let n = 0;
  const spent = new Set();
  const tokens = () => {
    n += 1;
    return {
      status: 200,
      body: {
        access_token: `access-${n}`,
        token_type: 'bearer',
        expires_in: expiresIn,
        refresh_token: `refresh-${n}`,
        user: { id: 'u1', username: 'ada' },
      },
    };
  };
  return fakeFetch({
    'POST /auth/login': ({ body }) =>
      body.password === 'right'
        ? tokens()
        : {
            status: 401,
            body: { code: 'invalid_credentials', detail: 'invalid username or password' },
          },
    'POST /auth/refresh': ({ body }) => {
      if (spent.has(body.refresh_token))
        return { status: 401, body: { code: 'unauthorized', detail: 'spent' } };
      spent.add(body.refresh_token);
      return tokens();
    },
    'POST /auth/logout': () => ({ status: 200, body: { status: 'logged_out' } }),
    'GET /api/rooms': ({ headers }) =>
      headers.Authorization === 'Bearer access-1'
        ? { status: 401, body: { code: 'token_expired', detail: 'expired' } }
        : { status: 200, body: { rooms: [], seen: headers.Authorization } },
  });
}

test('login() posts the credentials and connects with the access token', async () => {
  const { clock, server, make } = await harness();
  server.grant('access-1', 'u1', 'ada');
  const fetch = authApi();
  const client = make({ fetch, clientId: 'c1' });
  const user = await client.login('ada', 'right');
  assert.deepEqual(user, { id: 'u1', username: 'ada' });
  assert.deepEqual(fetch.calls[0].body, { username: 'ada', password: 'right' });
  assert.equal(fetch.calls[0].url, 'https://sb.test/auth/login');
  await Promise.all([client.connect(), clock.advance(0)]);
  assert.equal(server.frames('auth_token')[0].token, 'access-1');
  client.close();
});

test('a wrong password rejects with the server code', async () => {
  const { make } = await harness();
  const client = make({ fetch: authApi() });
  await assert.rejects(
    client.login('ada', 'wrong'),
    (e) => e.code === 'invalid_credentials' && e.status === 401,
  );
});

test('the access token is refreshed at refreshFraction of its lifetime, again and again', async () => {
  const { clock, make } = await harness();
  const fetch = authApi({ expiresIn: 1000 });
  const client = make({ fetch });
  const renewed = record(client, 'token');
  await client.login('ada', 'right');
  const refreshes = () => fetch.calls.filter((c) => c.path === '/auth/refresh');
  await clock.advance(799_999);
  assert.equal(refreshes().length, 0);
  await clock.advance(1);
  assert.deepEqual(
    refreshes().map((c) => c.body),
    [{ refresh_token: 'refresh-1' }],
  );
  await clock.advance(800_000);
  assert.deepEqual(
    refreshes().map((c) => c.body.refresh_token),
    ['refresh-1', 'refresh-2'],
  );
  assert.equal(renewed.length, 2);
  assert.ok(!JSON.stringify(renewed).includes('access-'), 'events carry no token');
  client.close();
});

test('token_expired on connect: the session is refreshed once, then the client retries', async () => {
  const { clock, server, make } = await harness();
  server.tokens.set('access-1', { error: 'token_expired' });
  server.grant('access-2', 'u1', 'ada');
  const fetch = authApi();
  const client = make({ fetch, clientId: 'c1' });
  await client.login('ada', 'right');
  const session = client.connect();
  await clock.advance(0);
  assert.equal((await session).userId, 'u1');
  assert.deepEqual(
    server.frames('auth_token').map((f) => f.token),
    ['access-1', 'access-2'],
  );
  assert.equal(fetch.calls.filter((c) => c.path === '/auth/refresh').length, 1);
  client.close();
});

test('a refused refresh ends the session: a token_expired close is final', async () => {
  const { clock, server, make } = await harness();
  server.tokens.set('access-1', { error: 'token_expired' });
  const fetch = fakeFetch({
    'POST /auth/login': () => ({
      status: 200,
      body: { access_token: 'access-1', expires_in: 3600, refresh_token: 'r-1', user: {} },
    }),
    'POST /auth/refresh': () => ({
      status: 401,
      body: { code: 'unauthorized', detail: 'revoked' },
    }),
  });
  const client = make({ fetch });
  const failures = record(client, 'token_error');
  await client.login('ada', 'right');
  const outcome = client.connect().catch((e) => e);
  await clock.advance(120_000);
  const error = await outcome;
  assert.equal(error.code, 'unauthorized');
  assert.equal(error.status, 401);
  assert.equal(failures.length, 1);
  assert.equal(server.sockets.length, 1);
  assert.equal(client.state, 'closed');
});

test('concurrent refreshes share one request (a spent refresh token would revoke the family)', async () => {
  const { make } = await harness();
  const fetch = authApi();
  const client = make({ fetch });
  await client.login('ada', 'right');
  const results = await Promise.all([client.api('/api/rooms'), client.api('/api/rooms')]);
  assert.equal(fetch.calls.filter((c) => c.path === '/auth/refresh').length, 1);
  assert.deepEqual(
    results.map((r) => r.seen),
    ['Bearer access-2', 'Bearer access-2'],
  );
  client.close();
});

test('logout() revokes the session at the server and closes', async () => {
  const { clock, server, make } = await harness();
  server.grant('access-1', 'u1');
  const fetch = authApi();
  const client = make({ fetch, clientId: 'c1' });
  await client.login('ada', 'right');
  await Promise.all([client.connect(), clock.advance(0)]);
  await client.logout();
  const call = fetch.calls.at(-1);
  assert.equal(call.path, '/auth/logout');
  assert.equal(call.headers.Authorization, 'Bearer access-1');
  assert.deepEqual(call.body, { refresh_token: 'refresh-1' });
  assert.equal(client.state, 'closed');
  await assert.rejects(client.api('/api/rooms'), (e) => e.code === 'no_token');
});

test('connect() without any token fails at once', async () => {
  const { clock, server, make } = await harness();
  const client = make();
  const outcome = client.connect().catch((e) => e.code);
  await clock.advance(10_000);
  assert.equal(await outcome, 'no_token');
  assert.equal(server.sockets.length, 0);
});
