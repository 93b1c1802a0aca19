// Test doubles for the Switchboard client: a manual clock, an in-memory server that speaks the
// wire protocol of docs/protocol.md over fake WebSockets, a fake fetch, and a fake WebRTC stack
// whose peer connections follow the signaling state machine closely enough to exercise perfect
// negotiation (no implicit rollback: a remote offer in have-local-offer throws).

/** Lets promise chains and queued microtasks run. */
export async function settle(rounds = 30) {
  for (let i = 0; i < rounds; i += 1) await new Promise((resolve) => setImmediate(resolve));
}

// ---------------------------------------------------------------------------------------------
// Clock
// ---------------------------------------------------------------------------------------------

export class FakeClock {
  constructor(start = 1_700_000_000_000) {
    this.time = start;
    this.seq = 0;
    /** @type {Map<number, {at: number, fn: () => void}>} */
    this.timers = new Map();
    this.now = () => this.time;
    this.setTimeout = (fn, ms = 0) => {
      const id = ++this.seq;
      this.timers.set(id, { at: this.time + Math.max(0, Number(ms) || 0), fn });
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
  }

  /** Delays (from now) of the pending timers, sorted. */
  pending() {
    return [...this.timers.values()].map((t) => t.at - this.time).sort((a, b) => a - b);
  }

  /** Moves time forward by `ms`, running due timers in order and settling between them. */
  async advance(ms) {
    const end = this.time + ms;
    for (;;) {
      await settle();
      let next = null;
      for (const [id, t] of this.timers) {
        if (t.at <= end && (!next || t.at < next.t.at || (t.at === next.t.at && id < next.id))) {
          next = { id, t };
        }
      }
      if (!next) break;
      this.timers.delete(next.id);
      this.time = next.t.at;
      next.t.fn();
    }
    this.time = end;
    await settle();
  }
}

/** A random source that replays `values` (then repeats the last one). */
export function sequence(...values) {
  let i = 0;
  return () => values[Math.min(i++, values.length - 1)];
}

// ---------------------------------------------------------------------------------------------
// Server and WebSocket
// ---------------------------------------------------------------------------------------------

const ROOM_SIGNALS = new Set(['offer', 'answer', 'ice_candidate', 'signal']);
const USER_SIGNALS = new Set(['webrtc_offer', 'webrtc_answer', 'webrtc_ice_candidate']);
/** Frames the server writes itself: never numbered with `seq`. */
const ANSWERS = new Set([
  'auth_required',
  'auth_success',
  'resumed',
  'resume_failed',
  'users_in_room',
  'pong',
  'error',
]);

/**
 * An in-memory Switchboard node. Tokens are looked up in `tokens`: a token maps to
 * `{sub, name}` or to `{error: 'token_expired' | 'unauthorized' | ...}`.
 *
 * With `resume: true` every connection is a session, as with a `resume_window`:
 * `auth_success` carries `session` and `resume_token`, delivered frames carry `seq`, and a
 * connection lost without a close (`lose`, `sever`, a 1006 or 4003 from `close`) is parked:
 * still in its rooms, what is sent to it kept, until `resume` takes it up again or `expire`
 * ends it. A close from the client or any other close from the server ends it.
 */
export class FakeServer {
  constructor({ iceServers, resume = false } = {}) {
    /** @type {Map<string, any>} */
    this.tokens = new Map();
    /** @type {ServerConn[]} */
    this.conns = [];
    /** Every socket ever opened: `{url, conn}`. */
    this.sockets = [];
    /** Frames received, in order: `{conn, frame}`. */
    this.received = [];
    /** When true, new sockets fail at once with 1006 (node down). */
    this.down = false;
    /** ICE servers sent in auth_success (undefined: none). */
    this.iceServers = iceServers;
    /** When true, frames are recorded and not answered (a dead link). */
    this.mute = false;
    /** How frames travel to clients: at once by default; tests may add latency. */
    this.schedule = (fn) => queueMicrotask(fn);
    /** Room member cap. */
    this.roomCap = 10;
    /** Whether connections are sessions that can be resumed. */
    this.resume = resume;
    /** When set, `resume` is answered `resume_failed` with this reason. */
    this.refuseResume = null;
    this.sessionSeq = 0;
    const server = this;

    /** The WebSocket constructor to inject. */
    this.WebSocket = class FakeWebSocket {
      static CONNECTING = 0;
      static OPEN = 1;
      static CLOSING = 2;
      static CLOSED = 3;

      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.onopen = null;
        this.onmessage = null;
        this.onclose = null;
        this.onerror = null;
        /** Frames this socket sent, parsed. */
        this.sent = [];
        this.conn = null;
        server.sockets.push(this);
        queueMicrotask(() => server.accept(this));
      }

      send(text) {
        if (this.readyState === 0) throw new Error('InvalidStateError: still connecting');
        if (this.readyState !== 1) return;
        const frame = JSON.parse(text);
        this.sent.push(frame);
        if (this.conn && !this.severed) server.onFrame(this.conn, frame);
      }

      close(code = 1000, reason = '') {
        if (this.readyState >= 2) return;
        this.readyState = 2;
        // A severed link carries no close frame: the server never hears of it.
        const conn = this.severed ? null : this.conn;
        queueMicrotask(() => {
          if (conn) server.drop(conn);
          this.readyState = 3;
          this.onclose?.({ code, reason, wasClean: !this.severed });
        });
      }

      /** The server side's end of the socket. */
      _serverClose(code, reason) {
        if (this.readyState === 3 || this.serverClosed) return;
        this.serverClosed = true;
        // After the frames sent before it, like a real socket.
        server.schedule(() => {
          this.readyState = 3;
          this.onclose?.({ code, reason, wasClean: code !== 1006 });
        });
      }

      _deliver(frame) {
        if (this.readyState !== 1 || this.serverClosed || this.severed) return;
        const text = JSON.stringify(frame);
        server.schedule(() => {
          if (this.readyState === 1) this.onmessage?.({ data: text });
        });
      }
    };
  }

