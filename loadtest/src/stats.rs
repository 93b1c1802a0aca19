//! Latency histograms, percentile summaries and event counters.
//!
//! Histograms are HDR (microsecond units, 1 µs – 10 min, 2 significant digits: under 1 %
//! error), one per task, merged at the end so recording never takes a lock.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

const MAX_US: u64 = 600_000_000;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, MAX_US, 2).expect("static histogram bounds"))
    }
}

impl Hist {
    pub fn record_ns(&mut self, ns: u64) {
        self.0.saturating_record((ns / 1_000).clamp(1, MAX_US));
    }

    pub fn record(&mut self, d: Duration) {
        self.record_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn merge(&mut self, other: &Hist) {
        let _ = self.0.add(&other.0);
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn summary(&self) -> Summary {
        let h = &self.0;
        let ms = |us: u64| us as f64 / 1_000.0;
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            mean_ms: h.mean() / 1_000.0,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Counts by a short string key (error code, close code, failure kind).
pub type Tally = BTreeMap<String, u64>;

pub fn bump(tally: &mut Tally, key: &str) {
    *tally.entry(key.to_owned()).or_default() += 1;
}

pub fn merge_tally(into: &mut Tally, from: &Tally) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

pub fn tally_total(t: &Tally) -> u64 {
    t.values().sum()
}

/// Message and connection events of one client or a whole run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// Timed signals written to a socket.
    pub sent: u64,
    /// Timed signals not sent because their sender was disconnected when they fell due.
    pub skipped: u64,
    /// Distinct timed signals received.
    pub delivered: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Relayed signals without a readable stamp, or frames that were not JSON.
    pub unreadable: u64,
    /// `error` frames by `code`.
    pub errors: Tally,
    /// How connections ended during the run, by close code or `eof` / `io`.
    pub closes: Tally,
    /// Failed connects or joins, by kind.
    pub connect_failures: Tally,
    /// How reconnects that tried to resume went: `resumed`, or `resume_<reason>` / the
    /// connection's failure (then the client connected afresh).
    pub resumes: Tally,
}

impl Counters {
    pub fn merge(&mut self, o: &Counters) {
        self.sent += o.sent;
        self.skipped += o.skipped;
        self.delivered += o.delivered;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.unreadable += o.unreadable;
        merge_tally(&mut self.errors, &o.errors);
        merge_tally(&mut self.closes, &o.closes);
        merge_tally(&mut self.connect_failures, &o.connect_failures);
        merge_tally(&mut self.resumes, &o.resumes);
    }
}

/// Median of some values (the mean of the middle two for an even count); `None` if empty.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b * 0.01 + 1e-9
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut h = Hist::default();
        for us in 1..=10_000u64 {
            h.record_ns(us * 1_000);
        }
        let s = h.summary();
        assert_eq!(s.count, 10_000);
        assert!(close(s.p50_ms, 5.0), "{s:?}");
        assert!(close(s.p90_ms, 9.0), "{s:?}");
        assert!(close(s.p99_ms, 9.9), "{s:?}");
        assert!(close(s.p999_ms, 9.99), "{s:?}");
        assert!(close(s.max_ms, 10.0), "{s:?}");
    }

    #[test]
    fn one_outlier_shows_in_max_not_p99() {
        let mut a = Hist::default();
        for _ in 0..999 {
            a.record(Duration::from_micros(500));
        }
        let mut b = Hist::default();
        b.record(Duration::from_secs(2));
        a.merge(&b);
        let s = a.summary();
        assert!(close(s.p99_ms, 0.5) && close(s.max_ms, 2_000.0), "{s:?}");
        assert_eq!(Hist::default().summary(), Summary::default());
    }

    #[test]
    fn sub_microsecond_and_huge_values_are_clamped() {
        let mut h = Hist::default();
        h.record_ns(10);
        h.record_ns(u64::MAX);
        assert_eq!(h.len(), 2);
        assert!(h.summary().max_ms >= 599_000.0);
    }

    #[test]
    fn counters_and_tallies_merge() {
        let mut a = Counters {
            sent: 2,
            ..Default::default()
        };
        bump(&mut a.errors, "room_full");
        let mut b = Counters {
            sent: 3,
            delivered: 1,
            ..Default::default()
        };
        bump(&mut b.errors, "room_full");
        bump(&mut b.closes, "4002");
        a.merge(&b);
        assert_eq!((a.sent, a.delivered), (5, 1));
        assert_eq!(a.errors["room_full"], 2);
        assert_eq!(tally_total(&a.closes), 1);
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN]), None);
    }
}
