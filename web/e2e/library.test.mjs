// Two real browsers' pages call each other through Switchboard with the client library, each on
// a different node of the cluster: over room signals, over user-addressed `webrtc_*` signals,
// and again after the node under one page was killed and the library reconnected through the
// load balancer to another node.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { cluster, clusterCommand, launch, metric, mintToken, nodePid, nodesWith, open, until } from './support.mjs';

let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

/**
 * Opens `/demo/index.html` on `base` and starts a client there: connects with a token for
 * `user`, joins `room` when given, and accepts every incoming call. Returns the page.
 */
async function clientPage(base, user, room) {
  const page = await open(browser, `${base}/demo/index.html`);
  const token = mintToken(user, `Name ${user}`);
  const me = await page.evaluate(
    async ({ token, room }) => {
      const { SwitchboardClient } = await import('./switchboard.js');
      const client = new SwitchboardClient({ token, initialDelayMs: 100, maxDelayMs: 1000 });
      window.e2e = { client, calls: [], received: [], states: [], hangups: [] };
      client.on('state', ({ state }) => window.e2e.states.push(state));
      const track = (call) => {
        window.e2e.calls.push(call);
        call.on('message', ({ data }) => window.e2e.received.push(data));
        call.on('hangup', ({ reason, remote }) => window.e2e.hangups.push({ reason, remote }));
      };
      window.e2e.track = track;
      client.on('incoming', async (incoming) => track(await incoming.accept()));
      const hello = await client.connect();
      const others = room ? await client.join(room) : [];
      return { clientId: hello.clientId, userId: hello.userId, others };
    },
    { token, room },
  );
  page.me = me;
  return page;
}

/** Page `from` calls `peer` (a client id, or a user id with `{via: 'user'}`). */
async function call(from, peer, options = {}) {
  await from.evaluate(
    async ({ peer, options }) => {
      const call = await window.e2e.client.call(peer, options);
      window.e2e.track(call);
    },
    { peer, options },
  );
}

/** Waits until the newest call of `page` has its data channel open and is connected. */
async function connected(page) {
  await until('the data channel to open', () =>
    page.evaluate(() => {
      const call = window.e2e.calls.at(-1);
      return call?.dataChannel?.readyState === 'open' && call.pc.connectionState === 'connected';
    }),
  );
}

/** `from` sends `text` over its newest call; waits until `to` has received it. */
async function say(from, to, text) {
  const sent = await from.evaluate((text) => window.e2e.calls.at(-1).send(text), text);
  assert.equal(sent, true, 'the data channel took the message');
  await until(`"${text}" to arrive`, () => to.evaluate((text) => window.e2e.received.includes(text), text));
}

/** The local and remote candidate types of the newest call's selected pair. */
async function selectedPair(page) {
  return page.evaluate(async () => {
    const stats = await window.e2e.calls.at(-1).pc.getStats();
    const byId = new Map([...stats.values()].map((s) => [s.id, s]));
    const pair = [...stats.values()].find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
    return pair && [byId.get(pair.localCandidateId).candidateType, byId.get(pair.remoteCandidateId).candidateType];
  });
}

/** Hangs up `from`'s newest call; waits for `to` to hear of it. */
async function hangup(from, to) {
  const before = await to.evaluate(() => window.e2e.hangups.length);
  await from.evaluate(() => window.e2e.calls.at(-1).hangup());
  await until('the peer to hear the hangup', () => to.evaluate((n) => window.e2e.hangups.length > n, before));
  const heard = await to.evaluate(() => window.e2e.hangups.at(-1));
  assert.deepEqual(heard, { reason: 'hangup', remote: true });
  await until('both peer connections to close', async () => {
    const states = await Promise.all([from, to].map((p) => p.evaluate(() => window.e2e.calls.at(-1).pc.signalingState)));
    return states.every((s) => s === 'closed');
  });
}

async function closeAll(...pages) {
  for (const page of pages) {
    assert.deepEqual(page.problems, [], 'no page errors');
    await page.evaluate(() => window.e2e.client.close());
    await page.context().close();
  }
  await until('every connection to be gone', async () => (await nodesWith(0)).length === 3);
}

