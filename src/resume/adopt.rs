//! Sessions that outlive their node. A resumable session's record (what a hand-off carries,
//! less its rooms and frames, and its token's hash) is kept in presence with its connection's
//! claim. When a node dies, the survivor that reaps it takes over each such session still
//! holding its client id: presence points at the survivor, and the session is parked there,
//! registered without a socket and listening to its user and rooms, until its client resumes it
//! on any node (a hand-off, as from any holder) or its window ends. Nobody sees it leave.
//!
//! Targeted and user-addressed signals and room broadcasts sent to the session between the
//! death and the takeover wait in Redis and come first (the hub's returns), then those that
//! reached this node while it registered the session (its strays). What was on its way through
//! the dead node when it died is lost with it. Numbering goes on after the `last_seq` the client
//! resumes with.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Described, Handed, Parked, Replay, Resumes, Ticket};
use crate::hub::Hub;
use crate::metrics as m;
use crate::presence::{Adopted, Resumable};
use crate::protocol::{Frame, Member};
use crate::registry::{ConnHandle, Control};
use crate::signaling::Session;

/// A session's record in presence.
#[derive(Serialize, Deserialize)]
struct Record {
    /// The SHA-256 of its resume token.
    hash: [u8; 32],
    handed: Handed,
}

/// The record of a fresh session `d` with `ticket`, for presence to keep.
pub fn resumable(ticket: &Ticket, d: &Described<'_>) -> Resumable {
    record(ticket, Handed::describe(d, d.me.node.clone()))
}

/// The record of a session that moved to `me` (this node) with `ticket`.
pub fn moved_resumable(ticket: &Ticket, handed: &Handed, me: &Member) -> Resumable {
    let (grant, credential) = (handed.grant(), handed.credential());
    let d = Described {
        session: &handed.session,
        me,
        grant: &grant,
        max_rooms: handed.max_rooms,
        credential: &credential,
        admin: handed.admin,
        peers: &handed.peers,
    };
    resumable(ticket, &d)
}

fn record(ticket: &Ticket, handed: Handed) -> Resumable {
    let record = Record {
        hash: *ticket.hash(),
        handed,
    };
    Resumable {
        id: ticket.grant.session.clone(),
        record: serde_json::to_string(&record).expect("a record serializes"),
    }
}

impl Resumes {
    /// Parks the sessions the hub takes over from dead nodes, as they come, until it stops.
    pub async fn adopt_all(
        self: Arc<Self>,
        hub: Arc<Hub>,
        mut adoptions: mpsc::UnboundedReceiver<Adopted>,
        max_frames: usize,
    ) {
        while let Some(adopted) = adoptions.recv().await {
            let (resumes, hub) = (Arc::clone(&self), Arc::clone(&hub));
            tokio::spawn(async move { resumes.adopt(&hub, adopted, max_frames).await });
        }
    }

    async fn adopt(self: &Arc<Self>, hub: &Arc<Hub>, adopted: Adopted, max_frames: usize) {
        let Adopted {
            member: me,
            rooms,
            session,
            held,
            overflowed,
        } = adopted;
        let record = serde_json::from_str::<Record>(&session.record).ok();
        let Some(Record { hash, handed }) = record.filter(|_| self.enabled()) else {
            // Not resumable here: it leaves, as the dead node's other members did.
            hub.disconnect(&me).await;
            return;
        };
        let ticket = Ticket::from_hash(session.id, hash);
        let (outbox, outbox_rx) = mpsc::channel(max_frames.max(held.len()));
        // What was sent to it since its node died comes first.
        for frame in held {
            let _ = outbox.try_send(Frame::from(frame));
        }
        let control = Arc::new(Control::default());
        let credential = Arc::new(handed.credential());
        let handle = ConnHandle {
            conn: me.conn,
            client: me.client_id.clone(),
            user: me.user_id.clone(),
            outbox,
            control: Arc::clone(&control),
            credential: Arc::clone(&credential),
            // The token is not known here: a drain's notice names no session to resume.
            resume: None,
        };
        if !hub.adopt(&me, handle, &rooms).await {
            return;
        }
        let mut session = Session::new(me.clone(), handed.grant(), handed.max_rooms);
        for room in rooms {
            session.joined(room);
        }
        metrics::counter!(m::SESSIONS_ADOPTED).increment(1);
        tracing::info!(client_id = %me.client_id, "took over a session of a dead node");
        let parked = Parked {
            me,
            session,
            outbox: outbox_rx,
            control,
            replay: Replay::adopted(max_frames, overflowed),
            ticket,
            credential,
            admin: handed.admin,
            peers: handed.peers,
        };
        self.park(hub, parked);
    }
}
