//! One timed load run against one set of nodes: build the clients, wait until every one has
//! joined and sees its peers, pace the schedule, drain, and add up what every client saw.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{self, Outcome, Shared};
use crate::clock::Schedule;
use crate::conn::Auth;
pub use crate::layout::Layout;
use crate::layout::build_clients;
use crate::pacer::Pacer;
use crate::stats::{Counters, Hist, Summary};
use crate::sys::{CpuProbe, CpuUse, Nodes};

const SETUP_CONCURRENCY: usize = 128;
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSpec {
    pub layout: Layout,
    /// Timed signals per second, all senders together.
    pub rate: f64,
    pub duration: Duration,
    pub drain: Duration,
    pub auth: Auth,
    /// Clients that lose their connection reconnect and re-join (on a surviving node).
    pub reconnect: bool,
    /// Reconnecting clients resume their sessions (`resume` with the last `seq` received).
    pub resume: bool,
    #[serde(skip)]
    pub secret: String,
}

/// SIGKILL `pid` (node `node` of the target list) `after` the run starts.
#[derive(Debug, Clone, Copy)]
pub struct KillPlan {
    pub after: Duration,
    pub pid: u32,
    pub node: usize,
}

/// Everything measured in one run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadStats {
    pub target: String,
    pub nodes: usize,
    pub clients: usize,
    pub joined: usize,
    pub rate: f64,
    /// From the first due message to the last delivery (or the drain deadline). Rates use
    /// the sending window (`--duration`) instead.
    pub active_s: f64,
    pub expected: u64,
    pub lost: u64,
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    pub counters: Counters,
    pub latency: Summary,
    pub send_lag: Summary,
    pub rejoin: Option<Summary>,
    pub server_cpu: Option<CpuUse>,
    pub aux_cpu: Option<CpuUse>,
    pub tool_cpu: Option<CpuUse>,
}

/// Run `spec` against `nodes`, optionally killing one node part-way (a kill plan wants
/// `spec.reconnect`).
pub async fn run(spec: &LoadSpec, nodes: &Nodes, kill: Option<KillPlan>) -> Result<LoadStats> {
    let (clients, wakers) = build_clients(spec.layout, &spec.secret)?;
    let n = clients.len();
    let shared = Arc::new(Shared::new(
        nodes.targets.clone(),
        spec.auth,
        spec.reconnect,
        spec.resume,
    ));
    let gate = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut set = JoinSet::new();
    for c in clients {
        set.spawn(client::run(Arc::clone(&shared), c, Arc::clone(&gate)));
    }
    wait_ready(&shared, n).await;
    let probe = CpuProbe::start(nodes)?;
    let start = Instant::now() + Duration::from_millis(20);
    let senders = wakers.len();
    let plan = Schedule::new(start, spec.rate, senders, spec.duration);
    let _ = shared.schedule.set(plan);
    let pacer = Pacer::spawn(plan, wakers)?;
    if let Some(k) = kill {
        tokio::spawn(kill_later(Arc::clone(&shared), start + k.after, k));
    }
    tokio::time::sleep_until((start + spec.duration).into()).await;
    let busy = (0..senders).filter(|&k| plan.count_for(k) > 0).count();
    drain(&shared, busy, spec.layout.fanout(), spec.drain).await;
    let active = start.elapsed();
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let cpu = probe.finish(active, delivered)?;
    pacer.stop();
    shared.cancel.cancel();
    let outcomes = set.join_all().await;
    Ok(summarize(spec, nodes, n, active, cpu, &outcomes))
}

async fn wait_ready(shared: &Shared, n: usize) {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    while shared.ready.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until every sender is done and every sent message has been delivered, or `limit`
/// passes.
async fn drain(shared: &Shared, senders: usize, fanout: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let done = shared.senders_done.load(Ordering::Relaxed) >= senders;
        let want = shared.sent.load(Ordering::Relaxed) * fanout;
        if done && shared.delivered.load(Ordering::Relaxed) >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn kill_later(shared: Arc<Shared>, at: Instant, plan: KillPlan) {
    tokio::time::sleep_until(at.into()).await;
    let _ = shared.dead_node.set(plan.node);
    let _ = shared.kill_at.set(Instant::now());
    let status = tokio::process::Command::new("kill")
        .arg("-KILL")
        .arg(plan.pid.to_string())
        .status()
        .await;
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("warning: kill -KILL {} failed", plan.pid);
    }
}

fn summarize(
    spec: &LoadSpec,
    nodes: &Nodes,
    n: usize,
    active: Duration,
    cpu: [Option<CpuUse>; 3],
    outs: &[Outcome],
) -> LoadStats {
    let mut counters = Counters::default();
    let (mut latency, mut lag, mut rejoin) = (Hist::default(), Hist::default(), Hist::default());
    for o in outs {
        counters.merge(&o.counters);
        o.latency.iter().for_each(|h| latency.merge(h));
        o.send_lag.iter().for_each(|h| lag.merge(h));
        o.rejoin.iter().for_each(|h| rejoin.merge(h));
    }
    let expected = counters.sent * spec.layout.fanout();
    let secs = active.as_secs_f64().max(1e-9);
    let [server_cpu, aux_cpu, tool_cpu] = cpu;
    LoadStats {
        target: nodes.label.clone(),
        nodes: nodes.targets.len(),
        clients: n,
        joined: outs.iter().filter(|o| o.joined).count(),
        rate: spec.rate,
        active_s: secs,
        expected,
        lost: expected.saturating_sub(counters.delivered),
        sent_per_s: counters.sent as f64 / spec.duration.as_secs_f64().max(1e-9),
        delivered_per_s: counters.delivered as f64 / spec.duration.as_secs_f64().max(1e-9),
        latency: latency.summary(),
        send_lag: lag.summary(),
        rejoin: (rejoin.len() > 0).then(|| rejoin.summary()),
        counters,
        server_cpu,
        aux_cpu,
        tool_cpu,
    }
}
