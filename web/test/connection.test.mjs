import { test } from 'node:test';
import assert from 'node:assert/strict';

import { FINAL_CLOSE_CODES } from '../switchboard.js';
import { harness, record } from './support/fakes.mjs';

test('by default the token goes in an auth_token frame, never in the URL', async () => {
  const { clock, server, make } = await harness();
  server.grant('secret-token', 'u1', 'Ada');
  const client = make({ token: 'secret-token', clientId: 'c-ada' });
  const states = record(client, 'state');
  const session = client.connect();
  await clock.advance(0);
  assert.deepEqual(await session, { user: 'Ada', userId: 'u1', clientId: 'c-ada' });
  const [socket] = server.sockets;
  assert.equal(socket.url, 'wss://sb.test/ws');
  assert.ok(!socket.url.includes('secret-token'));
  assert.deepEqual(socket.sent[0], {
    type: 'auth_token',
    token: 'secret-token',
    clientId: 'c-ada',
  });
  assert.deepEqual(
    states.map((s) => s.state),
    ['connecting', 'open'],
  );
  assert.equal(client.state, 'open');
  assert.ok(
    !JSON.stringify(client.options).includes('secret-token'),
    'options do not show the token',
  );
  client.close();
});

test("authMode 'query' sends the token and client id with the upgrade", async () => {
  const { clock, server, make } = await harness();
  server.grant('tok', 'u1');
  const client = make({
    token: 'tok',
    clientId: 'c1',
    authMode: 'query',
    url: 'http://h.test:8080/sb/',
  });
  const opened = client.connect();
  await clock.advance(0);
  await opened;
  const url = new URL(server.sockets[0].url);
  assert.equal(url.origin + url.pathname, 'ws://h.test:8080/sb/ws');
  assert.equal(url.searchParams.get('token'), 'tok');
  assert.equal(url.searchParams.get('client_id'), 'c1');
  assert.equal(server.frames('auth_token').length, 0);
  client.close();
});

test('rooms are re-joined after a reconnect, before signals that waited', async () => {
  const { clock, server, make } = await harness();
  server.grant('ta', 'ua', 'A');
  server.grant('tb', 'ub', 'B');
  const a = make({ token: 'ta', clientId: 'ca' });
  const b = make({ token: 'tb', clientId: 'cb' });
  const early = a.join('lobby'); // before connecting: sent once open
  a.connect();
  b.connect();
  await clock.advance(0);
  assert.deepEqual(await early, []);
  assert.deepEqual(await b.join('lobby'), [{ client_id: 'ca', username: 'A', user_id: 'ua' }]);
  assert.deepEqual(await a.join('side'), []);
  assert.deepEqual(a.members('lobby'), [{ client_id: 'cb', username: 'B', user_id: 'ub' }]);

  const states = record(a, 'state');
  server.close(server.conn('ca'), 1011, 'internal error');
  await clock.advance(0);
  assert.equal(a.state, 'reconnecting');
  assert.equal(a.send('cb', 'signal', { data: { hello: 1 } }), true, 'queued while away');
  await clock.advance(states.at(-1).delayMs);
  assert.equal(a.state, 'open');
  const sent = server.sockets.at(-1).sent.map((f) => f.type + (f.room ? `:${f.room}` : ''));
  assert.deepEqual(sent, ['auth_token', 'join:lobby', 'join:side', 'signal:lobby']);
  assert.deepEqual(a.members('lobby'), [{ client_id: 'cb', username: 'B', user_id: 'ub' }]);
  const got = server.conn('cb').out.filter((f) => f.type === 'signal');
  assert.deepEqual(got, [
    { type: 'signal', data: { hello: 1 }, from: 'ca', username: 'A', user_id: 'ua', room: 'lobby' },
  ]);
  assert.equal(a.clientId, 'ca', 'the same client id across reconnects');
  a.close();
  b.close();
});

