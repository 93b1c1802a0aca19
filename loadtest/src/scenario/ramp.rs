//! `ramp`: step the offered rate (multiply until the first failure, then bisect) to find the
//! highest rate that holds p99 under the bound with nothing lost. Systems alternate steps.

use anyhow::Result;
use serde::Serialize;

use super::{finish, names, progress, systems};
use crate::cli::{RampArgs, Shape};
use crate::load::{self, Layout, LoadSpec, LoadStats};
use crate::report::{Metric, Row, Section, compare};
use crate::stats::tally_total;
use crate::sys::check_sockets;

/// One system's search.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Search {
    pub rate: f64,
    /// Highest passing rate so far.
    pub best: Option<f64>,
    /// Lowest failing rate so far.
    pub fail: Option<f64>,
    pub bisect_left: u32,
    pub done: bool,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rate: f64,
    pub pass: bool,
    pub stats: LoadStats,
}

impl Search {
    pub fn new(start: f64, bisect: u32) -> Self {
        Self {
            rate: start,
            bisect_left: bisect,
            ..Self::default()
        }
    }

    /// Record a step's verdict and pick the next rate.
    pub fn advance(&mut self, pass: bool, factor: f64, max_rate: f64) {
        if pass {
            self.best = Some(self.rate);
        } else {
            self.fail = Some(self.rate);
        }
        match (self.best, self.fail) {
            (_, None) if self.rate >= max_rate => self.done = true,
            (_, None) => self.rate = (self.rate * factor).min(max_rate),
            (None, Some(_)) => self.done = true,
            (Some(lo), Some(hi)) => {
                if self.bisect_left == 0 {
                    self.done = true;
                } else {
                    self.bisect_left -= 1;
                    self.rate = ((lo + hi) / 2.0).round();
                }
            }
        }
    }
}

/// A step passes when nothing was lost or refused and p99 is within the bound.
pub fn passes(s: &LoadStats, p99_ms: f64) -> bool {
    s.joined == s.clients
        && s.counters.delivered > 0
        && s.lost == 0
        && tally_total(&s.counters.errors) == 0
        && tally_total(&s.counters.closes) == 0
        && s.latency.p99_ms <= p99_ms
}

pub async fn run(a: RampArgs, nofile: u64) -> Result<()> {
    let systems = systems(&a.common)?;
    let layout = match a.shape {
        Shape::Pairs => Layout::Pairs {
            pairs: a.pairs as usize,
            cross: !a.same_node,
        },
        Shape::Rooms => Layout::Rooms {
            rooms: a.rooms as usize,
            size: a.room_size as usize,
        },
    };
    check_sockets(layout.clients(), nofile)?;
    let mut searches: Vec<Search> = systems
        .iter()
        .map(|_| Search::new(a.start_rate, a.bisect))
        .collect();
    for step in 0..a.max_steps {
        for (i, sys) in systems.iter().enumerate() {
            let search = &mut searches[i];
            if search.done {
                continue;
            }
            let spec = LoadSpec {
                layout,
                rate: search.rate,
                duration: a.step_duration,
                drain: a.drain,
                auth: a.auth,
                reconnect: false,
                resume: false,
                secret: a.common.jwt_secret.clone(),
            };
            let stats = load::run(&spec, sys, None).await?;
            let pass = passes(&stats, a.p99_ms);
            progress(
                &format!(
                    "step {} @ {:.0}/s {}",
                    step + 1,
                    search.rate,
                    if pass { "pass" } else { "FAIL" }
                ),
                &stats,
            );
            search.steps.push(Step {
                rate: search.rate,
                pass,
                stats,
            });
            search.advance(pass, a.factor, a.max_rate);
        }
        if searches.iter().all(|s| s.done) {
            break;
        }
    }
    let sections = sections(&names(&systems), &searches);
    finish("ramp", &a.common, &a, sections, &searches)
}

fn best_step(s: &Search) -> Option<&Step> {
    s.steps
        .iter()
        .filter(|st| st.pass)
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
}

const BEST: &[Metric<Search>] = &[
    ("highest passing rate/s", |s| s.best),
    ("lowest failing rate/s", |s| s.fail),
    ("delivered/s at best", |s| {
        best_step(s).map(|b| b.stats.delivered_per_s)
    }),
    ("p99 ms at best", |s| {
        best_step(s).map(|b| b.stats.latency.p99_ms)
    }),
    ("server CPU us/delivered at best", |s| {
        best_step(s)
            .and_then(|b| b.stats.server_cpu)
            .map(|c| c.us_per_delivered)
    }),
    ("tool cores at best", |s| {
        best_step(s).and_then(|b| b.stats.tool_cpu).map(|c| c.cores)
    }),
    ("server cores at best", |s| {
        best_step(s)
            .and_then(|b| b.stats.server_cpu)
            .map(|c| c.cores)
    }),
];

fn sections(labels: &[String], searches: &[Search]) -> Vec<Section> {
    let mut out: Vec<Section> = labels
        .iter()
        .zip(searches)
        .map(|(l, s)| steps_table(l, s))
        .collect();
    let row: Vec<Option<Search>> = searches.iter().cloned().map(Some).collect();
    out.extend(compare("ramp: best sustained rate", labels, &[row], BEST));
    out
}

fn steps_table(label: &str, s: &Search) -> Section {
    let columns = [
        "rate/s",
        "delivered/s",
        "p99 ms",
        "max ms",
        "lost",
        "errors",
        "pass",
    ]
    .map(String::from)
    .to_vec();
    let rows = s
        .steps
        .iter()
        .enumerate()
        .map(|(i, st)| Row {
            metric: format!("step {}", i + 1),
            values: vec![
                Some(st.rate),
                Some(st.stats.delivered_per_s),
                Some(st.stats.latency.p99_ms),
                Some(st.stats.latency.max_ms),
                Some(st.stats.lost as f64),
                Some(
                    (tally_total(&st.stats.counters.errors)
                        + tally_total(&st.stats.counters.closes)) as f64,
                ),
                Some(f64::from(u8::from(st.pass))),
            ],
        })
        .collect();
    Section {
        title: format!("ramp steps: {label}"),
        columns,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplies_until_failure_then_bisects() {
        let mut s = Search::new(1000.0, 2);
        s.advance(true, 2.0, 1e6);
        assert_eq!(s.rate, 2000.0);
        s.advance(true, 2.0, 1e6);
        s.advance(false, 2.0, 1e6);
        assert_eq!(
            (s.best, s.fail, s.rate),
            (Some(2000.0), Some(4000.0), 3000.0)
        );
        s.advance(false, 2.0, 1e6);
        assert_eq!(s.rate, 2500.0);
        s.advance(true, 2.0, 1e6);
        assert!(s.done);
        assert_eq!(s.best, Some(2500.0));
    }

    #[test]
    fn stops_at_the_cap_or_on_a_first_failure() {
        let mut s = Search::new(1000.0, 3);
        s.advance(true, 4.0, 3000.0);
        assert_eq!(s.rate, 3000.0);
        s.advance(true, 4.0, 3000.0);
        assert!(s.done);
        let mut f = Search::new(1000.0, 3);
        f.advance(false, 2.0, 1e6);
        assert!(f.done && f.best.is_none());
    }
}
