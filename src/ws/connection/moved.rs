//! A `resume` of a session this node does not hold: asked of the cluster, and continued here
//! when another node hands it over (see the `resume` module's hand-off).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use futures_util::SinkExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::{Conn, Live, Peers};
use crate::metrics as m;
use crate::protocol::{CloseCode, ConnId, ErrorCode, Frame, Member, ServerMessage, Stamp, UserId};
use crate::registry::{ConnHandle, Control};
use crate::resume::{Event, Handover, Parked, Refusal, Replay, Ticket, handoff};
use crate::signaling::Session;

/// How long each later ask for a session waits, when nobody answered for it but presence names
/// it (its node died, and a survivor is about to take it over).
const ADOPTION_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// A session a `resume` took: parked here, or handed over by another node (with the token the
/// client resumed with).
pub enum Taken {
    Here(Box<Parked>, u64),
    Moved(Box<Handover>, u64, String),
}

/// Frames that came both ways during a hand-off are written once: counted by their bytes and
/// stamp (whichever node delivered them).
#[derive(Default)]
struct Seen(HashMap<(u64, u64), usize>);

impl Seen {
    fn key(frame: &Frame) -> (u64, u64) {
        let mut hasher = DefaultHasher::new();
        frame.as_str().hash(&mut hasher);
        (frame.stamp().remote().to_bits(), hasher.finish())
    }

    fn add(&mut self, frame: &Frame) {
        *self.0.entry(Self::key(frame)).or_default() += 1;
    }

