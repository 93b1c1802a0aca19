//! `storm`: N clients connect, authenticate and join as fast as the concurrency limit allows.

use anyhow::Result;
use serde::Serialize;

use super::{finish, names, order, systems};
use crate::cli::StormArgs;
use crate::fleet::{self, FleetSpec};
use crate::report::{Metric, compare};
use crate::stats::{Counters, Summary, Tally, tally_total};
use crate::sys::{CpuProbe, CpuUse, Nodes, check_sockets};

#[derive(Debug, Clone, Serialize)]
pub struct StormStats {
    pub target: String,
    pub clients: usize,
    pub joined: usize,
    pub failures: Tally,
    /// First attempt to last join.
    pub wall_s: f64,
    pub conns_per_s: f64,
    /// TCP connect to `users_in_room` (or `auth_success` without a room), per connection.
    pub join: Summary,
    /// Server CPU per joined connection is `us_per_delivered` here.
    pub server_cpu: Option<CpuUse>,
    pub tool_cpu: Option<CpuUse>,
    /// Error frames and closes seen while the connections were held.
    pub held: Counters,
}

const METRICS: &[Metric<StormStats>] = &[
    ("joined", |s| Some(s.joined as f64)),
    ("failed", |s| Some(tally_total(&s.failures) as f64)),
    ("connections/s", |s| Some(s.conns_per_s)),
    ("join p50 ms", |s| Some(s.join.p50_ms)),
    ("join p90 ms", |s| Some(s.join.p90_ms)),
    ("join p99 ms", |s| Some(s.join.p99_ms)),
    ("join p99.9 ms", |s| Some(s.join.p999_ms)),
    ("join max ms", |s| Some(s.join.max_ms)),
    ("server CPU us/connection", |s| {
        s.server_cpu.map(|c| c.us_per_delivered)
    }),
    ("server cores busy", |s| s.server_cpu.map(|c| c.cores)),
    ("tool cores busy", |s| s.tool_cpu.map(|c| c.cores)),
    ("errors while held", |s| {
        Some(tally_total(&s.held.errors) as f64)
    }),
];

pub async fn run(a: StormArgs, nofile: u64) -> Result<()> {
    let systems = systems(&a.common)?;
    check_sockets(a.clients as usize, nofile)?;
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
                "  storm {}: {} joined, {:.0} conn/s, join p99 {:.1} ms, failures {:?}",
                stats.target, stats.joined, stats.conns_per_s, stats.join.p99_ms, stats.failures
            );
            row[i] = Some(stats);
        }
        rounds.push(row);
    }
    let title = format!(
        "storm: {} clients, {:?} auth, concurrency {}",
        a.clients, a.auth, a.concurrency
    );
    let sections = compare(&title, &names(&systems), &rounds, METRICS);
    finish("storm", &a.common, &a, sections, &rounds)
}

async fn once(spec: &FleetSpec, sys: &Nodes, a: &StormArgs) -> Result<StormStats> {
    let probe = CpuProbe::start(sys)?;
    let fleet = fleet::open(spec, &sys.targets).await?;
    let [server_cpu, _, tool_cpu] = probe.finish(fleet.wall, fleet.joined as u64)?;
    let wall_s = fleet.wall.as_secs_f64();
    let (joined, join, failures) = (fleet.joined, fleet.joins.summary(), fleet.failures.clone());
    tokio::time::sleep(a.hold).await;
    let held = fleet.close().await;
    Ok(StormStats {
        target: sys.label.clone(),
        clients: spec.clients,
        joined,
        failures,
        wall_s,
        conns_per_s: if wall_s > 0.0 {
            joined as f64 / wall_s
        } else {
            0.0
        },
        join,
        server_cpu,
        tool_cpu,
        held,
    })
}
