//! `idle`: hold N authenticated connections and read the server's RSS per connection
//! (RSS after joining minus RSS before, over the connections held).

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use super::{finish, names, order, systems};
use crate::cli::IdleArgs;
use crate::fleet::{self, FleetSpec};
use crate::report::{Metric, compare};
use crate::stats::{Counters, Tally, tally_total};
use crate::sys::{CpuProbe, CpuUse, Nodes, check_sockets};

#[derive(Debug, Clone, Serialize)]
pub struct IdleStats {
    pub target: String,
    pub clients: usize,
    pub joined: usize,
    pub failures: Tally,
    pub rss_before_kib: Option<u64>,
    /// After the last join and `--settle`.
    pub rss_joined_kib: Option<u64>,
    /// At the end of `--hold`.
    pub rss_held_kib: Option<u64>,
    pub kib_per_conn: Option<f64>,
    pub kib_per_conn_held: Option<f64>,
    /// Server CPU while holding (pings, timers).
    pub hold_cpu: Option<CpuUse>,
    pub held: Counters,
}

const METRICS: &[Metric<IdleStats>] = &[
    ("connections held", |s| Some(s.joined as f64)),
    ("failed", |s| Some(tally_total(&s.failures) as f64)),
    ("RSS before MiB", |s| s.rss_before_kib.map(mib)),
    ("RSS held MiB", |s| s.rss_joined_kib.map(mib)),
    ("RSS KiB/connection", |s| s.kib_per_conn),
    ("RSS KiB/connection at end", |s| s.kib_per_conn_held),
    ("server cores busy holding", |s| s.hold_cpu.map(|c| c.cores)),
    ("connections lost", |s| {
        Some(tally_total(&s.held.closes) as f64)
    }),
];

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub async fn run(a: IdleArgs, nofile: u64) -> Result<()> {
    let systems = systems(&a.common)?;
    check_sockets(a.clients as usize, nofile)?;
    if systems.iter().any(|s| s.pids.is_empty()) {
        eprintln!("warning: without --server-pid / --floor-pid there is no RSS to read");
    }
    let spec = FleetSpec {
        clients: a.clients as usize,
        concurrency: a.concurrency as usize,
        room_size: a.room_size as usize,
        auth: a.auth,
        secret: a.common.jwt_secret.clone(),
    };
    let mut rounds = Vec::new();
    for r in 0..a.common.rounds {
        let mut row = vec![None; systems.len()];
        for i in order(systems.len(), r) {
            let stats = once(&spec, &systems[i], &a).await?;
            eprintln!(
                "  idle {}: {} held, {:?} KiB/conn",
                stats.target, stats.joined, stats.kib_per_conn
            );
            row[i] = Some(stats);
        }
        rounds.push(row);
    }
    let title = format!("idle: {} authenticated connections", a.clients);
    let sections = compare(&title, &names(&systems), &rounds, METRICS);
    finish("idle", &a.common, &a, sections, &rounds)
}

async fn once(spec: &FleetSpec, sys: &Nodes, a: &IdleArgs) -> Result<IdleStats> {
    let before = sys.rss_kib()?;
    let fleet = fleet::open(spec, &sys.targets).await?;
    tokio::time::sleep(a.settle).await;
    let joined_rss = sys.rss_kib()?;
    let probe = CpuProbe::start(sys)?;
    let t = Instant::now();
    tokio::time::sleep(a.hold).await;
    let [hold_cpu, _, _] = probe.finish(t.elapsed(), 0)?;
    let held_rss = sys.rss_kib()?;
    let per = |after: Option<u64>| match (before, after, fleet.joined) {
        (Some(b), Some(a), n) if n > 0 => Some((a as f64 - b as f64) / n as f64),
        _ => None,
    };
    let (joined, failures) = (fleet.joined, fleet.failures.clone());
    let (kib_per_conn, kib_per_conn_held) = (per(joined_rss), per(held_rss));
    let held = fleet.close().await;
    Ok(IdleStats {
        target: sys.label.clone(),
        clients: spec.clients,
        joined,
        failures,
        rss_before_kib: before,
        rss_joined_kib: joined_rss,
        rss_held_kib: held_rss,
        kib_per_conn,
        kib_per_conn_held,
        hold_cpu,
        held,
    })
}
