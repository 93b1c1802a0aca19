//! In-process presence: one map behind a mutex. Shared by every node of an in-process cluster
//! (clone it), or owned by a standalone node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{AddressHold, Claim, Joined, Member, Presence, PresenceError, RoomSummary};
use crate::protocol::{ClientId, ConnId, RoomId, UserId};

#[derive(Default)]
struct State {
    clients: HashMap<ClientId, Member>,
    rooms: HashMap<RoomId, Vec<Member>>,
    conn_rooms: HashMap<ConnId, Vec<RoomId>>,
    devices: HashMap<UserId, usize>,
    addresses: HashMap<String, usize>,
}

#[derive(Clone, Default)]
pub struct MemoryPresence {
    state: Arc<Mutex<State>>,
}

impl MemoryPresence {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn remove_member(&mut self, room: &RoomId, conn: ConnId) -> bool {
        let Some(members) = self.rooms.get_mut(room) else {
            return false;
        };
        let before = members.len();
        members.retain(|m| m.conn != conn);
        let removed = members.len() != before;
        if members.is_empty() {
            self.rooms.remove(room);
        }
        if let Some(rooms) = self.conn_rooms.get_mut(&conn) {
            rooms.retain(|r| r != room);
        }
        removed
    }

    fn add_device(&mut self, user: &UserId) {
        *self.devices.entry(user.clone()).or_default() += 1;
    }

    fn remove_device(&mut self, user: &UserId) {
        if let Some(n) = self.devices.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.devices.remove(user);
            }
        }
    }
}

fn others(members: &[Member], me: &Member) -> Vec<Member> {
    members
        .iter()
        .filter(|m| m.client_id != me.client_id)
        .cloned()
        .collect()
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn claim(&self, me: &Member) -> Result<Claim, PresenceError> {
        let mut state = self.lock();
        let claim = match state.clients.get(&me.client_id) {
            None => Claim::Fresh,
            Some(old) if old.user_id != me.user_id => return Ok(Claim::Taken),
            Some(old) if old.conn == me.conn => return Ok(Claim::Fresh),
            Some(old) => Claim::Replaced(old.clone()),
        };
        if let Claim::Replaced(old) = &claim {
            state.remove_device(&old.user_id);
        }
        state.clients.insert(me.client_id.clone(), me.clone());
        state.add_device(&me.user_id);
        Ok(claim)
    }

    async fn join(&self, room: &RoomId, me: &Member, cap: usize) -> Result<Joined, PresenceError> {
        let mut state = self.lock();
        let members = state.rooms.entry(room.clone()).or_default();
        if members.iter().any(|m| m.conn == me.conn) {
            return Ok(Joined::Already(others(members, me)));
        }
        // A replaced connection of the same client id may linger until its eviction.
        let live = members
            .iter()
            .filter(|m| m.client_id != me.client_id)
            .count();
        if live >= cap {
            if members.is_empty() {
                state.rooms.remove(room);
            }
            return Ok(Joined::Full);
        }
        let result = others(members, me);
        members.retain(|m| m.client_id != me.client_id);
        members.push(me.clone());
        state
            .conn_rooms
            .entry(me.conn)
            .or_default()
            .push(room.clone());
        Ok(Joined::Joined(result))
    }

    async fn leave(&self, room: &RoomId, me: &Member) -> Result<bool, PresenceError> {
        Ok(self.lock().remove_member(room, me.conn))
    }

    async fn evict(&self, member: &Member) -> Result<Vec<RoomId>, PresenceError> {
        let mut state = self.lock();
        let rooms = state.conn_rooms.remove(&member.conn).unwrap_or_default();
        let left: Vec<RoomId> = rooms
            .into_iter()
            .filter(|room| state.remove_member(room, member.conn))
            .collect();
        if state
            .clients
            .get(&member.client_id)
            .is_some_and(|m| m.conn == member.conn)
        {
            state.clients.remove(&member.client_id);
            state.remove_device(&member.user_id);
        }
        Ok(left)
    }

    async fn member(
        &self,
        room: &RoomId,
        client: &ClientId,
    ) -> Result<Option<Member>, PresenceError> {
        let state = self.lock();
        let found = state
            .rooms
            .get(room)
            .and_then(|members| members.iter().find(|m| &m.client_id == client));
        Ok(found.cloned())
    }

    async fn members(&self, room: &RoomId) -> Result<Vec<Member>, PresenceError> {
        Ok(self.lock().rooms.get(room).cloned().unwrap_or_default())
    }

    async fn rooms(&self) -> Result<Vec<RoomSummary>, PresenceError> {
        let state = self.lock();
        let mut rooms: Vec<RoomSummary> = state
            .rooms
            .iter()
            .map(|(room, members)| RoomSummary {
                room: room.clone(),
                members: members.len(),
            })
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        Ok(rooms)
    }

    async fn devices(&self, user: &UserId) -> Result<usize, PresenceError> {
        Ok(self.lock().devices.get(user).copied().unwrap_or(0))
    }

    async fn hold_address(&self, address: &str, max: usize) -> Option<AddressHold> {
        let mut state = self.lock();
        let held = state.addresses.entry(address.to_owned()).or_default();
        if *held >= max {
            return None;
        }
        *held += 1;
        Some(AddressHold {
            address: address.to_owned(),
            generation: 0,
        })
    }

    async fn release_address(&self, hold: AddressHold) {
        let mut state = self.lock();
        if let Some(held) = state.addresses.get_mut(&hold.address) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                state.addresses.remove(&hold.address);
            }
        }
    }

    async fn address_connections(&self, address: &str) -> Result<usize, PresenceError> {
        Ok(self.lock().addresses.get(address).copied().unwrap_or(0))
    }

    async fn check(&self) -> Result<(), PresenceError> {
        Ok(())
    }
}
