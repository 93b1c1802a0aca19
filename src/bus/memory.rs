//! The in-process bus. One [`MemoryHub`] stands for the transport; every node attached to it
//! gets a [`MemoryBus`]. A standalone node owns a hub of its own; tests attach several nodes to
//! one hub to run a cluster in one process without Redis.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Bus, BusError, Envelope, Topic};
use crate::protocol::NodeId;

/// Envelopes a node has not read yet, beyond which new ones are dropped (at most once).
pub const INBOUND_CAPACITY: usize = 65_536;

#[derive(Default)]
struct Inner {
    nodes: HashMap<NodeId, mpsc::Sender<Envelope>>,
    topics: HashMap<Topic, HashSet<NodeId>>,
}

/// The shared transport of in-process nodes.
#[derive(Clone, Default)]
pub struct MemoryHub {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryHub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches node `id`; returns its bus and the stream of envelopes it receives.
    pub fn attach(&self, id: NodeId) -> (MemoryBus, mpsc::Receiver<Envelope>) {
        let (tx, rx) = mpsc::channel(INBOUND_CAPACITY);
        self.lock().nodes.insert(id.clone(), tx);
        let bus = MemoryBus {
            hub: self.clone(),
            id,
        };
        (bus, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One node's handle on a [`MemoryHub`]. Dropping it detaches the node.
pub struct MemoryBus {
    hub: MemoryHub,
    id: NodeId,
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, topic: &Topic, envelope: Envelope) -> Result<usize, BusError> {
        let inner = self.hub.lock();
        let Some(subscribers) = inner.topics.get(topic) else {
            return Ok(0);
        };
        let mut receivers = 0;
        for node in subscribers.iter().filter(|n| **n != self.id) {
            if let Some(tx) = inner.nodes.get(node) {
                receivers += 1;
                if tx.try_send(envelope.clone()).is_err() {
                    metrics::counter!(crate::metrics::BUS_DROPPED).increment(1);
                }
            }
        }
        Ok(receivers)
    }

    async fn subscribe(&self, topic: &Topic) -> Result<(), BusError> {
        let mut inner = self.hub.lock();
        inner
            .topics
            .entry(topic.clone())
            .or_default()
            .insert(self.id.clone());
        Ok(())
    }

    async fn unsubscribe(&self, topic: &Topic) -> Result<(), BusError> {
        let mut inner = self.hub.lock();
        if let Some(nodes) = inner.topics.get_mut(topic) {
            nodes.remove(&self.id);
            if nodes.is_empty() {
                inner.topics.remove(topic);
            }
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), BusError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

impl Drop for MemoryBus {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        inner.nodes.remove(&self.id);
        for nodes in inner.topics.values_mut() {
            nodes.remove(&self.id);
        }
        inner.topics.retain(|_, nodes| !nodes.is_empty());
    }
}