test('the reconnect notice: reconnect promptly, without backoff, after frames sent before the close', async () => {
  const { clock, server, make } = await harness();
  server.grant('t', 'u1');
  server.grant('t2', 'u2', 'Bo');
  server.down = true;
  const client = make({
    token: 't',
    clientId: 'c1',
    random: () => 0.999999999,
    initialDelayMs: 1000,
    drainJitterMs: 200,
  });
  client.connect();
  await clock.advance(1000 + 2000); // two failed attempts: backoff is at its third step
  server.down = false;
  await clock.advance(4000);
  assert.equal(client.state, 'open');
  client.join('r');
  await clock.advance(0);

  const states = record(client, 'state');
  const joined = record(client, 'user_joined');
  const conn = server.conn('c1');
  conn.send({ type: 'reconnect', reason: 'shutdown' });
  conn.send({ type: 'user_joined', room: 'r', client_id: 'c2', username: 'Bo', user_id: 'u2' });
  server.close(conn, 1012, 'service restart');
  await clock.advance(0);
  assert.equal(joined.length, 1, 'frames before the close are still handled');
  const retry = states.find((s) => s.state === 'reconnecting');
  assert.equal(retry.drain, 'shutdown');
  assert.equal(retry.code, 1012);
  assert.equal(retry.delayMs, 200, 'within drainJitterMs, not the backoff');
  assert.equal(retry.attempt, 0);
  const before = server.sockets.length;
  await clock.advance(199);
  assert.equal(server.sockets.length, before);
  await clock.advance(1);
  assert.equal(server.sockets.length, before + 1);
  assert.equal(client.state, 'open');
  assert.deepEqual(
    server.sockets.at(-1).sent.map((f) => f.type),
    ['auth_token', 'join'],
  );
  client.close();
});

test('the reconnect notice without a close: the client leaves after drainGraceMs', async () => {
  const { clock, server, make } = await harness();
  server.grant('t', 'u1');
  const client = make({ token: 't', clientId: 'c1', drainGraceMs: 2000, drainJitterMs: 0 });
  client.connect();
  await clock.advance(0);
  server.conn('c1').send({ type: 'reconnect', reason: 'node_evicted' });
  const states = record(client, 'state');
  await clock.advance(1999);
  assert.equal(states.length, 0);
  assert.equal(server.sockets.length, 1);
  await clock.advance(1);
  assert.equal(states[0].state, 'reconnecting');
  assert.equal(states[0].drain, 'node_evicted');
  assert.equal(server.sockets.length, 2);
  assert.equal(client.state, 'open');
  client.close();
});

for (const [code, errorCode] of [
  [1000, null],
  [1007, 'invalid_json'],
  [1008, 'unauthorized'],
  [1008, 'forbidden'],
  [1008, 'rate_limited'],
  [1009, null],
  [4001, null],
  [4004, 'token_revoked'],
]) {
  test(`close ${code}${errorCode ? ` after ${errorCode}` : ''}: no reconnect`, async () => {
    const { clock, server, make } = await harness();
    server.grant('t', 'u1');
    const client = make({ token: 't', clientId: 'c1' });
    const states = record(client, 'state');
    await Promise.all([client.connect(), clock.advance(0)]);
    const conn = server.conn('c1');
    if (errorCode) conn.send({ type: 'error', code: errorCode, message: 'no' });
    server.close(conn, code, 'bye');
    await clock.advance(600_000);
    assert.equal(server.sockets.length, 1, 'no second socket');
    assert.equal(client.state, 'closed');
    const closed = states.at(-1);
    assert.equal(closed.state, 'closed');
    assert.equal(closed.code, code);
    assert.equal(closed.error.closeCode, code);
    assert.equal(
      closed.error.code,
      errorCode ?? { 1000: 'normal', 1009: 'message_too_big', 4001: 'replaced' }[code],
    );
    assert.deepEqual(clock.pending(), []);
  });
}

test('FINAL_CLOSE_CODES lists the codes the protocol says not to retry', () => {
  assert.deepEqual([...FINAL_CLOSE_CODES].sort(), [1000, 1007, 1008, 1009, 4001, 4004]);
});

