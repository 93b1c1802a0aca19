import { test } from 'node:test';
import assert from 'node:assert/strict';

import { isPolite } from '../switchboard.js';
import { fakeStream, harness, record } from './support/fakes.mjs';

/** Clients connected to one server, each in room `r` when `room` is set. */
async function peers(specs, { room = true } = {}) {
  const h = await harness();
  const clients = [];
  for (const [clientId, userId] of specs) {
    h.server.grant(`tok-${clientId}`, userId, userId.toUpperCase());
    clients.push(h.make({ token: `tok-${clientId}`, clientId }));
  }
  await Promise.all([...clients.map((c) => c.connect()), h.clock.advance(0)]);
  if (room) for (const c of clients) await Promise.all([c.join('r'), h.clock.advance(0)]);
  return { ...h, clients };
}

/** Accepts the next incoming call of `client`. */
function autoAccept(client, options = {}) {
  const accepted = [];
  client.on('incoming', (incoming) => accepted.push(incoming.accept(options)));
  return accepted;
}

function connected(call) {
  return call.pc.connectionState === 'connected' && call.dataChannel.readyState === 'open';
}

test('isPolite: exactly one side of a pair is polite', () => {
  assert.equal(isPolite('ca', 'cb'), true);
  assert.equal(isPolite('cb', 'ca'), false);
});

test('room call: offer, answer, candidates, data channel both ways', async () => {
  const {
    clock,
    server,
    webrtc,
    clients: [a, b],
  } = await peers([
    ['ca', 'ua'],
    ['cb', 'ub'],
  ]);
  const rings = record(b, 'incoming');
  const accepted = autoAccept(b);
  const call = await a.call('cb');
  const opened = record(call, 'open');
  await clock.advance(0);
  assert.equal(rings.length, 1);
  assert.deepEqual(rings[0].peer, {
    via: 'room',
    clientId: 'ca',
    userId: 'ua',
    username: 'UA',
    room: 'r',
  });
  const theirs = await accepted[0];
  await clock.advance(0);
  assert.ok(connected(call) && connected(theirs));
  assert.equal(opened.length, 1);
  assert.equal(webrtc.instances.length, 2);
  assert.deepEqual(call.peer, {
    via: 'room',
    clientId: 'cb',
    userId: 'ub',
    username: 'UB',
    room: 'r',
  });

  // What went over the wire is the room protocol seed 001's clients speak.
  const offer = server.frames('offer')[0];
  assert.equal(offer.to, 'cb');
  assert.equal(offer.room, 'r');
  assert.equal(offer.offer.type, 'offer');
  assert.equal(typeof offer.offer.sdp, 'string');
  assert.equal(server.frames('answer')[0].answer.type, 'answer');
  assert.ok(server.frames('ice_candidate').every((f) => typeof f.candidate.candidate === 'string'));

  const got = record(theirs, 'message');
  const back = record(call, 'message');
  assert.equal(call.send('hello'), true);
  assert.equal(theirs.send('hi back'), true);
  await clock.advance(0);
  assert.deepEqual(got, [{ data: 'hello' }]);
  assert.deepEqual(back, [{ data: 'hi back' }]);
  assert.equal(call.dataChannel.negotiated, true);
  assert.equal(call.dataChannel.id, 0);
  a.close();
  b.close();
});

for (const [first, second] of [
  ['ca', 'cb'],
  ['cb', 'ca'],
]) {
  test(`glare over room signals (${first} is polite): the polite side rolls back, both end stable on one connection`, async () => {
    const { clock, server, webrtc, clients } = await peers([
      [first, 'u1'],
      [second, 'u2'],
    ]);
    const [x, y] = clients;
    server.schedule = (fn) => clock.setTimeout(fn, 40); // 40 ms from the server to a client
    const rings = [record(x, 'incoming'), record(y, 'incoming')];
    const [cx, cy] = await Promise.all([x.call(second), y.call(first)]);
    await clock.advance(0);
    assert.deepEqual(
      [cx.pc.signalingState, cy.pc.signalingState],
      ['have-local-offer', 'have-local-offer'],
    );
    await clock.advance(1_000);
    // The side whose client id sorts first is polite, whoever started first.
    const [cp, cq] = first < second ? [cx, cy] : [cy, cx];
    const [p, q] = first < second ? [x, y] : [y, x];
    assert.equal(cp.polite, true);
    assert.equal(cq.polite, false);
    assert.deepEqual(
      rings.map((r) => r.length),
      [0, 0],
      'neither side rang: the offers met their calls',
    );
    assert.equal(webrtc.instances.length, 2, 'one connection on each side');
    assert.deepEqual(cp.pc.log, ['offer', 'rollback', 'remote:offer', 'answer']);
    assert.deepEqual(cq.pc.log, ['offer', 'remote:answer']);
    for (const c of [cp, cq]) {
      assert.equal(c.pc.signalingState, 'stable');
      assert.ok(connected(c));
      assert.equal(c.pc.addCandidateErrors, 0, 'no candidate before a remote description');
    }
    const got = record(cq, 'message');
    cp.send('after glare');
    await clock.advance(0);
    assert.deepEqual(got, [{ data: 'after glare' }]);
    p.close();
    q.close();
  });
}