  /** Adds a valid token for `sub`. */
  grant(token, sub, name = sub) {
    this.tokens.set(token, { sub, name });
    return token;
  }

  accept(ws) {
    if (this.down) {
      ws._serverClose(1006, '');
      return;
    }
    ws.readyState = 1;
    ws.onopen?.({});
    const conn = new ServerConn(this, ws);
    ws.conn = conn;
    this.conns.push(conn);
    const url = new URL(ws.url);
    const token = url.searchParams.get('token');
    conn.claimed = url.searchParams.get('client_id') ?? url.searchParams.get('clientId');
    if (token !== null) this.authenticate(conn, token, conn.claimed);
    else conn.send({ type: 'auth_required' });
  }

  onFrame(conn, frame) {
    this.received.push({ conn, frame });
    if (this.mute) return;
    if (!conn.user) {
      if (frame.type === 'auth_token') this.authenticate(conn, frame.token, frame.clientId);
      else if (frame.type === 'resume') this.resumeSession(conn, frame);
      else conn.send({ type: 'error', code: 'unauthorized', message: 'authenticate first' });
      return;
    }
    if (frame.type === 'resume' || frame.type === 'auth_token') {
      return conn.send({ type: 'error', code: 'already_authenticated', message: 'already' });
    }
    if (frame.type === 'ping') return conn.send({ type: 'pong' });
    if (frame.type === 'join') return this.join(conn, frame.room);
    if (frame.type === 'leave') return this.leave(conn, frame.room, true);
    if (ROOM_SIGNALS.has(frame.type)) return this.roomSignal(conn, frame);
    if (USER_SIGNALS.has(frame.type)) return this.userSignal(conn, frame);
    return conn.send({ type: 'error', code: 'unknown_type', message: 'unknown type' });
  }

