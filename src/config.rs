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
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::datakey::{self, DataKeys};
use serde::{Deserialize, Serialize};

mod calls;
pub use calls::CallsConfig;

/// The signing secret a development node uses when none is configured. Production refuses it.
pub const DEV_JWT_SECRET: &str = "switchboard-dev-secret-do-not-use-in-production";
/// The shortest secret production accepts, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;
/// The shortest TURN secret a production node accepts.
pub const MIN_TURN_SECRET_BYTES: usize = 16;
/// The prefix of every setting's environment variable.
pub const ENV_PREFIX: &str = "SWITCHBOARD_";
/// The most runtime threads a node may be given.
const MAX_WORKER_THREADS: usize = 1024;
/// The largest frame a node may be configured to take.
const MAX_FRAME_LIMIT: usize = 16 * 1024 * 1024;
/// The most frames an outbox may be configured to hold.
const MAX_OUTBOX_FRAMES: usize = 1 << 20;

/// The settings that are counts, and the range each accepts.
const RANGES: &[(&str, usize, usize)] = &[
    ("max_message_bytes", 1024, MAX_FRAME_LIMIT),
    ("outbox_frames", 1, MAX_OUTBOX_FRAMES),
    ("max_rooms_per_connection", 1, 1024),
    ("max_members_per_room", 1, 100_000),
    ("worker_threads", 0, MAX_WORKER_THREADS),
    ("database.pool_min", 0, 1000),
    ("database.pool_max", 1, 1000),
    ("lockout_threshold", 0, 1000),
    ("lockout_address_threshold", 0, 100_000),
    ("msg_rate", 0, 1_000_000),
    ("msg_burst", 1, 1_000_000),
    ("max_connections", 0, 10_000_000),
    ("user_connections", 0, 1_000_000),
    ("user_msg_rate", 0, 1_000_000),
    ("user_msg_burst", 1, 1_000_000),
    ("ip_connections", 0, 1_000_000),
    ("max_unauthenticated", 0, 10_000_000),
    ("user_signal_rate", 0, 1_000_000),
    ("user_signal_burst", 1, 1_000_000),
    ("ip_unauthenticated", 0, 1_000_000),
    ("ip_upgrade_rate", 0, 1_000_000_000),
    ("ip_upgrade_burst", 1, 1_000_000),
    ("auth_rate", 0, 1_000_000),
    ("auth_burst", 1, 1_000_000),
    ("e2ee.register_rate", 0, 1_000_000),
    ("e2ee.claim_rate", 0, 1_000_000),
    ("e2ee.ticket_rate", 0, 1_000_000),
    ("e2ee.max_content_bytes", 16, 60 * 1024),
];

/// The range the count setting at `path` accepts.
fn range(path: &str) -> Option<(usize, usize)> {
    RANGES
        .iter()
        .chain(calls::RANGES)
        .find(|(setting, _, _)| *setting == path)
        .map(|(_, min, max)| (*min, *max))
}

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

/// Whom a connection may send user-addressed signals (`webrtc_offer`, ...) to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserSignals {
    /// Any user of the deployment (a directory of users who call each other by id).
    Any,
    /// Users it shares a room with.
    SharedRoom,
    /// Users its token's `peers` claim names (admins: anyone).
    Grant,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub env: Environment,
    pub listen: SocketAddr,
    /// Where `/metrics` and the whole health report are served, apart from the public port;
    /// `off` serves them nowhere.
    #[serde(with = "listen_or_off")]
    pub metrics_listen: Option<SocketAddr>,
    /// This node's id; random when unset.
    #[serde(with = "optional")]
    pub node_id: Option<String>,
    pub jwt_secret: Secret,
    pub max_message_bytes: usize,
    pub outbox_frames: usize,
    pub max_rooms_per_connection: usize,
    pub max_members_per_room: usize,
    /// Messages a connection may send per second, sustained; 0 = no limit.
    pub msg_rate: usize,
    /// Messages a connection may send at once above the rate (an offer and a burst of ICE
    /// candidates).
    pub msg_burst: usize,
    /// WebSocket connections this node holds at most; 0 = no limit.
    pub max_connections: usize,
    /// Connections one user may hold across the cluster; 0 = no limit.
    pub user_connections: usize,
    /// Messages one user may send per second over all its connections, cluster-wide; 0 = no
    /// limit.
    pub user_msg_rate: usize,
    /// Messages one user may send at once above that rate.
    pub user_msg_burst: usize,
    /// WebSocket connections one address may hold across the cluster; 0 = no limit.
    pub ip_connections: usize,
    /// WebSockets waiting to authenticate this node holds at most; 0 = no limit.
    pub max_unauthenticated: usize,
    /// WebSockets waiting to authenticate one address may hold on this node; 0 = no limit.
    pub ip_unauthenticated: usize,
    /// WebSocket upgrades one address may start per minute, cluster-wide; 0 = no limit.
    pub ip_upgrade_rate: usize,
    /// Upgrades one address may start at once above that rate.
    pub ip_upgrade_burst: usize,
    /// Requests one address may make per minute to each route under `/auth` and each public
    /// `POST`, cluster-wide; 0 = no limit.
    pub auth_rate: usize,
    /// Requests one address may make to one such route at once above that rate.
    pub auth_burst: usize,
    /// Proxies (CIDRs or addresses) whose `X-Forwarded-For` / `Forwarded` name the client.
    pub trusted_proxies: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a client may take to send a request's head (its line and headers); a
    /// connection that sends nothing, or trickles, is closed after this long.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long one write to a client's socket may take; a client that stops reading is closed
    /// after this long.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How long a session whose connection was lost waits to be resumed (`resume`, on any node);
    /// 0 turns resuming off.
    #[serde(with = "humantime_serde")]
    pub resume_window: Duration,
    /// How long a node keeps a bus subscription after its last local interest left.
    #[serde(with = "humantime_serde")]
    pub subscription_linger: Duration,
    /// Node lease TTL in a cluster: a dead node's members are removed within twice this.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Origins allowed by CORS on the REST API; `*` allows any. Empty (unset) = any in
    /// development; production refuses to start until it is set (to `*` explicitly, if so).
    pub cors_origins: Vec<String>,
    /// Origins whose pages may open WebSockets (the upgrade's `Origin`; requests without one,
    /// from programs, pass); `*` allows any. Empty (unset) as for `cors_origins`.
    pub allowed_origins: Vec<String>,
    /// Threads of the node's runtime; 0 = one per core available to the process.
    pub worker_threads: usize,
    pub log_format: LogFormat,
    /// Whom user-addressed signals may go to: `any`, `shared_room` or `grant`.
    pub user_signals: UserSignals,
    /// User-addressed signals one user may send per second, cluster-wide; 0 = no limit.
    pub user_signal_rate: usize,
    /// User-addressed signals one user may send at once above that rate.
    pub user_signal_burst: usize,
    pub log_level: String,
    /// The longest an access token may live (from `iat` to `exp`); longer ones are refused.
    #[serde(with = "humantime_serde")]
    pub max_token_lifetime: Duration,
    /// `open` or `closed`: whether `POST /auth/register` creates accounts; empty = open in
    /// development, closed in production.
    pub registration: String,
    /// The secret API keys' signing secrets are sealed with in the store; empty = derived
    /// from `jwt_secret` (then changing `jwt_secret` makes existing API keys unusable).
    #[serde(with = "optional")]
    pub sealing_key: Option<Secret>,
    /// The key sensitive columns are encrypted with at rest: base64 of 32 random bytes
    /// (`openssl rand -base64 32`). Empty = derived from the sealing secret in development;
    /// production refuses it empty.
    #[serde(with = "optional")]
    pub data_key: Option<Secret>,
    /// Older data keys: they still open what they sealed while `switchboard data rotate-key`
    /// re-seals it under `data_key`.
    pub data_key_previous: Vec<Secret>,
    /// Days that ended calls, expired codes and other records are kept before the retention
    /// job removes them.
    pub retention_days: u32,
    /// How often the retention job runs (on one node of the cluster at a time).
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// Failed logins of one name within `lockout_duration` that lock it; 0 = never.
    pub lockout_threshold: usize,
    /// Failed logins from one address within `lockout_duration` that lock it out of every
    /// name; 0 = never.
    pub lockout_address_threshold: usize,
    /// How long a locked account refuses logins.
    #[serde(with = "humantime_serde")]
    pub lockout_duration: Duration,
    /// `[jwks]`: an external issuer whose tokens the node accepts.
    pub jwks: JwksConfig,
    /// `[turn]`: the TURN relays whose credentials the node issues.
    pub turn: TurnConfig,
    /// STUN URIs (`stun:host:port`) handed to clients with the TURN servers.
    pub stun_uris: Vec<String>,
    /// Whether the demo pages and the browser client library are served under `/demo`.
    pub demo: bool,
    /// `[redis]`: where cluster state lives.
    pub redis: RedisConfig,
    /// `[database]`: where durable data lives.
    pub database: DatabaseConfig,
    /// `[tls]`: the certificate the public listener serves HTTPS and `wss://` with, when the
    /// node terminates TLS itself (no proxy in front).
    pub tls: TlsConfig,
    /// `[calls]`: QR call invites: how long codes and calls live, and the code-check rates.
    pub calls: CallsConfig,
    /// `[e2ee]`: the E2EE relay's key directory and message queue.
    pub e2ee: E2eeConfig,
}

