//! The node's local connections, indexed by connection, client, user and room.
//!
//! Delivery never blocks: each connection has a bounded outbox, and a connection whose outbox
//! is full is closed as a slow consumer instead of growing memory or stalling its senders.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use tokio::sync::mpsc;

use crate::auth::Credential;
use crate::metrics as m;
use crate::protocol::{ClientId, CloseCode, ConnId, Frame, ResumeGrant, RoomId, UserId};

/// Asks a connection task to close with a code. The first request wins.
///
/// One task — the connection's own — waits on it; a wait costs two atomic operations per poll
/// (the connection loop polls it for every frame).
#[derive(Debug, Default)]
pub struct Control {
    code: OnceLock<CloseCode>,
    /// A close was requested after the first one.
    again: AtomicBool,
    waker: AtomicWaker,
}

impl Control {
    pub fn close(&self, code: CloseCode) {
        if self.code.set(code).is_ok() || !self.again.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// The code [`Control::close`] was called with, if it was.
    pub fn code(&self) -> Option<CloseCode> {
        self.code.get().copied()
    }

    /// Resolves once [`Control::close`] was called; returns the code. For the connection task
    /// only: a later waiter replaces an earlier one.
    pub fn closed(&self) -> impl Future<Output = CloseCode> + '_ {
        std::future::poll_fn(|cx| {
            if let Some(code) = self.code.get() {
                return Poll::Ready(*code);
            }
            self.waker.register(cx.waker());
            match self.code.get() {
                Some(code) => Poll::Ready(*code),
                None => Poll::Pending,
            }
        })
    }

    /// Resolves once a close was requested after the first: a session that a drain parked
    /// (its code is the drain's) is replaced or revoked while it waits. For one waiter, as
    /// [`Control::closed`].
    pub fn closed_again(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.again.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.again.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// A local connection as the registry sees it.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    pub conn: ConnId,
    pub client: ClientId,
    pub user: UserId,
    pub outbox: mpsc::Sender<Frame>,
    pub control: Arc<Control>,
    /// The token the connection authenticated with, for revocations.
    pub credential: Arc<Credential>,
    /// Its session's id and resume token, when resuming is on (for the drain's notice).
    pub resume: Option<Arc<ResumeGrant>>,
}

impl ConnHandle {
    /// Queues a copy of `frame`; a full outbox closes the connection as a slow consumer.
    fn deliver(&self, frame: &Frame) -> bool {
        self.deliver_owned(frame.clone())
    }

    /// Queues `frame`; a full outbox closes the connection as a slow consumer.
    fn deliver_owned(&self, frame: Frame) -> bool {
        match self.outbox.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!(m::SLOW_CONSUMERS).increment(1);
                self.control.close(CloseCode::SlowConsumer);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Room frames a joining connection may not see until its join is confirmed.
pub const MAX_PENDING_FRAMES: usize = 256;

/// A join under way: room traffic is held back until the join is confirmed (then delivered in
/// order) or refused (then dropped), so that nothing published between the presence snapshot
/// and the local registration is lost, and a refused joiner sees nothing of the room.
struct Pending {
    conn: ConnId,
    frames: Mutex<Vec<Frame>>,
}

impl Pending {
    fn hold(&self, frame: Frame) {
        let mut frames = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        if frames.len() < MAX_PENDING_FRAMES {
            frames.push(frame);
        }
    }
}

#[derive(Default)]
struct Inner {
    conns: HashMap<ConnId, (ConnHandle, Vec<RoomId>)>,
    by_client: HashMap<ClientId, ConnId>,
    by_user: HashMap<UserId, Vec<ConnId>>,
    by_room: HashMap<RoomId, Vec<ConnId>>,
    pending: HashMap<RoomId, Vec<Pending>>,
}

#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<RwLock<Inner>>,
}

impl Registry {
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection. A newer connection with the same client id takes over its address.
    pub fn insert(&self, handle: ConnHandle) {
        let mut inner = self.write();
        inner.by_client.insert(handle.client.clone(), handle.conn);
        inner
            .by_user
            .entry(handle.user.clone())
            .or_default()
            .push(handle.conn);
        inner.conns.insert(handle.conn, (handle, Vec::new()));
    }

    /// Gives connection `conn` the resume grant a drain's notice names (a session taken over
    /// from a dead node learns its token when its client resumes it here).
    pub fn grant(&self, conn: ConnId, grant: Arc<ResumeGrant>) {
        if let Some((handle, _)) = self.write().conns.get_mut(&conn) {
            handle.resume = Some(grant);
        }
    }

