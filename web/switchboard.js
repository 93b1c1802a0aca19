/**
 * Switchboard browser client: one ES module, no dependencies, no build step.
 *
 * It speaks the whole wire protocol of docs/protocol.md: authentication (an `auth_token` frame
 * after `auth_required` by default, or `?token=`), rooms (`join`/`leave`, `users_in_room`,
 * `user_joined`/`user_left`), room signals (`offer`/`answer`/`ice_candidate`/`signal`, to one
 * client or the whole room), user-addressed signals (`webrtc_offer`/`webrtc_answer`/
 * `webrtc_ice_candidate` to every device of a user), keepalive, error frames and close codes,
 * the `reconnect` notice of a draining node, and resuming a session (`resume`, `seq`). On top
 * of that it keeps the connection up (a dropped session is resumed where the server kept it,
 * otherwise backoff with full jitter and re-joining rooms), keeps tokens and TURN credentials
 * fresh, and wires `RTCPeerConnection`s to the signals with the "perfect negotiation" pattern.
 *
 * Nothing here logs: tokens, resume tokens, passwords and SDP never leave the objects that hold
 * them.
 *
 * @module switchboard
 */

export const VERSION = '1.0.0';

// ---------------------------------------------------------------------------------------------
// Protocol constants
// ---------------------------------------------------------------------------------------------

/**
 * WebSocket close codes the server sends (docs/protocol.md, "Close codes").
 * @readonly
 * @enum {number}
 */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  INVALID_PAYLOAD: 1007,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  REPLACED: 4001,
  SLOW_CONSUMER: 4002,
  IDLE_TIMEOUT: 4003,
  REVOKED: 4004,
});

/** Close codes after which the protocol says not to reconnect. */
export const FINAL_CLOSE_CODES = Object.freeze([1000, 1007, 1008, 1009, 4001, 4004]);
const FINAL = new Set(FINAL_CLOSE_CODES);

/** Names for the final close codes, used as the `code` of the error they end with. */
const CLOSE_NAMES = {
  1000: 'normal',
  1007: 'invalid_payload',
  1008: 'policy_violation',
  1009: 'message_too_big',
  4001: 'replaced',
  4004: 'revoked',
};

/** The code this library reports for a socket it gave up on itself (no close frame seen). */
const ABANDONED = 1006;

/** Room signal types the server relays. */
export const ROOM_SIGNAL_TYPES = Object.freeze(['offer', 'answer', 'ice_candidate', 'signal']);
/** User-addressed signal types the server relays. */
export const USER_SIGNAL_TYPES = Object.freeze([
  'webrtc_offer',
  'webrtc_answer',
  'webrtc_ice_candidate',
]);
const ROOM_TYPES = new Set(ROOM_SIGNAL_TYPES);
const USER_TYPES = new Set(USER_SIGNAL_TYPES);

/** Error codes that refuse a `join`. */
const JOIN_REFUSALS = new Set(['forbidden', 'room_full', 'too_many_rooms']);

const ROOM_NAME = /^[A-Za-z0-9._:-]{1,128}$/;
const CLIENT_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** The data channel every call opens: negotiated out of band, same id on both sides. */
export const DATA_CHANNEL_ID = 0;
export const DATA_CHANNEL_LABEL = 'switchboard';

/** The defaults of the numeric and mode options (see ClientOptions). */
const DEFAULTS = Object.freeze({
  authMode: 'message',
  reconnect: true,
  resume: true,
  initialDelayMs: 500,
  maxDelayMs: 30_000,
  maxAttempts: Infinity,
  drainJitterMs: 250,
  drainGraceMs: 3_000,
  pingIntervalMs: 20_000,
  pongTimeoutMs: 10_000,
  requestTimeoutMs: 15_000,
  iceEndpoint: '/api/webrtc/ice-servers',
  iceWaitMs: 3_000,
  refreshFraction: 0.8,
  sendRate: 25,
  sendBurst: 100,
  maxQueuedFrames: 256,
  ringTimeoutMs: 60_000,
  maxIceRestarts: 1,
});

/** Event names of the client itself, never taken from a frame's `type`. */
const OWN_EVENTS = new Set([
  'state',
  'message',
  'incoming',
  'iceservers',
  'ice_error',
  'token',
  'token_error',
  'resumed',
  'resume_failed',
]);

// ---------------------------------------------------------------------------------------------
// Types (JSDoc)
// ---------------------------------------------------------------------------------------------

/**
 * @typedef {object} ClientOptions
 * @property {string} [url] Base URL of a node (`https://sb.example.com`, a path prefix is kept);
 *   defaults to the page's origin. `ws:`/`wss:` work too.
 * @property {string | TokenProvider} [token] An access token, or a function returning one
 *   (called whenever a token is needed: each connection attempt, each `api()` request).
 *   `login()` replaces it.
 * @property {'message' | 'query'} [authMode] `message` (default): the token goes in an
 *   `auth_token` frame, never in a URL. `query`: `?token=` on the upgrade.
 * @property {string} [clientId] The client id to claim (1-64 of `[A-Za-z0-9_-]`); random by
 *   default, and kept across reconnects.
 * @property {boolean} [reconnect] Reconnect after a close the protocol allows (default true).
 * @property {boolean} [resume] After a connection is lost, resume its session (`resume` after
 *   `auth_required`: same client id, rooms kept, missed frames replayed) before authenticating
 *   afresh (default true).
 * @property {number} [initialDelayMs] First backoff ceiling (default 500).
 * @property {number} [maxDelayMs] Largest backoff ceiling (default 30000).
 * @property {number} [maxAttempts] Consecutive failed attempts before giving up (default
 *   Infinity).
 * @property {number} [drainJitterMs] Reconnects after a `reconnect` notice wait a random
 *   0..drainJitterMs (default 250).
 * @property {number} [drainGraceMs] How long to wait for the server's close after a
 *   `reconnect` notice before leaving on our own (default 3000).
 * @property {number} [pingIntervalMs] Interval of `ping` frames; 0 turns keepalive off
 *   (default 20000).
 * @property {number} [pongTimeoutMs] A connection that sends nothing for this long after a
 *   `ping` is given up and replaced (default 10000).
 * @property {number} [requestTimeoutMs] How long `join()` waits for `users_in_room`
 *   (default 15000).
 * @property {RTCIceServer[]} [iceServers] Fixed ICE servers: when given, the server's are
 *   neither taken nor fetched.
 * @property {string | null} [iceEndpoint] Where ICE servers are fetched when `auth_success`
 *   has none (default `/api/webrtc/ice-servers`; `/auth/turn-credentials` and
 *   `/api/webrtc/turn-credentials` are understood too); null: never fetch.
 * @property {number} [iceWaitMs] How long a new call waits for ICE servers (default 3000).
 * @property {number} [refreshFraction] Share of a token's or TURN credential's lifetime after
 *   which it is renewed (default 0.8).
 * @property {number} [sendRate] Frames per second the client sends at most; 0: unpaced
 *   (default 25, under the server's `msg_rate`).
 * @property {number} [sendBurst] Frames the client may send at once (default 100).
 * @property {number} [maxQueuedFrames] Signals kept while disconnected or paced (default 256).
 * @property {number} [ringTimeoutMs] An unanswered incoming call is dropped after this long
 *   (default 60000).
 * @property {number} [maxIceRestarts] ICE restarts a failed call tries before it hangs up
 *   (default 1).
 * @property {WebSocketConstructor} [WebSocket] Injectable (default `globalThis.WebSocket`).
 * @property {typeof fetch} [fetch] Injectable (default `globalThis.fetch`).
 * @property {PeerConnectionConstructor} [RTCPeerConnection] Injectable.
 * @property {(fn: () => void, ms: number) => any} [setTimeout] Injectable timer.
 * @property {(id: any) => void} [clearTimeout] Injectable timer.
 * @property {() => number} [now] Injectable clock, milliseconds.
 * @property {() => number} [random] Injectable randomness in [0, 1).
 */

/**
 * The options in effect: every default filled in, the token left out.
 * @typedef {Omit<ClientOptions, 'token'> & {
 *   url: string, authMode: 'message' | 'query', reconnect: boolean, resume: boolean,
 *   initialDelayMs: number, maxDelayMs: number, maxAttempts: number, drainJitterMs: number,
 *   drainGraceMs: number, pingIntervalMs: number, pongTimeoutMs: number,
 *   requestTimeoutMs: number,
 *   iceEndpoint: string | null, iceWaitMs: number, refreshFraction: number, sendRate: number,
 *   sendBurst: number, maxQueuedFrames: number, ringTimeoutMs: number, maxIceRestarts: number
 * }} Settings
 */

/**
 * @callback TokenProvider
 * @param {{forceRefresh: boolean}} info `forceRefresh` is true after the server refused the
 *   last token as expired: do not return a cached one.
 * @returns {string | Promise<string>}
 */

/** @typedef {new (url: string) => WebSocketLike} WebSocketConstructor */
/**
 * @typedef {object} WebSocketLike
 * @property {number} readyState
 * @property {(data: string) => void} send
 * @property {(code?: number, reason?: string) => void} close
 * @property {((ev: any) => void) | null} onopen
 * @property {((ev: {data: any}) => void) | null} onmessage
 * @property {((ev: {code: number, reason: string}) => void) | null} onclose
 * @property {((ev: any) => void) | null} onerror
 */
/** @typedef {new (config?: RTCConfiguration) => RTCPeerConnection} PeerConnectionConstructor */

/**
 * @typedef {'closed' | 'connecting' | 'open' | 'reconnecting'} ConnectionState
 */

/**
 * What resumes the server's session after a lost connection (`auth_success` and the
 * `reconnect` notice carry it). The token is a secret: it goes in `resume` frames only.
 * @typedef {object} ResumeGrant
 * @property {string} session
 * @property {string} token
 */

/**
 * @typedef {object} Session
 * @property {string} user The display name (`user` of `auth_success`).
 * @property {string} userId
 * @property {string} clientId
 */

/**
 * @typedef {object} Member A room member as the server describes it.
 * @property {string} client_id
 * @property {string} username
 * @property {string} user_id
 */

/**
 * @typedef {object} Peer The other side of a call.
 * @property {'room' | 'user'} via Room signals to a client id, or user-addressed signals.
 * @property {string | null} clientId The peer's client id (for `user` calls: the device that
 *   answered, null until one has).
 * @property {string | null} userId
 * @property {string | null} username
 * @property {string | null} room The room of a `room` call.
 */