  authenticate(conn, token, clientId) {
    const grant = this.tokens.get(token);
    if (!grant || grant.error) {
      const code = grant?.error ?? 'unauthorized';
      conn.send({ type: 'error', code, message: `refused: ${code}` });
      return this.close(conn, 1008, 'policy violation');
    }
    const id =
      typeof clientId === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(clientId)
        ? clientId
        : `gen-${this.conns.length}-${Math.floor(Math.random() * 1e9)}`;
    const holder = this.conns.find((c) => c !== conn && c.user && c.clientId === id);
    if (holder && holder.user.sub !== grant.sub) {
      conn.send({ type: 'error', code: 'client_id_taken', message: 'taken' });
      return this.close(conn, 1008, 'policy violation');
    }
    if (holder) this.close(holder, 4001, 'replaced');
    conn.user = grant;
    conn.clientId = id;
    const success = { type: 'auth_success', user: grant.name, user_id: grant.sub, client_id: id };
    if (this.iceServers) success.ice_servers = this.iceServers;
    if (this.resume) {
      this.sessionSeq += 1;
      conn.session = {
        id: `session-${String(this.sessionSeq).padStart(14, '0')}`,
        token: `resume-token-${this.sessionSeq}-${Math.floor(Math.random() * 1e9)}`,
      };
      Object.assign(success, { session: conn.session.id, resume_token: conn.session.token });
    }
    conn.send(success);
  }

  /** A `resume` on the unauthenticated connection `fresh`. */
  resumeSession(fresh, frame) {
    const { session, resume_token: token, last_seq: lastSeq } = frame;
    if (typeof session !== 'string' || typeof token !== 'string') {
      return fresh.send({ type: 'error', code: 'missing_field', message: 'session?' });
    }
    if (!Number.isSafeInteger(lastSeq) || lastSeq < 0) {
      return fresh.send({ type: 'error', code: 'invalid_field', message: 'last_seq?' });
    }
    const parked = this.conns.find((c) => c.parked && c.session?.id === session);
    const reason = !this.resume
      ? 'disabled'
      : this.refuseResume
        ? this.refuseResume
        : !parked
          ? 'expired'
          : parked.session.token !== token
            ? 'invalid_token'
            : lastSeq > parked.seq
              ? 'overflow'
              : null;
    if (reason) {
      return fresh.send({ type: 'resume_failed', reason, message: `cannot resume: ${reason}` });
    }
    // The session takes the new socket; the unauthenticated connection is gone.
    this.conns.splice(this.conns.indexOf(fresh), 1);
    const { ws } = fresh;
    ws.conn = parked;
    parked.ws = ws;
    parked.parked = false;
    parked.send({
      type: 'resumed',
      session: parked.session.id,
      client_id: parked.clientId,
      rooms: [...parked.rooms],
    });
    parked.replayed = parked.numbered.filter((f) => f.seq > lastSeq);
    for (const f of parked.replayed) ws._deliver(f);
  }

  members(room) {
    return this.conns.filter((c) => c.rooms.has(room));
  }

  join(conn, room) {
    const others = this.members(room).filter((c) => c !== conn);
    if (!conn.rooms.has(room) && others.length >= this.roomCap) {
      return conn.send({
        type: 'error',
        code: 'room_full',
        message: 'full',
        room,
        max: this.roomCap,
      });
    }
    const fresh = !conn.rooms.has(room);
    conn.rooms.add(room);
    conn.send({ type: 'users_in_room', room, users: others.map((c) => c.view()) });
    if (fresh) for (const c of others) c.send({ type: 'user_joined', room, ...conn.view() });
  }

  leave(conn, room, answer) {
    if (!conn.rooms.has(room)) {
      if (answer) conn.send({ type: 'error', code: 'not_in_room', message: 'not in room', room });
      return;
    }
    conn.rooms.delete(room);
    for (const c of this.members(room)) c.send({ type: 'user_left', room, ...conn.view() });
  }

  roomSignal(conn, frame) {
    let room = frame.room;
    if (room === undefined) {
      if (conn.rooms.size !== 1) {
        return conn.send({
          type: 'error',
          code: conn.rooms.size ? 'missing_field' : 'not_in_room',
          message: 'room?',
        });
      }
      [room] = conn.rooms;
    }
    if (!conn.rooms.has(room))
      return conn.send({ type: 'error', code: 'not_in_room', message: 'no', room });
    const out = { ...frame };
    for (const k of ['to', 'from', 'username', 'user_id', 'room', 'sender_user_id', 'from_user_id'])
      delete out[k];
    Object.assign(out, {
      from: conn.clientId,
      username: conn.user.name,
      user_id: conn.user.sub,
      room,
    });
    const others = this.members(room).filter((c) => c !== conn);
    if (frame.to !== undefined) {
      const peer = others.find((c) => c.clientId === frame.to);
      if (!peer) {
        return conn.send({
          type: 'error',
          code: 'peer_not_found',
          message: 'gone',
          room,
          to: frame.to,
        });
      }
      return peer.send(out);
    }
    for (const c of others) c.send(out);
  }

