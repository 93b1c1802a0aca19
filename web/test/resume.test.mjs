import { test } from 'node:test';
import assert from 'node:assert/strict';

import { FINAL_CLOSE_CODES } from '../switchboard.js';
import { harness, record } from './support/fakes.mjs';

/** Two clients in room `r` of a node that hands out sessions: ca (user ua) and cb (user ub). */
async function pair(options = {}) {
  const h = await harness({ server: { resume: true } });
  const { clock, server, make } = h;
  server.grant('ta', 'ua', 'A');
  server.grant('tb', 'ub', 'B');
  const a = make({ token: 'ta', clientId: 'ca' });
  const b = make({ token: 'tb', clientId: 'cb', ...options });
  await Promise.all([a.connect(), b.connect(), clock.advance(0)]);
  await Promise.all([a.join('r'), clock.advance(0)]);
  await Promise.all([b.join('r'), clock.advance(0)]);
  return { ...h, a, b };
}

/** The frames a socket sent, as `type` or `type:room`. */
function sentBy(socket) {
  return socket.sent.map((f) => f.type + (f.room ? `:${f.room}` : ''));
}

/** Every event a client dispatches, in order: `{type, detail}`. */
function recordAll(client) {
  const seen = [];
  const dispatch = client.dispatchEvent.bind(client);
  client.dispatchEvent = (event) => {
    seen.push({ type: event.type, detail: event.detail });
    return dispatch(event);
  };
  return seen;
}

/** Every string reachable from `value` (own properties, error messages, causes). */
function strings(value, out = [], seen = new Set()) {
  if (typeof value === 'string') {
    out.push(value);
    return out;
  }
  if (value === null || typeof value !== 'object' || seen.has(value)) return out;
  seen.add(value);
  if (value instanceof Error) {
    strings(value.message, out, seen);
    strings(value.cause, out, seen);
  }
  if (value instanceof Map) {
    for (const [k, v] of value) {
      strings(k, out, seen);
      strings(v, out, seen);
    }
  }
  for (const key of Object.keys(value)) {
    out.push(key);
    strings(value[key], out, seen);
  }
  return out;
}

test('auth_success starts a session: its id is kept, every delivered frame counts in lastSeq', async () => {
  const { clock, server, a, b } = await pair();
  assert.equal(b.sessionId, server.conn('cb').session.id);
  assert.equal(b.lastSeq, 0, 'users_in_room and auth_success carry no seq');
  assert.equal(a.lastSeq, 1, "a heard b's user_joined");
  const seen = record(b, 'signal');
  for (let i = 1; i <= 4; i += 1) a.send('cb', 'signal', { data: { n: i } });
  b.connect(); // resolves at once; nothing is sent
  await clock.advance(0);
  assert.deepEqual(
    seen.map((f) => [f.seq, f.data.n]),
    [
      [1, 1],
      [2, 2],
      [3, 3],
      [4, 4],
    ],
  );
  assert.equal(b.lastSeq, 4);
  a.close();
  b.close();
});

