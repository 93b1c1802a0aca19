//! The processes under test: their URLs and pids, CPU probes around a run, and this
//! process's own open-file limit.

use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::procfs::{cpu_total, rss_total};
use crate::target::Target;

/// One system under test: `switchboard` or `floor`, its node URLs and its pids.
#[derive(Debug, Clone)]
pub struct Nodes {
    pub label: String,
    pub targets: Vec<Target>,
    /// Server processes whose CPU and RSS are charged to this system.
    pub pids: Vec<u32>,
    /// Helper processes (Redis) measured separately.
    pub aux_pids: Vec<u32>,
}

impl Nodes {
    /// Summed RSS of the server pids, KiB (`None` without pids).
    pub fn rss_kib(&self) -> Result<Option<u64>> {
        if self.pids.is_empty() {
            return Ok(None);
        }
        Ok(Some(rss_total(&self.pids)?))
    }
}

/// CPU used by a set of processes over a run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUse {
    pub cpu_s: f64,
    /// Average cores busy: `cpu_s / wall`.
    pub cores: f64,
    /// Microseconds of CPU per delivered message.
    pub us_per_delivered: f64,
}

/// CPU counters of the server, helper and tool processes at the start of a run.
pub struct CpuProbe {
    sets: [Vec<u32>; 3],
    start: [f64; 3],
}

impl CpuProbe {
    pub fn start(nodes: &Nodes) -> Result<Self> {
        let sets = [
            nodes.pids.clone(),
            nodes.aux_pids.clone(),
            vec![std::process::id()],
        ];
        let start = [
            cpu_total(&sets[0])?,
            cpu_total(&sets[1])?,
            cpu_total(&sets[2])?,
        ];
        Ok(Self { sets, start })
    }

    /// Server, helper and tool CPU since `start` (`None` for an empty pid set).
    pub fn finish(&self, wall: Duration, delivered: u64) -> Result<[Option<CpuUse>; 3]> {
        let mut out = [None; 3];
        for (i, pids) in self.sets.iter().enumerate() {
            if pids.is_empty() {
                continue;
            }
            let cpu_s = (cpu_total(pids)? - self.start[i]).max(0.0);
            out[i] = Some(CpuUse {
                cpu_s,
                cores: cpu_s / wall.as_secs_f64().max(1e-9),
                us_per_delivered: if delivered == 0 {
                    f64::NAN
                } else {
                    cpu_s * 1e6 / delivered as f64
                },
            });
        }
        Ok(out)
    }
}

/// Raise this process's open-file soft limit as far as the hard limit allows; returns it.
pub fn raise_nofile() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// Refuse a run that needs more sockets than the open-file limit allows.
pub fn check_sockets(needed: usize, limit: u64) -> Result<()> {
    let needed = needed as u64 + 64;
    if needed > limit {
        bail!("{needed} file descriptors needed, the limit is {limit}: lower the client count");
    }
    Ok(())
}