    /// Whether `frame` came already (and forgets one of its copies).
    fn take(&mut self, frame: &Frame) -> bool {
        match self.0.get_mut(&Self::key(frame)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

impl Conn {
    /// Takes session `id` up: parked (or live) here, or else from the node that holds it.
    pub(super) async fn resume_anywhere(
        &mut self,
        id: &str,
        token: String,
        last_seq: u64,
        user: Option<&UserId>,
    ) -> Result<Taken, Refusal> {
        let resumes = Arc::clone(&self.state.resumes);
        let (handoffs, hub) = (&self.state.handoffs, &self.state.hub);
        // A session whose node died is taken over by a survivor within this long: until then
        // nobody answers for it, though presence still names it.
        let mut wait = handoff::ASK_WAIT;
        let deadline = tokio::time::Instant::now() + wait + hub.presence.adoption_wait();
        loop {
            match resumes.resume_as(id, &token, last_seq, user).await {
                Ok(mut parked) => {
                    if parked.ticket.grant.resume_token.is_empty() {
                        // Taken over from a dead node, which is all that knew the token.
                        parked.ticket = Ticket::from_token(id.to_owned(), token);
                        let grant = Arc::clone(&parked.ticket.grant);
                        hub.registry.grant(parked.me.conn, grant);
                    }
                    return Ok(Taken::Here(Box::new(parked), last_seq));
                }
                Err(Refusal::Expired) => {}
                Err(refusal) => return Err(refusal),
            }
            match handoffs
                .ask(hub, ConnId::generate(), id, &token, last_seq, user, wait)
                .await
            {
                Ok(handover) => return Ok(Taken::Moved(Box::new(handover), last_seq, token)),
                Err(Refusal::Expired)
                    if tokio::time::Instant::now() < deadline
                        && hub.presence.session_known(id).await =>
                {
                    wait = ADOPTION_POLL;
                }
                Err(refusal) => return Err(refusal),
            }
        }
    }

    /// Continues a session a `resume` took.
    pub(super) async fn continue_taken(&mut self, taken: Taken) -> CloseCode {
        match taken {
            Taken::Here(parked, last_seq) => Box::pin(self.resume(*parked, last_seq)).await,
            Taken::Moved(handover, last_seq, token) => {
                Box::pin(self.resume_moved(*handover, last_seq, token)).await
            }
        }
    }

    /// Continues a session another node handed over: takes its client id and seats, writes
    /// `resumed`, the frames after `last_seq`, what the old connection forwards until the
    /// holder's end, then what reached this connection meanwhile (less what came both ways),
    /// then runs the main loop.
    async fn resume_moved(
        &mut self,
        handover: Handover,
        last_seq: u64,
        token: String,
    ) -> CloseCode {
        let span = self.span.clone();
        let config = Arc::clone(&self.state.config);
        let hub = Arc::clone(&self.state.hub);
        let Handover {
            conn,
            handed,
            mut events,
            ..
        } = handover;
        let me = Member {
            client_id: handed.client_id.clone(),
            user_id: handed.user_id.clone(),
            username: handed.username.clone(),
            conn,
            node: hub.node.clone(),
        };
        self.span.record("client_id", me.client_id.as_str());
        let ticket = Ticket::from_token(handed.session.clone(), token);
        let (outbox, mut outbox_rx) = mpsc::channel(config.outbox_frames);
        let control = Arc::new(Control::default());
        self.credential = Arc::new(handed.credential());
        let handle = ConnHandle {
            conn,
            client: me.client_id.clone(),
            user: me.user_id.clone(),
            outbox,
            control: Arc::clone(&control),
            credential: Arc::clone(&self.credential),
            resume: Some(Arc::clone(&ticket.grant)),
        };
        let resumable = crate::resume::moved_resumable(&ticket, &handed, &me);
        let connected = hub
            .connect_moved(&me, handle, &resumable)
            .instrument(span.clone())
            .await;
        if let Err(e) = connected {
            let code = match e.code {
                ErrorCode::ClientIdTaken => CloseCode::PolicyViolation,
                _ => CloseCode::InternalError,
            };
            self.send_error(e).instrument(span).await;
            return code;
        }
        let mut session = Session::new(me.clone(), handed.grant(), handed.max_rooms);
        for room in &handed.rooms {
            match hub.rejoin(&me, room).instrument(span.clone()).await {
                Ok(()) => session.joined(room.clone()),
                Err(_) => tracing::warn!(parent: &span, "a moved session lost a room"),
            }
        }
        handoff::moved(&hub, &handed.holder, conn).await;
        metrics::gauge!(m::CONNECTIONS).increment(1.0);
        self.limit_user(&me.user_id);
        self.peers = Peers {
            admin: handed.admin,
            names: handed.peers.clone(),
        };
        self.attach(&ticket, &me.user_id);
        let resumed = ServerMessage::Resumed {
            session: ticket.grant.session.clone(),
            client_id: me.client_id.clone(),
            rooms: session.rooms().to_vec(),
        };
        // `resumed` is not numbered; the handed frames are numbered again as they were.
        let mut sent = self.send(&resumed).await;
        self.replay = Some(Replay::starting(config.outbox_frames, last_seq + 1));
        let missed = handed.replay.iter().map(|(_, f)| Frame::from(f.clone()));
        sent = sent && self.write_fresh(missed.collect()).await;
        let mut seen = Seen::default();
        // Forwarded frames the client was gone for (its socket failed during the switch).
        let mut unsent = Vec::new();
        loop {
            match tokio::time::timeout(handoff::END_WAIT, events.recv()).await {
                Ok(Some(Event::Frame(frame))) => {
                    seen.add(&frame);
                    if sent {
                        sent = self.write_fresh(vec![frame]).await;
                    } else {
                        unsent.push(frame);
                    }
                }
                Ok(Some(Event::Answer(_))) => {}
                Ok(Some(Event::End) | None) | Err(_) => break,
            }
        }
        drop(events);
        let mut direct = Vec::new();
        while let Ok(frame) = outbox_rx.try_recv() {
            if !seen.take(&frame) {
                direct.push(frame);
            }
        }
        if sent {
            sent = self.write_fresh(direct).await;
        } else {
            // The session parks with all of it, in order, for its next resume.
            for frame in unsent.iter().chain(&direct) {
                hub.registry.deliver_conn(conn, frame);
            }
        }
        let code = if !sent {
            CloseCode::Normal
        } else {
            self.main_loop(&mut session, &control, &mut outbox_rx).await
        };
        let live = Live {
            session,
            outbox: outbox_rx,
            control,
            ticket: Some(ticket),
        };
        Box::pin(self.end(live, code)).instrument(span).await
    }

    /// Writes frames not numbered yet, numbering them, with one flush.
    async fn write_fresh(&mut self, frames: Vec<Frame>) -> bool {
        if frames.is_empty() {
            return true;
        }
        let deadline = self.state.config.write_timeout;
        let written = tokio::time::timeout(deadline, async {
            for frame in frames {
                let stamp = frame.stamp();
                if stamp != Stamp::NONE {
                    m::delivered(stamp, crate::protocol::unix_micros());
                }
                let message = match &mut self.replay {
                    Some(replay) => {
                        let message = super::super::socket_text_seq(&frame, replay.next_seq());
                        replay.record(frame);
                        message
                    }
                    None => super::super::socket_text(frame),
                };
                self.socket.feed(message).await?;
            }
            self.socket.flush().await
        })
        .await;
        let written = matches!(written, Ok(Ok(())));
        self.dropped |= !written;
        written
    }
}
