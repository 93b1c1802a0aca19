//! One WebSocket connection: authentication, the initial join, then a single `select!` over the
//! socket, the outbox, the keepalive timer and the close control. This is the only module that
//! knows axum's WebSocket type.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc};
use tracing::Instrument;

use crate::auth::{Credential, Identity};
use crate::config::UserSignals;
use crate::hub::Relayed;
use crate::limits::{MessageLimit, PendingSlot, Slot, Verdict};
use crate::metrics::{self as m, MessageKind};
use crate::presence::{AddressHold, Presence};
use crate::protocol::{
    ClientId, ClientMessage, CloseCode, ConnId, ErrorCode, ErrorFrame, Frame, Member, RoomId,
    ServerMessage, Stamp, UserId, inbound, matches_any, unix_micros,
};
use crate::registry::{ConnHandle, Control};
use crate::resume::{Described, Parked, Refusal, Replay, Ticket};
use crate::signaling::{Action, Session};
use crate::state::AppState;

mod moved;

use moved::Taken;

/// Frames written per flush when the outbox has a backlog.
const WRITE_BATCH: usize = 64;
/// How long a closing connection may take to send its close frame, and then waits for the
/// client's.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// How long a draining node goes on relaying what a client sent before it read the
/// `reconnect` notice.
const DRAIN_READ: Duration = Duration::from_secs(1);
/// A pause in what a client sends after a drain's notice that ends the relaying: it read the
/// notice (a client sends nothing more then; it waits for the close or leaves).
const DRAIN_QUIET: Duration = Duration::from_millis(250);

/// What the upgrade handler learned before the upgrade.
pub struct Start {
    pub room: Option<RoomId>,
    /// The verdict on a token given with the upgrade, if one was.
    pub pre_auth: Option<Result<Identity, ErrorFrame>>,
    pub client_id: Option<ClientId>,
    /// The node slot the connection holds until it ends.
    pub slot: Slot,
    /// The connection counted against its address until it ends.
    pub address: AddressSlot,
    /// A place among the sockets waiting to authenticate, until this one has.
    pub pending: Option<PendingSlot>,
}

/// A connection counted against its address, cluster-wide (`ip_connections`); given back when
/// the connection ends, or when it is dropped (an upgrade that never completed).
pub struct AddressSlot {
    presence: Arc<dyn Presence>,
    hold: Option<AddressHold>,
}

impl AddressSlot {
    /// Counts a connection from `address`; `None` when the address holds `ip_connections`.
    pub async fn take(state: &AppState, address: &str) -> Option<Self> {
        let presence = Arc::clone(&state.hub.presence);
        let max = state.config.ip_connections;
        let hold = if max == 0 {
            None
        } else {
            Some(presence.hold_address(address, max).await?)
        };
        Some(Self { presence, hold })
    }

    async fn release(mut self) {
        if let Some(hold) = self.hold.take() {
            self.presence.release_address(hold).await;
        }
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Some(hold) = self.hold.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let presence = Arc::clone(&self.presence);
            runtime.spawn(async move { presence.release_address(hold).await });
        }
    }
}

/// A frame read from the client, or why there is none. After a read error the socket yields
/// nothing more, so every error ends the connection.
enum Incoming {
    Text(Utf8Bytes),
    Binary,
    NotUtf8,
    Control,
    Closed,
    TooBig,
}

struct Conn {
    socket: WebSocket,
    state: AppState,
    /// When the client was last heard from, as of the last keepalive tick.
    last_seen: Instant,
    /// A frame arrived since the last keepalive tick (cheaper than reading the clock per frame).
    seen: bool,
    /// The connection's message rate, and its user's once authenticated.
    limit: MessageLimit,
    /// Whom its user-addressed signals may go to, once authenticated.
    peers: Peers,
    /// The connection's span (`ws`: node, client id, inside its upgrade's request span). Entered
    /// by everything that may log — authentication, joins, refusals, the slow path, the close
    /// — but not by the relay's hot path, which logs nothing and would pay for entering it on
    /// every poll.
    span: tracing::Span,
    /// The frames written through the outbox, numbered (`seq`), when resuming is on.
    replay: Option<Replay>,
    /// The socket ended without a close from either side (it dropped, a write failed, the
    /// client went silent): the session may be parked for a resume.
    dropped: bool,
    /// Notified when a `resume` on another connection takes this session over.
    detach: Option<Arc<Notify>>,
    /// Authenticated by the upgrade's token and no frame read since: a `resume` now takes a
    /// parked session of the same user up on this connection instead of the fresh one.
    resume_first: bool,
    /// The parked session a first-frame `resume` took, for [`Conn::serve`] to continue.
    taken: Option<Taken>,
    /// The token the session authenticated with (for a parked session's revocations).
    credential: Arc<Credential>,
}

/// What a token says of whom its user-addressed signals may go to.
#[derive(Default)]
struct Peers {
    admin: bool,
    /// The `peers` claim (for the `grant` policy).
    names: Vec<String>,
}

/// Who the client turned out to be: a fresh session, or a parked one it resumes.
enum Authenticated {
    Fresh(Identity, Option<ClientId>),
    /// The session (here or on another node), and the last `seq` the client received.
    Resumed(Taken),
}