/**
 * @typedef {object} CallOptions
 * @property {'room' | 'user'} [via] Default: `room` when the peer is a client id of a joined
 *   room's member, else `user`.
 * @property {string} [room] The room for a `room` call (default: the peer's room).
 * @property {string} [clientId] For a `user` call: the one device to call.
 * @property {MediaStream} [stream] Local media: its tracks are added to the connection.
 * @property {RTCConfiguration} [rtcConfig] Merged into the connection's configuration
 *   (`iceServers` comes from the client).
 * @property {string} [dataChannelLabel] Label of the data channel (default `switchboard`).
 */

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/** An error with a stable `code` (the server's error code where there is one). */
export class SwitchboardError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{status?: number, closeCode?: number, retryAfterMs?: number, frame?: object,
   *   cause?: unknown}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = 'SwitchboardError';
    /** @type {string} */
    this.code = code;
    /** @type {number | undefined} HTTP status, for HTTP errors. */
    this.status = extra.status;
    /** @type {number | undefined} WebSocket close code, for connection errors. */
    this.closeCode = extra.closeCode;
    /** @type {number | undefined} */
    this.retryAfterMs = extra.retryAfterMs;
    /** @type {object | undefined} The error frame, for errors the server sent. */
    this.frame = extra.frame;
  }
}

/** The event every emitter here dispatches: the payload is in `detail`. */
export class SwitchboardEvent extends Event {
  /** @param {string} type @param {any} detail */
  constructor(type, detail) {
    super(type);
    /** @type {any} */
    this.detail = detail;
  }
}

/**
 * An `EventTarget` with `on(type, fn)`, which calls `fn(detail, event)` and returns an
 * unsubscribe function.
 */
export class Emitter extends EventTarget {
  /**
   * @param {string} type
   * @param {(detail: any, event: SwitchboardEvent) => void} fn
   * @returns {() => void} Removes the listener.
   */
  on(type, fn) {
    const listener = (/** @type {any} */ event) => fn(event.detail, event);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /**
   * Like `on`, for one event.
   * @param {string} type
   * @param {(detail: any, event: SwitchboardEvent) => void} fn
   * @returns {() => void}
   */
  once(type, fn) {
    const off = this.on(type, (detail, event) => {
      off();
      fn(detail, event);
    });
    return off;
  }

  /** @internal @param {string} type @param {any} [detail] */
  _emit(type, detail) {
    this.dispatchEvent(new SwitchboardEvent(type, detail));
  }
}

/**
 * The delay before reconnect attempt `attempt` (0 for the first retry): "full jitter", a
 * uniform pick in [0, min(maxDelayMs, initialDelayMs * 2^attempt)].
 * @param {number} attempt
 * @param {{initialDelayMs: number, maxDelayMs: number}} limits
 * @param {() => number} random A number in [0, 1).
 * @returns {number} Milliseconds.
 */
export function backoffDelay(attempt, { initialDelayMs, maxDelayMs }, random) {
  const ceiling = Math.min(maxDelayMs, initialDelayMs * 2 ** Math.min(attempt, 52));
  return Math.floor(random() * (ceiling + 1));
}

/**
 * Whether this side is the polite peer of perfect negotiation: the side whose id sorts first.
 * Both sides compute the same answer from the same two ids.
 * @param {string} mine
 * @param {string} theirs
 */
export function isPolite(mine, theirs) {
  return mine < theirs;
}

/** @param {() => number} random */
function randomId(random) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  let id = '';
  for (let i = 0; i < 22; i += 1) id += alphabet[Math.floor(random() * alphabet.length)];
  return id;
}

function cryptoRandom() {
  const c = globalThis.crypto;
  if (c && typeof c.getRandomValues === 'function') {
    return c.getRandomValues(new Uint32Array(1))[0] / 2 ** 32;
  }
  return Math.random();
}

/** @param {string} room */
function checkRoom(room) {
  if (typeof room !== 'string' || !ROOM_NAME.test(room)) {
    throw new TypeError('a room name is 1-128 characters of [A-Za-z0-9._:-]');
  }
}

/**
 * The URL of `path` under `base`, with the scheme for `kind`.
 * @param {string} base
 * @param {string} path
 * @param {'http' | 'ws'} kind
 */
function endpoint(base, path, kind) {
  const url = new URL(base);
  const secure = url.protocol === 'https:' || url.protocol === 'wss:';
  url.protocol = kind === 'ws' ? (secure ? 'wss:' : 'ws:') : secure ? 'https:' : 'http:';
  url.pathname = url.pathname.replace(/\/+$/, '') + path;
  url.search = '';
  url.hash = '';
  return url;
}

/** A description as JSON: `{type, sdp}`. @param {any} d */
function descriptionJson(d) {
  return { type: d.type, sdp: d.sdp };
}

