//! Logging: text or JSON lines to stderr, filtered by `log_level` (or `RUST_LOG`); colours only
//! when stderr is a terminal. Nothing logged carries a token, a secret or a signal's payload.
//! Each HTTP request has a span (`http`: its request id, route and client address) and each
//! WebSocket connection one inside it (`ws`: the node and, once authenticated, the client id);
//! security events are `warn` lines with a stable `event` field (`docs/metrics.md` lists them).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

use crate::config::{Config, LogFormat};

/// Crates whose `trace` lines show what a frame carries (a signal's SDP, a token in
/// `auth_token`): capped at `debug` whatever the filter says.
const PAYLOAD_CAPS: [&str; 2] = ["tungstenite=debug", "tokio_tungstenite=debug"];

/// `filter` with [`PAYLOAD_CAPS`] when it lets `trace` lines through; a filter that does not is
/// left as it is (a cap must never let more through).
fn cap_payloads(filter: EnvFilter) -> EnvFilter {
    let traces = filter
        .max_level_hint()
        .is_none_or(|level| level == LevelFilter::TRACE);
    if !traces {
        return filter;
    }
    PAYLOAD_CAPS
        .iter()
        .filter_map(|cap| cap.parse().ok())
        .fold(filter, EnvFilter::add_directive)
}

pub fn init(config: &Config) {
    // `RUST_LOG` wins when it is a filter the parser can take (it panics on some non-ASCII
    // text); `log_level` was checked when the config loaded.
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| crate::config::filter_text_is_safe(f))
        .and_then(|f| EnvFilter::try_new(f).ok());
    let filter = from_env
        .or_else(|| EnvFilter::try_new(&config.log_level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let filter = cap_payloads(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_capped_only_where_trace_lines_would_pass() {
        let capped = cap_payloads(EnvFilter::new("trace"));
        assert!(capped.to_string().contains("tungstenite=debug"), "{capped}");
        let capped = cap_payloads(EnvFilter::new("info,tungstenite=trace"));
        let text = capped.to_string();
        assert!(
            text.contains("tungstenite=debug") && !text.contains("tungstenite=trace"),
            "{text}"
        );
        for quiet in ["info", "debug", "warn,switchboard=debug"] {
            let left = cap_payloads(EnvFilter::new(quiet));
            assert!(!left.to_string().contains("tungstenite"), "{quiet}: {left}");
        }
    }

    #[test]
    fn the_payload_caps_are_directives() {
        for cap in PAYLOAD_CAPS {
            assert!(
                cap.parse::<tracing_subscriber::filter::Directive>().is_ok(),
                "{cap}"
            );
        }
    }
}
