//! Typed configuration, layered: defaults → optional TOML file → `SWITCHBOARD_*` environment.
//! [`Config::validate`] runs once at startup and refuses weak secrets in production.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The signing secret a development node uses when none is configured. Production refuses it.
pub const DEV_JWT_SECRET: &str = "switchboard-dev-secret-do-not-use-in-production";
/// The shortest secret production accepts, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;
const ENV_PREFIX: &str = "SWITCHBOARD_";
/// The most runtime threads a node may be given.
const MAX_WORKER_THREADS: usize = 1024;

/// A secret string. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub env: Environment,
    pub listen: SocketAddr,
    /// This node's id; random when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    pub jwt_secret: Secret,
    /// `redis://`, `rediss://` or `redis-cluster://host:port,host:port`; unset = single node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<Secret>,
    /// Prefix of every Redis key and channel, so clusters can share one Redis.
    pub redis_prefix: String,
    pub max_message_bytes: usize,
    pub outbox_frames: usize,
    pub max_rooms_per_connection: usize,
    pub max_members_per_room: usize,
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How long a node keeps a bus subscription after its last local interest left.
    #[serde(with = "humantime_serde")]
    pub subscription_linger: Duration,
    /// Node lease TTL in a cluster: a dead node's members are removed within twice this.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Origins allowed by CORS on the REST API; `*` allows any.
    pub cors_origins: Vec<String>,
    /// Threads of the node's runtime; 0 = one per core available to the process.
    pub worker_threads: usize,
    pub log_format: LogFormat,
    pub log_level: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            env: Environment::Development,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            node_id: None,
            jwt_secret: Secret::new(DEV_JWT_SECRET),
            redis_url: None,
            redis_prefix: "sb".into(),
            max_message_bytes: 64 * 1024,
            outbox_frames: 256,
            max_rooms_per_connection: 16,
            max_members_per_room: 10,
            auth_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
            subscription_linger: Duration::from_secs(2),
            lease_ttl: Duration::from_secs(3),
            cors_origins: vec!["*".into()],
            worker_threads: 0,
            log_format: LogFormat::Text,
            log_level: "info".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("unknown setting {0} (see the configuration table in README.md)")]
    Unknown(String),
    #[error("{setting}: {reason}")]
    Refused {
        setting: &'static str,
        reason: String,
    },
}

impl Config {
    /// Loads defaults, then `file` if given, then `SWITCHBOARD_*` variables from `env`.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut table = toml::Table::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let from_file: toml::Table =
                toml::from_str(&text).map_err(|e| ConfigError::Invalid(e.message().to_owned()))?;
            table.extend(from_file);
        }
        for (name, value) in env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if key == "CONFIG" {
                continue;
            }
            let key = key.to_ascii_lowercase();
            let typed = typed_env_value(name, table.get(&key), value)?;
            table.insert(key, typed);
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let setting = e.path().to_string();
                let env = format!("{ENV_PREFIX}{}", setting.to_ascii_uppercase());
                let reason = e.into_inner();
                ConfigError::Invalid(format!("{setting} ({env}): {}", reason.message()))
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses values the node cannot run with, and weak secrets in production.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let refuse = |setting, reason: &str| {
            Err(ConfigError::Refused {
                setting,
                reason: reason.to_owned(),
            })
        };
        if self.env == Environment::Production {
            let secret = self.jwt_secret.expose();
            if secret == DEV_JWT_SECRET {
                return refuse(
                    "SWITCHBOARD_JWT_SECRET",
                    "the development default is refused in production; set a random secret of at least 32 bytes",
                );
            }
            if secret.len() < MIN_SECRET_BYTES {
                return refuse(
                    "SWITCHBOARD_JWT_SECRET",
                    "must be at least 32 bytes in production",
                );
            }
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_message_bytes) {
            return refuse(
                "SWITCHBOARD_MAX_MESSAGE_BYTES",
                "must be between 1024 and 16777216",
            );
        }
        if self.outbox_frames == 0
            || self.max_rooms_per_connection == 0
            || self.max_members_per_room == 0
        {
            return refuse("SWITCHBOARD_OUTBOX_FRAMES", "limits must be at least 1");
        }
        if self.ping_interval.is_zero() || self.idle_timeout <= self.ping_interval {
            return refuse(
                "SWITCHBOARD_IDLE_TIMEOUT",
                "must be longer than ping_interval (> 0)",
            );
        }
        if self.auth_timeout.is_zero() || self.lease_ttl < Duration::from_secs(1) {
            return refuse(
                "SWITCHBOARD_LEASE_TTL",
                "timeouts must be positive; lease_ttl at least 1s",
            );
        }
        if self.worker_threads > MAX_WORKER_THREADS {
            return refuse(
                "SWITCHBOARD_WORKER_THREADS",
                "must be at most 1024 (0 = one per available core)",
            );
        }
        if let Some(id) = &self.node_id {
            crate::protocol::NodeId::parse(id).map_err(|e| ConfigError::Refused {
                setting: "SWITCHBOARD_NODE_ID",
                reason: e.to_string(),
            })?;
        }
        if self.redis_prefix.is_empty()
            || self.redis_prefix.len() > 64
            || self.redis_prefix.contains(['{', '}', ' '])
        {
            return refuse(
                "SWITCHBOARD_REDIS_PREFIX",
                "1-64 characters without braces or spaces",
            );
        }
        Ok(())
    }
}

