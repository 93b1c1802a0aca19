//! `switchboard-loadtest`: load, latency, connection-storm, memory and failover benchmarks for
//! Switchboard, plus `floor`, the minimal relay every figure is compared to.
//!
//! Loopback only; every count, rate and duration is capped (see `cli`); the process stops by
//! itself at `--deadline`. Latency is one-way on one clock, from each message's scheduled send
//! time (`clock`, `pacer`), into HDR histograms (`stats`).

mod cli;
mod client;
mod clock;
mod conn;
mod fleet;
mod floor;
mod inbound;
mod layout;
mod load;
mod pacer;
mod payload;
mod procfs;
mod report;
mod scenario;
mod seq;
mod stats;
mod sys;
mod target;
mod token;
mod trace;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let nofile = sys::raise_nofile();
    clock::epoch();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.threads {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        tokio::time::timeout(cli.deadline, scenario::dispatch(cli.cmd, nofile)).await
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("error: --deadline of {:?} reached", cli.deadline);
            ExitCode::FAILURE
        }
    }
}