/// A session's connection-side state, for its end ([`Conn::end`]).
struct Live {
    session: Session,
    outbox: mpsc::Receiver<Frame>,
    control: Arc<Control>,
    ticket: Option<Ticket>,
}

/// What the main loop does with a frame after the hot path looked at it.
enum Next {
    /// Handled (a relayed signal, usually).
    Done,
    /// Tell the client.
    Error(ErrorFrame),
    /// Carry out an action that waits for the cluster.
    Act(Action),
    /// A signal to a peer this node's roster does not know: ask presence.
    Locate {
        room: RoomId,
        to: ClientId,
        frame: Frame,
    },
    /// Not a text frame.
    Other(Incoming),
    /// A `resume` as the first frame of a connection its upgrade's token authenticated.
    Resume {
        session: String,
        resume_token: String,
        last_seq: u64,
    },
}

/// Runs one upgraded connection to its end. The socket moves into a boxed `Conn` before the
/// task's future is built, so the future does not carry the socket's space twice.
pub fn run(
    socket: WebSocket,
    state: AppState,
    start: Start,
    span: tracing::Span,
) -> impl Future<Output = ()> {
    let limit = MessageLimit::new(state.config.msg_rate, state.config.msg_burst);
    let conn = Box::new(Conn {
        socket,
        state,
        last_seen: Instant::now(),
        seen: false,
        limit,
        peers: Peers::default(),
        span,
        replay: None,
        dropped: false,
        detach: None,
        resume_first: false,
        taken: None,
        credential: Arc::default(),
    });
    run_boxed(conn, Box::new(start))
}

/// An async fn keeps its arguments for as long as it runs: what only the start needs comes
/// boxed, so that an idle connection's task stays small.
async fn run_boxed(mut conn: Box<Conn>, start: Box<Start>) {
    metrics::counter!(m::CONNECTIONS_OPENED).increment(1);
    // Rare, large futures are boxed so that an idle connection's task stays small.
    let Start {
        room,
        pre_auth,
        client_id,
        slot,
        address,
        pending,
    } = *start;
    let span = conn.span.clone();
    conn.resume_first = pre_auth.is_some() && conn.state.resumes.enabled();
    let authenticated = Box::pin(conn.authenticate(pre_auth, client_id, room.as_ref()))
        .instrument(span.clone())
        .await;
    drop(pending);
    let code = match authenticated {
        Ok(Authenticated::Fresh(identity, client_id)) => {
            conn.serve(Box::new(identity), client_id, room).await
        }
        Ok(Authenticated::Resumed(taken)) => Box::pin(conn.continue_taken(taken)).await,
        Err(code) => code,
    };
    metrics::counter!(m::CONNECTIONS_CLOSED, "code" => code.label()).increment(1);
    Box::pin(conn.close(code)).instrument(span.clone()).await;
    drop(slot);
    Box::pin(address.release()).instrument(span).await;
}

