//! Resuming a session whose connection was lost (`resume_window`, 30 s by default; 0 is off).
//!
//! Every authenticated connection is a *session*: an id and a resume token (`auth_success`
//! carries both; the node keeps only the token's SHA-256). Every frame the delivery path writes
//! to the session's socket carries the session's next sequence number (`seq`), and the last
//! frames written stay in its [`Replay`]: a frame on the wire when the connection dropped may
//! never have arrived. The replay lets go of what the client acknowledged: every
//! [`ACK_EVERY`] frames (and with every keepalive) the server pings with the last number as the
//! payload, and the client's WebSocket answers with a pong carrying it back, which it can only
//! do after reading every frame before the ping.
//!
//! When the connection ends without a close from either side (the TCP connection dropped, a
//! write failed, the client went silent), the session is *parked*: it stays registered and a
//! member of its rooms (nobody sees it leave), its outbox keeps filling, and it waits up to the
//! window for a `resume` with its token and the last `seq` the client received. A good one
//! continues the session on the new connection: the frames after that `seq` from the replay,
//! then the outbox, exactly once and in order. At the end of the window (or when the session is
//! closed while parked: revoked, replaced, its outbox overflowed) it leaves as a closed
//! connection does. A client's own close, or a protocol violation, ends the session at once.
//!
//! Parked sessions live in the node that held their connection. A `resume` that reaches
//! another node of a cluster is asked of the cluster, and the holder hands the session over
//! ([`handoff`]): the client continues it there exactly as here. A draining node in a cluster
//! parks the sessions it closes, so that their clients resume them elsewhere. The sessions of
//! a node that dies are taken over by the survivor that reaps it (`adopt`), and resumed from
//! there.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, mpsc};

mod adopt;
pub mod handoff;

pub use adopt::{moved_resumable, resumable};
pub use handoff::{Described, Event, Handed, Handoffs, Handover};

use crate::auth::Credential;
use crate::hub::Hub;
use crate::metrics as m;
use crate::protocol::{CloseCode, Frame, Member, ResumeGrant, UserId};
use crate::registry::Control;
use crate::signaling::Session;

/// Bytes of the frames a replay keeps at most (besides its frame count).
pub const REPLAY_BYTES: usize = 1024 * 1024;

/// Frames kept before the replay asks the client to acknowledge them (a ping carrying the last
/// number). Frames the client acknowledged are let go while their memory is still warm; a
/// replay the client never acknowledges keeps its frame count and [`REPLAY_BYTES`].
pub const ACK_EVERY: usize = 32;

/// The frames written to a session's sockets, numbered, the last of them kept.
#[derive(Debug)]
pub struct Replay {
    frames: VecDeque<(u64, Frame)>,
    bytes: usize,
    /// The next frame's number; the first is 1.
    next: u64,
    max_frames: usize,
    /// The number carried by the last acknowledgement ping not yet answered.
    pinged: Option<u64>,
}

impl Replay {
    pub fn new(max_frames: usize) -> Self {
        Self {
            frames: VecDeque::new(),
            bytes: 0,
            next: 1,
            max_frames: max_frames.max(1),
            pinged: None,
        }
    }

    /// A replay whose first frame gets number `next` (a session continued from another node).
    pub fn starting(max_frames: usize, next: u64) -> Self {
        Self {
            next: next.max(1),
            ..Self::new(max_frames)
        }
    }

    /// The replay of a session taken over from a dead node: what that node wrote is gone, so
    /// numbering goes on after whatever `last_seq` the client resumes with ([`Replay::rebase`]).
    /// When some of what was sent to it could not be held (`overflowed`), no `last_seq` is
    /// covered: a resume is refused as `overflow`.
    pub fn adopted(max_frames: usize, overflowed: bool) -> Self {
        Self {
            next: if overflowed { u64::MAX } else { 0 },
            ..Self::new(max_frames)
        }
    }