  userSignal(conn, frame) {
    const targets = this.conns.filter(
      (c) => c !== conn && c.user && c.user.sub === frame.target_user_id,
    );
    if (!targets.length) {
      return conn.send({
        type: 'error',
        code: 'user_offline',
        message: 'offline',
        target_user_id: frame.target_user_id,
      });
    }
    const out = { ...frame };
    for (const k of ['sender_user_id', 'from_user_id', 'from', 'username', 'user_id', 'room'])
      delete out[k];
    Object.assign(out, {
      sender_user_id: conn.user.sub,
      from_user_id: conn.user.sub,
      from: conn.clientId,
      username: conn.user.name,
    });
    for (const c of targets) c.send(out);
  }

  /**
   * The server closes `conn` with `code`. A session parks on 1006 (no close frame) and 4003
   * (silent past the idle timeout); every other close ends it.
   */
  close(conn, code, reason = '') {
    if (conn.session && !conn.parked && (code === 1006 || code === 4003)) {
      this.park(conn);
    } else {
      this.drop(conn);
    }
    conn.ws._serverClose(code, reason);
  }

  /** The link drops: the client sees 1006, the session (if any) is parked. */
  lose(conn) {
    this.close(conn, 1006, '');
  }

  /**
   * The link goes dead and nobody is told: frames vanish both ways, no close reaches either
   * side (the client notices by its keepalive); the server parks the session.
   */
  sever(conn) {
    conn.ws.severed = true;
    if (conn.session) this.park(conn);
    else this.drop(conn);
  }

  /** Keeps `conn`'s session for a resume: in its rooms, its frames numbered and kept. */
  park(conn) {
    conn.parked = true;
    conn.ws.conn = null;
  }

  /** A parked session's window ends: it leaves. */
  expire(conn) {
    conn.parked = false;
    this.drop(conn);
  }

  /** A drain: the notice (with the session, for `shutdown`), then 1012. */
  drain(conn, reason = 'shutdown') {
    const notice = { type: 'reconnect', reason };
    if (conn.session && reason === 'shutdown') {
      Object.assign(notice, { session: conn.session.id, resume_token: conn.session.token });
    }
    conn.send(notice);
    this.close(conn, 1012, 'service restart');
  }

  drop(conn) {
    const i = this.conns.indexOf(conn);
    if (i < 0) return;
    this.conns.splice(i, 1);
    for (const room of [...conn.rooms]) this.leave(conn, room, false);
  }

  /** The live connection of client id `id`. */
  conn(id) {
    return this.conns.find((c) => c.clientId === id);
  }

  /** Frames of `type` the server received, in order. */
  frames(type) {
    return this.received.filter((r) => r.frame.type === type).map((r) => r.frame);
  }
}

class ServerConn {
  constructor(server, ws) {
    this.server = server;
    this.ws = ws;
    this.user = null;
    this.clientId = null;
    this.claimed = null;
    this.rooms = new Set();
    /** Frames this connection was sent. */
    this.out = [];
    /** The session (`{id, token}`), when the server hands out sessions. */
    this.session = null;
    /** Whether the session waits for a resume. */
    this.parked = false;
    /** The last `seq` given out, and every numbered frame. */
    this.seq = 0;
    this.numbered = [];
    /** The frames the last resume replayed. */
    this.replayed = [];
  }

  send(frame) {
    let out = frame;
    if (this.session && !ANSWERS.has(frame.type)) {
      this.seq += 1;
      out = { seq: this.seq, ...frame };
      this.numbered.push(out);
    }
    this.out.push(out);
    if (!this.parked) this.ws._deliver(out);
  }

  view() {
    return { client_id: this.clientId, username: this.user.name, user_id: this.user.sub };
  }
}

// ---------------------------------------------------------------------------------------------
// fetch
// ---------------------------------------------------------------------------------------------

