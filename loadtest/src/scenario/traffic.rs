//! `pairs` and `rooms`: fixed-rate timed traffic, repeated for `--rounds`.

use anyhow::Result;

use super::{LOAD_METRICS, finish, names, order, progress, systems};
use crate::cli::{Common, LoadArgs, PairsArgs, RoomsArgs};
use crate::load::{self, Layout, LoadSpec, LoadStats};
use crate::report::compare;
use crate::sys::check_sockets;

pub async fn pairs(a: PairsArgs, nofile: u64) -> Result<()> {
    check_sockets(a.pairs as usize * 2, nofile)?;
    let layout = Layout::Pairs {
        pairs: a.pairs as usize,
        cross: !a.same_node,
    };
    run("pairs", &a.common, &a.load, layout, &a, nofile).await
}

pub async fn rooms(a: RoomsArgs, nofile: u64) -> Result<()> {
    check_sockets(a.rooms as usize * a.room_size as usize, nofile)?;
    let layout = Layout::Rooms {
        rooms: a.rooms as usize,
        size: a.room_size as usize,
    };
    run("rooms", &a.common, &a.load, layout, &a, nofile).await
}

async fn run(
    name: &str,
    common: &Common,
    load: &LoadArgs,
    layout: Layout,
    params: &impl serde::Serialize,
    nofile: u64,
) -> Result<()> {
    check_sockets(layout.clients(), nofile)?;
    let systems = systems(common)?;
    let spec = LoadSpec {
        layout,
        rate: load.rate,
        duration: load.duration,
        drain: load.drain,
        auth: load.auth,
        secret: common.jwt_secret.clone(),
    };
    let mut rounds: Vec<Vec<Option<LoadStats>>> = Vec::new();
    for r in 0..common.rounds {
        eprintln!("{name}: round {}/{}", r + 1, common.rounds);
        let mut row = vec![None; systems.len()];
        for i in order(systems.len(), r) {
            match load::run(&spec, &systems[i], None).await {
                Ok(stats) => {
                    progress(name, &stats);
                    row[i] = Some(stats);
                }
                Err(e) => eprintln!("  {}: run failed: {e:#}", systems[i].label),
            }
        }
        rounds.push(row);
    }
    let title = format!("{name} at {} signals/s", load.rate);
    let sections = compare(&title, &names(&systems), &rounds, LOAD_METRICS);
    finish(name, common, params, sections, &rounds)
}