for (const code of [1006, 1011, 1013, 4002, 4003]) {
  test(`close ${code}: reconnect with backoff`, async () => {
    const { clock, server, make } = await harness();
    server.grant('t', 'u1');
    const client = make({ token: 't', clientId: 'c1', random: () => 0.5 });
    const states = record(client, 'state');
    await Promise.all([client.connect(), clock.advance(0)]);
    server.close(server.conn('c1'), code, '');
    await clock.advance(0);
    assert.equal(states.at(-1).state, 'reconnecting');
    assert.equal(states.at(-1).delayMs, 250);
    await clock.advance(250);
    assert.equal(server.sockets.length, 2);
    assert.equal(client.state, 'open');
    client.close();
  });
}

test('close 1008 after unavailable: the token could not be checked now, so retry with backoff', async () => {
  const { clock, server, make } = await harness();
  server.grant('t', 'u1');
  const client = make({ token: 't', clientId: 'c1', random: () => 0.5 });
  const states = record(client, 'state');
  await Promise.all([client.connect(), clock.advance(0)]);
  const conn = server.conn('c1');
  conn.send({ type: 'error', code: 'unavailable', message: 'try again' });
  server.close(conn, 1008, '');
  await clock.advance(0);
  assert.equal(states.at(-1).state, 'reconnecting');
  assert.equal(states.at(-1).delayMs, 250);
  await clock.advance(250);
  assert.equal(server.sockets.length, 2);
  assert.equal(client.state, 'open');
  client.close();
});

test('a refused token on the first connect rejects connect() with the error code', async () => {
  const { clock, server, make } = await harness();
  const client = make({ token: 'forged' });
  const outcome = client.connect().then(
    () => null,
    (e) => e,
  );
  await clock.advance(60_000);
  const error = await outcome;
  assert.equal(error.code, 'unauthorized');
  assert.equal(error.closeCode, 1008);
  assert.equal(server.sockets.length, 1);
});

test('client_id_taken: the client retries at once with a fresh client id', async () => {
  const { clock, server, make } = await harness();
  server.grant('tx', 'someone-else');
  server.grant('t', 'u1');
  const other = make({ token: 'tx', clientId: 'shared-id' });
  await Promise.all([other.connect(), clock.advance(0)]);
  const client = make({ token: 't', clientId: 'shared-id', random: () => 0.1 });
  const states = record(client, 'state');
  const session = client.connect();
  await clock.advance(0);
  const { clientId } = await session;
  assert.notEqual(clientId, 'shared-id');
  assert.match(clientId, /^[A-Za-z0-9_-]{1,64}$/);
  assert.equal(client.clientId, clientId);
  const retry = states.find((s) => s.state === 'reconnecting');
  assert.equal(retry.error, 'client_id_taken');
  assert.equal(retry.delayMs, 0);
  const claims = server
    .frames('auth_token')
    .slice(1)
    .map((f) => f.clientId);
  assert.deepEqual(claims, ['shared-id', clientId]);
  assert.equal(server.conn('shared-id').user.sub, 'someone-else', 'the other user keeps its id');
  client.close();
  other.close();
});

test('token_expired: a provider is asked for a fresh token, then the client retries', async () => {
  const { clock, server, make } = await harness();
  server.tokens.set('stale', { error: 'token_expired' });
  server.grant('fresh', 'u1');
  const asks = [];
  const client = make({
    clientId: 'c1',
    token: async ({ forceRefresh }) => {
      asks.push(forceRefresh);
      return forceRefresh ? 'fresh' : 'stale';
    },
  });
  const session = client.connect();
  await clock.advance(0);
  assert.equal((await session).userId, 'u1');
  assert.deepEqual(asks, [false, true]);
  assert.deepEqual(
    server.frames('auth_token').map((f) => f.token),
    ['stale', 'fresh'],
  );
  client.close();
});

test('token_expired twice in a row: the client stops', async () => {
  const { clock, server, make } = await harness();
  server.tokens.set('stale', { error: 'token_expired' });
  const client = make({ token: async () => 'stale' });
  const outcome = client.connect().catch((e) => e.code);
  await clock.advance(60_000);
  assert.equal(await outcome, 'token_expired');
  assert.equal(server.sockets.length, 2);
});

