//! `[calls]`: QR call invites (`SWITCHBOARD_CALLS_*`): how long a code and a call live, how
//! long a call rings, and the request rates that keep codes from being guessed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid, range};

/// `[calls]`: call codes and call sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallsConfig {
    /// How long a generated code stays valid (seed 004: `TOKEN_EXPIRATION_HOURS=168`).
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// How long an answered call may last before it is ended as `expired`.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// How long a call rings before it is `missed`.
    #[serde(with = "humantime_serde")]
    pub ring_timeout: Duration,
    /// Code checks (`/tokens/validate`, `/calls/initiate`) per minute per address (0 = off).
    pub ip_rate: usize,
    /// Code checks an address may make at once.
    pub ip_burst: usize,
    /// Checks per minute of one code, from every address together (0 = off).
    pub code_rate: usize,
    /// Checks of one code at once.
    pub code_burst: usize,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(7 * 86_400),
            session_timeout: Duration::from_secs(30 * 60),
            ring_timeout: Duration::from_secs(30),
            ip_rate: 60,
            ip_burst: 20,
            code_rate: 20,
            code_burst: 10,
        }
    }
}

/// The count settings of `[calls]`, with the range each accepts.
pub const RANGES: &[(&str, usize, usize)] = &[
    ("calls.ip_rate", 0, 1_000_000),
    ("calls.ip_burst", 1, 1_000_000),
    ("calls.code_rate", 0, 1_000_000),
    ("calls.code_burst", 1, 1_000_000),
];

impl CallsConfig {
    /// Refuses durations and counts a node cannot run calls with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let counts = [
            ("calls.ip_rate", self.ip_rate),
            ("calls.ip_burst", self.ip_burst),
            ("calls.code_rate", self.code_rate),
            ("calls.code_burst", self.code_burst),
        ];
        for (setting, value) in counts {
            if let Some((min, max)) =
                range(setting).filter(|(min, max)| !(min..=max).contains(&&value))
            {
                return Err(invalid(setting, format!("must be between {min} and {max}")));
            }
        }
        let within = |setting: &str, value: Duration, min: Duration, max: Duration| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                let (min, max) = (
                    humantime::format_duration(min),
                    humantime::format_duration(max),
                );
                Err(invalid(setting, format!("must be between {min} and {max}")))
            }
        };
        let minute = Duration::from_secs(60);
        within(
            "calls.token_ttl",
            self.token_ttl,
            minute,
            366 * 1440 * minute,
        )?;
        within(
            "calls.session_timeout",
            self.session_timeout,
            Duration::from_secs(10),
            1440 * minute,
        )?;
        within(
            "calls.ring_timeout",
            self.ring_timeout,
            Duration::from_secs(1),
            10 * minute,
        )?;
        if self.ring_timeout >= self.session_timeout {
            return Err(invalid(
                "calls.ring_timeout",
                "must be shorter than calls.session_timeout",
            ));
        }
        Ok(())
    }
}