/**
 * A fetch answering from `routes`: `"METHOD /path": (request) => ({status, body})`.
 * Every call is recorded in `fetch.calls` as `{method, path, headers, body}`.
 */
export function fakeFetch(routes) {
  const fetch = async (url, init = {}) => {
    const u = new URL(url);
    const method = init.method ?? 'GET';
    const request = {
      method,
      path: u.pathname,
      url,
      headers: init.headers ?? {},
      body: init.body === undefined ? undefined : JSON.parse(init.body),
    };
    fetch.calls.push(request);
    const route = routes[`${method} ${u.pathname}`];
    const answer = route
      ? await route(request)
      : { status: 404, body: { code: 'not_found', detail: 'no route' } };
    const status = answer.status ?? 200;
    return {
      ok: status >= 200 && status < 300,
      status,
      headers: new Map(),
      json: async () => answer.body,
    };
  };
  fetch.calls = [];
  return fetch;
}

// ---------------------------------------------------------------------------------------------
// WebRTC
// ---------------------------------------------------------------------------------------------

function domError(name, message) {
  const e = new Error(message);
  e.name = name;
  return e;
}

function event(type, props = {}) {
  return Object.assign(new Event(type), props);
}

/**
 * A fake WebRTC stack. Peer connections find each other through the descriptions they
 * exchange (the SDP names its connection); a pair connects when both are stable with each
 * other's current descriptions and each has received at least one of the other's candidates.
 */