test('glare over user-addressed signals: decided by user ids, both stable on one connection', async () => {
  const {
    clock,
    server,
    webrtc,
    clients: [a, b],
  } = await peers(
    [
      ['zz-a', 'u-a'],
      ['aa-b', 'u-b'],
    ],
    { room: false },
  );
  server.schedule = (fn) => clock.setTimeout(fn, 40);
  const [ca, cb] = await Promise.all([a.call('u-b'), b.call('u-a')]);
  await clock.advance(0);
  assert.deepEqual(
    [ca.pc.signalingState, cb.pc.signalingState],
    ['have-local-offer', 'have-local-offer'],
  );
  await clock.advance(1_000);
  assert.equal(ca.peer.via, 'user');
  assert.equal(ca.polite, true, 'u-a sorts before u-b (the client ids would say otherwise)');
  assert.equal(cb.polite, false);
  assert.deepEqual(ca.pc.log, ['offer', 'rollback', 'remote:offer', 'answer']);
  assert.deepEqual(cb.pc.log, ['offer', 'remote:answer']);
  assert.equal(webrtc.instances.length, 2);
  assert.ok(connected(ca) && connected(cb));
  assert.equal(ca.peer.clientId, 'aa-b');
  assert.equal(cb.peer.clientId, 'zz-a');
  a.close();
  b.close();
});

test('ICE candidates that arrive before the remote description wait for it', async () => {
  const {
    clock,
    server,
    clients: [a, b],
  } = await peers([
    ['ca', 'ua'],
    ['cb', 'ub'],
  ]);
  const call = await a.call('cb');
  await clock.advance(0);
  // b drives the other side by hand: a candidate first, the answer after.
  const candidate = {
    candidate: 'candidate:9 1 udp 1 10.0.0.9 9 typ host pc remote',
    sdpMid: '0',
    sdpMLineIndex: 0,
  };
  b.send('ca', 'ice_candidate', { candidate });
  await clock.advance(0);
  assert.equal(call.pc.remoteDescription, null);
  assert.deepEqual(call.pc.remoteCandidates, []);
  assert.equal(call.pc.addCandidateErrors, 0, 'not handed to the connection yet');
  const sdp = JSON.stringify({ pc: 'remote', tracks: [] });
  b.send('ca', 'answer', { answer: { type: 'answer', sdp } });
  await clock.advance(0);
  assert.equal(call.pc.signalingState, 'stable');
  assert.deepEqual(call.pc.remoteCandidates, [candidate]);
  assert.equal(call.pc.addCandidateErrors, 0);
  assert.equal(server.frames('offer').length, 1);
  a.close();
  b.close();
});

test('candidates sent while the callee is still ringing are kept for accept()', async () => {
  const {
    clock,
    clients: [a, b],
  } = await peers([
    ['ca', 'ua'],
    ['cb', 'ub'],
  ]);
  let incoming;
  b.on('incoming', (i) => {
    incoming = i;
  });
  const call = await a.call('cb');
  await clock.advance(5_000); // a's candidates reach b before b answers
  assert.equal(incoming.state, 'ringing');
  const theirs = await incoming.accept();
  await clock.advance(0);
  assert.ok(connected(call) && connected(theirs));
  assert.equal(theirs.pc.remoteCandidates.length, 1);
  assert.equal(theirs.pc.addCandidateErrors, 0);
  a.close();
  b.close();
});