/** A candidate as JSON. @param {any} c */
function candidateJson(c) {
  return typeof c.toJSON === 'function'
    ? c.toJSON()
    : {
        candidate: c.candidate,
        sdpMid: c.sdpMid,
        sdpMLineIndex: c.sdpMLineIndex,
        usernameFragment: c.usernameFragment,
      };
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/** JSON requests to a node. */
class Http {
  /** @param {string} base @param {typeof fetch} fetchImpl */
  constructor(base, fetchImpl) {
    this.base = base;
    this.fetch = fetchImpl;
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {{token?: string, json?: unknown}} [options]
   * @returns {Promise<any>} The answer's JSON; a non-2xx answer throws a SwitchboardError with
   *   the body's `code`.
   */
  async request(method, path, { token, json } = {}) {
    if (typeof this.fetch !== 'function') {
      throw new SwitchboardError('no_fetch', 'no fetch implementation available');
    }
    /** @type {Record<string, string>} */
    const headers = { Accept: 'application/json' };
    if (json !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await this.fetch(endpoint(this.base, path, 'http').toString(), {
        method,
        headers,
        body: json === undefined ? undefined : JSON.stringify(json),
      });
    } catch (cause) {
      throw new SwitchboardError('network', `${method} ${path} failed`, { cause });
    }
    const body = await response.json().catch(() => null);
    if (!response.ok) throw httpError(method, path, response.status, body);
    return body;
  }
}

/** @param {string} method @param {string} path @param {number} status @param {any} body */
function httpError(method, path, status, body) {
  const code = (body && (body.code || body.error)) || `http_${status}`;
  const detail = (body && (body.detail || body.error_description)) || `HTTP ${status}`;
  const retryAfter = body && Number(body.retry_after);
  return new SwitchboardError(code, `${method} ${path}: ${detail}`, {
    status,
    retryAfterMs: retryAfter > 0 ? retryAfter * 1000 : undefined,
  });
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

/**
 * Where access tokens come from: a fixed token, a provider function, or a login session that
 * refreshes itself with `/auth/refresh` before the access token expires.
 */
class Tokens {
  /**
   * @param {Http} http
   * @param {Clock} clock
   * @param {number} refreshFraction
   * @param {(type: string, detail: any) => void} emit
   */
  constructor(http, clock, refreshFraction, emit) {
    this.http = http;
    this.clock = clock;
    this.refreshFraction = refreshFraction;
    this.emit = emit;
    /** @type {'none' | 'static' | 'provider' | 'session'} */
    this.kind = 'none';
    /** @type {string | null} */ this.token = null;
    /** @type {TokenProvider | null} */ this.provider = null;
    /** @type {string | null} */ this.refreshToken = null;
    this.expiresAt = 0;
    /** @type {Promise<string> | null} */ this.refreshing = null;
    this.timer = null;
  }

  /** @param {string | TokenProvider | null | undefined} source */
  set(source) {
    this.stop();
    this.refreshToken = null;
    this.token = null;
    this.provider = null;
    if (typeof source === 'function') {
      this.kind = 'provider';
      this.provider = source;
    } else if (typeof source === 'string' && source) {
      this.kind = 'static';
      this.token = source;
    } else {
      this.kind = 'none';
    }
  }

  /** Whether a refused (expired) token can be replaced by a fresh one. */
  get canRefresh() {
    return this.kind === 'provider' || (this.kind === 'session' && this.refreshToken !== null);
  }

  /**
   * A token to present now.
   * @param {{force?: boolean}} [options] force: the last one was refused as expired.
   * @returns {Promise<string>}
   */
  async get({ force = false } = {}) {
    switch (this.kind) {
      case 'static':
        return /** @type {string} */ (this.token);
      case 'provider': {
        const token = await /** @type {TokenProvider} */ (this.provider)({ forceRefresh: force });
        if (typeof token !== 'string' || !token) {
          throw new SwitchboardError('no_token', 'the token provider returned no token');
        }
        return token;
      }
      case 'session': {
        const stale = this.clock.now() >= this.expiresAt - 30_000;
        if ((force || stale) && this.refreshToken) await this.refresh();
        return /** @type {string} */ (this.token);
      }
      default:
        throw new SwitchboardError('no_token', 'no token: pass `token` or call login() first');
    }
  }

  /**
   * `POST /auth/login`; starts a session.
   * @param {string} username
   * @param {string} password
   */
  async login(username, password) {
    const answer = await this.http.request('POST', '/auth/login', { json: { username, password } });
    this.begin(answer);
    return answer.user;
  }

  /**
   * Rotates the refresh token (`POST /auth/refresh`). Concurrent callers share one request:
   * presenting a spent refresh token would revoke the whole family.
   * @returns {Promise<string>}
   */
  refresh() {
    if (this.refreshing) return this.refreshing;
    const refreshToken = this.refreshToken;
    if (!refreshToken) {
      return Promise.reject(new SwitchboardError('no_refresh_token', 'nothing to refresh'));
    }
    this.refreshing = this.http
      .request('POST', '/auth/refresh', { json: { refresh_token: refreshToken } })
      .then(
        (answer) => {
          this.begin(answer);
          this.emit('token', { expiresAt: this.expiresAt });
          return /** @type {string} */ (this.token);
        },
        (error) => {
          // A refusal ends the session; a network failure leaves it for a later try.
          if (error.status === 401 || error.status === 403) {
            this.refreshToken = null;
            this.stop();
          } else {
            this.schedule(Math.min(30_000, Math.max(1_000, this.expiresAt - this.clock.now())));
          }
          this.emit('token_error', { error });
          throw error;
        },
      )
      .finally(() => {
        this.refreshing = null;
      });
    return this.refreshing;
  }

  /** `POST /auth/logout` with the session's refresh token; forgets the session. */
  async logout() {
    if (this.kind !== 'session' || !this.token) return;
    const token = this.token;
    const refreshToken = this.refreshToken;
    this.set(null);
    await this.http.request('POST', '/auth/logout', {
      token,
      json: refreshToken ? { refresh_token: refreshToken } : undefined,
    });
  }

  /** @param {any} answer A login or refresh answer. */
  begin(answer) {
    if (!answer || typeof answer.access_token !== 'string') {
      throw new SwitchboardError('invalid_response', 'the token answer has no access_token');
    }
    this.kind = 'session';
    this.token = answer.access_token;
    this.refreshToken = typeof answer.refresh_token === 'string' ? answer.refresh_token : null;
    const lifetime = Math.max(0, Number(answer.expires_in) || 0) * 1000;
    this.expiresAt = this.clock.now() + lifetime;
    if (this.refreshToken && lifetime > 0) this.schedule(lifetime * this.refreshFraction);
  }

  /** @param {number} delay */
  schedule(delay) {
    this.stop();
    this.timer = this.clock.setTimeout(
      () => {
        this.timer = null;
        this.refresh().catch(() => {});
      },
      Math.max(1_000, delay),
    );
  }

  stop() {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }
}

// ---------------------------------------------------------------------------------------------
// ICE servers
// ---------------------------------------------------------------------------------------------

/**
 * The ICE servers (STUN, TURN with time-limited credentials) calls use: from `auth_success`,
 * else fetched, renewed before the TURN credentials expire.
 */
class IceServers {
  /**
   * @param {{fixed: RTCIceServer[] | undefined, endpoint: string | null, fraction: number}} options
   * @param {Clock} clock
   * @param {() => Promise<any>} fetchList GETs the endpoint with a token.
   * @param {(type: string, detail: any) => void} emit
   */
  constructor({ fixed, endpoint: path, fraction }, clock, fetchList, emit) {
    this.fixed = fixed !== undefined;
    /** @type {RTCIceServer[]} */
    this.servers = fixed ? [...fixed] : [];
    this.loaded = this.fixed;
    this.path = path;
    this.fraction = fraction;
    this.clock = clock;
    this.fetchList = fetchList;
    this.emit = emit;
    /** @type {Promise<void> | null} */
    this.fetching = null;
    this.timer = null;
    /** @type {number | null} When the current TURN credentials expire (ms). */
    this.expiresAt = null;
  }

  /** `auth_success` arrived; `list` is its `ice_servers`, if any. */
  onAuthenticated(/** @type {RTCIceServer[] | undefined} */ list) {
    if (this.fixed) return;
    if (Array.isArray(list)) this.set(list, null);
    else this.refresh().catch(() => {});
  }

  /** Fetches the list now. */
  refresh() {
    if (this.fixed || !this.path) return Promise.resolve();
    if (this.fetching) return this.fetching;
    this.fetching = this.fetchList()
      .then(
        (body) => {
          const { servers, ttl } = normalizeIce(body);
          this.set(servers, ttl);
        },
        (error) => {
          if (error.code === 'turn_not_configured') {
            this.set([], null);
            return;
          }
          this.emit('ice_error', { error });
          this.retryLater();
          throw error;
        },
      )
      .finally(() => {
        this.fetching = null;
      });
    return this.fetching;
  }

  /**
   * The list for a new connection: waits for a first answer, at most `waitMs`.
   * @param {number} waitMs
   * @returns {Promise<RTCIceServer[]>}
   */
  async ready(waitMs) {
    if (!this.loaded && !this.fixed && this.path) {
      const pending = this.fetching ?? this.refresh();
      let timer;
      const timeout = new Promise((resolve) => {
        timer = this.clock.setTimeout(() => resolve(undefined), waitMs);
      });
      await Promise.race([pending.catch(() => {}), timeout]);
      this.clock.clearTimeout(timer);
    }
    return this.servers;
  }

  /**
   * @param {RTCIceServer[]} servers
   * @param {number | null} ttlSeconds
   */
  set(servers, ttlSeconds) {
    this.servers = servers;
    this.loaded = true;
    this.expiresAt = credentialExpiry(servers, ttlSeconds, this.clock.now());
    this.scheduleRefresh();
    this.emit('iceservers', { iceServers: servers, expiresAt: this.expiresAt });
  }

  scheduleRefresh() {
    this.stop();
    if (this.expiresAt === null || !this.path) return;
    const left = this.expiresAt - this.clock.now();
    if (left <= 0) return;
    this.timer = this.clock.setTimeout(
      () => {
        this.timer = null;
        this.refresh().catch(() => {});
      },
      Math.max(1_000, Math.floor(left * this.fraction)),
    );
  }

  retryLater() {
    if (this.expiresAt === null) return;
    const left = this.expiresAt - this.clock.now();
    if (left <= 1_000) return;
    this.stop();
    this.timer = this.clock.setTimeout(
      () => {
        this.timer = null;
        this.refresh().catch(() => {});
      },
      Math.min(30_000, Math.floor(left / 2)),
    );
  }

  stop() {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }
}

/**
 * The ICE servers in any of the node's three answers: `{iceServers}`, `{username, credential,
 * urls, ttl}` or `{username, credential, password, uris, ttl}`.
 * @param {any} body
 * @returns {{servers: RTCIceServer[], ttl: number | null}}
 */
export function normalizeIce(body) {
  const ttl = body && Number(body.ttl) > 0 ? Number(body.ttl) : null;
  if (body && Array.isArray(body.iceServers)) return { servers: body.iceServers, ttl };
  if (body && typeof body.username === 'string') {
    const urls = body.urls ?? body.uris ?? [];
    const credential = body.credential ?? body.password;
    return { servers: [{ urls, username: body.username, credential }], ttl };
  }
  throw new SwitchboardError('invalid_response', 'the ICE answer has no servers');
}

/**
 * When TURN credentials expire: now + ttl when the answer says, else the earliest
 * `<expiry>:<user>` TURN username; null when nothing expires (STUN only).
 * @param {RTCIceServer[]} servers
 * @param {number | null} ttlSeconds
 * @param {number} now
 */
function credentialExpiry(servers, ttlSeconds, now) {
  if (ttlSeconds) return now + ttlSeconds * 1000;
  let earliest = Infinity;
  for (const server of servers) {
    const match = typeof server.username === 'string' && /^(\d+):/.exec(server.username);
    if (match) earliest = Math.min(earliest, Number(match[1]) * 1000);
  }
  return earliest === Infinity ? null : earliest;
}

// ---------------------------------------------------------------------------------------------
// Outbox: paced sending, and signals kept across a reconnect
// ---------------------------------------------------------------------------------------------

/**
 * Frames on their way to the socket. A token bucket keeps the client under the server's
 * message rate (a frame over it would be dropped); `rate_limited` pauses it. While the client
 * is reconnecting, frames wait here and go out after the rooms are joined again.
 */
class Outbox {
  /**
   * @param {{rate: number, burst: number, max: number}} limits
   * @param {Clock} clock
   */
  constructor({ rate, burst, max }, clock) {
    this.rate = rate;
    this.burst = Math.max(1, burst);
    this.max = max;
    this.clock = clock;
    this.tokens = this.burst;
    this.last = clock.now();
    /** @type {object[]} */
    this.queue = [];
    /** @type {((frame: object) => void) | null} */
    this.write = null;
    this.pausedUntil = 0;
    this.timer = null;
  }

  /**
   * The socket is ready: `first` goes out before what waited.
   * @param {(frame: object) => void} write
   * @param {object[]} first
   */
  attach(write, first) {
    this.write = write;
    this.queue.unshift(...first);
    this.drain();
  }

  detach() {
    this.write = null;
    this.cancelTimer();
  }

  /** @param {object} frame @returns {boolean} false when the queue is full. */
  push(frame) {
    if (this.queue.length >= this.max) return false;
    this.queue.push(frame);
    this.drain();
    return true;
  }

  /** Counts a frame sent around the queue (auth, ping). */
  spend() {
    this.refill();
    this.tokens -= 1;
  }

  /** @param {number} ms */
  pause(ms) {
    this.pausedUntil = Math.max(this.pausedUntil, this.clock.now() + ms);
  }

  /** Sends everything now, unpaced (the connection is about to close). */
  flush() {
    while (this.write && this.queue.length) this.write(/** @type {object} */ (this.queue.shift()));
  }

  clear() {
    this.queue = [];
    this.cancelTimer();
  }

  refill() {
    const now = this.clock.now();
    if (this.rate > 0) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
    }
    this.last = now;
  }

  drain() {
    if (this.timer !== null) return;
    while (this.write && this.queue.length) {
      const now = this.clock.now();
      if (now < this.pausedUntil) return this.wake(this.pausedUntil - now);
      if (this.rate > 0) {
        this.refill();
        if (this.tokens < 1) return this.wake(Math.ceil(((1 - this.tokens) * 1000) / this.rate));
        this.tokens -= 1;
      }
      this.write(/** @type {object} */ (this.queue.shift()));
    }
  }

  /** @param {number} ms */
  wake(ms) {
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.drain();
    }, ms);
  }

  cancelTimer() {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }
}

/**
 * @typedef {object} Clock
 * @property {(fn: () => void, ms: number) => any} setTimeout
 * @property {(id: any) => void} clearTimeout
 * @property {() => number} now
 */

// ---------------------------------------------------------------------------------------------
// Rooms
// ---------------------------------------------------------------------------------------------

/**
 * @typedef {object} RoomEntry
 * @property {Map<string, Member>} members The other members, as last heard.
 * @property {boolean} joined Whether `users_in_room` came on the current connection (or the
 *   connection resumed a session that kept the room).
 * @property {boolean} held Whether the server's session has the room: `users_in_room` came
 *   during the current session. A resumed session keeps it; a new one has none.
 * @property {{resolve: (users: Member[]) => void, reject: (e: Error) => void,
 *   timer: any}[]} waiters
 */

/**
 * The rooms a client is in or joining: their members as last heard, and the `join()` calls
 * waiting for `users_in_room`. Every room is joined again on each new session; a resumed
 * session keeps the rooms the server kept. A refused join drops its room.
 */
class Rooms {
  /** @param {Clock} clock @param {number} timeoutMs */
  constructor(clock, timeoutMs) {
    this.clock = clock;
    this.timeoutMs = timeoutMs;
    /** @type {Map<string, RoomEntry>} */
    this.entries = new Map();
    /** Rooms with a `join` sent and no answer yet, oldest first. @type {string[]} */
    this.inFlight = [];
  }

  names() {
    return [...this.entries.keys()];
  }

  /** @param {string} room */
  has(room) {
    return this.entries.has(room);
  }

  /** @param {string} room @returns {Member[]} */
  members(room) {
    return [...(this.entries.get(room)?.members.values() ?? [])];
  }

  /**
   * Adds `room` (once) and a caller waiting for its `users_in_room`.
   * @param {string} room
   * @returns {Promise<Member[]>}
   */
  wait(room) {
    let entry = this.entries.get(room);
    if (!entry) {
      entry = { members: new Map(), joined: false, held: false, waiters: [] };
      this.entries.set(room, entry);
    }
    const waiters = entry.waiters;
    return new Promise((resolve, reject) => {
      waiters.push({ resolve, reject, timer: null });
    });
  }

  /** A `join` for `room` is going out: its waiters' timeouts start. @param {string} room */
  sending(room) {
    const entry = this.entries.get(room);
    if (!entry) return;
    this.inFlight.push(room);
    for (const waiter of entry.waiters) {
      if (waiter.timer !== null) this.clock.clearTimeout(waiter.timer);
      waiter.timer = this.clock.setTimeout(() => {
        entry.waiters = entry.waiters.filter((w) => w !== waiter);
        waiter.reject(new SwitchboardError('timeout', `no answer to joining ${room}`));
      }, this.timeoutMs);
    }
  }

