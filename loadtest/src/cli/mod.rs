//! The command line: one subcommand per scenario plus `floor`, with hard caps on every count,
//! rate and duration so that no run can grow without bound. The per-scenario arguments are
//! in `scenarios`, the bounded value parsers in `parse`.

mod parse;
mod scenarios;

pub use scenarios::{IdleArgs, KillArgs, PairsArgs, RampArgs, RoomsArgs, Shape, StormArgs};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::conn::Auth;
use crate::report::Format;
use crate::target::Target;
use crate::token::DEV_SECRET;
use parse::{lifetime, rate, secs};

pub const MAX_CLIENTS: usize = 20_000;
pub const MAX_RATE: f64 = 1_000_000.0;
pub const MAX_SECS: f64 = 600.0;
pub const MAX_ROUNDS: u32 = 10;
pub const MAX_STEPS: u32 = 40;
pub const MAX_ROOM: usize = 64;

#[derive(Parser)]
#[command(
    name = "switchboard-loadtest",
    version,
    about = "Load, latency and failover benchmarks for Switchboard (loopback only)."
)]
pub struct Cli {
    /// Worker threads of this tool's runtime (default: one per core).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: Option<u16>,
    /// Hard limit on this process's lifetime, seconds.
    #[arg(long, global = true, default_value = "3600", value_parser = lifetime)]
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
    #[serde(serialize_with = "parse::as_secs")]
    pub duration: Duration,
    /// Longest wait for stragglers after sending stops, seconds.
    #[arg(long, default_value = "2", value_parser = secs)]
    #[serde(serialize_with = "parse::as_secs")]
    pub drain: Duration,
    /// How clients authenticate.
    #[arg(long, value_enum, default_value = "query")]
    pub auth: Auth,
}

#[derive(Args)]
pub struct FloorArgs {
    /// Loopback address to listen on; repeat for several ports sharing one set of rooms.
    #[arg(long, default_value = "127.0.0.1:13900")]
    pub listen: Vec<SocketAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("lt").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
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