    /// Numbers from `last_seq + 1` on, for an [adopted](Replay::adopted) replay (others keep
    /// their numbers).
    pub fn rebase(&mut self, last_seq: u64) {
        if self.next == 0 {
            self.next = last_seq + 1;
        }
    }

    /// The number the next frame gets.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Keeps `frame` under the next number; returns it. The frame is moved in, not cloned: a
    /// clone of a frame's buffer would cost an allocation of its shared count, per delivery.
    pub fn record(&mut self, frame: Frame) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.bytes += frame.as_str().len();
        self.frames.push_back((seq, frame));
        while self.frames.len() > self.max_frames || self.bytes > REPLAY_BYTES {
            let Some((_, old)) = self.frames.pop_front() else {
                break;
            };
            self.bytes -= old.as_str().len();
        }
        seq
    }

    /// The payload of a ping that asks the client to acknowledge what it holds, when one is
    /// due: at least [`ACK_EVERY`] frames are kept and no earlier such ping is unanswered. The
    /// payload is the last number given out, 8 bytes big-endian; the client's pong echoes it.
    pub fn ack_ping(&mut self) -> Option<[u8; 8]> {
        if self.pinged.is_some() || self.frames.len() < ACK_EVERY {
            return None;
        }
        Some(self.ping_payload())
    }

    /// The payload of a ping sent anyway (the keepalive's): it asks for an acknowledgement too.
    pub fn ping_payload(&mut self) -> [u8; 8] {
        let last = self.last();
        self.pinged = Some(last);
        last.to_be_bytes()
    }

    /// The replay goes on over a new connection: a ping written on the old one is answered by
    /// nobody.
    pub fn reconnected(&mut self) {
        self.pinged = None;
    }

    /// A pong from the client. A pong answers a ping the server wrote after the frames its
    /// number covers, on the same ordered stream: the client holds them, and they are no longer
    /// kept. A payload that is not a number this replay gave out changes nothing.
    pub fn pong(&mut self, payload: &[u8]) {
        let Ok(bytes) = <[u8; 8]>::try_from(payload) else {
            return;
        };
        let seq = u64::from_be_bytes(bytes);
        if seq > self.last() {
            return;
        }
        if self.pinged.is_some_and(|pinged| seq >= pinged) {
            self.pinged = None;
        }
        while let Some((front, _)) = self.frames.front()
            && *front <= seq
        {
            let (_, old) = self.frames.pop_front().expect("a front frame");
            self.bytes -= old.as_str().len();
        }
    }

    /// The last number given out (0 before the first frame).
    pub fn last(&self) -> u64 {
        self.next.saturating_sub(1)
    }

    /// The kept frames numbered after `last_seq`; `None` when some of them are no longer kept,
    /// or `last_seq` was never given out.
    pub fn after(&self, last_seq: u64) -> Option<Vec<(u64, Frame)>> {
        match self.next {
            0 => return Some(Vec::new()),
            u64::MAX => return None,
            _ => {}
        }
        if last_seq > self.last() {
            return None;
        }
        let first = self.frames.front().map_or(self.next, |(seq, _)| *seq);
        if last_seq + 1 < first {
            return None;
        }
        Some(
            self.frames
                .iter()
                .filter(|(seq, _)| *seq > last_seq)
                .cloned()
                .collect(),
        )
    }
}

/// A session's identity for resuming: its grant (sent to the client) and the token's hash.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub grant: Arc<ResumeGrant>,
    hash: [u8; 32],
}

impl Ticket {
    /// A new session id (128 random bits) and resume token (256), base64url.
    pub fn generate() -> Self {
        use base64::Engine;
        let mut id = [0u8; 16];
        let mut token = [0u8; 32];
        getrandom::fill(&mut id).expect("the OS random source");
        getrandom::fill(&mut token).expect("the OS random source");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let resume_token = b64.encode(token);
        Self {
            hash: Sha256::digest(resume_token.as_bytes()).into(),
            grant: Arc::new(ResumeGrant {
                session: b64.encode(id),
                resume_token,
            }),
        }
    }

