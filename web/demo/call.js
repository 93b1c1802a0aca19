// The call page: sign in or paste a token, join a room, see who is there, call someone
// (audio and video when this device has them, a data channel always), chat, hang up.

import { wireSignIn } from './signin.js';
import { SwitchboardClient } from './switchboard.js';

const $ = (id) => document.getElementById(id);
const show = (id, visible = true) => $(id).classList.toggle('hidden', !visible);

/** The page's state, for the end-to-end tests and the curious (no secrets in it). */
const demo = { client: null, room: null, call: null, incoming: null, chat: [] };
window.switchboardDemo = demo;

function setStatus(text, state) {
  $('status').textContent = text;
  $('status').dataset.state = state;
}

function describeState({ state, attempt, delayMs, error }) {
  switch (state) {
    case 'open':
      return `connected as ${demo.client.clientId}`;
    case 'connecting':
      return 'connecting…';
    case 'reconnecting':
      return delayMs == null
        ? 'reconnecting…'
        : `reconnecting in ${(delayMs / 1000).toFixed(1)} s (attempt ${attempt ?? 1})`;
    default:
      return error ? `disconnected: ${error.message}` : 'disconnected';
  }
}

function newClient(options) {
  const client = new SwitchboardClient(options);
  client.on('state', (detail) => setStatus(describeState(detail), detail.state));
  client.on('users_in_room', () => renderMembers());
  client.on('user_joined', () => renderMembers());
  client.on('user_left', () => renderMembers());
  client.on('incoming', (incoming) => ring(incoming));
  return client;
}

async function start(client) {
  demo.client = client;
  $('signin-error').textContent = '';
  try {
    await client.connect();
  } catch (e) {
    $('signin-error').textContent = `Could not connect: ${e.message}`;
    demo.client = null;
    return;
  }
  show('signin', false);
  show('session');
  $('room').focus();
}

wireSignIn(start, newClient);

$('signout').addEventListener('click', async () => {
  const client = demo.client;
  demo.client = null;
  demo.room = null;
  endCall();
  if (client) await client.logout().catch(() => client.close());
  show('session', false);
  show('people', false);
  show('signin');
  setStatus('not connected', 'closed');
});

$('join-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const room = $('room').value.trim();
  $('room-error').textContent = '';
  try {
    if (demo.room && demo.room !== room) demo.client.leave(demo.room);
    await demo.client.join(room);
  } catch (e) {
    $('room-error').textContent = `Could not join ${room}: ${e.code ?? e.message}`;
    return;
  }
  demo.room = room;
  $('room-name').textContent = room;
  show('people');
  renderMembers();
});

function renderMembers() {
  if (!demo.client || !demo.room) return;
  const members = demo.client.members(demo.room);
  const list = $('members');
  list.replaceChildren(
    ...members.map((member) => {
      const item = document.createElement('li');
      item.dataset.clientId = member.client_id;
      const who = document.createElement('span');
      who.className = 'who';
      who.textContent = member.username;
      const id = document.createElement('small');
      id.textContent = member.client_id;
      who.append(id);
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = 'Call';
      button.className = 'call-button';
      button.disabled = demo.call != null;
      button.addEventListener('click', () => placeCall(member));
      item.append(who, button);
      return item;
    }),
  );
  show('alone', members.length === 0);
}

/** Camera and microphone when the device has them and allows them; otherwise none. */
async function localMedia() {
  if (!navigator.mediaDevices?.getUserMedia) return null;
  for (const constraints of [{ audio: true, video: true }, { audio: true }]) {
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch {
      // Try with less, then without media: the data channel works regardless.
    }
  }
  return null;
}

async function placeCall(member) {
  if (demo.call) return;
  const stream = await localMedia();
  const call = await demo.client.call(member.client_id, { stream: stream ?? undefined });
  attach(call, member.username, stream);
}

function ring(incoming) {
  if (demo.call || demo.incoming) {
    incoming.reject('busy');
    return;
  }
  demo.incoming = incoming;
  $('caller').textContent = incoming.peer.username ?? incoming.peer.userId ?? 'Someone';
  show('ringing');
  incoming.on('cancel', () => {
    if (demo.incoming === incoming) {
      demo.incoming = null;
      show('ringing', false);
    }
  });
}

$('accept').addEventListener('click', async () => {
  const incoming = demo.incoming;
  if (!incoming) return;
  demo.incoming = null;
  show('ringing', false);
  const stream = await localMedia();
  const call = await incoming.accept({ stream: stream ?? undefined });
  attach(call, incoming.peer.username ?? incoming.peer.userId, stream);
});

$('decline').addEventListener('click', () => {
  demo.incoming?.reject();
  demo.incoming = null;
  show('ringing', false);
});

function note(text, kind) {
  const line = document.createElement('p');
  line.className = kind;
  line.textContent = text;
  $('chat').append(line);
  $('chat').scrollTop = $('chat').scrollHeight;
}

function attach(call, peerName, stream) {
  demo.call = call;
  demo.chat = [];
  $('chat').replaceChildren();
  $('peer-name').textContent = peerName;
  $('call-state').textContent = 'connecting';
  show('call');
  renderMembers();
  if (stream) {
    $('local-video').srcObject = stream;
    show('local-video');
  }
  call.on('state', ({ state }) => {
    $('call-state').textContent = state;
  });
  call.on('open', () => {
    $('chat-send').disabled = false;
    note('data channel open', 'note');
  });
  call.on('message', ({ data }) => {
    demo.chat.push({ from: 'peer', text: data });
    note(`${peerName}: ${data}`, 'theirs');
  });
  call.on('track', ({ streams }) => {
    if (streams[0] && $('remote-video').srcObject !== streams[0]) {
      $('remote-video').srcObject = streams[0];
      show('remote-video');
    }
  });
  call.on('hangup', ({ reason, remote }) => {
    note(remote ? `${peerName} hung up (${reason})` : `call ended (${reason})`, 'note');
    endCall(false);
  });
}

function endCall(hangup = true) {
  const call = demo.call;
  demo.call = null;
  if (call && hangup) call.hangup();
  for (const id of ['local-video', 'remote-video']) {
    const video = $(id);
    video.srcObject?.getTracks?.().forEach((track) => id === 'local-video' && track.stop());
    video.srcObject = null;
    show(id, false);
  }
  $('chat-send').disabled = true;
  $('call-state').textContent = 'ended';
  renderMembers();
}

$('hangup').addEventListener('click', () => {
  endCall();
  show('call', false);
});

$('chat-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('chat-text').value;
  if (!text || !demo.call?.send(text)) return;
  demo.chat.push({ from: 'me', text });
  note(`me: ${text}`, 'mine');
  $('chat-text').value = '';
});