  /** The connection is gone: nothing is joined, nothing in flight. */
  disconnected() {
    for (const entry of this.entries.values()) entry.joined = false;
    this.inFlight = [];
  }

  /** A new session: the server has none of the rooms (they are all joined again). */
  newSession() {
    for (const entry of this.entries.values()) entry.held = false;
  }

  /**
   * A resumed session, which the server kept in `kept`. A room held before and kept is joined
   * as it was (its members as last heard; what changed follows in the replay). A room joined
   * again: one not held (its `join` was never answered, or came while away), one the server
   * did not keep, and one a `join()` waits for (a `join` of a room the session is in answers
   * `users_in_room` and announces nothing). A room left while away is left now.
   * @param {string[]} kept The `rooms` of `resumed`.
   * @returns {{join: string[], leave: string[]}}
   */
  resumed(kept) {
    const server = new Set(kept);
    /** @type {string[]} */
    const join = [];
    for (const [room, entry] of this.entries) {
      if (!server.has(room)) entry.held = false;
      if (entry.held && !entry.waiters.length) entry.joined = true;
      else join.push(room);
    }
    return { join, leave: kept.filter((room) => !this.entries.has(room)) };
  }

  /** @param {any} frame `users_in_room` */
  onUsersInRoom(frame) {
    this.inFlight = this.inFlight.filter((r) => r !== frame.room);
    const entry = this.entries.get(frame.room);
    if (!entry) return;
    const users = Array.isArray(frame.users) ? frame.users.map(memberOf) : [];
    entry.members = new Map(users.map((/** @type {Member} */ u) => [u.client_id, u]));
    entry.joined = true;
    entry.held = true;
    this.settle(frame.room, null, users);
  }

  /** @param {any} frame `user_joined` (a refresh when the client id is known) */
  onUserJoined(frame) {
    this.entries.get(frame.room)?.members.set(frame.client_id, memberOf(frame));
  }

  /** @param {any} frame `user_left` */
  onUserLeft(frame) {
    this.entries.get(frame.room)?.members.delete(frame.client_id);
  }

  /**
   * A refused join (`forbidden`, `room_full` with their `room`; `too_many_rooms`, which names
   * none, answers the oldest join in flight): its waiters fail and the room is dropped.
   * @param {any} frame
   */
  refuse(frame) {
    const room = frame.room ?? this.inFlight[0];
    if (!room) return;
    const error = new SwitchboardError(frame.code, frame.message ?? frame.code, { frame });
    this.remove(room, error);
  }

  /** Forgets `room`; its waiters fail with `error`. @param {string} room @param {Error} error */
  remove(room, error) {
    this.inFlight = this.inFlight.filter((r) => r !== room);
    this.settle(room, error);
    this.entries.delete(room);
  }

  /**
   * Every waiter fails; the rooms stay, to be joined on the next connection.
   * @param {Error} error
   */
  failAll(error) {
    for (const room of this.entries.keys()) this.settle(room, error);
  }

  /**
   * Resolves (error null) or rejects the waiters of `room`.
   * @param {string} room @param {Error | null} error @param {Member[]} [users]
   */
  settle(room, error, users = []) {
    const entry = this.entries.get(room);
    for (const w of entry ? entry.waiters.splice(0) : []) {
      if (w.timer !== null) this.clock.clearTimeout(w.timer);
      if (error) w.reject(error);
      else w.resolve([...users]);
    }
  }

  /**
   * The room of member `clientId` (within `room` when given) and what is known of it.
   * @param {string} clientId @param {string} [room]
   */
  find(clientId, room) {
    for (const [name, entry] of this.entries) {
      if (room !== undefined && name !== room) continue;
      const info = entry.members.get(clientId);
      if (info) return { room: name, info };
    }
    return null;
  }

  /**
   * The room a signal to `clientId` belongs to: the member's, or the only one.
   * @param {string} clientId
   */
  roomOf(clientId) {
    return this.find(clientId)?.room ?? this.only();
  }

  /** The room, when the client is in exactly one. */
  only() {
    return this.entries.size === 1 ? this.names()[0] : undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/**
 * @typedef {object} Connection One WebSocket and what is known about it.
 * @property {number} id
 * @property {WebSocketLike} ws
 * @property {string | null} token Held until authenticated, for `auth_token`.
 * @property {boolean} resuming A `resume` is (to be) sent after `auth_required`, unanswered.
 * @property {boolean} authed
 * @property {any} lastError The last error frame.
 * @property {string | null} drain The reason of a `reconnect` notice.
 * @property {any} pingTimer
 * @property {any} pongTimer
 * @property {any} drainTimer
 */

/**
 * A connection to a Switchboard node that stays up: see the module documentation and
 * web/README.md.
 *
 * Events (`on(type, fn)` calls `fn(detail)`; `addEventListener` gets a `SwitchboardEvent`):
 * `state`, `message` (every frame), one per frame type (`auth_success`, `users_in_room`,
 * `user_joined`, `user_left`, `offer`, `answer`, `ice_candidate`, `signal`, `webrtc_offer`,
 * `webrtc_answer`, `webrtc_ice_candidate`, `pong`, `reconnect`, `error`, ...), `resumed`,
 * `resume_failed`, `incoming`, `iceservers`, `token`, `token_error`.
 */
export class SwitchboardClient extends Emitter {
  /** @param {ClientOptions} [options] */
  constructor(options = {}) {
    super();
    const url = options.url ?? globalThis.location?.origin;
    if (!url) throw new TypeError('SwitchboardClient needs `url` outside a browser page');
    if (options.clientId !== undefined && !CLIENT_ID.test(options.clientId)) {
      throw new TypeError('a client id is 1-64 characters of [A-Za-z0-9_-]');
    }
    const { token, ...rest } = options;
    /** @type {Settings} The options in effect, defaults filled in (without the token). */
    this.options = /** @type {Settings} */ ({ ...DEFAULTS, ...stripUndefined(rest), url });
    const o = this.options;
    /** @type {Clock} */
    this._clock = {
      setTimeout: o.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms)),
      clearTimeout: o.clearTimeout ?? ((id) => globalThis.clearTimeout(id)),
      now: o.now ?? (() => Date.now()),
    };
    this._random = o.random ?? cryptoRandom;
    /** @type {WebSocketConstructor} */
    this._WebSocket = o.WebSocket ?? /** @type {any} */ (globalThis.WebSocket);
    this._RTCPeerConnection = o.RTCPeerConnection ?? globalThis.RTCPeerConnection;
    const emit = (/** @type {string} */ type, /** @type {any} */ detail) =>
      this._emit(type, detail);
    this._http = new Http(url, o.fetch ?? globalThis.fetch?.bind(globalThis));
    this._tokens = new Tokens(this._http, this._clock, o.refreshFraction, emit);
    this._tokens.set(token);
    this._ice = new IceServers(
      { fixed: o.iceServers, endpoint: o.iceEndpoint, fraction: o.refreshFraction },
      this._clock,
      () => this.api(/** @type {string} */ (o.iceEndpoint)),
      (type, detail) => {
        if (type === 'iceservers') this._applyIceServers(detail.iceServers);
        emit(type, detail);
      },
    );
    this._outbox = new Outbox(
      { rate: o.sendRate, burst: o.sendBurst, max: o.maxQueuedFrames },
      this._clock,
    );
    /** @type {string} */
    this._clientId = o.clientId ?? randomId(this._random);
    /** @type {ConnectionState} */
    this._state = 'closed';
    /** @type {Session | null} */
    this._session = null;
    /** @type {ResumeGrant | null} The server's session, while it may be resumed. */
    this._resume = null;
    /** The highest `seq` received in the current session (0: none). */
    this._lastSeq = 0;
    /** @type {Connection | null} */
    this._conn = null;
    this._connSeq = 0;
    /** Whether the application wants a connection (between connect() and close()). */
    this._wanted = false;
    this._attempt = 0;
    this._retryTimer = null;
    this._forceToken = false;
    this._tokenRetried = false;
    this._clientIdRetries = 0;
    /** @type {{resolve: (s: Session) => void, reject: (e: Error) => void}[]} */
    this._connectWaiters = [];
    this._rooms = new Rooms(this._clock, o.requestTimeoutMs);
    /** @type {Map<string, Call>} */
    this._calls = new Map();
    /** @type {Map<string, IncomingCall>} */
    this._incoming = new Map();
  }

  // --- public state ------------------------------------------------------------------------

  /** @returns {ConnectionState} */
  get state() {
    return this._state;
  }

  /** The client id this client claims (the server's answer once connected). */
  get clientId() {
    return this._clientId;
  }

  /** The authenticated user's id, once connected. */
  get userId() {
    return this._session?.userId ?? null;
  }

  /** `{user, userId, clientId}` of the last `auth_success`, or null. */
  get session() {
    return this._session;
  }

  /** The id of the server's session this client would resume after a lost connection, or null. */
  get sessionId() {
    return this._resume?.session ?? null;
  }

  /** The highest `seq` received in the current session (0 before the first). */
  get lastSeq() {
    return this._lastSeq;
  }

  /** The rooms this client is in, or joining. */
  get rooms() {
    return this._rooms.names();
  }

  /**
   * The other members of `room`, as last heard.
   * @param {string} room
   * @returns {Member[]}
   */
  members(room) {
    return this._rooms.members(room);
  }

  /** The ICE servers calls use now. @returns {RTCIceServer[]} */
  iceServers() {
    return this._ice.servers;
  }

  /** Calls in progress. @returns {Call[]} */
  get calls() {
    return [...this._calls.values()];
  }

  // --- authentication ----------------------------------------------------------------------

  /**
   * Logs in with `POST /auth/login`; the session's access token is used from then on and
   * renewed with `/auth/refresh` before it expires.
   * @param {string} username
   * @param {string} password
   * @returns {Promise<any>} The account (`user` of the answer).
   */
  login(username, password) {
    return this._tokens.login(username, password);
  }

  /** Logs out (`POST /auth/logout`) and closes the connection. */
  async logout() {
    this.close();
    await this._tokens.logout();
  }

  /**
   * Replaces the token source: a token, or a function returning one.
   * @param {string | TokenProvider} token
   */
  setToken(token) {
    this._tokens.set(token);
  }