/// `[e2ee]`: the E2EE relay (`SWITCHBOARD_E2EE_*`). Every rate is refused with 429 and
/// `retry_after`; 0 turns it off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct E2eeConfig {
    /// Registrations per hour per address (seed 003: 10).
    pub register_rate: usize,
    /// Key bundle fetches per minute per requesting device and target account (seed 003: 5).
    pub claim_rate: usize,
    /// WebSocket tickets per minute per device (seed 003: 10).
    pub ticket_rate: usize,
    /// The largest ciphertext one message may carry, in bytes of Base64.
    pub max_content_bytes: usize,
}

impl Default for E2eeConfig {
    fn default() -> Self {
        Self {
            register_rate: 10,
            claim_rate: 5,
            ticket_rate: 10,
            max_content_bytes: 48 * 1024,
        }
    }
}

/// `[tls]`: TLS on the public listener (`SWITCHBOARD_TLS_*`). Both files or neither.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first; unset = plain HTTP.
    #[serde(with = "optional")]
    pub cert: Option<PathBuf>,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(with = "optional")]
    pub key: Option<PathBuf>,
    /// How often both files are read again; changed files are served from the next
    /// handshake on (SIGHUP reads them at once).
    #[serde(with = "humantime_serde")]
    pub reload: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            reload: Duration::from_secs(10),
        }
    }
}

impl TlsConfig {
    /// Whether the node serves TLS.
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }
}

/// `[database]`: the durable store (`SWITCHBOARD_DATABASE_*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (relative to the working directory; created when missing) or
    /// `postgres://user:password@host:port/db`.
    pub url: Secret,
    /// Connections the pool keeps open at least.
    pub pool_min: usize,
    /// Connections the pool opens at most.
    pub pool_max: usize,
}

/// `[jwks]`: an external issuer's public keys (`SWITCHBOARD_JWKS_*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwksConfig {
    /// `https://…` or `http://…` (fetched), or `file:///PATH` or a path (read); empty = no
    /// external issuer.
    pub url: String,
    /// The `iss` its tokens must carry; empty = not checked.
    pub issuer: String,
    /// The `aud` its tokens must carry; empty = not checked.
    pub audience: String,
    /// How often the keys are fetched again (and at most how often an unknown `kid` triggers
    /// a fetch: once per `refresh / 30`, at least a second apart).
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
}

impl Default for JwksConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            issuer: String::new(),
            audience: String::new(),
            refresh: Duration::from_secs(300),
        }
    }
}

/// `[turn]`: coturn with `use-auth-secret` (`SWITCHBOARD_TURN_*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// coturn's `static-auth-secret`s: the first signs credentials; the others are listed for a
    /// rotation, while coturn still accepts them. Empty = no TURN credentials.
    pub secret: Vec<Secret>,
    /// `turn:` and `turns:` URIs (with `?transport=`) the credentials are for.
    pub uris: Vec<String>,
    /// How long credentials stay valid: a duration (`24h`) or seconds (`86400`).
    #[serde(with = "seconds_or_duration")]
    pub ttl: Duration,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            secret: Vec::new(),
            uris: Vec::new(),
            ttl: Duration::from_secs(86_400),
        }
    }
}

/// A duration written as `24h` or as whole seconds (`86400`, as the predecessors did).
mod seconds_or_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(value, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Seconds(seconds) => Ok(Duration::from_secs(seconds)),
            Raw::Text(text) => match text.trim().parse::<u64>() {
                Ok(seconds) => Ok(Duration::from_secs(seconds)),
                Err(_) => humantime::parse_duration(text.trim()).map_err(|e| {
                    serde::de::Error::custom(format!("{e}: a duration such as 24h, or seconds"))
                }),
            },
        }
    }
}

/// An address to listen on, or `off`.
mod listen_or_off {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<SocketAddr>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(addr) => serializer.collect_str(addr),
            None => serializer.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.trim() {
            "off" => Ok(None),
            addr => addr.parse().map(Some).map_err(|_| {
                serde::de::Error::custom(format!(
                    "{addr:?} is neither an IP address and port nor `off`"
                ))
            }),
        }
    }
}

