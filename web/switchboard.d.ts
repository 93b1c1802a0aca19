// Type declarations for switchboard.js, the Switchboard browser client.

export declare const VERSION: string;

/** WebSocket close codes the server sends (docs/protocol.md, "Close codes"). */
export declare const CloseCode: Readonly<{
  NORMAL: 1000;
  INVALID_PAYLOAD: 1007;
  POLICY_VIOLATION: 1008;
  MESSAGE_TOO_BIG: 1009;
  INTERNAL_ERROR: 1011;
  SERVICE_RESTART: 1012;
  TRY_AGAIN_LATER: 1013;
  REPLACED: 4001;
  SLOW_CONSUMER: 4002;
  IDLE_TIMEOUT: 4003;
  REVOKED: 4004;
}>;

/** Close codes after which the client does not reconnect (1008 has two exceptions). */
export declare const FINAL_CLOSE_CODES: readonly number[];
export declare const ROOM_SIGNAL_TYPES: readonly RoomSignalType[];
export declare const USER_SIGNAL_TYPES: readonly UserSignalType[];
/** The id of every call's negotiated data channel. */
export declare const DATA_CHANNEL_ID: 0;
export declare const DATA_CHANNEL_LABEL: 'switchboard';

export type RoomSignalType = 'offer' | 'answer' | 'ice_candidate' | 'signal';
export type UserSignalType = 'webrtc_offer' | 'webrtc_answer' | 'webrtc_ice_candidate';
export type ConnectionState = 'closed' | 'connecting' | 'open' | 'reconnecting';

export type TokenProvider = (info: { forceRefresh: boolean }) => string | Promise<string>;

export interface WebSocketLike {
  readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
}

export interface ClientOptions {
  /** Base URL of a node; a path prefix is kept. Default: the page's origin. */
  url?: string;
  /** A token, or a function returning one whenever one is needed (connections, `api()`). */
  token?: string | TokenProvider;
  /** `message` (default): an `auth_token` frame. `query`: `?token=` on the upgrade. */
  authMode?: 'message' | 'query';
  /** The client id to claim (1-64 of `[A-Za-z0-9_-]`); random, kept across reconnects. */
  clientId?: string;
  /** Reconnect after closes the protocol allows (default true). */
  reconnect?: boolean;
  /**
   * After a lost connection, resume the server's session (`resume` after `auth_required`: same
   * client id, rooms kept, missed frames replayed) before authenticating afresh (default true).
   */
  resume?: boolean;
  /** First backoff ceiling in ms (default 500). */
  initialDelayMs?: number;
  /** Largest backoff ceiling in ms (default 30000). */
  maxDelayMs?: number;
  /** Consecutive failed attempts before giving up (default Infinity). */
  maxAttempts?: number;
  /** After a `reconnect` notice: reconnect within a random 0..drainJitterMs (default 250). */
  drainJitterMs?: number;
  /** After a `reconnect` notice: leave after this long without a close (default 3000). */
  drainGraceMs?: number;
  /** `ping` interval in ms; 0 turns keepalive off (default 20000). */
  pingIntervalMs?: number;
  /** A connection silent this long after a `ping` is replaced (default 10000). */
  pongTimeoutMs?: number;
  /** How long `join()` waits for `users_in_room` (default 15000). */
  requestTimeoutMs?: number;
  /** Fixed ICE servers: the server's are then neither taken nor fetched. */
  iceServers?: RTCIceServer[];
  /**
   * Where ICE servers are fetched when `auth_success` has none
   * (default `/api/webrtc/ice-servers`); null: never.
   */
  iceEndpoint?: string | null;
  /** How long a new call waits for ICE servers in ms (default 3000). */
  iceWaitMs?: number;
  /** Share of a token's or TURN credential's lifetime after which it is renewed (default 0.8). */
  refreshFraction?: number;
  /** Frames per second at most; 0: unpaced (default 25). */
  sendRate?: number;
  /** Frames at once (default 100). */
  sendBurst?: number;
  /** Signals kept while disconnected or paced (default 256). */
  maxQueuedFrames?: number;
  /** An unanswered incoming call is dropped after this long in ms (default 60000). */
  ringTimeoutMs?: number;
  /** ICE restarts a failed call tries before it hangs up (default 1). */
  maxIceRestarts?: number;
  WebSocket?: new (url: string) => WebSocketLike;
  fetch?: typeof fetch;
  RTCPeerConnection?: new (config?: RTCConfiguration) => RTCPeerConnection;
  setTimeout?: (fn: () => void, ms: number) => any;
  clearTimeout?: (id: any) => void;
  now?: () => number;
  random?: () => number;
}