test('a dropped connection resumes: same client id, no re-join, the missed frames in order, queued signals after', async () => {
  const { clock, server, a, b } = await pair();
  const conn = server.conn('cb');
  const token = conn.session.token;
  const signals = record(b, 'signal');
  const left = record(a, 'user_left');
  const joined = record(a, 'user_joined');
  a.send('cb', 'signal', { data: { n: 1 } });
  await clock.advance(0);
  assert.equal(b.lastSeq, 1);
  // Frame 2 is written as the link dies: it never arrives.
  conn.ws.severed = true;
  a.send('cb', 'signal', { data: { n: 2 } });
  await clock.advance(0);
  conn.ws.severed = false;
  const states = record(b, 'state');
  const resumed = record(b, 'resumed');
  const failed = record(b, 'resume_failed');
  server.lose(conn);
  await clock.advance(0);
  assert.equal(b.state, 'reconnecting');
  assert.equal(states.at(-1).code, 1006);
  // While away: a targeted signal, a room broadcast, a user-addressed signal.
  a.send('cb', 'signal', { data: { n: 3 } });
  a.broadcast('signal', { data: { n: 4 } });
  a.sendToUser('ub', 'webrtc_ice_candidate', { candidate: 'c5' });
  assert.equal(b.send('ca', 'signal', { data: 'queued' }), true, 'queued while away');
  await clock.advance(0);
  assert.deepEqual(left, [], 'nobody saw b leave');

  await clock.advance(states.at(-1).delayMs);
  assert.equal(b.state, 'open');
  assert.equal(b.clientId, 'cb');
  const socket = server.sockets.at(-1);
  assert.deepEqual(sentBy(socket), ['resume', 'signal:r'], 'no auth_token, no join');
  assert.deepEqual(socket.sent[0], {
    type: 'resume',
    session: b.sessionId,
    resume_token: token,
    last_seq: 1,
  });
  assert.deepEqual(resumed, [{ session: conn.session.id, rooms: ['r'] }]);
  assert.deepEqual(failed, []);
  const open = states.at(-1);
  assert.equal(open.state, 'open');
  assert.equal(open.resumed, true);
  assert.equal(open.clientId, 'cb');
  assert.deepEqual(
    signals.map((f) => f.data.n),
    [1, 2, 3, 4],
    'what was missed, once and in order',
  );
  assert.deepEqual(
    server.conn('cb').replayed.map((f) => f.seq),
    [2, 3, 4, 5],
  );
  assert.equal(b.lastSeq, 5);
  assert.deepEqual(b.rooms, ['r']);
  assert.deepEqual(b.members('r'), [{ client_id: 'ca', username: 'A', user_id: 'ua' }]);
  assert.deepEqual(joined, [], 'a saw no re-join');
  const atA = server.conn('ca').out.filter((f) => f.type === 'signal');
  assert.deepEqual(
    atA.map((f) => [f.from, f.data]),
    [['cb', 'queued']],
  );
  // The session goes on: new frames are numbered on.
  a.send('cb', 'signal', { data: { n: 6 } });
  await clock.advance(0);
  assert.equal(signals.at(-1).data.n, 6);
  assert.equal(b.lastSeq, 6);
  a.close();
  b.close();
});

test('the replay is handled like live traffic: an offer missed while away rings', async () => {
  const { clock, server, a, b } = await pair();
  const rings = record(b, 'incoming');
  server.lose(server.conn('cb'));
  await clock.advance(0);
  a.send('cb', 'offer', { offer: { type: 'offer', sdp: 'v=0' } });
  await clock.advance(1000);
  assert.equal(b.state, 'open');
  assert.equal(rings.length, 1);
  assert.equal(rings[0].peer.clientId, 'ca');
  a.close();
  b.close();
});

test('frames whose seq was already seen are ignored: no event, no ringing, lastSeq unchanged', async () => {
  const { clock, server, a, b } = await pair();
  a.send('cb', 'signal', { data: { n: 1 } });
  a.send('cb', 'offer', { offer: { type: 'offer', sdp: 'v=0' } });
  await clock.advance(0);
  assert.equal(b.lastSeq, 2);
  const messages = record(b, 'message');
  const rings = record(b, 'incoming');
  const conn = server.conn('cb');
  // A node that replays what the client had (it should not).
  for (const frame of conn.numbered) conn.ws._deliver(frame);
  conn.ws._deliver({ seq: 1, type: 'user_left', room: 'r', client_id: 'ca' });
  await clock.advance(0);
  assert.deepEqual(messages, []);
  assert.deepEqual(rings, []);
  assert.deepEqual(b.members('r'), [{ client_id: 'ca', username: 'A', user_id: 'ua' }]);
  assert.equal(b.lastSeq, 2);
  // Also across a resume that replays too much.
  server.lose(conn);
  await clock.advance(1000);
  assert.equal(b.state, 'open');
  const resumedConn = server.conn('cb');
  for (const frame of resumedConn.numbered) resumedConn.ws._deliver(frame);
  await clock.advance(0);
  assert.deepEqual(
    messages.map((f) => f.type),
    ['auth_required', 'resumed'],
  );
  a.send('cb', 'signal', { data: { n: 3 } });
  await clock.advance(0);
  assert.deepEqual(
    messages.map((f) => [f.type, f.seq]),
    [
      ['auth_required', undefined],
      ['resumed', undefined],
      ['signal', 3],
    ],
  );
  a.close();
  b.close();
});