test('hangup over room signals: a `signal` of data {type: "bye"}; both sides close', async () => {
  const {
    clock,
    server,
    clients: [a, b],
  } = await peers([
    ['ca', 'ua'],
    ['cb', 'ub'],
  ]);
  const accepted = autoAccept(b);
  const call = await a.call('cb');
  await clock.advance(0);
  const theirs = await accepted[0];
  await clock.advance(0);
  const mine = record(call, 'hangup');
  const ended = record(theirs, 'hangup');
  call.hangup();
  await clock.advance(0);
  assert.deepEqual(server.frames('signal'), [
    { type: 'signal', data: { type: 'bye', reason: 'hangup' }, to: 'cb', room: 'r' },
  ]);
  assert.deepEqual(mine, [{ reason: 'hangup', remote: false }]);
  assert.deepEqual(ended, [{ reason: 'hangup', remote: true }]);
  assert.equal(call.pc.signalingState, 'closed');
  assert.equal(theirs.pc.signalingState, 'closed');
  assert.deepEqual([a.calls, b.calls], [[], []]);
  assert.equal(call.send('x'), false);
  a.close();
  b.close();
});

test('hangup over user signals: a webrtc_ice_candidate with data null and `bye`', async () => {
  const {
    clock,
    server,
    clients: [a, b],
  } = await peers(
    [
      ['ca', 'ua'],
      ['cb', 'ub'],
    ],
    { room: false },
  );
  const accepted = autoAccept(b);
  const call = await a.call('ub');
  await clock.advance(0);
  const theirs = await accepted[0];
  await clock.advance(0);
  assert.ok(connected(call));
  const ended = record(call, 'hangup');
  theirs.hangup('done');
  await clock.advance(0);
  const bye = server.frames('webrtc_ice_candidate').at(-1);
  assert.deepEqual(bye, {
    type: 'webrtc_ice_candidate',
    target_user_id: 'ua',
    data: null,
    target_client_id: 'ca',
    bye: { reason: 'done' },
  });
  assert.deepEqual(ended, [{ reason: 'done', remote: true }]);
  a.close();
  b.close();
});

test('user call: seed 000 shapes on the wire (data, target_user_id)', async () => {
  const {
    clock,
    server,
    clients: [a, b],
  } = await peers(
    [
      ['ca', 'ua'],
      ['cb', 'ub'],
    ],
    { room: false },
  );
  autoAccept(b);
  await a.call('ub');
  await clock.advance(0);
  const offer = server.frames('webrtc_offer')[0];
  assert.equal(offer.target_user_id, 'ub');
  assert.equal(offer.data.type, 'offer');
  assert.equal(offer.target_client_id, undefined, 'the offer rings every device');
  const answer = server.frames('webrtc_answer')[0];
  assert.equal(answer.target_user_id, 'ua');
  assert.equal(answer.data.type, 'answer');
  assert.equal(answer.target_client_id, 'ca');
  a.close();
  b.close();
});

test('reject(): the caller`s call ends with reason "rejected"', async () => {
  const {
    clock,
    clients: [a, b],
  } = await peers([
    ['ca', 'ua'],
    ['cb', 'ub'],
  ]);
  b.on('incoming', (incoming) => incoming.reject());
  const call = await a.call('cb');
  const ended = record(call, 'hangup');
  await clock.advance(0);
  assert.deepEqual(ended, [{ reason: 'rejected', remote: true }]);
  assert.equal(call.state, 'closed');
  a.close();
  b.close();
});

test('the caller hangs up while ringing: the incoming call is cancelled', async () => {
  const {
    clock,
    clients: [a, b],
  } = await peers([
    ['ca', 'ua'],
    ['cb', 'ub'],
  ]);
  const cancels = [];
  b.on('incoming', (incoming) => incoming.on('cancel', (d) => cancels.push(d)));
  const call = await a.call('cb');
  await clock.advance(0);
  call.hangup();
  await clock.advance(0);
  assert.deepEqual(cancels, [{ reason: 'hangup' }]);
  a.close();
  b.close();
});

test('an unanswered incoming call is dropped after ringTimeoutMs', async () => {
  const {
    clock,
    clients: [a, b],
  } = await peers([
    ['ca', 'ua'],
    ['cb', 'ub'],
  ]);
  const cancels = [];
  b.on('incoming', (incoming) => incoming.on('cancel', (d) => cancels.push(d)));
  await a.call('cb');
  await clock.advance(59_999);
  assert.deepEqual(cancels, []);
  await clock.advance(1);
  assert.deepEqual(cancels, [{ reason: 'timeout' }]);
  a.close();
  b.close();
});