    /// The ticket of session `session` whose client holds `resume_token` (a session continued
    /// from another node).
    pub fn from_token(session: String, resume_token: String) -> Self {
        Self {
            hash: hash(&resume_token),
            grant: Arc::new(ResumeGrant {
                session,
                resume_token,
            }),
        }
    }

    /// The ticket of session `session` known only by its token's hash (a session taken over
    /// from a dead node: its client resumes it elsewhere, with the token).
    pub fn from_hash(session: String, hash: [u8; 32]) -> Self {
        Self {
            hash,
            grant: Arc::new(ResumeGrant {
                session,
                resume_token: String::new(),
            }),
        }
    }

    /// The SHA-256 of the token.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    #[cfg(test)]
    fn admits(&self, token: &str) -> bool {
        self.admits_hash(&hash(token))
    }

    /// Whether `hash` is the SHA-256 of this session's token (constant time).
    fn admits_hash(&self, hash: &[u8; 32]) -> bool {
        bool::from(hash.ct_eq(&self.hash))
    }
}

/// The SHA-256 of a resume token: what nodes keep, and what a remote ask carries.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What a parked session keeps for the connection that resumes it.
pub struct Parked {
    pub me: Member,
    pub session: Session,
    pub outbox: mpsc::Receiver<Frame>,
    pub control: Arc<Control>,
    pub replay: Replay,
    pub ticket: Ticket,
    /// The token it authenticated with, for revocations.
    pub credential: Arc<Credential>,
    /// Whether its token had the admin role, and its `peers` claim.
    pub admin: bool,
    pub peers: Vec<String>,
}

/// Why a `resume` was refused: the `reason` of `resume_failed`, and its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Resuming is off on this node.
    Disabled,
    /// No such session here: its window ended, it never existed, or another node held it.
    Expired,
    /// The token is not the session's.
    InvalidToken,
    /// Frames after `last_seq` were dropped (the session fell too far behind), or `last_seq`
    /// was never sent.
    Overflow,
    /// The session was closed while parked: revoked, replaced by another connection, or its
    /// outbox overflowed.
    Closed,
}

impl Refusal {
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Expired => "expired",
            Self::InvalidToken => "invalid_token",
            Self::Overflow => "overflow",
            Self::Closed => "closed",
        }
    }

    /// The refusal whose `reason` is `reason` (a remote holder's answer).
    pub fn from_reason(reason: &str) -> Self {
        [
            Self::Disabled,
            Self::InvalidToken,
            Self::Overflow,
            Self::Closed,
        ]
        .into_iter()
        .find(|r| r.reason() == reason)
        .unwrap_or(Self::Expired)
    }

    pub const fn message(self) -> &'static str {
        match self {
            Self::Disabled => "resuming is off on this node; authenticate afresh",
            Self::Expired => {
                "no such session here: its window ended, or another node held it; authenticate afresh"
            }
            Self::InvalidToken => "the resume token is not this session's",
            Self::Overflow => {
                "what was sent after last_seq is no longer kept; authenticate afresh and join again"
            }
            Self::Closed => "the session was closed while its connection was away",
        }
    }
}

/// How long a `resume` of a live session waits for its old connection to let go.
const DETACH_WAIT: Duration = Duration::from_secs(2);

/// A session whose connection is live: asked to let go when a good `resume` arrives (the
/// client saw the connection die before this node did).
struct Attached {
    ticket: Ticket,
    user: UserId,
    detach: Arc<Notify>,
}

/// The node's sessions: parked ones, and live ones that a `resume` may take over.
pub struct Resumes {
    window: Duration,
    /// Parked sessions by id, each with the generation of its park (its expiry's key).
    parked: Mutex<HashMap<String, (u64, Parked)>>,
    live: Mutex<HashMap<String, Attached>>,
    /// Woken at each park, for a `resume` waiting for a live session to let go.
    parking: Notify,
    generation: AtomicU64,
}

