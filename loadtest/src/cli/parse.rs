//! Bounded value parsers: every duration, rate and factor has a hard cap.

use std::time::Duration;

use super::MAX_RATE;
use super::MAX_SECS;

fn parse_f64(s: &str) -> Result<f64, String> {
    s.parse::<f64>().map_err(|e| e.to_string()).and_then(|x| {
        if x.is_finite() {
            Ok(x)
        } else {
            Err("not finite".into())
        }
    })
}

fn bounded(s: &str, lo: f64, hi: f64, lo_inclusive: bool) -> Result<f64, String> {
    let x = parse_f64(s)?;
    let above = if lo_inclusive { x >= lo } else { x > lo };
    if above && x <= hi {
        Ok(x)
    } else {
        Err(format!(
            "must be in {}{lo}, {hi}]",
            if lo_inclusive { "[" } else { "(" }
        ))
    }
}

pub fn secs(s: &str) -> Result<Duration, String> {
    bounded(s, 0.0, MAX_SECS, false).map(Duration::from_secs_f64)
}

pub fn secs_or_zero(s: &str) -> Result<Duration, String> {
    bounded(s, 0.0, MAX_SECS, true).map(Duration::from_secs_f64)
}

pub fn rate(s: &str) -> Result<f64, String> {
    bounded(s, 0.0, MAX_RATE, false)
}

pub fn factor(s: &str) -> Result<f64, String> {
    bounded(s, 1.01, 10.0, true)
}

pub fn positive(s: &str) -> Result<f64, String> {
    bounded(s, 0.0, 600_000.0, false)
}

/// The process deadline: up to a day.
pub fn lifetime(s: &str) -> Result<Duration, String> {
    bounded(s, 0.0, 86_400.0, false).map(Duration::from_secs_f64)
}

/// Serialize a duration as seconds (for the JSON record of the parameters).
pub fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