    /// Removes a connection; returns the rooms it was in, or `None` if it was not registered.
    pub fn remove(&self, conn: ConnId) -> Option<Vec<RoomId>> {
        let mut inner = self.write();
        let (handle, rooms) = inner.conns.remove(&conn)?;
        if inner.by_client.get(&handle.client) == Some(&conn) {
            inner.by_client.remove(&handle.client);
        }
        remove_from(&mut inner.by_user, &handle.user, conn);
        for room in &rooms {
            remove_from(&mut inner.by_room, room, conn);
        }
        for joining in inner.pending.values_mut() {
            joining.retain(|p| p.conn != conn);
        }
        inner.pending.retain(|_, joining| !joining.is_empty());
        Some(rooms)
    }

    /// Starts a join: until [`Registry::confirm_join`] or [`Registry::abort_join`], frames for
    /// the room are held for this connection. `false` when the connection is unknown, already
    /// a member, or already joining.
    pub fn begin_join(&self, room: &RoomId, conn: ConnId) -> bool {
        let mut inner = self.write();
        let member = match inner.conns.get(&conn) {
            Some((_, rooms)) => rooms.contains(room),
            None => return false,
        };
        let pending = inner.pending.entry(room.clone()).or_default();
        if member || pending.iter().any(|p| p.conn == conn) {
            return false;
        }
        pending.push(Pending {
            conn,
            frames: Mutex::default(),
        });
        true
    }

    /// Completes a join: delivers what was held, in order, and makes the membership live.
    pub fn confirm_join(&self, room: &RoomId, conn: ConnId) {
        let mut inner = self.write();
        let Some(held) = take_pending(&mut inner, room, conn) else {
            return;
        };
        if !join_locked(&mut inner, room, conn) {
            return;
        }
        let frames = held.frames.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some((handle, _)) = inner.conns.get(&conn) {
            if frames.len() >= MAX_PENDING_FRAMES {
                handle.control.close(CloseCode::SlowConsumer);
            }
            for frame in &frames {
                handle.deliver(frame);
            }
        }
    }

    /// Abandons a join: what was held is dropped.
    pub fn abort_join(&self, room: &RoomId, conn: ConnId) {
        take_pending(&mut self.write(), room, conn);
    }

    /// Records a local membership at once; `false` when the connection is unknown or already a
    /// member.
    pub fn join(&self, room: &RoomId, conn: ConnId) -> bool {
        join_locked(&mut self.write(), room, conn)
    }

    /// Drops a local membership; `false` when the connection was not a member.
    pub fn leave(&self, room: &RoomId, conn: ConnId) -> bool {
        let mut inner = self.write();
        match inner.conns.get_mut(&conn) {
            Some((_, rooms)) if rooms.contains(room) => rooms.retain(|r| r != room),
            _ => return false,
        }
        remove_from(&mut inner.by_room, room, conn);
        true
    }

    /// Delivers to every local member of `room` but `except`; returns how many got it.
    pub fn deliver_room(&self, room: &RoomId, except: ConnId, frame: &Frame) -> usize {
        let inner = self.read();
        if let Some(joining) = inner.pending.get(room) {
            for pending in joining.iter().filter(|p| p.conn != except) {
                pending.hold(frame.clone());
            }
        }
        let Some(members) = inner.by_room.get(room) else {
            return 0;
        };
        let targets = members.iter().filter(|c| **c != except);
        targets
            .filter_map(|c| inner.conns.get(c))
            .filter(|(handle, _)| handle.deliver(frame))
            .count()
    }

    /// Delivers to the local connection holding `client`, if it is in `room` (or anywhere when
    /// `room` is `None`); hands `frame` back when there is none. A connection still joining
    /// `room` gets the frame once its join is confirmed.
    pub fn deliver_client(
        &self,
        client: &ClientId,
        room: Option<&RoomId>,
        frame: Frame,
    ) -> Result<(), Frame> {
        let inner = self.read();
        let Some((handle, rooms)) = inner.by_client.get(client).and_then(|c| inner.conns.get(c))
        else {
            return Err(frame);
        };
        match room {
            Some(room) if !rooms.contains(room) => hold(&inner, room, handle.conn, frame),
            _ => {
                handle.deliver_owned(frame);
                Ok(())
            }
        }
    }