test('the resume frame carries the highest seq received, whatever came in between', async () => {
  const { clock, server, a, b } = await pair({ pingIntervalMs: 1000, pongTimeoutMs: 5000 });
  for (let i = 0; i < 7; i += 1) a.send('cb', 'signal', { data: i });
  a.sendToUser('ub', 'webrtc_offer', { type: 'offer', sdp: 'x' });
  await clock.advance(2500); // pings and pongs: no seq
  b.send('nobody', 'signal', { data: 'x' }); // an error answer: no seq
  await clock.advance(0);
  assert.ok(server.conn('cb').out.some((f) => f.type === 'pong'));
  assert.ok(server.conn('cb').out.some((f) => f.type === 'error'));
  assert.equal(b.lastSeq, 8);
  server.lose(server.conn('cb'));
  await clock.advance(1000);
  const resume = server.frames('resume');
  assert.equal(resume.length, 1);
  assert.equal(resume[0].last_seq, 8);
  assert.equal(b.state, 'open');
  a.close();
  b.close();
});

test('resume_failed: a fresh session on the same connection, same client id, rooms joined again', async () => {
  const { clock, server, a, b } = await pair();
  const first = b.sessionId;
  a.send('cb', 'signal', { data: 1 });
  await clock.advance(0);
  const failed = record(b, 'resume_failed');
  const resumed = record(b, 'resumed');
  const joined = record(a, 'user_joined');
  const conn = server.conn('cb');
  server.lose(conn);
  await clock.advance(0);
  server.expire(conn); // the window ended: the rooms saw b leave
  assert.equal(b.send('ca', 'signal', { data: 'queued' }), true);
  await clock.advance(1000);
  assert.equal(b.state, 'open');
  const socket = server.sockets.at(-1);
  assert.equal(server.sockets.length, 3, 'one new socket');
  assert.deepEqual(sentBy(socket), ['resume', 'auth_token', 'join:r', 'signal:r']);
  assert.deepEqual(socket.sent[1], { type: 'auth_token', token: 'tb', clientId: 'cb' });
  assert.deepEqual(failed, [{ reason: 'expired', message: 'cannot resume: expired' }]);
  assert.deepEqual(resumed, []);
  assert.equal(b.clientId, 'cb');
  assert.notEqual(b.sessionId, first, 'a new session');
  assert.equal(b.sessionId, server.conn('cb').session.id);
  assert.equal(b.lastSeq, 0, 'the new session counts from its own start');
  assert.deepEqual(
    joined.map((f) => f.client_id),
    ['cb'],
  );
  // The new session is the one resumed next time.
  a.send('cb', 'signal', { data: 2 });
  await clock.advance(0);
  assert.equal(b.lastSeq, 1);
  server.lose(server.conn('cb'));
  await clock.advance(1000);
  const resume = server.frames('resume').at(-1);
  assert.equal(resume.session, b.sessionId);
  assert.equal(resume.last_seq, 1);
  assert.equal(resumed.length, 1);
  a.close();
  b.close();
});

test('after resume_failed a room counts as joined only once the new session answers the join', async () => {
  const { clock, server, a, b } = await pair();
  server.refuseResume = 'expired';
  // The new session's join is taken, but its answer never arrives.
  const join = server.join.bind(server);
  server.join = (conn, room) => {
    server.join = join;
    conn.rooms.add(room);
  };
  server.lose(server.conn('cb'));
  await clock.advance(1000);
  assert.deepEqual(sentBy(server.sockets.at(-1)), ['resume', 'auth_token', 'join:r']);
  server.refuseResume = null;
  server.lose(server.conn('cb'));
  await clock.advance(1000);
  assert.equal(b.state, 'open');
  assert.deepEqual(
    sentBy(server.sockets.at(-1)),
    ['resume', 'join:r'],
    'joined again: the members heard in the old session are not this one',
  );
  assert.deepEqual(b.members('r'), [{ client_id: 'ca', username: 'A', user_id: 'ua' }]);
  a.close();
  b.close();
});