/// The database a node uses when none is configured: an SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/switchboard.db";

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::new(DEFAULT_DATABASE_URL),
            pool_min: 0,
            pool_max: 10,
        }
    }
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
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            node_id: None,
            jwt_secret: Secret::new(DEV_JWT_SECRET),
            max_message_bytes: 64 * 1024,
            outbox_frames: 256,
            max_rooms_per_connection: 16,
            max_members_per_room: 10,
            msg_rate: 30,
            msg_burst: 120,
            max_connections: 0,
            user_connections: 10,
            user_msg_rate: 60,
            user_msg_burst: 240,
            ip_connections: 5,
            max_unauthenticated: 1000,
            ip_unauthenticated: 10,
            ip_upgrade_rate: 120,
            ip_upgrade_burst: 30,
            auth_rate: 30,
            auth_burst: 10,
            trusted_proxies: Vec::new(),
            auth_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            resume_window: Duration::from_secs(30),
            subscription_linger: Duration::from_secs(2),
            lease_ttl: Duration::from_secs(3),
            cors_origins: Vec::new(),
            allowed_origins: Vec::new(),
            worker_threads: 0,
            log_format: LogFormat::Text,
            user_signals: UserSignals::Any,
            user_signal_rate: 20,
            user_signal_burst: 100,
            log_level: "info".into(),
            max_token_lifetime: Duration::from_secs(30 * 86_400),
            registration: String::new(),
            sealing_key: None,
            data_key: None,
            data_key_previous: Vec::new(),
            retention_days: 30,
            retention_interval: Duration::from_secs(3600),
            lockout_threshold: 10,
            lockout_address_threshold: 50,
            lockout_duration: Duration::from_secs(15 * 60),
            jwks: JwksConfig::default(),
            turn: TurnConfig::default(),
            stun_uris: Vec::new(),
            demo: true,
            redis: RedisConfig::default(),
            database: DatabaseConfig::default(),
            tls: TlsConfig::default(),
            e2ee: E2eeConfig::default(),
            calls: CallsConfig::default(),
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
            let path = match &section {
                Some(section) => format!("{section}.{key}"),
                None => key.clone(),
            };
            let typed = typed_env_value(&path, level.get(&key), &env[name])?;
            level.insert(key, typed);
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let setting = e.path().to_string();
                let reason = e.into_inner().message().to_owned();
                if reason.starts_with("unknown field") {
                    return ConfigError::Unknown(setting_label(&setting));
                }
                let expected = expected(&setting, defaults_value(&defaults, &setting));
                invalid(&setting, format!("{reason} (accepted: {expected})"))
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses values the node cannot run with, and weak secrets in production. Each refusal
    /// names its setting, its variable and what is accepted.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(metrics) = self.metrics_listen
            && metrics.port() != 0
            && metrics == self.listen
        {
            return Err(invalid(
                "metrics_listen",
                format!(
                    "{metrics} is listen's address too: choose a port other than listen's, or `off`"
                ),
            ));
        }
        let published_secret = self.jwt_secret.expose() == DEV_JWT_SECRET;
        if self.env == Environment::Development
            && published_secret
            && !self.listen.ip().is_loopback()
        {
            return Err(invalid(
                "listen",
                format!(
                    "{} is reachable from other machines, and development mode signs tokens with \
                     the built-in jwt_secret, which anyone can read: set SWITCHBOARD_JWT_SECRET \
                     (or SWITCHBOARD_ENV=production) to listen there, or listen on 127.0.0.1",
                    self.listen
                ),
            ));
        }
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
            if self.jwks.url.starts_with("http://") {
                return Err(invalid(
                    "jwks.url",
                    "must be https:// (or a file) in production: keys fetched over plain HTTP can be forged on the way",
                ));
            }
            if self
                .turn
                .secret
                .iter()
                .any(|s| s.expose().len() < MIN_TURN_SECRET_BYTES)
            {
                return Err(invalid(
                    "turn.secret",
                    "each secret must be at least 16 bytes in production",
                ));
            }
            if self
                .sealing_key
                .as_ref()
                .is_some_and(|key| key.expose().len() < MIN_SECRET_BYTES)
            {
                return Err(invalid(
                    "sealing_key",
                    "must be at least 32 bytes in production",
                ));
            }
            let secrets = std::iter::once(("jwt_secret", &self.jwt_secret))
                .chain(self.turn.secret.iter().map(|s| ("turn.secret", s)))
                .chain(self.sealing_key.iter().map(|s| ("sealing_key", s)))
                .chain(self.data_key.iter().map(|s| ("data_key", s)));
            for (setting, secret) in secrets {
                if let Some(reason) = weakness(secret.expose()) {
                    return Err(invalid(
                        setting,
                        format!(
                            "{reason}: production needs a random secret (`openssl rand -base64 32` makes one)"
                        ),
                    ));
                }
            }
        }
        let counts = [
            ("max_message_bytes", self.max_message_bytes),
            ("outbox_frames", self.outbox_frames),
            ("max_rooms_per_connection", self.max_rooms_per_connection),
            ("max_members_per_room", self.max_members_per_room),
            ("worker_threads", self.worker_threads),
            ("database.pool_min", self.database.pool_min),
            ("database.pool_max", self.database.pool_max),
            ("lockout_threshold", self.lockout_threshold),
            ("lockout_address_threshold", self.lockout_address_threshold),
            ("msg_rate", self.msg_rate),
            ("msg_burst", self.msg_burst),
            ("max_connections", self.max_connections),
            ("user_connections", self.user_connections),
            ("user_msg_rate", self.user_msg_rate),
            ("user_msg_burst", self.user_msg_burst),
            ("ip_connections", self.ip_connections),
            ("max_unauthenticated", self.max_unauthenticated),
            ("user_signal_rate", self.user_signal_rate),
            ("user_signal_burst", self.user_signal_burst),
            ("ip_unauthenticated", self.ip_unauthenticated),
            ("ip_upgrade_rate", self.ip_upgrade_rate),
            ("ip_upgrade_burst", self.ip_upgrade_burst),
            ("auth_rate", self.auth_rate),
            ("auth_burst", self.auth_burst),
            ("e2ee.register_rate", self.e2ee.register_rate),
            ("e2ee.claim_rate", self.e2ee.claim_rate),
            ("e2ee.ticket_rate", self.e2ee.ticket_rate),
            ("e2ee.max_content_bytes", self.e2ee.max_content_bytes),
        ];
        for (setting, value) in counts {
            if let Some((min, max)) =
                range(setting).filter(|(min, max)| !(min..=max).contains(&&value))
            {
                return Err(invalid(setting, format!("must be between {min} and {max}")));
            }
        }
        if self.database.pool_min > self.database.pool_max {
            return Err(invalid(
                "database.pool_min",
                "must not be more than database.pool_max",
            ));
        }
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
        at_least(
            "header_read_timeout",
            self.header_read_timeout,
            Duration::from_millis(100),
        )?;
        at_least(
            "write_timeout",
            self.write_timeout,
            Duration::from_millis(100),
        )?;
        at_least("lease_ttl", self.lease_ttl, Duration::from_secs(1))?;
        at_least(
            "max_token_lifetime",
            self.max_token_lifetime,
            Duration::from_secs(60),
        )?;
        if self.max_token_lifetime > Duration::from_secs(366 * 86_400) {
            return Err(invalid("max_token_lifetime", "must be at most 366d"));
        }
        at_least(
            "lockout_duration",
            self.lockout_duration,
            Duration::from_secs(1),
        )?;
        at_least("jwks.refresh", self.jwks.refresh, Duration::from_secs(30))?;
        at_least("tls.reload", self.tls.reload, Duration::from_millis(100))?;
        if !self.resume_window.is_zero() {
            at_least(
                "resume_window",
                self.resume_window,
                Duration::from_millis(100),
            )?;
        }
        if self.resume_window > Duration::from_secs(3600) {
            return Err(invalid(
                "resume_window",
                "must be at most 1h (0s turns resuming off)",
            ));
        }
        self.data_keys_checked()?;
        if !(1..=3650).contains(&self.retention_days) {
            return Err(invalid("retention_days", "between 1 and 3650"));
        }
        at_least(
            "retention_interval",
            self.retention_interval,
            Duration::from_secs(1),
        )?;
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => return Err(invalid("tls.key", "needs to be set with tls.cert")),
            (None, Some(_)) => return Err(invalid("tls.cert", "needs to be set with tls.key")),
            _ => {}
        }
        at_least("turn.ttl", self.turn.ttl, Duration::from_secs(60))?;
        if self.turn.ttl > Duration::from_secs(7 * 86_400) {
            return Err(invalid("turn.ttl", "must be at most 7d"));
        }
        if self.idle_timeout <= self.ping_interval {
            return Err(invalid("idle_timeout", "must be longer than ping_interval"));
        }
        if let Some(id) = &self.node_id {
            crate::protocol::NodeId::parse(id).map_err(|e| invalid("node_id", e.to_string()))?;
        }
        self.calls.validate()?;
        self.validate_text()?;
        if self.env == Environment::Production && self.data_key.is_none() {
            return Err(invalid(
                "data_key",
                "production needs a data key to encrypt sensitive columns at rest: base64 of 32 random bytes (`openssl rand -base64 32` makes one)",
            ));
        }
        Ok(())
    }

    /// Checks the TURN and STUN settings: URIs of the right schemes, a secret with TURN URIs.
    /// The node's data keys: `data_key` (and `data_key_previous`), or in development without
    /// one a key derived from the sealing secret (`sealing_key`, else `jwt_secret`).
    pub fn data_keys(&self) -> DataKeys {
        self.data_keys_checked()
            .expect("the data keys were checked when the config was loaded")
    }

    fn data_keys_checked(&self) -> Result<DataKeys, ConfigError> {
        let parse = |setting: &str, key: &Secret| {
            datakey::parse_key(key.expose()).map_err(|e| invalid(setting, e.to_string()))
        };
        let previous = self
            .data_key_previous
            .iter()
            .map(|key| parse("data_key_previous", key))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(match &self.data_key {
            Some(key) => DataKeys::new(&parse("data_key", key)?, &previous),
            None if previous.is_empty() => {
                let secret = self.sealing_key.as_ref().unwrap_or(&self.jwt_secret);
                DataKeys::derived(secret.expose().as_bytes())
            }
            None => {
                return Err(invalid(
                    "data_key_previous",
                    "needs data_key, the key that replaces them",
                ));
            }
        })
    }

    fn validate_turn(&self) -> Result<(), ConfigError> {
        let uri = |setting: &str, uri: &str, schemes: &[&str]| {
            let scheme = uri.split_once(':').map_or("", |(scheme, _)| scheme);
            let rest = uri.split_once(':').map_or("", |(_, rest)| rest);
            if schemes.contains(&scheme)
                && !rest.is_empty()
                && !uri.contains(char::is_whitespace)
                && !uri.contains(['"', ','])
            {
                Ok(())
            } else {
                let schemes = schemes.join(": or ");
                Err(invalid(
                    setting,
                    format!(
                        "{uri:?} is not a {schemes}: URI like turn:turn.example.com:3478?transport=udp"
                    ),
                ))
            }
        };
        for u in &self.turn.uris {
            uri("turn.uris", u, &["turn", "turns"])?;
        }
        for u in &self.stun_uris {
            uri("stun_uris", u, &["stun", "stuns"])?;
        }
        if self.turn.secret.iter().any(|s| s.expose().is_empty()) {
            return Err(invalid("turn.secret", "an empty secret in the list"));
        }
        if !self.turn.secret.is_empty() && self.turn.uris.is_empty() {
            return Err(invalid(
                "turn.secret",
                "needs turn.uris (the TURN servers the credentials are for)",
            ));
        }
        if self.turn.secret.is_empty() && !self.turn.uris.is_empty() {
            return Err(invalid(
                "turn.uris",
                "needs turn.secret (coturn's static-auth-secret) to issue credentials",
            ));
        }
        Ok(())
    }

    /// The CORS origins in force, as browsers send them: `cors_origins`, or any when unset
    /// (development).
    pub fn cors_origins(&self) -> Vec<String> {
        if self.cors_origins.is_empty() {
            vec!["*".to_owned()]
        } else {
            let origins = self.cors_origins.iter();
            origins
                .map(|o| {
                    if o == "*" {
                        o.clone()
                    } else {
                        normalize_origin(o)
                    }
                })
                .collect()
        }
    }

    /// Whether a WebSocket upgrade from a page of `origin` is allowed.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        if self.allowed_origins.is_empty() {
            return true;
        }
        let origin = normalize_origin(origin);
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || normalize_origin(o) == origin)
    }

    /// Whether `POST /auth/register` creates accounts.
    pub fn registration_open(&self) -> bool {
        match self.registration.as_str() {
            "open" => true,
            "closed" => false,
            _ => self.env == Environment::Development,
        }
    }

    /// Checks the settings written as text: names, URLs, origins and filters.
    fn validate_text(&self) -> Result<(), ConfigError> {
        if !matches!(self.registration.as_str(), "" | "open" | "closed") {
            return Err(invalid("registration", "must be open or closed"));
        }
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
        let database = self.database.url.expose();
        let scheme = database.split_once(':').map_or("", |(scheme, _)| scheme);
        if !matches!(scheme, "sqlite" | "postgres" | "postgresql") {
            return Err(invalid(
                "database.url",
                "must be sqlite://PATH or postgres://user:password@host:port/db",
            ));
        }
        let jwks = &self.jwks.url;
        if !jwks.is_empty()
            && (jwks.contains(char::is_whitespace)
                || jwks.contains("://")
                    && !["http://", "https://", "file://"]
                        .iter()
                        .any(|scheme| jwks.starts_with(scheme)))
        {
            return Err(invalid(
                "jwks.url",
                "must be https://…, http://…, file:///PATH or a path to a JWKS file",
            ));
        }
        for (setting, value) in [
            ("jwks.issuer", &self.jwks.issuer),
            ("jwks.audience", &self.jwks.audience),
        ] {
            if !value.is_empty() && jwks.is_empty() {
                return Err(invalid(setting, "needs jwks.url (the issuer's keys)"));
            }
        }
        self.validate_turn()?;
        crate::client_ip::TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|e| invalid("trusted_proxies", e))?;
        for (setting, origins) in [
            ("cors_origins", &self.cors_origins),
            ("allowed_origins", &self.allowed_origins),
        ] {
            for origin in origins {
                let host = origin
                    .strip_prefix("http://")
                    .or_else(|| origin.strip_prefix("https://"));
                let valid = origin == "*"
                    || host.is_some_and(|host| {
                        let host = host.strip_suffix('/').unwrap_or(host);
                        !host.is_empty()
                            && host
                                .bytes()
                                .all(|b| b.is_ascii_graphic() && !b"/?#@".contains(&b))
                    });
                if !valid {
                    return Err(invalid(
                        setting,
                        format!("{origin:?} is not `*` or an origin like https://app.example"),
                    ));
                }
            }
            if origins.is_empty() && self.env == Environment::Production {
                return Err(invalid(
                    setting,
                    "must be set in production: the web origins of your application (or `*`, explicitly)",
                ));
            }
        }
        // tracing-subscriber's directive parser panics on some non-ASCII text: refuse it first.
        if !filter_text_is_safe(&self.log_level) {
            return Err(invalid(
                "log_level",
                "not a filter like `info` or `info,switchboard=debug` (printable ASCII only)",
            ));
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

/// Placeholders that sample configurations ship with (the predecessors' among them).
const PLACEHOLDERS: [&str; 8] = [
    "your-super-secret-key-change-this-in-production-256-bits",
    "your-jwt-secret-key",
    "your-256-bit-secret-key-here",
    "your-secret-key",
    "changeme",
    "change-me",
    "secret",
    "password",
];

/// Distinct characters a secret of production needs at least (a random base64 or hex secret of
/// 32 bytes has far more; a word or a run of one character has fewer).
const MIN_DISTINCT_CHARS: usize = 10;

/// Why `secret` is too weak for production, if it is: a known placeholder (or built on one),
/// too few distinct characters, or one short piece repeated. Never says what the secret is.
pub fn weakness(secret: &str) -> Option<&'static str> {
    let lower = secret.to_ascii_lowercase();
    let placeholder = lower == DEV_JWT_SECRET
        || PLACEHOLDERS.iter().any(|p| lower == *p)
        || [
            "change-this",
            "changeme",
            "change-me",
            "change_me",
            "your-",
            "do-not-use",
            "replace-me",
            "replace_me",
            "replaceme",
            "placeholder",
        ]
        .iter()
        .any(|p| lower.contains(p));
    if placeholder {
        return Some("is a placeholder from a sample configuration");
    }
    let bytes = secret.as_bytes();
    let mut seen = [false; 256];
    let distinct = bytes
        .iter()
        .filter(|&&b| !std::mem::replace(&mut seen[usize::from(b)], true))
        .count();
    if distinct < MIN_DISTINCT_CHARS {
        return Some("has too few distinct characters to be random");
    }
    // Each character equals the one a period before: `abcabcab`, `xyxyxy`.
    let repeated =
        (1..=bytes.len() / 2).any(|period| bytes[period..].iter().zip(bytes).all(|(a, b)| a == b));
    if repeated {
        return Some("repeats one short piece");
    }
    None
}