export function fakeWebRTC() {
  /** @type {Map<string, FakePeerConnection>} */
  const registry = new Map();
  const instances = [];
  let seq = 0;

  class FakeDataChannel extends EventTarget {
    constructor(pc, label, init = {}) {
      super();
      this.pc = pc;
      this.label = label;
      this.id = init.id ?? null;
      this.negotiated = Boolean(init.negotiated);
      this.readyState = 'connecting';
      this.peer = null;
      this.sentMessages = [];
    }

    send(data) {
      if (this.readyState !== 'open') throw domError('InvalidStateError', 'channel not open');
      this.sentMessages.push(data);
      const peer = this.peer;
      queueMicrotask(() => {
        if (peer && peer.readyState === 'open') peer.dispatchEvent(event('message', { data }));
      });
    }

    close() {
      if (this.readyState === 'closed') return;
      this.readyState = 'closed';
      const peer = this.peer;
      queueMicrotask(() => {
        this.dispatchEvent(event('close'));
        if (peer && peer.readyState !== 'closed') {
          peer.readyState = 'closed';
          peer.dispatchEvent(event('close'));
        }
      });
    }

    _open(peer) {
      this.peer = peer;
      this.readyState = 'open';
      queueMicrotask(() => this.dispatchEvent(event('open')));
    }
  }

  class FakePeerConnection extends EventTarget {
    constructor(config = {}) {
      super();
      this.id = `pc${++seq}`;
      registry.set(this.id, this);
      instances.push(this);
      this.config = config;
      /** Every configuration set, the constructor's first. */
      this.configurations = [config];
      this.signalingState = 'stable';
      this.connectionState = 'new';
      this.localDescription = null;
      this.remoteDescription = null;
      this.currentLocalDescription = null;
      this.currentRemoteDescription = null;
      this.tracks = [];
      this.channels = [];
      this.covered = 0;
      this.offered = 0;
      this.version = 0;
      this.ufrag = `${this.id}-u1`;
      this.gathered = false;
      this.restartRequested = false;
      this.negotiationScheduled = false;
      this.closed = false;
      /** Operations in order: 'offer', 'answer', 'rollback', 'remote:offer', 'remote:answer'. */
      this.log = [];
      /** Candidates added with addIceCandidate. */
      this.remoteCandidates = [];
      this.addCandidateErrors = 0;
      this.seenTracks = new Set();
      /** When true, the pair never (re)connects: ICE keeps failing. */
      this.unreachable = false;
    }

    get items() {
      return this.tracks.length + (this.channels.length ? 1 : 0);
    }

    getConfiguration() {
      return { ...this.config };
    }

    setConfiguration(config) {
      this.config = config;
      this.configurations.push(config);
    }

    addTrack(track, ...streams) {
      if (this.closed) throw domError('InvalidStateError', 'closed');
      this.tracks.push({ track, streams });
      this._needNegotiation();
      return { track };
    }

    createDataChannel(label, init = {}) {
      if (this.closed) throw domError('InvalidStateError', 'closed');
      const channel = new FakeDataChannel(this, label, init);
      const first = this.channels.length === 0;
      this.channels.push(channel);
      if (first) this._needNegotiation();
      return channel;
    }

    restartIce() {
      this.restartRequested = true;
      this.ufrag = `${this.id}-u${++this.version}`;
      this.gathered = false;
      this._needNegotiation();
    }

    _needNegotiation() {
      if (this.negotiationScheduled) return;
      this.negotiationScheduled = true;
      // A task, checked when it runs (browsers check the flag again before firing).
      setImmediate(() => {
        this.negotiationScheduled = false;
        if (this.closed || this.signalingState !== 'stable') return;
        if (this.items > this.covered || this.restartRequested)
          this.dispatchEvent(event('negotiationneeded'));
      });
    }

    _sdp(type) {
      return JSON.stringify({
        pc: this.id,
        type,
        v: ++this.version,
        ufrag: this.ufrag,
        dataChannel: this.channels.length > 0,
        tracks: this.tracks.map((t) => ({ id: t.track.id, kind: t.track.kind })),
      });
    }

    async setLocalDescription(description) {
      await Promise.resolve();
      if (this.closed) throw domError('InvalidStateError', 'closed');
      const state = this.signalingState;
      const type = description?.type ?? (state === 'have-remote-offer' ? 'answer' : 'offer');
      if (type === 'rollback') {
        if (state === 'stable') throw domError('InvalidStateError', 'nothing to roll back');
        this.log.push('rollback');
        this.signalingState = 'stable';
        this.localDescription = this.currentLocalDescription;
        this.remoteDescription = this.currentRemoteDescription;
        this._needNegotiation();
        return;
      }
      if (type === 'offer') {
        if (state !== 'stable' && state !== 'have-local-offer') {
          throw domError('InvalidStateError', `offer in ${state}`);
        }
        this.localDescription = { type, sdp: this._sdp(type) };
        this.signalingState = 'have-local-offer';
        this.offered = this.items;
        this.restartRequested = false;
        this.log.push('offer');
      } else {
        if (state !== 'have-remote-offer')
          throw domError('InvalidStateError', `answer in ${state}`);
        this.localDescription = { type, sdp: this._sdp(type) };
        this.currentLocalDescription = this.localDescription;
        this.currentRemoteDescription = this.remoteDescription;
        this.signalingState = 'stable';
        this.covered = this.items;
        this.log.push('answer');
        this._needNegotiation();
      }
      this._gather();
      this._maybeConnect();
    }

    async setRemoteDescription(description) {
      await Promise.resolve();
      if (this.closed) throw domError('InvalidStateError', 'closed');
      const state = this.signalingState;
      if (description.type === 'offer') {
        if (state === 'have-local-offer') {
          throw domError(
            'InvalidStateError',
            'remote offer in have-local-offer (no implicit rollback)',
          );
        }
        this.remoteDescription = { ...description };
        this.signalingState = 'have-remote-offer';
      } else if (description.type === 'answer') {
        if (state !== 'have-local-offer') throw domError('InvalidStateError', `answer in ${state}`);
        this.remoteDescription = { ...description };
        this.currentLocalDescription = this.localDescription;
        this.currentRemoteDescription = this.remoteDescription;
        this.signalingState = 'stable';
        this.covered = this.offered;
        this._needNegotiation();
      } else {
        throw domError('TypeError', `bad type ${description.type}`);
      }
      this.log.push(`remote:${description.type}`);
      this._announceTracks(JSON.parse(description.sdp));
      this._maybeConnect();
    }

    async addIceCandidate(candidate) {
      await Promise.resolve();
      if (this.closed) throw domError('InvalidStateError', 'closed');
      if (!this.remoteDescription) {
        this.addCandidateErrors += 1;
        throw domError('InvalidStateError', 'no remote description');
      }
      this.remoteCandidates.push(candidate);
      this._maybeConnect();
    }

    close() {
      if (this.closed) return;
      this.closed = true;
      this.signalingState = 'closed';
      this.connectionState = 'closed';
      for (const channel of this.channels) channel.close();
    }

    /** Forces a connection state (and its event), e.g. 'failed'. */
    _setConnectionState(state) {
      this.connectionState = state;
      this.dispatchEvent(event('connectionstatechange'));
    }

    _gather() {
      if (this.gathered) return;
      this.gathered = true;
      const ufrag = this.ufrag;
      // Browsers queue candidate events as tasks: they follow the description's promise.
      setImmediate(() => {
        if (this.closed) return;
        const candidate = {
          candidate: `candidate:1 1 udp 2122260223 10.0.0.1 5000 typ host pc ${this.id}`,
          sdpMid: '0',
          sdpMLineIndex: 0,
          usernameFragment: ufrag,
          toJSON() {
            const { toJSON, ...rest } = this;
            return rest;
          },
        };
        this.dispatchEvent(event('icecandidate', { candidate }));
        this.dispatchEvent(event('icecandidate', { candidate: null }));
      });
    }

    _announceTracks(sdp) {
      for (const t of sdp.tracks ?? []) {
        if (this.seenTracks.has(t.id)) continue;
        this.seenTracks.add(t.id);
        const track = { id: t.id, kind: t.kind, remote: true };
        this.dispatchEvent(event('track', { track, streams: [{ id: `stream-of-${sdp.pc}` }] }));
      }
    }

    /** The connection this one's current remote description came from. */
    _peer() {
      if (!this.currentRemoteDescription) return null;
      return registry.get(JSON.parse(this.currentRemoteDescription.sdp).pc) ?? null;
    }

    _heardFrom(other) {
      return this.remoteCandidates.some((c) => String(c.candidate).endsWith(` pc ${other.id}`));
    }

    _maybeConnect() {
      const peer = this._peer();
      if (!peer || this.closed || peer.closed || this.unreachable || peer.unreachable) return;
      if (this.signalingState !== 'stable' || peer.signalingState !== 'stable') return;
      if (peer._peer() !== this) return;
      if (!this._heardFrom(peer) || !peer._heardFrom(this)) return;
      for (const pc of [this, peer]) {
        if (pc.connectionState === 'connected') continue;
        pc._setConnectionState('connected');
      }
      for (const mine of this.channels) {
        const theirs = peer.channels.find((c) => c.negotiated && c.id === mine.id);
        if (theirs && mine.readyState === 'connecting' && theirs.readyState === 'connecting') {
          mine._open(theirs);
          theirs._open(mine);
        }
      }
    }
  }

  return { RTCPeerConnection: FakePeerConnection, instances, registry };
}

