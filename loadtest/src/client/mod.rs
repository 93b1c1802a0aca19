//! One load client: holds a connection, sends its scheduled signals when the pacer pokes it
//! (`send`), records every signal it receives (`receive`), and when reconnecting is on (failover
//! and drain runs) reconnects after losing its connection: to a surviving node, or through the
//! one load-balancer URL to wherever it is sent.

mod receive;
mod send;
mod shared;

pub use shared::Shared;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::conn::{self, Dial, Ws};
use crate::inbound::Grant;
use crate::payload::FrameBuilder;
use crate::seq::SeqTracker;
use crate::stats::{Counters, Hist, bump};

const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
const PEER_WAIT: Duration = Duration::from_secs(10);

/// What one client is.
pub struct ClientSpec {
    pub client_id: String,
    pub token: String,
    pub room: String,
    /// Placement: node `slot % nodes`.
    pub slot: usize,
    /// How many other members it waits to see before it reports ready.
    pub expect_peers: usize,
    pub send: Option<SendSpec>,
}

/// A client's sending role: its sender number in the schedule and its frames.
pub struct SendSpec {
    pub sender: u32,
    pub frames: FrameBuilder,
    pub waker: Arc<Notify>,
}

/// What one client saw.
#[derive(Default)]
pub struct Outcome {
    pub counters: Counters,
    pub latency: Option<Hist>,
    pub send_lag: Option<Hist>,
    /// Kill (or disconnect) to re-joined, per reconnect.
    pub rejoin: Option<Hist>,
    pub joined: bool,
}

enum Step {
    Go,
    Lost(String),
}

enum Wake {
    Cancel,
    Frame(Option<Result<Message, WsError>>),
    Due,
}

struct Client {
    shared: Arc<Shared>,
    spec: ClientSpec,
    out: Outcome,
    peers: HashSet<String>,
    seqs: HashMap<u32, SeqTracker>,
    next: u64,
    /// This sender has been counted in `Shared::senders_done`.
    done: bool,
    /// The session's grant (`auth_success`, a `reconnect` notice), and the last `seq` received.
    grant: Option<Grant>,
    last_seq: u64,
}

/// Run one client until the run is cancelled (or its connection is lost for good).
pub async fn run(shared: Arc<Shared>, spec: ClientSpec, gate: Arc<Semaphore>) -> Outcome {
    let mut c = Client {
        shared,
        spec,
        out: Outcome::default(),
        peers: HashSet::new(),
        seqs: HashMap::new(),
        next: 0,
        done: false,
        grant: None,
        last_seq: 0,
    };
    let ws = c.setup(&gate).await;
    c.shared.ready.fetch_add(1, Ordering::Relaxed);
    if let Some(ws) = ws {
        c.out.joined = true;
        c.main_loop(ws).await;
    }
    c.give_up_sending();
    c.out
}

fn record(h: &mut Option<Hist>, ns: u64) {
    h.get_or_insert_with(Hist::default).record_ns(ns);
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

async fn wake(waker: Option<&Notify>) {
    match waker {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

impl Client {
    async fn setup(&mut self, gate: &Semaphore) -> Option<Ws> {
        let mut ws = {
            let _permit = gate.acquire().await.ok()?;
            self.dial().await?
        };
        let deadline = tokio::time::Instant::now() + PEER_WAIT;
        while self.peers.len() < self.spec.expect_peers {
            let Ok(frame) = tokio::time::timeout_at(deadline, ws.next()).await else {
                bump(&mut self.out.counters.connect_failures, "peers_timeout");
                break;
            };
            if let Step::Lost(why) = self.on_frame(frame) {
                bump(&mut self.out.counters.closes, &why);
                ws = self.reconnect().await?;
            }
        }
        Some(ws)
    }

    async fn dial(&mut self) -> Option<Ws> {
        let target = self.shared.target_for(self.spec.slot).clone();
        let dial = Dial {
            target: &target,
            room: Some(&self.spec.room),
            client_id: &self.spec.client_id,
            token: &self.spec.token,
            auth: self.shared.auth,
            timeout: DIAL_TIMEOUT,
        };
        match conn::dial(&dial).await {
            Ok(joined) => {
                self.peers = joined.peers.into_iter().collect();
                self.grant = joined.grant;
                self.last_seq = 0;
                Some(joined.ws)
            }
            Err(e) => {
                bump(&mut self.out.counters.connect_failures, &e.0);
                None
            }
        }
    }

    async fn main_loop(&mut self, mut ws: Ws) {
        let cancel = self.shared.cancel.clone();
        let waker = self.spec.send.as_ref().map(|s| Arc::clone(&s.waker));
        loop {
            let woke = tokio::select! {
                biased;
                () = cancel.cancelled() => Wake::Cancel,
                frame = ws.next() => Wake::Frame(frame),
                () = wake(waker.as_deref()) => Wake::Due,
            };
            let step = match woke {
                Wake::Cancel => break,
                Wake::Frame(frame) => self.on_frame(frame),
                Wake::Due => self.send_due(&mut ws).await,
            };
            if let Step::Lost(why) = step {
                bump(&mut self.out.counters.closes, &why);
                match self.reconnect().await {
                    Some(fresh) => ws = fresh,
                    None => return,
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(None)).await;
    }
}
