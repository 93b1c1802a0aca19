//! `pairs` and `rooms`: fixed-rate timed traffic, repeated for `--rounds`. With `--reconnect`,
//! pairs that lose their connection (a node drained during a rolling restart, behind a load
//! balancer) reconnect and re-join, and the report adds how long that took and what it cost.

use anyhow::Result;

use super::{LOAD_METRICS, finish, names, order, progress, systems};
use crate::cli::{Common, LoadArgs, PairsArgs, RoomsArgs};
use crate::load::{self, Layout, LoadSpec, LoadStats};
use crate::report::{Metric, compare};
use crate::stats::tally_total;
use crate::sys::check_sockets;

/// What reconnecting cost: each reconnect is timed from the lost connection (a close, an error
/// or the server's `reconnect` notice) to the re-join.
const RECONNECT_METRICS: &[Metric<LoadStats>] = &[
    ("reconnects", |s| {
        Some(s.rejoin.map_or(0, |r| r.count) as f64)
    }),
    ("lost to re-joined p50 ms", |s| s.rejoin.map(|r| r.p50_ms)),
    ("lost to re-joined p99 ms", |s| s.rejoin.map(|r| r.p99_ms)),
    ("lost to re-joined max ms", |s| s.rejoin.map(|r| r.max_ms)),
    ("skipped while disconnected", |s| {
        Some(s.counters.skipped as f64)
    }),
];

/// Reconnecting resumes: how many did, and how many were refused (then connected afresh).
const RESUME_METRICS: &[Metric<LoadStats>] = &[
    ("reconnects", |s| {
        Some(s.rejoin.map_or(0, |r| r.count) as f64)
    }),
    ("resumed", |s| {
        Some(s.counters.resumes.get("resumed").copied().unwrap_or(0) as f64)
    }),
    ("resumes refused or failed", |s| {
        let resumed = s.counters.resumes.get("resumed").copied().unwrap_or(0);
        Some((tally_total(&s.counters.resumes) - resumed) as f64)
    }),
    ("lost to resumed p50 ms", |s| s.rejoin.map(|r| r.p50_ms)),
    ("lost to resumed p99 ms", |s| s.rejoin.map(|r| r.p99_ms)),
    ("lost to resumed max ms", |s| s.rejoin.map(|r| r.max_ms)),
    ("skipped while disconnected", |s| {
        Some(s.counters.skipped as f64)
    }),
];

/// What clients do when they lose their connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reconnect {
    Off,
    Fresh,
    Resume,
}

pub async fn pairs(a: PairsArgs, nofile: u64) -> Result<()> {
    check_sockets(a.pairs as usize * 2, nofile)?;
    let layout = Layout::Pairs {
        pairs: a.pairs as usize,
        cross: !a.same_node,
    };
    let reconnect = match (a.reconnect, a.resume) {
        (false, _) => Reconnect::Off,
        (true, false) => Reconnect::Fresh,
        (true, true) => Reconnect::Resume,
    };
    run("pairs", &a.common, &a.load, layout, reconnect, &a, nofile).await
}

pub async fn rooms(a: RoomsArgs, nofile: u64) -> Result<()> {
    check_sockets(a.rooms as usize * a.room_size as usize, nofile)?;
    let layout = Layout::Rooms {
        rooms: a.rooms as usize,
        size: a.room_size as usize,
    };
    run(
        "rooms",
        &a.common,
        &a.load,
        layout,
        Reconnect::Off,
        &a,
        nofile,
    )
    .await
}

async fn run(
    name: &str,
    common: &Common,
    load: &LoadArgs,
    layout: Layout,
    reconnect: Reconnect,
    params: &impl serde::Serialize,
    nofile: u64,
) -> Result<()> {
    check_sockets(layout.clients(), nofile)?;
    let systems = systems(common)?;
    let spec = LoadSpec {
        layout,
        rate: load.rate,
        duration: load.duration,
        drain: load.drain,
        auth: load.auth,
        reconnect: reconnect != Reconnect::Off,
        resume: reconnect == Reconnect::Resume,
        secret: common.jwt_secret.clone(),
    };
    let mut rounds: Vec<Vec<Option<LoadStats>>> = Vec::new();
    for r in 0..common.rounds {
        eprintln!("{name}: round {}/{}", r + 1, common.rounds);
        let mut row = vec![None; systems.len()];
        for i in order(systems.len(), r) {
            match load::run(&spec, &systems[i], None).await {
                Ok(stats) => {
                    progress(name, &stats);
                    row[i] = Some(stats);
                }
                Err(e) => eprintln!("  {}: run failed: {e:#}", systems[i].label),
            }
        }
        rounds.push(row);
    }
    let mut title = format!("{name} at {} signals/s", load.rate);
    let extra = match reconnect {
        Reconnect::Off => &[][..],
        Reconnect::Fresh => {
            title.push_str(", reconnecting");
            RECONNECT_METRICS
        }
        Reconnect::Resume => {
            title.push_str(", reconnecting and resuming");
            RESUME_METRICS
        }
    };
    let metrics: Vec<Metric<LoadStats>> = LOAD_METRICS.iter().chain(extra).copied().collect();
    let sections = compare(&title, &names(&systems), &rounds, &metrics);
    finish(name, common, params, sections, &rounds)
}
