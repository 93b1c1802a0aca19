//! The `switchboard` command: `serve` (the default), `migrate`, `user ...`, `apikey ...` and
//! `token mint`.

mod cli;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard::auth::{self, Tokens};
use switchboard::config::{self, Config, Environment};
use switchboard::protocol::{RoomId, UserId};
use switchboard::store::{self, PoolSize, Store};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "A WebRTC signaling relay cluster"
)]
struct Cli {
    /// A TOML config file (settings as in README.md; `SWITCHBOARD_*` variables override it).
    #[arg(long, env = "SWITCHBOARD_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (the default).
    Serve,
    /// Create the configured database if it is an SQLite file, apply the migrations it lacks,
    /// then exit.
    Migrate,
    /// Account tools.
    User {
        #[command(subcommand)]
        command: cli::UserCommand,
    },
    /// API keys, with which applications sign their own tokens.
    Apikey {
        #[command(subcommand)]
        command: cli::ApiKeyCommand,
    },
    /// Data at rest: re-sealing encrypted columns under a new data key.
    Data {
        #[command(subcommand)]
        command: cli::DataCommand,
    },
    /// Token tools.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print an HS256 token signed with the configured secret.
    Mint {
        /// User id (the `sub` claim).
        #[arg(long)]
        user: String,
        /// Display name (the `name` claim).
        #[arg(long)]
        name: String,
        /// A room or `prefix*` pattern the token may join; repeat for more. None = any room.
        #[arg(long = "room")]
        rooms: Vec<String>,
        /// Lifetime, e.g. `15m`, `1h`, `7d`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Give the token the `admin` role.
        #[arg(long)]
        admin: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let command = cli.command.unwrap_or(Command::Serve);
    let config = match Config::load(cli.config.as_deref(), &env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("switchboard: {e}");
            for predecessor in config::predecessor_variables(&env) {
                eprintln!("switchboard: note: {}", predecessor.warning());
            }
            return ExitCode::from(2);
        }
    };
    if !matches!(command, Command::Serve) {
        for predecessor in config::predecessor_variables(&env) {
            eprintln!("switchboard: warning: {}", predecessor.warning());
        }
    }
    let result = match command {
        Command::Serve => serve(config, &env),
        Command::Migrate => migrate(&config),
        Command::User { command } => cli::user(&config, command),
        Command::Apikey { command } => cli::apikey(&config, command),
        Command::Data { command } => cli::data(&config, command),
        Command::Token {
            command:
                TokenCommand::Mint {
                    user,
                    name,
                    rooms,
                    ttl,
                    admin,
                },
        } => mint(&config, &user, &name, rooms, ttl, admin),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Certificate files refused at start: a configuration error, as above.
        Err(e) if e.downcast_ref::<switchboard::tls::TlsError>().is_some() => {
            eprintln!("switchboard: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn mint(
    config: &Config,
    user: &str,
    name: &str,
    rooms: Vec<String>,
    ttl: Duration,
    admin: bool,
) -> anyhow::Result<()> {
    let user = UserId::parse(user)?;
    anyhow::ensure!(
        !name.is_empty() && name.chars().count() <= 128,
        "--name must be 1-128 characters"
    );
    let max = config.max_token_lifetime;
    anyhow::ensure!(
        ttl >= Duration::from_secs(1) && ttl <= max,
        "--ttl must be between 1s and max_token_lifetime ({})",
        humantime::format_duration(max)
    );
    for room in &rooms {
        let base = room.strip_suffix('*').unwrap_or(room);
        anyhow::ensure!(
            base.is_empty() || RoomId::parse(base).is_ok(),
            "--room {room:?} is not a room name or prefix* pattern"
        );
    }
    let mut claims = auth::claims(&user, name, ttl);
    claims.rooms = (!rooms.is_empty()).then_some(rooms);
    claims.role = admin.then(|| "admin".to_owned());
    println!(
        "{}",
        Tokens::new(config.jwt_secret.expose().as_bytes()).mint(&claims)
    );
    Ok(())
}

/// How to run this binary again, as it was started: `cargo run --release --` under cargo,
/// the program's path otherwise.
fn this_command(env: &HashMap<String, String>) -> String {
    if env.contains_key("CARGO") {
        let profile = if cfg!(debug_assertions) {
            ""
        } else {
            " --release"
        };
        return format!("cargo run{profile} --");
    }
    std::env::args()
        .next()
        .unwrap_or_else(|| "switchboard".into())
}

fn migrate(config: &Config) -> anyhow::Result<()> {
    let url = config.database.url.expose();
    let shown = store::redact(url);
    let size = PoolSize { min: 0, max: 1 };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let applied = runtime.block_on(async {
        let store = Store::connect(url, size).await?;
        store.migrate().await?;
        let applied = store.applied_migrations().await;
        store.close().await;
        applied
    });
    let applied = applied.with_context(|| format!("database {shown}"))?;
    let latest = applied.last().copied().unwrap_or(0);
    println!(
        "database {shown} ({} migrations applied, latest {latest})",
        applied.len()
    );
    Ok(())
}

fn serve(config: Config, env: &HashMap<String, String>) -> anyhow::Result<()> {
    switchboard::telemetry::init(&config);
    for predecessor in config::predecessor_variables(env) {
        tracing::warn!(variable = predecessor.variable, "{}", predecessor.warning());
    }
    // Every connection is a file descriptor: lift the soft limit to the hard one.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        let tls = switchboard::tls::Tls::load(&config.tls)?;
        let listeners = switchboard::app::Listeners::bind(&config)?.with_tls(tls);
        let addr = listeners.public.local_addr()?;
        let (http, ws) = if config.tls.enabled() {
            ("https", "wss")
        } else {
            ("http", "ws")
        };
        let metrics = match &listeners.metrics {
            Some(listener) => format!("http://{}/metrics", listener.local_addr()?),
            None => "off".to_owned(),
        };
        let mode = if config.redis.url.is_some() {
            "Redis cluster"
        } else {
            "standalone, in-process bus"
        };
        tracing::info!(%addr, %metrics, mode, env = ?config.env, tls = config.tls.enabled(), "switchboard listening");
        if config.env == Environment::Production
            && !config.tls.enabled()
            && !addr.ip().is_loopback()
        {
            tracing::info!(%addr, "plain HTTP on an address other machines reach: a TLS-terminating proxy (load balancer, ingress) is expected in front; set SWITCHBOARD_TLS_CERT and SWITCHBOARD_TLS_KEY to serve TLS here instead");
        }
        if config.env == Environment::Development {
            let command = this_command(env);
            eprintln!("switchboard listening on {http}://{addr} ({mode}, development mode)");
            eprintln!("  WebSocket: {ws}://{addr}/ws/{{room}}   health: {http}://{addr}/health");
            eprintln!("  metrics: {metrics}");
            eprintln!("  get a token: {command} token mint --user alice --name Alice");
            eprintln!("  (token mint reads the same settings as this node: its SWITCHBOARD_* variables and --config)");
        }
        // The drain is bounded by `shutdown_timeout`, and the node stops shortly after it.
        switchboard::app::run(config, listeners, shutdown).await
    })
}

/// Resolves on SIGTERM or ctrl-c. The handlers are installed before it returns, so a signal
/// that arrives at any time after the call is seen.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutdown signal received");
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received");
    })
}
