//! Who talks to whom in a timed run: pairs or mesh rooms, their ids, rooms, node placement
//! and senders.

use std::sync::Arc;

use anyhow::{Result, bail};
use serde::Serialize;
use tokio::sync::Notify;

use crate::client::{ClientSpec, SendSpec};
use crate::payload::FrameBuilder;
use crate::token::Minter;

/// Who talks to whom.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum Layout {
    /// A sends B an offer then candidates; `cross` puts B on the next node.
    Pairs { pairs: usize, cross: bool },
    /// Every member broadcasts to the rest of its room.
    Rooms { rooms: usize, size: usize },
}

impl Layout {
    /// How many clients the layout has.
    pub fn clients(&self) -> usize {
        match *self {
            Layout::Pairs { pairs, .. } => pairs * 2,
            Layout::Rooms { rooms, size } => rooms * size,
        }
    }

    /// Deliveries per message sent.
    pub fn fanout(&self) -> u64 {
        match *self {
            Layout::Pairs { .. } => 1,
            Layout::Rooms { size, .. } => size.saturating_sub(1) as u64,
        }
    }
}

/// The clients of one run (tokens minted) and one pacer waker per sender.
pub fn build_clients(layout: Layout, secret: &str) -> Result<(Vec<ClientSpec>, Vec<Arc<Notify>>)> {
    let run = run_id();
    let minter = Minter::new(secret);
    let mut clients = Vec::new();
    let mut wakers = Vec::new();
    let mut add =
        |id: String, room: String, slot: usize, peers: usize, to: Option<(Option<&str>, bool)>| {
            let token = minter.mint(&format!("lt-{id}"), &id)?;
            let send = to.map(|(to, offer)| {
                let waker = Arc::new(Notify::new());
                wakers.push(Arc::clone(&waker));
                SendSpec {
                    sender: (wakers.len() - 1) as u32,
                    frames: FrameBuilder::new(to, offer),
                    waker,
                }
            });
            clients.push(ClientSpec {
                client_id: id,
                token,
                room,
                slot,
                expect_peers: peers,
                send,
            });
            anyhow::Ok(())
        };
    match layout {
        Layout::Pairs { pairs, cross } => {
            for k in 0..pairs {
                let (a, b, room) = (
                    format!("{run}a{k}"),
                    format!("{run}b{k}"),
                    format!("lt-{run}-{k}"),
                );
                add(a, room.clone(), k, 1, Some((Some(&b), true)))?;
                add(b, room, k + usize::from(cross), 1, None)?;
            }
        }
        Layout::Rooms { rooms, size } => {
            for r in 0..rooms {
                for m in 0..size {
                    let slot = r * size + m;
                    add(
                        format!("{run}r{r}m{m}"),
                        format!("lt-{run}-{r}"),
                        slot,
                        size - 1,
                        Some((None, false)),
                    )?;
                }
            }
        }
    }
    if wakers.is_empty() {
        bail!("nothing to send: the layout has no senders");
    }
    Ok((clients, wakers))
}

/// A short random tag that keeps ids and rooms of different runs apart.
pub fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_cross_nodes_and_only_a_sends() {
        let (clients, wakers) = build_clients(
            Layout::Pairs {
                pairs: 3,
                cross: true,
            },
            "s",
        )
        .unwrap();
        assert_eq!((clients.len(), wakers.len()), (6, 3));
        let (a, b) = (&clients[2], &clients[3]);
        assert_eq!(a.room, b.room);
        assert_eq!((a.slot, b.slot), (1, 2));
        assert!(a.send.is_some() && b.send.is_none());
        assert_eq!(a.send.as_ref().unwrap().sender, 1);
        let (same, _) = build_clients(
            Layout::Pairs {
                pairs: 1,
                cross: false,
            },
            "s",
        )
        .unwrap();
        assert_eq!(same[0].slot, same[1].slot);
    }

    #[test]
    fn rooms_are_meshes_of_senders() {
        let layout = Layout::Rooms { rooms: 2, size: 4 };
        let (clients, wakers) = build_clients(layout, "s").unwrap();
        assert_eq!((clients.len(), wakers.len(), layout.fanout()), (8, 8, 3));
        assert!(
            clients
                .iter()
                .all(|c| c.expect_peers == 3 && c.send.is_some())
        );
        assert_ne!(clients[0].room, clients[4].room);
        assert_eq!(clients[0].room, clients[3].room);
        let ids: std::collections::HashSet<_> = clients.iter().map(|c| &c.client_id).collect();
        assert_eq!(ids.len(), 8);
    }
}
