// The ICE page: the STUN and TURN servers this node hands out, with the signed-in user's
// time-limited TURN credentials (GET /api/webrtc/ice-servers), as an RTCPeerConnection
// configuration, and a check that gathers candidates through them.

import { wireSignIn } from './signin.js';

const $ = (id) => document.getElementById(id);
const show = (id, visible = true) => $(id).classList.toggle('hidden', !visible);

const page = { client: null, answer: null, candidates: [] };
window.switchboardDemo = page;

async function fetchServers() {
  $('result-error').textContent = '';
  const answer = await page.client.api('/api/webrtc/ice-servers');
  page.answer = answer;
  render(answer);
}

function render(answer) {
  const servers = answer.ice_servers ?? answer.iceServers ?? [];
  const rows = servers.map((server) => {
    const row = document.createElement('tr');
    const urls = Array.isArray(server.urls) ? server.urls : [server.urls];
    for (const text of [urls.join('\n'), server.username ?? '', server.credential ?? '']) {
      const cell = document.createElement('td');
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  });
  $('servers').replaceChildren(...rows);
  // TURN REST API usernames are `<expiry>:<user>`, the expiry in Unix seconds.
  const expiry = servers
    .map((server) => Number(String(server.username ?? '').split(':')[0]))
    .find((seconds) => Number.isFinite(seconds) && seconds > 0);
  const expires = expiry ? `; the TURN credentials expire at ${new Date(expiry * 1000).toLocaleString()}` : '';
  $('summary').textContent = `${servers.length} server entr${servers.length === 1 ? 'y' : 'ies'}${expires}.`;
  $('config').textContent = JSON.stringify({ iceServers: servers }, null, 2);
}

async function start(client) {
  page.client = client;
  $('signin-error').textContent = '';
  try {
    await fetchServers();
  } catch (e) {
    $('signin-error').textContent = `Could not fetch the ICE servers: ${e.message}`;
    page.client = null;
    return;
  }
  show('signin', false);
  show('result');
}

wireSignIn(start);

$('refresh').addEventListener('click', () =>
  fetchServers().catch((e) => {
    $('result-error').textContent = e.message;
  }),
);

$('probe').addEventListener('click', async () => {
  const servers = page.answer?.ice_servers ?? page.answer?.iceServers ?? [];
  const pc = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: 'all' });
  page.candidates = [];
  $('candidates').replaceChildren();
  pc.createDataChannel('probe');
  pc.addEventListener('icecandidate', ({ candidate }) => {
    if (!candidate || !candidate.candidate) return;
    page.candidates.push({ type: candidate.type, protocol: candidate.protocol });
    const item = document.createElement('li');
    item.textContent = `${candidate.type} ${candidate.protocol} ${candidate.address ?? ''}:${candidate.port ?? ''}`;
    $('candidates').append(item);
  });
  pc.addEventListener('icegatheringstatechange', () => {
    if (pc.iceGatheringState === 'complete') {
      page.gathered = true;
      pc.close();
    }
  });
  page.gathered = false;
  await pc.setLocalDescription(await pc.createOffer());
});