/// Whether `filter` is text tracing-subscriber's filter parser can be given: printable ASCII
/// (its parser slices at byte offsets and panics inside multi-byte characters).
pub fn filter_text_is_safe(filter: &str) -> bool {
    filter.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

/// An origin as browsers send it: lower case, no trailing `/`, no default port.
fn normalize_origin(origin: &str) -> String {
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    let default_port = if origin.starts_with("https://") {
        ":443"
    } else {
        ":80"
    };
    match origin.strip_suffix(default_port) {
        Some(bare) => bare.to_owned(),
        None => origin,
    }
}

/// A variable a predecessor read, and what replaces it in Switchboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Predecessor {
    pub variable: &'static str,
    pub replacement: &'static str,
}

impl Predecessor {
    const fn new(variable: &'static str, replacement: &'static str) -> Self {
        Self {
            variable,
            replacement,
        }
    }

    /// The one warning a node gives when this variable is set.
    pub fn warning(&self) -> String {
        let Self {
            variable,
            replacement,
        } = self;
        format!("{variable} is a predecessor's setting and is not applied; use {replacement}")
    }
}

/// Variables the predecessors read, and what replaces each. Switchboard does not apply them;
/// a node started with one set warns once, naming the replacement (`docs/migrating.md` has the
/// whole mapping).
pub const PREDECESSOR_VARIABLES: &[Predecessor] = &[
    Predecessor::new("HOST", "SWITCHBOARD_LISTEN"),
    Predecessor::new("PORT", "SWITCHBOARD_LISTEN"),
    Predecessor::new("WEBRTC_SIGNALING_PORT", "SWITCHBOARD_LISTEN"),
    Predecessor::new("DEBUG", "SWITCHBOARD_LOG_LEVEL"),
    Predecessor::new("LOG_LEVEL", "SWITCHBOARD_LOG_LEVEL"),
    Predecessor::new("ENVIRONMENT", "SWITCHBOARD_ENV"),
    Predecessor::new("NODE_ENV", "SWITCHBOARD_ENV"),
    Predecessor::new(
        "REQUIRE_HTTPS",
        "SWITCHBOARD_TLS_CERT and SWITCHBOARD_TLS_KEY, or a TLS-terminating proxy in front of the nodes",
    ),
    Predecessor::new("SECRET_KEY", "SWITCHBOARD_JWT_SECRET"),
    Predecessor::new("JWT_SECRET_KEY", "SWITCHBOARD_JWT_SECRET"),
    Predecessor::new("JWT_SECRET", "SWITCHBOARD_JWT_SECRET"),
    Predecessor::new("TOKEN_EXPIRATION_HOURS", "SWITCHBOARD_CALLS_TOKEN_TTL"),
    Predecessor::new(
        "SESSION_TIMEOUT_MINUTES",
        "SWITCHBOARD_CALLS_SESSION_TIMEOUT",
    ),
    Predecessor::new(
        "PASSWORD_PEPPER",
        "nothing (passwords are hashed with argon2id)",
    ),
    Predecessor::new("LICENSE_KEY", "nothing"),
    Predecessor::new("CORS_ORIGINS", "SWITCHBOARD_CORS_ORIGINS"),
    Predecessor::new("ALLOWED_ORIGINS", "SWITCHBOARD_CORS_ORIGINS"),
    Predecessor::new(
        "CORS_ALLOW_CREDENTIALS",
        "nothing (bearer tokens need no cookies)",
    ),
    Predecessor::new(
        "RATE_LIMIT_PER_MINUTE",
        "SWITCHBOARD_MSG_RATE and SWITCHBOARD_MSG_BURST",
    ),
    Predecessor::new(
        "MAX_CONNECTIONS_PER_ROOM",
        "SWITCHBOARD_MAX_MEMBERS_PER_ROOM",
    ),
    Predecessor::new("WEBSOCKET_TIMEOUT", "SWITCHBOARD_IDLE_TIMEOUT"),
    Predecessor::new("TURNSERVER_SECRET", "SWITCHBOARD_TURN_SECRET"),
    Predecessor::new("TURNSERVER_URL", "SWITCHBOARD_TURN_URIS"),
    Predecessor::new("TURNSERVER_URLS", "SWITCHBOARD_TURN_URIS"),
    Predecessor::new("TURNSERVER_TTL", "SWITCHBOARD_TURN_TTL"),
    Predecessor::new("TURN_SECRET", "SWITCHBOARD_TURN_SECRET"),
    Predecessor::new("TURN_HOST", "SWITCHBOARD_TURN_URIS"),
    Predecessor::new("TURN_PORT", "SWITCHBOARD_TURN_URIS"),
    Predecessor::new("TURN_PORT_TLS", "SWITCHBOARD_TURN_URIS"),
    Predecessor::new("TURN_TTL", "SWITCHBOARD_TURN_TTL"),
    Predecessor::new("STUN_SERVERS", "SWITCHBOARD_STUN_URIS"),
    Predecessor::new("TURN_SERVER_URL", "SWITCHBOARD_TURN_URIS"),
    Predecessor::new(
        "TURN_USERNAME",
        "SWITCHBOARD_TURN_SECRET (credentials are derived per user)",
    ),
    Predecessor::new(
        "TURN_PASSWORD",
        "SWITCHBOARD_TURN_SECRET (credentials are derived per user)",
    ),
    Predecessor::new("DATABASE_URL", "SWITCHBOARD_DATABASE_URL"),
    Predecessor::new("DB_HOST", "SWITCHBOARD_DATABASE_URL"),
    Predecessor::new("DB_PORT", "SWITCHBOARD_DATABASE_URL"),
    Predecessor::new("DB_NAME", "SWITCHBOARD_DATABASE_URL"),
    Predecessor::new("DB_USER", "SWITCHBOARD_DATABASE_URL"),
    Predecessor::new("DB_PASSWORD", "SWITCHBOARD_DATABASE_URL"),
    Predecessor::new("DB_SSL", "SWITCHBOARD_DATABASE_URL"),
    Predecessor::new("DB_POOL_MIN_SIZE", "SWITCHBOARD_DATABASE_POOL_MIN"),
    Predecessor::new("DB_POOL_MAX_SIZE", "SWITCHBOARD_DATABASE_POOL_MAX"),
    Predecessor::new("REDIS_URL", "SWITCHBOARD_REDIS_URL"),
    Predecessor::new("ENCRYPTION_KEY", "SWITCHBOARD_DATA_KEY"),
    Predecessor::new(
        "OLD_ENCRYPTION_KEY",
        "SWITCHBOARD_DATA_KEY_PREVIOUS and `switchboard data rotate-key`",
    ),
    Predecessor::new("DATA_RETENTION_DAYS", "SWITCHBOARD_RETENTION_DAYS"),
    Predecessor::new(
        "DATA_RETENTION_CHECK_HOURS",
        "SWITCHBOARD_RETENTION_INTERVAL",
    ),
    Predecessor::new(
        "FILE_CLEANUP_ENABLED",
        "nothing (Switchboard stores no files)",
    ),
    Predecessor::new(
        "FILE_CLEANUP_INTERVAL_HOURS",
        "nothing (Switchboard stores no files)",
    ),
    Predecessor::new(
        "HEALTH_CHECK_ENABLED",
        "GET /health and /readyz, checked on request",
    ),
    Predecessor::new(
        "HEALTH_CHECK_INTERVAL_MINUTES",
        "GET /health and /readyz, checked on request",
    ),
];

