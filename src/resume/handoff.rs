//! Handing a session to another node: a `resume` that reaches a node which does not hold the
//! session is asked of the whole cluster, and the node that holds it (parked, or live on a
//! connection the client saw die) answers with all the new node needs to continue it.
//!
//! 1. The asker publishes an *ask* on [`Topic::Cluster`]: the session id, the SHA-256 of the
//!    resume token (the token itself never crosses the bus), `last_seq`, the new connection's
//!    id, and the user when the connection authenticated already. Only the holder answers; no
//!    answer within [`ASK_WAIT`] is `expired`.
//! 2. The holder takes the session as a local resume would (the token checked in constant
//!    time) and answers on the asker's [`Topic::Node`]: the member, its grant, rooms and
//!    credential, and the frames after `last_seq` from the replay.
//! 3. The asker claims the client id and takes the old connection's seats (nobody is told),
//!    and says so (*moved*); an answer that came after the asker gave up is *declined*. A
//!    holder that hears neither within [`MOVE_WAIT`], or a decline, parks the session again.
//! 4. Once moved, the holder forwards whatever reaches the old connection's outbox
//!    ([`Route::Conn`]), in order, for [`GRACE`] (signals already on their way to it), then
//!    sends *end* and lets the old connection go: presence moved, so its departure removes
//!    and announces nothing.
//!
//! The new connection writes the forwarded frames as they come and holds what reaches it
//! directly until the end; then it writes those, less the ones that came both ways (room and
//! user broadcasts heard by both nodes during the switch).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Refusal, Resumes};
use crate::bus::{Envelope, Route, Topic};
use crate::hub::Hub;
use crate::metrics as m;
use crate::protocol::{ConnId, Frame, NodeId, Stamp, UserId};

/// How long an asker waits for the holder's answer.
pub const ASK_WAIT: Duration = Duration::from_secs(2);
/// How long the holder waits for the asker to take the seats before it parks the session again.
const MOVE_WAIT: Duration = Duration::from_secs(5);
/// How long the holder goes on forwarding after the asker took the seats.
pub const GRACE: Duration = Duration::from_millis(500);
/// How long the new connection waits for the holder's end.
pub const END_WAIT: Duration = Duration::from_secs(15);

mod wire;

use wire::Step;
pub use wire::{Described, Handed};

/// What reaches a new connection during its hand-off.
pub enum Event {
    Answer(Result<Box<Handed>, Refusal>),
    /// A frame that reached the old connection.
    Frame(Frame),
    /// Nothing more comes from the old connection.
    End,
}

/// The node's hand-offs under way, both ways.
#[derive(Default)]
pub struct Handoffs {
    /// New connections here waiting for their holder, by connection id.
    asking: Mutex<HashMap<ConnId, mpsc::UnboundedSender<Event>>>,
    /// Sessions held here and handed to a new connection (by its id): told whether it took
    /// the seats (`true`) or declined the answer (`false`).
    forwarding: Mutex<HashMap<ConnId, mpsc::UnboundedSender<bool>>>,
}

/// A session handed to a new connection of this node: what it needs, and what comes next.
pub struct Handover {
    pub conn: ConnId,
    pub handed: Box<Handed>,
    pub events: mpsc::UnboundedReceiver<Event>,
    _asking: Asking,
}

/// A new connection's place among those asking; left when dropped.
struct Asking {
    conn: ConnId,
    handoffs: Arc<Handoffs>,
}

/// Tells `holder` that new connection `conn` holds the session's seats now.
pub async fn moved(hub: &Hub, holder: &NodeId, conn: ConnId) {
    publish(hub, &Topic::Node(holder.clone()), &Step::Moved { conn }).await;
}