test('calling a peer that is ringing us accepts its call', async () => {
  const {
    clock,
    webrtc,
    clients: [a, b],
  } = await peers([
    ['ca', 'ua'],
    ['cb', 'ub'],
  ]);
  const call = await a.call('cb');
  await clock.advance(0);
  const theirs = await b.call('ca');
  await clock.advance(0);
  assert.equal(theirs.outgoing, false);
  assert.equal(webrtc.instances.length, 2);
  assert.ok(connected(call) && connected(theirs));
  assert.equal(await a.call('cb'), call, 'one call per peer');
  a.close();
  b.close();
});

test('a user with two devices: one answers, the other stops ringing', async () => {
  const {
    clock,
    server,
    clients: [a, b1, b2],
  } = await peers(
    [
      ['ca', 'ua'],
      ['cb1', 'ub'],
      ['cb2', 'ub'],
    ],
    { room: false },
  );
  const cancels = [];
  b2.on('incoming', (incoming) => incoming.on('cancel', (d) => cancels.push(d)));
  const accepted = autoAccept(b1);
  const call = await a.call('ub');
  await clock.advance(0);
  const theirs = await accepted[0];
  await clock.advance(0);
  assert.ok(connected(call) && connected(theirs));
  assert.equal(call.peer.clientId, 'cb1');
  assert.deepEqual(cancels, [{ reason: 'answered_elsewhere' }]);
  assert.equal(b2.calls.length, 0);
  assert.ok(
    server
      .frames('webrtc_ice_candidate')
      .filter((f) => f.target_user_id === 'ub')
      .every((f) => f.target_client_id === 'cb1'),
  );
  a.close();
  b1.close();
  b2.close();
});

test('a user with two devices: the later answer gets a bye, the first keeps the call', async () => {
  const {
    clock,
    clients: [a, b1, b2],
  } = await peers(
    [
      ['ca', 'ua'],
      ['cb1', 'ub'],
      ['cb2', 'ub'],
    ],
    { room: false },
  );
  const incomings = [];
  b1.on('incoming', (i) => incomings.push(i));
  b2.on('incoming', (i) => incomings.push(i));
  const call = await a.call('ub');
  await clock.advance(0);
  assert.equal(incomings.length, 2);
  const [first, second] = await Promise.all(incomings.map((i) => i.accept()));
  const late = record(second, 'hangup');
  await clock.advance(0);
  assert.equal(call.peer.clientId, 'cb1', 'the first answer wins');
  assert.ok(connected(call) && connected(first));
  assert.deepEqual(late, [{ reason: 'answered_elsewhere', remote: true }]);
  a.close();
  b1.close();
  b2.close();
});

test('one device declines: the other devices stop ringing too', async () => {
  const {
    clock,
    clients: [a, b1, b2],
  } = await peers(
    [
      ['ca', 'ua'],
      ['cb1', 'ub'],
      ['cb2', 'ub'],
    ],
    { room: false },
  );
  const cancels = [];
  b1.on('incoming', (i) => i.reject('busy'));
  b2.on('incoming', (i) => i.on('cancel', (d) => cancels.push(d)));
  const call = await a.call('ub');
  const ended = record(call, 'hangup');
  await clock.advance(0);
  assert.deepEqual(ended, [{ reason: 'busy', remote: true }]);
  assert.deepEqual(cancels, [{ reason: 'busy' }]);
  a.close();
  b1.close();
  b2.close();
});