  /**
   * An authenticated JSON request to the node (bearer token); an expired token is renewed
   * once when the source allows.
   * @param {string} path For example `/api/rooms`.
   * @param {{method?: string, json?: unknown}} [init]
   * @returns {Promise<any>}
   */
  async api(path, { method = 'GET', json } = {}) {
    const token = await this._tokens.get();
    try {
      return await this._http.request(method, path, { token, json });
    } catch (error) {
      const expired = /** @type {any} */ (error).code === 'token_expired';
      if (!expired || !this._tokens.canRefresh) throw error;
      const fresh = await this._tokens.get({ force: true });
      return this._http.request(method, path, { token: fresh, json });
    }
  }

  // --- connection ---------------------------------------------------------------------------

  /**
   * Connects, and stays connected until `close()` or a close the protocol says not to retry.
   * @returns {Promise<Session>} Resolves at the first `auth_success`; rejects when the client
   *   gives up first.
   */
  connect() {
    if (this._state === 'open' && this._session) return Promise.resolve(this._session);
    const opened = new Promise((resolve, reject) => {
      this._connectWaiters.push({ resolve, reject });
    });
    if (!this._wanted) {
      this._wanted = true;
      this._attempt = 0;
      this._tokenRetried = false;
      this._clientIdRetries = 0;
      this._openSocket();
    }
    return /** @type {Promise<Session>} */ (opened);
  }

  /**
   * Hangs up every call, closes the connection with 1000 and stops reconnecting.
   */
  close() {
    for (const call of this.calls) call.hangup('closed');
    for (const incoming of [...this._incoming.values()]) incoming._cancel('closed');
    this._wanted = false;
    this._cancelRetry();
    const conn = this._conn;
    if (conn) {
      this._outbox.flush();
      this._dropConnection(conn);
      try {
        conn.ws.close(1000, 'client closed');
      } catch {
        // Already closing.
      }
    }
    this._giveUp(new SwitchboardError('closed', 'the client was closed'), { code: 1000 });
  }

  // --- rooms -------------------------------------------------------------------------------

  /**
   * Joins `room` (now, or as soon as connected) and re-joins it after every reconnect.
   * @param {string} room
   * @returns {Promise<Member[]>} The other members (`users_in_room`).
   */
  join(room) {
    checkRoom(room);
    const joined = this._rooms.wait(room);
    if (this._state === 'open') {
      this._rooms.sending(room);
      this._outbox.push({ type: 'join', room });
    }
    return joined;
  }

  /**
   * Leaves `room` (the server answers nothing; the others get `user_left`).
   * @param {string} room
   * @returns {Promise<void>}
   */
  async leave(room) {
    if (!this._rooms.has(room)) return;
    this._rooms.remove(room, new SwitchboardError('left', `left room ${room}`));
    if (this._conn?.authed) this._outbox.push({ type: 'leave', room });
  }

  // --- signals -----------------------------------------------------------------------------

  /**
   * Sends a room signal to the client `to`, or to every other member when `to` is null.
   * `payload`'s fields are sent as they are (`offer`, `answer`, `candidate`, `data`, ...).
   * @param {string | null} to A client id.
   * @param {'offer' | 'answer' | 'ice_candidate' | 'signal'} type
   * @param {Record<string, unknown>} [payload]
   * @param {{room?: string}} [options] room: needed only when the room cannot be told from
   *   `to` and the client is in several.
   * @returns {boolean} true when sent or queued for after a reconnect.
   */
  send(to, type, payload = {}, { room } = {}) {
    if (!ROOM_TYPES.has(type)) throw new TypeError(`not a room signal type: ${type}`);
    /** @type {Record<string, unknown>} */
    const frame = { ...payload, type };
    if (to) frame.to = to;
    else delete frame.to;
    const where = room ?? (to ? this._rooms.roomOf(to) : this._rooms.only());
    if (where) frame.room = where;
    return this._push(frame);
  }

  /**
   * Sends a room signal to every other member of a room.
   * @param {'offer' | 'answer' | 'ice_candidate' | 'signal'} type
   * @param {Record<string, unknown>} [payload]
   * @param {{room?: string}} [options]
   */
  broadcast(type, payload = {}, options = {}) {
    return this.send(null, type, payload, options);
  }

  /**
   * Sends a user-addressed signal to every connection of `userId` (`data` carries the
   * description or candidate, as seed 000's clients expect).
   * @param {string} userId
   * @param {'webrtc_offer' | 'webrtc_answer' | 'webrtc_ice_candidate'} type
   * @param {unknown} data
   * @param {Record<string, unknown>} [extra] More fields, sent as they are.
   * @returns {boolean}
   */
  sendToUser(userId, type, data, extra = {}) {
    if (!USER_TYPES.has(type)) throw new TypeError(`not a user signal type: ${type}`);
    if (typeof userId !== 'string' || !userId) throw new TypeError('userId is required');
    return this._push({ ...extra, type, target_user_id: userId, data });
  }

  // --- calls -------------------------------------------------------------------------------

  /**
   * Starts a call (or returns the one in progress with that peer; or accepts the peer's
   * ringing call).
   * @param {string} peer A client id (room call) or a user id (user-addressed call).
   * @param {CallOptions} [options]
   * @returns {Promise<Call>}
   */
  async call(peer, options = {}) {
    const target = this._peerFor(peer, options);
    const key = callKey(target);
    const existing = this._calls.get(key);
    if (existing) return existing;
    const ringing = this._incoming.get(key);
    if (ringing) return ringing.accept(options);
    return this._startCall(target, options, null);
  }

  // --- internals: connection lifecycle -----------------------------------------------------

  /** @internal */
  async _openSocket() {
    this._retryTimer = null;
    const id = ++this._connSeq;
    this._setState('connecting', { attempt: this._attempt });
    let token;
    try {
      token = await this._tokens.get({ force: this._forceToken });
    } catch (error) {
      if (!this._wanted || id !== this._connSeq) return;
      const e = /** @type {SwitchboardError} */ (error);
      // Without a token, or with a refused refresh, retrying cannot help.
      if (e.code === 'no_token' || e.status === 401 || e.status === 403) {
        this._giveUp(e, {});
      } else {
        this._retryWithBackoff({ error: e });
      }
      return;
    }
    if (!this._wanted || id !== this._connSeq) return;
    this._forceToken = false;
    if (typeof this._WebSocket !== 'function') {
      this._giveUp(
        new SwitchboardError('no_websocket', 'no WebSocket implementation available'),
        {},
      );
      return;
    }
    // A session the server may have kept is resumed with message auth: `resume` after
    // `auth_required`, the token kept for `auth_token` should the resume fail.
    const resuming = this.options.resume && this._resume !== null;
    let ws;
    try {
      ws = new this._WebSocket(this._socketUrl(token, resuming));
    } catch (error) {
      this._giveUp(
        new SwitchboardError('invalid_url', 'cannot open the WebSocket', { cause: error }),
        {},
      );
      return;
    }
    /** @type {Connection} */
    const conn = {
      id,
      ws,
      token,
      resuming,
      authed: false,
      lastError: null,
      drain: null,
      pingTimer: null,
      pongTimer: null,
      drainTimer: null,
    };
    this._conn = conn;
    ws.onmessage = (event) => this._onSocketMessage(conn, event.data);
    ws.onclose = (event) => this._onSocketClose(conn, event.code, event.reason);
    ws.onerror = () => {};
  }

  /**
   * The upgrade URL; `query` mode puts the token in it, except for a resume (a token with the
   * upgrade authenticates at once, and a `resume` after that is too late).
   * @internal @param {string} token @param {boolean} resuming
   */
  _socketUrl(token, resuming) {
    const url = endpoint(this.options.url, '/ws', 'ws');
    if (this.options.authMode === 'query' && !resuming) {
      url.searchParams.set('token', token);
      url.searchParams.set('client_id', this._clientId);
    }
    return url.toString();
  }

  /** @internal @param {Connection} conn @param {any} data */
  _onSocketMessage(conn, data) {
    if (conn !== this._conn) return;
    this._heard(conn);
    let frame;
    try {
      frame = JSON.parse(String(data));
    } catch {
      return;
    }
    if (!frame || typeof frame !== 'object' || typeof frame.type !== 'string') return;
    if (Number.isSafeInteger(frame.seq) && frame.seq > 0) {
      // Each frame of a session once: a replay never repeats one already handled.
      if (frame.seq <= this._lastSeq) return;
      this._lastSeq = frame.seq;
    }
    /** @type {[string, any] | null} An event of the client's own for this frame. */
    let own = null;
    switch (frame.type) {
      case 'auth_required':
        this._sendAuth(conn);
        break;
      case 'auth_success':
        this._onAuthenticated(conn, frame);
        break;
      case 'resumed':
        own = this._onResumed(conn, frame);
        break;
      case 'resume_failed':
        own = this._onResumeFailed(conn, frame);
        break;
      case 'users_in_room':
        this._rooms.onUsersInRoom(frame);
        break;
      case 'user_joined':
        this._rooms.onUserJoined(frame);
        break;
      case 'user_left':
        this._rooms.onUserLeft(frame);
        break;
      case 'reconnect':
        this._onDrainNotice(conn, frame);
        break;
      case 'error':
        own = this._onErrorFrame(conn, frame);
        break;
      default:
        break;
    }
    const shown = withoutSecrets(frame);
    this._emit('message', shown);
    if (!OWN_EVENTS.has(frame.type)) this._emit(frame.type, shown);
    if (own) this._emit(own[0], own[1]);
    this._routeSignal(frame);
  }

  /** `resume` when resuming, else `auth_token`. @internal @param {Connection} conn */
  _sendAuth(conn) {
    const grant = this._resume;
    if (conn.resuming && grant) {
      this._outbox.spend();
      this._write(conn, {
        type: 'resume',
        session: grant.session,
        resume_token: grant.token,
        last_seq: this._lastSeq,
      });
      return;
    }
    conn.resuming = false;
    if (!conn.token) return;
    this._outbox.spend();
    this._write(conn, { type: 'auth_token', token: conn.token, clientId: this._clientId });
  }

  /** A new session. @internal @param {Connection} conn @param {any} frame */
  _onAuthenticated(conn, frame) {
    conn.authed = true;
    conn.resuming = false;
    conn.token = null;
    this._attempt = 0;
    this._tokenRetried = false;
    this._clientIdRetries = 0;
    this._clientId = frame.client_id;
    this._session = { user: frame.user, userId: frame.user_id, clientId: frame.client_id };
    this._resume = this.options.resume ? resumeGrantOf(frame) : null;
    this._lastSeq = 0;
    this._rooms.newSession();
    this._ice.onAuthenticated(frame.ice_servers);
    this._startKeepalive(conn);
    const rooms = this._rooms.names();
    for (const room of rooms) this._rooms.sending(room);
    this._outbox.attach(
      (f) => this._write(conn, f),
      rooms.map((room) => ({ type: 'join', room })),
    );
    this._setState('open', { ...this._session });
    const waiters = this._connectWaiters.splice(0);
    for (const w of waiters) w.resolve(/** @type {Session} */ (this._session));
  }