/** A fake MediaStream with tracks of `kinds`. */
export function fakeStream(...kinds) {
  const tracks = kinds.map((kind, i) => ({
    id: `${kind}-${i}-${Math.floor(Math.random() * 1e6)}`,
    kind,
  }));
  return { id: 'local-stream', getTracks: () => [...tracks] };
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/**
 * A server, a clock, a WebRTC stack and a factory of clients wired to them.
 * `make(options)` builds a client with the fakes injected (`random` defaults to 0.5).
 */
export async function harness({ server: serverOptions, ...defaults } = {}) {
  const { SwitchboardClient } = await import('../../switchboard.js');
  const clock = new FakeClock();
  const server = new FakeServer(serverOptions);
  const webrtc = fakeWebRTC();
  const clients = [];
  const make = (options = {}) => {
    const client = new SwitchboardClient({
      url: 'https://sb.test',
      WebSocket: server.WebSocket,
      RTCPeerConnection: webrtc.RTCPeerConnection,
      fetch: fakeFetch({}),
      setTimeout: clock.setTimeout,
      clearTimeout: clock.clearTimeout,
      now: clock.now,
      random: () => 0.5,
      iceServers: [],
      ...defaults,
      ...options,
    });
    clients.push(client);
    return client;
  };
  return { clock, server, webrtc, make, clients };
}

/** Records the `type` events of `target` (details, in order). */
export function record(target, type) {
  const seen = [];
  target.on(type, (detail) => seen.push(detail));
  return seen;
}