    /// Delivers to local connection `conn`; `false` when it is not here.
    pub fn deliver_conn(&self, conn: ConnId, frame: &Frame) -> bool {
        let inner = self.read();
        inner
            .conns
            .get(&conn)
            .is_some_and(|(handle, _)| handle.deliver(frame))
    }

    /// Delivers to every local connection of `user` but `except`; returns how many got it.
    pub fn deliver_user(&self, user: &UserId, except: ConnId, frame: &Frame) -> usize {
        let inner = self.read();
        let Some(conns) = inner.by_user.get(user) else {
            return 0;
        };
        let targets = conns.iter().filter(|c| **c != except);
        targets
            .filter_map(|c| inner.conns.get(c))
            .filter(|(handle, _)| handle.deliver(frame))
            .count()
    }

    /// Closes connection `conn` with `code`, if it is local.
    pub fn close(&self, conn: ConnId, code: CloseCode) -> bool {
        let inner = self.read();
        inner
            .conns
            .get(&conn)
            .map(|(h, _)| h.control.close(code))
            .is_some()
    }

    /// Closes with `code` every local connection for which `select` holds; returns how many.
    pub fn close_where(&self, select: impl Fn(&ConnHandle) -> bool, code: CloseCode) -> usize {
        let inner = self.read();
        let mut closed = 0;
        for (handle, _) in inner.conns.values().filter(|(h, _)| select(h)) {
            handle.control.close(code);
            closed += 1;
        }
        closed
    }

    /// Closes every local connection with `code`.
    pub fn close_all(&self, code: CloseCode) {
        for (handle, _) in self.read().conns.values() {
            handle.control.close(code);
        }
    }

    /// Queues `frame` on every local connection (drain notices).
    pub fn broadcast_all(&self, frame: &Frame) {
        self.broadcast_each(|_| frame.clone());
    }

    /// Queues the frame `frame_for` makes for each local connection.
    pub fn broadcast_each(&self, frame_for: impl Fn(&ConnHandle) -> Frame) {
        for (handle, _) in self.read().conns.values() {
            let _ = handle.outbox.try_send(frame_for(handle));
        }
    }

    /// The local connection holding `client`, if it is a member of `room`.
    pub fn member_conn(&self, room: &RoomId, client: &ClientId) -> Option<ConnId> {
        let inner = self.read();
        let conn = *inner.by_client.get(client)?;
        let (_, rooms) = inner.conns.get(&conn)?;
        rooms.contains(room).then_some(conn)
    }

    /// Whether `room` has a local member, or a local join under way.
    pub fn has_room(&self, room: &RoomId) -> bool {
        let inner = self.read();
        inner.by_room.contains_key(room) || inner.pending.contains_key(room)
    }

    /// The ids of every local connection.
    pub fn conn_ids(&self) -> Vec<ConnId> {
        self.read().conns.keys().copied().collect()
    }

    pub fn connections(&self) -> usize {
        self.read().conns.len()
    }