  /**
   * `resumed`: the session goes on with its client id and the rooms the server kept; nothing
   * is joined again but what needs it (see Rooms.resumed). The frames it missed follow.
   * @internal @param {Connection} conn @param {any} frame
   * @returns {[string, any] | null} The `resumed` event.
   */
  _onResumed(conn, frame) {
    if (!conn.resuming || conn.authed) return null;
    conn.resuming = false;
    conn.authed = true;
    conn.token = null;
    this._attempt = 0;
    this._tokenRetried = false;
    this._clientIdRetries = 0;
    if (typeof frame.client_id === 'string') this._clientId = frame.client_id;
    if (this._session) this._session = { ...this._session, clientId: this._clientId };
    this._startKeepalive(conn);
    const kept = Array.isArray(frame.rooms)
      ? frame.rooms.filter((/** @type {unknown} */ r) => typeof r === 'string')
      : [];
    const { join, leave } = this._rooms.resumed(kept);
    for (const room of join) this._rooms.sending(room);
    this._outbox.attach(
      (f) => this._write(conn, f),
      [
        ...leave.map((room) => ({ type: 'leave', room })),
        ...join.map((room) => ({ type: 'join', room })),
      ],
    );
    this._setState('open', { ...this._session, resumed: true });
    const waiters = this._connectWaiters.splice(0);
    for (const w of waiters) w.resolve(/** @type {Session} */ (this._session));
    /** @type {Record<string, unknown>} */
    const detail = { session: frame.session ?? this._resume?.session, rooms: kept };
    if (frame.missed !== undefined) detail.missed = frame.missed;
    return ['resumed', detail];
  }

  /**
   * `resume_failed`: the session is gone (or cannot be made whole). Authenticate afresh on the
   * same connection, with the same client id; the rooms are joined again at `auth_success`.
   * @internal @param {Connection} conn @param {any} frame
   * @returns {[string, any] | null} The `resume_failed` event.
   */
  _onResumeFailed(conn, frame) {
    if (!conn.resuming || conn.authed) return null;
    const reason = typeof frame.reason === 'string' ? frame.reason : 'unknown';
    this._resumeFailed(conn);
    /** @type {Record<string, unknown>} */
    const detail = { reason };
    if (typeof frame.message === 'string') detail.message = frame.message;
    return ['resume_failed', detail];
  }

  /**
   * Drops the session and sends `auth_token` instead; `auth_success` starts the new session.
   * @internal @param {Connection} conn
   */
  _resumeFailed(conn) {
    conn.resuming = false;
    this._resume = null;
    this._sendAuth(conn);
  }

  /** @internal @param {Connection} conn @param {number} code @param {string} reason */
  _onSocketClose(conn, code, reason) {
    if (conn !== this._conn) return;
    this._dropConnection(conn);
    if (!this._wanted) {
      this._giveUp(new SwitchboardError('closed', 'the connection closed'), { code, reason });
      return;
    }
    const error = conn.lastError;
    if (!this.options.reconnect) {
      this._giveUp(closeError(code, reason, error), { code, reason });
    } else if (conn.drain || code === CloseCode.SERVICE_RESTART) {
      this._attempt = 0;
      const delay = Math.floor(this._random() * (this.options.drainJitterMs + 1));
      this._scheduleRetry(delay, { code, reason, drain: conn.drain ?? 'service_restart' });
    } else if (
      code === CloseCode.POLICY_VIOLATION &&
      error?.code === 'token_expired' &&
      !conn.authed
    ) {
      this._retryWithFreshToken(code, reason, error);
    } else if (code === CloseCode.POLICY_VIOLATION && error?.code === 'client_id_taken') {
      this._retryWithFreshClientId(code, reason, error);
    } else if (code === CloseCode.POLICY_VIOLATION && error?.code === 'unavailable') {
      // The token could not be checked now (its API key could not be loaded): not final.
      this._retryWithBackoff({ code, reason, error: error.code });
    } else if (FINAL.has(code)) {
      this._giveUp(closeError(code, reason, error), { code, reason });
    } else {
      this._retryWithBackoff({ code, reason });
    }
  }

  /** @internal @param {number} code @param {string} reason @param {any} error */
  _retryWithFreshToken(code, reason, error) {
    if (!this._tokens.canRefresh || this._tokenRetried) {
      this._giveUp(closeError(code, reason, error), { code, reason });
      return;
    }
    this._tokenRetried = true;
    this._forceToken = true;
    this._scheduleRetry(0, { code, reason, error: error.code });
  }

  /** @internal @param {number} code @param {string} reason @param {any} error */
  _retryWithFreshClientId(code, reason, error) {
    if (this._clientIdRetries >= 3) {
      this._giveUp(closeError(code, reason, error), { code, reason });
      return;
    }
    this._clientIdRetries += 1;
    this._clientId = randomId(this._random);
    this._scheduleRetry(0, { code, reason, error: error.code });
  }

  /** @internal @param {Record<string, unknown>} detail */
  _retryWithBackoff(detail) {
    if (this._attempt >= this.options.maxAttempts) {
      const error = new SwitchboardError('max_attempts', 'gave up reconnecting', {
        closeCode: /** @type {number | undefined} */ (detail.code),
      });
      this._giveUp(error, detail);
      return;
    }
    const delay = backoffDelay(this._attempt, this.options, this._random);
    this._attempt += 1;
    this._scheduleRetry(delay, detail);
  }

  /** @internal @param {number} delay @param {Record<string, unknown>} detail */
  _scheduleRetry(delay, detail) {
    this._cancelRetry();
    this._setState('reconnecting', { ...detail, attempt: this._attempt, delayMs: delay });
    this._retryTimer = this._clock.setTimeout(() => this._openSocket(), delay);
  }

  /** @internal */
  _cancelRetry() {
    if (this._retryTimer !== null) this._clock.clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._connSeq += 1; // an attempt awaiting its token is void
  }

  /** Forgets a socket: its timers, the outbox's hold on it, room membership. @internal */
  _dropConnection(/** @type {Connection} */ conn) {
    if (this._conn === conn) this._conn = null;
    for (const timer of [conn.pingTimer, conn.pongTimer, conn.drainTimer]) {
      if (timer !== null) this._clock.clearTimeout(timer);
    }
    conn.ws.onmessage = null;
    conn.ws.onclose = null;
    this._outbox.detach();
    this._rooms.disconnected();
  }

  /**
   * The client stops: connect() and join() waiters fail, queued signals are dropped.
   * @internal @param {Error} error @param {Record<string, unknown>} detail
   */
  _giveUp(error, detail) {
    this._wanted = false;
    this._resume = null;
    this._outbox.clear();
    this._ice.stop();
    this._tokens.stop();
    for (const w of this._connectWaiters.splice(0)) w.reject(error);
    this._rooms.failAll(error);
    if (this._state !== 'closed') this._setState('closed', { ...detail, error });
  }

  /** @internal @param {ConnectionState} state @param {Record<string, unknown>} detail */
  _setState(state, detail) {
    const previous = this._state;
    this._state = state;
    this._emit('state', { ...detail, state, previous });
  }

  /** @internal @param {Connection} conn @param {object} frame */
  _write(conn, frame) {
    try {
      conn.ws.send(JSON.stringify(frame));
    } catch {
      // The socket is closing; its close event follows.
    }
  }

  /**
   * Queues or sends a frame; false when the client is closed or the queue is full.
   * @internal @param {object} frame
   */
  _push(frame) {
    if (!this._wanted) return false;
    return this._outbox.push(frame);
  }

  // --- internals: keepalive and drain ------------------------------------------------------

  /** @internal @param {Connection} conn */
  _startKeepalive(conn) {
    const { pingIntervalMs, pongTimeoutMs } = this.options;
    if (!(pingIntervalMs > 0)) return;
    const tick = () => {
      if (conn !== this._conn) return;
      this._outbox.spend();
      this._write(conn, { type: 'ping' });
      if (conn.pongTimer === null) {
        conn.pongTimer = this._clock.setTimeout(
          () => this._abandon(conn, 'keepalive timeout'),
          pongTimeoutMs,
        );
      }
      conn.pingTimer = this._clock.setTimeout(tick, pingIntervalMs);
    };
    conn.pingTimer = this._clock.setTimeout(tick, pingIntervalMs);
  }

  /** Any frame proves the connection alive. @internal @param {Connection} conn */
  _heard(conn) {
    if (conn.pongTimer !== null) this._clock.clearTimeout(conn.pongTimer);
    conn.pongTimer = null;
  }

  /**
   * `{"type":"reconnect"}`: the node is draining or was evicted. Its close (1012) follows
   * once it has flushed what it holds for us; if it does not come, leave anyway.
   * @internal @param {Connection} conn @param {any} frame
   */
  _onDrainNotice(conn, frame) {
    conn.drain = typeof frame.reason === 'string' ? frame.reason : 'shutdown';
    // The notice hands over the session to resume; one without, or `node_evicted` (the rooms
    // were told this client left), leaves nothing to resume.
    if (this._resume) this._resume = conn.drain === 'node_evicted' ? null : resumeGrantOf(frame);
    if (conn.drainTimer !== null) return;
    conn.drainTimer = this._clock.setTimeout(
      () => this._abandon(conn, 'drain', CloseCode.SERVICE_RESTART),
      this.options.drainGraceMs,
    );
  }

  /**
   * Gives up on a socket without waiting for its close event.
   * @internal @param {Connection} conn @param {string} reason @param {number} [code]
   */
  _abandon(conn, reason, code = ABANDONED) {
    if (conn !== this._conn) return;
    const { ws } = conn;
    ws.onmessage = null;
    ws.onclose = null;
    try {
      ws.close(4000, reason);
    } catch {
      // Already closed.
    }
    this._onSocketClose(conn, code, reason);
  }

  // --- internals: error frames -------------------------------------------------------------

  /**
   * @internal @param {Connection} conn @param {any} frame
   * @returns {[string, any] | null} A `resume_failed` event, for an error answering `resume`.
   */
  _onErrorFrame(conn, frame) {
    const code = frame.code;
    if (conn.resuming && !conn.authed) {
      // A node that does not take `resume` (or not this one) answers it with an error and
      // waits for a token: authenticate afresh, as after `resume_failed`.
      this._resumeFailed(conn);
      return ['resume_failed', { reason: typeof code === 'string' ? code : 'error' }];
    }
    conn.lastError = frame;
    if (code === 'rate_limited' && conn.authed && Number(frame.retry_after_ms) > 0) {
      this._outbox.pause(Number(frame.retry_after_ms));
    }
    const joinRefusal =
      JOIN_REFUSALS.has(code) && (frame.room !== undefined || code === 'too_many_rooms');
    if (joinRefusal && conn.authed && !frame.target_user_id) this._rooms.refuse(frame);
    this._endCallsOnError(frame);
    return null;
  }