for (const reason of ['invalid_token', 'overflow', 'disabled', 'closed']) {
  test(`resume_failed (${reason}): auth_token and re-join`, async () => {
    const { clock, server, a, b } = await pair();
    const failed = record(b, 'resume_failed');
    server.refuseResume = reason;
    server.lose(server.conn('cb'));
    await clock.advance(1000);
    assert.equal(b.state, 'open');
    assert.deepEqual(sentBy(server.sockets.at(-1)), ['resume', 'auth_token', 'join:r']);
    assert.deepEqual(
      failed.map((f) => f.reason),
      [reason],
    );
    assert.equal(b.clientId, 'cb');
    a.close();
    b.close();
  });
}

test('a node that answers resume with an error: authenticate afresh on the same connection', async () => {
  const { clock, server, a, b } = await pair();
  server.resumeSession = (conn) =>
    conn.send({ type: 'error', code: 'unauthorized', message: 'authenticate first' });
  const failed = record(b, 'resume_failed');
  server.lose(server.conn('cb'));
  await clock.advance(1000);
  assert.equal(b.state, 'open');
  assert.deepEqual(sentBy(server.sockets.at(-1)), ['resume', 'auth_token', 'join:r']);
  assert.deepEqual(failed, [{ reason: 'unauthorized' }]);
  a.close();
  b.close();
});

test('a link that goes silent: the keepalive gives up on it and the session is resumed', async () => {
  const { clock, server, a, b } = await pair({ pingIntervalMs: 20_000, pongTimeoutMs: 5_000 });
  const signals = record(b, 'signal');
  server.sever(server.conn('cb'));
  a.send('cb', 'signal', { data: 'while silent' });
  await clock.advance(25_000 + 1000);
  assert.equal(b.state, 'open');
  assert.deepEqual(sentBy(server.sockets.at(-1)), ['resume']);
  assert.deepEqual(
    signals.map((f) => f.data),
    ['while silent'],
  );
  a.close();
  b.close();
});

for (const code of [4003, 1011, 4002]) {
  test(`close ${code}: the next connection tries to resume first`, async () => {
    const { clock, server, a, b } = await pair();
    const states = record(b, 'state');
    server.close(server.conn('cb'), code, '');
    await clock.advance(0);
    assert.equal(states.at(-1).state, 'reconnecting');
    await clock.advance(states.at(-1).delayMs);
    assert.equal(b.state, 'open');
    // 4003 parks the session; the others end it, and the resume falls back.
    const expected = code === 4003 ? ['resume'] : ['resume', 'auth_token', 'join:r'];
    assert.deepEqual(sentBy(server.sockets.at(-1)), expected);
    a.close();
    b.close();
  });
}

test('connections that fail before authenticating keep the session for the next try', async () => {
  const { clock, server, a, b } = await pair();
  const conn = server.conn('cb');
  server.down = true;
  server.lose(conn);
  await clock.advance(2000); // a few attempts, all refused
  const refused = server.sockets.length;
  server.down = false;
  await clock.advance(10_000);
  assert.equal(b.state, 'open');
  assert.ok(refused >= 4, 'some attempts failed');
  assert.deepEqual(sentBy(server.sockets.at(-1)), ['resume']);
  a.close();
  b.close();
});

test('join() and leave() while away: sent after resumed, the kept rooms untouched', async () => {
  const { clock, server, a, b } = await pair();
  await Promise.all([b.join('s'), clock.advance(0)]);
  server.lose(server.conn('cb'));
  await clock.advance(0);
  const joinedT = b.join('t');
  await b.leave('s');
  await clock.advance(1000);
  assert.equal(b.state, 'open');
  assert.deepEqual(sentBy(server.sockets.at(-1)), ['resume', 'leave:s', 'join:t']);
  assert.deepEqual(await joinedT, []);
  assert.deepEqual([...server.conn('cb').rooms].sort(), ['r', 't']);
  assert.deepEqual(b.rooms.sort(), ['r', 't']);
  a.close();
  b.close();
});

