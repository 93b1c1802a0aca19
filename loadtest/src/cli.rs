//! The command line: one subcommand per scenario plus `floor`, with hard caps on every count,
//! rate and duration so that no run can grow without bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::conn::Auth;
use crate::report::Format;
use crate::target::Target;
use crate::token::DEV_SECRET;

pub const MAX_CLIENTS: usize = 20_000;
pub const MAX_RATE: f64 = 500_000.0;
pub const MAX_SECS: f64 = 600.0;
pub const MAX_ROUNDS: u32 = 10;
pub const MAX_STEPS: u32 = 40;
pub const MAX_ROOM: usize = 64;

#[derive(Parser)]
#[command(name = "switchboard-loadtest", version, about = "Load, latency and failover benchmarks for Switchboard (loopback only).")]
pub struct Cli {
    /// Worker threads of this tool's runtime (default: one per core).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: Option<u16>,
    /// Hard limit on this process's lifetime, seconds.
    #[arg(long, global = true, default_value = "3600", value_parser = secs)]
    pub deadline: Duration,
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// P pairs: A sends B one ~3 KB offer, then ~250 B candidates, at a total rate.
    Pairs(PairsArgs),
    /// Mesh rooms of K members, every member broadcasting: fan-out.
    Rooms(RoomsArgs),
    /// Step the offered rate up to find the highest that holds p99 under a bound with no loss.
    Ramp(RampArgs),
    /// N clients connect, authenticate and join as fast as possible.
    Storm(StormArgs),
    /// Hold N authenticated idle connections and read the server's RSS per connection.
    Idle(IdleArgs),
    /// SIGKILL one node of a cluster under load; time until its clients are back.
    Kill(KillArgs),
    /// Run the floor relay (the reference every figure is compared to).
    Floor(FloorArgs),
}

/// Systems under test and output options, shared by every scenario.
#[derive(Args, Serialize)]
pub struct Common {
    /// Switchboard node URL, e.g. ws://127.0.0.1:13001; repeat for a cluster.
    #[arg(long = "target")]
    pub targets: Vec<Target>,
    /// Floor URL; runs side by side with --target, interleaved, and ratios are printed.
    #[arg(long = "floor")]
    pub floors: Vec<Target>,
    /// Pid of a switchboard node (repeat): CPU and RSS are read from /proc.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Pid of the floor process (repeat).
    #[arg(long = "floor-pid")]
    pub floor_pids: Vec<u32>,
    /// Pid of a helper such as redis-server, measured separately (repeat).
    #[arg(long = "aux-pid")]
    pub aux_pids: Vec<u32>,
    /// HS256 secret the tokens are signed with (the server's dev default if unset).
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", default_value = DEV_SECRET, hide_env_values = true)]
    #[serde(skip)]
    pub jwt_secret: String,
    /// Repeat the run; systems alternate within each round.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_ROUNDS)))]
    pub rounds: u32,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// What to print on stdout.
    #[arg(long, value_enum, default_value = "table")]
    #[serde(skip)]
    pub format: Format,
    /// A free-form label stored in the JSON.
    #[arg(long)]
    pub label: Option<String>,
}

/// The timed-traffic knobs.
#[derive(Args, Serialize, Clone)]
pub struct LoadArgs {
    /// Timed signals per second, all senders together.
    #[arg(long, default_value = "1000", value_parser = rate)]
    pub rate: f64,
    /// Sending time per run, seconds.
    #[arg(long, default_value = "5", value_parser = secs)]
    pub duration: Duration,
    /// Longest wait for stragglers after sending stops, seconds.
    #[arg(long, default_value = "2", value_parser = secs)]
    pub drain: Duration,
    /// How clients authenticate.
    #[arg(long, value_enum, default_value = "query")]
    pub auth: Auth,
}

#[derive(Args, Serialize)]
pub struct PairsArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Number of pairs.
    #[arg(long, default_value = "10", value_parser = clap::value_parser!(u32).range(1..=(MAX_CLIENTS as i64 / 2)))]
    pub pairs: u32,
    /// Keep both members of a pair on one node even when several are given.
    #[arg(long)]
    pub same_node: bool,
}

#[derive(Args, Serialize)]
pub struct RoomsArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Number of rooms.
    #[arg(long, default_value = "10", value_parser = clap::value_parser!(u32).range(1..=(MAX_CLIENTS as i64)))]
    pub rooms: u32,
    /// Members per room (the server's cap is 10).
    #[arg(long, default_value = "8", value_parser = clap::value_parser!(u32).range(2..=(MAX_ROOM as i64)))]
    pub room_size: u32,
}

/// What `ramp` steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Shape {
    Pairs,
    Rooms,
}

#[derive(Args, Serialize)]
pub struct RampArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, value_enum, default_value = "pairs")]
    pub shape: Shape,
    /// Pairs (shape pairs).
    #[arg(long, default_value = "50", value_parser = clap::value_parser!(u32).range(1..=(MAX_CLIENTS as i64 / 2)))]
    pub pairs: u32,
    /// Rooms (shape rooms).
    #[arg(long, default_value = "10", value_parser = clap::value_parser!(u32).range(1..=(MAX_CLIENTS as i64)))]
    pub rooms: u32,
    /// Members per room (shape rooms).
    #[arg(long, default_value = "8", value_parser = clap::value_parser!(u32).range(2..=(MAX_ROOM as i64)))]
    pub room_size: u32,
    /// Keep pairs on one node.
    #[arg(long)]
    pub same_node: bool,
    /// First offered rate, signals/s.
    #[arg(long, default_value = "1000", value_parser = rate)]
    pub start_rate: f64,
    /// Rate multiplier between steps until the first failure.
    #[arg(long, default_value = "1.5", value_parser = factor)]
    pub factor: f64,
    /// Highest rate tried.
    #[arg(long, default_value = "200000", value_parser = rate)]
    pub max_rate: f64,
    /// Bisection steps between the last pass and the first failure.
    #[arg(long, default_value = "2", value_parser = clap::value_parser!(u32).range(0..=10))]
    pub bisect: u32,
    /// Most steps per system.
    #[arg(long, default_value = "16", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_STEPS)))]
    pub max_steps: u32,
    /// Sending time per step, seconds.
    #[arg(long, default_value = "3", value_parser = secs)]
    pub step_duration: Duration,
    /// A step passes when its p99 is at most this many milliseconds (and nothing is lost).
    #[arg(long, default_value = "50", value_parser = positive)]
    pub p99_ms: f64,
    #[arg(long, default_value = "2", value_parser = secs)]
    pub drain: Duration,
    #[arg(long, value_enum, default_value = "query")]
    pub auth: Auth,
}