  /** A signal that cannot reach its peer ends the call with it. @internal @param {any} frame */
  _endCallsOnError(frame) {
    for (const call of this.calls) {
      const p = call.peer;
      if (frame.code === 'peer_not_found' && p.via === 'room' && p.clientId === frame.to) {
        call._finish('peer_not_found', true);
      } else if (
        (frame.code === 'user_offline' || frame.code === 'forbidden') &&
        p.via === 'user' &&
        frame.target_user_id !== undefined &&
        p.userId === frame.target_user_id
      ) {
        call._finish(frame.code, true);
      }
    }
  }

  // --- internals: call signaling -----------------------------------------------------------

  /**
   * Hands a relayed signal to its call, or rings.
   * @internal @param {any} frame
   */
  _routeSignal(frame) {
    const signal = callSignalOf(frame);
    if (!signal) return;
    if (frame.type.startsWith('webrtc_')) {
      const mine = frame.target_client_id;
      if (typeof mine === 'string' && mine !== this._clientId) {
        // Meant for another device of this user: that one took the call.
        const ringing = this._incoming.get(`user:${frame.from_user_id}`);
        if (ringing && ringing.peer.clientId === frame.from) ringing._cancel('answered_elsewhere');
        return;
      }
    }
    const peer = peerOfFrame(frame);
    const key = callKey(peer);
    const call = this._calls.get(key);
    if (call) {
      call._onRemote(signal, peer);
      return;
    }
    const ringing = this._incoming.get(key);
    if (ringing) {
      ringing._onRemote(signal, peer);
      return;
    }
    if (signal.kind === 'description' && signal.description?.type === 'offer') {
      const incoming = new IncomingCall(this, peer, signal.description);
      this._incoming.set(key, incoming);
      this._emit('incoming', incoming);
    }
  }

  /**
   * Sends a call's description, candidate or bye in the call's shape of signal.
   * @internal @param {Peer} peer @param {'description' | 'candidate' | 'bye'} kind
   * @param {any} body @param {{anyDevice?: boolean}} [options]
   */
  _sendCallSignal(peer, kind, body, { anyDevice = false } = {}) {
    if (peer.via === 'room') {
      const frame =
        kind === 'description'
          ? { type: body.type, [body.type]: body }
          : kind === 'candidate'
            ? { type: 'ice_candidate', candidate: body }
            : { type: 'signal', data: { type: 'bye', reason: body.reason } };
      return this.send(
        /** @type {string} */ (peer.clientId),
        /** @type {any} */ (frame.type),
        frame,
        {
          room: peer.room ?? undefined,
        },
      );
    }
    /** @type {Record<string, unknown>} */
    const extra = {};
    if (peer.clientId && !anyDevice) extra.target_client_id = peer.clientId;
    if (kind === 'description') {
      return this.sendToUser(
        /** @type {string} */ (peer.userId),
        /** @type {any} */ (`webrtc_${body.type}`),
        body,
        extra,
      );
    }
    if (kind === 'candidate') {
      return this.sendToUser(
        /** @type {string} */ (peer.userId),
        'webrtc_ice_candidate',
        body,
        extra,
      );
    }
    extra.bye = { reason: body.reason };
    return this.sendToUser(
      /** @type {string} */ (peer.userId),
      'webrtc_ice_candidate',
      null,
      extra,
    );
  }

  /**
   * Whether this client is the polite side towards `peer`: compares client ids for room
   * calls; user ids (then client ids, for a user's own devices) for user-addressed calls.
   * @internal @param {Peer} peer
   */
  _politeTowards(peer) {
    if (peer.via === 'user') {
      const mine = this._session?.userId ?? '';
      if (mine !== peer.userId) return isPolite(mine, peer.userId ?? '');
    }
    return isPolite(this._clientId, peer.clientId ?? '');
  }

  /**
   * @internal @param {string} peer @param {CallOptions} options @returns {Peer}
   */
  _peerFor(peer, options) {
    if (typeof peer !== 'string' || !peer) throw new TypeError('call() needs a peer id');
    const member = this._rooms.find(peer, options.room);
    const via = options.via ?? (member ? 'room' : 'user');
    if (via === 'room') {
      return {
        via,
        clientId: peer,
        userId: member?.info.user_id ?? null,
        username: member?.info.username ?? null,
        room: options.room ?? member?.room ?? this._rooms.only() ?? null,
      };
    }
    return {
      via: 'user',
      clientId: options.clientId ?? null,
      userId: peer,
      username: null,
      room: null,
    };
  }

  /**
   * Creates the call's connection once ICE servers are known.
   * @internal @param {Peer} peer @param {CallOptions} options
   * @param {{offer: RTCSessionDescriptionInit, candidates: RTCIceCandidateInit[]} | null} answering
   * @returns {Promise<Call>}
   */
  async _startCall(peer, options, answering) {
    if (typeof this._RTCPeerConnection !== 'function') {
      throw new SwitchboardError('no_webrtc', 'no RTCPeerConnection available');
    }
    const call = new Call(this, peer, options, answering === null);
    this._calls.set(callKey(peer), call);
    const servers = await this._ice.ready(this.options.iceWaitMs);
    if (call.state === 'closed') return call;
    call._start(servers, answering);
    return call;
  }

  /** @internal @param {Call} call */
  _forgetCall(call) {
    const key = callKey(call.peer);
    if (this._calls.get(key) === call) this._calls.delete(key);
  }

  /** @internal @param {RTCIceServer[]} servers */
  _applyIceServers(servers) {
    for (const call of this._calls.values()) call._setIceServers(servers);
  }
}

