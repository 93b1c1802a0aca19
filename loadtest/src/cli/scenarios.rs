//! Arguments of each scenario subcommand.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::parse::{self, factor, positive, rate, secs, secs_or_zero};
use super::{Common, LoadArgs, MAX_CLIENTS, MAX_ROOM, MAX_STEPS};
use crate::conn::Auth;

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
    /// Reconnect and re-join when the server closes a connection or asks clients to reconnect
    /// (a drain: a rolling restart behind a load balancer); reports the reconnects.
    #[arg(long)]
    pub reconnect: bool,
    /// With `--reconnect`: resume the session (`resume` with the last `seq` received, on
    /// whichever node the reconnect reaches) instead of authenticating afresh; a refused resume
    /// connects afresh. Needs a server with `resume_window` on.
    #[arg(long, requires = "reconnect")]
    pub resume: bool,
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
#[serde(rename_all = "lowercase")]
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
    #[serde(serialize_with = "parse::as_secs")]
    pub step_duration: Duration,
    /// A step passes when its p99 is at most this many milliseconds (and nothing is lost).
    #[arg(long, default_value = "50", value_parser = positive)]
    pub p99_ms: f64,
    #[arg(long, default_value = "2", value_parser = secs)]
    #[serde(serialize_with = "parse::as_secs")]
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
    #[serde(serialize_with = "parse::as_secs")]
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
    #[serde(serialize_with = "parse::as_secs")]
    pub settle: Duration,
    /// Seconds to keep holding afterwards (RSS and CPU are read again at the end).
    #[arg(long, default_value = "3", value_parser = secs_or_zero)]
    #[serde(serialize_with = "parse::as_secs")]
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
    #[serde(serialize_with = "parse::as_secs")]
    pub kill_after: Duration,
    /// Pid of the node to SIGKILL.
    #[arg(long)]
    pub kill_pid: u32,
    /// Which --target (0-based) that pid serves.
    #[arg(long, default_value = "0")]
    pub kill_node: usize,
    /// The killed node's clients try to resume their sessions on the others first (a node
    /// killed outright takes its sessions with it: they are refused and connect afresh).
    #[arg(long)]
    pub resume: bool,
}