/// The predecessors' variables set in `env`, in table order.
pub fn predecessor_variables(
    env: &HashMap<String, String>,
) -> impl Iterator<Item = &'static Predecessor> + '_ {
    PREDECESSOR_VARIABLES
        .iter()
        .filter(|p| env.contains_key(p.variable))
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

/// The default value of the setting at `path` (`redis.url`).
fn defaults_value<'a>(defaults: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_once('.').unwrap_or((path, ""));
    let value = defaults.get(first)?;
    match rest {
        "" => Some(value),
        rest => value.as_table()?.get(rest),
    }
}

/// What the setting at `path`, with this default, accepts, for error messages.
fn expected(path: &str, default: Option<&toml::Value>) -> String {
    if let Some((min, max)) = range(path) {
        return format!("a whole number between {min} and {max}");
    }
    if path == "metrics_listen" {
        return "an IP address and port such as 0.0.0.0:9090, or `off`".to_owned();
    }
    let what = match default {
        Some(toml::Value::Integer(_)) => "a whole number",
        Some(toml::Value::Boolean(_)) => "true or false",
        Some(toml::Value::Array(_)) => "a list (comma-separated in the environment)",
        Some(toml::Value::String(s)) if humantime::parse_duration(s).is_ok() => {
            "a duration such as 500ms, 10s or 2m"
        }
        Some(toml::Value::String(s)) if s.parse::<SocketAddr>().is_ok() => {
            "an IP address and port such as 0.0.0.0:8080"
        }
        _ => "a value as in the configuration table of README.md",
    };
    what.to_owned()
}