/** @param {Record<string, unknown>} o */
function stripUndefined(o) {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

/**
 * The session and resume token a frame (`auth_success`, `reconnect`) carries, or null.
 * @param {any} frame @returns {ResumeGrant | null}
 */
function resumeGrantOf(frame) {
  const { session, resume_token: token } = frame;
  if (typeof session !== 'string' || !session || typeof token !== 'string' || !token) return null;
  return { session, token };
}

/**
 * The frame as events show it: without the resume token (a secret), otherwise as it came.
 * @param {any} frame
 */
function withoutSecrets(frame) {
  if (!('resume_token' in frame)) return frame;
  const { resume_token: _secret, ...shown } = frame;
  return shown;
}

/** @param {any} f @returns {Member} */
function memberOf(f) {
  return { client_id: f.client_id, username: f.username, user_id: f.user_id };
}

/** @param {number} code @param {string} reason @param {any} frame */
function closeError(code, reason, frame) {
  const name =
    frame?.code ?? CLOSE_NAMES[/** @type {keyof typeof CLOSE_NAMES} */ (code)] ?? `close_${code}`;
  const message = frame?.message ?? (reason || `connection closed with ${code}`);
  return new SwitchboardError(name, message, { closeCode: code, frame: frame ?? undefined });
}

/** @param {Peer} peer */
function callKey(peer) {
  return peer.via === 'room' ? `room:${peer.clientId}` : `user:${peer.userId}`;
}

/**
 * The sender of a relayed signal, as a call peer.
 * @param {any} f @returns {Peer}
 */
function peerOfFrame(f) {
  if (f.type.startsWith('webrtc_')) {
    return {
      via: 'user',
      clientId: f.from ?? null,
      userId: f.from_user_id ?? f.sender_user_id ?? null,
      username: f.username ?? null,
      room: null,
    };
  }
  return {
    via: 'room',
    clientId: f.from ?? null,
    userId: f.user_id ?? null,
    username: f.username ?? null,
    room: f.room ?? null,
  };
}

/**
 * @typedef {{kind: 'description', description: RTCSessionDescriptionInit}
 *   | {kind: 'candidate', candidate: RTCIceCandidateInit | null}
 *   | {kind: 'bye', reason: string}} CallSignal
 */

/**
 * What a relayed frame means to a call, or null.
 * @param {any} f @returns {CallSignal | null}
 */
function callSignalOf(f) {
  switch (f.type) {
    case 'offer':
    case 'answer':
      return f[f.type] ? { kind: 'description', description: f[f.type] } : null;
    case 'ice_candidate':
      return { kind: 'candidate', candidate: f.candidate ?? null };
    case 'signal':
      return f.data && f.data.type === 'bye' ? { kind: 'bye', reason: byeReason(f.data) } : null;
    case 'webrtc_offer':
    case 'webrtc_answer':
      return f.data ? { kind: 'description', description: f.data } : null;
    case 'webrtc_ice_candidate':
      if (f.bye) return { kind: 'bye', reason: byeReason(f.bye) };
      return { kind: 'candidate', candidate: f.data ?? null };
    default:
      return null;
  }
}

/** @param {any} bye */
function byeReason(bye) {
  return typeof bye.reason === 'string' && bye.reason ? bye.reason : 'hangup';
}

// ---------------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------------

/**
 * One peer connection with one peer, negotiated with the "perfect negotiation" pattern: either
 * side may (re)negotiate at any time; when offers cross, the impolite side ignores the
 * other's and the polite side rolls its own back and answers.
 *
 * Events: `open` (the data channel opened), `message` ({data}), `track` ({track, streams}),
 * `state` ({state}: the connection state), `hangup` ({reason, remote}), `error` ({error}).
 */
export class Call extends Emitter {
  /**
   * Made by `client.call()` and `incoming.accept()`.
   * @param {SwitchboardClient} client
   * @param {Peer} peer
   * @param {CallOptions} options
   * @param {boolean} outgoing
   */
  constructor(client, peer, options, outgoing) {
    super();
    /** @internal */ this._client = client;
    /** @type {Peer} The other side (a user call learns `clientId` from the first answer). */
    this.peer = { ...peer };
    /** Whether this side started the call. */
    this.outgoing = outgoing;
    /** @type {RTCPeerConnection | null} */
    this.pc = null;
    /** @type {RTCDataChannel | null} */
    this.dataChannel = null;
    /** @type {'new' | RTCPeerConnectionState} */
    this.state = 'new';
    /** @internal */ this._options = options;
    /** @internal @type {RTCIceCandidateInit[]} */ this._pendingCandidates = [];
    /** @internal */ this._ignoreOffer = false;
    /** @internal */ this._answered = false;
    /** @internal */ this._restarts = 0;
    /** @internal */ this._started = /** @type {(v?: unknown) => void} */ (() => {});
    /** @internal @type {(() => Promise<void>) | null} The step that must come first. */
    this._first = null;
    /** Negotiation steps run one at a time, after the connection exists. @internal */
    this._chain = new Promise((resolve) => {
      this._started = resolve;
    })
      .then(() => (this._first && this.state !== 'closed' ? this._first() : undefined))
      .catch((error) => this._emit('error', { error }));
  }

  /** Whether this side is the polite one (it yields when offers cross). */
  get polite() {
    return this._client._politeTowards(this.peer);
  }

  /**
   * Sends text over the data channel.
   * @param {string} text
   * @returns {boolean} false when the channel is not open.
   */
  send(text) {
    if (!this.dataChannel || this.dataChannel.readyState !== 'open') return false;
    this.dataChannel.send(text);
    return true;
  }

  /**
   * Ends the call and tells the peer (a `bye`, see web/README.md).
   * @param {string} [reason]
   */
  hangup(reason = 'hangup') {
    if (this.state === 'closed') return;
    this._client._sendCallSignal(this.peer, 'bye', { reason });
    this._finish(reason, false);
  }

  /**
   * Creates the connection, then offers (outgoing) or answers `answering.offer`.
   * @internal @param {RTCIceServer[]} iceServers
   * @param {{offer: RTCSessionDescriptionInit, candidates: RTCIceCandidateInit[]} | null} answering
   */
  _start(iceServers, answering) {
    const Ctor = this._client._RTCPeerConnection;
    const pc = new Ctor({ ...this._options.rtcConfig, iceServers });
    this.pc = pc;
    pc.addEventListener('icecandidate', (e) => {
      if (e.candidate) this._signal('candidate', candidateJson(e.candidate));
    });
    pc.addEventListener('negotiationneeded', () => this._enqueue(() => this._offer()));
    pc.addEventListener('track', (e) =>
      this._emit('track', { track: e.track, streams: e.streams }),
    );
    pc.addEventListener('connectionstatechange', () => this._onConnectionState());
    if (answering) {
      this._pendingCandidates.push(...answering.candidates);
      this._first = () => this._answerFirstOffer(answering.offer);
      this._started();
    } else {
      this._started();
      this._attachLocal();
    }
  }

  /** Media tracks and the negotiated data channel. @internal */
  _attachLocal() {
    const pc = /** @type {RTCPeerConnection} */ (this.pc);
    const stream = this._options.stream;
    if (stream) for (const track of stream.getTracks()) pc.addTrack(track, stream);
    const label = this._options.dataChannelLabel ?? DATA_CHANNEL_LABEL;
    const channel = pc.createDataChannel(label, { negotiated: true, id: DATA_CHANNEL_ID });
    this.dataChannel = channel;
    channel.addEventListener('open', () => this._emit('open', {}));
    channel.addEventListener('message', (e) => this._emit('message', { data: e.data }));
  }

  /**
   * Runs `task` after every earlier negotiation step; a failure is reported, not thrown.
   * @internal @param {() => Promise<void> | void} task
   */
  _enqueue(task) {
    const run = this._chain.then(() => (this.state === 'closed' ? undefined : task()));
    this._chain = run.catch((error) => {
      if (this.state !== 'closed') this._emit('error', { error });
    });
    return this._chain;
  }

  /** negotiationneeded: offer, unless a negotiation is under way (it fires again). @internal */
  async _offer() {
    const pc = /** @type {RTCPeerConnection} */ (this.pc);
    if (pc.signalingState !== 'stable') return;
    await pc.setLocalDescription();
    this._sendDescription();
  }

  /**
   * The offer an incoming call rang with: the remote description first, so local tracks
   * reuse its transceivers, then the answer.
   * @internal @param {RTCSessionDescriptionInit} offer
   */
  async _answerFirstOffer(offer) {
    const pc = /** @type {RTCPeerConnection} */ (this.pc);
    await pc.setRemoteDescription(offer);
    this._answered = true;
    await this._flushCandidates();
    this._attachLocal();
    await pc.setLocalDescription();
    this._sendDescription();
  }

  /**
   * A signal from the peer (its `from` may fill in which device a user call talks to).
   * @internal @param {CallSignal} signal @param {Peer} from
   */
  _onRemote(signal, from) {
    if (this.peer.via === 'user') {
      if (!this.peer.clientId) {
        this.peer.clientId = from.clientId;
        this.peer.username = from.username;
      } else if (from.clientId !== this.peer.clientId) {
        // Another device of the user answered too late: this call talks to the first one.
        if (signal.kind === 'description') {
          this._client._sendCallSignal({ ...this.peer, clientId: from.clientId }, 'bye', {
            reason: 'answered_elsewhere',
          });
        }
        return;
      }
    }
    if (signal.kind === 'description') {
      this._enqueue(() => this._onDescription(signal.description));
    } else if (signal.kind === 'candidate') {
      this._enqueue(() => this._onCandidate(signal.candidate));
    } else {
      this._onBye(signal.reason);
    }
  }

  /** The peer hung up or declined. @internal @param {string} reason */
  _onBye(reason) {
    if (this.peer.via === 'user' && this.outgoing && !this._answered) {
      // One device declined: stop the user's other devices ringing.
      this._client._sendCallSignal(this.peer, 'bye', { reason }, { anyDevice: true });
    }
    this._finish(reason, true);
  }

  /**
   * Perfect negotiation's description handler.
   * @internal @param {RTCSessionDescriptionInit} description
   */
  async _onDescription(description) {
    const pc = /** @type {RTCPeerConnection} */ (this.pc);
    if (description.type !== 'offer' && description.type !== 'answer') return;
    const collision = description.type === 'offer' && pc.signalingState !== 'stable';
    this._ignoreOffer = !this.polite && collision;
    if (this._ignoreOffer) return;
    // An answer to an offer this side rolled back is stale.
    if (description.type === 'answer' && pc.signalingState !== 'have-local-offer') return;
    if (collision) await pc.setLocalDescription({ type: 'rollback' });
    await pc.setRemoteDescription(description);
    this._answered = true;
    await this._flushCandidates();
    if (description.type === 'offer') {
      await pc.setLocalDescription();
      this._sendDescription();
    }
  }

  /**
   * Candidates wait until a remote description is set.
   * @internal @param {RTCIceCandidateInit | null} candidate
   */
  async _onCandidate(candidate) {
    if (!candidate) return;
    const pc = /** @type {RTCPeerConnection} */ (this.pc);
    if (!pc.remoteDescription) {
      this._pendingCandidates.push(candidate);
      return;
    }
    await this._addCandidate(candidate);
  }

  /** @internal */
  async _flushCandidates() {
    for (const candidate of this._pendingCandidates.splice(0)) await this._addCandidate(candidate);
  }

  /** @internal @param {RTCIceCandidateInit} candidate */
  async _addCandidate(candidate) {
    try {
      await /** @type {RTCPeerConnection} */ (this.pc).addIceCandidate(candidate);
    } catch (error) {
      // Candidates of an offer this side ignored are expected to fail.
      if (!this._ignoreOffer) this._emit('error', { error });
    }
  }

  /** @internal */
  _sendDescription() {
    const description = /** @type {RTCPeerConnection} */ (this.pc).localDescription;
    if (description) this._signal('description', descriptionJson(description));
  }

  /** @internal @param {'description' | 'candidate'} kind @param {any} body */
  _signal(kind, body) {
    if (this.state !== 'closed') this._client._sendCallSignal(this.peer, kind, body);
  }

  /** @internal */
  _onConnectionState() {
    const pc = /** @type {RTCPeerConnection} */ (this.pc);
    const state = pc.connectionState;
    if (this.state === 'closed') return;
    this.state = state;
    this._emit('state', { state });
    if (state === 'connected') this._restarts = 0;
    if (state !== 'failed') return;
    if (this._restarts < this._client.options.maxIceRestarts) {
      this._restarts += 1;
      pc.restartIce();
    } else {
      this.hangup('failed');
    }
  }

  /**
   * New TURN credentials: used from the next ICE gathering (a restart) on.
   * @internal @param {RTCIceServer[]} servers
   */
  _setIceServers(servers) {
    if (!this.pc) return;
    try {
      this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers: servers });
    } catch {
      // A configuration the browser refuses to change keeps the old servers.
    }
  }

  /**
   * Closes the connection and forgets the call.
   * @internal @param {string} reason @param {boolean} remote
   */
  _finish(reason, remote) {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this._started();
    try {
      this.dataChannel?.close();
      this.pc?.close();
    } catch {
      // Closing twice is harmless.
    }
    this._client._forgetCall(this);
    this._emit('hangup', { reason, remote });
  }
}

/**
 * A call ringing: an offer from a peer this client has no call with. `accept()` answers it,
 * `reject()` declines it (the peer's call ends with reason `rejected`).
 *
 * Events: `cancel` ({reason}): the caller hung up (`hangup`), another device of this user
 * took it (`answered_elsewhere`), nobody answered within `ringTimeoutMs` (`timeout`), or the
 * client closed (`closed`).
 */
export class IncomingCall extends Emitter {
  /**
   * @param {SwitchboardClient} client
   * @param {Peer} peer
   * @param {RTCSessionDescriptionInit} offer
   */
  constructor(client, peer, offer) {
    super();
    /** @internal */ this._client = client;
    /** @type {Peer} */
    this.peer = { ...peer };
    /** @type {'ringing' | 'accepted' | 'rejected' | 'cancelled'} */
    this.state = 'ringing';
    /** @internal */ this._offer = offer;
    /** @internal @type {RTCIceCandidateInit[]} */ this._candidates = [];
    /** @internal */
    this._timer = client._clock.setTimeout(
      () => this._cancel('timeout'),
      client.options.ringTimeoutMs,
    );
  }

  /**
   * Answers the call.
   * @param {CallOptions} [options] `stream`, `rtcConfig`, `dataChannelLabel`.
   * @returns {Promise<Call>}
   */
  accept(options = {}) {
    if (this.state !== 'ringing') {
      return Promise.reject(new SwitchboardError('not_ringing', `the call is ${this.state}`));
    }
    this._settle('accepted');
    return this._client._startCall(this.peer, options, {
      offer: this._offer,
      candidates: this._candidates,
    });
  }

  /**
   * Declines the call.
   * @param {string} [reason]
   */
  reject(reason = 'rejected') {
    if (this.state !== 'ringing') return;
    this._settle('rejected');
    this._client._sendCallSignal(this.peer, 'bye', { reason });
  }

  /** @internal @param {CallSignal} signal @param {Peer} from */
  _onRemote(signal, from) {
    if (from.clientId !== this.peer.clientId) return;
    if (signal.kind === 'candidate' && signal.candidate) this._candidates.push(signal.candidate);
    else if (signal.kind === 'bye') this._cancel(signal.reason);
    else if (signal.kind === 'description' && signal.description.type === 'offer') {
      this._offer = signal.description;
    }
  }

  /** @internal @param {string} reason */
  _cancel(reason) {
    if (this.state !== 'ringing') return;
    this._settle('cancelled');
    this._emit('cancel', { reason });
  }

  /** @internal @param {'accepted' | 'rejected' | 'cancelled'} state */
  _settle(state) {
    this.state = state;
    this._client._clock.clearTimeout(this._timer);
    const key = callKey(this.peer);
    if (this._client._incoming.get(key) === this) this._client._incoming.delete(key);
  }
}

export default SwitchboardClient;