test('a join unanswered when the link dropped is sent again after resumed', async () => {
  const { clock, server, a, b } = await pair();
  const conn = server.conn('cb');
  conn.ws.severed = true; // the join reaches nobody
  const joined = b.join('late');
  await clock.advance(0);
  conn.ws.severed = false;
  server.lose(conn);
  await clock.advance(1000);
  assert.equal(b.state, 'open');
  assert.deepEqual(sentBy(server.sockets.at(-1)), ['resume', 'join:late']);
  assert.deepEqual(await joined, []);
  a.close();
  b.close();
});

test('after a shutdown notice the session it carries is tried, and expired is followed by a fresh session', async () => {
  const { clock, server, a, b } = await pair();
  const failed = record(b, 'resume_failed');
  const notices = record(b, 'reconnect');
  const conn = server.conn('cb');
  server.drain(conn, 'shutdown');
  await clock.advance(1000);
  assert.equal(notices.length, 1);
  assert.equal(notices[0].session, conn.session.id);
  assert.equal(b.state, 'open');
  assert.deepEqual(sentBy(server.sockets.at(-1)), ['resume', 'auth_token', 'join:r']);
  assert.equal(server.frames('resume')[0].session, conn.session.id);
  assert.deepEqual(
    failed.map((f) => f.reason),
    ['expired'],
  );
  a.close();
  b.close();
});

test('after a node_evicted notice there is nothing to resume', async () => {
  const { clock, server, a, b } = await pair();
  const failed = record(b, 'resume_failed');
  server.drain(server.conn('cb'), 'node_evicted');
  await clock.advance(1000);
  assert.equal(b.state, 'open');
  assert.deepEqual(sentBy(server.sockets.at(-1)), ['auth_token', 'join:r']);
  assert.deepEqual(server.frames('resume'), []);
  assert.deepEqual(failed, []);
  // The new session numbers from 1: nothing of it is taken for a repeat.
  const signals = record(b, 'signal');
  a.send('cb', 'signal', { data: 'fresh' });
  await clock.advance(0);
  assert.deepEqual(
    signals.map((f) => [f.seq, f.data]),
    [[1, 'fresh']],
  );
  assert.equal(b.lastSeq, 1);
  a.close();
  b.close();
});

for (const code of FINAL_CLOSE_CODES) {
  test(`close ${code}: no resume, the session is dropped`, async () => {
    const { clock, server, a, b } = await pair();
    assert.ok(b.sessionId);
    server.close(server.conn('cb'), code, 'bye');
    await clock.advance(60_000);
    assert.equal(b.state, 'closed');
    assert.equal(b.sessionId, null);
    assert.deepEqual(server.frames('resume'), []);
    // A later connect() starts a new session.
    b.connect().catch(() => {});
    await clock.advance(0);
    assert.deepEqual(server.frames('resume'), []);
    assert.deepEqual(sentBy(server.sockets.at(-1)), ['auth_token', 'join:r']);
    a.close();
    b.close();
  });
}

test('close(): 1000 ends the session at the server; a later connect() does not resume', async () => {
  const { clock, server, a, b } = await pair();
  const conn = server.conn('cb');
  const left = record(a, 'user_left');
  b.close();
  await clock.advance(0);
  assert.equal(b.sessionId, null);
  assert.equal(server.sockets[1].readyState, 3);
  assert.equal(conn.parked, false);
  assert.deepEqual(
    left.map((f) => f.client_id),
    ['cb'],
  );
  await Promise.all([b.connect(), clock.advance(0)]);
  assert.deepEqual(sentBy(server.sockets.at(-1)), ['auth_token', 'join:r']);
  assert.deepEqual(server.frames('resume'), []);
  a.close();
  b.close();
});

test('resume: false: a dropped connection authenticates afresh and joins again', async () => {
  const { clock, server, a, b } = await pair({ resume: false });
  assert.equal(b.sessionId, null);
  assert.equal(b.options.resume, false);
  server.lose(server.conn('cb'));
  await clock.advance(1000);
  assert.equal(b.state, 'open');
  assert.deepEqual(sentBy(server.sockets.at(-1)), ['auth_token', 'join:r']);
  assert.deepEqual(server.frames('resume'), []);
  a.close();
  b.close();
});