test('token_expired with a fixed token: no retry', async () => {
  const { clock, server, make } = await harness();
  server.tokens.set('stale', { error: 'token_expired' });
  const client = make({ token: 'stale' });
  const outcome = client.connect().catch((e) => e.code);
  await clock.advance(60_000);
  assert.equal(await outcome, 'token_expired');
  assert.equal(server.sockets.length, 1);
});

test('keepalive: a connection silent after a ping is replaced', async () => {
  const { clock, server, make } = await harness();
  server.grant('t', 'u1');
  const client = make({
    token: 't',
    clientId: 'c1',
    pingIntervalMs: 20_000,
    pongTimeoutMs: 5_000,
    random: () => 0,
  });
  await Promise.all([client.connect(), clock.advance(0)]);
  await clock.advance(20_000);
  assert.deepEqual(server.frames('ping').length, 1);
  assert.equal(server.sockets.length, 1, 'answered: still the first socket');
  server.mute = true;
  await clock.advance(20_000 + 4_999);
  assert.equal(server.sockets.length, 1);
  server.mute = false; // the next connection works; the first one's ping went unanswered
  await clock.advance(1);
  assert.equal(server.sockets.length, 2, 'given up and replaced');
  assert.equal(server.sockets[0].readyState, 3, 'the silent socket is closed');
  assert.equal(client.state, 'open');
  client.close();
});

test('close(): 1000 to the server, state closed, no reconnect', async () => {
  const { clock, server, make } = await harness();
  server.grant('t', 'u1');
  const client = make({ token: 't', clientId: 'c1' });
  await Promise.all([client.connect(), clock.advance(0)]);
  const states = record(client, 'state');
  client.close();
  await clock.advance(60_000);
  assert.equal(client.state, 'closed');
  assert.equal(states.at(-1).code, 1000);
  assert.equal(server.sockets[0].readyState, 3);
  assert.equal(server.conns.length, 0);
  assert.equal(server.sockets.length, 1);
  assert.equal(client.send(null, 'signal', { data: 1 }), false, 'nothing is queued once closed');
});

test('every server frame is an event of its type, and a `message`', async () => {
  const { clock, server, make } = await harness();
  server.grant('t', 'u1');
  const client = make({ token: 't', clientId: 'c1' });
  const all = record(client, 'message');
  const errors = record(client, 'error');
  const pongs = record(client, 'pong');
  await Promise.all([client.connect(), clock.advance(0)]);
  const conn = server.conn('c1');
  conn.send({ type: 'pong' });
  conn.send({ type: 'error', code: 'peer_not_found', message: 'gone', to: 'c9', room: 'r' });
  conn.send({ type: 'state', bogus: true });
  await clock.advance(0);
  assert.deepEqual(
    all.map((f) => f.type),
    ['auth_required', 'auth_success', 'pong', 'error', 'state'],
  );
  assert.equal(pongs.length, 1);
  assert.deepEqual(errors, [
    { type: 'error', code: 'peer_not_found', message: 'gone', to: 'c9', room: 'r' },
  ]);
  client.close();
});

test('join() resolves with users_in_room; a refused join rejects with the error code', async () => {
  const { clock, server, make } = await harness();
  server.roomCap = 1;
  server.grant('ta', 'ua', 'A');
  server.grant('tb', 'ub', 'B');
  const a = make({ token: 'ta', clientId: 'ca' });
  const b = make({ token: 'tb', clientId: 'cb' });
  await Promise.all([a.connect(), b.connect(), clock.advance(0)]);
  assert.deepEqual(await a.join('small'), []);
  const refused = b.join('small').catch((e) => e);
  await clock.advance(0);
  const error = await refused;
  assert.equal(error.code, 'room_full');
  assert.deepEqual(b.rooms, [], 'a refused room is not re-joined later');
  assert.throws(() => a.join('bad room!'), TypeError);
  a.close();
  b.close();
});