#[derive(Args, Serialize)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,
    /// Clients to connect.
    #[arg(long, default_value = "2000", value_parser = clap::value_parser!(u32).range(1..=(MAX_CLIENTS as i64)))]
    pub clients: u32,
    /// Connection attempts in flight at once.
    #[arg(long, default_value = "256", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Members per room; 0 connects to /ws and joins nothing.
    #[arg(long, default_value = "10", value_parser = clap::value_parser!(u32).range(0..=(MAX_ROOM as i64)))]
    pub room_size: u32,
    /// How clients authenticate (the message flow by default).
    #[arg(long, value_enum, default_value = "message")]
    pub auth: Auth,
    /// Seconds to hold the connections after the last join.
    #[arg(long, default_value = "0", value_parser = secs_or_zero)]
    pub hold: Duration,
}

#[derive(Args, Serialize)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value = "1000", value_parser = clap::value_parser!(u32).range(1..=(MAX_CLIENTS as i64)))]
    pub clients: u32,
    #[arg(long, default_value = "256", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Members per room; 0 (default) holds plain authenticated /ws connections.
    #[arg(long, default_value = "0", value_parser = clap::value_parser!(u32).range(0..=(MAX_ROOM as i64)))]
    pub room_size: u32,
    #[arg(long, value_enum, default_value = "query")]
    pub auth: Auth,
    /// Seconds between the last join and the RSS reading.
    #[arg(long, default_value = "2", value_parser = secs_or_zero)]
    pub settle: Duration,
    /// Seconds to keep holding afterwards (RSS and CPU are read again at the end).
    #[arg(long, default_value = "3", value_parser = secs_or_zero)]
    pub hold: Duration,
}

#[derive(Args, Serialize)]
pub struct KillArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub load: LoadArgs,
    #[arg(long, default_value = "20", value_parser = clap::value_parser!(u32).range(1..=(MAX_CLIENTS as i64 / 2)))]
    pub pairs: u32,
    /// Keep both members of a pair on one node (needed when the nodes share no state).
    #[arg(long)]
    pub same_node: bool,
    /// Seconds into the run at which the node is killed.
    #[arg(long, default_value = "2", value_parser = secs)]
    pub kill_after: Duration,
    /// Pid of the node to SIGKILL.
    #[arg(long)]
    pub kill_pid: u32,
    /// Which --target (0-based) that pid serves.
    #[arg(long, default_value = "0")]
    pub kill_node: usize,
}

#[derive(Args)]
pub struct FloorArgs {
    /// Loopback address to listen on; repeat for several ports sharing one set of rooms.
    #[arg(long, default_value = "127.0.0.1:13900")]
    pub listen: Vec<SocketAddr>,
}

fn parse_f64(s: &str) -> Result<f64, String> {
    s.parse::<f64>().map_err(|e| e.to_string()).and_then(|x| if x.is_finite() { Ok(x) } else { Err("not finite".into()) })
}

fn bounded(s: &str, lo: f64, hi: f64, lo_inclusive: bool) -> Result<f64, String> {
    let x = parse_f64(s)?;
    let above = if lo_inclusive { x >= lo } else { x > lo };
    if above && x <= hi { Ok(x) } else { Err(format!("must be in {}{lo}, {hi}]", if lo_inclusive { "[" } else { "(" })) }
}

fn secs(s: &str) -> Result<Duration, String> {
    bounded(s, 0.0, MAX_SECS, false).map(Duration::from_secs_f64)
}

fn secs_or_zero(s: &str) -> Result<Duration, String> {
    bounded(s, 0.0, MAX_SECS, true).map(Duration::from_secs_f64)
}

fn rate(s: &str) -> Result<f64, String> {
    bounded(s, 0.0, MAX_RATE, false)
}

fn factor(s: &str) -> Result<f64, String> {
    bounded(s, 1.01, 10.0, true)
}

fn positive(s: &str) -> Result<f64, String> {
    bounded(s, 0.0, 600_000.0, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("lt").chain(args.iter().copied()))
    }

    #[test]
    fn caps_are_enforced() {
        assert!(parse(&["pairs", "--target", "ws://127.0.0.1:1"]).is_ok());
        assert!(parse(&["pairs", "--target", "ws://10.1.2.3:1"]).is_err());
        assert!(parse(&["pairs", "--rate", "1e9"]).is_err());
        assert!(parse(&["pairs", "--duration", "601"]).is_err());
        assert!(parse(&["pairs", "--duration", "0"]).is_err());
        assert!(parse(&["storm", "--clients", "20001"]).is_err());
        assert!(parse(&["ramp", "--max-steps", "41"]).is_err());
        assert!(parse(&["pairs", "--rounds", "11"]).is_err());
        assert!(parse(&["idle", "--hold", "0"]).is_ok());
    }
}
