//! Many plain connections at once (storm, idle): open them as fast as a concurrency limit
//! allows, time each one from the TCP connect to joined, then hold them, reading so that
//! nothing backs up, until told to close.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::conn::{self, Auth, Dial, Ws};
use crate::inbound::{Event, parse};
use crate::layout::run_id;
use crate::stats::{Counters, Hist, Tally, bump};
use crate::target::Target;
use crate::token::Minter;

const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
const OPEN_TIMEOUT: Duration = Duration::from_secs(180);

/// How many connections, how, and where.
pub struct FleetSpec {
    pub clients: usize,
    pub concurrency: usize,
    /// Members per room; 0 = `/ws`, no room.
    pub room_size: usize,
    pub auth: Auth,
    pub secret: String,
}

/// Open connections and what opening them took.
pub struct Fleet {
    cancel: CancellationToken,
    tasks: JoinSet<Counters>,
    /// Connect-to-joined time of each connection that made it.
    pub joins: Hist,
    pub joined: usize,
    pub failures: Tally,
    /// From the first attempt to the last join.
    pub wall: Duration,
}

struct Member {
    target: Target,
    client_id: String,
    token: String,
    room: Option<String>,
    auth: Auth,
}

type JoinReport = Result<(Duration, Instant), String>;

/// Open `spec.clients` connections, rooms dealt round-robin over `targets`; returns once
/// each has joined or failed.
pub async fn open(spec: &FleetSpec, targets: &[Target]) -> Result<Fleet> {
    let members = members(spec, targets)?;
    let cancel = CancellationToken::new();
    let gate = Arc::new(Semaphore::new(spec.concurrency));
    let (tx, mut rx) = mpsc::channel::<JoinReport>(spec.clients.max(1));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for m in members {
        let (gate, tx, cancel) = (Arc::clone(&gate), tx.clone(), cancel.clone());
        tasks.spawn(attempt(m, gate, tx, cancel));
    }
    drop(tx);
    let mut fleet = Fleet {
        cancel,
        tasks,
        joins: Hist::default(),
        joined: 0,
        failures: Tally::new(),
        wall: Duration::ZERO,
    };
    let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
    let mut last = started;
    for _ in 0..spec.clients {
        let Ok(Some(report)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        match report {
            Ok((took, at)) => {
                fleet.joins.record(took);
                fleet.joined += 1;
                last = last.max(at);
            }
            Err(e) => bump(&mut fleet.failures, &e),
        }
    }
    fleet.wall = last - started;
    Ok(fleet)
}

/// One connection: wait for a slot, dial, report, then hold until cancelled.
async fn attempt(
    m: Member,
    gate: Arc<Semaphore>,
    tx: mpsc::Sender<JoinReport>,
    cancel: CancellationToken,
) -> Counters {
    let permit = gate.acquire_owned().await;
    let t0 = Instant::now();
    let result = dial(&m).await;
    drop(permit);
    match result {
        Ok(ws) => {
            let _ = tx.send(Ok((t0.elapsed(), Instant::now()))).await;
            drop(tx);
            hold(ws, cancel).await
        }
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            Counters::default()
        }
    }
}

fn members(spec: &FleetSpec, targets: &[Target]) -> Result<Vec<Member>> {
    let run = run_id();
    let minter = Minter::new(&spec.secret);
    (0..spec.clients)
        .map(|i| {
            let client_id = format!("{run}f{i}");
            let group = i / spec.room_size.max(1);
            Ok(Member {
                target: targets[group % targets.len()].clone(),
                token: minter.mint(&format!("lt-{client_id}"), &client_id)?,
                room: (spec.room_size > 0).then(|| format!("lt-{run}-{group}")),
                client_id,
                auth: spec.auth,
            })
        })
        .collect()
}

async fn dial(m: &Member) -> Result<Ws, String> {
    let d = Dial {
        target: &m.target,
        room: m.room.as_deref(),
        client_id: &m.client_id,
        token: &m.token,
        auth: m.auth,
        timeout: DIAL_TIMEOUT,
    };
    conn::dial(&d).await.map(|j| j.ws).map_err(|e| e.0)
}

/// Read until cancelled or closed, tallying error frames and how the connection ended.
async fn hold(mut ws: Ws, cancel: CancellationToken) -> Counters {
    let mut c = Counters::default();
    loop {
        let frame = tokio::select! {
            () = cancel.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                return c;
            }
            frame = ws.next() => frame,
        };
        match frame {
            Some(Ok(Message::Text(t))) => {
                if let Some(Event::Error(code)) = parse(&t) {
                    bump(&mut c.errors, &code);
                }
            }
            Some(Ok(Message::Close(f))) => {
                bump(
                    &mut c.closes,
                    &f.map_or(1005, |f| u16::from(f.code)).to_string(),
                );
                return c;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                bump(&mut c.closes, &conn::ws_error_key(&e));
                return c;
            }
            None => {
                bump(&mut c.closes, "eof");
                return c;
            }
        }
    }
}

impl Fleet {
    /// Close every connection and add up what they saw while held.
    pub async fn close(self) -> Counters {
        self.cancel.cancel();
        let mut total = Counters::default();
        for c in self.tasks.join_all().await {
            total.merge(&c);
        }
        total
    }
}
