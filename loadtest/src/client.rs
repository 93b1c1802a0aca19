//! One load client: holds a connection, sends its scheduled signals when the pacer pokes it,
//! records every signal it receives, and (in failover runs) reconnects to a surviving node.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use crate::clock::{Schedule, now_ns, ns_of};
use crate::conn::{self, Auth, Dial, Ws};
use crate::payload::{Event, FrameBuilder, Stamp, parse};
use crate::seq::{Arrival, SeqTracker};
use crate::stats::{Counters, Hist, bump};
use crate::target::Target;

const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
const PEER_WAIT: Duration = Duration::from_secs(10);
const RECONNECT_TRIES: u32 = 40;

/// State shared by all clients of one run and its orchestrator.
pub struct Shared {
    pub targets: Vec<Target>,
    pub auth: Auth,
    pub reconnect: bool,
    pub cancel: CancellationToken,
    pub schedule: OnceLock<Schedule>,
    /// Clients done with setup, joined or not.
    pub ready: AtomicUsize,
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    /// Index of a node that was killed; reconnects avoid it.
    pub dead_node: OnceLock<usize>,
    pub kill_at: OnceLock<Instant>,
}

impl Shared {
    pub fn new(targets: Vec<Target>, auth: Auth, reconnect: bool) -> Self {
        Self {
            targets,
            auth,
            reconnect,
            cancel: CancellationToken::new(),
            schedule: OnceLock::new(),
            ready: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dead_node: OnceLock::new(),
            kill_at: OnceLock::new(),
        }
    }

    /// The node for placement `slot`, skipping a killed one.
    pub fn target_for(&self, slot: usize) -> &Target {
        let dead = self.dead_node.get().copied();
        let alive: Vec<&Target> =
            self.targets.iter().enumerate().filter(|(i, _)| Some(*i) != dead).map(|(_, t)| t).collect();
        if alive.is_empty() {
            return &self.targets[slot % self.targets.len()];
        }
        alive[slot % alive.len()]
    }
}

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
}

/// Run one client until the run is cancelled (or its connection is lost for good).
pub async fn run(shared: Arc<Shared>, spec: ClientSpec, gate: Arc<Semaphore>) -> Outcome {
    let mut c = Client { shared, spec, out: Outcome::default(), peers: HashSet::new(), seqs: HashMap::new(), next: 0 };
    let ws = c.setup(&gate).await;
    c.shared.ready.fetch_add(1, Ordering::Relaxed);
    if let Some(ws) = ws {
        c.out.joined = true;
        c.main_loop(ws).await;
    }
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
                return None;
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

    async fn send_due(&mut self, ws: &mut Ws) -> Step {
        let (Some(plan), Some(send)) = (self.shared.schedule.get(), &self.spec.send) else {
            return Step::Go;
        };
        let id = send.sender as usize;
        let total = plan.count_for(id);
        let now = Instant::now();
        let mut fed = 0;
        while self.next < total {
            let due = plan.due(id, self.next);
            if due > now {
                break;
            }
            let stamp = Stamp { sender: send.sender, seq: self.next, sched_ns: ns_of(due) };
            if let Err(e) = ws.feed(Message::text(send.frames.build(&stamp))).await {
                return Step::Lost(conn::ws_error_key(&e));
            }
            record(&mut self.out.send_lag, nanos(now - due));
            self.next += 1;
            fed += 1;
        }
        self.out.counters.sent += fed;
        self.shared.sent.fetch_add(fed, Ordering::Relaxed);
        match ws.flush().await {
            Ok(()) => Step::Go,
            Err(e) => Step::Lost(conn::ws_error_key(&e)),
        }
    }

    fn on_frame(&mut self, frame: Option<Result<Message, WsError>>) -> Step {
        match frame {
            None => Step::Lost("eof".into()),
            Some(Err(e)) => Step::Lost(conn::ws_error_key(&e)),
            Some(Ok(Message::Text(text))) => {
                self.on_text(&text);
                Step::Go
            }
            Some(Ok(Message::Close(f))) => Step::Lost(f.map_or(1005, |f| u16::from(f.code)).to_string()),
            Some(Ok(_)) => Step::Go,
        }
    }

    fn on_text(&mut self, text: &str) {
        match parse(text) {
            Some(Event::Signal(Some(stamp))) => self.on_signal(stamp),
            Some(Event::Signal(None)) | None => self.out.counters.unreadable += 1,
            Some(Event::Error(code)) => bump(&mut self.out.counters.errors, &code),
            Some(Event::UsersInRoom(users)) => self.peers = users.into_iter().collect(),
            Some(Event::UserJoined(id)) => {
                self.peers.insert(id);
            }
            Some(Event::UserLeft(id)) => {
                self.peers.remove(&id);
            }
            Some(_) => {}
        }
    }

    fn on_signal(&mut self, stamp: Stamp) {
        let now = now_ns();
        let c = &mut self.out.counters;
        match self.seqs.entry(stamp.sender).or_default().observe(stamp.seq) {
            Arrival::Duplicate => c.duplicates += 1,
            Arrival::OutOfRange => c.unreadable += 1,
            arrival => {
                c.reordered += u64::from(arrival == Arrival::Reordered);
                c.delivered += 1;
                self.shared.delivered.fetch_add(1, Ordering::Relaxed);
                record(&mut self.out.latency, now.saturating_sub(stamp.sched_ns));
            }
        }
    }

    async fn reconnect(&mut self) -> Option<Ws> {
        if !self.shared.reconnect {
            return None;
        }
        let lost_at = Instant::now();
        for attempt in 0..RECONNECT_TRIES {
            if self.shared.cancel.is_cancelled() {
                return None;
            }
            if let Some(ws) = self.dial().await {
                let since = self.shared.kill_at.get().copied().filter(|k| *k <= lost_at).unwrap_or(lost_at);
                record(&mut self.out.rejoin, nanos(since.elapsed()));
                self.skip_overdue();
                return Some(ws);
            }
            let backoff = Duration::from_millis(25 << attempt.min(5));
            tokio::select! {
                () = self.shared.cancel.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
        }
        None
    }

    /// After a reconnect, messages that fell due while disconnected are skipped, not sent late.
    fn skip_overdue(&mut self) {
        let (Some(plan), Some(send)) = (self.shared.schedule.get(), &self.spec.send) else {
            return;
        };
        let id = send.sender as usize;
        let resume = plan.first_due_from(id, Instant::now()).min(plan.count_for(id));
        if resume > self.next {
            self.out.counters.skipped += resume - self.next;
            self.next = resume;
        }
    }
}