/// Types an environment value like the setting it overrides.
fn typed_env_value(
    name: &str,
    current: Option<&toml::Value>,
    raw: &str,
) -> Result<toml::Value, ConfigError> {
    let bad = |what: &str| ConfigError::Invalid(format!("{name} must be {what}"));
    Ok(match current {
        Some(toml::Value::Integer(_)) => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| bad("an integer"))?)
        }
        Some(toml::Value::Boolean(_)) => {
            toml::Value::Boolean(raw.trim().parse().map_err(|_| bad("true or false"))?)
        }
        Some(toml::Value::Array(_)) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        Some(_) | None if is_known(name) => toml::Value::String(raw.to_owned()),
        _ => return Err(ConfigError::Unknown(name.to_owned())),
    })
}

fn is_known(name: &str) -> bool {
    let key = name.trim_start_matches(ENV_PREFIX).to_ascii_lowercase();
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    defaults.contains_key(&key) || key == "node_id" || key == "redis_url"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_a_dev_node_on_8080() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.env, Environment::Development);
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.max_members_per_room, 10);
    }

    #[test]
    fn env_overrides_with_types() {
        let c = Config::load(
            None,
            &env(&[
                ("SWITCHBOARD_LISTEN", "127.0.0.1:0"),
                ("SWITCHBOARD_MAX_MEMBERS_PER_ROOM", "3"),
                ("SWITCHBOARD_NODE_ID", "1"),
                ("SWITCHBOARD_AUTH_TIMEOUT", "2s"),
                ("SWITCHBOARD_WORKER_THREADS", "1"),
                (
                    "SWITCHBOARD_CORS_ORIGINS",
                    "https://a.example, https://b.example",
                ),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.max_members_per_room, 3);
        assert_eq!(c.node_id.as_deref(), Some("1"));
        assert_eq!(c.auth_timeout, Duration::from_secs(2));
        assert_eq!(c.cors_origins.len(), 2);
        assert_eq!(c.worker_threads, 1);
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::load(None, &env(&[("SWITCHBOARD_MAX_MESSAGE_BYTES", "lots")])).unwrap_err();
        assert!(
            e.to_string().contains("SWITCHBOARD_MAX_MESSAGE_BYTES"),
            "{e}"
        );
        let e = Config::load(None, &env(&[("SWITCHBOARD_NOPE", "1")])).unwrap_err();
        assert!(e.to_string().contains("SWITCHBOARD_NOPE"), "{e}");
        let e = Config::load(None, &env(&[("SWITCHBOARD_AUTH_TIMEOUT", "10")])).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid(_)), "{e}");
        let e = Config::load(None, &env(&[("SWITCHBOARD_NODE_ID", "bad id")])).unwrap_err();
        assert!(e.to_string().contains("SWITCHBOARD_NODE_ID"), "{e}");
        // Values of the right kind but out of the type's range name their setting too.
        for (var, value) in [
            ("SWITCHBOARD_MAX_MEMBERS_PER_ROOM", "-1"),
            ("SWITCHBOARD_LOG_FORMAT", "xml"),
            ("SWITCHBOARD_LISTEN", "localhost"),
        ] {
            let e = Config::load(None, &env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(var), "{var}={value}: {e}");
        }
        for threads in ["two", "-1", "1025", "99999999999999999999999"] {
            let e = Config::load(None, &env(&[("SWITCHBOARD_WORKER_THREADS", threads)]));
            let e = e.unwrap_err().to_string();
            assert!(e.contains("SWITCHBOARD_WORKER_THREADS"), "{threads}: {e}");
        }
    }

    #[test]
    fn production_refuses_weak_secrets() {
        for secret in [None, Some("short"), Some(DEV_JWT_SECRET)] {
            let mut vars = vec![("SWITCHBOARD_ENV", "production")];
            if let Some(s) = secret {
                vars.push(("SWITCHBOARD_JWT_SECRET", s));
            }
            let e = Config::load(None, &env(&vars)).unwrap_err();
            assert!(e.to_string().contains("SWITCHBOARD_JWT_SECRET"), "{e}");
        }
        let strong = "x".repeat(40);
        let ok = env(&[
            ("SWITCHBOARD_ENV", "production"),
            ("SWITCHBOARD_JWT_SECRET", &strong),
        ]);
        assert!(Config::load(None, &ok).is_ok());
    }

    #[test]
    fn file_layer_and_its_errors() {
        let dir = std::env::temp_dir().join(format!("sb-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "max_members_per_room = 4\nidle_timeout = \"90s\"\n").unwrap();
        let c = Config::load(
            Some(&path),
            &env(&[("SWITCHBOARD_MAX_MEMBERS_PER_ROOM", "5")]),
        )
        .unwrap();
        assert_eq!((c.max_members_per_room, c.idle_timeout.as_secs()), (5, 90));
        for (text, named) in [
            ("unknown_key = 1\n", "unknown_key"),
            ("worker_threads = \"many\"\n", "worker_threads"),
            ("lease_ttl = \"soon\"\n", "lease_ttl"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Config::load(Some(&path), &env(&[]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(named), "{text}: {e}");
        }
        std::fs::write(&path, "not toml [[[").unwrap();
        assert!(Config::load(Some(&path), &env(&[])).is_err());
        assert!(Config::load(Some(&dir.join("missing.toml")), &env(&[])).is_err());
        assert!(format!("{:?}", c.jwt_secret).contains("***"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