test('two pages on two nodes join one room and talk over a real data channel', async () => {
  const alice = await clientPage(cluster.nodes[0].url, 'e2e-alice', 'e2e-room');
  const bob = await clientPage(cluster.nodes[1].url, 'e2e-bob', 'e2e-room');
  // One authenticated connection on node 1, one on node 2.
  assert.equal(await metric(cluster.nodes[0], 'switchboard_connections'), 1);
  assert.equal(await metric(cluster.nodes[1], 'switchboard_connections'), 1);
  assert.deepEqual(bob.me.others.map((m) => m.client_id), [alice.me.clientId]);
  await until('alice to see bob join', () =>
    alice.evaluate((id) => window.e2e.client.members('e2e-room').some((m) => m.client_id === id), bob.me.clientId),
  );

  await call(alice, bob.me.clientId);
  await connected(alice);
  await connected(bob);
  await say(alice, bob, 'hello from alice');
  await say(bob, alice, 'hello from bob');
  assert.deepEqual(await selectedPair(alice), ['host', 'host']);
  await hangup(alice, bob);
  await closeAll(alice, bob);
});

test('two pages on two nodes call by user id with webrtc_* signals', async () => {
  // No room: user-addressed signals reach every device of the user, wherever it is connected.
  const carol = await clientPage(cluster.nodes[1].url, 'e2e-carol');
  const dave = await clientPage(cluster.nodes[2].url, 'e2e-dave');
  assert.equal(await metric(cluster.nodes[1], 'switchboard_connections'), 1);
  assert.equal(await metric(cluster.nodes[2], 'switchboard_connections'), 1);

  await call(carol, dave.me.userId, { via: 'user' });
  await connected(carol);
  await connected(dave);
  const peer = await dave.evaluate(() => window.e2e.calls.at(-1).peer);
  assert.equal(peer.via, 'user');
  assert.equal(peer.userId, 'e2e-carol');
  await say(carol, dave, 'ping over webrtc_offer');
  await say(dave, carol, 'pong over webrtc_answer');
  await hangup(dave, carol);
  await closeAll(carol, dave);
});

test('the library reconnects through another node when its node is killed, and calls again', async () => {
  // Both pages through the load balancer; alice first, to know her node.
  const alice = await clientPage(cluster.url, 'e2e-erin', 'e2e-failover');
  const [node] = await until('alice on one node', async () => {
    const found = await nodesWith(1);
    return found.length === 1 && found;
  });
  const bob = await clientPage(cluster.url, 'e2e-frank', 'e2e-failover');
  await call(bob, alice.me.clientId);
  await connected(alice);
  await connected(bob);
  await say(alice, bob, 'before the kill');

  process.kill(nodePid(node), 'SIGKILL');
  try {
    await until('alice to lose her connection', () =>
      alice.evaluate(() => window.e2e.states.includes('reconnecting')),
    );
    await until('alice to reconnect', () => alice.evaluate(() => window.e2e.client.state === 'open'));
    // She is on another node now; the killed one holds nothing.
    await until('alice on a surviving node', async () => {
      let total = 0;
      for (const n of cluster.nodes.filter((x) => x.n !== node)) total += await metric(n, 'switchboard_connections');
      return total === 2;
    });
    // The call's peer connection did not need the signaling connection.
    await say(bob, alice, 'during the failover');
    await hangup(alice, bob);

    // A new call, negotiated through the new node.
    await until('bob to see alice in the room again', () =>
      bob.evaluate((id) => window.e2e.client.members('e2e-failover').some((m) => m.client_id === id), alice.me.clientId),
    );
    await call(alice, bob.me.clientId);
    await connected(alice);
    await connected(bob);
    await say(alice, bob, 'after the kill');
    await say(bob, alice, 'welcome back');
    await hangup(bob, alice);
  } finally {
    clusterCommand('start-node', String(node));
  }
  for (const page of [alice, bob]) {
    assert.deepEqual(page.problems, [], 'no page errors');
    await page.evaluate(() => window.e2e.client.close());
    await page.context().close();
  }
});