impl Resumes {
    /// Sessions parked for `window`; `Duration::ZERO` turns resuming off.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            parked: Mutex::default(),
            live: Mutex::default(),
            parking: Notify::new(),
            generation: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Parked)>> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attached>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that `ticket`'s session is live on a connection that lets go when `detach` is
    /// notified (it then parks as if its socket had dropped).
    pub fn attach(&self, ticket: &Ticket, user: &UserId, detach: Arc<Notify>) {
        let live = Attached {
            ticket: ticket.clone(),
            user: user.clone(),
            detach,
        };
        self.live().insert(ticket.grant.session.clone(), live);
    }

    /// The session's connection that `detach` belongs to ended (it parked, or left).
    pub fn detached(&self, ticket: &Ticket, detach: &Arc<Notify>) {
        let mut live = self.live();
        if live
            .get(&ticket.grant.session)
            .is_some_and(|l| Arc::ptr_eq(&l.detach, detach))
        {
            live.remove(&ticket.grant.session);
        }
    }

    /// Sessions parked now.
    pub fn parked(&self) -> usize {
        self.lock().len()
    }

    /// Parks `parked` until it is resumed, its window ends or it is closed; then `hub` is told
    /// it left.
    pub fn park(self: &Arc<Self>, hub: &Arc<Hub>, parked: Parked) {
        let id = parked.ticket.grant.session.clone();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let control = Arc::clone(&parked.control);
        self.lock().insert(id.clone(), (generation, parked));
        metrics::gauge!(m::SESSIONS_PARKED).increment(1.0);
        self.parking.notify_waiters();
        let (resumes, hub, window) = (Arc::clone(self), Arc::clone(hub), self.window);
        // Closed by a drain: parked for another node to take up.
        let drained = control.code() == Some(CloseCode::ServiceRestart);
        tokio::spawn(async move {
            let ended = tokio::select! {
                () = tokio::time::sleep(window) => "expired",
                _ = control.closed(), if !drained => "closed",
                // Replaced (a fresh connection took its client id) or revoked after the drain.
                () = control.closed_again(), if drained => "closed",
            };
            let Some(parked) = resumes.remove(&id, generation) else {
                return;
            };
            metrics::counter!(m::SESSIONS_ENDED, "how" => ended).increment(1);
            hub.disconnect(&parked.me).await;
        });
    }

    fn remove(&self, id: &str, generation: u64) -> Option<Parked> {
        let mut parked = self.lock();
        if parked.get(id).is_none_or(|(g, _)| *g != generation) {
            return None;
        }
        let (_, found) = parked.remove(id)?;
        metrics::gauge!(m::SESSIONS_PARKED).decrement(1.0);
        Some(found)
    }

    /// [`Resumes::take`], and for a session still live on another connection of this node
    /// (whose death the client saw first), with the right token: that connection lets go and
    /// parks, and the session is taken from there.
    pub async fn resume(&self, id: &str, token: &str, last_seq: u64) -> Result<Parked, Refusal> {
        self.resume_as(id, token, last_seq, None).await
    }

    /// [`Resumes::resume`] for a connection that authenticated as `user` already: a session
    /// of another user is refused as `invalid_token`, and stays where it is.
    pub async fn resume_as(
        &self,
        id: &str,
        token: &str,
        last_seq: u64,
        user: Option<&UserId>,
    ) -> Result<Parked, Refusal> {
        self.resume_hashed(id, &hash(token), last_seq, user).await
    }

    /// Whether session `id` is here, parked or live (a remote ask is this node's to answer).
    pub fn holds(&self, id: &str) -> bool {
        self.lock().contains_key(id) || self.live().contains_key(id)
    }

    /// [`Resumes::resume_as`] with the SHA-256 of the token (a remote ask carries no token).
    pub async fn resume_hashed(
        &self,
        id: &str,
        token: &[u8; 32],
        last_seq: u64,
        user: Option<&UserId>,
    ) -> Result<Parked, Refusal> {
        let refused = match self.take_hashed(id, token, last_seq, user) {
            Err(Refusal::Expired) => Refusal::Expired,
            taken => return taken,
        };
        let parking = self.parking.notified();
        tokio::pin!(parking);
        parking.as_mut().enable();
        let detach = match self.live().get(id) {
            Some(live)
                if live.ticket.admits_hash(token) && user.is_none_or(|u| *u == live.user) =>
            {
                Arc::clone(&live.detach)
            }
            Some(_) => return Err(Refusal::InvalidToken),
            None => return Err(refused),
        };
        detach.notify_one();
        let deadline = tokio::time::Instant::now() + DETACH_WAIT;
        loop {
            if tokio::time::timeout_at(deadline, parking.as_mut())
                .await
                .is_err()
            {
                return Err(Refusal::Expired);
            }
            match self.take_hashed(id, token, last_seq, user) {
                Err(Refusal::Expired) => {
                    parking.set(self.parking.notified());
                    parking.as_mut().enable();
                }
                taken => return taken,
            }
        }
    }

    /// Takes session `id` up again if `token` is its resume token and it still has what was
    /// sent after `last_seq`. A refusal leaves the session parked (except when it was closed).
    pub fn take(
        &self,
        id: &str,
        token: &str,
        last_seq: u64,
        user: Option<&UserId>,
    ) -> Result<Parked, Refusal> {
        self.take_hashed(id, &hash(token), last_seq, user)
    }

    fn take_hashed(
        &self,
        id: &str,
        token: &[u8; 32],
        last_seq: u64,
        user: Option<&UserId>,
    ) -> Result<Parked, Refusal> {
        if !self.enabled() {
            return Err(Refusal::Disabled);
        }
        let mut parked = self.lock();
        let (_, session) = parked.get(id).ok_or(Refusal::Expired)?;
        if !session.ticket.admits_hash(token) || user.is_some_and(|u| *u != session.me.user_id) {
            return Err(Refusal::InvalidToken);
        }
        let code = session.control.code();
        if code.is_some_and(|code| code != CloseCode::ServiceRestart) {
            return Err(Refusal::Closed);
        }
        if session.replay.after(last_seq).is_none() {
            return Err(Refusal::Overflow);
        }
        let (_, mut found) = parked.remove(id).ok_or(Refusal::Expired)?;
        metrics::gauge!(m::SESSIONS_PARKED).decrement(1.0);
        found.replay.rebase(last_seq);
        Ok(found)
    }

    /// Ends every parked session at once (the node is draining): each leaves its rooms.
    pub async fn end_all(&self, hub: &Hub) {
        let all: Vec<Parked> = self.lock().drain().map(|(_, (_, p))| p).collect();
        metrics::gauge!(m::SESSIONS_PARKED).decrement(all.len() as f64);
        for parked in all {
            parked.control.close(CloseCode::ServiceRestart);
            metrics::counter!(m::SESSIONS_ENDED, "how" => "drained").increment(1);
            hub.disconnect(&parked.me).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_numbers_frames_and_keeps_the_last_ones() {
        let mut replay = Replay::new(3);
        assert_eq!(replay.last(), 0);
        assert_eq!(replay.after(0).unwrap().len(), 0);
        for n in 1..=5u64 {
            assert_eq!(replay.record(Frame::from(format!("{{\"n\":{n}}}"))), n);
        }
        assert_eq!(replay.last(), 5);
        let seqs =
            |v: Option<Vec<(u64, Frame)>>| v.map(|v| v.iter().map(|(s, _)| *s).collect::<Vec<_>>());
        assert_eq!(seqs(replay.after(2)), Some(vec![3, 4, 5]));
        assert_eq!(seqs(replay.after(4)), Some(vec![5]));
        assert_eq!(seqs(replay.after(5)), Some(vec![]));
        // 2 is gone: a client that saw only 1 cannot be made whole.
        assert_eq!(seqs(replay.after(1)), None);
        // Never sent.
        assert_eq!(seqs(replay.after(6)), None);
    }

    #[test]
    fn an_adopted_replay_numbers_on_from_the_clients_last_seq_unless_it_overflowed() {
        let mut whole = Replay::adopted(8, false);
        assert_eq!(whole.after(41), Some(Vec::new()));
        whole.rebase(41);
        assert_eq!(whole.next_seq(), 42);
        assert_eq!(whole.after(41), Some(Vec::new()));
        assert_eq!(whole.after(42), None, "never given out");
        let mut broken = Replay::adopted(8, true);
        assert_eq!(broken.after(41), None);
        broken.rebase(41);
        assert_eq!(broken.after(41), None);
    }

    #[test]
    fn a_replay_is_bounded_by_bytes_too() {
        let mut replay = Replay::new(1000);
        let big = Frame::from(format!("{{\"x\":\"{}\"}}", "a".repeat(400 * 1024)));
        for _ in 0..4 {
            replay.record(big.clone());
        }
        assert!(replay.bytes <= REPLAY_BYTES);
        assert_eq!(replay.frames.len(), 2);
        assert!(replay.after(1).is_none());
        assert_eq!(replay.after(2).unwrap().len(), 2);
    }

    #[test]
    fn a_pong_lets_go_of_the_frames_its_ping_covered() {
        let mut replay = Replay::new(1000);
        let seqs = |v: Option<Vec<(u64, Frame)>>| v.map(|v| v.len());
        for n in 1..ACK_EVERY as u64 {
            replay.record(Frame::from(format!("{{\"n\":{n}}}")));
            assert_eq!(replay.ack_ping(), None, "not due before {ACK_EVERY} frames");
        }
        replay.record(Frame::from("{}".to_owned()));
        let ping = replay.ack_ping().expect("due");
        assert_eq!(u64::from_be_bytes(ping), ACK_EVERY as u64);
        assert_eq!(replay.ack_ping(), None, "one unanswered at a time");
        for _ in 0..3 {
            replay.record(Frame::from("{}".to_owned()));
        }
        // Pongs that are not this replay's numbers change nothing.
        replay.pong(b"");
        replay.pong(b"1234567");
        replay.pong(&1000u64.to_be_bytes());
        assert_eq!(replay.frames.len(), ACK_EVERY + 3);
        replay.pong(&ping);
        assert_eq!(replay.frames.len(), 3);
        assert_eq!(replay.bytes, 6);
        // What the client acknowledged is gone; what came after it is whole.
        assert_eq!(seqs(replay.after(ACK_EVERY as u64)), Some(3));
        assert_eq!(seqs(replay.after(ACK_EVERY as u64 - 1)), None);
        assert_eq!(replay.last(), ACK_EVERY as u64 + 3);
        // Answered: the next ping waits for enough frames again.
        assert_eq!(replay.ack_ping(), None);
        // A ping the old connection never got answered is forgotten on the new one.
        let _ = replay.ping_payload();
        assert_eq!(replay.ack_ping(), None);
        for _ in 0..ACK_EVERY {
            replay.record(Frame::from("{}".to_owned()));
        }
        assert_eq!(replay.ack_ping(), None, "a keepalive ping is unanswered");
        replay.reconnected();
        assert!(replay.ack_ping().is_some());
    }

    #[test]
    fn tickets_are_random_and_admit_only_their_token() {
        let a = Ticket::generate();
        let b = Ticket::generate();
        assert_ne!(a.grant.session, b.grant.session);
        assert_eq!(a.grant.session.len(), 22);
        assert_eq!(a.grant.resume_token.len(), 43);
        assert!(a.admits(&a.grant.resume_token));
        assert!(!a.admits(&b.grant.resume_token));
        assert!(!a.admits(""));
        assert!(!a.admits(&a.grant.session));
    }
}