test('leave(): the server is told, the room is forgotten, others see user_left', async () => {
  const { clock, server, make } = await harness();
  server.grant('ta', 'ua', 'A');
  server.grant('tb', 'ub', 'B');
  const a = make({ token: 'ta', clientId: 'ca' });
  const b = make({ token: 'tb', clientId: 'cb' });
  await Promise.all([a.connect(), b.connect(), clock.advance(0)]);
  await Promise.all([a.join('r'), clock.advance(0)]);
  await Promise.all([b.join('r'), clock.advance(0)]);
  const left = record(b, 'user_left');
  await a.leave('r');
  await clock.advance(0);
  assert.deepEqual(a.rooms, []);
  assert.deepEqual(
    left.map((f) => f.client_id),
    ['ca'],
  );
  assert.deepEqual(b.members('r'), []);
  a.close();
  b.close();
});

test('signals: to one client, to the room, and to a user', async () => {
  const { clock, server, make } = await harness();
  server.grant('ta', 'ua', 'A');
  server.grant('tb', 'ub', 'B');
  server.grant('tc', 'uc', 'C');
  const a = make({ token: 'ta', clientId: 'ca' });
  const b = make({ token: 'tb', clientId: 'cb' });
  const c = make({ token: 'tc', clientId: 'cc' });
  await Promise.all([a.connect(), b.connect(), c.connect(), clock.advance(0)]);
  for (const x of [a, b, c]) await Promise.all([x.join('r'), clock.advance(0)]);
  const atB = record(b, 'offer');
  const atC = record(c, 'offer');
  const sigC = record(c, 'signal');
  const userC = record(c, 'webrtc_offer');
  a.send('cb', 'offer', { offer: { type: 'offer', sdp: 'x' } });
  a.broadcast('signal', { data: { mute: true } });
  a.sendToUser('uc', 'webrtc_offer', { type: 'offer', sdp: 'y' });
  await clock.advance(0);
  assert.deepEqual(atB, [
    {
      type: 'offer',
      offer: { type: 'offer', sdp: 'x' },
      from: 'ca',
      username: 'A',
      user_id: 'ua',
      room: 'r',
    },
  ]);
  assert.deepEqual(atC, []);
  assert.deepEqual(
    sigC.map((f) => f.data),
    [{ mute: true }],
  );
  assert.deepEqual(userC, [
    {
      type: 'webrtc_offer',
      target_user_id: 'uc',
      data: { type: 'offer', sdp: 'y' },
      sender_user_id: 'ua',
      from_user_id: 'ua',
      from: 'ca',
      username: 'A',
    },
  ]);
  assert.throws(() => a.send('cb', 'webrtc_offer', {}), TypeError);
  assert.throws(() => a.sendToUser('ub', 'offer', {}), TypeError);
  for (const x of [a, b, c]) x.close();
});

test('sending is paced under the server rate, and rate_limited pauses it', async () => {
  const { clock, server, make } = await harness();
  server.grant('t', 'u1');
  server.grant('t2', 'u2');
  const a = make({ token: 't', clientId: 'c1', sendRate: 10, sendBurst: 5, pingIntervalMs: 0 });
  const b = make({ token: 't2', clientId: 'c2', pingIntervalMs: 0 });
  await Promise.all([a.connect(), b.connect(), clock.advance(0)]);
  await Promise.all([a.join('r'), b.join('r'), clock.advance(0)]);
  await clock.advance(1000); // the bucket is full again
  const count = () => server.frames('signal').length;
  for (let i = 0; i < 8; i += 1) a.send('c2', 'signal', { data: i });
  await clock.advance(0);
  assert.equal(count(), 5, 'the burst');
  await clock.advance(100);
  assert.equal(count(), 6);
  await clock.advance(200);
  assert.equal(count(), 8);
  server
    .conn('c1')
    .send({ type: 'error', code: 'rate_limited', message: 'slow down', retry_after_ms: 700 });
  await clock.advance(0);
  a.send('c2', 'signal', { data: 'later' });
  await clock.advance(699);
  assert.equal(count(), 8);
  await clock.advance(1);
  assert.equal(count(), 9);
  a.close();
  b.close();
});