/// Types an environment value like the setting at `setting` that it overrides.
fn typed_env_value(
    setting: &str,
    current: Option<&toml::Value>,
    raw: &str,
) -> Result<toml::Value, ConfigError> {
    let bad = || invalid(setting, format!("must be {}", expected(setting, current)));
    Ok(match current {
        Some(toml::Value::Integer(_)) => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| bad())?)
        }
        Some(toml::Value::Boolean(_)) => {
            toml::Value::Boolean(raw.trim().parse().map_err(|_| bad())?)
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

    /// A data key as `openssl rand -base64 32` prints one.
    const TEST_DATA_KEY: &str = "TVwOw8QWITOAn2/Q4vnPT4hhdHHIfGspL9NPW1R0VrA=";

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

    /// Every setting's key path in the table of defaults (`redis.url`).
    fn every_setting() -> Vec<String> {
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        let mut paths = Vec::new();
        for (key, value) in &defaults {
            match value.as_table() {
                Some(section) => paths.extend(section.keys().map(|k| format!("{key}.{k}"))),
                None => paths.push(key.clone()),
            }
        }
        paths
    }

    #[test]
    fn every_setting_names_itself_and_what_it_accepts_when_its_value_is_bad() {
        /// A setting, variables that make it bad, and what its message must say is accepted.
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            ("env", &[("SWITCHBOARD_ENV", "staging")], "`production`"),
            (
                "listen",
                &[("SWITCHBOARD_LISTEN", "localhost")],
                "0.0.0.0:8080",
            ),
            ("node_id", &[("SWITCHBOARD_NODE_ID", "bad id")], ""),
            (
                "metrics_listen",
                &[("SWITCHBOARD_METRICS_LISTEN", "9090")],
                "0.0.0.0:9090, or `off`",
            ),
            (
                "metrics_listen",
                &[
                    ("SWITCHBOARD_LISTEN", "127.0.0.1:9999"),
                    ("SWITCHBOARD_METRICS_LISTEN", "127.0.0.1:9999"),
                ],
                "other than listen",
            ),
            (
                "jwt_secret",
                &[
                    ("SWITCHBOARD_ENV", "production"),
                    ("SWITCHBOARD_JWT_SECRET", "short"),
                ],
                "32 bytes",
            ),
            (
                "max_message_bytes",
                &[("SWITCHBOARD_MAX_MESSAGE_BYTES", "100")],
                "1024 and",
            ),
            (
                "outbox_frames",
                &[("SWITCHBOARD_OUTBOX_FRAMES", "0")],
                "between 1 and",
            ),
            (
                "max_rooms_per_connection",
                &[("SWITCHBOARD_MAX_ROOMS_PER_CONNECTION", "0")],
                "between 1 and",
            ),
            (
                "max_members_per_room",
                &[("SWITCHBOARD_MAX_MEMBERS_PER_ROOM", "0")],
                "between 1 and",
            ),
            (
                "auth_timeout",
                &[("SWITCHBOARD_AUTH_TIMEOUT", "0s")],
                "at least 100ms",
            ),
            (
                "ping_interval",
                &[("SWITCHBOARD_PING_INTERVAL", "0s")],
                "at least 100ms",
            ),
            (
                "write_timeout",
                &[("SWITCHBOARD_WRITE_TIMEOUT", "10ms")],
                "at least 100ms",
            ),
            (
                "header_read_timeout",
                &[("SWITCHBOARD_HEADER_READ_TIMEOUT", "forever")],
                "",
            ),
            (
                "header_read_timeout",
                &[("SWITCHBOARD_HEADER_READ_TIMEOUT", "1ms")],
                "at least 100ms",
            ),
            (
                "idle_timeout",
                &[("SWITCHBOARD_IDLE_TIMEOUT", "1s")],
                "ping_interval",
            ),
            (
                "shutdown_timeout",
                &[("SWITCHBOARD_SHUTDOWN_TIMEOUT", "soon")],
                "a duration",
            ),
            (
                "subscription_linger",
                &[("SWITCHBOARD_SUBSCRIPTION_LINGER", "10")],
                "a duration",
            ),
            (
                "lease_ttl",
                &[("SWITCHBOARD_LEASE_TTL", "500ms")],
                "at least 1s",
            ),
            (
                "cors_origins",
                &[("SWITCHBOARD_CORS_ORIGINS", "ftp://x")],
                "https://",
            ),
            (
                "allowed_origins",
                &[
                    ("SWITCHBOARD_ENV", "production"),
                    ("SWITCHBOARD_JWT_SECRET", "Jq3x9Vb2LmT8wZ4kR7nY1pD6sF0gH5cA"),
                    ("SWITCHBOARD_CORS_ORIGINS", "https://app.example"),
                ],
                "must be set in production",
            ),
            (
                "worker_threads",
                &[("SWITCHBOARD_WORKER_THREADS", "2000")],
                "between 0 and",
            ),
            ("log_format", &[("SWITCHBOARD_LOG_FORMAT", "xml")], "`json`"),
            (
                "log_level",
                &[("SWITCHBOARD_LOG_LEVEL", " switchboard\u{fffd}=debuf")],
                "printable ASCII",
            ),
            (
                "user_signals",
                &[("SWITCHBOARD_USER_SIGNALS", "everyone")],
                "`shared_room`",
            ),
            (
                "user_signal_rate",
                &[("SWITCHBOARD_USER_SIGNAL_RATE", "-1")],
                "between 0 and 1000000",
            ),
            (
                "user_signal_burst",
                &[("SWITCHBOARD_USER_SIGNAL_BURST", "0")],
                "between 1 and 1000000",
            ),
            (
                "log_level",
                &[("SWITCHBOARD_LOG_LEVEL", "info,switchboard=loud")],
                "filter",
            ),
            (
                "redis.url",
                &[("SWITCHBOARD_REDIS_URL", "http://h:1")],
                "unsupported scheme",
            ),
            (
                "redis.prefix",
                &[("SWITCHBOARD_REDIS_PREFIX", "{p}")],
                "without braces",
            ),
            (
                "max_token_lifetime",
                &[("SWITCHBOARD_MAX_TOKEN_LIFETIME", "10s")],
                "at least 1m",
            ),
            (
                "registration",
                &[("SWITCHBOARD_REGISTRATION", "maybe")],
                "open or closed",
            ),
            (
                "database.url",
                &[("SWITCHBOARD_DATABASE_URL", "mysql://h/db")],
                "sqlite://PATH",
            ),
            (
                "database.pool_min",
                &[
                    ("SWITCHBOARD_DATABASE_POOL_MIN", "20"),
                    ("SWITCHBOARD_DATABASE_POOL_MAX", "5"),
                ],
                "database.pool_max",
            ),
            (
                "database.pool_max",
                &[("SWITCHBOARD_DATABASE_POOL_MAX", "0")],
                "between 1 and 1000",
            ),
            (
                "e2ee.register_rate",
                &[("SWITCHBOARD_E2EE_REGISTER_RATE", "-1")],
                "",
            ),
            (
                "e2ee.claim_rate",
                &[("SWITCHBOARD_E2EE_CLAIM_RATE", "1000001")],
                "between 0 and",
            ),
            (
                "e2ee.ticket_rate",
                &[("SWITCHBOARD_E2EE_TICKET_RATE", "many")],
                "",
            ),
            (
                "e2ee.max_content_bytes",
                &[("SWITCHBOARD_E2EE_MAX_CONTENT_BYTES", "1000000")],
                "between 16 and",
            ),
            (
                "sealing_key",
                &[
                    ("SWITCHBOARD_ENV", "production"),
                    ("SWITCHBOARD_JWT_SECRET", "Jq3x9Vb2LmT8wZ4kR7nY1pD6sF0gH5cA"),
                    ("SWITCHBOARD_SEALING_KEY", "short"),
                ],
                "at least 32 bytes",
            ),
            (
                "lockout_threshold",
                &[("SWITCHBOARD_LOCKOUT_THRESHOLD", "1001")],
                "between 0 and 1000",
            ),
            (
                "lockout_address_threshold",
                &[("SWITCHBOARD_LOCKOUT_ADDRESS_THRESHOLD", "100001")],
                "between 0 and 100000",
            ),
            (
                "lockout_duration",
                &[("SWITCHBOARD_LOCKOUT_DURATION", "0s")],
                "at least 1s",
            ),
            (
                "jwks.url",
                &[("SWITCHBOARD_JWKS_URL", "ftp://idp/jwks")],
                "https://",
            ),
            (
                "jwks.issuer",
                &[("SWITCHBOARD_JWKS_ISSUER", "https://idp")],
                "needs jwks.url",
            ),
            (
                "jwks.audience",
                &[("SWITCHBOARD_JWKS_AUDIENCE", "switchboard")],
                "needs jwks.url",
            ),
            (
                "jwks.refresh",
                &[("SWITCHBOARD_JWKS_REFRESH", "5s")],
                "at least 30s",
            ),
            (
                "tls.cert",
                &[("SWITCHBOARD_TLS_KEY", "/etc/switchboard/key.pem")],
                "with tls.key",
            ),
            (
                "tls.key",
                &[("SWITCHBOARD_TLS_CERT", "/etc/switchboard/cert.pem")],
                "with tls.cert",
            ),
            ("demo", &[("SWITCHBOARD_DEMO", "maybe")], "true or false"),
            (
                "data_key",
                &[("SWITCHBOARD_DATA_KEY", "c2hvcnQ=")],
                "32 random bytes",
            ),
            (
                "data_key_previous",
                &[
                    ("SWITCHBOARD_DATA_KEY", TEST_DATA_KEY),
                    ("SWITCHBOARD_DATA_KEY_PREVIOUS", "not base64!"),
                ],
                "not base64",
            ),
            (
                "retention_days",
                &[("SWITCHBOARD_RETENTION_DAYS", "0")],
                "between 1 and 3650",
            ),
            (
                "retention_interval",
                &[("SWITCHBOARD_RETENTION_INTERVAL", "10ms")],
                "at least 1s",
            ),
            (
                "resume_window",
                &[("SWITCHBOARD_RESUME_WINDOW", "2h")],
                "at most 1h",
            ),
            (
                "tls.reload",
                &[("SWITCHBOARD_TLS_RELOAD", "10ms")],
                "at least 100ms",
            ),
            (
                "msg_rate",
                &[("SWITCHBOARD_MSG_RATE", "2000000")],
                "between 0 and 1000000",
            ),
            (
                "msg_burst",
                &[("SWITCHBOARD_MSG_BURST", "0")],
                "between 1 and 1000000",
            ),
            (
                "max_connections",
                &[("SWITCHBOARD_MAX_CONNECTIONS", "many")],
                "between 0 and 10000000",
            ),
            (
                "user_connections",
                &[("SWITCHBOARD_USER_CONNECTIONS", "2000000")],
                "between 0 and 1000000",
            ),
            (
                "user_msg_rate",
                &[("SWITCHBOARD_USER_MSG_RATE", "fast")],
                "between 0 and 1000000",
            ),
            (
                "user_msg_burst",
                &[("SWITCHBOARD_USER_MSG_BURST", "0")],
                "between 1 and 1000000",
            ),
            (
                "ip_connections",
                &[("SWITCHBOARD_IP_CONNECTIONS", "1000001")],
                "between 0 and 1000000",
            ),
            (
                "max_unauthenticated",
                &[("SWITCHBOARD_MAX_UNAUTHENTICATED", "-3")],
                "between 0 and 10000000",
            ),
            (
                "ip_unauthenticated",
                &[("SWITCHBOARD_IP_UNAUTHENTICATED", "x")],
                "between 0 and 1000000",
            ),
            (
                "ip_upgrade_rate",
                &[("SWITCHBOARD_IP_UPGRADE_RATE", "-1")],
                "between 0 and 1000000000",
            ),
            (
                "ip_upgrade_burst",
                &[("SWITCHBOARD_IP_UPGRADE_BURST", "0")],
                "between 1 and 1000000",
            ),
            (
                "auth_rate",
                &[("SWITCHBOARD_AUTH_RATE", "1e9")],
                "between 0 and 1000000",
            ),
            (
                "auth_burst",
                &[("SWITCHBOARD_AUTH_BURST", "0")],
                "between 1 and 1000000",
            ),
            (
                "trusted_proxies",
                &[("SWITCHBOARD_TRUSTED_PROXIES", "10.0.0.0/8,proxy.local")],
                "CIDR like 10.0.0.0/8",
            ),
            (
                "turn.secret",
                &[("SWITCHBOARD_TURN_SECRET", "only-a-secret")],
                "needs turn.uris",
            ),
            (
                "turn.uris",
                &[("SWITCHBOARD_TURN_URIS", "http://turn.example.com")],
                "turn:turn.example.com:3478",
            ),
            (
                "turn.ttl",
                &[("SWITCHBOARD_TURN_TTL", "soon")],
                "a duration such as 24h, or seconds",
            ),
            (
                "stun_uris",
                &[("SWITCHBOARD_STUN_URIS", "turn:stun.example.com")],
                "stun: or stuns: URI",
            ),
            (
                "calls.token_ttl",
                &[("SWITCHBOARD_CALLS_TOKEN_TTL", "30s")],
                "between 1m and",
            ),
            (
                "calls.session_timeout",
                &[("SWITCHBOARD_CALLS_SESSION_TIMEOUT", "2d")],
                "between 10s and",
            ),
            (
                "calls.ring_timeout",
                &[("SWITCHBOARD_CALLS_RING_TIMEOUT", "0s")],
                "between 1s and",
            ),
            (
                "calls.ring_timeout",
                &[
                    ("SWITCHBOARD_CALLS_RING_TIMEOUT", "5m"),
                    ("SWITCHBOARD_CALLS_SESSION_TIMEOUT", "1m"),
                ],
                "shorter than calls.session_timeout",
            ),
            (
                "calls.ip_rate",
                &[("SWITCHBOARD_CALLS_IP_RATE", "-1")],
                "between 0 and 1000000",
            ),
            (
                "calls.ip_burst",
                &[("SWITCHBOARD_CALLS_IP_BURST", "0")],
                "between 1 and 1000000",
            ),
            (
                "calls.code_rate",
                &[("SWITCHBOARD_CALLS_CODE_RATE", "many")],
                "between 0 and 1000000",
            ),
            (
                "calls.code_burst",
                &[("SWITCHBOARD_CALLS_CODE_BURST", "0")],
                "between 1 and 1000000",
            ),
        ];
        let covered: Vec<&str> = cases.iter().map(|(path, _, _)| *path).collect();
        for path in every_setting() {
            assert!(
                covered.contains(&path.as_str()),
                "no bad-value case for {path}"
            );
        }
        for (path, vars, accepted) in cases {
            let message = Config::load(None, &env(vars)).unwrap_err().to_string();
            let label = setting_label(path);
            assert!(message.starts_with(&label), "{path}: {message}");
            assert!(message.contains(accepted), "{path}: {message}");
        }
    }

    #[test]
    fn counts_name_their_range_for_wrong_types_and_out_of_range_values() {
        for (setting, min, max) in RANGES.iter().chain(calls::RANGES) {
            let var = env_name(setting);
            let above = (max + 1).to_string();
            for value in [
                "ten",
                "-1",
                "1.5",
                "99999999999999999999999",
                above.as_str(),
            ] {
                let e = Config::load(None, &env(&[(&var, value)]))
                    .unwrap_err()
                    .to_string();
                assert!(e.starts_with(&setting_label(setting)), "{var}={value}: {e}");
                assert!(
                    e.contains(&format!("between {min} and {max}")),
                    "{var}={value}: {e}"
                );
            }
        }
    }

    #[test]
    fn sections_follow_one_naming_rule_in_the_file_and_the_environment() {
        let dir = std::env::temp_dir().join(format!("sb-sections-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "[redis]\nurl = \"redis://a:1\"\n").unwrap();
        let c = Config::load(Some(&path), &env(&[])).unwrap();
        assert_eq!(c.redis.url.unwrap().expose(), "redis://a:1");
        assert_eq!(
            c.redis.prefix, "sb",
            "the section's other settings keep their defaults"
        );
        std::fs::write(&path, "redis_url = \"redis://b:2\"\nredis_prefix = \"x\"\n").unwrap();
        let c = Config::load(Some(&path), &env(&[("SWITCHBOARD_REDIS_PREFIX", "y")])).unwrap();
        assert_eq!(
            (c.redis.url.unwrap().expose(), c.redis.prefix.as_str()),
            ("redis://b:2", "y")
        );
        let c = Config::load(Some(&path), &env(&[("SWITCHBOARD_REDIS_URL", "")])).unwrap();
        assert!(
            c.redis.url.is_none(),
            "an empty variable unsets an optional setting"
        );
        for (text, named) in [
            ("[redis]\nnope = 1\n", "redis.nope (SWITCHBOARD_REDIS_NOPE)"),
            ("redis_nope = 1\n", "redis_nope"),
            ("[nosuch]\nurl = 1\n", "nosuch"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Config::load(Some(&path), &env(&[]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(named), "{text}: {e}");
        }
        for var in [
            "SWITCHBOARD_REDIS_NOPE",
            "SWITCHBOARD_REDIS",
            "SWITCHBOARD_NOSUCH_URL",
        ] {
            let e = Config::load(None, &env(&[(var, "1")]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(var), "{var}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn predecessor_variables_are_recognised_but_not_applied() {
        let vars = env(&[
            ("PORT", "9000"),
            ("JWT_SECRET_KEY", "k"),
            ("UNRELATED", "x"),
        ]);
        let found: Vec<_> = predecessor_variables(&vars)
            .map(|p| (p.variable, p.replacement))
            .collect();
        assert_eq!(
            found,
            [
                ("PORT", "SWITCHBOARD_LISTEN"),
                ("JWT_SECRET_KEY", "SWITCHBOARD_JWT_SECRET")
            ]
        );
        // Every replacement that is a variable today is a setting the loader knows.
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        for p in PREDECESSOR_VARIABLES {
            if let Some(var) = p.replacement.strip_prefix(ENV_PREFIX) {
                // "SWITCHBOARD_X (a note)" names the variable first.
                let var = var.split_whitespace().next().unwrap_or_default();
                let flat = var.to_ascii_lowercase();
                assert!(
                    locate(&defaults, &flat).is_some(),
                    "{} -> {var}",
                    p.variable
                );
            }
        }
        let c = Config::load(None, &vars).unwrap();
        assert_eq!(c.listen.port(), 8080);
    }

    #[test]
    fn weak_secrets_are_recognized_without_being_repeated() {
        let weak = [
            "your-super-secret-key-change-this-in-production-256-bits",
            "your-jwt-secret-key",
            "your-256-bit-secret-key-here",
            "YOUR-JWT-SECRET-KEY",
            &"a".repeat(40),
            "abababababababababababababababababababab",
            "0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdef0123",
            "1111111111222222222233333333334444444444",
            "my-app-changeme-secret-with-enough-bytes",
            "REPLACE-ME-placeholder-jwt-secret",
            "ReplaceMe-with-32-random-bytes-from-openssl",
            "a-placeholder-value-the-operator-sets-0123",
        ];
        for secret in weak {
            assert!(weakness(secret).is_some(), "{secret}");
        }
        let strong = [
            "Jq3x9Vb2LmT8wZ4kR7nY1pD6sF0gH5cA",
            "2c1f9d7e4b8a06f35e9d2c7b1a4f8e6d0c3b5a7f9e1d2c4b6a8f0e3d5c7b9a1f",
            "q8ZP-fm1X_t6wN0rVb3JyK7cE2sLd9Ah",
        ];
        for secret in strong {
            assert_eq!(weakness(secret), None, "{secret}");
        }
    }

    #[test]
    fn production_refuses_weak_secrets_naming_the_setting_and_never_the_value() {
        let base = [
            ("SWITCHBOARD_ENV", "production"),
            ("SWITCHBOARD_DATA_KEY", TEST_DATA_KEY),
            ("SWITCHBOARD_CORS_ORIGINS", "https://app.example"),
            ("SWITCHBOARD_ALLOWED_ORIGINS", "https://app.example"),
        ];
        let strong = "Jq3x9Vb2LmT8wZ4kR7nY1pD6sF0gH5cA";
        let placeholder = "your-super-secret-key-change-this-in-production-256-bits";
        let run = "z".repeat(40);
        let cases = [
            ("jwt_secret", vec![("SWITCHBOARD_JWT_SECRET", placeholder)]),
            ("jwt_secret", vec![("SWITCHBOARD_JWT_SECRET", run.as_str())]),
            (
                "turn.secret",
                vec![
                    ("SWITCHBOARD_JWT_SECRET", strong),
                    ("SWITCHBOARD_TURN_SECRET", "your-jwt-secret-key"),
                ],
            ),
            (
                "sealing_key",
                vec![
                    ("SWITCHBOARD_JWT_SECRET", strong),
                    (
                        "SWITCHBOARD_SEALING_KEY",
                        "0123456789abcdef0123456789abcdef",
                    ),
                ],
            ),
        ];
        for (setting, vars) in cases {
            let vars: Vec<_> = base.iter().copied().chain(vars.iter().copied()).collect();
            let e = Config::load(None, &env(&vars)).unwrap_err().to_string();
            assert!(e.contains(setting), "{setting}: {e}");
            for (_, value) in &vars[base.len()..] {
                assert!(!e.contains(value), "the message repeats a secret: {e}");
            }
        }
    }

    #[test]
    fn development_with_the_built_in_secret_listens_only_on_loopback() {
        let open = env(&[("SWITCHBOARD_LISTEN", "0.0.0.0:8080")]);
        let e = Config::load(None, &open).unwrap_err().to_string();
        assert!(
            e.contains("SWITCHBOARD_LISTEN") && e.contains("SWITCHBOARD_JWT_SECRET"),
            "{e}"
        );
        let v6 = env(&[("SWITCHBOARD_LISTEN", "[::]:8080")]);
        assert!(Config::load(None, &v6).is_err());
        for ok in [
            vec![("SWITCHBOARD_LISTEN", "127.0.0.1:8080")],
            vec![("SWITCHBOARD_LISTEN", "[::1]:8080")],
            vec![
                ("SWITCHBOARD_LISTEN", "0.0.0.0:8080"),
                ("SWITCHBOARD_JWT_SECRET", "a development secret of my own"),
            ],
        ] {
            assert!(Config::load(None, &env(&ok)).is_ok(), "{ok:?}");
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
        let strong = "Jq3x9Vb2LmT8wZ4kR7nY1pD6sF0gH5cA".to_owned();
        let without_data_key = env(&[
            ("SWITCHBOARD_ENV", "production"),
            ("SWITCHBOARD_JWT_SECRET", &strong),
            ("SWITCHBOARD_CORS_ORIGINS", "https://app.example"),
            ("SWITCHBOARD_ALLOWED_ORIGINS", "*"),
        ]);
        let e = Config::load(None, &without_data_key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("SWITCHBOARD_DATA_KEY"), "{e}");
        let ok = env(&[
            ("SWITCHBOARD_ENV", "production"),
            ("SWITCHBOARD_DATA_KEY", TEST_DATA_KEY),
            ("SWITCHBOARD_JWT_SECRET", &strong),
            ("SWITCHBOARD_CORS_ORIGINS", "https://app.example"),
            ("SWITCHBOARD_ALLOWED_ORIGINS", "*"),
        ]);
        assert!(Config::load(None, &ok).is_ok());
        // Origins unset: refused in production, any in development.
        let unset = env(&[
            ("SWITCHBOARD_ENV", "production"),
            ("SWITCHBOARD_DATA_KEY", TEST_DATA_KEY),
            ("SWITCHBOARD_JWT_SECRET", &strong),
        ]);
        let e = Config::load(None, &unset).unwrap_err().to_string();
        assert!(e.contains("SWITCHBOARD_CORS_ORIGINS"), "{e}");
        let dev = Config::load(None, &env(&[])).unwrap();
        assert_eq!(dev.cors_origins(), ["*"]);
        assert!(dev.origin_allowed("https://anything.example"));
        let listed = Config {
            allowed_origins: vec!["https://app.example".into()],
            ..dev
        };
        assert!(listed.origin_allowed("https://APP.example"));
        assert!(!listed.origin_allowed("https://evil.example"));
        assert!(!listed.origin_allowed("https://app.example.evil.example"));
        assert!(
            !listed.origin_allowed("http://app.example"),
            "another scheme"
        );
        // Written with a trailing slash or a default port, an origin still matches what
        // browsers send (and the other way round).
        let written = Config {
            allowed_origins: vec!["https://app.example:443/".into(), "http://x.example".into()],
            cors_origins: vec![
                "https://App.example/".into(),
                "http://localhost:8080".into(),
            ],
            ..listed
        };
        assert!(written.origin_allowed("https://app.example"));
        assert!(written.origin_allowed("http://x.example:80"));
        assert!(!written.origin_allowed("https://app.example:8443"));
        assert_eq!(
            written.cors_origins(),
            ["https://app.example", "http://localhost:8080"]
        );
        for bad in [
            "https://app.example/path",
            "https://",
            "https://a@b",
            "https://x?y",
        ] {
            let e = Config::load(None, &env(&[("SWITCHBOARD_ALLOWED_ORIGINS", bad)]));
            let e = e.unwrap_err().to_string();
            assert!(e.contains("allowed_origins"), "{bad}: {e}");
        }
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
