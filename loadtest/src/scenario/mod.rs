//! The scenarios. Each runs every system under test (switchboard and/or floor), alternating
//! between them within a round so that both see the same machine, and ends in a
//! [`Report`] with `switchboard / floor` ratios.

mod idle;
mod kill;
mod ramp;
mod storm;
mod traffic;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::cli::{Command, Common};
use crate::floor;
use crate::load::LoadStats;
use crate::procfs::check_pids;
use crate::report::{Metric, Report, Section, emit};
use crate::stats::tally_total;
use crate::sys::Nodes;

/// Run one subcommand to completion.
pub async fn dispatch(cmd: Command, nofile: u64) -> Result<()> {
    match cmd {
        Command::Pairs(a) => traffic::pairs(a, nofile).await,
        Command::Rooms(a) => traffic::rooms(a, nofile).await,
        Command::Ramp(a) => ramp::run(a, nofile).await,
        Command::Storm(a) => storm::run(a, nofile).await,
        Command::Idle(a) => idle::run(a, nofile).await,
        Command::Kill(a) => kill::run(a, nofile).await,
        Command::Floor(a) => floor::serve(&a.listen).await,
    }
}

/// The systems named on the command line: switchboard first, then the floor.
pub fn systems(c: &Common) -> Result<Vec<Nodes>> {
    check_pids(&c.server_pids)?;
    check_pids(&c.floor_pids)?;
    check_pids(&c.aux_pids)?;
    let mut out = Vec::new();
    if !c.targets.is_empty() {
        out.push(Nodes {
            label: "switchboard".into(),
            targets: c.targets.clone(),
            pids: c.server_pids.clone(),
            aux_pids: c.aux_pids.clone(),
        });
    }
    if !c.floors.is_empty() {
        out.push(Nodes {
            label: "floor".into(),
            targets: c.floors.clone(),
            pids: c.floor_pids.clone(),
            aux_pids: vec![],
        });
    }
    if out.is_empty() {
        bail!("give --target and/or --floor");
    }
    Ok(out)
}

pub fn names(systems: &[Nodes]) -> Vec<String> {
    systems.iter().map(|s| s.label.clone()).collect()
}

/// Indices of `n` systems in the order round `r` runs them (alternating who goes first).
pub fn order(n: usize, round: u32) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if round % 2 == 1 {
        idx.reverse();
    }
    idx
}

/// Build, print and (if asked) save the report.
pub fn finish(
    scenario: &str,
    common: &Common,
    params: &impl Serialize,
    sections: Vec<Section>,
    runs: &impl Serialize,
) -> Result<()> {
    let report = Report {
        scenario: scenario.to_owned(),
        label: common.label.clone(),
        params: serde_json::to_value(params)?,
        sections,
        runs: serde_json::to_value(runs)?,
    };
    emit(&report, common.format, common.json.as_ref())
}

/// One line of progress on stderr.
pub fn progress(what: &str, s: &LoadStats) {
    eprintln!(
        "  {what} {}: {:.0}/s delivered, p99 {:.3} ms, lost {}, errors {}",
        s.target,
        s.delivered_per_s,
        s.latency.p99_ms,
        s.lost,
        tally_total(&s.counters.errors)
    );
}

fn cpu(c: Option<crate::sys::CpuUse>, f: fn(&crate::sys::CpuUse) -> f64) -> Option<f64> {
    c.as_ref().map(f)
}

/// The figures of a timed run.
pub const LOAD_METRICS: &[Metric<LoadStats>] = &[
    ("clients joined", |s| Some(s.joined as f64)),
    ("sent/s", |s| Some(s.sent_per_s)),
    ("delivered/s", |s| Some(s.delivered_per_s)),
    ("lost", |s| Some(s.lost as f64)),
    ("duplicates", |s| Some(s.counters.duplicates as f64)),
    ("reordered", |s| Some(s.counters.reordered as f64)),
    ("error frames", |s| {
        Some(tally_total(&s.counters.errors) as f64)
    }),
    ("connections lost", |s| {
        Some(tally_total(&s.counters.closes) as f64)
    }),
    ("connect failures", |s| {
        Some(tally_total(&s.counters.connect_failures) as f64)
    }),
    ("latency p50 ms", |s| Some(s.latency.p50_ms)),
    ("latency p90 ms", |s| Some(s.latency.p90_ms)),
    ("latency p99 ms", |s| Some(s.latency.p99_ms)),
    ("latency p99.9 ms", |s| Some(s.latency.p999_ms)),
    ("latency max ms", |s| Some(s.latency.max_ms)),
    ("send lag p99 ms", |s| Some(s.send_lag.p99_ms)),
    ("server CPU us/delivered", |s| {
        cpu(s.server_cpu, |c| c.us_per_delivered)
    }),
    ("server cores busy", |s| cpu(s.server_cpu, |c| c.cores)),
    ("aux (redis) cores busy", |s| cpu(s.aux_cpu, |c| c.cores)),
    ("tool cores busy", |s| cpu(s.tool_cpu, |c| c.cores)),
];