export interface Session {
  user: string;
  userId: string;
  clientId: string;
}

export interface Member {
  client_id: string;
  username: string;
  user_id: string;
}

export interface Peer {
  via: 'room' | 'user';
  /** For user calls: the device that answered, null until one has. */
  clientId: string | null;
  userId: string | null;
  username: string | null;
  room: string | null;
}

export interface CallOptions {
  /** Default: `room` when the peer is a client id of a joined room's member, else `user`. */
  via?: 'room' | 'user';
  room?: string;
  /** For a user call: the one device to call. */
  clientId?: string;
  stream?: MediaStream;
  rtcConfig?: RTCConfiguration;
  dataChannelLabel?: string;
}

/**
 * Any frame the server sends: `type` plus its fields (docs/protocol.md). Frames the server
 * delivers in a session carry `seq`.
 */
export interface ServerFrame {
  type: string;
  seq?: number;
  [field: string]: any;
}

export interface ErrorFrame extends ServerFrame {
  type: 'error';
  code: string;
  message: string;
  room?: string;
  to?: string;
  field?: string;
  target_user_id?: string;
  max?: number;
  retry_after_ms?: number;
}

export interface StateDetail {
  state: ConnectionState;
  previous: ConnectionState;
  /** reconnecting: consecutive failed attempts so far. */
  attempt?: number;
  /** reconnecting: the wait before the next attempt. */
  delayMs?: number;
  /** The close code that led here, if any. */
  code?: number;
  reason?: string;
  /** reconnecting after a `reconnect` notice or 1012: its reason. */
  drain?: string;
  /** open: the connection resumed the session (same client id, rooms kept). */
  resumed?: boolean;
  /** closed: why the client stopped. */
  error?: SwitchboardError;
  user?: string;
  userId?: string;
  clientId?: string;
}

export interface ResumedDetail {
  /** The session's id. */
  session: string;
  /** The rooms the server kept (not joined again). */
  rooms: string[];
  /** How many frames were missed, when the server says. */
  missed?: number;
}

export interface ResumeFailedDetail {
  /**
   * `expired`, `invalid_token`, `overflow`, `disabled` (docs/protocol.md), `closed`, or the
   * code of an error frame that answered `resume`.
   */
  reason: string;
  message?: string;
}

export interface ClientEventMap {
  state: StateDetail;
  message: ServerFrame;
  auth_required: ServerFrame;
  /** Without `resume_token` (a secret the client keeps to itself). */
  auth_success: ServerFrame & {
    user: string;
    user_id: string;
    client_id: string;
    ice_servers?: RTCIceServer[];
    session?: string;
  };
  users_in_room: ServerFrame & { room: string; users: Member[] };
  user_joined: ServerFrame & Member & { room: string };
  user_left: ServerFrame & Member & { room: string };
  offer: ServerFrame;
  answer: ServerFrame;
  ice_candidate: ServerFrame;
  signal: ServerFrame;
  webrtc_offer: ServerFrame;
  webrtc_answer: ServerFrame;
  webrtc_ice_candidate: ServerFrame;
  pong: ServerFrame;
  /** Without `resume_token`. */
  reconnect: ServerFrame & { reason: string; session?: string };
  error: ErrorFrame;
  /** The connection resumed the session; the frames it missed follow as their own events. */
  resumed: ResumedDetail;
  /** The session could not be resumed: the client authenticates afresh and joins its rooms. */
  resume_failed: ResumeFailedDetail;
  incoming: IncomingCall;
  iceservers: { iceServers: RTCIceServer[]; expiresAt: number | null };
  ice_error: { error: SwitchboardError };
  token: { expiresAt: number };
  token_error: { error: SwitchboardError };
}

