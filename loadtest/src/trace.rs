//! Per-event lines on stderr for finding where signals went (`SWITCHBOARD_LOADTEST_TRACE=1`):
//! error frames, gaps in a sender's numbers, and lost connections, each with the wall-clock
//! time in Unix microseconds, to line up with the servers' logs. Off by default: the flag is
//! read once.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Whether tracing is on.
pub fn on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SWITCHBOARD_LOADTEST_TRACE").is_some_and(|v| v == "1"))
}

/// Writes one trace line for `client`.
pub fn event(client: &str, what: std::fmt::Arguments<'_>) {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    eprintln!("trace {micros} {client} {what}");
}