impl Drop for Asking {
    fn drop(&mut self) {
        lock(&self.handoffs.asking).remove(&self.conn);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn publish(hub: &Hub, topic: &Topic, step: &Step) -> bool {
    let payload = Bytes::from(serde_json::to_vec(step).expect("a step serializes"));
    matches!(
        hub.publish_handoff(topic, Route::Handoff, payload, Stamp::NONE)
            .await,
        Ok(n) if n > 0
    )
}

impl Handoffs {
    /// Asks the cluster for session `id` on behalf of new connection `conn` of this node;
    /// waits `wait` for the holder's answer.
    #[allow(clippy::too_many_arguments)]
    pub async fn ask(
        self: &Arc<Self>,
        hub: &Hub,
        conn: ConnId,
        id: &str,
        token: &str,
        last_seq: u64,
        user: Option<&UserId>,
        wait: Duration,
    ) -> Result<Handover, Refusal> {
        let (tx, mut events) = mpsc::unbounded_channel();
        lock(&self.asking).insert(conn, tx);
        let asking = Asking {
            conn,
            handoffs: Arc::clone(self),
        };
        let ask = Step::Ask {
            asker: hub.node.clone(),
            session: id.to_owned(),
            hash: super::hash(token),
            last_seq,
            conn,
            user: user.cloned(),
        };
        if !publish(hub, &Topic::Cluster, &ask).await {
            return Err(Refusal::Expired);
        }
        match tokio::time::timeout(wait, events.recv()).await {
            Ok(Some(Event::Answer(Ok(handed)))) => Ok(Handover {
                conn,
                handed,
                events,
                _asking: asking,
            }),
            Ok(Some(Event::Answer(Err(refusal)))) => Err(refusal),
            _ => Err(Refusal::Expired),
        }
    }

    /// Takes the node's hand-off envelopes until the hub stops.
    pub async fn run(
        self: Arc<Self>,
        hub: Arc<Hub>,
        resumes: Arc<Resumes>,
        mut inbound: mpsc::UnboundedReceiver<Envelope>,
    ) {
        while let Some(envelope) = inbound.recv().await {
            let origin = envelope.origin;
            let step = match envelope.route {
                Route::Conn { conn } => {
                    if let Ok(frame) = Frame::try_from(envelope.payload) {
                        self.tell(conn, Event::Frame(frame.stamped(envelope.stamp)));
                    }
                    continue;
                }
                Route::Handoff => match serde_json::from_slice::<Step>(&envelope.payload) {
                    Ok(step) => step,
                    Err(_) => {
                        metrics::counter!(m::BUS_DROPPED).increment(1);
                        continue;
                    }
                },
                _ => continue,
            };
            match step {
                Step::Ask { ref session, .. } if resumes.holds(session) => {
                    let (this, hub, resumes) = (Arc::clone(&self), Arc::clone(&hub), &resumes);
                    tokio::spawn(this.hold(hub, Arc::clone(resumes), step));
                }
                Step::Ask { .. } => {}
                Step::Answer {
                    conn,
                    handed,
                    refused,
                } => {
                    let answer = match (handed, refused) {
                        (Some(handed), _) => Ok(handed),
                        (None, reason) => Err(Refusal::from_reason(&reason.unwrap_or_default())),
                    };
                    let handed = answer.is_ok();
                    if !self.tell(conn, Event::Answer(answer)) && handed {
                        let hub = Arc::clone(&hub);
                        tokio::spawn(async move {
                            let declined = Step::Declined { conn };
                            publish(&hub, &Topic::Node(origin), &declined).await;
                        });
                    }
                }
                Step::Moved { conn } => self.settle(conn, true),
                Step::Declined { conn } => self.settle(conn, false),
                Step::End { conn } => {
                    self.tell(conn, Event::End);
                }
            }
        }
    }

    /// Hands `event` to new connection `conn`; `false` when it is not asking (any more).
    fn tell(&self, conn: ConnId, event: Event) -> bool {
        lock(&self.asking)
            .get(&conn)
            .is_some_and(|tx| tx.send(event).is_ok())
    }

    fn settle(&self, conn: ConnId, moved: bool) {
        if let Some(tx) = lock(&self.forwarding).get(&conn) {
            let _ = tx.send(moved);
        }
    }

    /// Answers an ask for a session held here, and forwards its outbox until it moved.
    async fn hold(self: Arc<Self>, hub: Arc<Hub>, resumes: Arc<Resumes>, ask: Step) {
        let Step::Ask {
            asker,
            session,
            hash,
            last_seq,
            conn,
            user,
        } = ask
        else {
            return;
        };
        let topic = Topic::Node(asker);
        let parked = match resumes
            .resume_hashed(&session, &hash, last_seq, user.as_ref())
            .await
        {
            Ok(parked) => parked,
            Err(refusal) => {
                let refused = Some(refusal.reason().to_owned());
                let answer = Step::Answer {
                    conn,
                    handed: None,
                    refused,
                };
                publish(&hub, &topic, &answer).await;
                return;
            }
        };
        let handed = Handed::of(&parked, last_seq, hub.node.clone());
        let (settled, mut settle) = mpsc::unbounded_channel();
        lock(&self.forwarding).insert(conn, settled);
        let answer = Step::Answer {
            conn,
            handed: Some(Box::new(handed)),
            refused: None,
        };
        if !publish(&hub, &topic, &answer).await {
            // The asker is gone: the session waits here for another resume.
            lock(&self.forwarding).remove(&conn);
            resumes.park(&hub, parked);
            return;
        }
        // Nothing is forwarded before the asker took the seats: a session it did not take
        // stays whole here, parked again.
        let moved = tokio::time::timeout(MOVE_WAIT, settle.recv()).await;
        if !matches!(moved, Ok(Some(true))) {
            lock(&self.forwarding).remove(&conn);
            resumes.park(&hub, parked);
            return;
        }
        metrics::counter!(m::RESUMES, "result" => "handed_off").increment(1);
        let mut outbox = parked.outbox;
        let stop = tokio::time::sleep(GRACE);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                Some(frame) = outbox.recv() => forward(&hub, &topic, conn, frame).await,
                () = &mut stop => break,
            }
        }
        while let Ok(frame) = outbox.try_recv() {
            forward(&hub, &topic, conn, frame).await;
        }
        publish(&hub, &topic, &Step::End { conn }).await;
        lock(&self.forwarding).remove(&conn);
        hub.disconnect(&parked.me).await;
    }
}

async fn forward(hub: &Hub, topic: &Topic, conn: ConnId, frame: Frame) {
    let stamp = frame.stamp();
    let route = Route::Conn { conn };
    let _ = hub
        .publish_handoff(topic, route, frame.into_bytes(), stamp)
        .await;
}