export interface CallEventMap {
  open: {};
  message: { data: any };
  track: { track: MediaStreamTrack; streams: readonly MediaStream[] };
  state: { state: RTCPeerConnectionState };
  hangup: { reason: string; remote: boolean };
  error: { error: unknown };
}

export interface IncomingCallEventMap {
  cancel: { reason: string };
}

export declare class SwitchboardError extends Error {
  constructor(
    code: string,
    message: string,
    extra?: {
      status?: number;
      closeCode?: number;
      retryAfterMs?: number;
      frame?: object;
      cause?: unknown;
    },
  );
  /** The server's error code where there is one (`unauthorized`, `room_full`, ...). */
  code: string;
  status?: number;
  closeCode?: number;
  retryAfterMs?: number;
  frame?: object;
}

export declare class SwitchboardEvent<T = any> extends Event {
  constructor(type: string, detail: T);
  readonly detail: T;
}

export declare class Emitter<M = Record<string, any>> extends EventTarget {
  on<K extends keyof M & string>(
    type: K,
    fn: (detail: M[K], event: SwitchboardEvent<M[K]>) => void,
  ): () => void;
  on(type: string, fn: (detail: any, event: SwitchboardEvent) => void): () => void;
  once<K extends keyof M & string>(
    type: K,
    fn: (detail: M[K], event: SwitchboardEvent<M[K]>) => void,
  ): () => void;
  once(type: string, fn: (detail: any, event: SwitchboardEvent) => void): () => void;
}

export declare class SwitchboardClient extends Emitter<ClientEventMap> {
  constructor(options?: ClientOptions);
  /** The options in effect, defaults filled in (without the token). */
  readonly options: Readonly<Omit<ClientOptions, 'token'> & { url: string }>;
  readonly state: ConnectionState;
  readonly clientId: string;
  readonly userId: string | null;
  readonly session: Session | null;
  /** The id of the server's session this client resumes after a lost connection, or null. */
  readonly sessionId: string | null;
  /** The highest `seq` received in the current session (0 before the first). */
  readonly lastSeq: number;
  readonly rooms: string[];
  readonly calls: Call[];
  members(room: string): Member[];
  iceServers(): RTCIceServer[];

  login(username: string, password: string): Promise<any>;
  logout(): Promise<void>;
  setToken(token: string | TokenProvider): void;
  api(path: string, init?: { method?: string; json?: unknown }): Promise<any>;

  connect(): Promise<Session>;
  close(): void;

  join(room: string): Promise<Member[]>;
  leave(room: string): Promise<void>;

  send(
    to: string | null,
    type: RoomSignalType,
    payload?: Record<string, unknown>,
    options?: { room?: string },
  ): boolean;
  broadcast(
    type: RoomSignalType,
    payload?: Record<string, unknown>,
    options?: { room?: string },
  ): boolean;
  sendToUser(
    userId: string,
    type: UserSignalType,
    data: unknown,
    extra?: Record<string, unknown>,
  ): boolean;

  call(peer: string, options?: CallOptions): Promise<Call>;
}

export declare class Call extends Emitter<CallEventMap> {
  private constructor();
  readonly peer: Peer;
  /** Whether this side started the call. */
  readonly outgoing: boolean;
  readonly pc: RTCPeerConnection | null;
  readonly dataChannel: RTCDataChannel | null;
  readonly state: 'new' | RTCPeerConnectionState;
  /** Whether this side yields when offers cross. */
  readonly polite: boolean;
  send(text: string): boolean;
  hangup(reason?: string): void;
}

export declare class IncomingCall extends Emitter<IncomingCallEventMap> {
  private constructor();
  readonly peer: Peer;
  readonly state: 'ringing' | 'accepted' | 'rejected' | 'cancelled';
  accept(options?: Pick<CallOptions, 'stream' | 'rtcConfig' | 'dataChannelLabel'>): Promise<Call>;
  reject(reason?: string): void;
}

export declare function backoffDelay(
  attempt: number,
  limits: { initialDelayMs: number; maxDelayMs: number },
  random: () => number,
): number;
export declare function isPolite(mine: string, theirs: string): boolean;
export declare function normalizeIce(body: unknown): {
  servers: RTCIceServer[];
  ttl: number | null;
};

export default SwitchboardClient;
