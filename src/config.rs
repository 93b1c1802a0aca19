//! Typed configuration, layered: defaults → optional TOML file → `SWITCHBOARD_*` environment.
//!
//! One naming rule for every setting: a setting `name` at the top of the file is the variable
//! `SWITCHBOARD_NAME`; a setting `key` in section `[sec]` of the file is `SWITCHBOARD_SEC_KEY`,
//! and may also be written flat in the file as `sec_key` (so `[redis] url` = `redis_url` =
//! `SWITCHBOARD_REDIS_URL`). Sections are the tables of [`Config`]; a new one needs no code
//! here. Unknown settings and bad values stop the node with a message naming the setting and
//! its variable. [`Config::validate`] runs once at load and refuses weak secrets in production.

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
/// The prefix of every setting's environment variable.
pub const ENV_PREFIX: &str = "SWITCHBOARD_";
/// The most runtime threads a node may be given.
const MAX_WORKER_THREADS: usize = 1024;
/// The largest frame a node may be configured to take.
const MAX_FRAME_LIMIT: usize = 16 * 1024 * 1024;
/// The most frames an outbox may be configured to hold.
const MAX_OUTBOX_FRAMES: usize = 1 << 20;

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

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
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
    #[serde(with = "optional")]
    pub node_id: Option<String>,
    pub jwt_secret: Secret,
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
    /// `[redis]`: where cluster state lives.
    pub redis: RedisConfig,
}

/// `[redis]`: the cluster's Redis (`SWITCHBOARD_REDIS_*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://`, `rediss://` or `redis-cluster://host:port,host:port`; unset = single node.
    #[serde(with = "optional")]
    pub url: Option<Secret>,
    /// Prefix of every Redis key and channel, so clusters can share one Redis.
    pub prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            prefix: "sb".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            env: Environment::Development,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            node_id: None,
            jwt_secret: Secret::new(DEV_JWT_SECRET),
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
            redis: RedisConfig::default(),
        }
    }
}

/// An optional setting: unset is written as an empty string, so that every setting has a
/// value in the table of defaults (and `SWITCHBOARD_X=` unsets it).
mod optional {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Option<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => value.serialize(serializer),
            None => serializer.serialize_str(""),
        }
    }

    pub fn deserialize<'de, T: From<String>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<T>, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok((!text.is_empty()).then(|| T::from(text)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file: {0}")]
    File(String),
    #[error("{}: {reason}", setting_label(setting))]
    Invalid { setting: String, reason: String },
    #[error("unknown setting {0} (see the configuration table in README.md)")]
    Unknown(String),
}

/// `key (SWITCHBOARD_KEY)` for a setting's file path (`redis.url` → `SWITCHBOARD_REDIS_URL`).
pub fn setting_label(path: &str) -> String {
    format!("{path} ({})", env_name(path))
}

/// The environment variable of a setting's file path.
pub fn env_name(path: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        path.replace('.', "_").to_ascii_uppercase()
    )
}

fn invalid(setting: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.to_owned(),
        reason: reason.into(),
    }
}