impl Conn {
    async fn next(&mut self) -> Incoming {
        let frame = match self.socket.next().await {
            None => {
                self.dropped = true;
                return Incoming::Closed;
            }
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                let incoming = read_error(e);
                self.dropped = matches!(incoming, Incoming::Closed);
                return incoming;
            }
        };
        self.seen = true;
        match frame {
            Message::Text(text) => Incoming::Text(text),
            Message::Binary(_) => Incoming::Binary,
            Message::Pong(payload) => {
                if let Some(replay) = &mut self.replay {
                    replay.pong(&payload);
                }
                Incoming::Control
            }
            Message::Ping(_) => Incoming::Control,
            Message::Close(_) => Incoming::Closed,
        }
    }

    /// Writes one message; `false` when the socket is gone or the client stopped reading
    /// (the write took longer than `write_timeout`).
    /// Once the session is numbered (after `auth_success` or `resumed`), the frame gets its
    /// `seq` and a place in the replay, as the outbox's frames do: a `resume` gets back every
    /// frame the server wrote, answers included.
    async fn send(&mut self, message: &ServerMessage) -> bool {
        let text = message.to_json();
        let message = match &mut self.replay {
            Some(replay) => {
                let frame = Frame::from(text);
                let message = super::socket_text_seq(&frame, replay.next_seq());
                replay.record(frame);
                message
            }
            None => Message::Text(text.into()),
        };
        self.write(message).await
    }

    /// Every write outside the outbox's goes through here, bounded by `write_timeout`: a client
    /// that sends without reading cannot hold its task (and its slot) forever.
    async fn write(&mut self, message: Message) -> bool {
        let deadline = self.state.config.write_timeout;
        let written = match tokio::time::timeout(deadline, self.socket.send(message)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                metrics::counter!(m::WRITE_TIMEOUTS).increment(1);
                false
            }
        };
        self.dropped |= !written;
        written
    }

    /// Sends an error frame; a refusal of something the token does not allow (`forbidden`) is
    /// logged as a security event.
    async fn send_error(&mut self, error: ErrorFrame) -> bool {
        if error.code == ErrorCode::Forbidden {
            tracing::warn!(event = "forbidden", detail = %error.message, "refused: not allowed");
        }
        self.send_error_quietly(error).await
    }

    /// Sends an error frame that was logged already.
    async fn send_error_quietly(&mut self, error: ErrorFrame) -> bool {
        metrics::counter!(m::MESSAGE_ERRORS, "code" => error.code.as_str()).increment(1);
        self.send(&error.into()).await
    }

    /// What the connection's message limit says of `incoming`: every data frame counts (text
    /// and binary, before and after authentication); control frames and ends do not.
    fn limit_data(&mut self, incoming: &Incoming) -> Verdict {
        if !matches!(incoming, Incoming::Text(_) | Incoming::Binary) {
            return Verdict::Pass;
        }
        let verdict = self.limit.check();
        match verdict {
            Verdict::Pass | Verdict::Refill => {}
            // The first refusal of a burst is answered and logged; the rest only counted.
            Verdict::Refuse(_) => self.span.in_scope(|| m::limit_hit("msg_rate")),
            Verdict::Drop => m::limit_dropped("msg_rate"),
            Verdict::Close => {
                m::limit_dropped("msg_rate");
                self.span.in_scope(|| m::limit_hit("flood"));
            }
        }
        verdict
    }

    /// The verdict after a [`Verdict::Refill`]: the user's hits on this node were spent, so
    /// take more from the cluster.
    async fn refill(&mut self) -> Verdict {
        let Some(budget) = self.limit.user().cloned() else {
            return Verdict::Pass;
        };
        let refilled = budget
            .refill(self.state.throttle.as_ref(), self.state.user_msg_rate())
            .await;
        let refused = refilled.is_err();
        let verdict = self.limit.settle(refilled);
        match (refused, verdict) {
            (true, Verdict::Refuse(_)) => m::limit_hit("user_msg_rate"),
            (true, _) => m::limit_dropped("user_msg_rate"),
            (false, _) => {}
        }
        if verdict == Verdict::Close {
            m::limit_hit("flood");
        }
        verdict
    }

    /// Sends the close frame and waits briefly for the client's, so no data is reset away.
    async fn close(mut self, code: CloseCode) {
        let frame = CloseFrame {
            code: code.code(),
            reason: code.reason().into(),
        };
        let sent =
            tokio::time::timeout(CLOSE_LINGER, self.socket.send(Message::Close(Some(frame))));
        if !matches!(sent.await, Ok(Ok(()))) {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while let Some(Ok(frame)) = self.socket.next().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    /// Runs the `auth_required` → `auth_token` exchange unless the upgrade carried a token. A
    /// refused token, or one that does not grant the URL's `room`, gets its error frame and
    /// 1008.
    async fn authenticate(
        &mut self,
        pre_auth: Option<Result<Identity, ErrorFrame>>,
        client_id: Option<ClientId>,
        room: Option<&RoomId>,
    ) -> Result<Authenticated, CloseCode> {
        match pre_auth {
            Some(Ok(identity)) => return Ok(Authenticated::Fresh(identity, client_id)),
            Some(Err(refused)) => {
                // `admit` logged it.
                self.send_error_quietly(refused).await;
                return Err(CloseCode::PolicyViolation);
            }
            None => {}
        }
        if !self.send(&ServerMessage::AuthRequired).await {
            return Err(CloseCode::Normal);
        }
        let deadline = tokio::time::sleep(self.state.config.auth_timeout);
        tokio::pin!(deadline);
        loop {
            let incoming = tokio::select! {
                () = &mut deadline => return Err(CloseCode::PolicyViolation),
                incoming = self.next() => incoming,
            };
            match self.limit_data(&incoming) {
                // No user yet: only the connection's own rate counts.
                Verdict::Pass | Verdict::Refill => {}
                Verdict::Refuse(wait) => {
                    self.send_error(rate_limited(wait)).await;
                    continue;
                }
                Verdict::Drop => continue,
                Verdict::Close => return Err(CloseCode::PolicyViolation),
            }
            let text = match incoming {
                Incoming::Text(text) => text,
                Incoming::Control => continue,
                Incoming::Binary => {
                    self.send_error(binary()).await;
                    continue;
                }
                Incoming::NotUtf8 => {
                    self.send_error(not_utf8()).await;
                    return Err(CloseCode::InvalidPayload);
                }
                Incoming::Closed => return Err(CloseCode::Normal),
                Incoming::TooBig => return Err(CloseCode::MessageTooBig),
            };
            let error = match inbound::parse(&text) {
                Ok(ClientMessage::AuthToken {
                    token,
                    client_id: id,
                }) => match super::admit(&self.state.credentials, &token, room).await {
                    Ok(identity) => return Ok(Authenticated::Fresh(identity, id.or(client_id))),
                    Err(refused) => {
                        self.send_error_quietly(refused).await;
                        return Err(CloseCode::PolicyViolation);
                    }
                },
                Ok(ClientMessage::Resume {
                    session,
                    resume_token,
                    last_seq,
                }) => match Box::pin(self.resume_anywhere(&session, resume_token, last_seq, None))
                    .await
                {
                    Ok(taken) => {
                        metrics::counter!(m::RESUMES, "result" => "resumed").increment(1);
                        return Ok(Authenticated::Resumed(taken));
                    }
                    Err(refusal) => {
                        // The client may authenticate afresh within the same deadline.
                        if !self.refuse_resume(refusal).await {
                            return Err(CloseCode::Normal);
                        }
                        continue;
                    }
                },
                Ok(_) => ErrorFrame::new(
                    ErrorCode::Unauthorized,
                    "authenticate first: send auth_token",
                ),
                Err(e) => e,
            };
            if !self.send_error(error).await {
                return Err(CloseCode::Normal);
            }
        }
    }

    /// Registers the connection, joins the URL's room and runs the main loop.
    async fn serve(
        &mut self,
        identity: Box<Identity>,
        client_id: Option<ClientId>,
        room: Option<RoomId>,
    ) -> CloseCode {
        // What the start needs is dropped before the main loop: an idle connection's task
        // holds only what the loop needs.
        let (mut live, code) = match Box::pin(self.begin(identity, client_id, room)).await {
            Ok(begun) => begun,
            Err(code) => return code,
        };
        let code = match code {
            Some(code) => code,
            None => {
                self.main_loop(&mut live.session, &live.control, &mut live.outbox)
                    .await
            }
        };
        let span = self.span.clone();
        let code = Box::pin(self.end(live, code)).instrument(span).await;
        match self.taken.take() {
            // A `resume` as the first frame: the fresh session ended above (it had done
            // nothing but join the URL's room, if any), the parked one goes on here.
            Some(taken) => Box::pin(self.continue_taken(taken)).await,
            None => code,
        }
    }

    /// A fresh session's start: registered in the cluster, `auth_success` written, the URL's
    /// room joined. The session, and a close code when the connection ends already.
    async fn begin(
        &mut self,
        identity: Box<Identity>,
        client_id: Option<ClientId>,
        room: Option<RoomId>,
    ) -> Result<(Live, Option<CloseCode>), CloseCode> {
        let identity = *identity;
        let config = Arc::clone(&self.state.config);
        let hub = Arc::clone(&self.state.hub);
        let me = Member {
            client_id: client_id.unwrap_or_else(ClientId::generate),
            user_id: identity.user_id.clone(),
            username: identity.name.clone(),
            conn: ConnId::generate(),
            node: hub.node.clone(),
        };
        self.span.record("client_id", me.client_id.as_str());
        let span = self.span.clone();
        let ticket = self.state.resumes.enabled().then(Ticket::generate);
        let (outbox, outbox_rx) = mpsc::channel(config.outbox_frames);
        let control = Arc::new(Control::default());
        let credential = Arc::new(identity.credential.clone());
        self.credential = Arc::clone(&credential);
        let handle = ConnHandle {
            conn: me.conn,
            client: me.client_id.clone(),
            user: me.user_id.clone(),
            outbox,
            control: Arc::clone(&control),
            credential: Arc::clone(&credential),
            resume: ticket.as_ref().map(|t| Arc::clone(&t.grant)),
        };
        // Kept with the claim where the session can outlive this node.
        let resumable = ticket
            .as_ref()
            .filter(|_| hub.presence.outlives_nodes())
            .map(|ticket| {
                let d = Described {
                    session: &ticket.grant.session,
                    me: &me,
                    grant: &identity.rooms,
                    max_rooms: config.max_rooms_per_connection,
                    credential: &credential,
                    admin: identity.admin,
                    peers: &identity.peers,
                };
                crate::resume::resumable(ticket, &d)
            });
        let connect = hub.connect(&me, handle, config.user_connections, resumable.as_ref());
        let connected = Box::pin(connect).instrument(span.clone()).await;
        if let Err(e) = connected {
            let code = match e.code {
                ErrorCode::ClientIdTaken => CloseCode::PolicyViolation,
                ErrorCode::RateLimited => CloseCode::TryAgainLater,
                _ => CloseCode::InternalError,
            };
            Box::pin(self.send_error(e)).instrument(span).await;
            return Err(code);
        }
        metrics::gauge!(m::CONNECTIONS).increment(1.0);
        self.limit_user(&me.user_id);
        let ice_servers = self
            .state
            .turn
            .ice_servers(&identity.user_id, crate::auth::unix_now());
        if self.state.turn.has_turn() {
            metrics::counter!(m::TURN_CREDENTIALS).increment(1);
        }
        let success = ServerMessage::AuthSuccess {
            user: identity.name,
            user_id: identity.user_id,
            client_id: me.client_id.clone(),
            ice_servers: (!ice_servers.is_empty()).then_some(ice_servers),
            resume: ticket.as_ref().map(|t| (*t.grant).clone()),
        };
        let mut session = Session::new(me, identity.rooms, config.max_rooms_per_connection);
        self.peers = Peers {
            admin: identity.admin,
            names: identity.peers,
        };
        let replay = ticket.is_some().then(|| Replay::new(config.outbox_frames));
        if let Some(ticket) = &ticket {
            self.attach(ticket, &session.me.user_id);
        }
        drop(config);
        let sent = Box::pin(self.send(&success)).await;
        // Numbered from here on.
        self.replay = replay;
        let code = if !sent {
            Some(CloseCode::Normal)
        } else {
            Box::pin(self.initial_join(&mut session, room))
                .instrument(span)
                .await
        };
        let live = Live {
            session,
            outbox: outbox_rx,
            control,
            ticket,
        };
        Ok((live, code))
    }

    /// Answers a refused `resume` with `resume_failed` (counted; a wrong token as an auth
    /// failure); `false` when the socket is gone.
    async fn refuse_resume(&mut self, refusal: Refusal) -> bool {
        metrics::counter!(m::RESUMES, "result" => refusal.reason()).increment(1);
        if refusal == Refusal::InvalidToken {
            m::auth_failure("resume_token");
        }
        let failed = ServerMessage::ResumeFailed {
            reason: refusal.reason(),
            message: refusal.message(),
        };
        self.send(&failed).await
    }

    /// Lets a `resume` on another connection take this session over.
    fn attach(&mut self, ticket: &Ticket, user: &UserId) {
        let detach = Arc::new(Notify::new());
        self.state.resumes.attach(ticket, user, Arc::clone(&detach));
        self.detach = Some(detach);
    }

    /// Counts the user's messages against its budget, when there is one.
    fn limit_user(&mut self, user: &UserId) {
        if self.state.config.user_msg_rate > 0 {
            let budget = self.state.user_budgets.get(user.as_str());
            self.limit
                .with_user(budget, self.state.config.user_msg_burst);
        }
    }

    /// Continues a parked session on this connection: `resumed`, what was written after
    /// `last_seq` again, then the main loop over the session's outbox.
    async fn resume(&mut self, parked: Parked, last_seq: u64) -> CloseCode {
        let span = self.span.clone();
        let Parked {
            me,
            session,
            outbox,
            control,
            replay,
            ticket,
            credential,
            admin,
            peers,
        } = parked;
        self.credential = credential;
        self.span.record("client_id", me.client_id.as_str());
        metrics::gauge!(m::CONNECTIONS).increment(1.0);
        self.limit_user(&me.user_id);
        self.peers = Peers {
            admin,
            names: peers,
        };
        let resumed = ServerMessage::Resumed {
            session: ticket.grant.session.clone(),
            client_id: me.client_id.clone(),
            rooms: session.rooms().to_vec(),
        };
        // `take` checked that the replay still holds everything after `last_seq`.
        let missed = replay.after(last_seq).unwrap_or_default();
        self.attach(&ticket, &me.user_id);
        let mut session = session;
        let mut outbox = outbox;
        // `resumed` is not numbered: the replay's numbers follow `last_seq`.
        let sent = self.send(&resumed).await && self.write_numbered(missed).await;
        let mut replay = replay;
        replay.reconnected();
        self.replay = Some(replay);
        let code = if !sent {
            CloseCode::Normal
        } else {
            self.main_loop(&mut session, &control, &mut outbox).await
        };
        let live = Live {
            session,
            outbox,
            control,
            ticket: Some(ticket),
        };
        Box::pin(self.end(live, code)).instrument(span).await
    }

    /// Writes frames that were numbered before (a resume's replay), with one flush.
    async fn write_numbered(&mut self, frames: Vec<(u64, Frame)>) -> bool {
        if frames.is_empty() {
            return true;
        }
        let deadline = self.state.config.write_timeout;
        let written = tokio::time::timeout(deadline, async {
            for (seq, frame) in &frames {
                self.socket
                    .feed(super::socket_text_seq(frame, *seq))
                    .await?;
            }
            self.socket.flush().await
        })
        .await;
        let written = matches!(written, Ok(Ok(())));
        self.dropped |= !written;
        written
    }

    /// The end of a session's connection: parked for a resume when the socket dropped (and the
    /// session was not closed), otherwise out of its rooms and the cluster.
    async fn end(&mut self, live: Live, code: CloseCode) -> CloseCode {
        metrics::gauge!(m::CONNECTIONS).decrement(1.0);
        let Live {
            session,
            outbox,
            control,
            ticket,
        } = live;
        let hub = Arc::clone(&self.state.hub);
        let detach = self.detach.take();
        // Parked first, then no longer live: a `resume` always finds the session in one place.
        let detached = |resumes: &crate::resume::Resumes, ticket: &Ticket| {
            if let Some(detach) = &detach {
                resumes.detached(ticket, detach);
            }
        };
        match (ticket, self.replay.take()) {
            (Some(ticket), Some(replay)) if self.parks(&control) => {
                let peers = std::mem::take(&mut self.peers);
                let parked = Parked {
                    me: session.me.clone(),
                    session,
                    outbox,
                    control,
                    replay,
                    ticket,
                    credential: Arc::clone(&self.credential),
                    admin: peers.admin,
                    peers: peers.names,
                };
                tracing::debug!("connection lost; session parked for a resume");
                let resumes = Arc::clone(&self.state.resumes);
                let ticket = parked.ticket.clone();
                resumes.park(&hub, parked);
                detached(&resumes, &ticket);
            }
            (ticket, _) => {
                if let Some(ticket) = &ticket {
                    detached(&self.state.resumes, ticket);
                }
                hub.disconnect(&session.me).await;
            }
        }
        code
    }

    /// Whether the session parks as its connection ends: the socket dropped (and the session
    /// was not closed), or a drain closed it in a cluster, where another node may take it up.
    fn parks(&self, control: &Control) -> bool {
        match control.code() {
            None => self.dropped,
            Some(CloseCode::ServiceRestart) => {
                self.state.is_draining() && self.state.hub.bus.kind() != "memory"
            }
            Some(_) => false,
        }
    }

    /// Joins the room named in the URL; returns a close code when the connection must end.
    async fn initial_join(
        &mut self,
        session: &mut Session,
        room: Option<RoomId>,
    ) -> Option<CloseCode> {
        let room = room?;
        if let Err(e) = session.may_join(&room) {
            self.send_error(e).await;
            return Some(CloseCode::PolicyViolation);
        }
        match self.join(session, room).await {
            Ok(true) => None,
            Ok(false) => Some(CloseCode::Normal),
            Err(e) => {
                let code = match e.code {
                    ErrorCode::RoomFull => CloseCode::TryAgainLater,
                    _ => CloseCode::InternalError,
                };
                self.send_error(e).await;
                Some(code)
            }
        }
    }

    /// Joins `room` and sends `users_in_room`; `Ok(false)` when the socket is gone.
    async fn join(&mut self, session: &mut Session, room: RoomId) -> Result<bool, ErrorFrame> {
        let cap = self.state.config.max_members_per_room;
        let users = self.state.hub.join(&session.me, &room, cap).await?;
        session.joined(room.clone());
        Ok(self.send(&ServerMessage::UsersInRoom { room, users }).await)
    }

    async fn main_loop(
        &mut self,
        session: &mut Session,
        control: &Control,
        outbox: &mut mpsc::Receiver<Frame>,
    ) -> CloseCode {
        let config = Arc::clone(&self.state.config);
        let mut keepalive = tokio::time::interval(config.ping_interval);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.tick().await;
        // One close future for the whole loop: re-creating it per frame costs a waker
        // registration each time.
        let closed = control.closed();
        tokio::pin!(closed);
        let detach = self.detach.clone();
        let detached = async move {
            match detach {
                Some(detach) => detach.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(detached);
        loop {
            tokio::select! {
                biased;
                code = &mut closed => {
                    match code {
                        CloseCode::ServiceRestart => {
                            Box::pin(self.flush_outbox(outbox)).await;
                            Box::pin(self.relay_until_gone(session, detached.as_mut())).await;
                        }
                        CloseCode::Revoked => {
                            let text = "the token of this connection was revoked";
                            let revoked = ErrorFrame::new(ErrorCode::TokenRevoked, text);
                            Box::pin(self.send_error(revoked)).await;
                        }
                        _ => {}
                    }
                    return code;
                }
                Some(frame) = outbox.recv() => {
                    // A client that stops reading blocks this write; the close control still
                    // ends the connection.
                    let (written, code) = {
                        let write = self.write_batch(frame, outbox);
                        tokio::pin!(write);
                        tokio::select! {
                            written = &mut write => (written, None),
                            code = &mut closed => {
                                // A drain lets the batch under way finish, within the write
                                // timeout: a frame it took from the outbox (the notice itself,
                                // perhaps) is not dropped with it.
                                let drained = code == CloseCode::ServiceRestart;
                                let finished = drained
                                    && matches!(
                                        tokio::time::timeout(config.write_timeout, &mut write).await,
                                        Ok(true)
                                    );
                                (finished, Some(code))
                            }
                        }
                    };
                    match code {
                        // Then as any drain: the rest of the outbox, and what the client still
                        // sends.
                        Some(CloseCode::ServiceRestart) if written => {
                            Box::pin(self.flush_outbox(outbox)).await;
                            Box::pin(self.relay_until_gone(session, detached.as_mut())).await;
                            return CloseCode::ServiceRestart;
                        }
                        Some(code) => return code,
                        None if !written => {
                            self.dropped = true;
                            return CloseCode::Normal;
                        }
                        None => {}
                    }
                }
                incoming = self.next() => {
                    // Only the hot path runs in this future; anything that waits is boxed, so
                    // that an idle connection's task stays small.
                    let verdict = match self.limit_data(&incoming) {
                        Verdict::Refill => {
                            let span = self.span.clone();
                            Box::pin(self.refill()).instrument(span).await
                        }
                        verdict => verdict,
                    };
                    let next = match (verdict, incoming) {
                        // `refill` settles: it passes or refuses.
                        (Verdict::Pass | Verdict::Refill, Incoming::Text(text)) => {
                            let next = self.relay(session, &text);
                            self.resume_first = false;
                            next
                        }
                        (Verdict::Pass | Verdict::Refill, other) => Next::Other(other),
                        (Verdict::Refuse(wait), _) => Next::Error(rate_limited(wait)),
                        (Verdict::Drop, _) => Next::Done,
                        (Verdict::Close, _) => return CloseCode::PolicyViolation,
                    };
                    if !matches!(next, Next::Done)
                        && let Some(code) = {
                            let span = self.span.clone();
                            Box::pin(self.slow(session, next)).instrument(span).await
                        }
                    {
                        return code;
                    }
                }
                () = &mut detached => {
                    // A `resume` on another connection takes the session over: this one parks
                    // it, as if its socket had dropped, and is closed as replaced.
                    self.dropped = true;
                    return CloseCode::Replaced;
                }
                _ = keepalive.tick() => {
                    if std::mem::take(&mut self.seen) {
                        self.last_seen = Instant::now();
                    }
                    if self.last_seen.elapsed() >= config.idle_timeout {
                        // Silent, not gone: a phone asleep or a network that changed.
                        self.dropped = true;
                        return CloseCode::IdleTimeout;
                    }
                    let ping = match &mut self.replay {
                        Some(replay) => ack_ping(replay.ping_payload()),
                        None => Message::Ping(Default::default()),
                    };
                    if !Box::pin(self.write(ping)).await {
                        return CloseCode::Normal;
                    }
                }
            }
        }
    }

    /// Writes `first` and whatever else is queued, with one flush, and counts the signals
    /// among them as delivered (with the time of the write, read once).
    async fn write_batch(&mut self, first: Frame, outbox: &mut mpsc::Receiver<Frame>) -> bool {
        m::outbox_depth(outbox.len() + 1);
        let mut now = None;
        let replay = &mut self.replay;
        let mut write = |frame: Frame| {
            let stamp = frame.stamp();
            if stamp != Stamp::NONE {
                m::delivered(stamp, *now.get_or_insert_with(unix_micros));
            }
            match replay {
                Some(replay) => {
                    let message = super::socket_text_seq(&frame, replay.next_seq());
                    replay.record(frame);
                    message
                }
                None => super::socket_text(frame),
            }
        };
        if self.socket.feed(write(first)).await.is_err() {
            return false;
        }
        for _ in 1..WRITE_BATCH {
            let Ok(frame) = outbox.try_recv() else { break };
            if self.socket.feed(write(frame)).await.is_err() {
                return false;
            }
        }
        if let Some(payload) = self.replay.as_mut().and_then(Replay::ack_ping)
            && self.socket.feed(ack_ping(payload)).await.is_err()
        {
            return false;
        }
        self.socket.flush().await.is_ok()
    }

    /// After a drain's `reconnect` notice: what the client sent before it read the notice is
    /// relayed still, until the client goes (it reconnects elsewhere), pauses for
    /// [`DRAIN_QUIET`] (it read the notice and waits for the close) or [`DRAIN_READ`] passes, or its `resume` reached another node (`detached`: the session moves). What
    /// reaches the connection meanwhile waits in its outbox, for the session's next connection.
    async fn relay_until_gone(
        &mut self,
        session: &mut Session,
        mut detached: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) {
        let deadline = tokio::time::Instant::now() + DRAIN_READ;
        loop {
            // What the client sent comes first: it was sent before the resume that moves the
            // session. A client that read the notice sends nothing more: a pause ends it.
            let quiet = (tokio::time::Instant::now() + DRAIN_QUIET).min(deadline);
            let incoming = tokio::select! {
                biased;
                incoming = self.next() => incoming,
                () = &mut detached => return,
                () = tokio::time::sleep_until(quiet) => return,
            };
            let verdict = self.limit_data(&incoming);
            let next = match (incoming, verdict) {
                (Incoming::Closed, _) => return,
                (Incoming::Text(text), Verdict::Pass) => self.relay(session, &text),
                _ => continue,
            };
            if !matches!(next, Next::Done) && Box::pin(self.slow(session, next)).await.is_some() {
                return;
            }
        }
    }

    /// Writes what the outbox holds (before a drain's close), within `write_timeout`.
    async fn flush_outbox(&mut self, outbox: &mut mpsc::Receiver<Frame>) {
        let deadline = self.state.config.write_timeout;
        let _ = tokio::time::timeout(deadline, async {
            while let Ok(frame) = outbox.try_recv() {
                let message = match &mut self.replay {
                    Some(replay) => {
                        let message = super::socket_text_seq(&frame, replay.next_seq());
                        replay.record(frame);
                        message
                    }
                    None => super::socket_text(frame),
                };
                if self.socket.feed(message).await.is_err() {
                    return;
                }
            }
            let _ = self.socket.flush().await;
        })
        .await;
    }

    /// The hot path: parses a text frame and relays a room signal without waiting; everything
    /// else is handed to [`Conn::slow`].
    fn relay(&self, session: &Session, text: &str) -> Next {
        let action = match inbound::parse(text) {
            Ok(ClientMessage::Resume {
                session,
                resume_token,
                last_seq,
            }) if self.resume_first => {
                return Next::Resume {
                    session,
                    resume_token,
                    last_seq,
                };
            }
            parsed => match parsed.and_then(|msg| session.handle(msg)) {
                Ok(action) => action,
                Err(e) => return Next::Error(e),
            },
        };
        let Action::SendRoom {
            kind,
            room,
            to,
            frame,
        } = action
        else {
            return Next::Act(action);
        };
        let kind = MessageKind::Room(kind);
        m::message_in(kind);
        let frame = Frame::from(frame).stamped(kind.stamp_now());
        let hub = &self.state.hub;
        match hub.relay_room(&session.me, &room, to.as_ref(), frame) {
            Ok(Relayed::Done) => Next::Done,
            Ok(Relayed::Unknown(frame)) => match to {
                Some(to) => Next::Locate { room, to, frame },
                None => Next::Done,
            },
            Err(e) => Next::Error(e),
        }
    }

    /// Whatever the hot path left; returns a close code when the connection must end.
    async fn slow(&mut self, session: &mut Session, next: Next) -> Option<CloseCode> {
        let hub = Arc::clone(&self.state.hub);
        let sent = match next {
            Next::Done => true,
            Next::Error(e) => self.send_error(e).await,
            Next::Act(action) => self.act(session, action).await,
            Next::Locate { room, to, frame } => {
                match hub.send_to_unknown(&session.me, &room, &to, frame).await {
                    Ok(()) => true,
                    Err(e) => self.send_error(e).await,
                }
            }
            Next::Resume {
                session: id,
                resume_token,
                last_seq,
            } => {
                let user = Some(&session.me.user_id);
                match Box::pin(self.resume_anywhere(&id, resume_token, last_seq, user)).await {
                    Ok(taken) => {
                        metrics::counter!(m::RESUMES, "result" => "resumed").increment(1);
                        self.taken = Some(taken);
                        // Ends this session's loop; `serve` continues the parked one.
                        return Some(CloseCode::Normal);
                    }
                    Err(refusal) => self.refuse_resume(refusal).await,
                }
            }
            Next::Other(Incoming::Text(_) | Incoming::Control) => true,
            Next::Other(Incoming::Binary) => self.send_error(binary()).await,
            Next::Other(Incoming::NotUtf8) => {
                self.send_error(not_utf8()).await;
                return Some(CloseCode::InvalidPayload);
            }
            Next::Other(Incoming::Closed) => return Some(CloseCode::Normal),
            Next::Other(Incoming::TooBig) => return Some(CloseCode::MessageTooBig),
        };
        (!sent).then_some(CloseCode::Normal)
    }

    /// Carries out an action other than a room signal; `false` when the socket is gone.
    async fn act(&mut self, session: &mut Session, action: Action) -> bool {
        let hub = Arc::clone(&self.state.hub);
        let result = match action {
            Action::Nothing => Ok(()),
            Action::Reply(reply) => return self.send(&reply).await,
            Action::Join(room) => match self.join(session, room).await {
                Ok(open) => return open,
                Err(e) => Err(e),
            },
            Action::Leave(room) => {
                session.left(&room);
                hub.leave(&session.me, &room).await
            }
            Action::SendRoom {
                kind,
                room,
                to,
                frame,
            } => {
                // The hot path takes these; this is for completeness.
                let kind = MessageKind::Room(kind);
                m::message_in(kind);
                let frame = Frame::from(frame).stamped(kind.stamp_now());
                hub.send_room(&session.me, &room, to.as_ref(), frame).await
            }
            Action::SendUser {
                kind,
                target,
                frame,
            } => {
                let kind = MessageKind::User(kind);
                m::message_in(kind);
                let frame = Frame::from(frame).stamped(kind.stamp_now());
                match may_signal(&self.state, &self.peers, session, &target).await {
                    Ok(()) => hub.send_user(&session.me, &target, frame).await,
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(()) => true,
            Err(e) => self.send_error(e).await,
        }
    }
}

/// Whether a connection (its `session`, its token's `peers`) may send a user-addressed signal
/// to `target` now: within its user's `user_signal_rate`, and allowed by `user_signals`. A
/// refused target is answered `forbidden` whether it is online or not, so refusals reveal
/// nothing.
async fn may_signal(
    state: &AppState,
    peers: &Peers,
    session: &Session,
    target: &UserId,
) -> Result<(), ErrorFrame> {
    let user = session.me.user_id.as_str();
    if let Err(wait) = state.throttle.hit(state.user_signal_rate(), user).await {
        m::limit_hit("user_signal_rate");
        return Err(ErrorFrame::new(
            ErrorCode::RateLimited,
            "too many user-addressed signals: wait retry_after_ms before sending again",
        )
        .retry_after(wait));
    }
    // A call's sides are reached through the call's own socket only (docs/calls.md), an E2EE
    // device through the relay's API (docs/e2ee.md).
    let allowed = !crate::calls::is_call_side(target)
        && !crate::e2ee::is_device_user(target)
        && (peers.admin
            || *target == session.me.user_id
            || match state.config.user_signals {
                UserSignals::Any => true,
                UserSignals::Grant => matches_any(&peers.names, target.as_str()),
                UserSignals::SharedRoom => state.hub.shares_room(session.rooms(), target).await?,
            });
    if allowed {
        return Ok(());
    }
    // Logged as `forbidden` when the refusal is sent.
    m::limit_dropped("user_signals");
    let mut e = ErrorFrame::new(
        ErrorCode::Forbidden,
        "this connection may not send signals to that user (user_signals)",
    );
    e.target_user_id = Some(target.clone());
    Err(e)
}

/// The answer to the first message over the connection's rate.
/// A ping that asks the client to acknowledge the frames up to the number it carries.
fn ack_ping(payload: [u8; 8]) -> Message {
    Message::Ping(bytes::Bytes::copy_from_slice(&payload))
}

fn rate_limited(wait: std::time::Duration) -> ErrorFrame {
    ErrorFrame::new(
        ErrorCode::RateLimited,
        "too many messages: wait retry_after_ms before sending again",
    )
    .retry_after(wait)
}

fn binary() -> ErrorFrame {
    ErrorFrame::new(
        ErrorCode::BinaryNotSupported,
        "binary frames are not supported; send JSON text",
    )
}

fn not_utf8() -> ErrorFrame {
    ErrorFrame::new(ErrorCode::InvalidJson, "text frame is not valid UTF-8")
}

fn read_error(e: axum::Error) -> Incoming {
    match e.into_inner().downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Incoming::TooBig,
        Some(tungstenite::Error::Utf8(_)) => Incoming::NotUtf8,
        _ => Incoming::Closed,
    }
}