    pub fn rooms(&self) -> usize {
        self.read().by_room.len()
    }
}

fn join_locked(inner: &mut Inner, room: &RoomId, conn: ConnId) -> bool {
    let Some((_, rooms)) = inner.conns.get_mut(&conn) else {
        return false;
    };
    if rooms.contains(room) {
        return false;
    }
    rooms.push(room.clone());
    inner.by_room.entry(room.clone()).or_default().push(conn);
    true
}

/// Holds `frame` for `conn` if it is joining `room`; hands it back when it is not.
fn hold(inner: &Inner, room: &RoomId, conn: ConnId, frame: Frame) -> Result<(), Frame> {
    let Some(pending) = inner
        .pending
        .get(room)
        .and_then(|joining| joining.iter().find(|p| p.conn == conn))
    else {
        return Err(frame);
    };
    pending.hold(frame);
    Ok(())
}

fn take_pending(inner: &mut Inner, room: &RoomId, conn: ConnId) -> Option<Pending> {
    let joining = inner.pending.get_mut(room)?;
    let at = joining.iter().position(|p| p.conn == conn)?;
    let held = joining.swap_remove(at);
    if joining.is_empty() {
        inner.pending.remove(room);
    }
    Some(held)
}

fn remove_from<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Vec<ConnId>>, key: &K, conn: ConnId) {
    if let Some(conns) = map.get_mut(key) {
        conns.retain(|c| *c != conn);
        if conns.is_empty() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(n: u64) -> (ConnHandle, mpsc::Receiver<Frame>) {
        let (outbox, rx) = mpsc::channel(8);
        let handle = ConnHandle {
            conn: ConnId(n),
            client: ClientId::parse(&format!("c{n}")).unwrap(),
            user: UserId::parse(&format!("u{n}")).unwrap(),
            outbox,
            control: Arc::default(),
            credential: Arc::default(),
            resume: None,
        };
        (handle, rx)
    }

    /// Connection 1 is a member of `r`; connection 2 (whose outbox is returned) is joining it.
    fn one_member_one_joining() -> (Registry, RoomId, mpsc::Receiver<Frame>) {
        let registry = Registry::default();
        let room = RoomId::parse("r").unwrap();
        let (a, _) = conn(1);
        let (b, b_rx) = conn(2);
        registry.insert(a);
        registry.insert(b);
        registry.join(&room, ConnId(1));
        assert!(registry.begin_join(&room, ConnId(2)));
        (registry, room, b_rx)
    }

    #[test]
    fn a_joining_connection_gets_held_frames_in_order_once_confirmed() {
        let (registry, room, mut b_rx) = one_member_one_joining();
        registry.deliver_room(&room, ConnId(1), &Frame::from_static("one"));
        registry.deliver_room(&room, ConnId(1), &Frame::from_static("two"));
        assert!(b_rx.try_recv().is_err(), "held until confirmed");
        registry.confirm_join(&room, ConnId(2));
        registry.deliver_room(&room, ConnId(1), &Frame::from_static("three"));
        let got: Vec<_> = std::iter::from_fn(|| b_rx.try_recv().ok()).collect();
        assert_eq!(got, ["one", "two", "three"].map(Frame::from_static));
    }

    #[test]
    fn a_signal_to_a_joining_connection_waits_for_the_join() {
        let (registry, room, mut b_rx) = one_member_one_joining();
        let b = ClientId::parse("c2").unwrap();
        let offer = Frame::from_static("offer");
        assert!(registry.deliver_client(&b, Some(&room), offer).is_ok());
        assert!(b_rx.try_recv().is_err(), "held until confirmed");
        let elsewhere = RoomId::parse("elsewhere").unwrap();
        let x = Frame::from_static("x");
        assert_eq!(
            registry.deliver_client(&b, Some(&elsewhere), x.clone()),
            Err(x)
        );
        assert!(registry.has_room(&room));
        registry.confirm_join(&room, ConnId(2));
        assert_eq!(b_rx.try_recv().unwrap(), "offer");
        assert!(registry.deliver_conn(ConnId(2), &Frame::from_static("error")));
        assert_eq!(b_rx.try_recv().unwrap(), "error");
        assert!(!registry.deliver_conn(ConnId(9), &Frame::from_static("error")));
    }

    #[tokio::test]
    async fn a_second_close_request_wakes_whoever_waits_for_it() {
        let control = Arc::new(Control::default());
        control.close(CloseCode::ServiceRestart);
        let waiting = tokio::spawn({
            let control = Arc::clone(&control);
            async move { control.closed_again().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        control.close(CloseCode::Replaced);
        waiting.await.unwrap();
        // The first code stays.
        assert_eq!(control.code(), Some(CloseCode::ServiceRestart));
    }

    #[tokio::test]
    async fn a_close_request_wakes_the_waiting_connection_once_with_the_first_code() {
        let control = Arc::new(Control::default());
        let waiting = tokio::spawn({
            let control = Arc::clone(&control);
            async move { control.closed().await }
        });
        tokio::task::yield_now().await;
        control.close(CloseCode::SlowConsumer);
        control.close(CloseCode::Replaced);
        assert_eq!(waiting.await.unwrap(), CloseCode::SlowConsumer);
        assert_eq!(control.closed().await, CloseCode::SlowConsumer);
    }

    #[test]
    fn a_refused_join_sees_nothing_of_the_room() {
        let (registry, room, mut b_rx) = one_member_one_joining();
        registry.deliver_room(&room, ConnId(1), &Frame::from_static("secret"));
        registry.abort_join(&room, ConnId(2));
        registry.deliver_room(&room, ConnId(1), &Frame::from_static("later"));
        assert!(b_rx.try_recv().is_err());
        assert_eq!(registry.remove(ConnId(2)), Some(vec![]));
    }
}