test("authMode 'query' resumes with message auth: no token in the URL, resume after auth_required", async () => {
  const { clock, server, make } = await harness({ server: { resume: true } });
  server.grant('ta', 'ua', 'A');
  server.grant('tq', 'uq', 'Q');
  const a = make({ token: 'ta', clientId: 'ca' });
  const q = make({ token: 'tq', clientId: 'cq', authMode: 'query' });
  await Promise.all([a.connect(), q.connect(), clock.advance(0)]);
  await Promise.all([q.join('r'), a.join('r'), clock.advance(0)]);
  const first = new URL(server.sockets.find((s) => s.url.includes('cq')).url);
  assert.equal(first.searchParams.get('token'), 'tq');
  const signals = record(q, 'signal');
  const required = record(q, 'auth_required');
  server.lose(server.conn('cq'));
  await clock.advance(0);
  a.send('cq', 'signal', { data: 'missed' });
  await clock.advance(1000);
  assert.equal(q.state, 'open');
  const socket = server.sockets.at(-1);
  const url = new URL(socket.url);
  assert.equal(url.searchParams.get('token'), null, 'no token in the resume URL');
  assert.ok(!socket.url.includes('tq'));
  assert.equal(required.length, 1, 'the resume connection was asked to authenticate');
  assert.deepEqual(sentBy(socket), ['resume']);
  assert.deepEqual(
    signals.map((f) => f.data),
    ['missed'],
  );
  // A failed resume in query mode: the token goes in auth_token on the same connection.
  server.refuseResume = 'expired';
  server.lose(server.conn('cq'));
  await clock.advance(1000);
  assert.equal(q.state, 'open');
  const again = server.sockets.at(-1);
  assert.equal(new URL(again.url).searchParams.get('token'), null);
  assert.deepEqual(sentBy(again), ['resume', 'auth_token', 'join:r']);
  assert.deepEqual(again.sent[1], { type: 'auth_token', token: 'tq', clientId: 'cq' });
  a.close();
  q.close();
});

test('the resume token never appears in an event, in options, or in state', async () => {
  const { clock, server, make } = await harness({ server: { resume: true } });
  server.grant('ta', 'ua', 'A');
  server.grant('tb', 'ub', 'B');
  const a = make({ token: 'ta', clientId: 'ca' });
  const b = make({ token: 'tb', clientId: 'cb' });
  const events = recordAll(b);
  await Promise.all([a.connect(), b.connect(), clock.advance(0)]);
  await Promise.all([a.join('r'), b.join('r'), clock.advance(0)]);
  const tokens = new Set([server.conn('cb').session.token]);
  // A resume, a drain notice carrying the token, a failed resume, a fresh session, a final close.
  server.lose(server.conn('cb'));
  await clock.advance(1000);
  a.send('cb', 'signal', { data: 1 });
  await clock.advance(0);
  server.drain(server.conn('cb'), 'shutdown');
  await clock.advance(1000);
  tokens.add(server.conn('cb').session.token);
  server.lose(server.conn('cb'));
  await clock.advance(1000);
  const conn = server.conn('cb');
  conn.send({ type: 'error', code: 'token_revoked', message: 'revoked' });
  server.close(conn, 4004, 'revoked');
  await clock.advance(1000);
  assert.equal(b.state, 'closed');

  const types = new Set(events.map((e) => e.type));
  for (const type of ['auth_success', 'resumed', 'reconnect', 'resume_failed', 'message']) {
    assert.ok(types.has(type), `saw ${type}`);
  }
  const auth = events.find((e) => e.type === 'auth_success').detail;
  assert.equal(typeof auth.session, 'string', 'the session id is shown');
  assert.equal('resume_token' in auth, false);
  assert.equal(tokens.size, 2);
  for (const token of tokens) {
    assert.equal(server.received.filter((r) => r.frame.resume_token === token).length > 0, true);
    for (const { type, detail } of events) {
      for (const s of strings(detail)) {
        assert.ok(!s.includes(token), `the ${type} event shows the resume token`);
      }
    }
    for (const s of strings(b.options)) assert.ok(!s.includes(token));
    for (const s of strings(b.session)) assert.ok(!s.includes(token));
  }
  a.close();
});
