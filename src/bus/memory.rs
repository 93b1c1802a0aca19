//! The in-process bus. One [`MemoryHub`] stands for the transport; every node attached to it
//! gets a [`MemoryBus`]. A standalone node owns a hub of its own; tests attach several nodes to
//! one hub to run a cluster in one process without Redis.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Bus, BusError, Envelope, Inbound, Topic, Undelivered};
use crate::protocol::NodeId;

/// Envelopes a node has not read yet, beyond which new ones are dropped (at most once).
pub const INBOUND_CAPACITY: usize = 65_536;

#[derive(Default)]
struct Inner {
    nodes: HashMap<NodeId, mpsc::Sender<Inbound>>,
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

    /// Attaches node `id`, listening to its own node topic; returns its bus and the stream of
    /// what it receives.
    pub fn attach(&self, id: NodeId) -> (MemoryBus, mpsc::Receiver<Inbound>) {
        let (tx, rx) = mpsc::channel(INBOUND_CAPACITY);
        let mut inner = self.lock();
        inner.nodes.insert(id.clone(), tx);
        let own = Topic::Node(id.clone());
        inner.topics.entry(own).or_default().insert(id.clone());
        let cluster = inner.topics.entry(Topic::Cluster).or_default();
        cluster.insert(id.clone());
        drop(inner);
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

impl MemoryBus {
    /// Hands `envelope` to every other node listening to `topic`; returns how many there were.
    fn deliver(&self, topic: &Topic, envelope: &Envelope) -> usize {
        let inner = self.hub.lock();
        let Some(subscribers) = inner.topics.get(topic) else {
            return 0;
        };
        let mut receivers = 0;
        for node in subscribers.iter().filter(|n| **n != self.id) {
            if let Some(tx) = inner.nodes.get(node) {
                receivers += 1;
                if tx.try_send(Inbound::Envelope(envelope.clone())).is_err() {
                    metrics::counter!(crate::metrics::BUS_DROPPED).increment(1);
                }
            }
        }
        receivers
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, topic: &Topic, envelope: Envelope) -> Result<usize, BusError> {
        Ok(self.deliver(topic, &envelope))
    }

    fn post(&self, topic: Topic, envelope: Envelope) -> Result<(), BusError> {
        if self.deliver(&topic, &envelope) > 0 || !envelope.route.is_addressed() {
            return Ok(());
        }
        let why = Undelivered::NoReceiver;
        metrics::counter!(crate::metrics::BUS_RETURNED, "reason" => why.label()).increment(1);
        let own = self.hub.lock().nodes.get(&self.id).cloned();
        let returned = Inbound::Returned(envelope, why);
        if own.is_none_or(|tx| tx.try_send(returned).is_err()) {
            metrics::counter!(crate::metrics::BUS_DROPPED).increment(1);
        }
        Ok(())
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
        if *topic == Topic::Node(self.id.clone()) || *topic == Topic::Cluster {
            return Ok(());
        }
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
