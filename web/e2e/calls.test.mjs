// A QR call between two real browsers' pages (docs/calls.md): the owner's page, on node 1,
// logs in, generates a code and waits on `/ws` for the call; the scanner's page, on node 3,
// is given the code, validates it and calls without an account. The owner answers, both open
// the call's signaling socket on their own node, and an RTCDataChannel connects between them.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { addUser, cluster, launch, screenshot, until } from './support.mjs';

let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

/** A page of `base`'s origin (the pages' CSP is not what this test is about). */
async function page(base) {
  const context = await browser.newContext({ bypassCSP: true });
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  await page.goto(`${base}/demo/index.html`);
  return page;
}

/** In a page: the call's peer connection (host candidates only), signalling over `ws`, as the
 * side that offers or not. */
const peerScript = () => {
  window.callPeer = (ws, offers) => {
    const pc = new RTCPeerConnection({ iceServers: [] });
    const state = { open: false, received: [], frames: [] };
    window.callState = state;
    const ready = (channel) => {
      channel.onopen = () => {
        state.open = true;
        channel.send(offers ? 'hello from the scanner' : 'hello from the owner');
      };
      channel.onmessage = (e) => state.received.push(e.data);
    };
    pc.onicecandidate = (e) => {
      if (e.candidate) ws.send(JSON.stringify({ type: 'ice-candidate', payload: e.candidate.toJSON() }));
    };
    if (offers) ready(pc.createDataChannel('call'));
    else pc.ondatachannel = (e) => ready(e.channel);
    // One frame at a time: a candidate must not overtake the description before it.
    let chain = Promise.resolve();
    ws.onmessage = (event) => {
      chain = chain.then(() => handle(JSON.parse(event.data))).catch((e) => state.frames.push(`error: ${e}`));
    };
    const handle = async (frame) => {
      state.frames.push(frame.type);
      if (frame.type === 'offer') {
        await pc.setRemoteDescription(frame.payload);
        const answer = await pc.createAnswer();
        await pc.setLocalDescription(answer);
        ws.send(JSON.stringify({ type: 'answer', payload: pc.localDescription.toJSON() }));
      } else if (frame.type === 'answer') {
        await pc.setRemoteDescription(frame.payload);
      } else if (frame.type === 'ice-candidate') {
        await pc.addIceCandidate(frame.payload);
      } else if (frame.type === 'fingerprints') {
        state.fingerprint = frame.encryptionFingerprint;
      } else if (offers && (frame.type === 'peer-joined' || (frame.type === 'session' && frame.peerConnected))) {
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        ws.send(JSON.stringify({ type: 'offer', payload: pc.localDescription.toJSON() }));
      }
    };
    return pc;
  };
};

test('a scanner calls a QR code owner and a data channel connects across nodes', async () => {
  const name = `qr${Date.now()}`;
  addUser(name, 'correct horse battery');
  const owner = await page(cluster.nodes[0].url);
  const scanner = await page(cluster.nodes[2].url);
  await owner.evaluate(peerScript);
  await scanner.evaluate(peerScript);

  const code = await owner.evaluate(async (name) => {
    const post = (path, body, token) =>
      fetch(path, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify(body),
      }).then((r) => r.json());
    const login = await post('/api/v1/auth/login', { username: name, password: 'correct horse battery' });
    const generated = await post('/api/v1/tokens/generate', { userId: login.userId }, login.token);
    window.owner = { token: login.token, post };
    const ws = new WebSocket(`${location.origin.replace('http', 'ws')}/ws?token=${login.token}`);
    // One frame at a time: a candidate must not overtake the description before it.
    let chain = Promise.resolve();
    ws.onmessage = (event) => {
      chain = chain.then(() => handle(JSON.parse(event.data))).catch((e) => state.frames.push(`error: ${e}`));
    };
    const handle = async (frame) => {
      if (frame.type !== 'incoming_call') return;
      const answered = await post(`/api/v1/calls/${frame.sessionId}/accept`, {}, login.token);
      const url = `${location.origin.replace('http', 'ws')}${answered.signalingEndpoint}?token=${answered.signalingToken}`;
      window.callPeer(new WebSocket(url), false);
    };
    await new Promise((resolve) => ws.addEventListener('message', resolve, { once: true }));
    return generated.qrCodeData;
  }, name);
  assert.match(code, /^pqc:1:[A-Za-z0-9_-]{43}:[0-9a-f]{8}$/);

  const started = await scanner.evaluate(async (code) => {
    const post = (path, body) =>
      fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }).then(
        (r) => r.json(),
      );
    const valid = await post('/api/v1/tokens/validate', { token: code });
    const call = await post('/api/v1/calls/initiate', { scannedToken: code });
    const url = `${location.origin.replace('http', 'ws')}${call.signalingEndpoint}?token=${call.signalingToken}`;
    window.callPeer(new WebSocket(url), true);
    return { valid, status: call.status, anonymousId: call.anonymousId };
  }, code);
  assert.deepEqual(started.valid, { valid: true, canInitiateCall: true });
  assert.equal(started.status, 'ringing');
  assert.match(started.anonymousId, /^anon_/);

  for (const side of [scanner, owner]) {
    await until('the data channel to open and carry a message', () =>
      side.evaluate(() => window.callState?.open && window.callState.received.length > 0),
    );
  }
  assert.deepEqual(await scanner.evaluate(() => window.callState.received), ['hello from the owner']);
  assert.deepEqual(await owner.evaluate(() => window.callState.received), ['hello from the scanner']);
  const prints = await Promise.all(
    [scanner, owner].map((p) => until('fingerprints', () => p.evaluate(() => window.callState.fingerprint))),
  );
  assert.equal(prints[0], prints[1]);
  await screenshot(scanner, 'calls-scanner');
  for (const p of [owner, scanner]) assert.deepEqual(p.problems, []);
});
