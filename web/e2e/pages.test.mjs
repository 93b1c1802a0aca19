// The demo pages as a person uses them, in Chromium on a phone-sized screen: sign in with a
// password on one node and paste a token on another, join a room, call, answer, chat over the
// data channel both ways, hang up; and the ICE page with real TURN credentials that the
// cluster's coturn accepts. A screenshot of each step is saved among the artifacts.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { addUser, cluster, launch, mintToken, nodesWith, open, screenshot, until } from './support.mjs';

let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

const PASSWORD = 'e2e-Pages-password-1';

test('the index page links to every demo page', async () => {
  const page = await open(browser, `${cluster.url}/demo`);
  assert.equal(new URL(page.url()).pathname, '/demo/');
  for (const link of ['#link-call', '#link-ice']) {
    assert.ok(await page.locator(link).isVisible(), link);
  }
  await screenshot(page, '01-index');
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test('two people call each other on the call page, chat, and hang up', async () => {
  addUser('e2e-grace', PASSWORD);

  // Grace signs in with her password on node 1.
  const grace = await open(browser, `${cluster.nodes[0].url}/demo/call.html`);
  await screenshot(grace, '02-call-sign-in');
  await grace.fill('#username', 'e2e-grace');
  await grace.fill('#password', PASSWORD);
  await grace.click('#login');
  await grace.locator('#status[data-state="open"]').waitFor();
  await grace.fill('#room', 'e2e-pages');
  await grace.click('#join');
  await grace.locator('#alone').waitFor();
  await screenshot(grace, '03-call-joined-alone');

  // Heidi pastes a token on node 2.
  const heidi = await open(browser, `${cluster.nodes[1].url}/demo/call.html`);
  await heidi.fill('#token', mintToken('e2e-heidi', 'Heidi'));
  await heidi.click('#use-token');
  await heidi.locator('#status[data-state="open"]').waitFor();
  await heidi.fill('#room', 'e2e-pages');
  await heidi.click('#join');
  await heidi.locator('#members li').waitFor();
  assert.equal(await heidi.locator('#members li .who').first().innerText().then((t) => t.split('\n')[0]), 'e2e-grace');
  await grace.locator('#members li').waitFor();
  await screenshot(grace, '04-call-members');
  // Grace's password is gone from the form once used.
  assert.equal(await grace.inputValue('#password'), '');

  await grace.click('#members li .call-button');
  await heidi.locator('#ringing:not(.hidden)').waitFor();
  await screenshot(heidi, '05-call-ringing');
  await heidi.click('#accept');
  for (const page of [grace, heidi]) {
    await page.locator('#chat-send:not([disabled])').waitFor();
  }
  // Fake camera and microphone: each side shows the other's video.
  for (const page of [grace, heidi]) {
    await until('the remote video to play', () =>
      page.evaluate(() => {
        const video = document.getElementById('remote-video');
        return !video.classList.contains('hidden') && video.readyState >= 2 && video.videoWidth > 0;
      }),
    );
  }

  await grace.fill('#chat-text', 'Hi Heidi, over the data channel');
  await grace.click('#chat-send');
  await heidi.locator('#chat .theirs', { hasText: 'Hi Heidi, over the data channel' }).waitFor();
  await heidi.fill('#chat-text', 'Hi Grace!');
  await heidi.click('#chat-send');
  await grace.locator('#chat .theirs', { hasText: 'Hi Grace!' }).waitFor();
  await screenshot(grace, '06-call-chat');
  await screenshot(heidi, '07-call-chat-other-side');

  await grace.click('#hangup');
  await heidi.locator('#chat .note', { hasText: 'hung up' }).waitFor();
  await screenshot(heidi, '08-call-hung-up');
  assert.equal(await heidi.locator('#call-state').innerText(), 'ended');

  await grace.click('#signout');
  await grace.locator('#signin:not(.hidden)').waitFor();
  for (const page of [grace, heidi]) {
    assert.deepEqual(page.problems, [], 'no page errors');
  }
  await heidi.context().close();
  await grace.context().close();
  await until('every connection to be gone', async () => (await nodesWith(0)).length === 3);
});

test('the ICE page shows TURN credentials that the TURN server accepts', async () => {
  addUser('e2e-ivan', PASSWORD);
  const page = await open(browser, `${cluster.url}/demo/ice.html`);
  await page.fill('#username', 'e2e-ivan');
  await page.fill('#password', PASSWORD);
  await page.click('#login');
  await page.locator('#result:not(.hidden)').waitFor();
  const servers = await page.evaluate(() => window.switchboardDemo.answer.iceServers);
  const turn = servers.find((s) => s.urls.some((u) => u.startsWith('turn:')));
  assert.ok(turn, JSON.stringify(servers));
  // `<expiry>:<user id>`: the account's id, not its name.
  assert.match(turn.username, /^\d+:[0-9a-f-]{36}$/);
  assert.ok(Number(turn.username.split(':')[0]) > Date.now() / 1000);
  assert.ok(turn.credential.length > 20);
  await page.click('#probe');
  await until('candidate gathering to complete', () => page.evaluate(() => window.switchboardDemo.gathered));
  const types = await page.evaluate(() => window.switchboardDemo.candidates.map((c) => c.type));
  assert.ok(types.includes('relay'), `a relay candidate from coturn: ${types}`);
  await screenshot(page, '09-ice-servers');
  assert.deepEqual(page.problems, []);
  await page.context().close();
});
