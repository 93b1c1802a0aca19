//! `kill`: pairs under load on a cluster; SIGKILL one node part-way; its clients reconnect to
//! the surviving nodes and re-join. Reports the time from the kill to each re-join, messages
//! lost, and messages skipped (due while their sender had no connection).

use anyhow::{Result, bail};

use super::{LOAD_METRICS, finish, progress, systems};
use crate::cli::KillArgs;
use crate::load::{self, KillPlan, Layout, LoadSpec, LoadStats};
use crate::report::{Metric, compare};
use crate::sys::check_sockets;

const KILL_METRICS: &[Metric<LoadStats>] = &[
    ("re-joins", |s| s.rejoin.map(|r| r.count as f64)),
    ("kill to re-join p50 ms", |s| s.rejoin.map(|r| r.p50_ms)),
    ("kill to re-join p99 ms", |s| s.rejoin.map(|r| r.p99_ms)),
    ("kill to re-join max ms", |s| s.rejoin.map(|r| r.max_ms)),
    ("skipped while disconnected", |s| {
        Some(s.counters.skipped as f64)
    }),
];

pub async fn run(a: KillArgs, nofile: u64) -> Result<()> {
    check_sockets(a.pairs as usize * 2, nofile)?;
    let mut nodes = systems(&a.common)?.remove(0);
    if nodes.targets.len() < 2 {
        bail!("kill needs at least two node URLs");
    }
    if a.kill_node >= nodes.targets.len() {
        bail!("--kill-node {} is out of range", a.kill_node);
    }
    if a.kill_pid <= 1 || a.kill_pid == std::process::id() {
        bail!("refusing to kill pid {}", a.kill_pid);
    }
    crate::procfs::check_pids(&[a.kill_pid])?;
    nodes.pids.retain(|&p| p != a.kill_pid);
    let spec = LoadSpec {
        layout: Layout::Pairs {
            pairs: a.pairs as usize,
            cross: !a.same_node,
        },
        rate: a.load.rate,
        duration: a.load.duration,
        drain: a.load.drain,
        auth: a.load.auth,
        reconnect: true,
        resume: a.resume,
        secret: a.common.jwt_secret.clone(),
    };
    let plan = KillPlan {
        after: a.kill_after,
        pid: a.kill_pid,
        node: a.kill_node,
    };
    let stats = load::run(&spec, &nodes, Some(plan)).await?;
    progress("kill", &stats);
    let metrics: Vec<Metric<LoadStats>> =
        LOAD_METRICS.iter().chain(KILL_METRICS).copied().collect();
    let rounds = vec![vec![Some(stats)]];
    let title = format!(
        "kill node {} of {} under {} signals/s",
        a.kill_node,
        nodes.targets.len(),
        a.load.rate
    );
    let sections = compare(&title, &[nodes.label.clone()], &rounds, &metrics);
    finish("kill", &a.common, &a, sections, &rounds)
}