test('local media tracks are sent; the peer gets `track` events', async () => {
  const {
    clock,
    clients: [a, b],
  } = await peers([
    ['ca', 'ua'],
    ['cb', 'ub'],
  ]);
  const accepted = autoAccept(b);
  const stream = fakeStream('audio', 'video');
  const call = await a.call('cb', { stream });
  await clock.advance(0);
  const theirs = await accepted[0];
  const tracks = record(theirs, 'track');
  await clock.advance(0);
  assert.equal(call.pc.tracks.length, 2);
  assert.equal(call.pc.tracks[0].streams[0], stream);
  // The callee listened after accept(): the tracks were announced on its remote offer.
  assert.equal(theirs.pc.seenTracks.size, 2);
  assert.deepEqual(tracks, []);
  const mine = record(call, 'track');
  const reply = fakeStream('audio');
  const back = await (async () => {
    theirs.pc.addTrack(reply.getTracks()[0], reply); // renegotiates: perfect negotiation again
    await clock.advance(0);
    return mine;
  })();
  assert.deepEqual(
    back.map((t) => t.track.kind),
    ['audio'],
  );
  assert.deepEqual(theirs.pc.log.slice(-2), ['offer', 'remote:answer']);
  a.close();
  b.close();
});

test('peer_not_found ends a room call', async () => {
  const {
    clock,
    clients: [a, b],
  } = await peers([
    ['ca', 'ua'],
    ['cb', 'ub'],
  ]);
  await b.leave('r');
  await clock.advance(0);
  const call = await a.call('cb', { via: 'room', room: 'r' });
  const ended = record(call, 'hangup');
  await clock.advance(0);
  assert.deepEqual(ended, [{ reason: 'peer_not_found', remote: true }]);
  a.close();
  b.close();
});

test('user_offline ends a user call', async () => {
  const {
    clock,
    clients: [a],
  } = await peers([['ca', 'ua']], { room: false });
  const call = await a.call('nobody');
  const ended = record(call, 'hangup');
  await clock.advance(0);
  assert.deepEqual(ended, [{ reason: 'user_offline', remote: true }]);
  a.close();
});

test('a failed connection restarts ICE once, then hangs up', async () => {
  const {
    clock,
    server,
    clients: [a, b],
  } = await peers([
    ['ca', 'ua'],
    ['cb', 'ub'],
  ]);
  const accepted = autoAccept(b);
  const call = await a.call('cb');
  await clock.advance(0);
  const theirs = await accepted[0];
  await clock.advance(0);
  const offers = () => server.frames('offer').length;
  const before = offers();
  const states = record(call, 'state');
  call.pc._setConnectionState('failed');
  await clock.advance(0);
  assert.equal(offers(), before + 1, 'an ICE restart offer');
  assert.deepEqual(
    states.map((s) => s.state),
    ['failed', 'connected'],
    'the restart worked',
  );
  assert.notEqual(JSON.parse(call.pc.localDescription.sdp).ufrag, `${call.pc.id}-u1`);

  call.pc.unreachable = true; // from now on ICE cannot succeed
  call.pc._setConnectionState('failed');
  await clock.advance(0);
  assert.equal(offers(), before + 2, 'a failure after a success restarts again');
  assert.equal(call.state, 'failed');
  const ended = record(theirs, 'hangup');
  call.pc._setConnectionState('failed');
  await clock.advance(0);
  assert.equal(offers(), before + 2, 'no third restart');
  assert.equal(call.state, 'closed');
  assert.deepEqual(ended, [{ reason: 'failed', remote: true }]);
  a.close();
  b.close();
});

test('close() hangs up every call first', async () => {
  const {
    clock,
    clients: [a, b],
  } = await peers([
    ['ca', 'ua'],
    ['cb', 'ub'],
  ]);
  const accepted = autoAccept(b);
  await a.call('cb');
  await clock.advance(0);
  const theirs = await accepted[0];
  await clock.advance(0);
  const ended = record(theirs, 'hangup');
  a.close();
  await clock.advance(0);
  assert.deepEqual(ended, [{ reason: 'closed', remote: true }]);
  b.close();
});

test('signals of a call survive a reconnect of the signaling connection', async () => {
  const {
    clock,
    server,
    clients: [a, b],
  } = await peers([
    ['ca', 'ua'],
    ['cb', 'ub'],
  ]);
  const accepted = autoAccept(b);
  const call = await a.call('cb');
  await clock.advance(0);
  const theirs = await accepted[0];
  await clock.advance(0);
  server.close(server.conn('ca'), 1011, '');
  await clock.advance(0);
  assert.equal(a.state, 'reconnecting');
  const ended = record(theirs, 'hangup');
  call.hangup();
  await clock.advance(1_000);
  assert.equal(a.state, 'open');
  assert.deepEqual(ended, [{ reason: 'hangup', remote: true }], 'the bye waited for the reconnect');
  a.close();
  b.close();
});
