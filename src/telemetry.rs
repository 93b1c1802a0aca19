//! Logging: text or JSON lines to stderr, filtered by `log_level` (or `RUST_LOG`). Nothing
//! logged carries a token, a secret or a signal's payload.

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