impl Config {
    /// Loads defaults, then `file` if given, then `SWITCHBOARD_*` variables from `env`.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let defaults = toml::Table::try_from(Config::default())
            .map_err(|e| ConfigError::File(e.to_string()))?;
        let mut table = defaults.clone();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let from_file: toml::Table =
                toml::from_str(&text).map_err(|e| ConfigError::File(e.message().to_owned()))?;
            for (key, value) in from_file {
                merge(&mut table, &defaults, &key, value);
            }
        }
        let mut names: Vec<&String> = env.keys().collect();
        names.sort();
        for name in names {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if key == "CONFIG" {
                continue;
            }
            let (section, key) = locate(&defaults, &key.to_ascii_lowercase())
                .ok_or_else(|| ConfigError::Unknown(name.clone()))?;
            let level = match &section {
                Some(section) => table
                    .get_mut(section)
                    .and_then(toml::Value::as_table_mut)
                    .ok_or_else(|| ConfigError::Unknown(name.clone()))?,
                None => &mut table,
            };
            let typed = typed_env_value(name, level.get(&key), &env[name])?;
            level.insert(key, typed);
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let setting = e.path().to_string();
                let reason = e.into_inner().message().to_owned();
                if reason.starts_with("unknown field") {
                    return ConfigError::Unknown(setting_label(&setting));
                }
                invalid(&setting, reason)
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses values the node cannot run with, and weak secrets in production. Each refusal
    /// names its setting, its variable and what is accepted.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.env == Environment::Production {
            let secret = self.jwt_secret.expose();
            if secret == DEV_JWT_SECRET {
                return Err(invalid(
                    "jwt_secret",
                    "the development default is refused in production; set a random secret of at least 32 bytes",
                ));
            }
            if secret.len() < MIN_SECRET_BYTES {
                return Err(invalid(
                    "jwt_secret",
                    "must be at least 32 bytes in production",
                ));
            }
        }
        let within = |setting: &str, value: usize, min: usize, max: usize| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(invalid(setting, format!("must be between {min} and {max}")))
            }
        };
        within(
            "max_message_bytes",
            self.max_message_bytes,
            1024,
            MAX_FRAME_LIMIT,
        )?;
        within("outbox_frames", self.outbox_frames, 1, MAX_OUTBOX_FRAMES)?;
        within(
            "max_rooms_per_connection",
            self.max_rooms_per_connection,
            1,
            1024,
        )?;
        within(
            "max_members_per_room",
            self.max_members_per_room,
            1,
            100_000,
        )?;
        within("worker_threads", self.worker_threads, 0, MAX_WORKER_THREADS)?;
        let at_least = |setting: &str, value: Duration, min: Duration| {
            if value >= min {
                Ok(())
            } else {
                let min = humantime::format_duration(min);
                Err(invalid(setting, format!("must be at least {min}")))
            }
        };
        at_least(
            "auth_timeout",
            self.auth_timeout,
            Duration::from_millis(100),
        )?;
        at_least(
            "ping_interval",
            self.ping_interval,
            Duration::from_millis(100),
        )?;
        at_least("lease_ttl", self.lease_ttl, Duration::from_secs(1))?;
        if self.idle_timeout <= self.ping_interval {
            return Err(invalid("idle_timeout", "must be longer than ping_interval"));
        }
        if let Some(id) = &self.node_id {
            crate::protocol::NodeId::parse(id).map_err(|e| invalid("node_id", e.to_string()))?;
        }
        self.validate_text()
    }

    /// Checks the settings written as text: names, URLs, origins and filters.
    fn validate_text(&self) -> Result<(), ConfigError> {
        let prefix = &self.redis.prefix;
        if prefix.is_empty() || prefix.len() > 64 || prefix.contains(['{', '}', ' ']) {
            return Err(invalid(
                "redis.prefix",
                "1-64 characters without braces or spaces",
            ));
        }
        if let Some(url) = &self.redis.url {
            crate::redis::url::parse(url.expose())
                .map_err(|e| invalid("redis.url", e.explain()))?;
        }
        for origin in &self.cors_origins {
            let valid = origin == "*"
                || (origin.starts_with("http://") || origin.starts_with("https://"))
                    && origin.bytes().all(|b| b.is_ascii_graphic());
            if !valid {
                return Err(invalid(
                    "cors_origins",
                    format!("{origin:?} is not `*` or an origin like https://app.example"),
                ));
            }
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level).map_err(|e| {
            invalid(
                "log_level",
                format!("not a filter like `info` or `info,switchboard=debug`: {e}"),
            )
        })?;
        Ok(())
    }
}

/// Where a setting's flat name (`redis_url`, or `listen`) lives: its section, if any, and its
/// key there; `None` when there is no such setting.
fn locate(defaults: &toml::Table, flat: &str) -> Option<(Option<String>, String)> {
    if defaults.get(flat).is_some_and(|v| !v.is_table()) {
        return Some((None, flat.to_owned()));
    }
    defaults.iter().find_map(|(section, value)| {
        let key = flat.strip_prefix(section.as_str())?.strip_prefix('_')?;
        let known = value.as_table()?.contains_key(key);
        known.then(|| (Some(section.clone()), key.to_owned()))
    })
}

/// Merges one top-level entry of the file into `table`: a `[section]` key by key, a flat
/// `section_key` into its section, anything else as it is (unknown keys are refused later).
fn merge(table: &mut toml::Table, defaults: &toml::Table, key: &str, value: toml::Value) {
    match (value, table.get_mut(key)) {
        (toml::Value::Table(entries), Some(toml::Value::Table(section))) => {
            section.extend(entries);
        }
        (value, _) => match locate(defaults, key) {
            Some((Some(section), key)) => {
                if let Some(toml::Value::Table(section)) = table.get_mut(&section) {
                    section.insert(key, value);
                }
            }
            _ => {
                table.insert(key.to_owned(), value);
            }
        },
    }
}

/// Types an environment value like the setting it overrides.
fn typed_env_value(
    name: &str,
    current: Option<&toml::Value>,
    raw: &str,
) -> Result<toml::Value, ConfigError> {
    let setting = name.trim_start_matches(ENV_PREFIX).to_ascii_lowercase();
    let bad = |what: &str| ConfigError::Invalid {
        setting: setting.clone(),
        reason: format!("must be {what}"),
    };
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
        _ => toml::Value::String(raw.to_owned()),
    })
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
        assert!(matches!(e, ConfigError::Invalid { .. }), "{e}");
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
